"""Snapshots while streaming, the MySQL/MariaDB side: the chunk query, the windows driven from
the binlog stream, and ``cdc snapshot``'s request.

The watermark method (DBLog; the source-agnostic rules are in ``cdc.incremental``) needs a mark
in the change stream itself before and after each chunk is read: on MySQL/MariaDB a row of the
signal table (``_signals.py``).

The chunk query reads ``WHERE (pk) > (last) AND (condition) ORDER BY pk LIMIT n`` in a read-only
transaction on a connection of its own, with every value converted by the table version's
``from_select`` converters: the same values the initial snapshot and the stream give.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import decimal
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pymysql

from cdc.errors import ConfigError, SourceError
from cdc.incremental import (
    IncrementalSnapshots,
    Signal,
    SignalError,
    Watermark,
)
from cdc.model import Reporter, RowChange, TableSchema
from cdc.sources.mysql._schema import SchemaCache, TableVersion
from cdc.sources.mysql._server import Server, quote
from cdc.sources.mysql._signals import SignalTable
from cdc.sources.mysql._tables import Tables
from cdc.sources.mysql.config import MySqlSourceConfig

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5.0  # how often a running snapshot logs its progress


# --- keys as the position holds them ---------------------------------------------------------


def key_to_json(key: Sequence[Any]) -> list[Any]:
    """A primary key as read by SELECT, in a form JSON holds and ``key_from_json`` restores
    exactly (the next chunk starts after it)."""
    out: list[Any] = []
    for v in key:
        if isinstance(v, bool) or v is None or isinstance(v, int | str):
            out.append(v)
        elif isinstance(v, bytes | bytearray):
            out.append({"b64": base64.b64encode(bytes(v)).decode()})
        elif isinstance(v, decimal.Decimal):
            out.append({"dec": str(v)})
        elif isinstance(v, float):
            out.append({"float": repr(v)})
        elif isinstance(v, datetime.datetime):
            out.append({"dt": v.isoformat()})
        elif isinstance(v, datetime.date):
            out.append({"date": v.isoformat()})
        elif isinstance(v, datetime.timedelta):
            out.append({"td": [v.days, v.seconds, v.microseconds]})
        else:
            out.append({"str": str(v)})
    return out


def key_from_json(key: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for v in key:
        if not isinstance(v, dict):
            out.append(v)
            continue
        (tag, x), *_ = v.items()
        if tag == "b64":
            out.append(base64.b64decode(x))
        elif tag == "dec":
            out.append(decimal.Decimal(x))
        elif tag == "float":
            out.append(float(x))
        elif tag == "dt":
            out.append(datetime.datetime.fromisoformat(x))
        elif tag == "date":
            out.append(datetime.date.fromisoformat(x))
        elif tag == "td":
            out.append(datetime.timedelta(days=x[0], seconds=x[1], microseconds=x[2]))
        else:
            out.append(x)
    return out


# --- the chunk query -------------------------------------------------------------------------


@dataclass(slots=True)
class Chunk:
    """Rows of one table read in a window: ``rows`` converted as the snapshot converts them,
    ``keys[i]`` the primary key of ``rows[i]`` as SELECT returned it (for the next chunk's
    ``after``), in key order."""

    version: TableVersion
    rows: list[tuple[Any, ...]]
    keys: list[list[Any]]


class ChunkReader:
    """Reads chunks by primary-key ranges on a connection of its own (opened on first use)."""

    def __init__(self, server: Server, tables: Tables) -> None:
        self.server = server
        self.tables = tables
        self._conn: pymysql.Connection[Any] | None = None

    def _cursor(self) -> Any:
        if self._conn is None or not self._conn.open:
            self._conn = self.server.connect()
            with self._conn.cursor() as cur:
                # TIMESTAMP values as the initial snapshot reads them (in UTC)
                cur.execute("SET SESSION time_zone = '+00:00'")
        return self._conn.cursor()

    def version(self, db: str, table: str) -> TableVersion:
        """The table as the catalog describes it now; SignalError (it cannot be read in
        chunks) when it is gone or has no primary key."""
        cur = self._cursor()
        try:
            v = self.tables.catalog_version(cur, db, table)
        finally:
            cur.close()
        if not v.schema.columns:
            raise SignalError(f"table {db}.{table} does not exist (dropped?)")
        if not v.schema.key:
            raise SignalError(
                f"table {db}.{table} has no primary key: a snapshot while streaming reads a "
                "table in primary-key order. Add a primary key (ALTER TABLE ... ADD PRIMARY "
                "KEY), or take a new initial snapshot of the pipeline instead"
            )
        return v

    @staticmethod
    def where(version: TableVersion, after: Sequence[Any] | None) -> tuple[str, list[Any]]:
        """``(k1, k2, ...) > (after)`` as SQL the primary key's index serves, and its
        parameters ("" when ``after`` is None)."""
        if after is None:
            return "", []
        schema = version.schema
        keys = [schema.columns[i].name for i in schema.key]
        terms, params = [], []
        for j in range(len(keys)):
            eq = [f"{quote(k)} = %s" for k in keys[:j]]
            terms.append("(" + " AND ".join([*eq, f"{quote(keys[j])} > %s"]) + ")")
            params += [*after[:j], after[j]]
        return "(" + " OR ".join(terms) + ")", params

    @classmethod
    def sql(
        cls,
        version: TableVersion,
        after: Sequence[Any] | None,
        condition: str | None,
        size: int,
    ) -> tuple[str, list[Any]]:
        """The chunk query and its parameters."""
        schema = version.schema
        cols = ", ".join(quote(c.name) for c in schema.columns)
        order = ", ".join(quote(schema.columns[i].name) for i in schema.key)
        where, params = cls.where(version, after)
        # the parameters are always given, so a % of the user's SQL is escaped as %%
        user = f"({condition.replace('%', '%%')})" if condition else ""
        conds = [c for c in (where, user) if c]
        filt = f" WHERE {' AND '.join(conds)}" if conds else ""
        source = f"{quote(schema.namespace)}.{quote(schema.table)}"
        return f"SELECT {cols} FROM {source}{filt} ORDER BY {order} LIMIT {size}", params

    def read(
        self,
        version: TableVersion,
        after: Sequence[Any] | None,
        condition: str | None,
        size: int,
    ) -> Chunk:
        """The next ``size`` rows of ``version``'s table after the key ``after`` (None: from
        its start) among the rows matching ``condition`` (the user's SQL, run as it is in a
        read-only transaction; None: every row). ``size`` 0 checks the query and reads none.

        SignalError when the server rejects the query (the condition, or the table changed);
        SourceError when the connection fails (a restart reads the chunk again)."""
        schema = version.schema
        sql, params = self.sql(version, after, condition, size)
        cur = self._cursor()
        try:
            cur.execute("START TRANSACTION READ ONLY")
            try:
                cur.execute(sql, params)
                raw_rows = cur.fetchall()
            except pymysql.err.MySQLError as e:
                code = e.args[0] if e.args else None
                msg = e.args[-1] if e.args else e
                if isinstance(code, int) and 2000 <= code < 3000:  # the client's: connection
                    raise SourceError(f"reading a chunk of {schema.qualified}: {msg}") from None
                where = f" WHERE {condition}" if condition else ""
                raise SignalError(
                    f"the server rejects the chunk query on {schema.qualified}{where}: {msg}"
                ) from None
            finally:
                with contextlib.suppress(pymysql.err.MySQLError):
                    cur.execute("COMMIT")
        finally:
            cur.close()
        convs = version.from_select
        rows: list[tuple[Any, ...]] = []
        keys: list[list[Any]] = []
        for raw in raw_rows:
            try:
                row = tuple(
                    None if v is None else (v if conv is None else conv(v))
                    for v, conv in zip(raw, convs, strict=True)
                )
            except Exception as e:
                key = [raw[i] for i in schema.key]
                where = f"a snapshot chunk (row with key {key!r})"
                failure = version.conversion_failure(list(raw), False, where)
                raise SourceError(failure, retryable=False) from e
            rows.append(row)
            keys.append([raw[i] for i in schema.key])
        return Chunk(version, rows, keys)

    def estimate(self, db: str, table: str) -> int:
        """The server's estimate of the table's rows (-1: none)."""
        cur = self._cursor()
        try:
            cur.execute(
                "SELECT TABLE_ROWS FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (db, table),
            )
            row = cur.fetchone()
        finally:
            cur.close()
        return -1 if not row or row[0] is None else int(row[0])

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class Windows:
    """Drives ``cdc.incremental`` from the binlog stream: opens each chunk's window (low
    watermark, chunk query, high watermark) between transactions, and applies the signals of a
    transaction (watermarks, execute-snapshot, stop-snapshot rows) at its commit, so that a
    position taken inside a transaction carries the state from before it and the chunk's rows
    go between transactions, in the one order of the batches.

    Without a signal table nothing is written or read: the queue (a table added later) waits
    in the position until one is configured.
    """

    def __init__(
        self,
        snapshots: IncrementalSnapshots,
        signals: SignalTable | None,
        reader: ChunkReader,
        reporter: Reporter,
    ) -> None:
        self.snapshots = snapshots
        self.signals = signals
        self.reader = reader
        self.reporter = reporter
        self._pending: list[Signal] = []  # of the open transaction
        self._estimates: dict[str, int] = {}  # rows per table, the server's estimate (-1: none)
        self._began: dict[str, tuple[float, int]] = {}  # table -> (when, rows) in this process
        self._logged = 0.0  # when progress was last logged
        # the state changed since the last position the stream yielded (the stream makes it
        # durable at once, with a heartbeat when no rows came with the change)
        self.moved = False

    def ready(self) -> bool:
        """Whether a window should be opened now (called between transactions)."""
        return self.signals is not None and self.snapshots.active

    def open(self) -> None:
        """Open the next chunk's window: low watermark, chunk query, high watermark. A table
        that cannot be read in chunks (gone, no primary key, a condition the server rejects)
        is skipped with an error in the log; a lost connection raises SourceError."""
        assert self.signals is not None
        chunk = self.snapshots.next_chunk()
        if chunk is None:
            return
        db, table = chunk.table.split(".", 1)
        try:
            version = self.reader.version(db, table)
            self.signals.watermark(chunk.window, low=True)
            after = None if chunk.after is None else key_from_json(chunk.after)
            read = self.reader.read(version, after, chunk.condition, chunk.size)
        except SignalError as e:
            self.snapshots.abandon()
            self.snapshots.reject_current(str(e))
            self.moved = True
            return
        except BaseException:
            self.snapshots.abandon()
            raise
        if chunk.table not in self._estimates:
            estimate = self._estimates[chunk.table] = self.reader.estimate(db, table)
            self._began[chunk.table] = (time.monotonic(), self.snapshots.rows)
            self.reporter.snapshot_progress(chunk.table, self.snapshots.rows, estimate)
            log.info(
                "incremental snapshot %s: reading %s%s%s (about %s rows)",
                chunk.request,
                chunk.table,
                f" WHERE {chunk.condition}" if chunk.condition else "",
                f", resuming after {self.snapshots.rows:,} rows" if chunk.after else "",
                f"{estimate:,}",
            )
        cursor = key_to_json(read.keys[-1]) if read.keys else None
        self.snapshots.chunk_read(chunk.window, version.schema, read.rows, cursor)
        self.signals.watermark(chunk.window, low=False)

    def begin(self) -> None:
        self._pending.clear()

    def row(self, values: dict[str, Any]) -> None:
        """A row inserted into the signal table in the open transaction."""
        try:
            sig = SignalTable.signal(values)
        except SignalError as e:
            log.error("ignoring a signal: %s", e)
            return
        if sig is not None:
            self._pending.append(sig)

    def commit(
        self, reads: Callable[[list[RowChange]], None], source: Callable[[TableSchema], Any]
    ) -> None:
        """The open transaction committed: apply its signals; a high watermark's rows go to
        ``reads`` (``source(schema)``: the source block of a row of ``schema``)."""
        if not self._pending:
            return
        signals, self._pending = self._pending, []
        snapshots = self.snapshots
        for sig in signals:
            if isinstance(sig, Watermark):
                if sig.low:
                    snapshots.low_watermark(sig.window)  # not in the state: nothing moved
                    continue
                current, before = snapshots.current, snapshots.rows
                rows = snapshots.high_watermark(sig.window, source, int(time.time() * 1000))
                if rows is None or current is None:
                    continue
                reads(rows)
                self.moved = True
                self._progress(current[1], before + len(rows), snapshots.current != current)
                continue
            try:
                snapshots.signal(sig)
                self.moved = True
            except SignalError as e:
                log.error("ignoring a signal: %s", e)

    def _progress(self, table: str, count: int, done: bool) -> None:
        """Rows written of ``table`` (``done``: all of them) to the reporter, and to the log
        every PROGRESS_EVERY_S with the rate and the time left, as the initial snapshot does."""
        estimate = self._estimates.get(table, -1)
        self.reporter.snapshot_progress(table, count, count if done else estimate)
        now = time.monotonic()
        if done or now - self._logged < PROGRESS_EVERY_S:
            return
        self._logged = now
        since, then = self._began.get(table, (now, count))
        rate = (count - then) / max(now - since, 1e-3)
        left = (
            f", about {(estimate - count) / rate:.0f} s left"
            if rate > 0 and count < estimate
            else ""
        )
        log.info(
            "incremental snapshot: %s %s of about %s rows (%s rows/s%s)",
            table,
            f"{count:,}",
            f"{max(estimate, 0):,}",
            f"{rate:,.0f}",
            left,
        )

    def close(self) -> None:
        self.reader.close()
        if self.signals is not None:
            self.signals.close()


def request_snapshot(
    config: MySqlSourceConfig, pipeline: str, tables: list[str], condition: str | None
) -> str:
    """Ask the running source of ``pipeline`` for an incremental snapshot of ``tables``
    ("database.table", captured by ``source.tables``), restricted by the SQL ``condition`` when
    given: an execute-snapshot row in the signal table, which the source reads from the binlog.
    Returns the request's id once the row is committed.

    Checked first, nothing sent when a check fails: a signal table is configured and every table
    is captured (ConfigError), exists with a primary key, and the server accepts the chunk query
    with ``condition`` (run with LIMIT 0 in a read-only transaction; SourceError with the
    server's words).
    """
    if config.signal_table is None:
        raise ConfigError(
            [
                f"pipeline {pipeline!r}: the mysql source reads snapshot requests from its signal "
                "table: create one and set source.signal_table (docs/source-mysql.md)"
            ]
        )
    server = Server(config)
    captured = Tables(
        server, config.tables, SchemaCache(pipeline), signal_table=config.signal_table
    )
    for t in tables:
        db, _, table = t.partition(".")
        if not table or not captured.captured(db, table):
            raise ConfigError(
                [
                    f"table {t!r} is not captured by pipeline {pipeline!r} (its tables: "
                    f"{', '.join(config.tables)}): add it to source.tables and restart the "
                    "daemon (a table added later is backfilled by itself)"
                ]
            )
    reader = ChunkReader(server, captured)
    signals = SignalTable(server, config.signal_table)
    try:
        server.catalog()
        for t in tables:
            db, _, table = t.partition(".")
            try:
                reader.read(reader.version(db, table), None, condition, 0)
            except SignalError as e:
                raise SourceError(f"{e}; nothing was sent", retryable=False) from None
        return signals.request(tables, condition)
    finally:
        signals.close()
        reader.close()
        server.close()
