"""Initial snapshot of existing rows, read in primary-key order over exported snapshots.

The first snapshot reads every table in REPEATABLE READ transactions that import the snapshot
exported when the replication slot was created, so rows read and changes streamed afterwards
meet exactly at the slot's consistent point: no gap, no overlap.

Resuming an interrupted snapshot: the exported snapshot died with the process, so the remaining
rows (primary key after the last one written, and tables not yet done) are read at a newer
snapshot, and streaming still starts at the original consistent point. Changes made between the
two snapshots are therefore delivered again after rows that already contain them; applying events
by key in order converges to the table, and nothing is lost. Tables without a primary key are read
again from the start on resume.

Values are read as ``col::text`` in a session with the walsender's settings and converted by the
same converters as streamed values, so snapshot and stream give identical values per type.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

from cdc import _native_avro
from cdc.errors import SourceError
from cdc.model import ChangeBatch, Position, Reporter, RowChange, snapshot_event_id
from cdc.sources.postgres import _tuples
from cdc.sources.postgres._connections import Catalog
from cdc.sources.postgres._relations import Relation, Relations, snapshot_row
from cdc.sources.postgres._sourceinfo import source_block
from cdc.sources.postgres._tuples import NOT_UTF8

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0


# Tables with an integer first key column and at least this many rows (or an unknown number) are
# read in key ranges, one per connection; smaller ones are not worth the split.
SPLIT_MIN_ROWS = 50_000
_SPLIT_TYPES = ("smallint", "integer", "bigint")


@dataclass(eq=False)  # identified by the object: a worker's messages name it
class KeyRange:
    """A part of a table one connection reads: rows whose first key column is in [lo, hi)
    (text form; None: unbounded), after the primary key ``after`` (text form) when set."""

    lo: str | None = None
    hi: str | None = None
    after: list[str] | None = None
    done: bool = False

    def saved(self) -> list[Any]:
        """The range's progress as the position keeps it: ``[lo, hi, after, done]``."""
        return [self.lo, self.hi, None if self.after is None else list(self.after), self.done]


@dataclass
class SnapshotTable:
    rel: Relation
    key_types: list[str]  # format_type of each primary-key column, for the resume predicate
    estimate: int  # pg_class.reltuples, -1 when unknown
    ranges: list[KeyRange] = field(default_factory=lambda: [KeyRange()])
    rows: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.rel.schema.qualified

    @property
    def resumed(self) -> bool:
        """Whether a previous attempt wrote some of its rows (read on after them)."""
        return any(r.after is not None or r.done for r in self.ranges)

    @property
    def split(self) -> bool:
        return len(self.ranges) > 1


def tables(
    catalog: Catalog,
    relations: Relations,
    names: list[tuple[str, str]],
    done: list[str],
    after: dict[str, Any],
    ranges: dict[str, Any] | None = None,
    parts: int = 1,
) -> list[SnapshotTable]:
    """The tables of ``names`` still to read (not in ``done``), each resuming after the key
    ``after`` records for it, or in the key ranges ``ranges`` records for it, each after its
    own last key (tables with a primary key; a position's ``snapshot`` progress). A table
    read from its start is split into ``parts`` key ranges when it is large (``_split``)."""
    ranges = ranges or {}
    cat = catalog.connect()
    out = []
    for ns, name in names:
        qualified = f"{ns}.{name}"
        if qualified in done:
            continue
        row = cat.execute(
            "SELECT c.oid, c.reltuples::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (ns, name),
        ).fetchone()
        assert row is not None  # checked by Slot.ensure_publication
        relid = int(row[0])
        cols = cat.execute(
            "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = %s "
            "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            (relid,),
        ).fetchall()
        rel = relations.build(relid, ns, name, [(c[0], int(c[1]), int(c[2])) for c in cols])
        key_types = [
            str(
                cat.execute(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = %s AND attname = %s",
                    (relid, rel.schema.columns[k].name),
                ).fetchone()[0]  # type: ignore[index]
            )
            for k in rel.schema.key
        ]
        t = SnapshotTable(rel, key_types, int(row[1]))
        if rel.schema.key and qualified in ranges:
            t.ranges = [KeyRange(lo, hi, af, dn) for lo, hi, af, dn in ranges[qualified]]
        elif rel.schema.key and after.get(qualified) is not None:
            t.ranges = [KeyRange(after=list(after[qualified]))]
        elif rel.schema.key and parts > 1:
            t.ranges = _split(cat, t, parts)
        out.append(t)
    return out


def _split(cat: Any, t: SnapshotTable, parts: int) -> list[KeyRange]:
    """``parts`` ranges of equal width between the first key column's min and max (the first
    and last unbounded, so the ranges cover every row whatever the snapshot holds), or the
    whole table when it is small or its first key column is not an integer."""
    if t.key_types[0] not in _SPLIT_TYPES or 0 <= t.estimate < SPLIT_MIN_ROWS:
        return [KeyRange()]
    schema = t.rel.schema
    lo, hi = cat.execute(
        sql.SQL("SELECT min({k}), max({k}) FROM ONLY {t}").format(
            k=sql.Identifier(schema.columns[schema.key[0]].name),
            t=sql.Identifier(schema.namespace, schema.table),
        )
    ).fetchone()
    if lo is None or hi - lo < parts:
        return [KeyRange()]
    step = (hi - lo + 1) // parts
    bounds = [str(lo + i * step) for i in range(1, parts)]
    return [KeyRange(a, b) for a, b in zip([None, *bounds], [*bounds, None], strict=True)]


def _where(t: SnapshotTable, r: KeyRange, after: list[str] | None) -> sql.Composable:
    """The range's predicate on ``_t``, rows after the key ``after`` when given."""
    schema = t.rel.schema
    conds: list[sql.Composable] = []
    if schema.key:
        first = sql.Identifier("_t", schema.columns[schema.key[0]].name)
        for bound, op in ((r.lo, ">="), (r.hi, "<")):
            if bound is not None:
                conds.append(
                    sql.SQL("{} {} {}::{}").format(
                        first, sql.SQL(op), sql.Literal(bound), sql.SQL(t.key_types[0])
                    )
                )
        if after is not None:
            keys = sql.SQL(", ").join(
                sql.Identifier("_t", schema.columns[k].name) for k in schema.key
            )
            lits = sql.SQL(", ").join(
                sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(typ))
                for v, typ in zip(after, t.key_types, strict=True)
            )
            conds.append(sql.SQL("({}) > ({})").format(keys, lits))
    if not conds:
        return sql.SQL("")
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds)


def open_connections(dsn: str, options: str, n: int, snapshot: str | None) -> list[Any]:
    """``n`` REPEATABLE READ READ ONLY transactions, importing ``snapshot`` when given."""
    conns = []
    try:
        for _ in range(n):
            c = psycopg.connect(dsn, options=options, autocommit=False)
            c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            c.read_only = True
            if snapshot is not None:
                c.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            else:
                c.execute("SELECT 1")  # start the transaction: its snapshot is taken now
            conns.append(c)
    except psycopg.Error as e:
        for c in conns:
            c.close()
        raise SourceError(f"cannot open snapshot connection: {str(e).strip()}") from None
    return conns


_DONE = object()

COPY = _tuples.PATH == _tuples.NATIVE and hasattr(_native_avro._native, "CopyDecoder")
"""Whether snapshots read with COPY and convert in the compiled path (``cdc._native``), else
with the reference path (a cursor's text rows converted by ``snapshot_row``)."""


def describe(copy: bool) -> str:
    """One line for the log: how the snapshot reads and converts rows, and why."""
    if copy:
        return "snapshot reader: COPY, rows converted by cdc._native"
    why = (
        "asked for"
        if COPY
        else _tuples.REASON
        if _tuples.PATH != _tuples.NATIVE
        else "this build of cdc._native has no CopyDecoder"
    )
    return f"snapshot reader: a cursor's rows, converted in Python ({why})"


def _copy_decoder(t: SnapshotTable, scope: str) -> Any | None:
    """The compiled converter of ``t``'s COPY rows (``cdc._native.CopyDecoder``), or None when
    the table's version has no compiled plan (its rows then go the reference way)."""
    rel = t.rel
    # the relation version's compiled decoder of complete tuples carries the per-column plan
    plan = getattr(rel.decode_new, "__self__", None)
    native = _native_avro._native
    if native is None or not isinstance(plan, native.TupleDecoder):
        return None
    schema = rel.schema
    width = len(schema.columns)

    def generic(fields: list[Any]) -> tuple[Any, ...]:
        """The reference conversion of a row the compiled path left (it raises the located
        error for a value that cannot be written)."""
        if len(fields) != width + (0 if schema.key else 1):
            raise SourceError(
                f"snapshot of {t.name}: a COPY row has {len(fields)} fields, expected "
                f"{width}: {fields!r:.200}"
            )
        raw = [_tuples._NotUtf8(v) if isinstance(v, bytes) else v for v in fields[:width]]
        return snapshot_row(rel, raw, True)

    if schema.key:
        keys, prefix, always = list(schema.key), f"s:{scope}:{t.name}:", False
    else:
        # a row of a table without a key is named by its tuple id, the field after the columns
        keys, prefix, always = [width], f"s:{scope}:{t.name}:ctid", True
    return native.CopyDecoder(plan, width, 0 if schema.key else 1, keys, prefix, always, generic)


def _select_list(schema: Any) -> sql.Composable:
    """The columns (qualified by an alias so ORDER BY names the key columns, whatever the select
    list says), then the tuple id in a table without a key."""
    cols = sql.SQL(", ").join(sql.Identifier("_t", c.name) for c in schema.columns)
    if not schema.key:
        cols = sql.SQL("{}, _t.ctid").format(cols)
    return cols


def _copy_table(
    conn: Any,
    t: SnapshotTable,
    r: KeyRange,
    fetch: int,
    out: queue.Queue[Any],
    stop: threading.Event,
    scope: str,
) -> bool:
    """Read the range ``r`` of ``t`` with COPY in primary-key chunks of ``fetch`` rows (a table
    without a key in one COPY), converted here, off the main thread; False when the table has no
    compiled plan (nothing was read)."""
    dec = _copy_decoder(t, scope)
    if dec is None:
        return False
    schema = t.rel.schema
    target = sql.Identifier(schema.namespace, schema.table)
    base = sql.SQL("SELECT {} FROM ONLY {} AS _t").format(_select_list(schema), target)
    keys = sql.SQL(", ").join(sql.Identifier("_t", schema.columns[k].name) for k in schema.key)
    after = r.after
    buf: list[Any] = []

    def flush() -> None:
        nonlocal after
        rows, ids, last = dec.decode(b"".join(buf))
        buf.clear()
        after = list(last) if schema.key else None
        out.put(("rows", t, (rows, ids), (r, after)))

    while not stop.is_set():
        query = base + _where(t, r, after)
        if schema.key:
            query += sql.SQL(" ORDER BY {} LIMIT {}").format(keys, sql.Literal(fetch))
        n = 0
        with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT").format(query)) as cp:
            for data in cp:
                buf.append(data)
                n += 1
                if len(buf) == fetch:  # (a table without a key: one COPY, batches of fetch)
                    flush()
        if buf:
            flush()
        if not schema.key or n < fetch:
            break
    if not stop.is_set():
        out.put(("done", t, None, (r, None)))
    return True


def _read_table(
    conn: Any,
    t: SnapshotTable,
    r: KeyRange,
    fetch: int,
    out: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    """The reference reader: a cursor's text rows, converted on the main thread (``emit``)."""
    schema = t.rel.schema
    # Columns are fetched in the wire's text format with every type's loader replaced by the
    # plain text loader: that text is the type's output function, exactly what pgoutput sends
    # (a ::text cast is not: it gives 'true' for booleans, trims char(n), adds /32 to inet).
    # COPY's text rows are the same output functions' texts.
    cols = _select_list(schema)
    target = sql.Identifier(schema.namespace, schema.table)
    key_names = [schema.columns[k].name for k in schema.key]
    query = sql.SQL("SELECT {} FROM ONLY {} AS _t").format(cols, target)
    probe = conn.execute(query + sql.SQL(" LIMIT 0"))
    for d in probe.description or ():
        conn.adapters.register_loader(d.type_code, TextLoader)
    query += _where(t, r, r.after)
    if key_names:
        keys = sql.SQL(", ").join(sql.Identifier("_t", k) for k in key_names)
        query += sql.SQL(" ORDER BY {}").format(keys)
    cur = conn.cursor(name=f"cdc_snapshot_{abs(hash(t.name))}")
    cur.itersize = fetch
    cur.execute(query)
    while not stop.is_set():
        rows = cur.fetchmany(fetch)
        if not rows:
            break
        last = rows[-1]
        last_key = [last[k] for k in schema.key] if key_names else None
        out.put(("rows", t, rows, (r, last_key)))
    cur.close()
    if not stop.is_set():
        out.put(("done", t, None, (r, None)))


def _worker(
    conn: Any,
    parts: queue.Queue[tuple[SnapshotTable, KeyRange]],
    fetch: int,
    out: queue.Queue[Any],
    stop: threading.Event,
    scope: str | None,
) -> None:
    """Read table ranges from ``parts`` until none is left; ``scope``: read with COPY and
    convert here (event ids in that scope), None: the reference reader."""
    t = None
    try:
        while not stop.is_set():
            try:
                t, r = parts.get_nowait()
            except queue.Empty:
                break
            if scope is None or not _copy_table(conn, t, r, fetch, out, stop, scope):
                _read_table(conn, t, r, fetch, out, stop)
    except Exception as e:
        out.put(("error", t, e, None))
    finally:
        out.put((_DONE, None, None, None))


def run(
    conns: list[Any],
    tables: list[SnapshotTable],
    done: list[str],
    counts: dict[str, int],
    lsn: int,
    fetch: int,
    final_position: Position,
    *,
    prefix: str,
    db: str,
    stopping: Callable[[], bool],
    reporter: Reporter,
    copy: bool | None = None,
) -> Generator[ChangeBatch]:
    """Yield op=r batches for ``tables``; the last batch carries ``final_position``.

    ``prefix`` and ``db`` go into each event's source block; ``stopping`` is polled between
    batches (the source's ``stop()`` was called: end without yielding what is held);
    ``reporter`` gets each table's progress; ``copy``: read with COPY and convert in the
    compiled path (True), or by the reference path (False; None: ``COPY``). Both give the same
    events.

    Every batch but the last has ``snapshot=True``; the last one, whose ``final_position`` is
    where streaming starts (or says an initial_only snapshot is complete), has it False.

    Positions in between record per-table progress so an interrupted snapshot resumes:
    ``{"lsn": consistent point, "snapshot": {"done": [...], "after": {table: last key},
    "ranges": {table: [[lo, hi, last key, done], ...]}, "rows": {table: n}}}``: a table read
    in key ranges (``KeyRange``) has its ranges' progress under ``ranges``, any other table its
    last key under ``after`` (positions written before ranges existed have only that).

    The connections read table ranges at once: a table's rows come in key order within each
    range, and batches of different ranges and tables interleave in the order they were read.
    A range's last batch is held until the table's every range is read, so that the table's
    last row written carries ``last_in_data_collection``.

    Across resumes (``done``/``counts`` from such a position): event ids derive from the
    consistent point (the same in every attempt), the table and the row's primary key (its tuple
    id in a table without one), so they are unique and a row read again keeps its id; row counts
    go on from ``counts`` (a table read again from its start counts, and is marked, from its
    start); ``first`` is on the snapshot's first row only, ``first_in_data_collection`` on a
    table's first row. Each batch is held until the next one exists, so that the snapshot's
    last row, whatever table it comes from (the last table may be empty), is marked ``last``
    and carries ``final_position``, as Debezium's buffering snapshot receiver does. A durable
    position therefore always leaves at least one row to read, which carries the mark.
    """
    todo: queue.Queue[tuple[SnapshotTable, KeyRange]] = queue.Queue()
    for t in tables:
        for r in t.ranges:
            if not r.done:
                todo.put((t, r))
    # a batch read ahead per connection and two more: memory stays flat as connections are
    # added (each range also holds its newest batch)
    out: queue.Queue[Any] = queue.Queue(maxsize=len(conns) + 2)
    stop = threading.Event()
    scope = str(lsn)  # as stream event ids write LSNs
    copy_scope = scope if (COPY if copy is None else copy) else None
    log.info("%s", describe(copy_scope is not None))
    threads = [
        threading.Thread(
            target=_worker,
            args=(c, todo, fetch, out, stop, copy_scope),
            daemon=True,
            name=f"snapshot-{i}",
        )
        for i, c in enumerate(conns)
    ]
    ts_us = time.time_ns() // 1000
    # the newest batch read of each range, by (table, index of the range), and its last key
    held: dict[tuple[str, int], tuple[SnapshotTable, KeyRange, Any, Any]] = {}
    reading = {t.name: {i for i, r in enumerate(t.ranges) if not r.done} for t in tables}
    first_overall = not done and not any(counts.values())
    for t in tables:
        # a table resumed after its last key goes on counting; one read from its start restarts
        t.rows = counts.get(t.name, 0) if t.resumed else 0
        counts[t.name] = t.rows
    live = len(threads)
    remaining = {t.name for t in tables}
    last_report = time.monotonic()
    for t in tables:
        log.info(
            "snapshot %s: started%s (about %s rows)%s",
            t.name,
            " (resuming after the last key written)" if t.resumed else "",
            f"{t.estimate:,}" if t.estimate >= 0 else "an unknown number of",
            f" in {len(t.ranges)} key ranges of {t.rel.schema.columns[t.rel.schema.key[0]].name}"
            if t.split
            else "",
        )
        reporter.snapshot_progress(t.name, t.rows, t.estimate)
    for th in threads:
        th.start()

    def position() -> Position:
        after: dict[str, list[str]] = {}
        ranges: dict[str, list[list[Any]]] = {}
        for t in tables:
            if t.name in done:
                continue
            if t.split:
                ranges[t.name] = [r.saved() for r in t.ranges]
            elif t.ranges[0].after is not None:
                after[t.name] = list(t.ranges[0].after)
        snap: dict[str, Any] = {"done": sorted(done), "after": after, "rows": dict(counts)}
        if ranges:
            snap["ranges"] = ranges
        return {"lsn": lsn, "snapshot": snap}

    def emit(
        t: SnapshotTable, r: KeyRange, rows: Any, last_key: Any, table_done: bool
    ) -> ChangeBatch:
        """The batch of ``rows``: raw text rows (the reference reader), or ``(converted rows,
        event ids)`` from ``_copy_table`` (an id is a str, or the key's texts)."""
        nonlocal first_overall
        rel = t.rel
        schema = rel.schema
        key = schema.key
        n = len(rows) if isinstance(rows, list) else len(rows[0])
        # Rows marked "true" share one source block: nothing changes a block after this but the
        # last row's, which has its own (below).
        shared = source_block(prefix, db, schema, ts_us, None, lsn, 0, snapshot="true")
        ts_ms = ts_us // 1000
        if isinstance(rows, tuple):
            converted, ids = rows
        else:
            converted, ids = [], []
            for raw in rows:
                values = list(raw)
                if key:
                    ids.append(snapshot_event_id(scope, t.name, [values[k] for k in key]))
                else:
                    # the tuple id: unique in one snapshot, and the same when an unchanged row
                    # is read again; a changed row has a new one
                    ids.append(f"s:{scope}:{t.name}:ctid{values.pop()}")
                converted.append(snapshot_row(rel, values, True))
        name = t.name
        events: list[Any] = [
            RowChange(
                schema,
                "r",
                None,
                row,
                shared,
                ts_ms,
                eid if type(eid) is str else snapshot_event_id(scope, name, eid),
            )
            for row, eid in zip(converted, ids, strict=True)
        ]
        # Debezium's markers on the first and last rows, which get blocks of their own (the
        # batch's last row may become the snapshot's "last")
        marks: dict[int, str] = {}
        if n:
            marks[n - 1] = "last_in_data_collection" if table_done else "true"
            if first_overall:
                marks[0] = "first"
                first_overall = False
            elif t.rows == 0 and not (table_done and n == 1):
                marks[0] = "first_in_data_collection"
        for i, flag in marks.items():
            events[i].source = source_block(prefix, db, schema, ts_us, None, lsn, 0, flag)
        t.rows += n
        counts[t.name] = t.rows
        reporter.snapshot_progress(t.name, t.rows, t.rows if table_done else None)
        if last_key is not None:
            r.after = [str(v) for v in last_key]
        if table_done:
            _table_done(t, done)
        return ChangeBatch(events, position(), snapshot=True)

    pending: ChangeBatch | None = None  # the newest batch, held until the next one exists

    def hold(batch: ChangeBatch) -> ChangeBatch | None:
        """Hold ``batch``; return the one it replaces, to be yielded now."""
        nonlocal pending
        prev, pending = pending, batch
        return prev

    try:
        while live:
            if stopping():
                # Nothing held is yielded: the last position yielded resumes correctly, and the
                # rows held are read again on resume (with the same ids), one of them last.
                stop.set()
                return
            try:
                kind, t, rows, key = out.get(timeout=0.2)
            except queue.Empty:
                continue
            if kind is _DONE:
                live -= 1
                continue
            if kind == "error":
                stop.set()
                if isinstance(rows, _tuples.ValueConversionError):
                    raise rows  # located by snapshot_row, as the reference path raises it
                # text that is not valid UTF-8 (SQL_ASCII) fails again on every restart
                bad_text = isinstance(rows, psycopg.errors.CharacterNotInRepertoire)
                what = f"snapshot of {t.name}" if t is not None else "snapshot"
                raise SourceError(
                    f"{what} failed: {str(rows).strip()}" + (f". {NOT_UTF8}" if bad_text else ""),
                    retryable=not bad_text,
                ) from rows
            ready: list[ChangeBatch | None] = []
            r, last_key = key
            slot = (t.name, t.ranges.index(r))
            if kind == "rows":
                prev = held.pop(slot, None)
                held[slot] = (t, r, rows, last_key)
                if prev is not None:
                    ready.append(hold(emit(*prev, False)))
            elif kind == "done":
                reading[t.name].discard(slot[1])
                if slot not in held:
                    r.done = True  # all its rows are in batches made already
                if not reading[t.name]:  # the table's last range: its held batches go now
                    remaining.discard(t.name)
                    finals = [k for k in held if k[0] == t.name]
                    for k in finals:
                        prev = held.pop(k)
                        prev[1].done = True
                        ready.append(hold(emit(*prev, k == finals[-1])))
                    if not finals:
                        _table_done(t, done)
                        reporter.snapshot_progress(t.name, t.rows, t.rows)
            for batch in ready:
                if batch is not None:
                    yield batch
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                for x in tables:
                    if x.name in remaining:
                        _report(x, now)
        if remaining:
            raise SourceError(f"snapshot ended early: {sorted(remaining)} not read")
        if pending is None:
            yield ChangeBatch([], final_position)
        else:
            last = pending.events[-1]
            assert isinstance(last, RowChange)
            last.source["snapshot"] = "last"
            pending.position = final_position
            pending.snapshot = False
            yield pending
            pending = None
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=5)
        for c in conns:
            try:
                c.rollback()
            finally:
                c.close()


def _table_done(t: SnapshotTable, done: list[str]) -> None:
    done.append(t.name)
    log.info(
        "snapshot %s: done, %s rows in %.1fs",
        t.name,
        f"{t.rows:,}",
        time.monotonic() - t.started,
    )


def _report(t: SnapshotTable, now: float) -> None:
    elapsed = max(now - t.started, 1e-6)
    rate = t.rows / elapsed
    if t.estimate > 0:
        left = max(t.estimate - t.rows, 0)
        eta = f", ETA {left / rate:.0f}s" if rate > 0 else ""
        log.info(
            "snapshot %s: %s of about %s rows (%.0f%%), %s rows/s%s",
            t.name,
            f"{t.rows:,}",
            f"{t.estimate:,}",
            min(100.0, 100.0 * t.rows / t.estimate),
            f"{rate:,.0f}",
            eta,
        )
    else:
        log.info("snapshot %s: %s rows, %s rows/s", t.name, f"{t.rows:,}", f"{rate:,.0f}")
