"""The replication slot and the publication of one pipeline: ownership, creation, state, health.

Ownership: a publication a pipeline made carries a comment recording the pipeline and its slot
(``OWNER_TAG`` + JSON); a slot or publication another pipeline's comment records is never used,
altered or dropped. Health, read every slot_check_interval_s while the pipeline runs: the WAL the
slot retains (a gauge, and one warning past max_retained_wal_mb), an invalidated slot (stops
with the ways out), and the publication still publishing every configured table and operation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Generator, Iterator
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.pq.abc import PGconn

from cdc import metrics
from cdc.errors import PositionLost, SourceError
from cdc.model import ChangeBatch
from cdc.sources.postgres._connections import Catalog
from cdc.sources.postgres._faults import Faults
from cdc.sources.postgres._lsn import format_lsn, parse_lsn
from cdc.sources.postgres._relations import Relations
from cdc.sources.postgres.config import PostgresSourceConfig, sql_table

log = logging.getLogger(__name__)

# The comment on a publication a pipeline made: OWNER_TAG + {"pipeline": name, "slot": slot}.
OWNER_TAG = "cdc:"


def publication_claims(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Publication name -> the owner its comment records, for every publication a pipeline
    made (comments starting with ``OWNER_TAG``); read by the slot's checks and by `cdc drop`."""
    rows = conn.execute(
        "SELECT pubname, obj_description(oid, 'pg_publication') FROM pg_publication "
        "WHERE obj_description(oid, 'pg_publication') LIKE %s",
        (OWNER_TAG + "%",),
    ).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for name, comment in rows:
        with contextlib.suppress(ValueError):
            claim = json.loads(comment[len(OWNER_TAG) :])
            if isinstance(claim, dict):
                out[name] = claim
    return out


class Slot:
    """One pipeline's slot and publication (names from the config or the pipeline's name)."""

    def __init__(
        self,
        config: PostgresSourceConfig,
        pipeline_name: str,
        slot: str,
        publication: str,
        tables: list[tuple[str, str]],
        catalog: Catalog,
        faults: Faults,
        relations: Relations,
    ) -> None:
        self.config = config
        self.pipeline_name = pipeline_name
        self.slot = slot
        self.publication = publication
        self.tables = tables
        self.catalog = catalog
        self.faults = faults
        self.relations = relations
        self.published = False  # ensure_publication ran: the publication is checked from now
        self._wal_warned = False  # retained WAL is over max_retained_wal_mb, already said so
        self._health_failed = False
        self._action_failed = False

    # --- ownership: a slot or publication another pipeline made is never dropped or altered ----

    def claim_comment(self) -> str:
        """The comment recording that this pipeline made (and owns) its publication and which
        slot goes with it."""
        return OWNER_TAG + json.dumps(
            {"pipeline": self.pipeline_name, "slot": self.slot}, sort_keys=True
        )

    def claims(self) -> dict[str, dict[str, Any]]:
        """Publication name -> the owner its comment records (see ``publication_claims``)."""
        return publication_claims(self.catalog.connect())

    def may_drop(self) -> None:
        """Refuse to drop the slot when another pipeline's publication records it, or when a
        connection is reading it (retryable: our own previous connection may still be ending)."""
        for pub, claim in self.claims().items():
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

    def ensure_publication(self, adopt: bool = False) -> None:
        """Create the publication (recording this pipeline as its owner) or check that an
        existing one is not another pipeline's, and add missing tables. ``adopt``: the sink
        holds a position, so an existing publication without an owner is this pipeline's from
        an earlier version: record the owner now."""
        cat = self.catalog.connect()
        oids: list[str] = []
        for schema, table in self.tables:
            row = cat.execute(
                "SELECT c.oid, c.relreplident, "
                "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
                (schema, table),
            ).fetchone()
            if row is None:
                raise self.faults.dropped(f"{schema}.{table}")
            if row[1] == "n" or (row[1] == "d" and not row[2]):
                log.warning(
                    "table %s.%s has no primary key and REPLICA IDENTITY %s: its updates and "
                    "deletes will fail on the server once published; add a primary key or "
                    "ALTER TABLE ... REPLICA IDENTITY FULL",
                    schema,
                    table,
                    "NOTHING" if row[1] == "n" else "DEFAULT",
                )
            oids.append(str(row[0]))
        wanted = {(s, t) for s, t in self.tables}
        mode = self.config.publication_autocreate_mode
        exists = cat.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,)
        ).fetchone()
        idents = sql.SQL(", ").join(sql.Identifier(s, t) for s, t in sorted(wanted))
        comment = sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
            sql.Identifier(self.publication), sql.Literal(self.claim_comment())
        )
        if not exists:
            if mode == "disabled":
                raise SourceError(
                    f"publication {self.publication!r} does not exist, and "
                    "publication_autocreate_mode is disabled (the daemon never creates it): "
                    f'have an administrator run CREATE PUBLICATION "{self.publication}" FOR '
                    f"TABLE {', '.join(sql_table(s, t) for s, t in sorted(wanted))}, or set "
                    "publication_autocreate_mode: filtered",
                    retryable=False,
                )
            what = sql.SQL("ALL TABLES") if mode == "all_tables" else sql.SQL("TABLE ") + idents
            try:
                with cat.transaction():
                    cat.execute(
                        sql.SQL("CREATE PUBLICATION {} FOR {}").format(
                            sql.Identifier(self.publication), what
                        )
                    )
                    cat.execute(comment)
            except psycopg.errors.InsufficientPrivilege as e:
                raise SourceError(
                    f"cannot create publication {self.publication!r} "
                    f"({'FOR ALL TABLES' if mode == 'all_tables' else 'FOR TABLE ...'}): "
                    f"{str(e).strip()}. Run cdc check for the privileges each "
                    "publication_autocreate_mode needs (all_tables: a superuser)",
                    retryable=False,
                ) from None
            log.info(
                "created publication %s for %s",
                self.publication,
                "all tables" if mode == "all_tables" else f"{len(wanted)} tables",
            )
            self.published = True
            return
        if mode != "filtered":
            # all_tables or disabled: the publication is used as it is, never altered
            absent = [(ns, n) for ns, n, _, published in self.table_states() if not published]
            if absent:
                raise self.faults.unpublished(absent, mode)
            self.published = True
            return
        claim = self.claims().get(self.publication)
        if claim is not None and claim.get("pipeline") != self.pipeline_name:
            raise self.faults.not_ours(
                f"publication {self.publication!r}", str(claim.get("pipeline"))
            )
        ours = claim is not None
        if (claim is None and adopt) or (claim is not None and claim.get("slot") != self.slot):
            try:
                cat.execute(comment)
                ours = True
            except psycopg.Error as e:  # not the owner: the publication stays unclaimed
                log.debug("cannot comment on publication %s: %s", self.publication, e)
        missing = {(ns, name) for ns, name, _, published in self.table_states() if not published}
        if missing:
            cat.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(self.publication),
                    sql.SQL(", ").join(sql.Identifier(s, t) for s, t in sorted(missing)),
                )
            )
            log.info("added %d tables to publication %s", len(missing), self.publication)
        if ours:
            self._trim(cat, wanted)
        self.published = True

    def _trim(self, cat: psycopg.Connection[Any], wanted: set[tuple[str, str]]) -> None:
        """Drop from this pipeline's own publication the tables it no longer captures (removed
        from ``tables``): the server then stops decoding their changes for this slot. A
        publication made by someone else is only ever added to."""
        # the tables as added (pg_publication_tables would list a partitioned table's leaves)
        held = {
            (str(r[0]), str(r[1]))
            for r in cat.execute(
                "SELECT pn.nspname, pc.relname FROM pg_publication_rel pr "
                "JOIN pg_publication p ON p.oid = pr.prpubid "
                "JOIN pg_class pc ON pc.oid = pr.prrelid "
                "JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE p.pubname = %s",
                (self.publication,),
            ).fetchall()
        }
        extra = sorted(held - wanted)
        if not extra:
            return
        cat.execute(
            sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                sql.Identifier(self.publication),
                sql.SQL(", ").join(sql.Identifier(s, t) for s, t in extra),
            )
        )
        log.info(
            "removed %d tables no longer captured from publication %s: %s",
            len(extra),
            self.publication,
            ", ".join(sql_table(s, t) for s, t in extra),
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

    def table_states(self) -> list[tuple[str, str, bool, bool]]:
        """(schema, table, exists, published) of every configured table. A partitioned table
        counts as published when any of its partitions is: pg_publication_tables lists the
        leaves unless the publication publishes via the root."""
        rows = (
            self.catalog.connect()
            .execute(
                "SELECT t.ns, t.name, c.oid IS NOT NULL, EXISTS (SELECT 1 "
                "FROM pg_class pc JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
                "JOIN pg_publication_tables p ON p.schemaname = pn.nspname "
                "AND p.tablename = pc.relname WHERE p.pubname = %s AND (pc.oid = c.oid "
                "OR pc.oid IN (SELECT relid FROM pg_partition_tree(c.oid)))) "
                "FROM unnest(%s::text[], %s::text[]) AS t(ns, name) "
                "LEFT JOIN pg_namespace n ON n.nspname = t.ns "
                "LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name",
                (self.publication, [t[0] for t in self.tables], [t[1] for t in self.tables]),
            )
            .fetchall()
        )
        return [(str(r[0]), str(r[1]), bool(r[2]), bool(r[3])) for r in rows]

    def publication_health(self) -> None:
        """Check that the publication still exists, publishes every configured table and every
        operation: a table removed from it (or an operation turned off) loses its changes
        silently. Re-adds what is missing when the publication is this pipeline's (with a
        warning: changes in between were not decoded); stops with the ways out otherwise.
        Called with the slot check, every slot_check_interval_s, once ``ensure_publication``
        set the publication up."""
        if not self.published:
            return
        try:
            cat = self.catalog.connect()
            pub = cat.execute(
                "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication "
                "WHERE pubname = %s",
                (self.publication,),
            ).fetchone()
            tables = self.table_states()
        except (psycopg.Error, SourceError) as e:
            log.debug("cannot read publication %s: %s", self.publication, e)
            return
        if pub is None:
            raise self.faults.publication_gone("it no longer exists")
        off = [
            op
            for op, on in zip(("insert", "update", "delete", "truncate"), pub, strict=True)
            if not on
        ]
        missing = [(ns, name) for ns, name, _, published in tables if not published]
        if not missing and not off:
            return
        known = {
            (r.schema.namespace, r.schema.table): relid for relid, r in self.relations.by_id.items()
        }
        for ns, name, exists, _ in tables:
            if exists:
                continue
            relid = known.get((ns, name))
            now = None
            if relid is not None:
                now = cat.execute(
                    "SELECT n.nspname || '.' || c.relname FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
                    (relid,),
                ).fetchone()
            if now is not None:
                raise self.faults.renamed(f"{ns}.{name}", str(now[0]))
            raise self.faults.dropped(f"{ns}.{name}")
        what = ", ".join(
            [f"table {ns}.{name}" for ns, name in missing] + [f"{op} changes" for op in off]
        )
        claim = self.claims().get(self.publication)
        if self.config.publication_autocreate_mode != "filtered" and missing:
            raise self.faults.unpublished(missing, self.config.publication_autocreate_mode)
        if (
            claim is None
            or claim.get("pipeline") != self.pipeline_name
            or self.config.publication_autocreate_mode != "filtered"
        ):
            raise SourceError(
                f"publication {self.publication!r} no longer publishes {what} (changed while "
                "the pipeline ran; it is not this pipeline's to change back): those changes are "
                f"not delivered. Have its owner restore it (ALTER PUBLICATION "
                f'"{self.publication}" ADD TABLE ... / SET (publish = \'insert, update, delete, '
                "truncate')), then restart; changes made in between were not decoded: "
                f"re-snapshot the tables concerned to fill the gap.{self.faults.retained_note()}",
                retryable=False,
            )
        ident = sql.Identifier(self.publication)
        try:
            if missing:
                cat.execute(
                    sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                        ident, sql.SQL(", ").join(sql.Identifier(s, t) for s, t in missing)
                    )
                )
            if off:
                cat.execute(
                    sql.SQL(
                        "ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate')"
                    ).format(ident)
                )
        except psycopg.Error as e:
            raise SourceError(
                f"publication {self.publication!r} no longer publishes {what} (changed while "
                f"the pipeline ran) and restoring it failed: {str(e).strip()}. Restore it as "
                "its owner, then restart; changes made in between were not decoded: "
                f"re-snapshot the tables concerned.{self.faults.retained_note()}",
                retryable=False,
            ) from None
        log.warning(
            "publication %s no longer published %s (changed while the pipeline ran): restored "
            "it; changes made in between (since at most slot_check_interval_s %.0fs ago, or "
            "since the pipeline started) were not decoded and are missing: re-snapshot the "
            "tables concerned to fill the gap",
            self.publication,
            what,
            self.config.slot_check_interval_s,
        )

    def health(self) -> None:
        """Publish the slot's retained WAL, warn once past the limit, fail when invalidated;
        check the publication (``publication_health``)."""
        self.publication_health()
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
