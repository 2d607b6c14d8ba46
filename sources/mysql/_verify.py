"""``cdc verify`` on a MySQL/MariaDB server (a source or a target): connections and SQL.

Canonical texts as the Postgres side writes them (see cdc/verify.py and
sources/postgres/_verify.py): integers (and BIT(1), YEAR) as digits, a wider BIT as its binary
digits, DECIMAL without trailing zeros, FLOAT/DOUBLE rounded to 6 decimal places (approximate),
DATE YYYY-MM-DD, DATETIME/TIMESTAMP YYYY-MM-DD HH:MM:SS.ffffff (the session runs in UTC, so a
TIMESTAMP is UTC), TIME as signed microseconds, binary strings as lower-case hex, everything
else as the server prints it. Rows are hashed with SHA-256 (MySQL 9 has no MD5()).
"""

from __future__ import annotations

import json
from typing import Any

import pymysql

from cdc.errors import SourceError
from cdc.sources.mysql._server import binlog_status_sql, parse_gtid_state, quote
from cdc.verify import ColumnInfo, SqlSide, TableRef

_INTEGERS = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint", "year"})
_BINARY = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})


def _trimmed(s: str) -> str:
    return (
        f"(CASE WHEN LOCATE('.', {s}) > 0 THEN TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM "
        f"{s})) ELSE {s} END)"
    )


def canonical(expr: str, column: ColumnInfo) -> str:
    """Literal percent signs are doubled (the driver formats the statement)."""
    x, t = expr, column.data_type
    if t in _INTEGERS:
        return f"CAST({x} AS CHAR)"
    if t == "bit":
        # BIT(1) is a boolean in the change events (1/0); a wider BIT a bit string, which a
        # Postgres target holds as bit varying(n) and prints as n binary digits
        if column.column_type.replace(" ", "").lower() in ("bit(1)", "bit"):
            return f"CAST({x} + 0 AS CHAR)"
        n = "".join(ch for ch in column.column_type if ch.isdigit()) or "1"
        return f"LPAD(BIN({x} + 0), {int(n)}, '0')"
    if t == "decimal":
        return _trimmed(f"CAST({x} AS CHAR)")
    if t in ("float", "double", "real"):
        return _trimmed(f"CAST(CAST({x} AS DECIMAL(65,6)) AS CHAR)")
    if t == "date":
        return f"DATE_FORMAT({x}, '%%Y-%%m-%%d')"
    if t in ("datetime", "timestamp"):
        return f"DATE_FORMAT({x}, '%%Y-%%m-%%d %%H:%%i:%%s.%%f')"
    if t == "time":
        # from its parts: TIME_TO_SEC keeps the fraction on some servers and not on others;
        # HOUR() and the rest are magnitudes (a TIME may be negative, and past 24 hours)
        return (
            f"CAST(IF({x} < 0, -1, 1) * ((HOUR({x}) * 3600 + MINUTE({x}) * 60 + SECOND({x})) "
            f"* 1000000 + MICROSECOND({x})) AS CHAR)"
        )
    if t in _BINARY:
        return f"LOWER(HEX({x}))"
    return f"CAST({x} AS CHAR)"


class MySqlSide(SqlSide):
    """A MySQL/MariaDB server read by ``cdc verify`` (``label``: "source" or "target")."""

    dialect = "mysql"

    def __init__(self, host: str, port: int, user: str, password: str, label: str) -> None:
        self.label = label
        try:
            self._conn = pymysql.connect(
                host=host,
                port=port,
                user=user,
                password=password,
                charset="utf8mb4",
                autocommit=True,
            )
        except pymysql.err.MySQLError as e:
            raise SourceError(
                f"cannot connect to the {label} (mysql at {host}:{port} as {user!r}): "
                f"{e.args[-1] if e.args else e}"
            ) from None
        self._query("SET SESSION time_zone = '+00:00'")
        self._query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        version = str(self._query("SELECT VERSION()")[0][0])
        self._mariadb = "mariadb" in version.lower()
        nums = tuple(int(p) for p in version.split("-")[0].split(".")[:3] if p.isdigit())
        self._status_sql = binlog_status_sql(self._mariadb, nums)

    canonical = staticmethod(canonical)

    def _execute(self, sql: str, params: list[Any] | None) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def quote(self, name: str) -> str:
        return quote(name)

    def _row_hash(self, texts: list[str]) -> str:
        cols = ", ".join(f"COALESCE({t}, CHAR(30 USING utf8mb4))" for t in texts)
        # SHA-256: MySQL 9 has no MD5() any more
        return f"SHA2(CONCAT_WS(CHAR(31 USING utf8mb4), {cols}), 256)"

    def _hash_sum(self, hash_sql: str) -> str:
        return f"SUM(CAST(CONV(SUBSTRING({hash_sql}, 1, 15), 16, 10) AS UNSIGNED))"

    def snapshot(self) -> None:
        self._query("ROLLBACK")
        self._query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")

    def point(self) -> Any:
        """The binlog's end (file, offset) and the GTIDs written (MariaDB's gtid_binlog_pos,
        MySQL's gtid_executed) now: at or past every commit the snapshot sees."""
        rows = self._query(self._status_sql)
        if not rows:
            raise SourceError("the source's binary log is off: verify needs log_bin")
        sql = "SELECT @@gtid_binlog_pos" if self._mariadb else "SELECT @@GLOBAL.gtid_executed"
        gtid = str(self._query(sql)[0][0] or "").replace("\n", "")
        return {"file": str(rows[0][0]), "pos": int(rows[0][1]), "gtid": gtid or None}

    def applied(self, state: TableRef, pipeline: str) -> dict[str, Any] | None:
        exists = self._query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
            [state.schema, state.table],
        )
        if not exists:
            return None
        rows = self._query(
            f"SELECT position FROM {self._name(state)} WHERE pipeline = %s", [pipeline]
        )
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    def describe(self, t: TableRef) -> tuple[list[ColumnInfo], list[str]] | None:
        cols = self._query(
            "SELECT column_name, data_type, column_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            [t.schema, t.table],
        )
        if not cols:
            return None
        key = self._query(
            "SELECT column_name FROM information_schema.key_column_usage WHERE table_schema = %s "
            "AND table_name = %s AND constraint_name = 'PRIMARY' ORDER BY ordinal_position",
            [t.schema, t.table],
        )
        return [ColumnInfo(str(n), str(d).lower(), str(f)) for n, d, f in cols], [
            str(r[0]) for r in key
        ]

    def tables(self) -> list[TableRef]:
        """Every base table of the server (a source's ``tables`` are patterns over them)."""
        rows = self._query(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE'"
        )
        return [TableRef(str(s), str(t)) for s, t in rows]

    def close(self) -> None:
        self._conn.close()


def _intervals(gtid_set: str) -> dict[str, list[tuple[int, int]]]:
    """MySQL GTID set text ("uuid:1-5:7,uuid2:3") -> {uuid: [(1, 5), (7, 7)]}."""
    out: dict[str, list[tuple[int, int]]] = {}
    for part in gtid_set.replace("\n", "").split(","):
        if not part.strip():
            continue
        sid, *ranges = part.strip().split(":")
        for r in ranges:
            lo, _, hi = r.partition("-")
            out.setdefault(sid.lower(), []).append((int(lo), int(hi or lo)))
    return out


def _gtids_cover(applied: str, point: str, mariadb: bool) -> bool:
    """Whether the GTID state ``applied`` includes everything in ``point``: MariaDB's per
    domain (a sequence number at least the point's), MySQL's as a set."""
    if mariadb:
        have = {d: int(g.rsplit("-", 1)[1]) for d, g in parse_gtid_state(applied).items()}
        want = {d: int(g.rsplit("-", 1)[1]) for d, g in parse_gtid_state(point).items()}
        return all(have.get(d, -1) >= n for d, n in want.items())
    have_sets = _intervals(applied)
    for sid, ranges in _intervals(point).items():
        mine = have_sets.get(sid, [])
        if not all(any(a <= lo and hi <= b for a, b in mine) for lo, hi in ranges):
            return False
    return True


def reached(applied: dict[str, Any] | None, point: Any) -> bool:
    """Whether a MySQL source position (``{"file", "pos", "gtid"}``: the end of the last
    transaction applied) covers the point: its GTIDs include the point's (when both have
    them; a transaction the source did not capture counts too), or its binlog file and
    offset are at or past the point's (file names sort in order)."""
    if applied is None or "file" not in applied:
        return False
    have, want = applied.get("gtid"), point.get("gtid")
    if have and want and _gtids_cover(str(have), str(want), ":" not in str(want)):
        return True
    return (str(applied["file"]), int(applied["pos"])) >= (point["file"], point["pos"])
