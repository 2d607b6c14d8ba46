"""The daemon's HTTP endpoint (off by default): /metrics, /health, /ready.

- ``/metrics``: every metric of ``cdc.metrics`` in Prometheus text format.
- ``/health``: 200 while the process runs and its supervisor loop is turning; 503 when the loop
  has not turned for ``STALL_S`` seconds.
- ``/ready``: 200 when every pipeline is streaming (connected and past its snapshot), else 503;
  both with a JSON body ``{"ready": bool, "not_ready": {pipeline: state}}``.
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


class Endpoint:
    """Serves the three paths from a daemon thread until ``close()``."""

    def __init__(self, bind: str, port: int) -> None:
        self.heartbeat = time.monotonic()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
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
            self._server = ThreadingHTTPServer((bind, port), Handler)
        except OSError as e:
            raise ConfigError(
                [f"http: cannot listen on {bind}:{port}: {e.strerror}; choose another http.port"]
            ) from None
        self._server.daemon_threads = True
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
