"""Table versions: binlog table maps and catalog rows -> ``TableSchema`` objects, shared.

A ``TableSchema`` is made once per distinct shape of a table and reused: the encoder caches per
object, so the table map that precedes every transaction must not make a new version. The snapshot
(from information_schema) and the stream (from the binlog's table map with full metadata) describe
columns the same way, so an unchanged table has one version across both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cdc.avro import topic_name
from cdc.model import Column, TableSchema
from cdc.sources.mysql._defaults import column_default
from cdc.sources.mysql._types import ColumnType, Converter, mapping


@dataclass(slots=True)
class TableVersion:
    schema: TableSchema
    from_binlog: list[Converter | None]
    from_select: list[Converter | None]
    sets: tuple[int, ...]  # indexes of SET columns (an empty set arrives as None from the binlog)
    # each column's (type, NOT NULL) and source.time_adjuster: what the compiled rows decoder
    # (sources/mysql/_rows.py) converts by, as the converters above do
    types: tuple[tuple[ColumnType, bool], ...] = ()
    adjust_years: bool = False

    def conversion_failure(self, values: list[Any], binlog: bool, where: str) -> str:
        """The message for a row of ``values`` (as read, before conversion) that a converter
        failed on, naming the table, the column, its type, the value and ``where`` it was read.
        The source raises it as a fatal error: the same row fails the same way after a restart,
        so retrying would hold the pipeline back for good."""
        convs = self.from_binlog if binlog else self.from_select
        s = self.schema
        for col, value, conv in zip(s.columns, values, convs, strict=True):
            if value is None or conv is None:
                continue
            try:
                conv(value)
            except Exception as e:
                return (
                    f"cannot convert column {s.namespace}.{s.table}.{col.name} ({col.source_type}) "
                    f"value {value!r:.200} read from {where}: {type(e).__name__}: {e}. The "
                    "pipeline stops here, as every restart would fail on the same row: change or "
                    f"delete the value, or leave {s.namespace}.{s.table} out of source.tables, "
                    "and report the value as a bug"
                )
        return f"cannot convert a row of {s.namespace}.{s.table} read from {where}"


class SchemaCache:
    def __init__(self, prefix: str, *, adjust_years: bool = False) -> None:
        self.prefix = prefix
        self.adjust_years = adjust_years  # source.time_adjuster
        self._versions: dict[tuple[Any, ...], TableVersion] = {}

    def version(
        self,
        db: str,
        table: str,
        columns: list[tuple[str, ColumnType, bool]],
        key: tuple[int, ...],
        defaults: tuple[tuple[Any, Any], ...] = (),
        mariadb: bool = False,
    ) -> TableVersion:
        """The version of ``db.table`` with ``columns`` (name, type, optional) and ``key``;
        ``defaults``: each column's (COLUMN_DEFAULT, EXTRA) from information_schema, or ()."""
        sig = (db, table, tuple(columns), key, defaults)
        hit = self._versions.get(sig)
        if hit is not None:
            return hit
        maps = [mapping(t) for _, t, _ in columns]
        raw = defaults or ((None, None),) * len(columns)
        cols = tuple(
            Column(
                name,
                m.avro,
                optional and i not in key,
                m.name,
                None if optional else m.fallback,
                column_default(d, extra, t, m, optional and i not in key, mariadb),
            )
            for i, ((name, t, optional), m, (d, extra)) in enumerate(
                zip(columns, maps, raw, strict=True)
            )
        )
        schema = TableSchema(topic_name(self.prefix, db, table), db, table, cols, key)
        v = TableVersion(
            schema,
            [
                m.converters(not c[2], self.adjust_years)[0]
                for m, c in zip(maps, columns, strict=True)
            ],
            [
                m.converters(not c[2], self.adjust_years)[1]
                for m, c in zip(maps, columns, strict=True)
            ],
            tuple(i for i, (_, t, _) in enumerate(columns) if t.kind == "set"),
            tuple((t, not optional) for _, t, optional in columns),
            self.adjust_years,
        )
        self._versions[sig] = v
        return v
