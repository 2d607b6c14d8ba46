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

from cdc.errors import SourceError
from cdc.model import ChangeBatch, Position, Reporter, RowChange, snapshot_event_id
from cdc.sources.postgres._connections import Catalog
from cdc.sources.postgres._relations import Relation, Relations, snapshot_row
from cdc.sources.postgres._sourceinfo import source_block
from cdc.sources.postgres._tuples import NOT_UTF8

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 5.0


@dataclass
class SnapshotTable:
    rel: Relation
    key_types: list[str]  # format_type of each primary-key column, for the resume predicate
    estimate: int  # pg_class.reltuples, -1 when unknown
    resume_after: list[str] | None = None  # text form of the last primary key written
    rows: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.rel.schema.qualified


def tables(
    catalog: Catalog,
    relations: Relations,
    names: list[tuple[str, str]],
    done: list[str],
    after: dict[str, Any],
) -> list[SnapshotTable]:
    """The tables of ``names`` still to read (not in ``done``), each resuming after the key
    ``after`` records for it (tables with a primary key)."""
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
        resume = after.get(qualified) if rel.schema.key else None
        out.append(SnapshotTable(rel, key_types, int(row[1]), resume))
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


_DONE = object()


def _read_table(
    conn: Any, t: SnapshotTable, fetch: int, out: queue.Queue[Any], stop: threading.Event
) -> None:
    schema = t.rel.schema
    # Columns are fetched in the wire's text format with every type's loader replaced by the
    # plain text loader: that text is the type's output function, exactly what pgoutput sends
    # (a ::text cast is not: it gives 'true' for booleans, trims char(n), adds /32 to inet).
    # Qualified by an alias so ORDER BY names the key columns, whatever the select list says.
    cols = sql.SQL(", ").join(sql.Identifier("_t", c.name) for c in schema.columns)
    if not schema.key:
        # a row of a table without a key is named by its tuple id in the event id (see run)
        cols = sql.SQL("{}, _t.ctid").format(cols)
    target = sql.Identifier(schema.namespace, schema.table)
    key_names = [schema.columns[k].name for k in schema.key]
    params: list[str] = []
    query = sql.SQL("SELECT {} FROM ONLY {} AS _t").format(cols, target)
    probe = conn.execute(query + sql.SQL(" LIMIT 0"))
    for d in probe.description or ():
        conn.adapters.register_loader(d.type_code, TextLoader)
    if key_names:
        keys = sql.SQL(", ").join(sql.Identifier("_t", k) for k in key_names)
        if t.resume_after is not None:
            casts = sql.SQL(", ").join(
                sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(typ)) for typ in t.key_types
            )
            query += sql.SQL(" WHERE ({}) > ({})").format(keys, casts)
            params = t.resume_after
        query += sql.SQL(" ORDER BY {}").format(keys)
    cur = conn.cursor(name=f"cdc_snapshot_{abs(hash(t.name))}")
    cur.itersize = fetch
    cur.execute(query, params)
    while not stop.is_set():
        rows = cur.fetchmany(fetch)
        if not rows:
            break
        last = rows[-1]
        last_key = [last[k] for k in schema.key] if key_names else None
        out.put(("rows", t, rows, last_key))
    cur.close()
    if not stop.is_set():
        out.put(("done", t, None, None))


def _worker(
    conn: Any,
    tables: queue.Queue[SnapshotTable],
    fetch: int,
    out: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    t = None
    try:
        while not stop.is_set():
            try:
                t = tables.get_nowait()
            except queue.Empty:
                break
            _read_table(conn, t, fetch, out, stop)
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
) -> Generator[ChangeBatch]:
    """Yield op=r batches for ``tables``; the last batch carries ``final_position``.

    ``prefix`` and ``db`` go into each event's source block; ``stopping`` is polled between
    batches (the source's ``stop()`` was called: end without yielding what is held);
    ``reporter`` gets each table's progress.

    Every batch but the last has ``snapshot=True``; the last one, whose ``final_position`` is
    where streaming starts (or says an initial_only snapshot is complete), has it False.

    Positions in between record per-table progress so an interrupted snapshot resumes:
    ``{"lsn": consistent point,
    "snapshot": {"done": [...], "after": {table: last key}, "rows": {table: n}}}``.

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
    todo: queue.Queue[SnapshotTable] = queue.Queue()
    for t in tables:
        todo.put(t)
    out: queue.Queue[Any] = queue.Queue(maxsize=4 * len(conns))
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_worker, args=(c, todo, fetch, out, stop), daemon=True, name=f"snapshot-{i}"
        )
        for i, c in enumerate(conns)
    ]
    after: dict[str, list[str]] = {t.name: t.resume_after for t in tables if t.resume_after}
    ts_us = time.time_ns() // 1000
    held: dict[str, tuple[SnapshotTable, list[Any], Any]] = {}
    first_overall = not done and not any(counts.values())
    scope = str(lsn)  # as stream event ids write LSNs
    for t in tables:
        # a table resumed after its last key goes on counting; one read from its start restarts
        t.rows = counts.get(t.name, 0) if t.resume_after else 0
        counts[t.name] = t.rows
    live = len(threads)
    remaining = {t.name for t in tables}
    last_report = time.monotonic()
    for t in tables:
        log.info(
            "snapshot %s: started%s (about %s rows)",
            t.name,
            " (resuming after the last key written)" if t.resume_after else "",
            f"{t.estimate:,}" if t.estimate >= 0 else "an unknown number of",
        )
        reporter.snapshot_progress(t.name, t.rows, t.estimate)
    for th in threads:
        th.start()

    def position() -> Position:
        return {
            "lsn": lsn,
            "snapshot": {"done": sorted(done), "after": dict(after), "rows": dict(counts)},
        }

    def emit(t: SnapshotTable, rows: list[Any], last_key: Any, table_done: bool) -> ChangeBatch:
        nonlocal first_overall
        rel = t.rel
        schema = rel.schema
        key = schema.key
        events: list[Any] = []
        n = len(rows)
        for i, raw in enumerate(rows):
            flag = "true"
            if first_overall:
                flag = "first"
                first_overall = False
            elif table_done and i == n - 1:
                flag = "last_in_data_collection"
            elif t.rows == 0 and i == 0:
                flag = "first_in_data_collection"
            values = list(raw)
            if key:
                eid = snapshot_event_id(scope, t.name, [values[k] for k in key])
            else:
                # the tuple id: unique in one snapshot, and the same when an unchanged row is
                # read again; a changed row has a new one
                eid = f"s:{scope}:{t.name}:ctid{values.pop()}"
            after_row = snapshot_row(rel, values, True)
            src = source_block(prefix, db, schema, ts_us, None, lsn, 0, snapshot=flag)
            events.append(RowChange(schema, "r", None, after_row, src, ts_us // 1000, eid))
        t.rows += n
        counts[t.name] = t.rows
        reporter.snapshot_progress(t.name, t.rows, t.rows if table_done else None)
        if last_key is not None:
            after[t.name] = [str(v) for v in last_key]
        if table_done:
            _table_done(t, done, after)
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
                # text that is not valid UTF-8 (SQL_ASCII) fails again on every restart
                bad_text = isinstance(rows, psycopg.errors.CharacterNotInRepertoire)
                what = f"snapshot of {t.name}" if t is not None else "snapshot"
                raise SourceError(
                    f"{what} failed: {str(rows).strip()}" + (f". {NOT_UTF8}" if bad_text else ""),
                    retryable=not bad_text,
                ) from rows
            ready: ChangeBatch | None = None
            if kind == "rows":
                prev = held.pop(t.name, None)
                held[t.name] = (t, rows, key)
                if prev is not None:
                    ready = hold(emit(prev[0], prev[1], prev[2], False))
            elif kind == "done":
                remaining.discard(t.name)
                prev = held.pop(t.name, None)
                if prev is not None:
                    ready = hold(emit(prev[0], prev[1], prev[2], True))
                else:
                    _table_done(t, done, after)
                    reporter.snapshot_progress(t.name, t.rows, t.rows)
            if ready is not None:
                yield ready
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


def _table_done(t: SnapshotTable, done: list[str], after: dict[str, list[str]]) -> None:
    done.append(t.name)
    after.pop(t.name, None)
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
