"""The JetStream sink: a synchronous ``Sink`` over nats-py's asyncio client.

Delivery guarantee: every change is stored in the stream at least once, in commit order, and
exactly once as long as a restart replays it within the stream's duplicate window. Each message
carries ``Nats-Msg-Id: <topic>:<event id>``, which derives from the source position and so is the
same when a restart replays a change; JetStream drops a message whose id it stored within the
duplicate window. ``write`` returns once JetStream acknowledged every message of the batch; only
then is the batch's position written to the checkpoint file, and only checkpointed positions are
acknowledged to the source. A crash between the acknowledgements and the checkpoint replays at most
that one batch, which the message ids turn into duplicates that JetStream drops.

Order: messages are published asynchronously on one connection (at most ``max_pending``
unacknowledged), and JetStream stores one connection's messages in the order they arrive. When a
connection breaks or acknowledgements stop coming, the connection is closed, a new one is opened
and the batch is published again from its first unacknowledged message, in order. A message the
stream got by either connection is stored once (by id); since each connection delivers in order,
a later message is never stored before an earlier one, unless JetStream refused the earlier one
outright while storing the later (which fails the batch). The client's own reconnect is off on
purpose: it would send its buffered messages after the reconnect, behind messages lost in the
broken socket.

Threads: nats-py is asyncio; its event loop runs on a dedicated thread and the pipeline thread
waits for each operation (``write``, ``registry.register``) to finish there.

Stopping: ``interrupt()`` (the pipeline calls it on SIGTERM) lets the operation in progress finish
for up to ``STOP_GRACE_S`` seconds while the server answers, and cancels it at once while the
server is unavailable; a cancelled ``write`` raises a retryable SinkError and checkpoints nothing,
so the next start publishes that batch again (JetStream drops what it already stored). Opening the
sink tries one connection (for at most ``OPEN_ATTEMPT_S``) and, if the server is unavailable,
leaves connecting to the first operation, so that a sink opened during an outage can be stopped
too.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.kv import KeyValue

from cdc.avro import canonical_schema
from cdc.checkpoint import Checkpoint
from cdc.connectjson import record_format
from cdc.errors import SinkError
from cdc.model import EncodedBatch, EncodedRecord, Position
from cdc.sinks.nats._subjects import SubjectMap, covers, sanitise
from cdc.sinks.nats.config import NatsSinkConfig, default_stream

log = logging.getLogger(__name__)

T = TypeVar("T")

# Headers of every message (besides Nats-Msg-Id and Nats-Expected-Stream).
H_TOPIC = "Cdc-Topic"
H_KEY = "Cdc-Key"
H_KEY_SCHEMA = "Cdc-Key-Schema-Id"
H_SCHEMA = "Cdc-Schema-Id"
H_TOMBSTONE = "Cdc-Tombstone"
H_TIMESTAMP = "Cdc-Timestamp-Ms"


# How long an operation in progress may go on after ``interrupt()`` while the server answers.
STOP_GRACE_S = 2.0
# How long opening the sink tries to connect before leaving it to the first write.
OPEN_ATTEMPT_S = 3.0


class _Interrupted(Exception):
    """The operation was cancelled by ``interrupt()``."""


class _Broken(Exception):
    """The connection cannot be trusted any more: drop it and retry on a new one."""


# Errors after which the connection is dropped and the operation retried on a new one.
_TRANSIENT = (
    _Broken,
    OSError,
    asyncio.TimeoutError,
    nats.errors.Error,  # includes the JetStream client errors (NoStreamResponse, API 503, ...)
)


class _Conn:
    """One connection and the acknowledgements that arrived on it, by reply number.

    Each message is published with reply subject ``<inbox>.<n>``; JetStream answers there with a
    PubAck (JSON), an error, or a no-responders status. Replies are kept in ``acks`` until the
    publisher takes them; ``arrived`` wakes it up.
    """

    def __init__(self, nc: NATS, js: JetStreamContext, kv: KeyValue) -> None:
        self.nc = nc
        self.js = js
        self.kv = kv
        self.inbox = nc.new_inbox()
        self.next_reply = 0
        self.acks: dict[int, tuple[bytes, dict[str, str] | None]] = {}
        self.arrived = asyncio.Event()

    async def listen(self) -> None:
        start = len(self.inbox) + 1

        async def on_reply(msg: Msg) -> None:
            self.acks[int(msg.subject[start:])] = (msg.data, msg.headers)
            self.arrived.set()

        await self.nc.subscribe(self.inbox + ".*", cb=on_reply)


@dataclass(slots=True)
class _Message:
    subject: str
    payload: bytes
    headers: dict[str, str]


def _is_fatal_api(e: BaseException) -> bool:
    """A JetStream refusal that retrying cannot cure (as opposed to 503: not available now)."""
    retry = (408, 503)
    return isinstance(e, nats.js.errors.APIError) and e.code is not None and e.code not in retry


def _describe(e: BaseException) -> str:
    if isinstance(e, nats.js.errors.ServiceUnavailableError) and e.code is None:
        return "jetstream did not answer (no responders: is jetstream enabled on the server?)"
    if isinstance(e, nats.js.errors.APIError):
        return f"{e.description or 'error'} (code {e.code}, err_code {e.err_code})"
    if isinstance(e, _Broken):
        return str(e)
    if isinstance(e, nats.errors.NoServersError):
        return "no server accepted a connection"
    if isinstance(e, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
        return "jetstream did not answer (no responders: is jetstream enabled on the server?)"
    if not str(e):
        return type(e).__name__
    if type(e) is nats.errors.Error:
        return str(e)
    return f"{type(e).__name__}: {e}".rstrip(": ")


class _Loop:
    """An asyncio event loop on its own daemon thread.

    ``run`` waits for a coroutine on the loop; once ``give_up()`` turns true it cancels it and
    raises ``_Interrupted``.
    """

    def __init__(self, name: str, give_up: Callable[[], bool]) -> None:
        self.loop = asyncio.new_event_loop()
        self._give_up = give_up
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], interruptible: bool = True) -> T:
        if interruptible and self._give_up():
            coro.close()
            raise _Interrupted
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        while True:
            try:
                return fut.result(timeout=0.1 if interruptible else None)
            except concurrent.futures.TimeoutError:
                if self._give_up():
                    fut.cancel()
            except concurrent.futures.CancelledError:
                raise _Interrupted from None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class _Schemas:
    """Schemas by id, as stored in the bucket: key ``<id>``, value ``{"id", "subject", "schema"}``.

    Ids are global and an identical schema gets the one id it was first given, under any subject,
    as in Confluent's registry. The bucket is read whole on start: ids are stable across restarts.
    """

    def __init__(self) -> None:
        self.by_id: dict[int, dict[str, Any]] = {}
        self.ids: dict[str, int] = {}

    async def load(self, kv: KeyValue) -> None:
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return
        for k in keys:
            if not k.isdigit() or int(k) in self.by_id:
                continue
            entry = await kv.get(k)
            if entry.value is None:
                continue
            doc = json.loads(entry.value)
            self._add(int(k), doc["schema"])

    def _add(self, sid: int, schema: Any) -> None:
        self.by_id[sid] = schema
        self.ids.setdefault(canonical_schema(schema), sid)

    async def register(self, kv: KeyValue, subject: str, schema: dict[str, Any]) -> int:
        canon = canonical_schema(schema)
        while True:
            sid = self.ids.get(canon)
            if sid is not None:
                return sid
            sid = max(self.by_id, default=0) + 1
            doc = {"id": sid, "subject": subject, "schema": schema}
            try:
                await kv.create(str(sid), json.dumps(doc, separators=(",", ":")).encode())
            except nats.js.errors.KeyWrongLastSequenceError:
                await self.load(kv)  # another writer took that id: learn it and try again
                continue
            self._add(sid, schema)
            log.debug("registered schema id %d for %s", sid, subject)
            return sid


class NatsRegistry:
    """``cdc.model.SchemaRegistry`` backed by the ``<stream>_schemas`` key-value bucket."""

    def __init__(self, sink: NatsSink) -> None:
        self._sink = sink

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """The schema's id, stored in the bucket (acknowledged by JetStream) before returning."""
        return self._sink._register(subject, schema)


class NatsSink:
    """Publishes encoded batches to one JetStream stream; see the module docstring."""

    def __init__(self, config: NatsSinkConfig, pipeline_name: str, topic_prefix: str) -> None:
        self.config = config
        self.tombstones = config.tombstones
        self.record_format = record_format(config)
        self.stream = config.stream or default_stream(pipeline_name)
        self.bucket = f"{self.stream}_schemas"
        self.subject_prefix = config.subject_prefix or sanitise(topic_prefix)
        self.filter = f"{self.subject_prefix}.>"
        self._name = pipeline_name
        self._subjects = SubjectMap(topic_prefix, self.subject_prefix)
        self._schemas = _Schemas()
        self._conn: _Conn | None = None
        self._checked = False
        self._outage_since: float | None = None
        self._outage_logged = False
        self.duplicates = 0
        self.registry = NatsRegistry(self)
        self._interrupted_at: float | None = None
        self._schemas_loaded = False
        self._checkpoint = Checkpoint(config.path, "nats sink")
        if self._checkpoint.extra.get("stream") not in (None, self.stream):
            log.warning(
                "checkpoint %s was written for stream %r, now writing to %r: resuming from its "
                "position, so %r holds nothing before it",
                config.path,
                self._checkpoint.extra.get("stream"),
                self.stream,
                self.stream,
            )
        self._loop = _Loop(f"nats-{pipeline_name}", self._give_up)
        try:
            # One attempt: a refusal (stream subjects, credentials) fails here, at once; an
            # unavailable server is retried by the first write, which interrupt() can end.
            self._loop.run(self._first_connect())
        except BaseException:
            self.close()
            raise

    # --- the Sink protocol --------------------------------------------------------------------

    def write(self, batch: EncodedBatch) -> None:
        """Publish the batch; return once JetStream acknowledged all of it and it is checkpointed.

        Raises SinkError (retryable) when JetStream refuses a message or stays unavailable for
        ``retry_for`` seconds; the pipeline then restarts from the checkpoint.
        """
        msgs = [self._message(r) for r in batch.records]
        if msgs:
            before = self.duplicates
            try:
                self._loop.run(self._publish_all(msgs))
            except _Interrupted:
                raise SinkError(
                    f"nats sink: stopped while publishing a batch to stream {self.stream!r}; "
                    "it is published again on restart (jetstream drops what it already stored)",
                    retryable=True,
                ) from None
            if self.duplicates > before:
                log.info(
                    "stream %r already held %d of %d messages of this batch (published before a "
                    "restart or a broken connection); jetstream dropped them as duplicates",
                    self.stream,
                    self.duplicates - before,
                    len(msgs),
                )
        try:
            self._checkpoint.save(batch.position, {"stream": self.stream})
        except OSError as e:
            raise SinkError(
                f"cannot write checkpoint in {self.config.path}: {e.strerror}; the batch is in "
                "the stream and will be published again (and dropped as a duplicate) on restart",
                retryable=True,
            ) from None

    def committed(self) -> Position | None:
        return self._checkpoint.position

    def acknowledgeable(self) -> Position | None:
        # JetStream holds everything up to the checkpoint: the source may discard it.
        return self._checkpoint.position

    def interrupt(self) -> None:
        """Make a ``write`` or ``register`` in progress give up (see the module docstring)."""
        if self._interrupted_at is None:
            self._interrupted_at = time.monotonic()

    def _give_up(self) -> bool:
        """Whether an operation should be cancelled: interrupted, and the server away or the
        grace period over."""
        since = self._interrupted_at
        if since is None:
            return False
        return self._outage_since is not None or time.monotonic() - since >= STOP_GRACE_S

    def close(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            try:
                loop.run(self._drop(), interruptible=False)
            finally:
                loop.close()
            self._loop = None  # type: ignore[assignment]
        self._checkpoint.close()

    # --- messages -----------------------------------------------------------------------------

    def _message(self, r: EncodedRecord) -> _Message:
        headers = {
            "Nats-Msg-Id": f"{r.topic}:{r.event_id}",
            "Nats-Expected-Stream": self.stream,
            H_TOPIC: r.topic,
            H_TIMESTAMP: str(r.timestamp_ms),
        }
        if r.key is not None:
            headers[H_KEY] = base64.b64encode(r.key).decode()
            if len(r.key) >= 5 and r.key[0] == 0:
                headers[H_KEY_SCHEMA] = str(int.from_bytes(r.key[1:5], "big"))
        if r.value is None:
            headers[H_TOMBSTONE] = "true"
            payload = b""
        else:
            payload = r.value
            if len(r.value) >= 5 and r.value[0] == 0:
                headers[H_SCHEMA] = str(int.from_bytes(r.value[1:5], "big"))
        for name, value in r.headers:
            headers[name] = value.decode("utf-8", "replace")
        return _Message(self._subjects.subject(r.topic), payload, headers)

    # --- schemas ------------------------------------------------------------------------------

    async def _first_connect(self) -> None:
        try:
            # Short: the pipeline cannot interrupt the sink before it is open.
            await asyncio.wait_for(self._connect(), OPEN_ATTEMPT_S)
        except _TRANSIENT as e:
            await self._drop()
            if _is_fatal_api(e):
                raise SinkError(
                    f"jetstream refused a request: {_describe(e)}", retryable=True
                ) from None
            self._outage_since = time.monotonic()
            self._outage_logged = True
            log.warning(
                "nats %s unavailable (%s); retrying until it is back (for up to %gs)",
                ",".join(self.config.servers),
                _describe(e),
                self.config.retry_for,
            )

    def _register(self, subject: str, schema: dict[str, Any]) -> int:
        canon_hit = self._schemas.ids.get(canonical_schema(schema))
        if canon_hit is not None:
            return canon_hit

        async def op(conn: _Conn) -> int:
            return await self._schemas.register(conn.kv, subject, schema)

        try:
            return self._loop.run(self._retrying(op))
        except _Interrupted:
            raise SinkError(
                f"nats sink: stopped while registering the schema of {subject!r}; nothing of "
                "the batch was published",
                retryable=True,
            ) from None

    # --- publishing ---------------------------------------------------------------------------

    async def _publish_all(self, msgs: list[_Message]) -> None:
        progress = [0]  # index of the first message not acknowledged yet

        async def op(conn: _Conn) -> None:
            await self._publish_from(conn, msgs, progress)

        await self._retrying(op)

    async def _publish_from(self, conn: _Conn, msgs: list[_Message], progress: list[int]) -> None:
        """Publish ``msgs[progress[0]:]``, at most ``max_pending`` unacknowledged, in order.

        ``progress[0]`` advances past each acknowledged message, so that a retry on a new
        connection starts at the first one not acknowledged.
        """
        nc = conn.nc
        window = self.config.max_pending
        timeout = self.config.ack_timeout
        reply_of: dict[int, int] = {}  # message index -> reply number
        sent = progress[0]
        last_ack = time.monotonic()
        while progress[0] < len(msgs):
            while sent < len(msgs) and sent - progress[0] < window:
                m = msgs[sent]
                n = conn.next_reply
                conn.next_reply += 1
                try:
                    await nc.publish(m.subject, m.payload, f"{conn.inbox}.{n}", m.headers)
                except nats.errors.MaxPayloadError:
                    raise SinkError(
                        f"message {m.headers['Nats-Msg-Id']!r} for subject {m.subject!r} has "
                        f"{len(m.payload)} bytes, more than the server's max_payload "
                        f"({nc.max_payload}); raise max_payload in the nats-server configuration"
                    ) from None
                reply_of[sent] = n
                sent += 1
            head = progress[0]
            reply = conn.acks.pop(reply_of[head], None)
            if reply is not None:
                self._check_ack(reply[0], reply[1], msgs[head])
                del reply_of[head]
                progress[0] = head + 1
                last_ack = time.monotonic()
                continue
            if not nc.is_connected:
                raise _Broken("connection lost")
            left = last_ack + timeout - time.monotonic()
            if left <= 0:
                raise _Broken(f"no acknowledgement within {timeout:g}s")
            conn.arrived.clear()
            if reply_of[head] in conn.acks:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.arrived.wait(), timeout=min(left, 0.2))

    def _check_ack(self, data: bytes, headers: dict[str, str] | None, m: _Message) -> None:
        """Count a PubAck; raise _Broken if JetStream could not take the message, SinkError if
        it refused it."""
        if not data and headers and headers.get("Status") == "503":
            raise _Broken(
                "no stream took the message (no responders: the stream is gone or jetstream is "
                "not available)"
            )
        try:
            resp = json.loads(data)
        except ValueError:
            raise _Broken(f"unexpected acknowledgement {data[:100]!r}") from None
        err = resp.get("error")
        if err is None:
            if resp.get("duplicate"):
                self.duplicates += 1
            return
        code = err.get("code")
        desc = f"{err.get('description', 'error')} (code {code}, err_code {err.get('err_code')})"
        if code in (408, 503):
            raise _Broken(desc)
        raise SinkError(
            f"jetstream refused message {m.headers['Nats-Msg-Id']!r} on subject {m.subject!r} "
            f"of stream {self.stream!r}: {desc}",
            retryable=True,
        )

    # --- connection ---------------------------------------------------------------------------

    async def _retrying(self, op: Callable[[_Conn], Awaitable[T]]) -> T:
        """Run ``op`` on a healthy connection, reconnecting and repeating it while NATS is away.

        The outage is logged once when it starts and once when it ends. Past ``retry_for``
        seconds a retryable SinkError is raised, for the daemon to restart the pipeline.
        """
        delay = 0.25
        while True:
            try:
                conn = await self._connect()
                result = await op(conn)
            except _TRANSIENT as e:
                await self._drop()
                reason = _describe(e)
                if _is_fatal_api(e):
                    msg = f"jetstream refused a request: {reason}"
                    raise SinkError(msg, retryable=True) from None
                now = time.monotonic()
                if self._outage_since is None:
                    self._outage_since = now
                if not self._outage_logged:
                    self._outage_logged = True
                    log.warning(
                        "nats %s unavailable (%s); retrying until it is back (for up to %gs)",
                        ",".join(self.config.servers),
                        reason,
                        self.config.retry_for,
                    )
                if now - self._outage_since > self.config.retry_for:
                    raise SinkError(
                        f"nats {','.join(self.config.servers)} unavailable for "
                        f"{now - self._outage_since:.0f}s ({reason}); check that the server is "
                        "running and reachable",
                        retryable=True,
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._outage_since is not None:
                if self._outage_logged:
                    log.info(
                        "nats %s available again after %.1fs; resuming",
                        self._conn.nc.connected_url.netloc  # type: ignore[union-attr]
                        if self._conn and self._conn.nc.connected_url
                        else ",".join(self.config.servers),
                        time.monotonic() - self._outage_since,
                    )
                self._outage_since = None
                self._outage_logged = False
            return result

    async def _connect(self) -> _Conn:
        if self._conn is not None:
            if self._conn.nc.is_connected:
                return self._conn
            await self._drop()
        c = self.config

        async def quiet(e: Exception) -> None:
            log.debug("nats: %s", _describe(e))

        kwargs: dict[str, Any] = {}
        if c.user is not None:
            kwargs["user"] = c.user
            kwargs["password"] = c.password
        if c.token is not None:
            kwargs["token"] = c.token
        if c.credentials is not None:
            kwargs["user_credentials"] = str(c.credentials)
        if c.tls is not None or any(s.startswith("tls://") for s in c.servers):
            kwargs["tls"] = self._tls_context()
            if c.tls is not None and c.tls.server_name:
                kwargs["tls_hostname"] = c.tls.server_name
        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    c.servers,
                    name=f"cdc-{self._name}",
                    allow_reconnect=False,  # see the module docstring: we reconnect ourselves
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.1,
                    connect_timeout=c.connect_timeout,
                    error_cb=quiet,
                    **kwargs,
                ),
                timeout=(c.connect_timeout + 1) * 2 * len(c.servers),
            )
        except nats.errors.Error as e:
            if isinstance(e, nats.errors.AuthorizationError) or "authoriz" in str(e).lower():
                raise SinkError(
                    f"nats {','.join(c.servers)} refused our credentials: {_describe(e)}; check "
                    "user/password, token or credentials"
                ) from None
            raise
        try:
            js = nc.jetstream(timeout=c.ack_timeout)
            await self._check_stream(js)
            conn = _Conn(nc, js, await self._bucket(js))
            if not self._schemas_loaded:
                await self._schemas.load(conn.kv)
                self._schemas_loaded = True
            await conn.listen()
        except BaseException:
            await nc.close()
            raise
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.nc.is_closed:
            try:
                # Stopping: nothing left to flush that is not published again on restart.
                wait = 1 if self._interrupted_at is not None else 5
                await asyncio.wait_for(conn.nc.close(), timeout=wait)
            except Exception as e:  # a broken connection may fail to close cleanly
                log.debug("closing nats connection: %s", _describe(e))

    def _tls_context(self) -> ssl.SSLContext:
        t = self.config.tls
        ctx = ssl.create_default_context(cafile=str(t.ca_file) if t and t.ca_file else None)
        if t is not None and not t.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if t is not None and t.cert_file is not None and t.key_file is not None:
            ctx.load_cert_chain(str(t.cert_file), str(t.key_file))
        return ctx

    async def _check_stream(self, js: JetStreamContext) -> None:
        """Create the stream if missing (and allowed); check that its subjects cover ours."""
        c = self.config
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            if not c.create:
                raise SinkError(
                    f"stream {self.stream!r} does not exist: create it with subjects "
                    f"{self.filter!r}, or set create: true"
                ) from None
            try:
                await js.add_stream(
                    js_api.StreamConfig(
                        name=self.stream,
                        description=f"cdc pipeline {self._name}",
                        subjects=[self.filter],
                        retention=js_api.RetentionPolicy(c.retention),
                        storage=js_api.StorageType(c.storage),
                        num_replicas=c.replicas,
                        max_age=c.max_age,
                        duplicate_window=c.duplicate_window,
                    )
                )
            except nats.js.errors.BadRequestError as e:
                # Another sink may have just created it: then check it as an existing one.
                try:
                    info = await js.stream_info(self.stream)
                except nats.js.errors.NotFoundError:
                    raise SinkError(
                        f"cannot create stream {self.stream!r} with subjects {self.filter!r}: "
                        f"{_describe(e)}; if another stream already takes these subjects, use "
                        "it (set stream) or choose another subject_prefix"
                    ) from None
            else:
                if self._checkpoint.position is not None:
                    log.warning(
                        "stream %r was missing although checkpoint %s holds a position: created "
                        "it again; it holds nothing before that position (move the checkpoint "
                        "aside and drop the replication slot to start over)",
                        self.stream,
                        self.config.path,
                    )
                log.info(
                    "created stream %r (subjects %r, %s storage, %d replica(s), duplicate window "
                    "%gs)",
                    self.stream,
                    self.filter,
                    c.storage,
                    c.replicas,
                    c.duplicate_window,
                )
                self._checked = True
                return
        subjects = list(info.config.subjects or [])
        if not any(covers(s, self.filter) for s in subjects):
            raise SinkError(
                f"stream {self.stream!r} exists but its subjects {subjects} do not cover "
                f"{self.filter!r}: add {self.filter!r} to the stream's subjects, or set "
                "subject_prefix (or stream) to match"
            )
        if not self._checked:
            self._checked = True
            window = info.config.duplicate_window or 0
            log.info(
                "publishing to existing stream %r (subjects %s, duplicate window %gs)",
                self.stream,
                subjects,
                window,
            )
            if window < c.duplicate_window:
                log.warning(
                    "stream %r drops duplicates only within %gs (configured duplicate_window "
                    "%gs applies to streams this sink creates): a restart later than that after "
                    "a crash may store one batch twice",
                    self.stream,
                    window,
                    c.duplicate_window,
                )

    async def _bucket(self, js: JetStreamContext) -> KeyValue:
        c = self.config
        try:
            return await js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            if not c.create:
                raise SinkError(
                    f"schema bucket {self.bucket!r} does not exist: create it (a key-value "
                    "bucket, history 1), or set create: true"
                ) from None
        kv = await js.create_key_value(
            bucket=self.bucket,
            description=f"Avro schemas by id for stream {self.stream}",
            history=1,
            storage=js_api.StorageType(c.storage),
            replicas=c.replicas,
        )
        log.info("created schema bucket %r", self.bucket)
        return kv
