"""Initial snapshot of existing rows, read in primary-key order over exported snapshots.

The first snapshot reads every table in REPEATABLE READ transactions that import the snapshot
exported when the replication slot was created, so rows read and changes streamed afterwards
meet exactly at the slot's consistent point: no gap, no overlap.

With several connections (``snapshot_parallelism``) tables are read at once, and a large table
whose first key column is an integer is split into key ranges of that column (``KeyRange``), one
connection each, all in the same exported snapshot; rows are written in the order read (key
order within a range).

Resuming an interrupted snapshot: the exported snapshot died with the process, so the remaining
rows (primary key after the last one written, in each range, and tables not yet done) are read at
a newer snapshot, and streaming still starts at the original consistent point. Changes made
between the two snapshots are therefore delivered again after rows that already contain them;
applying events by key in order converges to the table, and nothing is lost. Tables without a
primary key are read again from the start on resume.

Values are the types' output texts (what pgoutput sends), in a session with the walsender's
settings, converted by the same converters as streamed values, so snapshot and stream give
identical values per type. Two readers give the same events: ``COPY (SELECT ...) TO STDOUT``
chunks converted in the reader threads by ``cdc._native.CopyDecoder`` with the relation's
compiled plan (``COPY``), and the reference, a cursor's text rows converted by ``snapshot_row``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import psycopg
from psycopg import sql

from cdc.errors import SourceError
from cdc.model import ChangeBatch, Position, Reporter, RowChange, snapshot_event_id
from cdc.sources.postgres import _tuples
from cdc.sources.postgres._connections import Catalog
from cdc.sources.postgres._relations import Relations, snapshot_row
from cdc.sources.postgres._snapshot_read import (
    COPY,
    DONE,
    KeyRange,
    describe,
    split,
    worker,
)
from cdc.sources.postgres._snapshot_read import SnapshotTable as SnapshotTable
from cdc.sources.postgres._sourceinfo import source_block
from cdc.sources.postgres._tuples import NOT_UTF8

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0


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
            t.ranges = split(cat, t, parts)
        out.append(t)
    return out


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
            target=worker,
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
            if kind is DONE:
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
