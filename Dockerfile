# The cdc daemon. Built by docker-compose.yml; usable on its own:
#   docker build -t cdc . && docker run -v $PWD/config:/etc/cdc cdc run -c /etc/cdc/your.yaml
FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cdc ./cdc
COPY sources ./sources
COPY sinks ./sinks
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/cdc cdc \
    && mkdir -p /var/lib/cdc && chown cdc /var/lib/cdc
USER cdc
EXPOSE 8080
ENTRYPOINT ["cdc"]
CMD ["--help"]
