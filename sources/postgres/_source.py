"""PostgreSQL logical replication source (pgoutput over the streaming replication protocol).

Delivery guarantee: every change committed after the start position is yielded once, in commit
order, as long as the slot retains it. Positions are ``{"lsn": L}`` after a complete transaction
(L = the commit record's end LSN) or ``{"lsn": L, "txn": C, "skip": N}`` inside one (C = the
transaction's commit LSN, N = how many of its events, BEGIN included, were already yielded).
An empty batch (a heartbeat) carries ``{"lsn": W}`` where W is a WAL position the server reported
in a keepalive while no transaction was open: every transaction committed before W was already
yielded, every later one commits at or after W.

On restart the server resends every transaction whose commit LSN is at or after the slot's
confirmed flush position, which may be behind ``start`` (the sink acknowledges lazily); the
transactions and events that ``start`` says were already delivered are dropped here.

This module is the glue (snapshot then stream, batches, acknowledgements, stop); the protocol
is in ``_pgoutput``, relations and types in ``_relations``, the slot, the publication and their
health in ``_slot``, fault messages in ``_faults``, the snapshot in ``_snapshot``, incremental
snapshots in ``_incremental``.

Over 500 lines because ``_stream`` is one loop on purpose: its state (the open transaction, the
resume LSN, heartbeats, the incremental window's table) lives in locals that the hot path reads
without attribute lookups, and splitting the loop would pass them back and forth per message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from collections.abc import Generator, Iterator
from typing import Any

from psycopg import pq
from psycopg.pq.abc import PGconn

from cdc.assembler import TransactionAssembler
from cdc.errors import PositionLost, SourceError
from cdc.model import (
    ChangeBatch,
    NullReporter,
    Op,
    Position,
    Problem,
    Reporter,
    RowChange,
    TableSchema,
    message_table,
)
from cdc.sources.postgres import _incremental, _selection, _snapshot, _tuples
from cdc.sources.postgres import _pgoutput as pgo
from cdc.sources.postgres._connections import SESSION_OPTIONS, Catalog, connect_replication
from cdc.sources.postgres._faults import Faults
from cdc.sources.postgres._lsn import format_lsn
from cdc.sources.postgres._pgoutput import (
    BEGIN,
    COMMIT,
    DELETE,
    INSERT,
    KEEPALIVE,
    MARKER,
    MESSAGE,
    OLD_KEY,
    OLD_ROW,
    RELATION,
    TRUNCATE,
    TUPLE,
    UPDATE,
    XLOG_DATA,
)
from cdc.sources.postgres._publication import Publication
from cdc.sources.postgres._relations import Relations
from cdc.sources.postgres._slot import Slot
from cdc.sources.postgres._sourceinfo import SOURCE_SCHEMA, source_block
from cdc.sources.postgres.config import PostgresSourceConfig, default_name, parse_table

log = logging.getLogger(__name__)


class PostgresSource:
    """Reads one publication through one logical replication slot."""

    source_schema = SOURCE_SCHEMA

    def __init__(
        self,
        config: PostgresSourceConfig,
        pipeline_name: str,
        prefix: str,
        *,
        max_events: int = 5000,
        max_wait_ms: int = 100,
        transaction_metadata: bool = True,
        specialise: bool = True,
        reporter: Reporter | None = None,
        event_details: bool = True,
    ) -> None:
        self.config = config
        # False: one source block per table and transaction, no event ids (PipelineContext)
        self.event_details = event_details
        self.reporter: Reporter = reporter if reporter is not None else NullReporter()
        self.pipeline_name = pipeline_name
        self.slot = config.slot or default_name(pipeline_name)
        self.publication = config.publication or default_name(pipeline_name)
        self.prefix = prefix
        self.max_events = max_events
        self.max_wait = max_wait_ms / 1000
        self.tx_metadata = transaction_metadata
        # exact names now; patterns and schemas are resolved against the catalog at start and
        # every slot_check_interval_s (_reselect); the lists below are updated in place
        self.selection = _selection.selection(config)
        self.tables = [t for t in self.selection.exact if not self.selection.excluded(*t)]
        # incremental snapshots: tables by TableSchema.qualified, and Debezium's signal table
        # (published with the tables; its rows are signals, never events)
        self.names = {f"{ns}.{t}": (ns, t) for ns, t in self.tables}
        self.signal_table = parse_table(config.signal_table) if config.signal_table else None
        published = self._published(self.tables)
        self.catalog = Catalog(config.dsn)
        self.faults = Faults(self.catalog, pipeline_name, self.slot, self.publication, prefix)
        # specialise False: decode tuples by the generic path of _tuples (the reference)
        # instead of decoders generated per relation version
        self.relations = Relations(self.catalog, self.faults, prefix, self.tables, specialise)
        if self.signal_table is not None:
            self.relations.decoded.add(self.signal_table)
        self.slot_ctl = Slot(
            Publication(
                config,
                pipeline_name,
                self.slot,
                self.publication,
                published,
                self.catalog,
                self.faults,
                self.relations,
            )
        )
        self.incremental = _incremental.Incremental(
            config.dsn, self.catalog, self.relations, self.slot, self.names, self.reporter
        )
        self._stopping = False
        # stop() writes a byte here so that a select() waiting on an idle stream wakes at once
        # (instead of after status_interval_s); os.write on a non-blocking pipe is signal-safe.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._repl: PGconn | None = None
        # acknowledge() records the sink's durable LSN here, maybe from the pipeline's writing
        # thread (an int assignment, atomic): only the thread iterating batches() uses the
        # replication connection and sends it (libpq's connection is not thread-safe). It
        # writes a byte to this second pipe so that a stream waiting on an idle socket sends
        # the acknowledgement at once (a shutting-down server waits for it).
        self._acked = 0
        self._ack_r, self._ack_w = os.pipe()
        os.set_blocking(self._ack_w, False)
        os.set_blocking(self._ack_r, False)
        self._slot_lsn = 0  # the slot's confirmed position at START_REPLICATION (stream thread)
        self._sent_ack = -1
        self._last_status = 0.0
        self._change_lsn = 0  # WAL position of the message being decoded, for errors
        self._peeked: tuple[int, Any] | None = None  # get_copy_data's read by _more_buffered

    def _published(self, tables: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """What the publication must hold: the captured tables, and the signal table."""
        extra = [self.signal_table] if self.signal_table and self.signal_table not in tables else []
        return list(tables) + extra

    def _reselect(self) -> list[tuple[str, str]]:
        """Resolve the table patterns and schemas now (``_selection``): the lists the relations,
        the publication and incremental snapshots hold are updated in place. Returns the tables
        that joined. Under publication_autocreate_mode disabled, a table a pattern matches but
        the administrator's publication does not hold is left out (said once)."""
        if self.selection.static:
            return []
        cat = self.catalog.connect()
        now = self.selection.resolve(cat)
        if self.config.publication_autocreate_mode == "disabled":
            now = self.selection.published_only(cat, now, self.publication)
        added = [t for t in now if t not in self.tables]
        if added or len(now) != len(self.tables):
            self.tables[:] = now
            self.names.clear()
            self.names.update({f"{ns}.{t}": (ns, t) for ns, t in now})
            self.slot_ctl.pub.tables[:] = self._published(now)
            self.relations.adopt()
        return added

    @property
    def db(self) -> str:
        """The database's name (once the catalog connection is open)."""
        return self.catalog.db

    def check(self) -> list[Problem]:
        from cdc.sources.postgres._check import check

        return check(self.config, self.pipeline_name)

    # --- streaming ----------------------------------------------------------------------------

    def _start_streaming(self, conn: PGconn, start_lsn: int) -> PGconn:
        cmd = (
            f'START_REPLICATION SLOT "{self.slot}" LOGICAL {format_lsn(start_lsn)} '
            f"(proto_version '1', publication_names '{self.publication}', messages 'true')"
        )
        res = conn.exec_(cmd.encode())
        if res.status != pq.ExecStatus.COPY_BOTH:
            msg = (res.error_message or b"").decode().strip()
            conn.finish()
            raise self.faults.stream_error(f"START_REPLICATION failed: {msg}")
        conn.nonblocking = 1
        log.info(
            "streaming from slot %s at %s (publication %s)",
            self.slot,
            format_lsn(start_lsn) if start_lsn else "its confirmed position",
            self.publication,
        )
        state = self.slot_ctl.state()
        # Never report a flush position behind the slot's: some server versions move it back.
        self._slot_lsn = max(self._slot_lsn, state[0] if state else 0)
        self._repl = conn
        self._peeked = None  # (a read-ahead belongs to the connection it came from)
        return conn

    def _snapshot(
        self,
        conns: list[Any],
        tables: list[_snapshot.SnapshotTable],
        done: list[str],
        counts: dict[str, int],
        lsn: int,
        fetch: int,
        final: Position,
    ) -> Generator[ChangeBatch]:
        return _snapshot.run(
            conns,
            tables,
            done,
            counts,
            lsn,
            fetch,
            final,
            prefix=self.prefix,
            db=self.db,
            stopping=lambda: self._stopping,
            reporter=self.reporter,
        )

    def _more_buffered(self, conn: PGconn) -> bool:
        """Whether more of the stream is here right now: a complete message in libpq's buffer
        (read ahead and kept for ``_recv``) or bytes on the socket (select with timeout 0).
        False means the stream paused: what was gathered is written at once (the latency
        rule), rather than when max_wait_ms has passed."""
        if self._peeked is not None:
            return True
        n, data = conn.get_copy_data(1)
        if n != 0:  # a message, or the end of the stream: _recv takes it (and raises on the end)
            self._peeked = (n, data)
            return True
        r, _, _ = select.select([conn.socket], [], [], 0)
        return bool(r)

    def _recv(self, conn: PGconn, timeout: float) -> bytes | None:
        if self._peeked is not None:
            (n, data), self._peeked = self._peeked, None
        else:
            n, data = conn.get_copy_data(1)
        if n == 0:
            r, _, _ = select.select(
                [conn.socket, self._wake_r, self._ack_r], [], [], max(timeout, 0)
            )
            if self._ack_r in r:
                with contextlib.suppress(OSError):  # drained: the caller sends the status
                    os.read(self._ack_r, 4096)
            if conn.socket not in r:
                return None
            conn.consume_input()
            n, data = conn.get_copy_data(1)
            if n == 0:
                return None
        if n > 0:
            return bytes(data)
        res = conn.get_result()
        msg = (res.error_message if res is not None else b"") or conn.error_message
        raise self.faults.stream_error(
            f"replication stream ended: {msg.decode(errors='replace').strip()}"
        )

    def _send_status(self, conn: PGconn, force: bool = False) -> None:
        now = time.monotonic()
        lsn = max(self._acked, self._slot_lsn)
        if (
            not force
            and lsn == self._sent_ack
            and now - self._last_status < self.config.status_interval_s
        ):
            return
        conn.put_copy_data(pgo.status_update(lsn, time.time_ns() // 1000))
        conn.flush()
        self._sent_ack = lsn
        self._last_status = now

    def acknowledge(self, upto: Position) -> None:
        """Record ``upto``'s LSN; the stream sends it (see ``_acked``), from any thread."""
        lsn = int(upto["lsn"])
        if lsn > self._acked:
            self._acked = lsn
            with contextlib.suppress(OSError):  # full (already woken) or closed
                os.write(self._ack_w, b"a")

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):  # full (already woken) or closed
            os.write(self._wake_w, b"x")

    @property
    def streaming(self) -> bool:
        """True while connected to the change stream (past any snapshot); read by the daemon's
        status and ``/ready``."""
        return self._repl is not None

    def batches(self, start: Position | None) -> Iterator[ChangeBatch]:
        """Snapshot (as configured) and stream; see the module docstring for positions."""
        mode = self.config.snapshot
        self.catalog.connect()
        if not self.selection.static:
            self._reselect()
            if not self.tables:
                raise SourceError(
                    f"tables, schemas and exclude_tables select no table in database "
                    f"{self.db!r}: nothing to capture",
                    retryable=False,
                )
        backfill = self.config.snapshot != "never"  # never: stream only, later tables too
        chunk = self.config.incremental_chunk_size
        if start is not None and "snapshot" not in start and not start.get("snapshot_only_done"):
            # Tables captured before this start are not backfilled (see Incremental.start).
            # Filtered mode keeps the publication to exactly the captured tables, so the tables
            # it holds are those; another mode's publication may hold any table, so there the
            # position's own record decides (and the publication only for a position older
            # than that record).
            state = start.get("incremental")
            published: list[str] = []
            if state is None or self.config.publication_autocreate_mode == "filtered":
                published = [
                    f"{ns}.{t}" for ns, t, _, pub in self.slot_ctl.pub.table_states() if pub
                ]
            queued = self.incremental.start(state, chunk, backfill=backfill, published=published)
            if queued and self.faults.position_problem(self.slot_ctl.state(), start) is None:
                # Durable before they join the publication: after that, a restart could not
                # tell them from tables captured before. (The start position, and the queue.)
                yield ChangeBatch([], {**start, "incremental": self.incremental.snapshots.state})
        else:
            self.incremental.start(None, chunk, backfill=backfill)
        if self.signal_table is not None:
            _incremental.check_signal_table(self.catalog, *self.signal_table)
        self.slot_ctl.pub.ensure(adopt=start is not None)
        if start is not None and start.get("snapshot_only_done"):
            log.info("snapshot: initial_only snapshot already complete; nothing to do")
            return
        snap = start.get("snapshot") if start else None
        fetch = self.config.snapshot_fetch_size
        n = self.config.snapshot_parallelism
        if mode == "initial_only" and (start is None or snap is not None):
            done = list(snap["done"]) if snap else []
            conns = _snapshot.open_connections(self.config.dsn, SESSION_OPTIONS, n, None)
            tables = _snapshot.tables(
                self.catalog,
                self.relations,
                self.tables,
                done,
                snap["after"] if snap else {},
                snap.get("ranges") if snap else None,
                n,
            )
            counts = dict(snap["rows"]) if snap else {}
            final = {"lsn": 0, "snapshot_only_done": True}
            yield from self._snapshot(conns, tables, done, counts, 0, fetch, final)
            return
        state = self.slot_ctl.state()
        fresh = start is None and mode in ("initial", "when_needed")
        if start is not None:
            problem = self.faults.position_problem(state, start)
            if problem is not None and state is None and self.config.temporary_slot:
                problem += (
                    " (temporary_slot: true, so the server dropped the slot when the "
                    "pipeline's replication connection ended)"
                )
            if problem is not None:
                if mode != "when_needed":
                    raise PositionLost(f"{problem}. {self.faults.ways_out()}")
                log.warning("%s; snapshot: when_needed, so taking a new snapshot", problem)
                fresh, snap = True, None
                self.incremental.start(None, chunk, backfill=backfill)  # it reads every table
        conn = connect_replication(self.config.dsn)
        try:
            if fresh:
                if state is not None:
                    # nothing in the sink depends on it: a new one replaces it, if it is ours
                    self.slot_ctl.may_drop()
                    self.slot_ctl.drop()
                lsn, name = self.slot_ctl.create(conn, export=True)
                conns = _snapshot.open_connections(self.config.dsn, SESSION_OPTIONS, n, name)
                tables = _snapshot.tables(
                    self.catalog, self.relations, self.tables, [], {}, None, n
                )
                yield from self.slot_ctl.watched(
                    self._snapshot(conns, tables, [], {}, lsn, fetch, {"lsn": lsn})
                )
                start = {"lsn": lsn}
            elif snap is not None:
                assert start is not None
                lsn = int(start["lsn"])
                done = list(snap["done"])
                conns = _snapshot.open_connections(self.config.dsn, SESSION_OPTIONS, n, None)
                tables = _snapshot.tables(
                    self.catalog,
                    self.relations,
                    self.tables,
                    done,
                    snap["after"],
                    snap.get("ranges"),
                    n,
                )
                yield from self.slot_ctl.watched(
                    self._snapshot(
                        conns, tables, done, dict(snap["rows"]), lsn, fetch, {"lsn": lsn}
                    )
                )
                start = {"lsn": lsn}
            elif state is None:
                self.slot_ctl.create(conn, export=False)
            if self._stopping:
                return
            self.slot_ctl.ensure_failover(conn)
            self._start_streaming(conn, int(start["lsn"]) if start else 0)
        except BaseException:
            conn.finish()
            self._repl = None
            raise
        try:
            yield from self._stream(conn, start)
        except _tuples.ValueConversionError as e:
            raise e.located(
                f"in the change at LSN {format_lsn(self._change_lsn)} (slot {self.slot})",
                "a restart reads this change again, so remove its cause as said above, then "
                "restart (the pipeline resumes at this change)",
            ) from e

    def _stream(self, conn: PGconn, start: Position | None) -> Iterator[ChangeBatch]:
        resume_lsn = int(start["lsn"]) if start else 0  # end LSN of the last complete transaction
        partial_txn = int(start["txn"]) if start and start.get("txn") is not None else None
        partial_skip = int(start.get("skip", 0)) if start else 0

        asm = TransactionAssembler(
            tx_metadata=self.tx_metadata, max_events=self.max_events, max_wait_s=self.max_wait
        )
        # The transaction on the wire. The assembler sees only those not already delivered
        # (skip_txn: its begin is not called); in_txn covers both, because a heartbeat or a
        # confirmation must not go out in the middle of a skipped one either.
        in_txn = skip_txn = False
        txn_lsn = xid = ts_us = ts_ms = 0
        last_commit_lsn = 0  # commit LSN of the last transaction seen in this session
        relations = self.relations.by_id  # the same dict for the whole stream
        relid = pgo.relid
        prefix, db = self.prefix, self.db
        # Heartbeats: a keepalive's WAL end means every transaction committed before it was sent
        # (the walsender advances it only after decoding a record), so once those are all yielded
        # and no transaction is open, {"lsn": wal_end} resumes correctly: later commits lie at or
        # after it. Yielding it as an empty batch has the sink make it durable and acknowledge
        # it, so WAL written only by uncaptured tables (or other databases) is released.
        hb = self.config.heartbeat_interval_s
        action = self.config.heartbeat_action_query if hb else None
        wal_end = 0
        yielded = resume_lsn  # the LSN of the last position yielded (or started from)
        # The server asked for a reply (a keepalive with reply requested): it waits for our
        # flush position to reach what it sent, which a shutting-down walsender must see before
        # it can exit (else `pg_ctl stop -m fast` never completes). Answered once no
        # transaction is open, by making its WAL end durable and acknowledgeable (see below).
        confirm = False
        next_hb = next_action = time.monotonic() + hb
        next_health = time.monotonic()
        # Incremental snapshots (_incremental): their state rides in every position; ``watch``
        # is the table whose changes drop keys from the chunk of the open window (else None).
        incr = self.incremental
        inc = incr.snapshots
        watch: str | None = None
        msg_prefix = incr.prefix
        signal_ids: set[int] = set()  # relation ids of the signal table
        # Logical decoding messages emitted as events (config messages; None: none is)
        captures = None if self.config.messages is None else self.config.messages.captures
        mtable = message_table(f"{prefix}.message")

        def at(lsn: int) -> Position:
            return {"lsn": lsn, "incremental": inc.state}

        def position() -> Position:
            if asm.in_txn and asm.seq > 0:
                return {
                    "lsn": resume_lsn,
                    "txn": txn_lsn,
                    "skip": asm.seq,
                    "incremental": inc.state,
                }
            return at(resume_lsn)

        details = self.event_details
        # without details: each table's block of the open transaction (its first change's)
        blocks: dict[TableSchema, dict[str, Any]] = {}

        def block(table: TableSchema) -> dict[str, Any]:
            if details:
                return source_block(prefix, db, table, ts_us, xid, msg_lsn, last_commit_lsn)
            src = blocks.get(table)
            if src is None:
                src = blocks[table] = source_block(
                    prefix, db, table, ts_us, xid, msg_lsn, last_commit_lsn
                )
            return src

        def change(
            table: TableSchema, op: Op, before: Any, after: Any, src: dict[str, Any]
        ) -> None:
            if watch is not None and table.qualified == watch:
                row = after if after is not None else before
                inc.observe(watch, None if row is None else tuple(row[k] for k in table.key))
            # event ids: the transaction's commit LSN and the event's seq in it (BEGIN is 0)
            eid = f"{txn_lsn}:{asm.row_seq}" if details else ""
            asm.change(table, op, before, after, src, ts_ms, eid)

        while True:
            if inc.active and not self._stopping:
                incr.step()  # a new window, when none is open
            # outside a transaction, a batch is written as soon as the stream pauses
            more = asm.in_txn or not asm.events or self._more_buffered(conn)
            if asm.due(more_buffered=more, stopping=self._stopping):
                yield asm.take(position())
                yielded = resume_lsn
                next_hb = time.monotonic() + hb
                self._send_status(conn)  # what the sink acknowledged meanwhile (acknowledge)
            if self._stopping:
                return
            if confirm and not in_txn:
                confirm = False
                if asm.events:
                    yield asm.take(position())
                target = max(wal_end, resume_lsn)
                if target > self._acked:
                    # Every captured transaction before the keepalive's WAL end was yielded
                    # (none is open), so {"lsn": wal_end} is a heartbeat position. A sink may
                    # acknowledge one batch behind its last (the built-in log keeps its last
                    # frame unacknowledged in case it is found torn), so it goes out twice: the
                    # second makes the first acknowledgeable, and the acknowledgement that
                    # follows lets the server's shutdown complete. Nothing is acknowledged
                    # that is not covered by a later durable batch.
                    resume_lsn = yielded = target
                    yield asm.heartbeat(at(target))
                    yield asm.heartbeat(at(target))
                    next_hb = time.monotonic() + hb
                    if self._stopping:
                        return
                    self._send_status(conn, force=True)
                continue
            now = time.monotonic()
            if now >= next_health:
                self.slot_ctl.health()
                next_health = now + self.config.slot_check_interval_s
                added = [] if in_txn else self._reselect()
                if added:
                    # A table created (or renamed) into the selection: its existing rows come
                    # by a backfill, queued and durable before it joins the publication (a
                    # restart then still knows it was never snapshotted).
                    log.info("tables joined the selection: %s", ", ".join(map(str, added)))
                    names = [f"{ns}.{t}" for ns, t in added]
                    if self.config.snapshot == "never":
                        inc.snapshotted.update(names)
                    inc.captured(list(self.names))
                    if asm.events:
                        yield asm.take(position())
                    yielded = resume_lsn
                    yield asm.heartbeat(at(resume_lsn))
                    self.slot_ctl.pub.ensure(adopt=True)
            if action and now >= next_action:
                self.slot_ctl.heartbeat_action(action)
                next_action = now + hb
            beat = hb > 0 and not asm.events and not in_txn and max(wal_end, resume_lsn) > yielded
            if beat and now >= next_hb:
                resume_lsn = yielded = max(wal_end, resume_lsn)
                next_hb = now + hb
                yield asm.heartbeat(at(resume_lsn))
                continue
            wait_s = asm.wait_s()
            if wait_s is not None:
                wait = wait_s
            else:
                wait = min(self.config.status_interval_s, next_health - now)
                if beat:
                    wait = min(wait, next_hb - now)
                if action:
                    wait = min(wait, next_action - now)
            data = self._recv(conn, min(wait, 0.2) if self._stopping else wait)
            if data is None:
                self._send_status(conn)
                continue
            kind = data[0]
            if kind == KEEPALIVE:
                end, reply = pgo.keepalive(data)
                wal_end = max(wal_end, end)
                if reply:
                    self._send_status(conn, force=True)
                    confirm = True
                continue
            if kind != XLOG_DATA:
                continue
            msg_lsn = self._change_lsn = pgo.xlog_start(data)
            buf = data[pgo.XLOG_HEADER :]
            tag = buf[0]
            if tag == BEGIN:
                txn_lsn, ts_us, xid = pgo.begin(buf)
                blocks.clear()
                ts_ms = ts_us // 1000
                in_txn = True
                skip_txn = txn_lsn < resume_lsn  # already delivered before the restart
                if not skip_txn:
                    asm.begin(
                        f"{xid}:{txn_lsn}",
                        begin_event_id=f"{txn_lsn}:0",
                        skip=partial_skip if partial_txn == txn_lsn else 0,
                    )
            elif tag == COMMIT:
                commit_lsn, end_lsn = pgo.commit(buf)
                if not skip_txn:
                    asm.commit(f"{txn_lsn}:{asm.seq}")
                    last_commit_lsn = commit_lsn
                    resume_lsn = end_lsn
                    if asm.wants_boundary:
                        asm.boundary(at(resume_lsn))
                in_txn = False
            elif tag == RELATION:
                rmsg = pgo.relation(buf)
                self.relations.announced(rmsg)
                if self.signal_table == (rmsg.namespace, rmsg.name):
                    signal_ids.add(rmsg.relid)
            elif tag == MESSAGE:
                m = pgo.message(buf)
                if m.transactional or m.prefix != msg_prefix:
                    if captures is not None and captures(m.prefix):
                        if not m.transactional:
                            # Same rule as ours below: resuming after its LSN is exact. The
                            # server sends it as it decodes it, never inside a transaction
                            # it replays (those go out whole at their commit): between
                            # transactions (asm.reads asserts it).
                            if m.lsn <= resume_lsn:
                                continue  # delivered before the restart
                            now_us = time.time_ns() // 1000
                            src = source_block(
                                prefix, db, mtable, now_us, None, msg_lsn, last_commit_lsn
                            )
                            row = (m.prefix, m.content)
                            eid = f"{m.lsn}:m"
                            asm.reads([RowChange(mtable, "m", None, row, src, now_us // 1000, eid)])
                            resume_lsn = m.lsn
                        elif in_txn and not skip_txn:
                            # in its transaction, counted in it as a row change (Debezium
                            # counts a transactional message among the transaction's events)
                            src = source_block(
                                prefix, db, mtable, ts_us, xid, msg_lsn, last_commit_lsn
                            )
                            change(mtable, "m", None, (m.prefix, m.content), src)
                    continue
                if m.lsn <= resume_lsn:
                    continue  # read before the position resumed from
                state = inc.state
                incr.message(m.content, m.lsn, asm, self.prefix, self.db)
                watch = inc.watching
                if not in_txn:
                    # Between transactions, at the message's end (its LSN: where the record
                    # after it starts): every transaction committed before it was yielded and
                    # every later one commits at or after it, so resuming there is exact (and a
                    # request is not read again after a restart). Not a byte further: the
                    # commit record right after the message starts at this LSN.
                    resume_lsn = max(resume_lsn, m.lsn)
                    if not asm.events and inc.state != state:
                        # progress without rows (a table's last chunk came empty, a request):
                        # durable now, not at the next heartbeat
                        yielded = resume_lsn
                        yield asm.heartbeat(at(resume_lsn))
            elif skip_txn:
                continue
            elif signal_ids and tag in (INSERT, UPDATE, DELETE) and relid(buf) in signal_ids:
                if tag == INSERT:  # a signal (Debezium acts on inserted rows only)
                    sig = relations[relid(buf)]
                    incr.signal_row(sig.schema, sig.decode_new(buf, TUPLE)[0])
                    watch = inc.watching
            elif tag == INSERT:
                rel = relations.get(relid(buf))  # None: a table the pipeline does not capture
                if rel is None:
                    continue
                after, _ = rel.decode_new(buf, TUPLE)
                table = rel.schema
                if details:  # inline: the hot path of a log or broker sink
                    src = source_block(prefix, db, table, ts_us, xid, msg_lsn, last_commit_lsn)
                else:
                    src = block(table)
                change(table, "c", None, after, src)
            elif tag == UPDATE:
                rel = relations.get(relid(buf))
                if rel is None:
                    continue
                table = rel.schema
                before = None
                i = MARKER
                if buf[i] == OLD_KEY or buf[i] == OLD_ROW:
                    decode_old = rel.decode_new if buf[i] == OLD_ROW else rel.decode_old
                    before, i = decode_old(buf, i + 1)
                after, _ = rel.decode_new(buf, i + 1)  # after the NEW_ROW marker
                if details:  # inline: the hot path of a log or broker sink
                    src = source_block(prefix, db, table, ts_us, xid, msg_lsn, last_commit_lsn)
                else:
                    src = block(table)
                if (
                    before is not None
                    and table.key
                    and any(before[k] != after[k] for k in table.key)
                ):
                    # The primary key changed: a delete of the old key and a create of the new
                    # one, as Debezium emits it.
                    change(table, "d", before, None, src)
                    change(table, "c", None, after, src)
                else:
                    change(table, "u", before, after, src)
            elif tag == DELETE:
                rel = relations.get(relid(buf))
                if rel is None:
                    continue
                decode = rel.decode_new if buf[MARKER] == OLD_ROW else rel.decode_old
                before, _ = decode(buf, TUPLE)
                table = rel.schema
                if details:  # inline: the hot path of a log or broker sink
                    src = source_block(prefix, db, table, ts_us, xid, msg_lsn, last_commit_lsn)
                else:
                    src = block(table)
                change(table, "d", before, None, src)
            elif tag == TRUNCATE:
                for rid in pgo.truncated(buf):
                    if rid in signal_ids or rid not in relations:
                        continue
                    table = relations[rid].schema
                    src = block(table)
                    change(table, "t", None, None, src)
            # ORIGIN, TYPE: nothing to emit

    def close(self) -> None:
        self.incremental.close()
        if self._repl is not None:
            with contextlib.suppress(Exception):
                self._send_status(self._repl, force=True)
            self._repl.finish()
            self._repl = None
        self.catalog.close()
        for fd in (self._wake_r, self._wake_w, self._ack_r, self._ack_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = self._ack_r = self._ack_w = -1
