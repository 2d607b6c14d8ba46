"""`cdc serve`: the configured pipelines' built-in logs over HTTP, for readers in any language.

Routes (``{pipeline}``: the name of a pipeline of the config file whose sink is ``type: log``;
no request names a path, so nothing but those logs can be read):

- ``GET /logs``: the pipelines served.
- ``GET /logs/{pipeline}``: start and end offsets, topics, named consumers.
- ``GET /logs/{pipeline}/events?from=OFFSET|earliest|latest&from_time=TIME&topic=T``: Server-Sent
  Events, following new data: ``id:`` the offset, ``data:`` the event's JSON as ``cdc log read``
  prints it; a ``Last-Event-ID`` header (EventSource's reconnect) resumes after that offset. A
  comment line every ``keepalive`` while idle.
- ``GET /logs/{pipeline}/consumers/{name}/fetch?max=N&topic=T&wait=S&from=OFFSET``: up to N
  events from the named consumer's committed offset (the log's start before its first commit),
  ``{"events", "next_offset", "committed", "end_offset"}``; ``wait`` long-polls up to S seconds
  for a first event. Fetching does not move the consumer: commit ``next_offset`` after handling
  the events (at-least-once; fetching again without committing returns them again).
- ``POST /logs/{pipeline}/consumers/{name}/commit`` with ``{"offset": N}``: durably commit. An
  offset behind the committed one is refused (409, a late retry must not rewind a consumer)
  unless the body says ``"rewind": true``; past the log's end: 400.

Errors are JSON ``{"error": "..."}``: 401 a missing or wrong token (checked first: nothing is
read), 404 an unknown pipeline or a log not created yet, 400 a bad parameter or offset, 409 a
consumer in use by another reader, 410 an offset retention deleted (with ``start_offset``).

Bounded as the daemon's /metrics endpoint (cdc.http): a thread per connection, at most
``max_connections`` (each SSE stream holds one; past that 503), and a client that sends nothing,
or does not take what is written, for ``idle_timeout`` is dropped. An SSE reader whose client went
away is released at the next keep-alive at the latest. The token is compared in constant time and
never logged (request lines are logged without their query string).
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
from pathlib import Path

from cdc.config import MIN_TOKEN, Config, ServeConfig
from cdc.errors import ConfigError
from cdc.serve._routes import HttpError, Server

log = logging.getLogger(__name__)


class LogServer:
    """Serves ``logs`` (pipeline name -> log directory) from a daemon thread until ``close()``."""

    def __init__(
        self,
        config: ServeConfig,
        logs: dict[str, Path],
        *,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        try:
            self._server = Server(config, logs, token, tls)
        except OSError as e:
            raise ConfigError(
                [
                    f"serve: cannot listen on {config.bind}:{config.port}: {e.strerror}; "
                    "choose another serve.port"
                ]
            ) from None
        self.port = int(self._server.server_address[1])
        scheme = "https" if tls is not None else "http"
        host = f"[{config.bind}]" if ":" in config.bind else config.bind
        self.url = f"{scheme}://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="serve",
            daemon=True,
            kwargs={"poll_interval": 0.5},
        )
        self._thread.start()
        log.info(
            "serving the logs of %s on %s/logs (%s)",
            ", ".join(sorted(logs)) or "no pipeline",
            self.url,
            "token required" if token is not None else "no token: this machine only",
        )

    @property
    def active(self) -> int:
        """Connections being served now (an SSE stream counts until its client is gone)."""
        return self._server.active

    def close(self) -> None:
        """Stop accepting, and end every SSE stream and long poll at its next wait."""
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else base / p


def read_token(config: ServeConfig, base: Path) -> str | None:
    """The bearer token: ``token``, or the content of ``token_file`` (relative to ``base``)."""
    if config.token_file is None:
        return config.token.strip() if config.token is not None else None
    path = _resolve(base, config.token_file)
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not text"
        raise ConfigError(
            [f"serve.token_file: cannot read the token from {str(path)!r}: {why}"]
        ) from None
    if len(token) < MIN_TOKEN:
        raise ConfigError(
            [
                f"serve.token_file: the token in {str(path)!r} is too short ({len(token)} "
                f"characters): use at least {MIN_TOKEN}, e.g. `openssl rand -hex 32 > {path}`"
            ]
        )
    return token


def tls_context(config: ServeConfig, base: Path) -> ssl.SSLContext | None:
    """A server context for ``tls_cert``/``tls_key`` (relative to ``base``), or None."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    cert, key = _resolve(base, config.tls_cert), _resolve(base, config.tls_key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(
            [
                f"serve.tls_cert: cannot load the certificate {str(cert)!r} with the key "
                f"{str(key)!r}: {why}; give PEM files of one pair"
            ]
        ) from None
    return ctx


def served_logs(config: Config) -> dict[str, Path]:
    """Pipeline name -> log directory, for every pipeline whose sink is the built-in log."""
    out: dict[str, Path] = {}
    for p in config.pipelines:
        if getattr(p.sink, "type", None) == "log":
            out[p.name] = Path(getattr(p.sink, "path"))  # noqa: B009  # a union of sink models
    return out


def start(config: Config, config_path: str | Path) -> LogServer:
    """Start serving ``config``'s logs as its ``serve`` block says (relative files: relative to
    the config file). ``ConfigError`` for a token or certificate that cannot be used."""
    from cdc import logs

    base = Path(config_path).resolve().parent
    token = read_token(config.serve, base)
    if token is not None:
        logs.add_secrets([token])
    served = served_logs(config)
    if not served:
        raise ConfigError(
            ["serve: no pipeline of this file has a log sink (sink: {type: log}): nothing to serve"]
        )
    return LogServer(config.serve, served, token=token, tls=tls_context(config.serve, base))


def run(config_path: str | Path) -> int:
    """``cdc serve -c FILE``: serve until SIGTERM or SIGINT; exit status 0."""
    from cdc.config import load

    server = start(load(config_path), config_path)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass
    log.info("stopping: closing %d connection(s)", server.active)
    server.close()
    return 0


__all__ = [
    "HttpError",
    "LogServer",
    "read_token",
    "run",
    "served_logs",
    "start",
    "tls_context",
]
