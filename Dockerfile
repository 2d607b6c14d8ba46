# The cdc daemon. Built by docker-compose.yml; usable on its own:
#   docker build -t cdc . && docker run -v $PWD/config:/etc/cdc cdc run -c /etc/cdc/your.yaml
#
# Two stages: the first builds a wheel with the compiled hot path (native/, Rust via rustup's
# minimal toolchain); the second installs only that wheel, so the image carries no compiler.
FROM python:3.12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates gcc libc6-dev \
    && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY native ./native
COPY cdc ./cdc
COPY sources ./sources
COPY sinks ./sinks
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.12-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --home /var/lib/cdc cdc && mkdir -p /var/lib/cdc && chown cdc /var/lib/cdc
USER cdc
EXPOSE 8080
ENTRYPOINT ["cdc"]
CMD ["--version"]
