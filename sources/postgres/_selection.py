"""Which tables a Postgres pipeline captures: ``tables`` (exact names and patterns),
``exclude_tables`` and ``schemas``, resolved against the catalog.

As Debezium's ``table.include.list``: a pattern is a regular expression matched against the
whole ``schema.table`` (``public\\.order_.*``, ``sales_[0-9]+\\..*``). An entry is a pattern when
it holds one of ``* + ? [ ] ( ) { } | ^ \\`` (not the dot, nor ``$``, which names may hold)
outside double quotes; any other entry is an exact name (``parse_table``), kept even while the
table does not exist (a missing table is an error, as before). ``schemas`` adds every table of
the schemas named (exact names or patterns on the schema's name); ``exclude_tables`` (exact or
patterns) removes tables from all of that. Partitions are never selected by a pattern: their
changes come as the partitioned table's (``Relations.captured``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from cdc.sources.postgres.config import compile_pattern, is_pattern, parse_table

log = logging.getLogger(__name__)


class Selection:
    """A source config's table selection. ``static``: exact names only (no catalog needed)."""

    def __init__(
        self, tables: list[str], exclude: list[str] | None = None, schemas: list[str] | None = None
    ) -> None:
        self.exact: list[tuple[str, str]] = []
        self.patterns: list[re.Pattern[str]] = []
        for t in tables:
            if is_pattern(t):
                self.patterns.append(compile_pattern(t, "table"))
            else:
                self.exact.append(parse_table(t))
        self.exclude_exact: set[tuple[str, str]] = set()
        self.exclude_patterns: list[re.Pattern[str]] = []
        for t in exclude or []:
            if is_pattern(t):
                self.exclude_patterns.append(compile_pattern(t, "exclude_tables"))
            else:
                self.exclude_exact.add(parse_table(t))
        self.schema_names: set[str] = set()
        self.schema_patterns: list[re.Pattern[str]] = []
        for s in schemas or []:
            if is_pattern(s):
                self.schema_patterns.append(compile_pattern(s, "schemas"))
            else:
                self.schema_names.add(s)

        self._said: set[tuple[str, str]] = set()

    @property
    def static(self) -> bool:
        return not (self.patterns or self.schema_names or self.schema_patterns)

    def excluded(self, ns: str, name: str) -> bool:
        full = f"{ns}.{name}"
        return (ns, name) in self.exclude_exact or any(
            p.fullmatch(full) for p in self.exclude_patterns
        )

    def matches(self, ns: str, name: str) -> bool:
        """Whether the table ``ns.name`` is selected (by name alone: it may not exist)."""
        if self.excluded(ns, name):
            return False
        if (ns, name) in self.exact or ns in self.schema_names:
            return True
        full = f"{ns}.{name}"
        return any(p.fullmatch(full) for p in self.patterns) or any(
            p.fullmatch(ns) for p in self.schema_patterns
        )

    def resolve(self, conn: Any) -> list[tuple[str, str]]:
        """The captured tables now: the exact names in the order written, then the tables the
        patterns and schemas select (ordinary and partitioned tables, not partitions, outside
        the system schemas) in name order; excluded ones left out."""
        out = [t for t in self.exact if not self.excluded(*t)]
        if self.static:
            return out
        rows = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
            "AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%' "
            "ORDER BY 1, 2"
        ).fetchall()
        seen = set(out)
        for ns, name in rows:
            t = (str(ns), str(name))
            if t not in seen and self.matches(*t):
                out.append(t)
                seen.add(t)
        return out

    def published_only(
        self, conn: Any, tables: list[tuple[str, str]], publication: str
    ) -> list[tuple[str, str]]:
        """``tables`` without those a pattern or schema selected that ``publication`` does not
        hold (an exact name stays: its absence is an error the publication's check reports).
        For publication_autocreate_mode disabled, where the administrator decides what is
        published; each table left out is logged once."""
        held = {
            (str(a), str(b))
            for a, b in conn.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s "
                "UNION SELECT pn.nspname, pc.relname FROM pg_publication_rel pr "
                "JOIN pg_publication p ON p.oid = pr.prpubid "
                "JOIN pg_class pc ON pc.oid = pr.prrelid "
                "JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE p.pubname = %s",
                (publication, publication),
            ).fetchall()
        }
        keep = []
        for t in tables:
            if t in held or t in self.exact:
                keep.append(t)
            elif t not in self._said:
                self._said.add(t)
                log.warning(
                    "table %s.%s matches the selection but publication %s does not hold it "
                    "(publication_autocreate_mode: disabled): not captured until its owner "
                    "adds it",
                    *t,
                    publication,
                )
        return keep


def selection(config: Any) -> Selection:
    """The selection of a ``PostgresSourceConfig``."""
    return Selection(config.tables, config.exclude_tables, config.schemas)
