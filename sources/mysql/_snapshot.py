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
from cdc.sources.mysql import _snapshot_read
from cdc.sources.mysql._schema import TableVersion
from cdc.sources.mysql._server import Server, quote
from cdc.sources.mysql._tables import Tables

_TABLE_DEF_CHANGED = 1412  # ER_TABLE_DEF_CHANGED: altered after the consistent snapshot began


def altered_meanwhile(name: str, chunks: Iterator[Any]) -> Iterator[Any]:
    """``chunks`` of the table ``name``; the server's refusal to read a table altered (or
    truncated) since the snapshot's consistent read began becomes a retryable error that says
    so: the pipeline restarts, and the snapshot goes on from the last row written, under a new
    consistent read that sees the table as it is now."""
    try:
        yield from chunks
    except pymysql.err.OperationalError as e:
        if not e.args or e.args[0] != _TABLE_DEF_CHANGED:
            raise
        raise SourceError(
            f"table {name} was altered or truncated after the snapshot began, so its consistent "
            f"read cannot see it (the server's error {_TABLE_DEF_CHANGED}: {e.args[-1]}); the "
            "pipeline restarts and the snapshot goes on after the last row written",
            retryable=True,
        ) from e


log = logging.getLogger(__name__)
# the row read last: (version, row, event id, first in its table, its resumable key's function)
Held = tuple[
    TableVersion, tuple[Any, ...], str, bool, Callable[[tuple[Any, ...]], list[Any] | None]
]


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
        # read rows with the compiled decoder (True), the reference (False), or as the process
        # chose (None: ``_snapshot_read.PATH``)
        self.native: bool | None = None

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
            # A chunk's query is sent before the previous chunk is written (``_chunks``): while a
            # slow sink holds the snapshot up, the server may wait to send its rows; it waits
            # up to net_write_timeout (default 60 s) before it drops the query.
            cur.execute("SET SESSION net_write_timeout = 3600")
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
            # The last row read waits for the next one (or the end), which decides its marker.
            held: Held | None = None
            first = not resumed  # the next event is the snapshot's first
            after: dict[str, list[Any]] = {}
            here_id = f"{here['file']}:{here['pos']}"

            def add(
                version: TableVersion,
                rows: list[tuple[Any, ...]],
                ids: list[str],
                first_in: bool,
                last_in: bool,
                key_of: Callable[[tuple[Any, ...]], list[Any] | None],
            ) -> Generator[ChangeBatch, None, bool]:
                """Append the events of ``rows`` of one table, none the snapshot's last (each
                has a row after it); ``first_in``: the first is its table's first, ``last_in``:
                the last is its table's last. Yield each batch that fills; True: stop (asked
                to, after a batch)."""
                nonlocal first, after
                schema = version.schema
                name = schema.qualified
                i, n = 0, len(rows)
                while i < n:
                    take = min(n - i, self.max_events - len(events))
                    # one block for a batch's plain rows of a table: nothing changes blocks
                    # after this (by id: the batch's events keep their schema alive)
                    src = self._shared.get(id(schema))
                    if src is None:
                        src = self._shared[id(schema)] = self._source(schema, "true", here)
                    ts_ms = src["ts_ms"]
                    at = len(events)
                    events.extend(
                        [
                            RowChange(schema, "r", None, row, src, ts_ms, eid)
                            for row, eid in zip(rows[i : i + take], ids[i : i + take], strict=True)
                        ]
                    )
                    # Debezium's markers, the first that applies: the snapshot's first row,
                    # its table's last, its table's first
                    marks: dict[int, str] = {}
                    if first_in and i == 0:
                        marks[at] = "first_in_data_collection"
                    if last_in and i + take == n:
                        marks[len(events) - 1] = "last_in_data_collection"
                    if first:
                        marks[at] = "first"
                        first = False
                    for j, marker in marks.items():
                        ev = events[j]
                        assert isinstance(ev, RowChange)
                        ev.source = self._source(schema, marker, here)
                    counts[name] = counts.get(name, 0) + take
                    i += take
                    if i == n and last_in:
                        done.append(name)
                        after = {}
                    elif len(events) >= self.max_events:
                        # without a resumable key the table is read again from its start
                        key = key_of(rows[i - 1])
                        after = {name: key} if key is not None else {}
                    if len(events) >= self.max_events:
                        for table_name, read in progress_rows.items():
                            self.reporter.snapshot_progress(table_name, read, None)
                        progress: Position = {
                            **stream_from,
                            "snapshot": "running",
                            "done": list(done),
                            "after": after,
                            "rows": dict(counts),
                        }
                        yield ChangeBatch(events[:], progress, snapshot=True)
                        events.clear()
                        self._now_ms, self._shared = int(time.time() * 1000), {}
                        if self.stopping():
                            return True
                return False

            _snapshot_read.log_choice()
            native = _snapshot_read.PATH == _snapshot_read.NATIVE
            if self.native is not None:
                native = self.native
            for db, table in tables:
                version = self.tables.catalog_version(cur, db, table)
                name = version.schema.qualified
                reader = _snapshot_read.Reader(version, scope, here_id, native)
                key_of = _snapshot_read.resumable_key(version)
                first_in = name not in resume  # a resumed table had its first row before
                ordinal = 1  # the place in its table of the chunk's first row, this attempt
                for rows, raw_ids in altered_meanwhile(
                    name, self._chunks(conn, cur, reader, resume.get(name))
                ):
                    ids = reader.ids(rows, raw_ids, ordinal)
                    ordinal += len(rows)
                    progress_rows[name] = progress_rows.get(name, 0) + len(rows)
                    if held is not None:  # a row follows it: not the snapshot's last
                        v, row, eid, held_first, held_key = held
                        last_in = v is not version
                        if (yield from add(v, [row], [eid], held_first, last_in, held_key)):
                            return stream_from
                    if (yield from add(version, rows[:-1], ids[:-1], first_in, False, key_of)):
                        return stream_from
                    held = (version, rows[-1], ids[-1], first_in and len(rows) == 1, key_of)
                    first_in = False
            if held is not None:
                # the snapshot's last row: "last" also when it is the only one
                v, row, eid = held[0], held[1], held[2]
                src = self._source(v.schema, "last", here)
                events.append(RowChange(v.schema, "r", None, row, src, src["ts_ms"], eid))
                counts[v.schema.qualified] = counts.get(v.schema.qualified, 0) + 1
            cur.execute("COMMIT")
            for table_name, read in progress_rows.items():
                self.reporter.snapshot_progress(table_name, read, read)
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

    def _chunks(
        self,
        conn: pymysql.Connection[Any],
        cur: Any,
        reader: _snapshot_read.Reader,
        start_after: list[Any] | None = None,
    ) -> Iterator[tuple[list[tuple[Any, ...]], list[str | None]]]:
        """(rows, ids) of the reader's table in primary-key order, ``snapshot_chunk_rows`` at a
        time, after the key ``start_after`` when given; never an empty chunk. ``ids``: see
        ``Reader.chunk``."""
        schema = reader.version.schema
        cols = ", ".join(quote(c.name) for c in schema.columns)
        source = f"{quote(schema.namespace)}.{quote(schema.table)}"
        limit = self.server.config.snapshot_chunk_rows
        if not schema.key:
            # one unbuffered read of the whole table, taken a chunk at a time
            rows, ids, _, more = reader.chunk(conn, f"SELECT {cols} FROM {source}", limit)
            while True:
                if rows:
                    yield rows, ids
                if not more:
                    return
                rows, ids, _, more = reader.more(conn, limit)
        keys = [schema.columns[i].name for i in schema.key]
        order = ", ".join(quote(k) for k in keys)
        # (k1 > ?) OR (k1 = ? AND k2 > ?) OR ...: a range the primary key index serves
        terms = []
        for j in range(len(keys)):
            eq = [f"{quote(k)} = %s" for k in keys[:j]]
            terms.append("(" + " AND ".join([*eq, f"{quote(keys[j])} > %s"]) + ")")
        after_sql = (
            f"SELECT {cols} FROM {source} WHERE {' OR '.join(terms)} ORDER BY {order} LIMIT {limit}"
        )
        first_sql = f"SELECT {cols} FROM {source} ORDER BY {order} LIMIT {limit}"

        def query(last: list[Any] | None) -> str:
            if last is None:
                return first_sql
            params: list[Any] = []
            for j in range(len(keys)):
                params += [*last[:j], last[j]]
            return str(cur.mogrify(after_sql, params))

        reader.send(conn, query(list(start_after) if start_after else None))
        while True:
            rows, ids, last_row, _ = reader.chunk(conn, None)
            if len(rows) < limit or last_row is None:
                if rows:
                    yield rows, ids
                return
            # The next chunk's query goes before this chunk is made into events and written:
            # the server reads and sends it meanwhile (into the socket's buffers; see
            # net_write_timeout in ``run``).
            reader.send(conn, query([last_row[i] for i in schema.key]))
            yield rows, ids
