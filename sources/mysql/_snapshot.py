"""The consistent initial snapshot: every captured table read inside one consistent read, at a
binlog position streaming then starts from; an interrupted snapshot resumes after the last key
written (see the position format in sources/mysql/_source.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pymysql

import cdc
from cdc.errors import SourceError
from cdc.model import ChangeBatch, Position, Reporter, RowChange, TableSchema, TxBoundary
from cdc.model import snapshot_event_id as snapshot_event_id  # own line: fewer merge conflicts
from cdc.sources.mysql._schema import TableVersion
from cdc.sources.mysql._server import Server, quote
from cdc.sources.mysql._tables import Tables

log = logging.getLogger(__name__)
# a snapshot row: (version, row, first in its table, last in its table, key to resume after)
SnapshotItem = tuple[TableVersion, tuple[Any, ...], bool, bool, list[Any] | None]


class Snapshot:
    """One snapshot of the captured tables for a source: ``run`` yields its op=r batches."""

    def __init__(
        self,
        server: Server,
        tables: Tables,
        *,
        prefix: str,
        connector: str,
        max_events: int,
        stopping: Callable[[], bool],
        reporter: Reporter,
    ) -> None:
        self.server = server
        self.tables = tables
        self.prefix = prefix
        self.connector = connector
        self.max_events = max_events
        self.stopping = stopping  # the source was asked to stop: end after the batch yielded
        self.reporter = reporter  # gets each table's progress
        # the read time of the batch under way, and its rows' shared source blocks ("true")
        self._now_ms = int(time.time() * 1000)
        self._shared: dict[int, dict[str, Any]] = {}

    def run(self, running: Position | None) -> Generator[ChangeBatch, None, Position]:
        """Read every captured table inside one consistent read; yield op=r batches.

        Returns the position to stream from. ``running`` is the position of an interrupted
        earlier snapshot: streaming starts from there (not from this snapshot's point) so that
        rows deleted or changed between the two attempts are not missed.

        Every batch but the last has ``snapshot=True``; the last one carries the position to
        stream from and has it False.
        """
        conn = self.server.connect()
        try:
            cur = conn.cursor()
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            if self.server.is_mariadb:
                # MariaDB reports the binlog position matching a consistent snapshot: no lock.
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
                status = {str(k).lower(): str(v) for k, v in cur.fetchall()}
                file, pos = status["binlog_snapshot_file"], int(status["binlog_snapshot_position"])
                cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
                row = cur.fetchone()
                gtid = str(row[0]) if row and row[0] is not None else None
            else:
                # MySQL has no such status: hold a global read lock for the moment it takes.
                cur.execute("FLUSH TABLES WITH READ LOCK")
                try:
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    cur.execute(self.server.status_sql)
                    row = cur.fetchone()
                    file, pos = str(row[0]), int(row[1])
                    gtid = self.server.executed_gtids(cur)
                finally:
                    cur.execute("UNLOCK TABLES")
            here: Position = {"file": file, "pos": pos, "gtid": gtid}
            stream_from: Position = (
                {"file": running["file"], "pos": running["pos"], "gtid": running.get("gtid")}
                if running
                else here
            )
            # Tables done and the last key written of the one under way, from the interrupted
            # attempt: the rest is read at this newer snapshot (changes in between are streamed
            # from the first attempt's position).
            done: list[str] = list(running.get("done") or []) if running else []
            resume: dict[str, list[Any]] = dict(running.get("after") or {}) if running else {}
            # rows written per table, carried across resumes; a table read again from its start
            # (no resumable key) counts from its start
            carried = dict(running.get("rows") or {}) if running else {}
            counts = {t: int(r) for t, r in carried.items() if t in done or t in resume}
            resumed = bool(running and (done or resume or any(carried.values())))
            # ids: the snapshot is named by where streaming starts, the same in every attempt
            scope = f"{stream_from['file']}:{stream_from['pos']}"
            cur.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES "
                "WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME"
            )
            listed = [(str(d), str(t), r) for d, t, r in cur.fetchall()]
            tables = [
                (d, t)
                for d, t, _ in listed
                if self.tables.captured(d, t) and f"{d}.{t}" not in done
            ]
            # snapshot progress for metrics and `cdc status`: rows read per table of an estimate
            progress_rows = {f"{d}.{t}": counts.get(f"{d}.{t}", 0) for d, t in tables}
            for d, t, r in listed:
                if f"{d}.{t}" in progress_rows:
                    self.reporter.snapshot_progress(
                        f"{d}.{t}", progress_rows[f"{d}.{t}"], -1 if r is None else int(r)
                    )
            log.info(
                "snapshot of %d tables at %s:%s started%s",
                len(tables),
                file,
                pos,
                " (resuming after the last key written)" if running and (done or resume) else "",
            )
            events: list[RowChange | TxBoundary] = []
            n = 0
            pending: SnapshotItem | None = None
            pending_id = ""
            after: dict[str, list[Any]] = {}
            read_here: dict[str, int] = {}  # rows of each table read in this attempt
            for item in self._rows(cur, conn, tables, resume):
                qualified = item[0].schema.qualified
                progress_rows[qualified] = progress_rows.get(qualified, 0) + 1
                ordinal = read_here[qualified] = read_here.get(qualified, 0) + 1
                if pending is not None:
                    events.append(
                        self._event(pending, n == 1 and not resumed, False, here, pending_id)
                    )
                    name, key = pending[0].schema.qualified, pending[4]
                    counts[name] = counts.get(name, 0) + 1
                    if pending[3]:
                        done.append(name)
                        after = {}
                    else:  # without a resumable key the table is read again from its start
                        after = {name: key} if key is not None else {}
                    if len(events) >= self.max_events:
                        for table_name, rows in progress_rows.items():
                            self.reporter.snapshot_progress(table_name, rows, None)
                        progress: Position = {
                            **stream_from,
                            "snapshot": "running",
                            "done": list(done),
                            "after": after,
                            "rows": dict(counts),
                        }
                        yield ChangeBatch(events, progress, snapshot=True)
                        events = []
                        self._now_ms, self._shared = int(time.time() * 1000), {}
                        if self.stopping():
                            return stream_from
                pending = item
                pending_id = self._event_id(item, scope, here, ordinal)
                n += 1
            if pending is not None:
                events.append(self._event(pending, n == 1 and not resumed, True, here, pending_id))
                name = pending[0].schema.qualified
                counts[name] = counts.get(name, 0) + 1
            cur.execute("COMMIT")
            for table_name, rows in progress_rows.items():
                self.reporter.snapshot_progress(table_name, rows, rows)
            yield ChangeBatch(events, stream_from)
            log.info(
                "snapshot finished: %d rows; streaming from %s:%s",
                sum(counts.values()),
                stream_from["file"],
                stream_from["pos"],
            )
            return stream_from
        finally:
            conn.close()

    def _rows(
        self,
        cur: Any,
        conn: pymysql.Connection[Any],
        tables: list[tuple[str, str]],
        resume: dict[str, list[Any]],
    ) -> Iterator[SnapshotItem]:
        """(version, row, first in its table, last in its table, resumable key) for every
        captured row; a table in ``resume`` starts after the key it maps to."""
        for db, table in tables:
            version = self.tables.catalog_version(cur, db, table)
            prev: tuple[tuple[Any, ...], list[Any] | None] | None = None
            first = f"{db}.{table}" not in resume  # a resumed table had its first row before
            for row in self._read_table(conn, db, table, version, resume.get(f"{db}.{table}")):
                if prev is not None:
                    yield version, prev[0], first, False, prev[1]
                    first = False
                prev = row
            if prev is not None:
                yield version, prev[0], first, True, prev[1]

    @staticmethod
    def _event_id(item: SnapshotItem, scope: str, here: Position, ordinal: int) -> str:
        """Unique in the snapshot and the same when a row is read again after a resume: from
        the primary key; without one, from the row's place in its table at this attempt's
        binlog position (an unchanged binlog position means unchanged rows, read in the same
        clustered-index order; a changed one gives new ids, so no distinct row takes an id a
        de-duplicating sink has seen)."""
        version, row = item[0], item[1]
        schema = version.schema
        if len(schema.key) == 1 and type(k := row[schema.key[0]]) is int:
            return f"s:{scope}:{schema.qualified}:{k}"  # snapshot_event_id's plain form of it
        if schema.key:
            return snapshot_event_id(scope, schema.qualified, [row[k] for k in schema.key])
        return f"s:{scope}:{schema.qualified}:@{here['file']}:{here['pos']}:{ordinal}"

    def _event(
        self,
        item: SnapshotItem,
        first: bool,
        last: bool,
        here: Position,
        event_id: str,
    ) -> RowChange:
        version, row, first_in, last_in, _ = item
        # Debezium's markers: first/last of the whole snapshot, then of each table
        if last:  # also when it is the only row: "last" is what tells the snapshot ended
            marker = "last"
        elif first:
            marker = "first"
        elif last_in:
            marker = "last_in_data_collection"
        elif first_in:
            marker = "first_in_data_collection"
        else:
            marker = "true"
        schema = version.schema
        if marker == "true":
            # one block for a batch's plain rows of a table: nothing changes blocks after this
            # (by id: the batch's events keep their schema alive)
            src = self._shared.get(id(schema))
            if src is None:
                src = self._shared[id(schema)] = self._source(schema, marker, here)
        else:
            src = self._source(schema, marker, here)
        return RowChange(schema, "r", None, row, src, src["ts_ms"], event_id)

    def _source(self, table: TableSchema, marker: str, here: Position) -> dict[str, Any]:
        now_ms = self._now_ms
        return {
            "version": cdc.__version__,
            "connector": self.connector,
            "name": self.prefix,
            "ts_ms": now_ms,
            "snapshot": marker,
            "db": table.namespace,
            "sequence": None,
            "ts_us": now_ms * 1000,
            "ts_ns": now_ms * 1_000_000,
            "table": table.table,
            "server_id": self.server.server_id,
            "gtid": None,
            "file": here["file"],
            "pos": here["pos"],
            "row": 0,
            "thread": None,
            "query": None,
        }

    def _read_table(
        self,
        conn: pymysql.Connection[Any],
        db: str,
        table: str,
        version: TableVersion,
        start_after: list[Any] | None = None,
    ) -> Iterator[tuple[tuple[Any, ...], list[Any] | None]]:
        """(row, key) of ``db.table`` in primary-key order, ``snapshot_chunk_rows`` at a time,
        after ``start_after`` when given. ``key`` is the row's primary key as JSON can hold it
        (ints and strings), or None (no key, or other key types): where a resumed snapshot
        starts again."""
        schema = version.schema
        # only the columns with a converter are touched: the others are SELECT's values as is
        convs = [(i, conv) for i, conv in enumerate(version.from_select) if conv is not None]
        width = len(version.from_select)
        cols = ", ".join(quote(c.name) for c in schema.columns)
        source = f"{quote(db)}.{quote(table)}"

        def convert(raw: tuple[Any, ...]) -> tuple[Any, ...]:
            try:
                if len(raw) != width:
                    raise ValueError(f"{len(raw)} values for {width} columns")
                row = list(raw)
                for i, conv in convs:
                    v = row[i]
                    if v is not None:
                        row[i] = conv(v)
                return tuple(row)
            except Exception as e:
                key = [raw[i] for i in schema.key]
                where = f"the snapshot (row with key {key!r})" if key else "the snapshot"
                failure = version.conversion_failure(list(raw), False, where)
                raise SourceError(failure, retryable=False) from e

        if not schema.key:
            cur = conn.cursor(pymysql.cursors.SSCursor)
            try:
                cur.execute(f"SELECT {cols} FROM {source}")
                for raw in cur:
                    yield convert(raw), None
            finally:
                cur.close()
            return
        keys = [schema.columns[i].name for i in schema.key]
        order = ", ".join(quote(k) for k in keys)
        limit = self.server.config.snapshot_chunk_rows
        # (k1 > ?) OR (k1 = ? AND k2 > ?) OR ...: a range the primary key index serves
        terms = []
        for j in range(len(keys)):
            eq = [f"{quote(k)} = %s" for k in keys[:j]]
            terms.append("(" + " AND ".join([*eq, f"{quote(keys[j])} > %s"]) + ")")
        after_sql = (
            f"SELECT {cols} FROM {source} WHERE {' OR '.join(terms)} ORDER BY {order} LIMIT {limit}"
        )
        first_sql = f"SELECT {cols} FROM {source} ORDER BY {order} LIMIT {limit}"
        last: list[Any] | None = list(start_after) if start_after else None

        one = schema.key[0] if len(schema.key) == 1 else None

        def resumable(raw: tuple[Any, ...]) -> list[Any] | None:
            if one is not None and type(k := raw[one]) in (int, str):
                return [k]
            key = [raw[i] for i in schema.key]
            ok = all(isinstance(v, int | str) and not isinstance(v, bool) for v in key)
            return key if ok else None

        cur = conn.cursor()
        try:
            while True:
                if last is None:
                    cur.execute(first_sql)
                else:
                    params: list[Any] = []
                    for j in range(len(keys)):
                        params += [*last[:j], last[j]]
                    cur.execute(after_sql, params)
                rows = cur.fetchall()
                for raw in rows:
                    yield convert(raw), resumable(raw)
                if len(rows) < limit:
                    return
                last = [rows[-1][i] for i in schema.key]
        finally:
            cur.close()
