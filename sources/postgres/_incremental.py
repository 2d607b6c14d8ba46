"""Incremental snapshots on Postgres: the watermarks, the chunk reads, and snapshot requests.

The window logic is ``cdc.incremental``'s; this module does its Postgres I/O:
- watermarks and requests are logical decoding messages written by
  ``pg_logical_emit_message(false, <prefix>, <json>)`` on a normal connection; non-transactional,
  they come in the stream between transactions, at their place in the WAL, and need no table.
  The prefix names the pipeline's slot (``message_prefix``), so that pipelines reading the same
  database never act on each other's. The content is a Debezium signal as JSON: ``{"id": ...,
  "type": ..., "data": ...}`` (the columns of its signal table);
- a chunk is read on its own connection in a REPEATABLE READ READ ONLY transaction begun after
  the low watermark was written: ``WHERE (key) > (last) AND (condition) ORDER BY key LIMIT n``.
  Values are read as the initial snapshot reads them (``_snapshot``: the wire's text, converted
  by the stream's converters), so snapshot, stream and incremental values are identical;
- ``request_snapshot`` (``cdc snapshot``) checks a request on a read-only connection and sends
  it as such a message, which the running source reads from its stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

from cdc.assembler import TransactionAssembler
from cdc.errors import ConfigError, SourceError
from cdc.incremental import (
    EXECUTE_SNAPSHOT,
    WINDOW_CLOSE,
    WINDOW_OPEN,
    Chunk,
    IncrementalSnapshots,
    Signal,
    SignalError,
    Watermark,
    parse_signal,
)
from cdc.model import Reporter, TableSchema
from cdc.sources.postgres import _snapshot
from cdc.sources.postgres._connections import SESSION_OPTIONS, Catalog
from cdc.sources.postgres._relations import Relations, snapshot_row
from cdc.sources.postgres._sourceinfo import source_block
from cdc.sources.postgres.config import PostgresSourceConfig, default_name, parse_table, sql_table

log = logging.getLogger(__name__)


COMMIT_WAIT_S = 1.0  # the longest a chunk waits for transactions committing at its low watermark
# after a watermark: the snapshot of that moment, and an xid (its commit flushes the WAL)
_OPENED = "SELECT pg_current_snapshot()::text, pg_current_xact_id()::text"


def _snapshot_parts(text: str) -> tuple[int, int, set[int]]:
    """xmin, xmax and the in-progress xids of a ``pg_snapshot`` in its text form."""
    xmin, xmax, xip = text.split(":")
    return int(xmin), int(xmax), {int(x) for x in xip.split(",") if x}


def message_prefix(slot: str) -> str:
    """The prefix of the logical messages of the pipeline reading ``slot``."""
    return f"cdc.incremental.{slot}"


def _mac(key: str, sid: str, kind: str, data: str | None) -> str:
    return hmac.new(key.encode(), f"{sid}\n{kind}\n{data}".encode(), hashlib.sha256).hexdigest()


def signal_of(content: bytes, key: str) -> Signal | None:
    """The signal a message of ours carries (None: not about snapshots); SignalError when bad.

    Any user of the database may write a logical message, so a request (which runs its
    condition as SQL with the pipeline's user) counts only when signed with ``key`` (the
    source's DSN, which ``cdc snapshot`` reads from the same config): others are refused.
    """
    try:
        body = json.loads(content)
        sid, kind, data = str(body["id"]), str(body["type"]), body.get("data")
        sig = parse_signal(sid, kind, data)
    except (ValueError, KeyError, TypeError) as e:
        raise SignalError(f"unreadable snapshot message {content[:200]!r}: {e}") from None
    if isinstance(sig, Watermark) or sig is None:
        return sig  # a watermark acts only when it names the open window (a random id)
    if not hmac.compare_digest(str(body.get("mac", "")), _mac(key, sid, kind, data)):
        raise SignalError(
            f"snapshot request {sid!r} ({kind}) in a logical message not signed with this "
            "pipeline's configuration: ignored; ask with cdc snapshot, or the signal table"
        )
    return sig


def _emit(
    conn: psycopg.Connection[Any],
    prefix: str,
    kind: str,
    sid: str,
    data: str | None,
    key: str | None = None,
) -> None:
    """Write a signal as a logical message; ``key``: sign it (see ``signal_of``)."""
    body: dict[str, Any] = {"id": sid, "type": kind, "data": data}
    if key is not None:
        body["mac"] = _mac(key, sid, kind, data)
    conn.execute("SELECT pg_logical_emit_message(false, %s, %s)", (prefix, json.dumps(body)))


class Incremental:
    """The incremental snapshots of one Postgres source, driven by its stream's thread.

    ``names``: the captured tables by ``TableSchema.qualified``; ``start`` (each time the source
    starts streaming) makes ``snapshots`` from the position's state; then the stream calls
    ``step`` between messages (a new window when none is open), ``message`` for each message
    with our prefix, ``signal_row`` for each row inserted into the signal table, and gives each
    captured change of ``snapshots.watching`` to ``snapshots.observe``.
    """

    def __init__(
        self,
        dsn: str,
        catalog: Catalog,
        relations: Relations,
        slot: str,
        names: dict[str, tuple[str, str]],
        reporter: Reporter,
    ) -> None:
        self.dsn = dsn
        self.catalog = catalog
        self.relations = relations
        self.names = names
        self.reporter = reporter
        self.prefix = message_prefix(slot)
        self.snapshots = IncrementalSnapshots({}, list(names))
        self._conn: psycopg.Connection[Any] | None = None
        self._loaders: set[int] = set()
        # at the low watermark: in-progress xids, xmax, and the xid window() took (_begin_chunk)
        self._opened: tuple[set[int], int, int] = (set(), 0, 0)
        self._long: set[int] = set()  # transactions that outlasted COMMIT_WAIT_S: not awaited
        self.estimate: int = -1  # of the last table read (pg_class.reltuples; -1: unknown)
        self._logged = 0.0  # when progress was last logged
        self._reading: dict[str, _snapshot.SnapshotTable] = {}  # tables begun, for progress

    def start(
        self,
        state: dict[str, Any] | None,
        chunk_size: int,
        *,
        backfill: bool,
        published: list[str] | None = None,
    ) -> list[str]:
        """Resume from a position's ``state``; returns the tables queued for a backfill.

        ``published``: the captured tables the publication held at this start (None: a new
        snapshot reads every table, so all count as snapshotted). Those were captured before
        (a table renamed to a name now in ``tables`` keeps its place in the publication; a
        position from before incremental snapshots records none), so only a table the
        publication did not hold is backfilled. ``backfill`` False: none is.
        """
        names = list(self.names)
        if published is None:
            inc = IncrementalSnapshots(None, names, chunk_size=chunk_size)
        else:
            inc = IncrementalSnapshots(state or {}, names, chunk_size=chunk_size)
            inc.snapshotted |= set(published) & set(names)
        if not backfill:
            inc.snapshotted |= set(names)
        self.snapshots = inc
        return inc.captured(names)

    def step(self) -> None:
        """Open a window when none is: write the low watermark, read the chunk, write the high
        watermark. The stream brings the watermarks back; the chunk's rows go out at the high
        one (``message``)."""
        inc = self.snapshots
        chunk = inc.next_chunk()
        if chunk is None:
            return
        ns, name = self.names[chunk.table]
        if chunk.after is None and inc.rows == 0:
            log.info(
                "incremental snapshot %s: reading %s%s",
                chunk.request,
                chunk.table,
                f" WHERE {chunk.condition}" if chunk.condition else "",
            )
        try:
            self.window(chunk, WINDOW_OPEN)
            schema, rows, last = self.read(chunk, ns, name)
            inc.chunk_read(chunk.window, schema, rows, last)
        except SignalError as e:  # no primary key, or the server rejects the condition
            inc.abandon()
            inc.reject_current(str(e))
            return
        except BaseException:
            inc.abandon()
            raise
        self.window(chunk, WINDOW_CLOSE)

    def message(
        self, content: bytes, lsn: int, asm: TransactionAssembler, prefix: str, db: str
    ) -> None:
        """A message with our prefix at ``lsn``, between transactions: a watermark (at the high
        one the chunk's rows go into ``asm``), a request or a stop. A bad one is logged."""
        inc = self.snapshots
        try:
            sig = signal_of(content, self.dsn)
        except SignalError as e:
            log.error("%s", e)
            return
        if isinstance(sig, Watermark):
            if sig.low:
                inc.low_watermark(sig.window)
                return
            cur, before = inc.current, inc.rows
            now_us = time.time_ns() // 1000
            rows = inc.high_watermark(
                sig.window,
                lambda s: source_block(prefix, db, s, now_us, None, lsn, 0, "incremental"),
                now_us // 1000,
            )
            if rows is not None and cur is not None:
                asm.reads(rows)
                self._progress(cur[0].id, cur[1], before + len(rows), inc.current != cur)
        elif sig is not None:
            self._apply(sig)

    def signal_row(self, schema: TableSchema, row: tuple[Any, ...]) -> None:
        """A row inserted into the signal table (columns id, type and data, as Debezium's)."""
        cols = {c.name: i for i, c in enumerate(schema.columns)}
        if not {"id", "type", "data"} <= cols.keys():
            log.error(
                "signal table %s needs the columns id, type and data (it has %s): ignoring its row",
                schema.qualified,
                ", ".join(cols),
            )
            return
        sid, kind, data = (row[cols[c]] for c in ("id", "type", "data"))
        try:
            sig = parse_signal(str(sid), str(kind), None if data is None else str(data))
        except SignalError as e:
            log.error("%s", e)
            return
        if sig is not None and not isinstance(sig, Watermark):
            self._apply(sig)

    def _apply(self, sig: Signal) -> None:
        try:
            self.snapshots.signal(sig)
        except SignalError as e:  # a request naming a table not captured...: streaming goes on
            log.error("%s", e)

    def _progress(self, request: str, table: str, done: int, finished: bool) -> None:
        self.reporter.snapshot_progress(table, done, done if finished else self.estimate)
        now = time.monotonic()
        t = self._reading.get(table)
        if finished:
            self._reading.pop(table, None)
            took = f" in {now - t.started:.1f}s" if t is not None else ""
            log.info("incremental snapshot %s: %s: %s rows%s", request, table, f"{done:,}", took)
        elif t is not None and now - self._logged >= _snapshot.PROGRESS_EVERY_S:
            self._logged = now
            t.rows = done
            _snapshot._report(t, now)  # rows of the estimate, rate, ETA: as the initial snapshot

    def window(self, chunk: Chunk, kind: str) -> None:
        """Write the low (``WINDOW_OPEN``) or high (``WINDOW_CLOSE``) watermark of ``chunk``;
        after the low one, note the transactions running then (see ``_begin_chunk``)."""
        conn = self.catalog.connect()
        # In a transaction that takes an xid (after the watermark and the snapshot of that
        # moment, see _begin_chunk) and commits synchronously, so that its commit flushes the
        # WAL: a watermark alone is not flushed (before Postgres 17), and the stream would
        # bring it only at the WAL writer's next flush (up to wal_writer_delay per watermark).
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = on")
            _emit(conn, self.prefix, kind, chunk.window, None)
            row = conn.execute(_OPENED).fetchone()
        assert row is not None
        if kind == WINDOW_OPEN:
            _, xmax, xip = _snapshot_parts(row[0])
            self._opened = (xip, xmax, int(row[1]))

    def _begin_chunk(self, conn: psycopg.Connection[Any]) -> None:
        """Begin the chunk's transaction with a snapshot that sees every transaction whose
        commit precedes the low watermark in the stream.

        A transaction's commit record is written before it becomes visible (the server flushes
        it in between), so one that committed just before the low watermark may be invisible
        to a snapshot taken just after: its change comes before the window opens, and the
        chunk's older copy of the row would follow it. Every such transaction was running when
        the watermark was written: in that moment's snapshot (``window``) it is in progress,
        or at or past its xmax and before the xid ``window`` took itself. Wait until the chunk's
        snapshot shows none of them in progress. One still running after COMMIT_WAIT_S is a
        long one, whose commit comes after the watermark (its changes then drop their keys from
        the chunk); it is not waited for again while it runs (the residual risk: it commits
        just as a later low watermark is written, and that chunk's snapshot misses it).
        """
        xip0, xmax0, own = self._opened
        deadline = time.monotonic() + COMMIT_WAIT_S
        delay = 0.0005
        while True:
            conn.rollback()  # a new transaction: this first query takes its snapshot
            row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
            assert row is not None
            _, _, running = _snapshot_parts(row[0])  # all < own < its xmax: own committed
            self._long &= running
            waiting = {x for x in running if x in xip0 or xmax0 <= x < own} - self._long
            if not waiting:
                return
            if time.monotonic() >= deadline:
                # Long ones: not waited for again (each chunk would wait COMMIT_WAIT_S)
                self._long |= waiting
                log.info(
                    "incremental snapshot: transactions %s still run %.0fs after a low "
                    "watermark: reading on (taken as long ones, committing after it)",
                    ", ".join(str(x) for x in sorted(waiting)),
                    COMMIT_WAIT_S,
                )
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def read(
        self, chunk: Chunk, ns: str, name: str
    ) -> tuple[TableSchema, list[tuple[Any, ...]], list[str] | None]:
        """The rows of ``chunk`` (converted), its table's schema, and the text form of the last
        row's key (None when no row). Call after the low watermark was written: the read's
        snapshot is taken now. ``ns``, ``name``: the table ``chunk.table`` names. SourceError
        when the server refuses (the user's condition)."""
        # The stream's relation versions stay the stream's: a chunk is converted by the
        # catalog's current shape, which may be ahead of the stream's place in the WAL. A table
        # the stream has not announced yet keeps the version built here (the stream announces
        # the same shape, and gets this object: encoders plan once per object).
        by_id = self.relations.by_id
        saved = dict(by_id)
        try:
            t = _snapshot.tables(self.catalog, self.relations, [(ns, name)], [], {})[0]
        finally:
            by_id.update(saved)
        self.estimate = t.estimate
        t.started = self._reading.setdefault(chunk.table, t).started
        schema = t.rel.schema
        if not schema.key:
            return schema, [], None  # the caller refuses it (cdc.incremental names the table)
        conn = self._connect()
        cols = sql.SQL(", ").join(sql.Identifier("_t", c.name) for c in schema.columns)
        keys = sql.SQL(", ").join(sql.Identifier("_t", schema.columns[k].name) for k in schema.key)
        query = sql.SQL("SELECT {} FROM ONLY {} AS _t").format(cols, sql.Identifier(ns, name))
        probe = query + sql.SQL(" LIMIT 0")
        where: list[sql.Composable] = []
        params: list[str] = []
        if chunk.after is not None:
            casts = sql.SQL(", ").join(
                sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(typ)) for typ in t.key_types
            )
            where.append(sql.SQL("({}) > ({})").format(keys, casts))
            params = list(chunk.after)
        if chunk.condition:
            # the user's SQL as written; a % in it is not a placeholder of ours
            where.append(sql.SQL("({})").format(sql.SQL(chunk.condition.replace("%", "%%"))))
        if where:
            query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
        query += sql.SQL(" ORDER BY {} LIMIT {}").format(keys, sql.Literal(chunk.size))
        try:
            self._begin_chunk(conn)
            self._text_loaders(conn, conn.execute(probe).description)
            raw = conn.execute(query, params).fetchall()
            conn.rollback()
        except psycopg.OperationalError as e:  # the connection: a restart reads it again
            self.close()
            raise SourceError(
                f"incremental snapshot of {chunk.table}: the chunk query failed: {str(e).strip()}"
            ) from None
        except psycopg.Error as e:  # the server refuses the query: the user's condition
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            raise SignalError(
                f"the chunk query was refused by the server: {str(e).strip()}"
                + (f" (the condition is {chunk.condition!r})" if chunk.condition else "")
            ) from None
        rows = [snapshot_row(t.rel, list(r), True) for r in raw]
        last = [str(raw[-1][k]) for k in schema.key] if raw else None
        return schema, rows, last

    def _text_loaders(self, conn: psycopg.Connection[Any], description: Any) -> None:
        # the wire's text for every column, as _snapshot reads it (see _snapshot._read_table)
        for d in description or ():
            if d.type_code not in self._loaders:
                conn.adapters.register_loader(d.type_code, TextLoader)
                self._loaders.add(d.type_code)

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = _snapshot.open_connections(self.dsn, SESSION_OPTIONS, 1, None)[0]
            self._loaders = set()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def check_signal_table(catalog: Catalog, ns: str, name: str) -> None:
    """Raise a SourceError saying how to create it when the configured signal table is missing
    or lacks Debezium's columns (id, type, data)."""
    cols = {
        r[0]
        for r in catalog.connect()
        .execute(
            "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (ns, name),
        )
        .fetchall()
    }
    if not {"id", "type", "data"} <= cols:
        what = "does not exist" if not cols else f"lacks Debezium's columns (it has {sorted(cols)})"
        raise SourceError(
            f"signal table {sql_table(ns, name)} (source.signal_table) {what}: create it with "
            f"CREATE TABLE {sql_table(ns, name)} (id varchar(64) PRIMARY KEY, type varchar(32) "
            "NOT NULL, data varchar(2048)), or remove signal_table",
            retryable=False,
        )


def request_snapshot(
    config: PostgresSourceConfig, pipeline: str, tables: list[str], condition: str | None
) -> str:
    """Ask the running source of ``pipeline`` for an incremental snapshot of ``tables`` (as
    written in ``source.tables``), restricted by the SQL ``condition`` when given; returns the
    request's id once the server holds the request (the source reads it from its stream).

    Checked first, nothing sent when a check fails: every table is captured by the pipeline
    (ConfigError), exists with a primary key, and ``condition`` is accepted by the server for
    each of them (``EXPLAIN`` on a read-only connection; SourceError showing the server's
    words).
    """
    from cdc.sources.postgres._selection import selection

    chosen = selection(config)
    names: list[tuple[str, str]] = []
    for t in tables:
        try:
            parsed = parse_table(t)
        except ValueError as e:
            raise ConfigError([str(e)]) from None
        if not chosen.matches(*parsed):
            raise ConfigError(
                [
                    f"table {t!r} is not captured by pipeline {pipeline!r} (its tables: "
                    f"{', '.join(config.tables)}): add it to source.tables and restart the "
                    "daemon (a table added later is backfilled by itself)"
                ]
            )
        names.append(parsed)
    try:
        conn = psycopg.connect(config.dsn, options=SESSION_OPTIONS, autocommit=False)
    except psycopg.Error as e:
        raise SourceError(f"cannot connect to postgres: {str(e).strip()}") from None
    try:
        conn.read_only = True
        for ns, name in names:
            has_key = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indisprimary AND i.indrelid = "
                "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s))",
                (ns, name),
            ).fetchone()
            if not has_key or not has_key[0]:
                raise SourceError(
                    f"table {sql_table(ns, name)} has no primary key (or does not exist): an "
                    "incremental snapshot reads a table in key order; add a primary key to it",
                    retryable=False,
                )
            if condition:
                query = sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE ({})").format(
                    sql.Identifier(ns, name), sql.SQL(condition)
                )
                try:
                    conn.execute(query)
                except psycopg.Error as e:
                    raise SourceError(
                        f"the condition {condition!r} is rejected by the server for table "
                        f"{sql_table(ns, name)}: {str(e).strip()}; correct it (it is SQL for "
                        "the WHERE clause of a SELECT of that table)",
                        retryable=False,
                    ) from None
                finally:
                    conn.rollback()
        conn.rollback()
        conn.read_only = False
        conn.autocommit = True
        rid = f"cdc-{uuid.uuid4().hex[:12]}"
        qualified = [f"{ns}.{name}" for ns, name in names]
        data: dict[str, Any] = {"data-collections": qualified, "type": "incremental"}
        if condition:
            data["additional-conditions"] = [
                {"data-collection": q, "filter": condition} for q in qualified
            ]
        slot = config.slot or default_name(pipeline)
        _emit(conn, message_prefix(slot), EXECUTE_SNAPSHOT, rid, json.dumps(data), config.dsn)
        return rid
    finally:
        conn.close()
