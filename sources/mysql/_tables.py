"""The captured tables and their versions: which tables the patterns capture, and each table's
columns as the catalog (for the snapshot) or a binlog table map (for the stream) describes them,
made into one ``TableVersion`` by the schema cache."""

from __future__ import annotations

import fnmatch
import time
from typing import Any

from pymysqlreplication.row_event import TableMapEvent

from cdc.errors import SourceError
from cdc.sources.mysql._schema import SchemaCache, TableVersion
from cdc.sources.mysql._server import SYSTEM_DATABASES, Server, quote
from cdc.sources.mysql._types import (
    TEXT_KINDS,
    UNREADABLE,
    ColumnType,
    from_binlog,
    from_catalog,
    undecodable_charset,
)

_FLOAT_CODE = 4  # MYSQL_TYPE_FLOAT in a table map


def _refuse_undecodable(
    db: str, table: str, cols: list[tuple[str, ColumnType, bool]], charsets: list[str | None]
) -> None:
    """Text in a character set Python has no codec for (swe7, keybcs2...) comes out of the
    binlog as bytes, which no string schema takes. ``charsets``: each column's (None: no text)."""
    for (name, t, _), charset in zip(cols, charsets, strict=True):
        if charset is not None and t.kind in TEXT_KINDS and undecodable_charset(charset):
            raise SourceError(
                f"column {db}.{table}.{name} ({t.kind}) has character set {charset}, which the "
                "binlog reader cannot decode (Python has no codec for it): convert the column "
                f"(ALTER TABLE {quote(db)}.{quote(table)} CONVERT TO CHARACTER SET utf8mb4) or "
                f"leave {db}.{table} out of source.tables",
                retryable=False,  # every restart would refuse it again
            )


def _refuse_unreadable(db: str, table: str, cols: list[tuple[str, ColumnType, bool]]) -> None:
    """MySQL 9's VECTOR has no decoder in the binlog library (nor in pymysql's results)."""
    for name, t, _ in cols:
        if t.kind in UNREADABLE:
            raise SourceError(
                f"column {db}.{table}.{name} has type {t.kind}, which this source cannot read "
                f"(neither from the binlog nor in the snapshot): leave {db}.{table} out of "
                "source.tables",
                retryable=False,  # every restart would refuse it again
            )


# How long a table the snapshot listed may show no columns (see Tables.catalog_version).
CATALOG_WAIT_S = 5.0


class Tables:
    """The captured tables of one source. What the catalog adds to a table map (FLOAT(M,D),
    MariaDB's JSON columns, defaults) is read once per table until ``forget`` (after a DDL)."""

    def __init__(
        self,
        server: Server,
        patterns: list[str],
        schemas: SchemaCache,
        *,
        signal_table: str | None = None,
    ) -> None:
        self.server = server
        self.schemas = schemas
        self._patterns = [tuple(p.split(".", 1)) for p in patterns]
        # the signal table carries the source's own marks and requests, never captured rows
        self._signal = tuple(signal_table.split(".", 1)) if signal_table else None
        self._match_cache: dict[tuple[str, str], bool] = {}
        self._float_cache: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
        self._json_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._default_cache: dict[tuple[str, str], dict[str, tuple[Any, Any]]] = {}

    def captured(self, db: str, table: str) -> bool:
        key = (db, table)
        hit = self._match_cache.get(key)
        if hit is None:
            hit = (
                db not in SYSTEM_DATABASES
                and (db, table) != self._signal
                and any(
                    fnmatch.fnmatchcase(db, d) and fnmatch.fnmatchcase(table, t)
                    for d, t in self._patterns
                )
            )
            self._match_cache[key] = hit
        return hit

    def present(self) -> list[str]:
        """The captured tables the server has now, as "database.table", sorted."""
        rows = self.server.all(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_TYPE = 'BASE TABLE'"
        )
        return sorted(f"{d}.{t}" for d, t in rows if self.captured(str(d), str(t)))

    def forget(self) -> None:
        """A DDL went by: read the catalog's additions again."""
        self._float_cache.clear()
        self._json_cache.clear()
        self._default_cache.clear()

    def _float_digits(self, db: str, table: str) -> dict[str, tuple[int, int]]:
        """The (M, D) of each FLOAT(M,D) column of ``db.table``: the binlog's table map does not
        carry them, and they make the column a double (as in Debezium)."""
        key = (db, table)
        hit = self._float_cache.get(key)
        if hit is None:
            rows = self.server.all(
                "SELECT COLUMN_NAME, NUMERIC_PRECISION, NUMERIC_SCALE "
                "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                "AND DATA_TYPE = 'float' AND NUMERIC_SCALE IS NOT NULL",
                (db, table),
            )
            hit = {str(n): (int(p or 0), int(sc)) for n, p, sc in rows}
            self._float_cache[key] = hit
        return hit

    def _json_columns(self, db: str, table: str) -> frozenset[str]:
        """MariaDB's JSON is LONGTEXT with a json_valid() check: find those columns."""
        key = (db, table)
        hit = self._json_cache.get(key)
        if hit is None:
            if self.server.is_mariadb:
                rows = self.server.all(
                    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                    "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
                    (db, table),
                )
                names = set()
                for (clause,) in rows:
                    c = str(clause).strip()
                    if c.startswith("json_valid(`") and c.endswith("`)"):
                        names.add(c[len("json_valid(`") : -2].replace("``", "`"))
                hit = frozenset(names)
            else:
                hit = frozenset()
            self._json_cache[key] = hit
        return hit

    def _defaults(self, db: str, table: str, names: list[str]) -> tuple[tuple[Any, Any], ...]:
        """(COLUMN_DEFAULT, EXTRA) of each of ``names``, read once per table until a DDL, the
        same for the snapshot and the binlog so that both make one table version."""
        key = (db, table)
        hit = self._default_cache.get(key)
        if hit is None:
            rows = self.server.all(
                "SELECT COLUMN_NAME, COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (db, table),
            )
            hit = self._default_cache[key] = {str(r[0]): (r[1], r[2]) for r in rows}
        return tuple(hit.get(n, (None, None)) for n in names)

    def catalog_version(self, cur: Any, db: str, table: str) -> TableVersion:
        """``db.table`` as the catalog describes it, read with ``cur`` (the snapshot's).

        The catalog is not part of the snapshot's consistent read: a table being altered or
        truncated (MariaDB swaps a copy in) or dropped since the snapshot listed it can show
        no columns for a moment. That is asked again for up to ``CATALOG_WAIT_S``, then a
        retryable error (the pipeline restarts; the snapshot goes on after the last row
        written), never a query without columns."""
        deadline = time.monotonic() + CATALOG_WAIT_S
        while True:
            cur.execute(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE, "
                "DATETIME_PRECISION, CHARACTER_OCTET_LENGTH, IS_NULLABLE, COLUMN_KEY, "
                "CHARACTER_SET_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            rows = cur.fetchall()
            if rows:
                break
            if time.monotonic() >= deadline:
                raise SourceError(
                    f"table {db}.{table} has no columns in information_schema: it was dropped, "
                    "or is being altered or truncated, since the snapshot began; the pipeline "
                    "restarts and the snapshot goes on after the last row written",
                    retryable=True,
                )
            time.sleep(0.1)
        json_cols = self._json_columns(db, table)
        cols: list[tuple[str, ColumnType, bool]] = []
        key: list[int] = []
        charsets: list[str | None] = []
        for i, (name, dt, ct, prec, scale, fsp, octets, nullable, ckey, cs) in enumerate(rows):
            t = from_catalog(str(dt), str(ct), prec, scale, fsp, octets, name in json_cols)
            cols.append((str(name), t, nullable == "YES"))
            charsets.append(None if cs is None else str(cs))
            if ckey == "PRI":
                key.append(i)
        _refuse_undecodable(db, table, cols, charsets)
        _refuse_unreadable(db, table, cols)
        defaults = self._defaults(db, table, [c[0] for c in cols])
        return self.schemas.version(db, table, cols, tuple(key), defaults, self.server.is_mariadb)

    def binlog_version(self, ev: TableMapEvent, where: str) -> TableVersion:
        """The table as the table map ``ev`` (at ``where``, file:pos) describes it."""
        json_cols = self._json_columns(ev.schema, ev.table)
        floats = (
            self._float_digits(ev.schema, ev.table)
            if any(c.type == _FLOAT_CODE for c in ev.columns)
            else {}
        )
        nulls = ev.null_bitmask
        cols: list[tuple[str, ColumnType, bool]] = []
        key: list[int] = []
        for i, c in enumerate(ev.columns):
            if not c.name:
                raise SourceError(
                    f"the binlog event at {where} has no column names for {ev.schema}.{ev.table}: "
                    "it was written while binlog_row_metadata was not FULL. Set "
                    "binlog_row_metadata=FULL on the server (SET GLOBAL and in my.cnf); events "
                    "written before that cannot be read: move the sink's data aside and start "
                    "over with a new snapshot"
                )
            nullable = bool(nulls[i // 8] & (1 << (i % 8)))
            cols.append((c.name, from_binlog(c, c.name in json_cols, floats.get(c.name)), nullable))
            if c.is_primary:
                key.append(i)
        charsets = [getattr(c, "character_set_name", None) for c in ev.columns]
        _refuse_undecodable(ev.schema, ev.table, cols, charsets)
        _refuse_unreadable(ev.schema, ev.table, cols)
        defaults = self._defaults(ev.schema, ev.table, [c[0] for c in cols])
        return self.schemas.version(
            ev.schema, ev.table, cols, tuple(key), defaults, self.server.is_mariadb
        )
