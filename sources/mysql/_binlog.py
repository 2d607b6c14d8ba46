"""The binlog stream: python-mysql-replication's reader as a replica, its events made into row
changes and transactions, the position (file, pos, GTID state) after each, the errors that stop it
(see the position format and the delivery guarantee in sources/mysql/_source.py)."""

from __future__ import annotations

import contextlib
import logging
import re
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    NotImplementedEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.gtid import Gtid, GtidSet
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

import cdc
from cdc.assembler import TransactionAssembler
from cdc.errors import PositionLost, SourceError
from cdc.model import ChangeBatch, Position
from cdc.sources.mysql import _decoders, _json, _rows
from cdc.sources.mysql._incremental import Windows
from cdc.sources.mysql._schema import TableVersion
from cdc.sources.mysql._server import Server, format_gtid_state, parse_gtid_state
from cdc.sources.mysql._tables import Tables

log = logging.getLogger(__name__)
_json.install()  # MySQL's binary JSON as the text SELECT gives, not lossy Python values
_decoders.install()  # TIME, DATE, DATETIME from the binlog as the server stores them

_FL_STANDALONE = 1  # MariaDB GTID event flag: the group is one statement without COMMIT
_LOST_POSITION = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG
# Compressed events the binlog reader cannot decode, by event type -> the setting that writes them:
# MySQL's Transaction_payload, MariaDB's compressed query and rows events.
_COMPRESSED = {0x28: "binlog_transaction_compression"} | {
    code: "log_bin_compress" for code in range(0xA5, 0xAC)
}
POSITION_INTERVAL_S = 10.0  # how often an idle stream records that the binlog moved on
READ_TIMEOUT_S = 30  # no byte (not even a heartbeat) for this long: the connection is dead
# what the binlog library raises on bytes it cannot decode (UnicodeDecodeError is a ValueError)
_UNDECODABLE = (ValueError, KeyError, IndexError, NotImplementedError, struct.error)

_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$\u0080-\uffff]+)"
# TRUNCATE [TABLE] [db.]table, as the server logs the statement (after leading comments)
_TRUNCATE = re.compile(
    rf"\s*TRUNCATE\s+(?:TABLE\s+)?({_IDENT})(?:\s*\.\s*({_IDENT}))?\s*;?\s*$", re.I | re.S
)
_COMMENT = re.compile(r"\s*/\*.*?\*/", re.S)


def truncated_table(query: str, default_db: str) -> tuple[str, str] | None:
    """The (database, table) a logged ``TRUNCATE`` statement empties, or None for another
    statement (``default_db``: the database the statement ran in, for an unqualified name)."""
    while (m := _COMMENT.match(query)) is not None:
        query = query[m.end() :]
    m = _TRUNCATE.match(query)
    if m is None:
        return None

    def name(ident: str) -> str:
        return ident[1:-1].replace("``", "`") if ident.startswith("`") else ident

    if m.group(2) is None:
        return (default_db, name(m.group(1))) if default_db else None
    return name(m.group(1)), name(m.group(2))


def unread(conn: Any) -> bool:
    """Whether the pymysql connection ``conn`` holds bytes not read yet, in its buffered reader
    or in the socket, found without waiting: the binlog has more to give right now. The latency
    rule asks this (a batch is written as soon as nothing more is buffered); pymysql has no
    public way to tell, hence its reader and socket."""
    sock, rfile = getattr(conn, "_sock", None), getattr(conn, "_rfile", None)
    if sock is None or rfile is None:
        return False
    try:
        timeout = sock.gettimeout()
        sock.settimeout(0)  # peek gives what is buffered, else reads the socket without waiting
        try:
            return bool(rfile.peek(1))
        finally:
            sock.settimeout(timeout)  # the same value: pymysql's cached timeout stays true
    except (OSError, ValueError):  # ValueError: its reader was closed
        return False  # the next read meets the same error and reports it


class BinlogStream:
    """One connection to the binlog as a replica: ``run`` yields its batches until stopped or
    failed. ``reader`` is the library's reader while connected (None before)."""

    def __init__(
        self,
        server: Server,
        tables: Tables,
        *,
        prefix: str,
        connector: str,
        tx_metadata: bool,
        max_events: int,
        max_wait_s: float,
        stopping: Callable[[], bool],
        windows: Windows | None = None,
        event_details: bool = True,
    ) -> None:
        self.server = server
        self.tables = tables
        self.prefix = prefix
        self.connector = connector
        self.tx_metadata = tx_metadata
        self.max_events = max_events
        self.max_wait = max_wait_s
        self.stopping = stopping  # the source was asked to stop: yield what is gathered, end
        self.windows = windows  # snapshots while streaming (cdc.incremental), if any
        # False: the rows of one event share its source block, no event ids (PipelineContext)
        self.event_details = event_details
        self.reader: BinLogStreamReader | None = None

    def close(self) -> None:
        if self.reader is not None:
            with contextlib.suppress(Exception):
                self.reader.close()
            self.reader = None

    def run(self, start: Position) -> Iterator[ChangeBatch]:
        gtid_mode = self.server.gtid_mode()
        mysql_set = (
            GtidSet(start.get("gtid") or "") if gtid_mode and not self.server.is_mariadb else None
        )
        # An empty GTID position would make the server send its binlog from the very beginning:
        # until a transaction has a GTID here, resume from file + position.
        by_gtid = gtid_mode and bool(start.get("gtid"))
        connects = 0
        stream: Any = None  # the binlog connection (the library also opens a catalog one)

        def connect(**kw: Any) -> Any:
            nonlocal connects, stream
            if "db" in kw:  # the library still uses pymysql's deprecated name
                kw["database"] = kw.pop("db")
            if kw.get("database") == "information_schema":
                return pymysql.connect(**kw)
            if connects:
                raise SourceError(
                    "the binlog connection was lost; restarting from the last durable position"
                )
            connects += 1
            stream = pymysql.connect(**kw)
            return stream

        heartbeat = max(0.05, min(self.max_wait, 1.0))
        # The server sends heartbeats when idle, so a silent socket means a dead connection.
        settings = {**self.server.settings(), "read_timeout": READ_TIMEOUT_S}
        reader = self.reader = BinLogStreamReader(
            settings,
            server_id=self.server.config.server_id,
            resume_stream=True,
            blocking=True,
            log_file=start["file"],
            log_pos=int(start["pos"]),
            auto_position=start.get("gtid") if by_gtid else None,
            is_mariadb=by_gtid and self.server.is_mariadb,
            slave_heartbeat=heartbeat,
            pymysql_wrapper=connect,
            only_events=[
                MariadbGtidEvent,
                GtidEvent,
                QueryEvent,
                XidEvent,
                RotateEvent,
                TableMapEvent,
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                HeartbeatLogEvent,
                NotImplementedEvent,  # to see what it must not silently skip
            ],
            filter_non_implemented_events=False,
            enable_logging=False,
        )
        log.info(
            "streaming the binlog from %s (%s)",
            f"GTID {start.get('gtid')}" if by_gtid else f"{start['file']}:{start['pos']}",
            f"server {self.server.config.host}:{self.server.config.port}",
        )
        prefix = self.prefix
        version_str = cdc.__version__
        asm = TransactionAssembler(
            tx_metadata=self.tx_metadata, max_events=self.max_events, max_wait_s=self.max_wait
        )

        commit_file, commit_pos = str(start["file"]), int(start["pos"])
        gtid_state = parse_gtid_state(start.get("gtid")) if self.server.is_mariadb else {}
        pending_skip = int(start.get("skip", 0))  # for the first transaction only
        cur_file, end_pos = commit_file, commit_pos
        details = self.event_details
        tables: dict[int, TableVersion | None] = {}
        # the newest version of each captured table seen in a table map (a TRUNCATE's event
        # carries it; one not seen since the start is read from the catalog)
        last_versions: dict[tuple[str, str], TableVersion] = {}
        decoders = _rows.RowsDecoders()  # the rows decoder of each table map: _rows.py
        table_decoders: dict[int, _rows.RowsDecoder | None] = {}
        windows = self.windows
        signals = windows.signals if windows is not None else None
        signal_ids: set[int] = set()  # table ids of the signal table (never captured)

        # the open group (what the position and the GTID state need beyond the assembler's)
        standalone = False
        tx_id = ""
        txn_gtid: str | None = None
        txn_domain = -1

        def position() -> Position:
            gtid = format_gtid_state(gtid_state) if mysql_set is None else str(mysql_set)
            p: Position = {"file": commit_file, "pos": commit_pos, "gtid": gtid or None}
            if asm.in_txn and asm.seq > 0:
                p["skip"] = asm.seq
            if windows is not None:
                p["incremental"] = windows.snapshots.state
            return p

        def begin_group(gtid: str | None, domain: int) -> None:
            nonlocal pending_skip, tx_id, txn_gtid, txn_domain
            txn_gtid, txn_domain = gtid, domain
            tx_id = gtid or f"{cur_file}:{end_pos}"
            asm.begin(tx_id, begin_event_id=f"{tx_id}:begin", skip=pending_skip)
            pending_skip = 0
            if windows is not None:
                windows.begin()

        def commit(end: int) -> None:
            # The position and GTID state move on even for a commit outside a group (as before)
            nonlocal commit_file, commit_pos, standalone
            asm.commit(f"{tx_id}:end")
            commit_file, commit_pos = cur_file, end
            if txn_gtid is not None and txn_domain >= 0:
                gtid_state[txn_domain] = txn_gtid
            elif txn_gtid is not None and mysql_set is not None:
                mysql_set.merge_gtid(Gtid(txn_gtid))
            standalone = False
            if asm.wants_boundary:
                asm.boundary(position())
            if windows is not None:
                # its signals; a chunk's rows go after its END, before the next transaction
                windows.commit(asm.reads, read_source)

        def truncate(name: tuple[str, str], ts: int, server_id: int, at: int) -> None:
            """A TRUNCATE of a captured table: an event ``t`` (Debezium's, without rows)."""
            version = last_versions.get(name)
            if version is None:
                conn = self.server.connect()
                try:
                    with conn.cursor() as cur:
                        cur.execute(
                            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                            "AND TABLE_NAME = %s",
                            name,
                        )
                        if cur.fetchone() is not None:
                            version = self.tables.catalog_version(cur, *name)
                finally:
                    conn.close()
                if version is None:
                    log.warning(
                        "TRUNCATE of %s.%s at %s:%s not sent: the table is gone, so its "
                        "columns are unknown",
                        *name,
                        cur_file,
                        at,
                    )
                    return
            schema = version.schema
            src = streamed_block(schema, ts, server_id, at)
            asm.change(schema, "t", None, None, src, ts * 1000, f"{cur_file}:{at}:t")

        def streamed_block(schema: Any, ts: int, server_id: int, at: int) -> dict[str, Any]:
            """The source block of a change read from the binlog event at ``at`` (its row 0)."""
            return {
                "version": version_str,
                "connector": self.connector,
                "name": prefix,
                "ts_ms": ts * 1000,
                "snapshot": "false",
                "db": schema.namespace,
                "sequence": None,
                "ts_us": ts * 1_000_000,
                "ts_ns": ts * 1_000_000_000,
                "table": schema.table,
                "server_id": server_id,
                "gtid": txn_gtid,
                "file": cur_file,
                "pos": at,
                "row": 0,
                "thread": None,
                "query": None,
            }

        def observe(schema: Any, row: tuple[Any, ...]) -> None:
            assert windows is not None
            windows.snapshots.observe(schema.qualified, tuple(row[k] for k in schema.key))

        def read_source(schema: Any) -> dict[str, Any]:
            """The source block of an incremental snapshot row: where the binlog stands."""
            now_ms = int(time.time() * 1000)
            return {
                "version": version_str,
                "connector": self.connector,
                "name": prefix,
                "ts_ms": now_ms,
                "snapshot": "incremental",
                "db": schema.namespace,
                "sequence": None,
                "ts_us": now_ms * 1000,
                "ts_ns": now_ms * 1_000_000,
                "table": schema.table,
                "server_id": self.server.server_id,
                "gtid": None,
                "file": commit_file,
                "pos": commit_pos,
                "row": 0,
                "thread": None,
                "query": None,
            }

        if windows is not None and "incremental" not in start:
            # the first position with the snapshotted tables (all captured now, cdc.incremental)
            # is made durable at once: a table added to tables before the next batch is then
            # known as one to backfill
            yield asm.heartbeat(position())
        fetch = reader.fetchone
        last_yield = time.monotonic()
        yielded_at = (commit_file, commit_pos)
        while True:
            # the latency rule: outside a transaction, write as soon as the binlog pauses
            more = bool(asm.events) and not asm.in_txn and unread(stream)
            if asm.due(more_buffered=more, stopping=self.stopping()):
                yield asm.take(position())
                last_yield, yielded_at = time.monotonic(), (commit_file, commit_pos)
                if windows is not None:
                    windows.moved = False
            elif (
                not asm.events
                and not asm.in_txn
                and (commit_file, commit_pos) != yielded_at
                and (
                    time.monotonic() - last_yield >= POSITION_INTERVAL_S
                    # a snapshot request, stop or progress without rows: durable at once
                    or (windows is not None and windows.moved)
                )
            ):
                # Nothing captured for a while, but the binlog moved on (other tables): record
                # the position so a restart does not re-read, or lose to purging, what was passed.
                yield asm.heartbeat(position())
                last_yield, yielded_at = time.monotonic(), (commit_file, commit_pos)
                if windows is not None:
                    windows.moved = False
            if self.stopping():
                return
            if windows is not None and not asm.in_txn and windows.ready():
                windows.open()  # its watermarks come later in this stream
            try:
                ev = fetch()
            except pymysql.err.MySQLError as e:
                code = e.args[0] if e.args else None
                msg = e.args[-1] if e.args else str(e)
                if code == _LOST_POSITION:
                    where = (
                        f"GTID {start.get('gtid')}"
                        if by_gtid
                        else f"{start['file']}:{start['pos']}"
                    )
                    raise PositionLost(
                        f"the server cannot send the binlog from {where}: {msg}. Ways out: set "
                        "source.snapshot: when_needed to take a new snapshot, or move the sink's "
                        "data aside and start over"
                    ) from None
                raise SourceError(f"binlog stream failed: {msg}") from None
            except _UNDECODABLE as e:
                raise SourceError(
                    f"the binlog reader cannot decode the event after {cur_file}:{end_pos} "
                    f"({type(e).__name__}: {e}); a column type it does not know (MySQL 9's VECTOR "
                    "is one) in any table written to on the server stops it: drop or convert "
                    "that column, or capture from a server without it",
                    retryable=False,  # the same event fails the same way after a restart
                ) from None
            if ev is None:
                raise SourceError("the server ended the binlog stream; restarting")
            packet = ev.packet
            ev_end = packet.log_pos
            ev_start = end_pos
            if isinstance(ev, HeartbeatLogEvent):
                continue
            if isinstance(ev, NotImplementedEvent):
                setting = _COMPRESSED.get(packet.event_type)
                if setting is not None:
                    raise SourceError(
                        f"the binlog holds a compressed event at {cur_file}:{end_pos} ({setting}"
                        "=ON, set globally or by a session), which the binlog reader cannot "
                        f"decode: its changes would be missed. Set {setting}=OFF (SET GLOBAL and "
                        "in my.cnf); compressed events already written cannot be read: move the "
                        "sink's data aside and start over with a new snapshot"
                    )
                if ev_end:
                    end_pos = ev_end
                continue
            if isinstance(ev, RotateEvent):
                cur_file = ev.next_binlog
                end_pos = ev.position
                if not asm.in_txn and (not by_gtid or ev.timestamp != 0):
                    commit_file, commit_pos = cur_file, ev.position
                tables.clear()
                table_decoders.clear()
                continue
            if ev_end:
                end_pos = ev_end
            if isinstance(ev, TableMapEvent):
                if signals is not None and signals.matches(ev.schema, ev.table):
                    signal_ids.add(ev.table_id)
                    tables[ev.table_id] = None
                elif self.tables.captured(ev.schema, ev.table):
                    version = self.tables.binlog_version(ev, f"{cur_file}:{ev_start}")
                    tables[ev.table_id] = version
                    last_versions[(ev.schema, ev.table)] = version
                    table_decoders[ev.table_id] = decoders.for_table_map(ev, version)
                else:
                    tables[ev.table_id] = None
                    signal_ids.discard(ev.table_id)
                continue
            if isinstance(ev, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                v = tables.get(ev.table_id)
                if v is None or not asm.in_txn:
                    inserted = isinstance(ev, WriteRowsEvent) and ev.table_id in signal_ids
                    if windows is not None and inserted and asm.in_txn:
                        for r in ev.rows:
                            windows.row(r["values"])
                    continue
                ts = ev.timestamp
                ts_ms = ts * 1000
                schema = v.schema
                src_base = streamed_block(schema, ts, packet.server_id, ev_start)
                where = f"{cur_file}:{ev_start}"
                try:
                    dec = table_decoders.get(ev.table_id)
                    rows = decoders.rows(ev, v, dec, f"the binlog event at {where}")
                except _UNDECODABLE as e:
                    raise SourceError(
                        f"the binlog reader cannot decode the rows of {schema.namespace}."
                        f"{schema.table} in the event at {where} "
                        f"({type(e).__name__}: {e}); every restart would fail on it: change the "
                        "column's type or character set, or leave the table out of source.tables",
                        retryable=False,
                    ) from None
                # a chunk window is open on this table: its changed keys leave the chunk
                watched = windows is not None and windows.snapshots.watching == schema.qualified
                for i, (before, after) in enumerate(rows):
                    if details:
                        src = dict(src_base, row=i) if i else src_base
                        eid = f"{cur_file}:{ev_start}:{i}"
                    else:
                        src, eid = src_base, ""
                    if before is None:
                        asm.change(schema, "c", None, after, src, ts_ms, eid)
                        if watched and after is not None:
                            observe(schema, after)
                    elif after is None:
                        asm.change(schema, "d", before, None, src, ts_ms, eid)
                        if watched:
                            observe(schema, before)
                    else:
                        if watched:
                            observe(schema, before)
                            observe(schema, after)
                        if schema.key and any(before[k] != after[k] for k in schema.key):
                            asm.change(schema, "d", before, None, src, ts_ms, eid + ":d")
                            asm.change(schema, "c", None, after, src, ts_ms, eid + ":c")
                        else:
                            asm.change(schema, "u", before, after, src, ts_ms, eid)
                continue
            if isinstance(ev, MariadbGtidEvent):
                begin_group(ev.gtid, ev.domain_id)
                standalone = bool(ev.flags & _FL_STANDALONE)
                continue
            if isinstance(ev, GtidEvent):
                begin_group(ev.gtid, -1)
                standalone = True  # until a BEGIN query says it is a transaction
                continue
            if isinstance(ev, XidEvent):
                commit(ev_end)
                continue
            if isinstance(ev, QueryEvent):
                q = ev.query.strip().upper() if isinstance(ev.query, str) else ""
                if q == "BEGIN":
                    if not asm.in_txn:
                        begin_group(None, -1)
                    standalone = False
                elif q == "COMMIT":
                    commit(ev_end)
                elif not asm.in_txn or standalone:
                    # DDL (or another statement logged on its own): a group of its own
                    if not asm.in_txn:
                        begin_group(None, -1)
                    self.tables.forget()
                    emptied = truncated_table(
                        ev.query if isinstance(ev.query, str) else "",
                        ev.schema.decode() if isinstance(ev.schema, bytes) else str(ev.schema),
                    )
                    if emptied is not None and self.tables.captured(*emptied):
                        truncate(emptied, ev.timestamp, packet.server_id, ev_start)
                    if windows is not None and windows.snapshots.watching:
                        # a TRUNCATE or ALTER may have changed the chunk's rows or columns:
                        # read it again under a new window (its high watermark is ignored)
                        windows.snapshots.abandon()
                    commit(ev_end)
                continue
