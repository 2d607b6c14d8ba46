"""The event model every source produces and every sink consumes.

A source turns its change stream into ``ChangeBatch`` objects: row changes (``RowChange``) and
transaction boundaries (``TxBoundary``) in commit order, plus the ``Position`` to resume from once
everything in the batch is durable. The encoder turns a batch into an ``EncodedBatch`` of framed
Avro records, and the sink makes those durable.

Positions are plain JSON-serialisable dicts: only the source that made one interprets it; sinks
store them verbatim next to the data they cover.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Position = dict[str, Any]
"""Where to resume: opaque to all but the source that produced it; JSON-serialisable."""

Op = Literal["c", "u", "d", "r", "t"]


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

    Identity, not equality, distinguishes versions: encoders cache per object.
    """

    topic: str
    namespace: str  # Postgres schema or MySQL database
    table: str
    columns: tuple[Column, ...]
    key: tuple[int, ...]  # indexes into ``columns`` of the primary-key columns; () when none

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.table}"


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
    """Changes in commit order and the position to resume from once they are all durable."""

    events: list[RowChange | TxBoundary]
    position: Position


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


class Source(Protocol):
    """A change stream. Delivery: every change committed after ``start`` appears in order."""

    source_schema: dict[str, Any]  # the Avro record for the envelope's ``source`` field

    def check(self) -> list[str]:
        """Preflight problems, each saying what to change; empty when all is well."""
        ...

    def batches(self, start: Position | None) -> Any:
        """Yield ``ChangeBatch`` objects from ``start`` (exclusive) until ``stop()`` is called.

        ``start`` is a position a batch of this source carried (or None for a fresh start).
        """
        ...

    def acknowledge(self, upto: Position) -> None:
        """Tell the server it may discard changes up to ``upto``; only positions already durable."""
        ...

    def stop(self) -> None:
        """Ask ``batches`` to return after yielding what it holds; safe from a signal handler."""
        ...

    def close(self) -> None: ...


class Sink(Protocol):
    """A destination. ``write`` returns only once the batch is durable.

    A batch may hold no records (a position-only heartbeat): its position is made durable and
    becomes ``committed()`` all the same. tests/conformance/test_sinks.py checks every sink.
    """

    registry: SchemaRegistry
    tombstones: bool

    def write(self, batch: EncodedBatch) -> None: ...

    def committed(self) -> Position | None:
        """The position of the last durable batch: where the source resumes."""
        ...

    def acknowledgeable(self) -> Position | None:
        """The newest position the source may discard up to (may lag ``committed``)."""
        ...

    def close(self) -> None: ...
