"""The event model every source produces and every sink consumes.

A source turns its change stream into ``ChangeBatch`` objects: row changes (``RowChange``) and
transaction boundaries (``TxBoundary``) in commit order, plus the ``Position`` to resume from once
everything in the batch is durable. The encoder turns a batch into an ``EncodedBatch`` of framed
Avro records, and the sink makes those durable.

Positions are plain JSON-serialisable dicts: only the source that made one interprets it; sinks
store them verbatim next to the data they cover.

The second half of the module holds the contracts the pipeline calls (``Source``, ``Sink``,
``FormatSink``, ``RowSink``, ``BatchEncoder``), what it hands a plugin when it opens one
(``PipelineContext`` with its ``Reporter``) and preflight ``Problem`` records. They live here
rather than in a module of their own because they are stated in these types, and ``cdc.model``
is what plugins and the conformance suite import: a separate module re-exported from here would
be an import cycle. docs/architecture.md describes them; tests/unit/test_contracts.py keeps the
two in step.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Position = dict[str, Any]
"""Where to resume: opaque to all but the source that produced it; JSON-serialisable."""

Op = Literal["c", "u", "d", "r", "t", "m"]
"""Debezium's ``op``: create, update, delete, read (snapshot), truncate, message (a logical
decoding message, ``TableSchema.form`` ``message``)."""

Form = Literal["envelope", "row", "payload", "message"]
"""What the events of a table version become (``TableSchema.form``): ``envelope``, Debezium's
change event (the sources' tables); ``row``, the flat row in ``after`` (the ``unwrap`` transform:
``after`` None is a tombstone, and no tombstone follows a delete); ``payload``, column 1 of
``after`` alone, keyed by the column ``key[0]`` alone (the ``outbox`` transform); ``message``,
Debezium's logical decoding message event (``message_table``: ``after`` is (prefix, content),
keyed by the prefix; op ``m``, no ``before``)."""


class _NoDefault:
    """The type of ``NO_DEFAULT``: one instance, falsy, printed by name."""

    _instance: _NoDefault | None = None

    def __new__(cls) -> _NoDefault:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_DEFAULT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()
"""``Column.default`` of a column without a default (or whose default Debezium does not carry)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a captured table as it maps to Avro.

    ``avro`` is the Avro type of a non-null value (a Debezium semantic type, with its
    ``connect.name``); ``optional`` wraps it in a union with null. ``fallback`` is the value a
    required column takes when the source did not send it (a delete under REPLICA IDENTITY DEFAULT
    carries the key columns only), as Debezium does.

    ``default`` is the column's default as a row value (the form the source's converter gives,
    e.g. an ``int`` for an integer column, a ``Decimal`` for a decimal), carried in the Avro
    schemas as Debezium carries it (see ``cdc.avro.column_field``); ``NO_DEFAULT`` (or None) when
    the column has none, or one that is not a constant Debezium would convert.
    """

    name: str
    avro: Any
    optional: bool
    source_type: str
    fallback: Any = None
    default: Any = NO_DEFAULT


@dataclass(frozen=True, slots=True, eq=False)
class TableSchema:
    """A version of a table's shape. A new object is made whenever the source reports a change.

    Identity, not equality, distinguishes versions: encoders cache per object. ``form`` (see
    ``Form``) is set by the transforms that reshape events; the sources leave the envelope.
    """

    topic: str
    namespace: str  # Postgres schema or MySQL database
    table: str
    columns: tuple[Column, ...]
    key: tuple[int, ...]  # indexes into ``columns`` of the primary-key columns; () when none
    form: Form = "envelope"

    @property
    def qualified(self) -> str:
        if self.form == "message":
            return MESSAGE_COLLECTION  # no table: Debezium's name in transaction metadata
        return f"{self.namespace}.{self.table}"


MESSAGE_COLLECTION = "LOGICAL_DECODING_MESSAGE"
"""The data collection of message events in transaction metadata (Debezium's
``LogicalDecodingMessageId``)."""

MESSAGE_COLUMNS = (
    Column("prefix", "string", False, "text"),
    Column("content", "bytes", True, "bytea"),
)


def message_table(topic: str) -> TableSchema:
    """The ``TableSchema`` of logical decoding message events on ``topic`` (Debezium's
    ``<prefix>.message``): form ``message``, columns prefix and content, keyed by the prefix;
    no schema or table name (its events' ``source`` says ``""`` for both, as Debezium's)."""
    return TableSchema(topic, "", "", MESSAGE_COLUMNS, (0,), "message")


@dataclass(slots=True)
class RowChange:
    """One row change. ``before``/``after`` are tuples aligned with ``table.columns``.

    ``source`` is the complete Debezium ``source`` block for this event. ``event_id`` is stable
    across restarts (it derives from the source position), so sinks can de-duplicate by it.
    ``tx`` is (transaction id, total order, order within this table) or None outside transactions.
    """

    table: TableSchema
    op: Op
    before: tuple[Any, ...] | None
    after: tuple[Any, ...] | None
    source: dict[str, Any]
    ts_ms: int
    event_id: str
    tx: tuple[str, int, int] | None = None
    key_override: tuple[Any, ...] | None = (
        None  # key of a truncate is null; of a pk change, old key
    )
    headers: tuple[tuple[str, bytes], ...] = ()  # record headers (the outbox transform's id)


_PLAIN_KEY = re.compile(r"^[0-9A-Za-z_.+-]{1,40}$")


def snapshot_event_id(scope: str, table: str, key: Sequence[Any]) -> str:
    """The event id of a snapshot row: ``s:<scope>:<table>:<key>``.

    ``scope`` names the snapshot (the position streaming starts from, the same in every attempt
    of one snapshot), ``key`` the row within its table (its primary-key values). So a row read
    again after a resume gets the id it had before (a de-duplicating sink drops the copy, as it
    should) and distinct rows never share one. A single plain key is kept readable
    (``s:23542984:public.items:42``); any other is a digest (``#`` + 24 hex digits), which also
    keeps ids free of characters a broker header cannot carry.
    """
    parts = [v.hex() if isinstance(v, bytes | bytearray) else str(v) for v in key]
    if len(parts) == 1 and _PLAIN_KEY.match(parts[0]):
        return f"s:{scope}:{table}:{parts[0]}"
    digest = hashlib.blake2b(json.dumps(parts).encode(), digest_size=12).hexdigest()
    return f"s:{scope}:{table}:#{digest}"


@dataclass(slots=True)
class TxBoundary:
    """Transaction metadata event, as Debezium's ``<prefix>.transaction`` topic carries it."""

    status: Literal["BEGIN", "END"]
    tx_id: str
    ts_ms: int
    event_id: str
    event_count: int | None = None
    per_table: dict[str, int] | None = None


@dataclass(slots=True)
class ChangeBatch:
    """Changes in commit order and the position to resume from once they are all durable.

    ``snapshot`` is True for a batch of the initial snapshot whose position resumes the snapshot
    (not the change stream); the snapshot's last batch, whose position is where streaming
    starts, has it False. The pipeline reports the ``snapshot`` state by it.

    ``open_txn`` is True when the batch ends inside a source transaction: its last transaction
    continues in the next batch (a large transaction is split by ``max_events``). A sink that
    applies transactions atomically (a database target) keeps its target transaction open
    across such batches and commits only at a batch with ``open_txn`` False.
    """

    events: list[RowChange | TxBoundary]
    position: Position
    snapshot: bool = False
    open_txn: bool = False


@dataclass(slots=True)
class EncodedRecord:
    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    event_id: str
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class EncodedBatch:
    records: list[EncodedRecord]
    position: Position
    stats: dict[str, int] = field(default_factory=dict)


class SchemaRegistry(Protocol):
    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Return the id of ``schema`` under ``subject``, registering it first if new.

        Must be durable before it returns: records carrying the id may be written next.
        """
        ...


# --- the contracts the pipeline calls ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One preflight problem (``cdc check``, and a source's own check before it streams).

    ``what`` names the setting or object and shows its value; ``why`` says what it breaks (may
    be empty when ``what`` makes it plain); ``fix`` is the statement or change that fixes it
    (e.g. ``ALTER ROLE "cdc" REPLICATION``). Printed as ``what (why): fix``.

    ``blocking``: the source refuses to stream while this stands (its own check before
    streaming raises the blocking ones); ``cdc check`` reports every problem alike.
    """

    what: str
    why: str = ""
    fix: str = ""
    blocking: bool = False

    def __str__(self) -> str:
        text = f"{self.what} ({self.why})" if self.why else self.what
        return f"{text}: {self.fix}" if self.fix else text


PipelineState = Literal["starting", "snapshot", "streaming", "restarting", "failed", "stopped"]


class Reporter(Protocol):
    """Where a plugin reports what its pipeline is doing (the daemon's status and metrics).

    Each pipeline gets its own (``PipelineContext.reporter``), so a plugin never needs to know
    which pipeline or thread it runs in, nor how the daemon publishes.
    """

    def snapshot_progress(self, table: str, done: int, total: int | None) -> None:
        """Rows of ``table`` snapshotted so far (``total``: an estimate, None when unknown);
        moves a ``starting`` pipeline to ``snapshot``. Cheap: call it every few thousand rows."""
        ...

    def set_state(self, state: PipelineState) -> None:
        """The pipeline's state as ``cdc status`` and ``/ready`` show it."""
        ...


class NullReporter:
    """A reporter that keeps nothing: for a plugin used outside a pipeline (``cdc check``)."""

    def snapshot_progress(self, table: str, done: int, total: int | None) -> None:
        pass

    def set_state(self, state: PipelineState) -> None:
        pass


@dataclass(frozen=True, slots=True)
class PipelineContext:
    """What ``open_source(config, context)`` and ``open_sink(config, context)`` get besides their
    own config: the pipeline's settings a plugin needs, and its reporter.

    ``prefix`` is the topic prefix (``topic_prefix``, else the pipeline's name); ``max_events``
    and ``max_wait_ms`` are the pipeline's ``batch`` settings. The defaults are the config's.

    ``event_details`` False (a ``RowSink`` that reads neither, and no transforms; see
    ``RowSink``): a source need not make each change's own ``source`` block and ``event_id``; it
    may give the changes of one table in one transaction the block of the first of them (the
    same object) and an empty id. The block is then a true one of that transaction, not the
    change's own (its position fields are the first change's).
    """

    name: str
    prefix: str
    max_events: int = 5000
    max_wait_ms: int = 100
    transaction_metadata: bool = True
    reporter: Reporter = field(default_factory=NullReporter)
    event_details: bool = True


class Source(Protocol):
    """A change stream. Delivery: every change committed after ``start`` appears, in commit
    order, at least once (a batch the sink did not make durable before a crash comes again).

    Call order: ``check`` (optional), ``acknowledge`` (what the sink already holds), then
    ``batches``, which the pipeline may iterate on a reader thread of its own while
    ``acknowledge`` is called from the thread that writes (``batch.read_ahead``: they overlap);
    ``stop`` from any thread or a signal handler; ``close`` last, once ``batches`` has returned.
    """

    @property
    def source_schema(self) -> dict[str, Any]:
        """The Avro record of the envelope's ``source`` field (fixed once the source is opened)."""
        ...

    @property
    def streaming(self) -> bool:
        """True while reading the change stream past any snapshot; the daemon polls it about
        once a second for the ``streaming`` state and ``/ready``."""
        ...

    def check(self) -> Sequence[Problem]:
        """Preflight problems, each saying what to change; empty when all is well."""
        ...

    def batches(self, start: Position | None) -> Iterator[ChangeBatch]:
        """Yield batches of changes committed after ``start`` until ``stop()`` is called.

        ``start`` is the position of a batch this source yielded before (exclusive: that batch's
        changes are durable and do not come again), or None for a fresh start (snapshot first,
        as configured). A batch may hold no events (a heartbeat that only moves the position).
        A yielded batch (its events, its position) is not changed afterwards: the pipeline
        writes it while this generator goes on reading.
        """
        ...

    def acknowledge(self, upto: Position) -> None:
        """Let the server discard changes up to ``upto`` (inclusive). Only called with positions
        the sink made durable (``Sink.acknowledgeable``), possibly several times with the same.

        Called from another thread than ``batches`` while it runs: it must not use a connection
        ``batches`` uses (record the position; the reading thread tells the server) and must
        return at once (it sits between two writes)."""
        ...

    def stop(self) -> None:
        """Ask ``batches`` to return soon after yielding what it holds; safe from a signal
        handler and from another thread."""
        ...

    def close(self) -> None:
        """Release connections; called once, after ``batches`` has returned or raised."""
        ...


class SinkBase(Protocol):
    """What every sink offers, whatever form it takes batches in (``Sink`` or ``RowSink``)."""

    def committed(self) -> Position | None:
        """The position of the last durable batch (None: nothing written yet): where the source
        resumes, exclusive. Called before the first write."""
        ...

    def acknowledgeable(self) -> Position | None:
        """The newest position the source may discard up to (may lag ``committed``, e.g. while
        a broker's replication catches up); None when nothing may be discarded yet."""
        ...

    def interrupt(self) -> None:
        """Make a write that is waiting (on a broker, without limit) give up soon with an
        error; safe from a signal handler. A sink that never waits for long does nothing."""
        ...

    def close(self) -> None:
        """Release files and connections; called once, last."""
        ...


class Sink(SinkBase, Protocol):
    """A destination of Avro records (the log, Kafka, NATS): the pipeline encodes for it.

    ``write`` returns only once the batch is durable: its position becomes ``committed()``. A
    batch may hold no records (a position-only heartbeat): its position is made durable all the
    same. Delivery: at least once; a sink may drop records it holds already (by event id).
    tests/conformance/test_sinks.py checks every sink.
    """

    @property
    def registry(self) -> SchemaRegistry:
        """Where the encoder registers the schemas this sink's records carry the ids of."""
        ...

    @property
    def tombstones(self) -> bool:
        """True: the encoder follows each delete with a tombstone (key, null value)."""
        ...

    def write(self, batch: EncodedBatch) -> None:
        """Make ``batch`` durable, then return; raises ``SinkError`` (retryable or not)."""
        ...


@dataclass(frozen=True, slots=True)
class RecordFormat:
    """How a ``FormatSink`` wants its records: ``avro`` (Confluent-framed, schemas registered
    with its ``registry``) or ``json`` (Kafka Connect's JsonConverter layout, ``cdc.connectjson``:
    ``schemas_enable`` its schemas.enable, ``decimal_format`` its decimal.format,
    ``replace_null_with_default`` its replace.null.with.default)."""

    kind: Literal["avro", "json"] = "avro"
    schemas_enable: bool = True
    decimal_format: Literal["base64", "numeric"] = "base64"
    replace_null_with_default: bool = True


@runtime_checkable
class FormatSink(Sink, Protocol):
    """A ``Sink`` that may take JSON records instead of Avro (Kafka, NATS): the pipeline picks
    the encoder by its ``record_format`` once, when it opens the sink. A ``Sink`` without it
    (the log) takes Avro."""

    @property
    def record_format(self) -> RecordFormat:
        """The encoding its records must have; fixed once the sink is open."""
        ...


@runtime_checkable
class RowSink(SinkBase, Protocol):
    """A destination that takes decoded row changes (a database target applying them): the
    pipeline builds no encoder and registers no schema for it.

    The pipeline tells the two kinds apart once, when it opens the sink (a sink with
    ``write_rows`` is a ``RowSink``), so neither pays anything per batch for the other.

    """

    @property
    def event_details(self) -> bool:
        """False: the sink reads neither a change's ``source`` block nor its ``event_id`` (the
        database targets); when the pipeline has no transforms either, its source is opened
        with ``PipelineContext.event_details`` False and spares making them per change. True:
        every change is complete. Fixed once the sink is open."""
        ...

    def write_rows(self, batch: ChangeBatch) -> None:
        """Apply ``batch`` (after transforms), then return. Its position becomes durable by
        the time this returns, or, for a sink that commits without waiting for the answer (the
        Postgres target), by the time the next ``write_rows`` or ``close`` returns; only then
        does ``acknowledgeable()`` give it. Same delivery as ``Sink.write``: at least once, in
        commit order."""
        ...


class BatchEncoder(Protocol):
    """Turns change batches into records for a ``Sink`` (``cdc.avro.Encoder``)."""

    @property
    def fallbacks(self) -> int:
        """Records encoded by the reference path because the compiled one could not (a counter
        that only grows)."""
        ...

    def encode(self, batch: ChangeBatch) -> EncodedBatch:
        """The batch's records, registering new schemas with the sink's registry first."""
        ...
