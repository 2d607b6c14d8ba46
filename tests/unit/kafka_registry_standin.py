"""An in-process stand-in for a Confluent-compatible schema registry, for fast unit tests.

The integration tests use a real registry (Apicurio, scratch/registry.py). This stand-in serves
the subset of the REST API the sink's client calls, over real HTTP on loopback, with no JVM to
start, so the unit tests can check the client's requests and its handling of each answer:

- ``POST /subjects/{subject}/versions``: register (same schema -> same global id);
- ``GET /schemas/ids/{id}``: fetch a schema by id (what deserializers call);
- ``GET /subjects``, ``GET /subjects/{subject}/versions``, ``.../versions/{n|latest}``;
- ``PUT /config/{subject}`` with ``{"compatibility": "NONE"}`` or ``"READ_ONLY"``: this stand-in
  does not check Avro compatibility, it only knows "accept all" and "refuse new versions with
  409", enough to exercise the sink's handling of a refusal.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


class RegistryState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.schemas: list[str] = []  # id - 1 -> schema string
        self.subjects: dict[str, list[int]] = {}
        self.compat: dict[str, str] = {}


def _canonical(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


class _Handler(BaseHTTPRequestHandler):
    state: RegistryState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_POST(self) -> None:
        path = urlparse(self.path).path
        m = re.fullmatch(r"/subjects/([^/]+)/versions", path)
        if not m:
            return self._send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
        subject = unquote(m.group(1))
        body = self._body()
        try:
            canon = _canonical(body["schema"])
        except (KeyError, ValueError, TypeError):
            return self._send(422, {"error_code": 42201, "message": "Invalid schema"})
        s = self.state
        with s.lock:
            canon_all = [_canonical(x) for x in s.schemas]
            sid = canon_all.index(canon) + 1 if canon in canon_all else None
            ids = s.subjects.setdefault(subject, [])
            if sid is not None and sid in ids:
                return self._send(200, {"id": sid})
            if ids and s.compat.get(subject) == "READ_ONLY":
                return self._send(
                    409,
                    {
                        "error_code": 409,
                        "message": "Schema being registered is incompatible with an earlier "
                        f'schema for subject "{subject}"',
                    },
                )
            if sid is None:
                s.schemas.append(body["schema"])
                sid = len(s.schemas)
            ids.append(sid)
        self._send(200, {"id": sid})

    def do_PUT(self) -> None:
        m = re.fullmatch(r"/config/([^/]+)", urlparse(self.path).path)
        if not m:
            return self._send(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
        level = self._body().get("compatibility", "NONE")
        with self.state.lock:
            self.state.compat[unquote(m.group(1))] = level
        self._send(200, {"compatibility": level})

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        s = self.state
        with s.lock:
            m = re.fullmatch(r"/schemas/ids/(\d+)", path)
            if m:
                i = int(m.group(1))
                if 1 <= i <= len(s.schemas):
                    return self._send(200, {"schema": s.schemas[i - 1]})
                return self._send(404, {"error_code": 40403, "message": "Schema not found"})
            if path == "/subjects":
                return self._send(200, sorted(s.subjects))
            m = re.fullmatch(r"/subjects/([^/]+)/versions(?:/([^/]+))?", path)
            if m and unquote(m.group(1)) in s.subjects:
                subject = unquote(m.group(1))
                ids = s.subjects[subject]
                if m.group(2) is None:
                    return self._send(200, list(range(1, len(ids) + 1)))
                v = len(ids) if m.group(2) == "latest" else int(m.group(2))
                if 1 <= v <= len(ids):
                    sid = ids[v - 1]
                    return self._send(
                        200,
                        {"subject": subject, "version": v, "id": sid, "schema": s.schemas[sid - 1]},
                    )
            self._send(404, {"error_code": 40401, "message": "Subject not found"})


class RegistryServer:
    """Serve on 127.0.0.1 (a free port) in a daemon thread until ``stop()``."""

    def __init__(self) -> None:
        self.state = RegistryState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def versions(self, subject: str) -> list[int]:
        with self.state.lock:
            return list(self.state.subjects.get(subject, []))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
