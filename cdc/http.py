"""The daemon's HTTP endpoint (off by default): /metrics, /health, /ready.

- ``/metrics``: every metric of ``cdc.metrics`` in Prometheus text format.
- ``/health``: 200 while the process runs and its supervisor loop is turning; 503 when the loop
  has not turned for ``STALL_S`` seconds.
- ``/ready``: 200 when every pipeline is streaming (connected and past its snapshot), else 503;
  both with a JSON body ``{"ready": bool, "not_ready": {pipeline: state}}``.

Bounded: each connection is served by its own thread, but at most ``MAX_CONNECTIONS`` at once (a
connection past that gets a 503 and is closed at once, from the accepting thread), and a
connection that sends nothing for ``IDLE_TIMEOUT_S`` is closed. So idle or slow clients cannot
pile up threads in the daemon, and a scrape waits at most ``IDLE_TIMEOUT_S`` behind them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cdc import metrics
from cdc.errors import ConfigError
from cdc.status import BOARD

log = logging.getLogger(__name__)

STALL_S = 10.0
MAX_CONNECTIONS = 16  # Prometheus and a probe or two need a handful
IDLE_TIMEOUT_S = 10.0  # a scrape's request arrives within milliseconds
_BUSY_BODY = b"too many open connections to this endpoint; try again\n"
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them; the rest refused."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int) -> None:
        self.max_connections = max_connections
        self.active = 0
        self._count_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            busy = self.active >= self.max_connections
            if not busy:
                self.active += 1
        if busy:
            try:
                request.setblocking(False)  # never wait on this client from the accept loop
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer is not the daemon's problem (the default prints a
        # traceback to stderr).
        log.debug("http: error serving %s", client_address, exc_info=True)

    def _release(self) -> None:
        with self._count_lock:
            self.active -= 1


class Endpoint:
    """Serves the three paths from a daemon thread until ``close()``."""

    def __init__(
        self,
        bind: str,
        port: int,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.heartbeat = time.monotonic()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            timeout = idle_timeout_s  # on the socket: reading the request, writing the answer

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
                elif path == "/health":
                    stalled = time.monotonic() - endpoint.heartbeat
                    ok = stalled < STALL_S
                    body = {"alive": ok, "supervisor_last_turn_s_ago": round(stalled, 3)}
                    self._json(200 if ok else 503, body)
                elif path == "/ready":
                    not_ready = BOARD.not_ready()
                    self._json(
                        503 if not_ready else 200, {"ready": not not_ready, "not_ready": not_ready}
                    )
                else:
                    self._json(
                        404, {"error": f"no such path {path!r}: use /metrics, /health, /ready"}
                    )

            def _json(self, code: int, body: dict[str, Any]) -> None:
                self._send(code, json.dumps(body).encode() + b"\n", "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        try:
            self._server = _BoundedServer((bind, port), Handler, max_connections)
        except OSError as e:
            raise ConfigError(
                [f"http: cannot listen on {bind}:{port}: {e.strerror}; choose another http.port"]
            ) from None
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="http",
            daemon=True,
            kwargs={"poll_interval": 0.5},
        )
        self._thread.start()
        log.info("http endpoint on http://%s:%d (/metrics, /health, /ready)", bind, self.port)

    def beat(self) -> None:
        """Called by the supervisor loop on every turn: what /health reports."""
        self.heartbeat = time.monotonic()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
