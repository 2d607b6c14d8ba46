"""Relations and their types: what a RELATION message (or the catalog, for the snapshot) says a
table looks like, as a ``TableSchema`` with per-column mappings and tuple decoders.

A relation keeps one version object while its shape is unchanged, so the tuple decoders
generated for it are reused; a new shape (DDL) makes a new version. Types are looked up in the
catalog once per connection and cached.
"""

from __future__ import annotations

import logging
from dataclasses import InitVar, dataclass, field
from typing import Any

from cdc import avro
from cdc.model import NO_DEFAULT, Column, TableSchema
from cdc.sources.postgres import _tuples
from cdc.sources.postgres._connections import Catalog
from cdc.sources.postgres._defaults import column_default
from cdc.sources.postgres._faults import Faults
from cdc.sources.postgres._pgoutput import RelationMessage
from cdc.sources.postgres._tuples import Decoder
from cdc.sources.postgres._types import Mapping, TypeInfo, mapping_for

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Relation:
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


class Relations:
    """The relation versions of one source, by relation id, and the type cache.

    ``tables``: the configured (schema, table) names, so that a rename onto another configured
    name is a new relation rather than a fault; ``specialise`` False: decode tuples by the
    generic path of _tuples (the reference) instead of decoders generated per version.
    """

    def __init__(
        self,
        catalog: Catalog,
        faults: Faults,
        prefix: str,
        tables: list[tuple[str, str]],
        specialise: bool = True,
    ) -> None:
        self.catalog = catalog
        self.faults = faults
        self.prefix = prefix
        self.tables = tables
        # tables decoded but not captured: the signal table (its rows are signals, not events)
        self.decoded: set[tuple[str, str]] = set()
        self.skipped: dict[int, RelationMessage] = {}  # announced, not captured (see adopt)
        self.specialise = specialise
        self.by_id: dict[int, Relation] = {}
        self._types: dict[int, TypeInfo | None] = {}

    def resolve_type(self, oid: int) -> TypeInfo | None:
        """Catalog facts of a type (cached; types are looked up again after a reconnect)."""
        if oid in self._types:
            return self._types[oid]
        row = (
            self.catalog.connect()
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

    def announced(self, msg: RelationMessage) -> None:
        """A RELATION message: the relation's (maybe new) version; a captured table renamed to a
        name not captured stops the pipeline (its topic would change)."""
        ns, name = msg.namespace, msg.name
        old = self.by_id.get(msg.relid)
        if (
            old is not None
            and (old.schema.namespace, old.schema.table) != (ns, name)
            and (ns, name) not in self.tables
        ):
            raise self.faults.renamed(old.schema.qualified, f"{ns}.{name}")
        if old is None and not self.captured(msg.relid, ns, name):
            # The publication holds it but the pipeline does not capture it (FOR ALL TABLES, a
            # publication made by someone else, a table just removed from `tables`): no entry
            # in by_id, so the stream skips its changes. The message is kept: the server sends
            # it once per session, and the table may join the selection later (``adopt``).
            self.skipped[msg.relid] = msg
            return
        self.skipped.pop(msg.relid, None)
        self.build(msg.relid, ns, name, msg.columns)

    def adopt(self) -> None:
        """After ``tables`` grew: build the relations announced earlier in this session and
        skipped then, which are captured now (their later changes carry no new RELATION)."""
        for relid, msg in list(self.skipped.items()):
            if self.captured(relid, msg.namespace, msg.name):
                del self.skipped[relid]
                self.build(relid, msg.namespace, msg.name, msg.columns)

    def captured(self, relid: int, ns: str, name: str) -> bool:
        """Whether the relation is a captured table or a partition of one (pgoutput names the
        partition unless the publication publishes via the root)."""
        if (ns, name) in self.tables or (ns, name) in self.decoded:
            return True
        ancestors = (
            self.catalog.connect()
            .execute(
                "SELECT n.nspname, c.relname FROM pg_partition_ancestors(%s) a "
                "JOIN pg_class c ON c.oid = a.relid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace",
                (relid,),
            )
            .fetchall()
        )
        return any((str(a), str(b)) in self.tables for a, b in ancestors)

    def build(self, relid: int, ns: str, name: str, cols: list[tuple[str, int, int]]) -> Relation:
        """The table version for these columns; the same object while the shape is unchanged."""
        cat = self.catalog.connect()
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
        old = self.by_id.get(relid)
        if (
            old is not None
            and old.schema.columns == table.columns
            and old.schema.key == table.key
            and old.schema.topic == table.topic
        ):
            return old  # the same shape announced again (every new session does): keep it
        if old is not None:
            log.info("table %s changed shape: new schema version", table.qualified)
        rel = Relation(relid, table, mappings, [c[0] for c in cols], table.key, self.specialise)
        self.by_id[relid] = rel
        return rel


def snapshot_row(rel: Relation, raw: list[Any], complete: bool) -> tuple[Any, ...]:
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
