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
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import struct
import time
from collections.abc import Generator, Iterator
from dataclasses import InitVar, dataclass, field
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.pq.abc import PGconn

import cdc
from cdc import avro, metrics
from cdc.errors import PositionLost, SourceError
from cdc.model import NO_DEFAULT, ChangeBatch, Column, Position, RowChange, TableSchema, TxBoundary
from cdc.sources.postgres import _snapshot, _tuples
from cdc.sources.postgres._defaults import column_default
from cdc.sources.postgres._lsn import format_lsn, parse_lsn
from cdc.sources.postgres._snapshot import SnapshotTable
from cdc.sources.postgres._tuples import (
    UNCHANGED as UNCHANGED,
)  # re-exported: the marker, for tests
from cdc.sources.postgres._tuples import Decoder
from cdc.sources.postgres._types import Mapping, TypeInfo, mapping_for
from cdc.sources.postgres.config import PostgresSourceConfig, default_name, parse_table

log = logging.getLogger(__name__)

# The comment on a publication a pipeline made: OWNER_TAG + {"pipeline": name, "slot": slot}.
OWNER_TAG = "cdc:"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
SESSION_OPTIONS = (
    "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3 -c IntervalStyle=iso_8601 "
    "-c bytea_output=hex -c lc_monetary=C -c client_encoding=UTF8"
)  # client_encoding: the server converts a LATIN1 (etc.) database's text to UTF-8 for us

SOURCE_SCHEMA = avro.source_schema(
    "io.debezium.connector.postgresql",
    [
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "txId", "type": ["null", "long"], "default": None},
        {"name": "lsn", "type": ["null", "long"], "default": None},
        {"name": "xmin", "type": ["null", "long"], "default": None},
    ],
)

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_XLOG = struct.Struct(">QQq")  # 'w': data start, wal end, send time
_KEEPALIVE = struct.Struct(">Qq?")  # 'k': wal end, send time, reply requested
_BEGIN = struct.Struct(">QqI")  # final lsn, commit time, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit lsn, end lsn, commit time
_STATUS = struct.Struct(">cQQQqB")


@dataclass(slots=True)
class _Relation:
    """A version of a relation: its schema, column mappings and TupleData decoders.

    ``decode_new`` reads a complete tuple (an insert's, an update's new one), ``decode_old`` an
    old or key tuple (absent required columns take their fallback); both specialised for this
    version unless ``specialise`` is False (then the generic path of ``_tuples``).
    """

    relid: int
    schema: TableSchema
    mappings: list[Mapping]
    names: list[str]
    key_positions: tuple[int, ...]
    specialise: InitVar[bool] = True
    decode_new: Decoder = field(init=False)
    decode_old: Decoder = field(init=False)

    def __post_init__(self, specialise: bool) -> None:
        self.decode_new, self.decode_old = _tuples.decoders(self.schema, self.mappings, specialise)


def _cstring(buf: bytes, i: int) -> tuple[str, int]:
    end = buf.index(b"\x00", i)
    return buf[i:end].decode(), end + 1


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
    ) -> None:
        self.config = config
        self.pipeline_name = pipeline_name
        self.slot = config.slot or default_name(pipeline_name)
        self.publication = config.publication or default_name(pipeline_name)
        self.prefix = prefix
        self.max_events = max_events
        self.max_wait = max_wait_ms / 1000
        self.tx_metadata = transaction_metadata
        # False: decode tuples by the generic path of _tuples (the reference) instead of decoders
        # generated per relation version
        self.specialise = specialise
        self.tables = [self._split(t) for t in config.tables]
        self._stopping = False
        # stop() writes a byte here so that a select() waiting on an idle stream wakes at once
        # (instead of after status_interval_s); os.write on a non-blocking pipe is signal-safe.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._repl: PGconn | None = None
        self._catalog: psycopg.Connection[Any] | None = None
        self._relations: dict[int, _Relation] = {}
        self._types: dict[int, TypeInfo | None] = {}
        self._acked = 0
        self._sent_ack = -1
        self._last_status = 0.0
        self._wal_warned = False  # retained WAL is over max_retained_wal_mb, already said so
        self._health_failed = False
        self._action_failed = False
        self._change_lsn = 0  # WAL position of the message being decoded, for errors
        self._published = False  # _ensure_publication ran: the publication is checked from now
        self.db = ""

    @staticmethod
    def _split(name: str) -> tuple[str, str]:
        return parse_table(name)

    # --- connections --------------------------------------------------------------------------

    def _connect_catalog(self) -> psycopg.Connection[Any]:
        if self._catalog is None or self._catalog.closed:
            try:
                self._catalog = psycopg.connect(
                    self.config.dsn, autocommit=True, options=SESSION_OPTIONS
                )
            except psycopg.OperationalError as e:
                raise SourceError(f"cannot connect to postgres: {str(e).strip()}") from None
            self.db = self._catalog.info.dbname
        return self._catalog

    def _connect_replication(self) -> PGconn:
        params: dict[str, Any] = dict(psycopg.conninfo.conninfo_to_dict(self.config.dsn))
        params["replication"] = "database"
        params["options"] = SESSION_OPTIONS
        conn = pq.PGconn.connect(psycopg.conninfo.make_conninfo(**params).encode())
        if conn.status != pq.ConnStatus.OK:
            msg = conn.get_error_message().strip()
            conn.finish()
            hint = ""
            if "replication" in msg and ("permission" in msg or "must be" in msg):
                hint = "; grant it with ALTER ROLE <user> REPLICATION"
            raise SourceError(f"cannot open a replication connection to postgres: {msg}{hint}")
        return conn

    def check(self) -> list[str]:
        from cdc.sources.postgres._check import check

        return check(self.config, self.pipeline_name)

    # --- setup --------------------------------------------------------------------------------

    # --- ownership: a slot or publication another pipeline made is never dropped or altered ----

    def _claim_comment(self) -> str:
        """The comment recording that this pipeline made (and owns) its publication and which
        slot goes with it."""
        return OWNER_TAG + json.dumps(
            {"pipeline": self.pipeline_name, "slot": self.slot}, sort_keys=True
        )

    def _claims(self) -> dict[str, dict[str, Any]]:
        """Publication name -> the owner its comment records, for every publication a pipeline
        made (comments starting with ``OWNER_TAG``)."""
        rows = (
            self._connect_catalog()
            .execute(
                "SELECT pubname, obj_description(oid, 'pg_publication') FROM pg_publication "
                "WHERE obj_description(oid, 'pg_publication') LIKE %s",
                (OWNER_TAG + "%",),
            )
            .fetchall()
        )
        out: dict[str, dict[str, Any]] = {}
        for name, comment in rows:
            with contextlib.suppress(ValueError):
                claim = json.loads(comment[len(OWNER_TAG) :])
                if isinstance(claim, dict):
                    out[name] = claim
        return out

    def _not_ours(self, what: str, owner: str) -> SourceError:
        return SourceError(
            f"{what} belongs to pipeline {owner!r} (the publication's comment records it); "
            f"pipeline {self.pipeline_name!r} will neither use, alter nor drop it: give this "
            "pipeline a source.slot and source.publication of its own (cdc validate reports "
            "pipeline names that map to the same ones)",
            retryable=False,
        )

    def _may_drop_slot(self) -> None:
        """Refuse to drop the slot when another pipeline's publication records it, or when a
        connection is reading it (retryable: our own previous connection may still be ending)."""
        for pub, claim in self._claims().items():
            if claim.get("slot") == self.slot and claim.get("pipeline") != self.pipeline_name:
                raise self._not_ours(
                    f"replication slot {self.slot!r} (recorded by publication {pub!r})",
                    str(claim.get("pipeline")),
                )
        row = (
            self._connect_catalog()
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

    def _ensure_publication(self, adopt: bool = False) -> None:
        """Create the publication (recording this pipeline as its owner) or check that an
        existing one is not another pipeline's, and add missing tables. ``adopt``: the sink
        holds a position, so an existing publication without an owner is this pipeline's from
        an earlier version: record the owner now."""
        cat = self._connect_catalog()
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
                raise self._dropped(f"{schema}.{table}")
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
        exists = cat.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,)
        ).fetchone()
        idents = sql.SQL(", ").join(sql.Identifier(s, t) for s, t in sorted(wanted))
        comment = sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
            sql.Identifier(self.publication), sql.Literal(self._claim_comment())
        )
        if not exists:
            with cat.transaction():
                cat.execute(
                    sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                        sql.Identifier(self.publication), idents
                    )
                )
                cat.execute(comment)
            log.info("created publication %s for %d tables", self.publication, len(wanted))
            self._published = True
            return
        claim = self._claims().get(self.publication)
        if claim is not None and claim.get("pipeline") != self.pipeline_name:
            raise self._not_ours(f"publication {self.publication!r}", str(claim.get("pipeline")))
        if (claim is None and adopt) or (claim is not None and claim.get("slot") != self.slot):
            try:
                cat.execute(comment)
            except psycopg.Error as e:  # not the owner: the publication stays unclaimed
                log.debug("cannot comment on publication %s: %s", self.publication, e)
        missing = {(ns, name) for ns, name, _, published in self._table_states() if not published}
        if missing:
            cat.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(self.publication),
                    sql.SQL(", ").join(sql.Identifier(s, t) for s, t in sorted(missing)),
                )
            )
            log.info("added %d tables to publication %s", len(missing), self.publication)
        self._published = True

    def _slot_state(self) -> tuple[int, str | None] | None:
        row = (
            self._connect_catalog()
            .execute(
                "SELECT confirmed_flush_lsn::text, wal_status, plugin, database "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot,),
            )
            .fetchone()
        )
        if row is None:
            return None
        if row[2] != "pgoutput" or row[3] != self.db:
            raise SourceError(
                f"replication slot {self.slot!r} exists for plugin {row[2]!r} in database "
                f"{row[3]!r}; this pipeline needs a pgoutput slot in {self.db!r}: "
                "choose another source.slot",
                retryable=False,
            )
        return (parse_lsn(row[0]) if row[0] else 0), row[1]

    def _create_slot(self, conn: PGconn, export: bool) -> tuple[int, str | None]:
        """Create the slot; return its consistent point and the exported snapshot's name."""
        mode = "EXPORT_SNAPSHOT" if export else "NOEXPORT_SNAPSHOT"
        res = conn.exec_(f'CREATE_REPLICATION_SLOT "{self.slot}" LOGICAL pgoutput {mode}'.encode())
        if res.status != pq.ExecStatus.TUPLES_OK:
            raise SourceError(
                f"cannot create replication slot {self.slot!r}: "
                f"{(res.error_message or b'').decode().strip()}"
            )
        lsn = parse_lsn((res.get_value(0, 1) or b"0/0").decode())
        snapshot = res.get_value(0, 2)
        log.info("created replication slot %s at %s", self.slot, format_lsn(lsn))
        return lsn, snapshot.decode() if snapshot else None

    def _drop_slot(self) -> None:
        self._connect_catalog().execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
        log.info("dropped replication slot %s", self.slot)

    # --- relations ----------------------------------------------------------------------------

    def resolve_type(self, oid: int) -> TypeInfo | None:
        """Catalog facts of a type (cached; types are looked up again after a reconnect)."""
        if oid in self._types:
            return self._types[oid]
        row = (
            self._connect_catalog()
            .execute(
                "SELECT format_type(t.oid, NULL), t.typtype, t.typcategory, t.typelem, "
                "t.typbasetype, t.typtypmod, "
                "coalesce(array(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid "
                "ORDER BY e.enumsortorder), '{}') "
                "FROM pg_type t WHERE t.oid = %s",
                (oid,),
            )
            .fetchone()
        )
        info = None
        if row is not None:
            info = TypeInfo(
                oid, row[0], row[1], row[2], int(row[3]), int(row[4]), int(row[5]), tuple(row[6])
            )
        self._types[oid] = info
        return info

    def _relation(self, buf: bytes) -> None:
        (relid,) = _U32.unpack_from(buf, 1)
        ns, i = _cstring(buf, 5)
        name, i = _cstring(buf, i)
        i += 1  # replica identity setting
        (ncols,) = _U16.unpack_from(buf, i)
        i += 2
        cols: list[tuple[str, int, int]] = []
        for _ in range(ncols):
            i += 1  # flags: part of the replica identity (not the primary key, under FULL)
            cname, i = _cstring(buf, i)
            type_oid, typmod = struct.unpack_from(">Ii", buf, i)
            i += 8
            cols.append((cname, type_oid, typmod))
        old = self._relations.get(relid)
        if (
            old is not None
            and (old.schema.namespace, old.schema.table) != (ns, name)
            and (ns, name) not in self.tables
        ):
            raise self._renamed(old.schema.qualified, f"{ns}.{name}")
        self._build_table(relid, ns, name, cols)

    def _build_table(
        self, relid: int, ns: str, name: str, cols: list[tuple[str, int, int]]
    ) -> _Relation:
        """The table version for these columns; the same object while the shape is unchanged."""
        cat = self._connect_catalog()
        info = cat.execute(
            "SELECT a.attname, a.attnotnull, format_type(a.atttypid, a.atttypmod), "
            "coalesce(a.attnum = ANY(i.indkey), false), pg_get_expr(d.adbin, d.adrelid) "
            "FROM pg_attribute a "
            "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (relid,),
        ).fetchall()
        by_name = {r[0]: r for r in info}
        columns: list[Column] = []
        mappings: list[Mapping] = []
        key: list[int] = []
        for idx, (cname, type_oid, typmod) in enumerate(cols):
            cat_row = by_name.get(cname)
            m = mapping_for(type_oid, typmod, cat_row[2] if cat_row else None, self.resolve_type)
            is_key = bool(cat_row and cat_row[3])
            required = bool(cat_row and (cat_row[1] or is_key))
            default = (
                column_default(cat_row[4], type_oid, m, self.resolve_type) if cat_row else None
            )
            # A required column the server did not send (a key-only old row) takes its default
            # where the schema carries one, else the type's neutral value, as Debezium fills it.
            fallback = m.fallback if default is NO_DEFAULT or default is None else default
            columns.append(Column(cname, m.avro, not required, m.name, fallback, default))
            mappings.append(m)
            if is_key:
                key.append(idx)
        table = TableSchema(
            topic=avro.topic_name(self.prefix, ns, name),
            namespace=ns,
            table=name,
            columns=tuple(columns),
            key=tuple(key),
        )
        old = self._relations.get(relid)
        if (
            old is not None
            and old.schema.columns == table.columns
            and old.schema.key == table.key
            and old.schema.topic == table.topic
        ):
            return old  # the same shape announced again (every new session does): keep it
        if old is not None:
            log.info("table %s changed shape: new schema version", table.qualified)
        rel = _Relation(relid, table, mappings, [c[0] for c in cols], table.key, self.specialise)
        self._relations[relid] = rel
        return rel

    def _row(self, rel: _Relation, raw: list[Any], complete: bool) -> tuple[Any, ...]:
        """Convert a text tuple (the snapshot's rows); ``complete`` False: absent columns take
        their fallback."""
        try:
            return _tuples.convert_row(rel.schema, rel.mappings, raw, complete)
        except _tuples.ValueConversionError as e:
            key = ", ".join(f"{rel.schema.columns[k].name}={raw[k]!r:.80}" for k in rel.schema.key)
            raise e.located(
                f"in the snapshot of {rel.schema.qualified} (row {key or 'without a key'})",
                "correct the value in that row and restart; the snapshot resumes after the "
                "last row written",
            ) from e

    # --- streaming ----------------------------------------------------------------------------

    def _position_problem(
        self, state: tuple[int, str | None] | None, start: Position
    ) -> str | None:
        """Why the slot cannot resume from ``start``, or None when it can."""
        start_lsn = int(start["lsn"])
        if state is None:
            return (
                f"replication slot {self.slot!r} does not exist, but the sink's last position is "
                f"{format_lsn(start_lsn)}: changes since then are gone"
            )
        confirmed, wal_status = state
        if wal_status == "lost":
            return self._invalidated()
        if confirmed > start_lsn:
            return (
                f"replication slot {self.slot!r} is at {format_lsn(confirmed)}, past the sink's "
                f"last position {format_lsn(start_lsn)}: the changes between were consumed "
                "elsewhere (use a slot only this pipeline reads)"
            )
        return None

    def _invalidated(self) -> str:
        return (
            f"replication slot {self.slot!r} was invalidated (wal_status lost: the server "
            "removed WAL it needed, see max_slot_wal_keep_size)"
        )

    def _ways_out(self) -> str:
        return (
            "Ways out: set snapshot: when_needed and restart to drop the slot and take a new "
            "snapshot automatically; or move the sink's data aside, drop the slot (SELECT "
            f"pg_drop_replication_slot('{self.slot}')) and restart for a new initial snapshot. "
            "To keep it from happening again, raise max_slot_wal_keep_size (-1: no limit) and "
            "keep the pipeline running"
        )

    def _stream_error(self, msg: str) -> SourceError:
        """The error for a failed or ended stream: PositionLost when the slot lost its WAL."""
        if "invalid byte sequence for encoding" in msg:
            # text of a SQL_ASCII database that is not UTF-8: it fails again on every restart
            return SourceError(f"{msg.strip()}. {_tuples.NOT_UTF8}", retryable=False)
        if any(
            s in msg
            for s in ("invalidated", "can no longer get changes", "has already been removed")
        ):
            detail = " ".join(msg.split()).rstrip(".")
            return PositionLost(
                f"replication slot {self.slot!r} can no longer be read (the server removed WAL "
                f"it needed): {detail}. {self._ways_out()}"
            )
        if "publication" in msg and "does not exist" in msg:
            return self._publication_gone(" ".join(msg.split()).rstrip("."))
        return SourceError(msg)

    # --- faults that cannot heal: stop, say why, the ways out, and what the slot costs ------------

    def _retained_note(self) -> str:
        """The slot's WAL cost while the pipeline is stopped (best effort: '' when unknown)."""
        try:
            row = (
                self._connect_catalog()
                .execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
                    "FROM pg_replication_slots WHERE slot_name = %s",
                    (self.slot,),
                )
                .fetchone()
            )
        except (psycopg.Error, SourceError):
            row = None
        now = f" ({int(row[0] or 0) >> 20} MB now)" if row is not None else ""
        return (
            f" Meanwhile replication slot {self.slot!r} keeps every WAL file from its position"
            f"{now}, growing with every write on the server: drop it (SELECT "
            f"pg_drop_replication_slot('{self.slot}')) if this pipeline will not resume soon."
        )

    def _publication_gone(self, detail: str) -> SourceError:
        return SourceError(
            f"publication {self.publication!r} was dropped after the slot's position ({detail}): "
            "the server decodes the changes since then with the publication as it was when "
            "they were written, so a recreated one does not help and every restart fails the "
            "same way. Ways out: drop the slot, move the sink's data aside and restart for a new "
            "snapshot (or set snapshot: when_needed and drop the slot); or, accepting that the "
            "changes in between are lost, advance the slot past the recreation with "
            f"SELECT pg_replication_slot_advance('{self.slot}', pg_current_wal_lsn()) and "
            f"restart.{self._retained_note()}",
            retryable=False,
        )

    def _renamed(self, old: str, new: str) -> SourceError:
        return SourceError(
            f"captured table {old} was renamed to {new}: its topic would change (to "
            f"{self.prefix}.{new}), so the pipeline stops rather than keep writing to the old "
            f"one or drop its changes. Put {new} in source.tables in place of {old} and restart: "
            "the pipeline resumes where it stopped, nothing lost; changes before the rename "
            f"keep the old topic.{self._retained_note()}",
            retryable=False,
        )

    def _dropped(self, table: str) -> SourceError:
        return SourceError(
            f"captured table {table} does not exist in database {self.db!r} (dropped, or renamed "
            "while the pipeline was not running); its changes up to the drop were delivered. "
            "Remove it from source.tables (or create it, or put its new name there) and restart."
            f"{self._retained_note()}",
            retryable=False,
        )

    def _table_states(self) -> list[tuple[str, str, bool, bool]]:
        """(schema, table, exists, published) of every configured table. A partitioned table
        counts as published when any of its partitions is: pg_publication_tables lists the
        leaves unless the publication publishes via the root."""
        rows = (
            self._connect_catalog()
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

    def _publication_health(self) -> None:
        """Check that the publication still exists, publishes every configured table and every
        operation: a table removed from it (or an operation turned off) loses its changes
        silently. Re-adds what is missing when the publication is this pipeline's (with a
        warning: changes in between were not decoded); stops with the ways out otherwise.
        Called with the slot check, every slot_check_interval_s, once ``_ensure_publication``
        set the publication up."""
        if not self._published:
            return
        try:
            cat = self._connect_catalog()
            pub = cat.execute(
                "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication "
                "WHERE pubname = %s",
                (self.publication,),
            ).fetchone()
            tables = self._table_states()
        except (psycopg.Error, SourceError) as e:
            log.debug("cannot read publication %s: %s", self.publication, e)
            return
        if pub is None:
            raise self._publication_gone("it no longer exists")
        off = [
            op
            for op, on in zip(("insert", "update", "delete", "truncate"), pub, strict=True)
            if not on
        ]
        missing = [(ns, name) for ns, name, _, published in tables if not published]
        if not missing and not off:
            return
        known = {
            (r.schema.namespace, r.schema.table): relid for relid, r in self._relations.items()
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
                raise self._renamed(f"{ns}.{name}", str(now[0]))
            raise self._dropped(f"{ns}.{name}")
        what = ", ".join(
            [f"table {ns}.{name}" for ns, name in missing] + [f"{op} changes" for op in off]
        )
        claim = self._claims().get(self.publication)
        if claim is None or claim.get("pipeline") != self.pipeline_name:
            raise SourceError(
                f"publication {self.publication!r} no longer publishes {what} (changed while "
                "the pipeline ran; it is not this pipeline's to change back): those changes are "
                f"not delivered. Have its owner restore it (ALTER PUBLICATION "
                f'"{self.publication}" ADD TABLE ... / SET (publish = \'insert, update, delete, '
                "truncate')), then restart; changes made in between were not decoded: "
                f"re-snapshot the tables concerned to fill the gap.{self._retained_note()}",
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
                f"re-snapshot the tables concerned.{self._retained_note()}",
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

    def _start_streaming(self, conn: PGconn, start_lsn: int) -> PGconn:
        cmd = (
            f'START_REPLICATION SLOT "{self.slot}" LOGICAL {format_lsn(start_lsn)} '
            f"(proto_version '1', publication_names '{self.publication}')"
        )
        res = conn.exec_(cmd.encode())
        if res.status != pq.ExecStatus.COPY_BOTH:
            msg = (res.error_message or b"").decode().strip()
            conn.finish()
            raise self._stream_error(f"START_REPLICATION failed: {msg}")
        conn.nonblocking = 1
        log.info(
            "streaming from slot %s at %s (publication %s)",
            self.slot,
            format_lsn(start_lsn) if start_lsn else "its confirmed position",
            self.publication,
        )
        state = self._slot_state()
        # Never report a flush position behind the slot's: some server versions move it back.
        self._acked = max(self._acked, state[0] if state else 0)
        self._repl = conn
        return conn

    def _snapshot_tables(self, done: list[str], after: dict[str, Any]) -> list[SnapshotTable]:
        cat = self._connect_catalog()
        out = []
        for ns, name in self.tables:
            qualified = f"{ns}.{name}"
            if qualified in done:
                continue
            row = cat.execute(
                "SELECT c.oid, c.reltuples::bigint FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (ns, name),
            ).fetchone()
            assert row is not None  # checked by _ensure_publication
            relid = int(row[0])
            cols = cat.execute(
                "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = %s "
                "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                (relid,),
            ).fetchall()
            rel = self._build_table(relid, ns, name, [(c[0], int(c[1]), int(c[2])) for c in cols])
            key_types = [
                str(
                    cat.execute(
                        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                        "WHERE attrelid = %s AND attname = %s",
                        (relid, rel.schema.columns[k].name),
                    ).fetchone()[0]  # type: ignore[index]
                )
                for k in rel.schema.key
            ]
            resume = after.get(qualified) if rel.schema.key else None
            out.append(SnapshotTable(rel, key_types, int(row[1]), resume))
        return out

    def _recv(self, conn: PGconn, timeout: float) -> bytes | None:
        n, data = conn.get_copy_data(1)
        if n == 0:
            r, _, _ = select.select([conn.socket, self._wake_r], [], [], max(timeout, 0))
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
        raise self._stream_error(
            f"replication stream ended: {msg.decode(errors='replace').strip()}"
        )

    def _send_status(self, conn: PGconn, force: bool = False) -> None:
        now = time.monotonic()
        if (
            not force
            and self._acked == self._sent_ack
            and now - self._last_status < self.config.status_interval_s
        ):
            return
        lsn = self._acked
        ts = time.time_ns() // 1000 - PG_EPOCH_US
        conn.put_copy_data(_STATUS.pack(b"r", lsn, lsn, lsn, ts, 0))
        conn.flush()
        self._sent_ack = lsn
        self._last_status = now

    def acknowledge(self, upto: Position) -> None:
        lsn = int(upto["lsn"])
        if lsn > self._acked:
            self._acked = lsn
        if self._repl is not None:
            self._send_status(self._repl)

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
        self._connect_catalog()
        self._ensure_publication(adopt=start is not None)
        if start is not None and start.get("snapshot_only_done"):
            log.info("snapshot: initial_only snapshot already complete; nothing to do")
            return
        snap = start.get("snapshot") if start else None
        fetch = self.config.snapshot_fetch_size
        n = self.config.snapshot_parallelism
        if mode == "initial_only" and (start is None or snap is not None):
            done = list(snap["done"]) if snap else []
            conns = _snapshot.open_connections(self.config.dsn, SESSION_OPTIONS, n, None)
            tables = self._snapshot_tables(done, snap["after"] if snap else {})
            counts = dict(snap["rows"]) if snap else {}
            final = {"lsn": 0, "snapshot_only_done": True}
            yield from _snapshot.run(self, conns, tables, done, counts, 0, fetch, final)
            return
        state = self._slot_state()
        fresh = start is None and mode in ("initial", "when_needed")
        if start is not None:
            problem = self._position_problem(state, start)
            if problem is not None:
                if mode != "when_needed":
                    raise PositionLost(f"{problem}. {self._ways_out()}")
                log.warning("%s; snapshot: when_needed, so taking a new snapshot", problem)
                fresh, snap = True, None
        conn = self._connect_replication()
        try:
            if fresh:
                if state is not None:
                    # nothing in the sink depends on it: a new one replaces it, if it is ours
                    self._may_drop_slot()
                    self._drop_slot()
                lsn, name = self._create_slot(conn, export=True)
                conns = _snapshot.open_connections(self.config.dsn, SESSION_OPTIONS, n, name)
                tables = self._snapshot_tables([], {})
                yield from self._watched(
                    _snapshot.run(self, conns, tables, [], {}, lsn, fetch, {"lsn": lsn})
                )
                start = {"lsn": lsn}
            elif snap is not None:
                assert start is not None
                lsn = int(start["lsn"])
                done = list(snap["done"])
                conns = _snapshot.open_connections(self.config.dsn, SESSION_OPTIONS, n, None)
                tables = self._snapshot_tables(done, snap["after"])
                yield from self._watched(
                    _snapshot.run(
                        self, conns, tables, done, dict(snap["rows"]), lsn, fetch, {"lsn": lsn}
                    )
                )
                start = {"lsn": lsn}
            elif state is None:
                self._create_slot(conn, export=False)
            if self._stopping:
                return
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

    def _watched(self, batches: Generator[ChangeBatch]) -> Iterator[ChangeBatch]:
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
                    self._slot_health()
                    next_check = time.monotonic() + interval
        finally:
            batches.close()  # its worker threads and connections, now rather than at collection

    def _stream(self, conn: PGconn, start: Position | None) -> Iterator[ChangeBatch]:
        resume_lsn = int(start["lsn"]) if start else 0  # end LSN of the last complete transaction
        partial_txn = int(start["txn"]) if start and start.get("txn") is not None else None
        partial_skip = int(start.get("skip", 0)) if start else 0

        events: list[RowChange | TxBoundary] = []
        first_at = 0.0
        # the transaction being read
        in_txn = skip_txn = began = False
        skip_n = seq = txn_lsn = xid = ts_us = total = 0
        tx_id = ""
        per_table: dict[str, int] = {}
        last_commit_lsn = 0  # commit LSN of the last transaction seen in this session
        tx_meta = self.tx_metadata
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

        def position() -> Position:
            if in_txn and seq > 0 and not skip_txn:
                return {"lsn": resume_lsn, "txn": txn_lsn, "skip": seq}
            return {"lsn": resume_lsn}

        def add(ev: RowChange | TxBoundary) -> None:
            nonlocal seq, first_at
            if seq >= skip_n:
                if not events:
                    first_at = time.monotonic()
                events.append(ev)
            seq += 1

        def change(
            table: TableSchema, op: Any, before: Any, after: Any, src: dict[str, Any]
        ) -> None:
            nonlocal began, total
            if not began:
                # BEGIN is emitted with the first captured change: transactions that touch no
                # captured table produce nothing.
                began = True
                if tx_meta:
                    add(TxBoundary("BEGIN", tx_id, ts_us // 1000, f"{txn_lsn}:{seq}"))
            total += 1
            n = per_table.get(table.qualified, 0) + 1
            per_table[table.qualified] = n
            add(
                RowChange(
                    table,
                    op,
                    before,
                    after,
                    src,
                    ts_us // 1000,
                    f"{txn_lsn}:{seq}",
                    (tx_id, total, n) if tx_meta else None,
                )
            )

        while True:
            if events and (
                len(events) >= self.max_events
                or self._stopping
                or (not in_txn and time.monotonic() - first_at >= self.max_wait)
            ):
                yield ChangeBatch(events, position())
                events = []
                yielded = resume_lsn
                next_hb = time.monotonic() + hb
            if self._stopping:
                return
            if confirm and not in_txn:
                confirm = False
                if events:
                    yield ChangeBatch(events, position())
                    events = []
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
                    yield ChangeBatch([], {"lsn": target})
                    yield ChangeBatch([], {"lsn": target})
                    next_hb = time.monotonic() + hb
                    if self._stopping:
                        return
                    self._send_status(conn, force=True)
                continue
            now = time.monotonic()
            if now >= next_health:
                self._slot_health()
                next_health = now + self.config.slot_check_interval_s
            if action and now >= next_action:
                self._heartbeat_action(action)
                next_action = now + hb
            beat = hb > 0 and not events and not in_txn and max(wal_end, resume_lsn) > yielded
            if beat and now >= next_hb:
                resume_lsn = yielded = max(wal_end, resume_lsn)
                next_hb = now + hb
                yield ChangeBatch([], {"lsn": resume_lsn})
                continue
            if events:
                wait = max(0.0, first_at + self.max_wait - now)
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
            if kind == 107:  # 'k' keepalive
                end, _, reply = _KEEPALIVE.unpack_from(data, 1)
                wal_end = max(wal_end, end)
                if reply:
                    self._send_status(conn, force=True)
                    confirm = True
                continue
            if kind != 119:  # 'w' XLogData
                continue
            msg_lsn = self._change_lsn = _XLOG.unpack_from(data, 1)[0]
            buf = data[25:]
            tag = buf[0]
            if tag == 66:  # 'B' begin
                txn_lsn, commit_ts, xid = _BEGIN.unpack_from(buf, 1)
                ts_us = commit_ts + PG_EPOCH_US
                in_txn, began = True, False
                skip_txn = txn_lsn < resume_lsn  # already delivered before the restart
                seq = total = 0
                skip_n = partial_skip if partial_txn == txn_lsn else 0
                tx_id = f"{xid}:{txn_lsn}"
                per_table = {}
            elif tag == 67:  # 'C' commit
                _, commit_lsn, end_lsn, _ = _COMMIT.unpack_from(buf, 1)
                if not skip_txn:
                    if began and tx_meta:
                        add(
                            TxBoundary(
                                "END", tx_id, ts_us // 1000, f"{txn_lsn}:{seq}", total, per_table
                            )
                        )
                    last_commit_lsn = commit_lsn
                    resume_lsn = end_lsn
                in_txn = False
            elif tag == 82:  # 'R' relation
                self._relation(buf)
            elif skip_txn:
                continue
            elif tag == 73:  # 'I' insert
                rel = self._relations[_U32.unpack_from(buf, 1)[0]]
                after, _ = rel.decode_new(buf, 6)
                table = rel.schema
                src = self._source_block(table, ts_us, xid, msg_lsn, last_commit_lsn)
                change(table, "c", None, after, src)
            elif tag == 85:  # 'U' update
                rel = self._relations[_U32.unpack_from(buf, 1)[0]]
                table = rel.schema
                before = None
                i = 5
                if buf[i] in (75, 79):  # 'K' key only / 'O' old row (REPLICA IDENTITY FULL)
                    decode_old = rel.decode_new if buf[i] == 79 else rel.decode_old
                    before, i = decode_old(buf, i + 1)
                after, _ = rel.decode_new(buf, i + 1)
                src = self._source_block(table, ts_us, xid, msg_lsn, last_commit_lsn)
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
            elif tag == 68:  # 'D' delete
                rel = self._relations[_U32.unpack_from(buf, 1)[0]]
                before, _ = (rel.decode_new if buf[5] == 79 else rel.decode_old)(buf, 6)
                table = rel.schema
                src = self._source_block(table, ts_us, xid, msg_lsn, last_commit_lsn)
                change(table, "d", before, None, src)
            elif tag == 84:  # 'T' truncate
                (nrel,) = _U32.unpack_from(buf, 1)
                for k in range(nrel):
                    table = self._relations[_U32.unpack_from(buf, 6 + 4 * k)[0]].schema
                    src = self._source_block(table, ts_us, xid, msg_lsn, last_commit_lsn)
                    change(table, "t", None, None, src)
            # 'O' origin, 'Y' type, 'M' message: nothing to emit

    def _slot_health(self) -> None:
        """Publish the slot's retained WAL, warn once past the limit, fail when invalidated;
        check the publication (``_publication_health``)."""
        self._publication_health()
        try:
            row = (
                self._connect_catalog()
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
            raise PositionLost(f"{self._invalidated()}. {self._ways_out()}")
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

    def _heartbeat_action(self, query: str) -> None:
        try:
            self._connect_catalog().execute(query.encode())
        except (psycopg.Error, SourceError) as e:
            if not self._action_failed:
                self._action_failed = True
                log.warning("heartbeat_action_query failed (ignored): %s", str(e).strip())
            return
        if self._action_failed:
            self._action_failed = False
            log.info("heartbeat_action_query succeeded again")

    def _source_block(
        self,
        table: TableSchema,
        ts_us: int,
        xid: int | None,
        lsn: int,
        last_commit_lsn: int,
        snapshot: str = "false",
    ) -> dict[str, Any]:
        return {
            "version": cdc.__version__,
            "connector": "postgresql",
            "name": self.prefix,
            "ts_ms": ts_us // 1000,
            "snapshot": snapshot,
            "db": self.db,
            # Debezium's ["<last commit lsn>","<lsn>"], as json.dumps with compact separators
            # writes it (formatted by hand: json.dumps per row was 13 % of a streaming profile).
            "sequence": None
            if snapshot != "false"
            else f'["{last_commit_lsn}","{lsn}"]'
            if last_commit_lsn
            else f'[null,"{lsn}"]',
            "ts_us": ts_us,
            "ts_ns": ts_us * 1000,
            "schema": table.namespace,
            "table": table.table,
            "txId": xid,
            "lsn": lsn,
            "xmin": None,
        }

    def close(self) -> None:
        if self._repl is not None:
            with contextlib.suppress(Exception):
                self._send_status(self._repl, force=True)
            self._repl.finish()
            self._repl = None
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
