"""``cdc verify`` on a Postgres database (a source or a target): connections and SQL.

Canonical texts (see cdc/verify.py): integers as digits; booleans 1/0; numeric (and money, as a
number) without trailing zeros; real/double precision rounded to 6 decimal places
(approximate); date YYYY-MM-DD; timestamps YYYY-MM-DD HH:MM:SS.ffffff (timestamptz in UTC);
time and interval as microseconds (an interval's months as 30 days, as extract(epoch) counts
them); bytea as lower-case hex; json, jsonb and arrays as jsonb prints them (MySQL's JSON prints
alike); everything else as the server prints it (uuid, text, enums, bit strings).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg

from cdc.errors import SourceError
from cdc.sources.postgres._lsn import parse_lsn
from cdc.verify import ColumnInfo, SqlSide, TableRef

log = logging.getLogger(__name__)

_INTEGERS = frozenset({"smallint", "integer", "bigint", "oid"})
_MICROS = "(round(extract(epoch FROM {x}) * 1000000))::bigint::text"


def _trimmed(s: str) -> str:
    """A decimal's text without trailing fractional zeros (and without a bare point)."""
    return f"(CASE WHEN strpos({s}, '.') > 0 THEN rtrim(rtrim({s}, '0'), '.') ELSE {s} END)"


def canonical(expr: str, column: ColumnInfo) -> str:
    x, t = expr, column.data_type
    if t in _INTEGERS:
        return f"{x}::text"
    if t == "boolean":
        return f"(CASE WHEN {x} THEN '1' WHEN NOT {x} THEN '0' END)"
    if t == "numeric":
        return _trimmed(f"{x}::text")
    if t == "money":  # a decimal in the change events: a numeric (or DECIMAL) in a target
        return _trimmed(f"{x}::numeric::text")
    if t in ("real", "double precision"):
        return _trimmed(f"round({x}::numeric, 6)::text")
    if t == "date":
        return f"to_char({x}, 'YYYY-MM-DD')"
    if t == "timestamp without time zone":
        return f"to_char({x}, 'YYYY-MM-DD HH24:MI:SS.US')"
    if t == "timestamp with time zone":
        return f"to_char({x} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    if t in ("time without time zone", "interval"):
        return _MICROS.format(x=x)
    if t == "bytea":
        return f"encode({x}, 'hex')"
    if t in ("json", "jsonb", "array"):
        # jsonb's text: keys ordered and spaced as MySQL prints its JSON type, so that a
        # json/jsonb or an array applied into a MySQL JSON column reads the same
        return f"to_jsonb({x})::text"
    return f"{x}::text"


class PostgresSide(SqlSide):
    """A Postgres database read by ``cdc verify`` (``label``: "source" or "target")."""

    dialect = "postgres"

    def __init__(self, dsn: str, label: str) -> None:
        self.label = label
        self._dsn = dsn
        try:
            self._conn = psycopg.connect(dsn, autocommit=True, client_encoding="UTF8")
        except psycopg.Error as e:
            raise SourceError(f"cannot connect to the {label} (Postgres): {e}") from None
        self._conn.execute("SET datestyle = ISO; SET TimeZone = 'UTC'")
        self._in_txn = False

    canonical = staticmethod(canonical)

    def _execute(self, sql: str, params: list[Any] | None) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cur:
            cur.execute(sql.encode(), params)  # type: ignore[arg-type]  # built, not user SQL
            return cur.fetchall() if cur.description else []

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def _row_hash(self, texts: list[str]) -> str:
        cols = ", ".join(f"coalesce({t}, chr(30))" for t in texts)
        return f"encode(sha256(convert_to(concat_ws(chr(31), {cols}), 'UTF8')), 'hex')"

    def _hash_sum(self, hash_sql: str) -> str:
        return f"sum(('x' || substr({hash_sql}, 1, 15))::bit(60)::bigint)"

    def snapshot(self) -> None:
        if self._in_txn:
            self._conn.execute("ROLLBACK")
        self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        self._in_txn = True

    def point(self) -> Any:
        """The WAL insert position: every commit the snapshot sees ends before it."""
        rows = self._query("SELECT pg_current_wal_insert_lsn()::text")
        return parse_lsn(str(rows[0][0]))

    def nudge(self) -> None:
        """A non-transactional logical message: WAL past the point, so the source's next
        heartbeat (sources.postgres heartbeat_interval_s) carries a position past it."""
        try:
            with psycopg.connect(self._dsn, autocommit=True) as c:
                c.execute("SELECT pg_logical_emit_message(false, 'cdc.verify', '')")
        except psycopg.Error as e:
            log.debug("verify: no logical message written (%s); waiting for new WAL", e)

    def applied(self, state: TableRef, pipeline: str) -> dict[str, Any] | None:
        name = self._name(TableRef(state.schema, state.table))
        if self._query("SELECT to_regclass(%s)", [name])[0][0] is None:
            return None
        rows = self._query(f"SELECT position::text FROM {name} WHERE pipeline = %s", [pipeline])
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    def describe(self, t: TableRef) -> tuple[list[ColumnInfo], list[str]] | None:
        rel = self._query("SELECT to_regclass(%s)::oid", [self._name(t)])[0][0]
        if rel is None:
            return None
        cols = self._query(
            "SELECT a.attname, coalesce(c.data_type, format_type(a.atttypid, a.atttypmod)), "
            "format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "LEFT JOIN information_schema.columns c ON c.table_schema = %s "
            "AND c.table_name = %s AND c.column_name = a.attname "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            [t.schema, t.table, rel],
        )
        key = self._query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)",
            [rel],
        )
        return [ColumnInfo(str(n), str(d).lower(), str(f)) for n, d, f in cols], [
            str(r[0]) for r in key
        ]

    def selected(self, config: Any) -> list[TableRef]:
        """The tables a source config captures (its patterns and schemas resolved here)."""
        from cdc.sources.postgres._selection import selection

        return [TableRef(ns, t) for ns, t in selection(config).resolve(self._conn)]

    def close(self) -> None:
        self._conn.close()


def reached(applied: dict[str, Any] | None, point: Any) -> bool:
    """Whether a Postgres source position (``{"lsn": L, ...}``) covers the WAL point: L is
    the end of the last transaction applied, and every transaction committed before it."""
    return applied is not None and int(applied.get("lsn", 0)) >= int(point)
