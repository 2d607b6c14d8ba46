"""MySQL/MariaDB binlog source (row format), with a consistent initial snapshot.

Delivery guarantee: every row change committed after the start position is yielded once, in
commit order, as long as the server keeps the binlog. Positions are
``{"file": F, "pos": P, "gtid": G}`` after a complete transaction (F:P = the end of its commit
event; G = MariaDB's GTID state, domain-server-seq per domain, at that point) or the same plus
``"skip": N`` inside the next transaction (N = how many of its events, BEGIN included, were already
yielded). While a snapshot runs, positions carry ``"snapshot": "running"``, the F/P/G to stream
from once it is complete, ``"done"`` (tables fully read) and ``"after"`` (the table under way and
its last primary key written), from which an interrupted snapshot resumes.

python-mysql-replication reconnects silently on a lost connection (from its start position in GTID
mode, so it would repeat changes); this source refuses that reconnection and fails instead, so the
pipeline restarts from the position the sink holds.

This module is the glue (batches, acknowledge, stop, close); the binlog stream is in _binlog.py,
the snapshot in _snapshot.py, the server's facts in _server.py, the captured tables in _tables.py,
the preflight in _preflight.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from cdc import avro
from cdc.errors import PositionLost, SourceError
from cdc.incremental import IncrementalSnapshots
from cdc.model import ChangeBatch, NullReporter, Position, Problem, Reporter
from cdc.sources.mysql._binlog import BinlogStream
from cdc.sources.mysql._incremental import ChunkReader, Windows
from cdc.sources.mysql._preflight import check, require_settings
from cdc.sources.mysql._schema import SchemaCache
from cdc.sources.mysql._server import Server
from cdc.sources.mysql._signals import SignalTable
from cdc.sources.mysql._snapshot import Snapshot
from cdc.sources.mysql._tables import Tables
from cdc.sources.mysql.config import MySqlSourceConfig

log = logging.getLogger(__name__)

_CONNECTOR_FIELDS: list[dict[str, Any]] = [
    {"name": "table", "type": ["null", "string"], "default": None},
    {"name": "server_id", "type": "long"},
    {"name": "gtid", "type": ["null", "string"], "default": None},
    {"name": "file", "type": "string"},
    {"name": "pos", "type": "long"},
    {"name": "row", "type": "int"},
    {"name": "thread", "type": ["null", "long"], "default": None},
    {"name": "query", "type": ["null", "string"], "default": None},
]
SOURCE_SCHEMA = avro.source_schema("io.debezium.connector.mysql", _CONNECTOR_FIELDS)


class MySqlSource:
    """Reads the binlog of one MySQL/MariaDB server as a replica with ``server_id``."""

    source_schema = SOURCE_SCHEMA

    def __init__(
        self,
        config: MySqlSourceConfig,
        pipeline_name: str,
        prefix: str,
        *,
        max_events: int = 5000,
        max_wait_ms: int = 100,
        transaction_metadata: bool = True,
        reporter: Reporter | None = None,
        event_details: bool = True,
    ) -> None:
        self.config = config
        # False: one source block per rows event, no event ids (PipelineContext)
        self.event_details = event_details
        self.reporter: Reporter = reporter if reporter is not None else NullReporter()
        self.pipeline_name = pipeline_name
        self.prefix = prefix
        self.max_events = max_events
        self.max_wait = max_wait_ms / 1000
        self.tx_metadata = transaction_metadata
        self._stopping = False
        self.server = Server(config)
        self.tables = Tables(
            self.server,
            config.tables,
            SchemaCache(prefix, adjust_years=config.time_adjuster),
            signal_table=config.signal_table,
        )
        self.signals = (
            SignalTable(self.server, config.signal_table) if config.signal_table else None
        )
        self._stream: BinlogStream | None = None
        self._windows: Windows | None = None
        self.connector = config.connector_name
        if self.connector != "mysql":  # Debezium's MariaDB connector: same fields, its own name
            self.source_schema = avro.source_schema(
                f"io.debezium.connector.{self.connector}", _CONNECTOR_FIELDS
            )

    def check(self) -> list[Problem]:
        """Preflight problems of the binlog settings and privileges, and of the signal table
        when one is configured; [] when none."""
        problems = check(self.server)
        if self.signals is not None:
            problems += self.signals.problems()
        return problems

    def acknowledge(self, upto: Position) -> None:
        """Nothing to tell the server: a binlog reader keeps no state there."""

    def stop(self) -> None:
        self._stopping = True

    @property
    def streaming(self) -> bool:
        """True while connected to the change stream (past any snapshot); read by the daemon's
        status and ``/ready``."""
        return self._stream is not None and self._stream.reader is not None

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            self.server,
            self.tables,
            prefix=self.prefix,
            connector=self.connector,
            max_events=self.max_events,
            stopping=lambda: self._stopping,
            reporter=self.reporter,
        )

    def _incremental(self, start: Position) -> Windows:
        """Snapshots while streaming, from the state ``start`` carries; a captured table that
        was never snapshotted (added to tables since) is queued for a backfill."""
        present = self.tables.present()
        snapshots = IncrementalSnapshots(
            start.get("incremental"), present, chunk_size=self.config.incremental_chunk_size
        )
        if self.config.snapshot == "never":  # stream only, tables added later too (as Postgres)
            snapshots.snapshotted |= set(present)
        missing = snapshots.captured(present)
        if self.signals is not None:
            problems = self.signals.problems()
            blocking = [str(p) for p in problems if p.blocking]
            if blocking:
                raise SourceError("; ".join(blocking))
            for p in problems:
                log.warning("%s", p)
        elif snapshots.active:
            log.warning(
                "%s cannot be snapshotted while streaming without a signal table: its existing "
                "rows are not captured. Create one and set source.signal_table "
                "(docs/source-mysql.md); the snapshot waits for it",
                ", ".join(missing) or "a queued table",
            )
        self._windows = Windows(
            snapshots, self.signals, ChunkReader(self.server, self.tables), self.reporter
        )
        return self._windows

    def _binlog(self, start: Position) -> BinlogStream:
        self._stream = BinlogStream(
            self.server,
            self.tables,
            prefix=self.prefix,
            connector=self.connector,
            tx_metadata=self.tx_metadata,
            max_events=self.max_events,
            max_wait_s=self.max_wait,
            stopping=lambda: self._stopping,
            event_details=self.event_details,
            windows=self._incremental(start),
        )
        return self._stream

    def batches(self, start: Position | None) -> Iterator[ChangeBatch]:
        self.server.catalog()
        require_settings(self.server)
        mode = self.config.snapshot
        if start is not None and start.get("snapshot") != "running":
            if mode == "initial_only":
                log.info("snapshot already complete (initial_only): nothing to do")
                return
            try:
                self.server.verify_available(start)
            except PositionLost:
                if mode != "when_needed":
                    raise
                log.warning(
                    "binlog position %s:%s is gone; taking a new snapshot (snapshot: when_needed)",
                    start["file"],
                    start["pos"],
                )
                start = yield from self._snapshot().run(None)
        elif mode == "never":
            if start is None:
                start = self.server.current_position()
                # make the starting point durable: a restart must not begin at a later end
                yield ChangeBatch([], start)
        else:
            if start is not None:
                try:
                    self.server.verify_available(start)
                    log.warning(
                        "the snapshot was interrupted: reading the rest (after the last key "
                        "written); streaming will then resume from the first attempt's binlog "
                        "position %s:%s",
                        start["file"],
                        start["pos"],
                    )
                except PositionLost:
                    if mode != "when_needed":
                        raise
                    log.warning(
                        "the snapshot was interrupted and its binlog position %s:%s is gone: "
                        "taking a new one (snapshot: when_needed)",
                        start["file"],
                        start["pos"],
                    )
                    start = None
            start = yield from self._snapshot().run(start)
            if mode == "initial_only" or self._stopping:
                return
        yield from self._binlog(start).run(start)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._windows is not None:
            self._windows.close()
        self.server.close()
