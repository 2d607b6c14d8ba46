"""The snapshot's readers: which rows of a table a connection reads (``KeyRange``), and the two
ways it reads them, the same events either way: COPY chunks converted in the reader thread by
``cdc._native.CopyDecoder`` (``COPY``), and the reference, a cursor's text rows that
``_snapshot.run`` converts with ``snapshot_row``. Each reader puts messages on a queue for
``_snapshot.run``: ``("rows", table, rows, (range, last key))``, ``("done", table, None, (range,
None))``, ``("error", table, exception, None)``, and ``(DONE, ...)`` when its worker ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.types.string import TextLoader

from cdc import _native_avro
from cdc.errors import SourceError
from cdc.sources.postgres import _tuples
from cdc.sources.postgres._relations import Relation, snapshot_row

log = logging.getLogger(__name__)

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


def split(cat: Any, t: SnapshotTable, parts: int) -> list[KeyRange]:
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


DONE = object()

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


class _Fallbacks:
    """Rows of snapshots read with COPY that went to the reference conversion: one the compiled
    path left (``generic``), or every row of a table version without a compiled plan; the first
    of each table is logged."""

    count = 0
    lock = threading.Lock()
    logged: set[str] = set()

    @classmethod
    def add(cls, table: str, n: int, why: str) -> None:
        with cls.lock:  # the reader threads count together
            cls.count += n
            first = table not in cls.logged
            cls.logged.add(table)
        if first:
            log.info("snapshot of %s: rows converted by the reference path (%s)", table, why)


def native_fallbacks() -> int:
    """How many snapshot rows read with COPY were converted by the reference path."""
    return _Fallbacks.count


_native_avro.count_fallbacks("copy_decoder", native_fallbacks)  # the metric's


def copy_decoder(t: SnapshotTable, scope: str) -> Any | None:
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
        _Fallbacks.add(t.name, 1, "a value the compiled plan leaves to it")
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


def _put(out: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    """Hand ``item`` to the snapshot's consumer, unless it stopped: a worker blocked on a full
    queue nobody reads would keep its connection busy (mid-COPY), and the consumer's cleanup
    waits on that connection."""
    while True:
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            if stop.is_set():
                return


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
    dec = copy_decoder(t, scope)
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
        _put(out, ("rows", t, (rows, ids), (r, after)), stop)

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
        _put(out, ("done", t, None, (r, None)), stop)
    return True


def _read_table(
    conn: Any,
    t: SnapshotTable,
    r: KeyRange,
    fetch: int,
    out: queue.Queue[Any],
    stop: threading.Event,
    fallback: bool = False,
) -> None:
    """The reference reader: a cursor's text rows, converted on the main thread (``emit``);
    ``fallback``: in place of COPY, for a table version without a compiled plan (counted)."""
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
        if fallback:
            _Fallbacks.add(t.name, len(rows), "its version has no compiled plan")
        last = rows[-1]
        last_key = [last[k] for k in schema.key] if key_names else None
        _put(out, ("rows", t, rows, (r, last_key)), stop)
    cur.close()
    if not stop.is_set():
        _put(out, ("done", t, None, (r, None)), stop)


def worker(
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
                _read_table(conn, t, r, fetch, out, stop, scope is not None)
    except Exception as e:
        _put(out, ("error", t, e, None), stop)
    finally:
        _put(out, (DONE, None, None, None), stop)
