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
from sources.mysql._defaults import column_default
from sources.mysql._types import ColumnType, Converter, mapping


@dataclass(slots=True)
class TableVersion:
    schema: TableSchema
    from_binlog: list[Converter | None]
    from_select: list[Converter | None]
    sets: tuple[int, ...]  # indexes of SET columns (an empty set arrives as None from the binlog)


class SchemaCache:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
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
            [m.from_binlog for m in maps],
            [m.from_select for m in maps],
            tuple(i for i, (_, t, _) in enumerate(columns) if t.kind == "set"),
        )
        self._versions[sig] = v
        return v
