"""The HTTP side of `cdc serve` (see ``cdc.serve``): the bounded server, and the handler that
answers each route: parameters, statuses, the SSE stream, fetch and commit. One file (about 500
lines) because the routes are methods of one handler sharing its answers and checks."""

from __future__ import annotations

import hmac
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urlsplit

from cdc._jsonout import dumps
from cdc.config import ServeConfig
from cdc.errors import CdcError, SinkError
from cdc.http import _BoundedServer
from cdc.sinks.log import EventLog, OffsetOutOfRange, open_log, parse_since

log = logging.getLogger(__name__)

DEFAULT_FETCH = 500
MAX_WAIT_S = 60.0  # a long poll longer than this is a stuck client as far as we know
MAX_BODY = 64 * 1024  # a commit is a few bytes
# Records one fetch passes over at most: with a rare topic, the answer comes back (maybe empty,
# next_offset < end_offset) instead of reading the whole log while the client waits.
MAX_SCAN = 1_000_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class HttpError(Exception):
    """An answer other than 200: ``status`` and a message for the JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


class _Stop(Exception):
    """Raised from a reader's wait to end a stream or a long poll."""


def _gone(offset: int, start: int) -> HttpError:
    return HttpError(
        410,
        f"offset {offset} is no longer in the log (retention deleted it); the log starts at "
        f"offset {start} now: read from there, or from=earliest, knowing that the records in "
        "between are gone",
        start_offset=start,
    )


def _bad(message: str) -> NoReturn:
    raise HttpError(400, message)


def _int_param(query: dict[str, list[str]], name: str, low: int = 0) -> int | None:
    raw = _param(query, name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        _bad(f"bad {name} {raw!r}: use a whole number >= {low}")
    if value < low:
        _bad(f"bad {name} {raw!r}: use a whole number >= {low}")
    return value


def _param(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _since(raw: str) -> int:
    try:
        return parse_since(raw)
    except ValueError as e:
        _bad(f"bad from_time: {e}")


def _close(it: Iterator[Any]) -> None:
    """Close a reader's generator now (its files), not when it is collected."""
    close = getattr(it, "close", None)
    if close is not None:
        close()


class Server(_BoundedServer):
    """``_BoundedServer`` with the logs, the token, and TLS done in the connection's own thread
    (a handshake in the accepting thread would let one slow client stall every other)."""

    def __init__(
        self,
        config: ServeConfig,
        logs: dict[str, Path],
        token: str | None,
        tls: ssl.SSLContext | None,
    ) -> None:
        self.config = config
        self.logs = logs
        self.token = token.encode() if token is not None else None
        self.tls = tls
        self.stopping = threading.Event()
        super().__init__((config.bind, config.port), _Handler, config.max_connections)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.config.idle_timeout)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            log.debug("serve: TLS handshake with %s failed: %s", client_address, e)
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)  # type: ignore[arg-type]
        finally:
            conn.close()  # the plain socket was detached into it: closing that one does nothing


class _Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.0"  # one request per connection: connections bound requests

    def setup(self) -> None:
        super().setup()
        # on the socket: reading the request, and each write (a client that stops taking an SSE
        # stream is dropped after this long)
        self.connection.settimeout(self.server.config.idle_timeout)

    # --- dispatch ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_OPTIONS(self) -> None:
        # A browser's CORS preflight carries no credentials: answer it without the token.
        self.send_response(204)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "GET, POST")
        self.send_header(
            "Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID"
        )
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            self._authorize(query)
            parts = url.path.split("/")[1:]
            if not parts or parts[0] != "logs":
                raise HttpError(404, f"no such path {url.path!r}: the logs are under /logs")
            if len(parts) == 1 and method == "GET":
                self._json(200, {"pipelines": sorted(self.server.logs)})
                return
            pipeline = parts[1]
            rest = parts[2:]
            if rest == [] and method == "GET":
                self._info(pipeline)
            elif rest == ["events"] and method == "GET":
                self._events(pipeline, query)
            elif len(rest) == 3 and rest[0] == "consumers" and rest[2] == "fetch":
                self._allow(method, "GET")
                self._fetch(pipeline, rest[1], query)
            elif len(rest) == 3 and rest[0] == "consumers" and rest[2] == "commit":
                self._allow(method, "POST")
                self._commit(pipeline, rest[1])
            else:
                raise HttpError(
                    404,
                    f"no such path {url.path!r}: use /logs/PIPELINE, /logs/PIPELINE/events, "
                    "/logs/PIPELINE/consumers/NAME/fetch or .../commit",
                )
        except HttpError as e:
            self._json(e.status, {"error": e.message, **e.extra})
        except OffsetOutOfRange as e:  # retention overtook the reader while it read
            gone = _gone(e.offset, e.start_offset)
            self._json(gone.status, {"error": gone.message, **gone.extra})
        except CdcError as e:
            log.warning("serve: %s %s: %s", method, url.path, e)
            self._json(500, {"error": str(e)})

    def _allow(self, method: str, allowed: str) -> None:
        if method != allowed:
            raise HttpError(405, f"use {allowed} for this path")

    def _authorize(self, query: dict[str, list[str]]) -> None:
        want = self.server.token
        if want is None:
            return
        header = self.headers.get("Authorization", "")
        got: str | None = None
        if header[:7].lower() == "bearer ":
            got = header[7:].strip()
        elif not header:
            got = _param(query, "access_token")
        if got is None or not hmac.compare_digest(got.encode(), want):
            raise HttpError(
                401,
                "missing or wrong token: send 'Authorization: Bearer TOKEN' "
                "(or ?access_token=TOKEN from a browser's EventSource)",
            )

    # --- routes ------------------------------------------------------------------------------

    def _open(self, pipeline: str) -> EventLog:
        path = self.server.logs.get(pipeline) if _NAME.fullmatch(pipeline) else None
        if path is None:
            names = ", ".join(sorted(self.server.logs)) or "none"
            raise HttpError(
                404, f"no pipeline {pipeline!r} with a log sink is served here: use one of {names}"
            )
        if not path.is_dir():
            raise HttpError(
                404,
                f"the log of pipeline {pipeline!r} does not exist yet: the daemon creates it "
                "when the pipeline first runs",
            )
        return open_log(path)

    def _info(self, pipeline: str) -> None:
        info = self._open(pipeline).reader.info()
        topics = sorted(
            {s.rsplit("-", 1)[0] for s in info["subjects"] if s.endswith(("-key", "-value"))}
        )
        self._json(
            200,
            {
                "pipeline": pipeline,
                "start_offset": info["start_offset"],
                "end_offset": info["end_offset"],
                "records": info["records"],
                "last_write_ms": info["last_write_ms"],
                "topics": topics,
                "consumers": info["consumers"],
            },
        )

    def _start(self, log_: EventLog, offset: int) -> int:
        """``offset`` if the log holds it (or it is the end); else 400, or 410 if deleted."""
        first = log_.start_offset()
        if offset < first:
            raise _gone(offset, first)
        end = log_.end_offset()
        if offset > end:
            raise HttpError(
                400,
                f"offset {offset} is past the end of the log: it ends at offset {end} (the "
                "next record written gets that offset)",
                end_offset=end,
            )
        return offset

    def _events(self, pipeline: str, query: dict[str, list[str]]) -> None:
        topic = _param(query, "topic")
        last_id = self.headers.get("Last-Event-ID")
        raw_from = _param(query, "from")
        raw_time = _param(query, "from_time")
        start: int | str = "earliest"
        since: int | None = None
        if last_id:  # EventSource reconnecting: after the last event it got, whatever the URL says
            try:
                start = int(last_id) + 1
            except ValueError:
                _bad(f"bad Last-Event-ID {last_id!r}: the id of an event is its offset")
            if start < 1:
                _bad(f"bad Last-Event-ID {last_id!r}: the id of an event is its offset")
        elif raw_from is not None and raw_time is not None:
            _bad("give from or from_time, not both")
        elif raw_from in ("earliest", "latest"):
            start = raw_from
        elif raw_from is not None:
            start = _int_param(query, "from") or 0
        elif raw_time is not None:
            since = _since(raw_time)
        log_ = self._open(pipeline)
        if start == "latest":  # what is written after this request, not after the headers
            start = log_.end_offset()
        if isinstance(start, int):
            self._start(log_, start)
        if since is not None:
            log_.reader.offset_for_time(since)  # 410 now, before the stream starts
        self.send_response(200)
        self._cors()
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")  # nginx: pass events on as they come
        self.end_headers()
        out = self.wfile
        keepalive = self.server.config.keepalive
        stopping = self.server.stopping
        last_write = time.monotonic()
        out.write(b"retry: 1000\n\n")
        out.flush()

        def wait(seconds: float) -> None:
            nonlocal last_write
            if stopping.wait(seconds):
                raise _Stop
            if time.monotonic() - last_write >= keepalive:
                out.write(b": keep-alive\n\n")  # raises once the client has gone
                out.flush()
                last_write = time.monotonic()

        batches = log_.batches(
            start,  # type: ignore[arg-type]
            since=since,
            topic=topic,
            follow=True,
            wait=wait,
        )
        try:
            for batch in batches:
                if batch.events:
                    out.write(
                        "".join(
                            f"id: {ev.offset}\ndata: {dumps(ev.as_json())}\n\n"
                            for ev in batch.events
                        ).encode()
                    )
                    out.flush()
                    last_write = time.monotonic()
                if stopping.is_set():
                    break
        except _Stop:
            pass
        except (OSError, ValueError):  # the client went away (ValueError: write to closed file)
            log.debug("serve: SSE client %s of %s went away", self.client_address, pipeline)
        except CdcError as e:  # headers are sent: say it in the stream, then end it
            error: dict[str, Any] = {"error": str(e)}
            if isinstance(e, OffsetOutOfRange):
                gone = _gone(e.offset, e.start_offset)
                error = {"error": gone.message, **gone.extra}
            try:
                out.write(f"event: error\ndata: {json.dumps(error)}\n\n".encode())
                out.flush()
            except (OSError, ValueError):
                pass
        finally:
            _close(batches)

    def _consumer_of(self, log_: EventLog, name: str) -> Any:
        if not _NAME.fullmatch(name):
            _bad(
                f"bad consumer name {name!r}: use letters, digits, '_', '.' and '-' "
                "(starting with a letter or digit, at most 100 characters)"
            )
        try:
            return log_.consumer(name)
        except SinkError as e:
            if "in use" in str(e):
                raise HttpError(
                    409,
                    f"consumer {name!r} is in use by another reader (one at a time per name); "
                    "retry, or use another consumer name",
                ) from None
            raise

    def _fetch(self, pipeline: str, name: str, query: dict[str, list[str]]) -> None:
        cap = self.server.config.max_fetch
        most = _int_param(query, "max", 1)
        most = DEFAULT_FETCH if most is None else most
        if most > cap:
            _bad(f"bad max {most}: at most {cap} events per fetch (serve.max_fetch)")
        topic = _param(query, "topic")
        raw_wait = _param(query, "wait")
        try:
            wait_s = 0.0 if raw_wait is None else float(raw_wait)
        except ValueError:
            wait_s = -1.0
        if not 0 <= wait_s <= MAX_WAIT_S:
            _bad(f"bad wait {raw_wait!r}: seconds from 0 to {MAX_WAIT_S:g}")
        from_offset = _int_param(query, "from")
        log_ = self._open(pipeline)
        with self._consumer_of(log_, name) as consumer:
            committed = consumer.committed
            start: int | str
            if from_offset is not None:
                start = self._start(log_, from_offset)
            elif committed is not None:
                start = self._start(log_, committed)
            else:
                start = "earliest"
            events: list[Any] = []
            deadline = time.monotonic() + wait_s
            stopping = self.server.stopping

            def wait(seconds: float) -> None:
                left = deadline - time.monotonic()
                if events or left <= 0 or stopping.wait(min(seconds, left)):
                    raise _Stop

            next_offset = start if isinstance(start, int) else log_.start_offset()
            first = next_offset
            batches = log_.batches(
                start,  # type: ignore[arg-type]
                topic=topic,
                follow=wait_s > 0,
                wait=wait,
            )
            try:
                for batch in batches:
                    room = most - len(events)
                    if len(batch.events) > room:
                        events += batch.events[:room]
                        next_offset = events[-1].offset + 1
                        break
                    events += batch.events
                    next_offset = batch.next_offset
                    if len(events) == most or next_offset - first >= MAX_SCAN:
                        break
            except _Stop:
                pass
            finally:
                _close(batches)
            body = {
                "events": [ev.as_json() for ev in events],
                "next_offset": next_offset,
                "committed": committed,
                "end_offset": log_.end_offset(),
            }
        self._send(200, (dumps(body) + "\n").encode(), "application/json")

    def _commit(self, pipeline: str, name: str) -> None:
        body = self._body()
        offset = body.get("offset")
        rewind = body.get("rewind", False)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            _bad(f'bad offset {offset!r}: send {{"offset": N}} with N a whole number >= 0')
        if not isinstance(rewind, bool):
            _bad(f"bad rewind {rewind!r}: use true or false")
        log_ = self._open(pipeline)
        with self._consumer_of(log_, name) as consumer:
            committed = consumer.committed
            if committed is not None and offset < committed and not rewind:
                raise HttpError(
                    409,
                    f"offset {offset} is behind consumer {name!r}'s committed offset "
                    f"{committed}: a late or repeated commit would replay records; send "
                    '"rewind": true to move it back on purpose',
                    committed=committed,
                )
            try:
                consumer.commit(offset)
            except SinkError as e:
                if "the log ends" in str(e):
                    raise HttpError(400, str(e), end_offset=log_.end_offset()) from None
                raise
        self._json(200, {"committed": offset})

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise HttpError(411, "send the body with a Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise HttpError(413, f"body of {length} bytes is too large (at most {MAX_BODY})")
        raw = self.rfile.read(length)
        try:
            doc = json.loads(raw)
        except ValueError:
            _bad('body is not JSON: send {"offset": N}')
        if not isinstance(doc, dict):
            _bad('body is not a JSON object: send {"offset": N}')
        return doc

    # --- answers -----------------------------------------------------------------------------

    def _cors(self) -> None:
        allowed = self.server.config.allow_origins
        origin = self.headers.get("Origin")
        if origin and (origin in allowed or "*" in allowed):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")

    def _json(self, code: int, body: dict[str, Any]) -> None:
        self._send(code, (json.dumps(body) + "\n").encode(), "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self._cors()
        if code == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="cdc"')
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Never the query string: a browser's token may be in it.
        path = urlsplit(self.path).path if hasattr(self, "path") else "-"
        log.debug("serve: %s %s %s -> %s", self.client_address[0], self.command, path, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("serve: %s: %s", self.client_address[0], "bad request")
