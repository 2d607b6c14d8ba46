"""`cdc serve` in tests: a real log written through the log sink, and plain HTTP clients (SSE and
the pull API) as a user's program in another language would talk to it."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cdc import avro
from cdc.model import ChangeBatch, Column, RowChange, TableSchema
from cdc.sinks.log import LogSink, LogSinkConfig

TOKEN = "s3cret-token-0123456789abcdef"
SOURCE = {
    "type": "record",
    "name": "Source",
    "namespace": "test",
    "fields": [{"name": "ts_us", "type": "long"}],
}


def _table(name: str) -> TableSchema:
    return TableSchema(
        topic=f"shop.public.{name}",
        namespace="public",
        table=name,
        columns=(Column("id", "int", False, "integer"), Column("note", "string", True, "text")),
        key=(0,),
    )


TABLES = (_table("orders"), _table("items"))


def write_log(
    path: Path, count: int, *, first: int = 0, per_batch: int = 1000, **settings: Any
) -> None:
    """Append ``count`` row inserts (ids ``first``..) to the log in ``path`` through the real log
    sink (``settings``: more of its config): even ids on shop.public.orders, odd ones on
    shop.public.items."""
    sink = LogSink(LogSinkConfig(type="log", path=path, fsync=False, **settings))
    enc = avro.Encoder(sink.registry, SOURCE, "shop.transaction", tombstones=False)
    src = {"ts_us": 1}
    try:
        for lo in range(first, first + count, per_batch):
            ids = range(lo, min(lo + per_batch, first + count))
            events: list[Any] = [
                RowChange(TABLES[i % 2], "c", None, (i, f"row {i}"), src, 1000 + i, f"e{i}")
                for i in ids
            ]
            sink.write(enc.encode(ChangeBatch(events, {"n": ids[-1]})))
    finally:
        sink.close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl: (cert.pem, key.pem)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Client:
    """HTTP(S) requests to one server, with or without the token."""

    def __init__(
        self, port: int, token: str | None = TOKEN, tls: ssl.SSLContext | None = None
    ) -> None:
        self.port = port
        self.token = token
        self.tls = tls

    def connect(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        if self.tls is not None:
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=self.tls
            )
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**out, **(extra or {})}

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        conn = self.connect()
        try:
            data = None if body is None else json.dumps(body).encode()
            hdrs = self.headers(headers)
            if data is not None:
                hdrs["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def sse(self, path: str, last_event_id: int | None = None) -> SseStream:
        extra = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            extra["Last-Event-ID"] = str(last_event_id)
        conn = self.connect()
        conn.request("GET", path, headers=self.headers(extra))
        resp = conn.getresponse()
        return SseStream(conn, resp)


class SseStream:
    """A Server-Sent Events stream, parsed as EventSource does (id, event, data; comments)."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.conn = conn
        self.resp = resp
        self.status = resp.status
        self.comments = 0

    def events(self, timeout: float = 120.0) -> Iterator[dict[str, Any]]:
        """``{"id", "event", "data"}`` per event, as they come; ends when the server closes.
        Fails the test after ``timeout`` seconds (keep-alive comments would wait forever)."""
        deadline = time.monotonic() + timeout
        fields: dict[str, Any] = {}
        for raw in self.resp:
            if time.monotonic() > deadline:
                raise AssertionError(f"no end of the SSE stream after {timeout}s")
            line = raw.decode().rstrip("\r\n")
            if not line:
                if "data" in fields:
                    yield {"event": "message", **fields}
                fields = {}
            elif line.startswith(":"):
                self.comments += 1
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")

    def close(self) -> None:
        """Go away as a client does: close the connection without a word."""
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)
        self.resp.close()
        self.conn.close()
