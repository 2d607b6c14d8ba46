"""The replication slot of one pipeline: creation (temporary, failover), state, health; its
publication is ``publication`` (``_publication.Publication``).

A slot another pipeline's publication records is never dropped. Health, read every
slot_check_interval_s while the pipeline runs: the WAL the slot retains (a gauge, and one warning
past max_retained_wal_mb), an invalidated slot (stops with the ways out), and the publication's
own health.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn

from cdc import metrics
from cdc.errors import PositionLost, SourceError
from cdc.model import ChangeBatch
from cdc.sources.postgres._lsn import format_lsn, parse_lsn
from cdc.sources.postgres._publication import Publication

log = logging.getLogger(__name__)


class Slot:
    """One pipeline's slot (names from the config or the pipeline's name), made for its
    publication ``pub``, whose health it checks with its own."""

    def __init__(self, pub: Publication) -> None:
        self.pub = pub  # names, config, catalog and faults are the publication's: one pipeline's
        self.config = pub.config
        self.pipeline_name = pub.pipeline_name
        self.slot = pub.slot
        self.catalog = pub.catalog
        self.faults = pub.faults
        self._wal_warned = False  # retained WAL is over max_retained_wal_mb, already said so
        self._health_failed = False
        self._action_failed = False

    # --- ownership: a slot another pipeline's publication records is never dropped -----------

    def may_drop(self) -> None:
        """Refuse to drop the slot when another pipeline's publication records it, or when a
        connection is reading it (retryable: our own previous connection may still be ending)."""
        for pub, claim in self.pub.claims().items():
            if claim.get("slot") == self.slot and claim.get("pipeline") != self.pipeline_name:
                raise self.faults.not_ours(
                    f"replication slot {self.slot!r} (recorded by publication {pub!r})",
                    str(claim.get("pipeline")),
                )
        row = (
            self.catalog.connect()
            .execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s AND active",
                (self.slot,),
            )
            .fetchone()
        )
        if row is not None:
            raise SourceError(
                f"replication slot {self.slot!r} is being read by another connection (pid "
                f"{row[0]}) while this pipeline's sink holds nothing yet: not dropping it; if "
                "another pipeline or program uses it, give this pipeline a source.slot of its own"
            )

    # --- the slot --------------------------------------------------------------------------------

    def state(self) -> tuple[int, str | None] | None:
        """The slot's confirmed flush LSN and wal_status; None when it does not exist; an error
        when it exists for another plugin or database."""
        row = (
            self.catalog.connect()
            .execute(
                "SELECT confirmed_flush_lsn::text, wal_status, plugin, database "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot,),
            )
            .fetchone()
        )
        if row is None:
            return None
        if row[2] != "pgoutput" or row[3] != self.catalog.db:
            raise SourceError(
                f"replication slot {self.slot!r} exists for plugin {row[2]!r} in database "
                f"{row[3]!r}; this pipeline needs a pgoutput slot in {self.catalog.db!r}: "
                "choose another source.slot",
                retryable=False,
            )
        return (parse_lsn(row[0]) if row[0] else 0), row[1]

    def create(self, conn: PGconn, export: bool) -> tuple[int, str | None]:
        """Create the slot on ``conn`` (the replication connection that goes on to stream from
        it: a temporary slot lives as long as that connection); return its consistent point and
        the exported snapshot's name."""
        temporary = "TEMPORARY " if self.config.temporary_slot else ""
        if self.config.slot_failover:  # the option list (Postgres 15+); FAILOVER is 17+
            mode = f"(SNAPSHOT '{'export' if export else 'nothing'}', FAILOVER true)"
        else:
            mode = "EXPORT_SNAPSHOT" if export else "NOEXPORT_SNAPSHOT"
        res = conn.exec_(
            f'CREATE_REPLICATION_SLOT "{self.slot}" {temporary}LOGICAL pgoutput {mode}'.encode()
        )
        if res.status != pq.ExecStatus.TUPLES_OK:
            raise SourceError(
                f"cannot create replication slot {self.slot!r}: "
                f"{(res.error_message or b'').decode().strip()}"
            )
        lsn = parse_lsn((res.get_value(0, 1) or b"0/0").decode())
        snapshot = res.get_value(0, 2)
        log.info(
            "created %sreplication slot %s at %s%s",
            temporary.lower(),
            self.slot,
            format_lsn(lsn),
            " (failover)" if self.config.slot_failover else "",
        )
        return lsn, snapshot.decode() if snapshot else None

    def ensure_failover(self, conn: PGconn) -> None:
        """With slot_failover, switch an existing slot made without it (ALTER_REPLICATION_SLOT,
        Postgres 17+) on the replication connection, before streaming starts."""
        if not self.config.slot_failover:
            return
        row = (
            self.catalog.connect()
            .execute(
                "SELECT to_jsonb(s) ->> 'failover' FROM pg_replication_slots s "
                "WHERE slot_name = %s",
                (self.slot,),
            )
            .fetchone()
        )
        if row is None or row[0] == "true":
            return
        res = conn.exec_(f'ALTER_REPLICATION_SLOT "{self.slot}" (FAILOVER true)'.encode())
        if res.status != pq.ExecStatus.COMMAND_OK:
            raise SourceError(
                f"cannot make replication slot {self.slot!r} a failover slot (slot_failover: "
                f"true needs Postgres 17 or newer): "
                f"{(res.error_message or b'').decode().strip()}",
                retryable=False,
            )
        log.info("replication slot %s is now a failover slot", self.slot)

    def drop(self) -> None:
        self.catalog.connect().execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
        log.info("dropped replication slot %s", self.slot)

    # --- health: the publication, the slot's WAL, the heartbeat action ------------------------

    def health(self) -> None:
        """Publish the slot's retained WAL, warn once past the limit, fail when invalidated;
        check the publication (``publication_health``)."""
        self.pub.health()
        try:
            row = (
                self.catalog.connect()
                .execute(
                    "SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() "
                    "THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, "
                    "restart_lsn)::bigint, wal_status "
                    "FROM pg_replication_slots WHERE slot_name = %s",
                    (self.slot,),
                )
                .fetchone()
            )
        except (psycopg.Error, SourceError) as e:
            if not self._health_failed:
                log.warning("cannot read the state of slot %s: %s", self.slot, str(e).strip())
                self._health_failed = True
            return
        self._health_failed = False
        if row is None:
            return
        retained, status = int(row[0] or 0), row[1]
        if status == "lost":
            if self.config.snapshot == "when_needed":
                # retryable: the restarted source sees the lost slot and takes a new snapshot
                raise SourceError(
                    f"replication slot {self.slot!r} was invalidated (wal_status lost); "
                    "snapshot: when_needed, so restarting to take a new snapshot"
                )
            raise PositionLost(f"{self.faults.invalidated()}. {self.faults.ways_out()}")
        metrics.SLOT_RETAINED_WAL.labels(pipeline=self.pipeline_name, slot=self.slot).set(retained)
        limit = self.config.max_retained_wal_mb
        if limit and retained > limit << 20:
            if not self._wal_warned:
                self._wal_warned = True
                log.warning(
                    "replication slot %s retains %d MB of WAL (over max_retained_wal_mb %d; "
                    "wal_status %s): the server keeps it until the sink has made the changes "
                    "durable; check that this pipeline keeps up and its sink is healthy",
                    self.slot,
                    retained >> 20,
                    limit,
                    status,
                )
        elif self._wal_warned:
            self._wal_warned = False
            log.info("replication slot %s retains %d MB of WAL again", self.slot, retained >> 20)

    def watched(self, batches: Generator[ChangeBatch]) -> Iterator[ChangeBatch]:
        """``batches`` of a snapshot, with the slot's health read every slot_check_interval_s.

        The slot holds WAL back from the snapshot's start, so a long snapshot is when it grows
        most: the gauge and the warning follow it, and a slot the server invalidates meanwhile
        stops the snapshot now rather than when streaming would begin, hours later maybe.
        """
        interval = self.config.slot_check_interval_s
        next_check = time.monotonic() + interval
        try:
            for batch in batches:
                yield batch
                if time.monotonic() >= next_check:
                    self.health()
                    next_check = time.monotonic() + interval
        finally:
            batches.close()  # its worker threads and connections, now rather than at collection

    def heartbeat_action(self, query: str) -> None:
        try:
            self.catalog.connect().execute(query.encode())
        except (psycopg.Error, SourceError) as e:
            if not self._action_failed:
                self._action_failed = True
                log.warning("heartbeat_action_query failed (ignored): %s", str(e).strip())
            return
        if self._action_failed:
            self._action_failed = False
            log.info("heartbeat_action_query succeeded again")
