"""Incremental snapshots beside the change stream, by the watermark method (DBLog).

Source-agnostic: a source owns one ``IncrementalSnapshots``, reads the chunks it names and
writes the watermarks into its own change stream (Postgres: a logical decoding message;
MySQL/MariaDB: a signal-table row), and tells it what the stream shows. One window at a time:

1. ``next_chunk()`` names what to read next (table, the key to read after, the user's
   condition, a fresh window id), or None (nothing queued, or a window is still open).
2. The source writes the LOW watermark (``window_open`` message carrying the window id) into
   the stream, reads up to ``chunk_size`` rows in key order after ``Chunk.after`` on a short
   read-only transaction and hands them over with ``chunk_read``, then writes the HIGH
   watermark (``window_close``).
3. As the stream is read, every captured change is ``observe``d. Between the low watermark
   (``low_watermark``) and the high one, a changed key is dropped from the chunk: the stream
   carries a state at least as new as the chunk's copy. A truncate drops the whole chunk.
4. At the high watermark (``high_watermark``) the rows left become ``op: "r"`` changes with
   ``source.snapshot = "incremental"``, in key order, and the progress (the chunk's last key)
   advances with them, in the same step: a position taken after them carries both.

Rules (each has a unit test in tests/unit/test_incremental.py):
- The state (``state``: the queue of requests, the table being read, its last key, the rows
  emitted of it, the tables already snapshotted) is JSON and rides in every position the source
  yields. An open window is not in it: after a crash the stream is read again from an older
  position, the window's watermarks come again with an id this process never issued and are
  ignored, and the chunk is read again under a new window. Nothing is lost, and into the
  built-in log nothing is written twice (progress is durable only with the rows it covers).
- Window ids are random per window, so a replayed watermark never matches a new window.
- Event ids are ``cdc.model.snapshot_event_id(<request id>, table, key)``: a row read again
  after a restart keeps its id.
- Requests name tables the pipeline captures; a table is read once per request; a request's
  id is its identity (the same id again is ignored: a request replayed from the stream after a
  restart is not queued twice). ``stop`` removes requests or tables, and abandons the window
  when its table goes.
- ``captured(tables)`` reconciles with the pipeline's table set: a captured table never
  snapshotted is queued (auto-backfill); a table no longer captured leaves the queue and the
  snapshotted set (so that adding it back backfills it again). A state from before incremental
  snapshots existed (None) counts every captured table as snapshotted.

Tables are named as ``TableSchema.qualified`` (``namespace.table``); keys are tuples of the
key columns' values as the stream decodes them (the source converts snapshot and stream values
alike, so a key read in a chunk equals the same key in the stream). ``Chunk.after`` and the
cursor given to ``chunk_read`` are the source's own JSON form of a key (e.g. text for SQL).
"""

from __future__ import annotations

import copy
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdc.errors import CdcError
from cdc.model import RowChange, TableSchema, snapshot_event_id

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 1024  # Debezium's incremental.snapshot.chunk.size

# Debezium's signal types (the ``type`` column of its signal table)
EXECUTE_SNAPSHOT = "execute-snapshot"
STOP_SNAPSHOT = "stop-snapshot"
WINDOW_OPEN = "snapshot-window-open"
WINDOW_CLOSE = "snapshot-window-close"


class SignalError(CdcError):
    """A snapshot request or signal that cannot be carried out (unknown table, bad shape)."""


@dataclass(frozen=True, slots=True)
class Request:
    """Snapshot ``tables`` (qualified names, in order); ``conditions``: table -> the user's SQL
    condition restricting its rows (absent: every row)."""

    id: str
    tables: tuple[str, ...]
    conditions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tables": list(self.tables), "conditions": dict(self.conditions)}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Request:
        return Request(str(d["id"]), tuple(d["tables"]), dict(d.get("conditions") or {}))


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop request ``id`` (None: every request) for ``tables`` (empty: all of them)."""

    id: str | None
    tables: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Watermark:
    """A watermark seen in the stream: ``low`` (window open) or not (window close)."""

    window: str
    low: bool


Signal = Request | Stop | Watermark


def parse_signal(signal_id: str, kind: str, data: str | None) -> Signal | None:
    """A signal as Debezium's signal table carries it (columns id, type, data), or None for a
    type that is not about snapshots (Debezium has others: ``log``, ``pause-snapshot``...).

    ``execute-snapshot``: data ``{"data-collections": [...], "type": "incremental",
    "additional-conditions": [{"data-collection": T, "filter": SQL}]}`` (Debezium's older
    ``"additional-condition": SQL`` applies to every table). ``stop-snapshot``: data
    ``{"data-collections": [...]}`` (empty or absent: every table). ``snapshot-window-open``
    and ``-close``: the window id is the signal's id. Raises SignalError for a bad shape.
    """
    if kind in (WINDOW_OPEN, WINDOW_CLOSE):
        return Watermark(signal_id, kind == WINDOW_OPEN)
    if kind not in (EXECUTE_SNAPSHOT, STOP_SNAPSHOT):
        return None
    try:
        body = json.loads(data) if data else {}
    except ValueError as e:
        raise SignalError(
            f"signal {signal_id!r} ({kind}): data is not JSON ({e}): {data!r}"
        ) from None
    if not isinstance(body, dict):
        raise SignalError(f"signal {signal_id!r} ({kind}): data is not a JSON object: {data!r}")
    snap_type = str(body.get("type", "incremental")).lower()
    if snap_type != "incremental":
        raise SignalError(
            f"signal {signal_id!r} ({kind}): snapshot type {snap_type!r} is not supported: "
            'use "incremental"'
        )
    tables = body.get("data-collections") or []
    if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
        raise SignalError(
            f"signal {signal_id!r} ({kind}): data-collections must be a list of table names, "
            f"got {tables!r}"
        )
    if kind == STOP_SNAPSHOT:
        return Stop(None, tuple(tables))
    if not tables:
        raise SignalError(
            f"signal {signal_id!r} (execute-snapshot): data-collections is empty: name the "
            "tables to snapshot"
        )
    conditions: dict[str, str] = {}
    single = body.get("additional-condition")
    if single:
        conditions = {t: str(single) for t in tables}
    extra = body.get("additional-conditions") or []
    if not isinstance(extra, list):
        raise SignalError(
            f"signal {signal_id!r} (execute-snapshot): additional-conditions must be a list of "
            f'{{"data-collection": ..., "filter": ...}}, got {extra!r}'
        )
    for item in extra:
        if not isinstance(item, dict) or "data-collection" not in item or "filter" not in item:
            raise SignalError(
                f"signal {signal_id!r} (execute-snapshot): bad additional-conditions entry "
                f'{item!r}: write {{"data-collection": "schema.table", "filter": "SQL"}}'
            )
        conditions[str(item["data-collection"])] = str(item["filter"])
    return Request(signal_id, tuple(tables), conditions)


@dataclass(frozen=True, slots=True)
class Chunk:
    """What to read next: up to ``size`` rows of ``table`` with a key after ``after`` (None: from
    the start) that meet ``condition`` (None: all), in key order, under window ``window``."""

    window: str
    request: str
    table: str
    after: Any
    condition: str | None
    size: int


@dataclass
class _Window:
    chunk: Chunk
    opened: bool = False  # its low watermark was seen in the stream
    schema: TableSchema | None = None
    rows: list[tuple[Any, ...]] | None = None  # read, in key order (None: not read yet)
    cursor: Any = None
    complete: bool = False  # the chunk was the table's last
    changed: set[tuple[Any, ...]] = field(default_factory=set)
    truncated: bool = False


class IncrementalSnapshots:
    """The incremental snapshots of one source. Not thread-safe: driven by the stream's thread.

    ``state``: what a position carried (``state`` of an earlier instance), or None for a
    pipeline whose position has none (a new one, or one from before incremental snapshots):
    then every table of ``tables`` counts as snapshotted. ``tables``: the qualified names the
    pipeline captures now (``captured`` queues the missing ones; call it once at start).
    """

    def __init__(
        self,
        state: dict[str, Any] | None,
        tables: Iterable[str],
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        window_ids: Callable[[], str] | None = None,
    ) -> None:
        self.chunk_size = chunk_size
        self._new_window = window_ids or (lambda: secrets.token_hex(8))
        self._tables = list(tables)
        if state is None:
            state = {"snapshotted": sorted(self._tables)}
        self.queue: list[Request] = [Request.from_json(r) for r in state.get("queue", [])]
        self.after: Any = state.get("after")  # last key emitted of the current table
        self.rows = int(state.get("rows", 0))  # rows emitted of the current table
        self.snapshotted: set[str] = set(state.get("snapshotted", []))
        self._window: _Window | None = None

    # --- state -------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        """The JSON state to put in a position (a copy: later changes do not alter it)."""
        out: dict[str, Any] = {"snapshotted": sorted(self.snapshotted)}
        if self.queue:
            out["queue"] = [r.to_json() for r in self.queue]
            out["after"] = copy.deepcopy(self.after)
            out["rows"] = self.rows
        return out

    @property
    def current(self) -> tuple[Request, str] | None:
        """The request and table being read, or None when idle."""
        if not self.queue:
            return None
        return self.queue[0], self.queue[0].tables[0]

    @property
    def active(self) -> bool:
        """Whether a snapshot is queued or running."""
        return bool(self.queue)

    # --- requests ----------------------------------------------------------------------

    def captured(self, tables: Iterable[str]) -> list[str]:
        """Reconcile with the captured ``tables``; returns the tables queued for a backfill
        (captured, never snapshotted, not queued already), in the order given."""
        self._tables = list(tables)
        keep = set(self._tables)
        self.snapshotted &= keep
        gone = {t for r in self.queue for t in r.tables if t not in keep}
        if gone:
            self.stop(Stop(None, tuple(sorted(gone))))
        queued = {t for r in self.queue for t in r.tables}
        missing = [t for t in self._tables if t not in self.snapshotted and t not in queued]
        if missing:
            self.queue.append(Request(f"backfill-{secrets.token_hex(4)}", tuple(missing)))
            log.info(
                "incremental snapshot: %s not snapshotted yet (added to the pipeline after its "
                "first start); backfilling while streaming",
                ", ".join(missing),
            )
        return missing

    def request(self, req: Request) -> bool:
        """Queue ``req``; False when a request with its id is queued already (a replay).
        Raises SignalError (nothing queued) when it names a table the pipeline does not
        capture, or a condition for a table it does not snapshot."""
        if any(r.id == req.id for r in self.queue):
            return False
        unknown = [t for t in req.tables if t not in self._tables]
        if unknown:
            raise SignalError(
                f"snapshot request {req.id!r}: {', '.join(unknown)} not captured by this "
                f"pipeline (it captures {', '.join(self._tables)}): add it to tables first"
            )
        stray = sorted(set(req.conditions) - set(req.tables))
        if stray:
            raise SignalError(
                f"snapshot request {req.id!r}: a condition for {', '.join(stray)}, which it "
                "does not snapshot: name the table in data-collections too"
            )
        self.queue.append(req)
        log.info(
            "incremental snapshot %s: queued %s%s",
            req.id,
            ", ".join(req.tables),
            "".join(f" ({t} WHERE {c})" for t, c in req.conditions.items()),
        )
        return True

    def stop(self, stop: Stop) -> list[str]:
        """Remove the tables ``stop`` names (all: none named) from the matching requests (all:
        no id); a request left without tables goes. Returns the tables removed."""
        removed: list[str] = []
        head = self.current
        kept: list[Request] = []
        for r in self.queue:
            if stop.id is not None and r.id != stop.id:
                kept.append(r)
                continue
            left = tuple(t for t in r.tables if stop.tables and t not in stop.tables)
            removed += [t for t in r.tables if t not in left]
            if left:
                kept.append(
                    Request(r.id, left, {t: c for t, c in r.conditions.items() if t in left})
                )
        self.queue = kept
        cur = self.current
        if head is not None and (cur is None or (cur[0].id, cur[1]) != (head[0].id, head[1])):
            # the table being read went: the next one starts from its beginning, and the open
            # window's watermarks are ignored when they come
            self.after, self.rows = None, 0
            self._window = None
        if removed:
            log.info("incremental snapshot: stopped for %s", ", ".join(removed))
        return removed

    def signal(self, sig: Signal) -> None:
        """Apply a request or stop (a watermark goes to ``low_watermark``/``high_watermark``)."""
        if isinstance(sig, Request):
            self.request(sig)
        elif isinstance(sig, Stop):
            self.stop(sig)

    # --- the window --------------------------------------------------------------------

    def next_chunk(self) -> Chunk | None:
        """The chunk to read next under a new window, or None (idle, or a window is open)."""
        if self._window is not None or not self.queue:
            return None
        req, table = self.queue[0], self.queue[0].tables[0]
        chunk = Chunk(
            self._new_window(),
            req.id,
            table,
            copy.deepcopy(self.after),
            req.conditions.get(table),
            self.chunk_size,
        )
        self._window = _Window(chunk)
        return chunk

    def abandon(self) -> None:
        """Forget the open window (reading its chunk failed): the next chunk reads it again."""
        self._window = None

    def chunk_read(
        self, window: str, schema: TableSchema, rows: list[tuple[Any, ...]], cursor: Any
    ) -> None:
        """The chunk of ``window`` was read: ``rows`` (row values aligned with ``schema``'s
        columns, in key order), ``cursor`` the source's form of the last row's key (kept as
        ``Chunk.after`` once emitted). Fewer rows than the chunk size: the table's last chunk."""
        w = self._window
        if w is None or w.chunk.window != window:
            raise ValueError(f"chunk_read for window {window!r}, which is not open")
        if not schema.key:
            raise SignalError(
                f"table {schema.qualified} has no primary key: an incremental snapshot reads it "
                "in key order; add a primary key to it"
            )
        w.schema = schema
        w.rows = rows
        w.cursor = cursor if rows else w.chunk.after
        w.complete = len(rows) < w.chunk.size

    def low_watermark(self, window: str) -> bool:
        """The stream reached the low watermark of ``window``: changes from here on drop their
        keys from the chunk. False (ignored) for a window not open now (a replay)."""
        w = self._window
        if w is None or w.chunk.window != window:
            return False
        w.opened = True
        return True

    def observe(self, table: str, key: tuple[Any, ...] | None) -> None:
        """A change of ``table`` in the stream (``key``: its key values; None: a truncate)."""
        w = self._window
        if w is None or not w.opened or w.chunk.table != table:
            return
        if key is None:
            w.truncated = True
        else:
            w.changed.add(key)

    @property
    def watching(self) -> str | None:
        """The table whose changes ``observe`` needs now (a window is open), else None: a
        source may skip calling ``observe`` for other tables."""
        w = self._window
        return w.chunk.table if w is not None and w.opened else None

    def high_watermark(
        self, window: str, source: Callable[[TableSchema], dict[str, Any]], ts_ms: int
    ) -> list[RowChange] | None:
        """The stream reached the high watermark of ``window``: the chunk's rows whose key the
        stream did not change since the low watermark, as ``op: "r"`` changes (``source(schema)``
        gives the source block; ``snapshot`` is set to ``incremental``), and the progress
        advanced past the chunk. None (ignored) for a window not open now, or whose low
        watermark was not seen (then the chunk is read again under a new window)."""
        w = self._window
        if w is None or w.chunk.window != window:
            return None
        self._window = None
        if not w.opened or w.rows is None or w.schema is None:
            return None
        schema, chunk = w.schema, w.chunk
        key = schema.key
        base = dict(source(schema))
        base["snapshot"] = "incremental"
        out: list[RowChange] = []
        if not w.truncated:
            for row in w.rows:
                k = tuple(row[i] for i in key)
                if k in w.changed:
                    continue
                eid = snapshot_event_id(chunk.request, chunk.table, k)
                out.append(RowChange(schema, "r", None, row, dict(base), ts_ms, eid))
        cur = self.current
        assert cur is not None and (cur[0].id, cur[1]) == (chunk.request, chunk.table), cur
        self.rows += len(out)
        if w.complete:
            self._table_done(chunk.table)
        else:
            self.after = w.cursor
        return out

    def reject_current(self, reason: str) -> str | None:
        """Give up the table being read (it cannot be read: no primary key, a condition the
        server rejects...), logging ``reason`` as an error; returns the table, None when idle."""
        cur = self.current
        if cur is None:
            return None
        log.error("incremental snapshot %s: %s skipped: %s", cur[0].id, cur[1], reason)
        self.stop(Stop(cur[0].id, (cur[1],)))
        return cur[1]

    def _table_done(self, table: str) -> None:
        req = self.queue[0]
        log.info("incremental snapshot %s: %s done, %s rows", req.id, table, f"{self.rows:,}")
        self.snapshotted.add(table)
        rest = req.tables[1:]
        if rest:
            conditions = {t: c for t, c in req.conditions.items() if t in rest}
            self.queue[0] = Request(req.id, rest, conditions)
        else:
            self.queue.pop(0)
            log.info("incremental snapshot %s: finished", req.id)
        self.after, self.rows = None, 0


def qualified_names(names: Sequence[tuple[str, str]]) -> list[str]:
    """(namespace, table) pairs as qualified names (``TableSchema.qualified``)."""
    return [f"{ns}.{t}" for ns, t in names]
