"""The publication of one pipeline: ownership, creation by publication_autocreate_mode, the
captured tables kept in it, and its health while the pipeline runs.

Ownership: a publication a pipeline made carries a comment recording the pipeline and its slot
(``OWNER_TAG`` + JSON); a publication another pipeline's comment records is never used or
altered, and its slot never dropped (see ``Slot.may_drop``). Health, read every
slot_check_interval_s: the publication still publishing every configured table and operation.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

import psycopg
from psycopg import sql

from cdc.errors import SourceError
from cdc.sources.postgres._connections import Catalog
from cdc.sources.postgres._faults import Faults
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


class Publication:
    """One pipeline's publication (``tables``: what it must publish: the captured tables, and a
    signal table if any)."""

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
        self.published = False  # ensure ran: the publication is checked from now

    def claim_comment(self) -> str:
        """The comment recording that this pipeline made (and owns) its publication and which
        slot goes with it."""
        return OWNER_TAG + json.dumps(
            {"pipeline": self.pipeline_name, "slot": self.slot}, sort_keys=True
        )

    def claims(self) -> dict[str, dict[str, Any]]:
        """Publication name -> the owner its comment records (see ``publication_claims``)."""
        return publication_claims(self.catalog.connect())

    def ensure(self, adopt: bool = False) -> None:
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

    def health(self) -> None:
        """Check that the publication still exists, publishes every configured table and every
        operation: a table removed from it (or an operation turned off) loses its changes
        silently. Re-adds what is missing when the publication is this pipeline's (with a
        warning: changes in between were not decoded); stops with the ways out otherwise.
        Called with the slot check, every slot_check_interval_s, once ``ensure``
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
