"""What one MySQL/MariaDB server is and where its binlog stands: the control connection, the
flavour and version facts, GTID state strings, the statements that differ between flavours."""

from __future__ import annotations

import contextlib
from typing import Any

import pymysql

from cdc.errors import PositionLost, SourceError
from cdc.model import Position
from cdc.sources.mysql.config import MySqlSourceConfig

SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")


def parse_gtid_state(state: str | None) -> dict[int, str]:
    """MariaDB GTID state "d-s-n,d-s-n" -> {domain: "d-s-n"}."""
    out: dict[int, str] = {}
    for part in (state or "").split(","):
        part = part.strip()
        if part:
            out[int(part.split("-", 1)[0])] = part
    return out


def format_gtid_state(state: dict[int, str]) -> str:
    return ",".join(state[d] for d in sorted(state))


def parse_version(version: str) -> tuple[int, ...]:
    """``SELECT VERSION()`` -> (major, minor, patch): "9.7.4-2" -> (9, 7, 4),
    "10.11.6-MariaDB-0+deb12u1" -> (10, 11, 6)."""
    head = version.split("-", 1)[0]
    out = []
    for part in head.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def binlog_status_sql(is_mariadb: bool, version: tuple[int, ...]) -> str:
    """The statement that shows the current binlog file and position: MySQL renamed SHOW MASTER
    STATUS in 8.2 and removed the old name in 8.4."""
    if not is_mariadb and version >= (8, 2):
        return "SHOW BINARY LOG STATUS"
    return "SHOW MASTER STATUS"


def quote(name: str) -> str:
    """An identifier in backquotes."""
    return "`" + name.replace("`", "``") + "`"


class Server:
    """The control connection to the server (opened on first use, again after a loss) and what
    it learnt on connecting: the flavour, the version, the server's id, whether MySQL has GTIDs."""

    def __init__(self, config: MySqlSourceConfig) -> None:
        self.config = config
        self._ctl: pymysql.Connection[Any] | None = None
        self.is_mariadb = False
        self.version: tuple[int, ...] = ()
        self.mysql_gtids = False  # MySQL with gtid_mode=ON
        self.server_id = 0

    # --- connections --------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """pymysql's connection arguments."""
        c = self.config
        return {
            "host": c.host,
            "port": c.port,
            "user": c.user,
            "password": c.password,
            "charset": "utf8mb4",
            "connect_timeout": 10,
        }

    def connect(self, **extra: Any) -> pymysql.Connection[Any]:
        """A new connection in autocommit mode; SourceError naming the server when it fails."""
        try:
            return pymysql.connect(**self.settings(), autocommit=True, **extra)
        except pymysql.err.MySQLError as e:
            raise SourceError(
                f"cannot connect to mysql at {self.config.host}:{self.config.port} as "
                f"{self.config.user!r}: {e.args[-1] if e.args else e}"
            ) from None

    def catalog(self) -> pymysql.Connection[Any]:
        """The control connection; (re)opening it reads the server's facts."""
        if self._ctl is None or not self._ctl.open:
            self._ctl = self.connect()
            version = str(self.one("SELECT VERSION()"))
            self.is_mariadb = "mariadb" in version.lower()
            self.version = parse_version(version)
            self.server_id = int(self.one("SELECT @@server_id") or 0)
            if not self.is_mariadb:
                self.mysql_gtids = str(self.one("SELECT @@GLOBAL.gtid_mode")).upper() == "ON"
        return self._ctl

    def one(self, sql: str, args: Any = None) -> Any:
        """The first column of the first row (None: no row), on the control connection."""
        with self.catalog().cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
        return None if row is None else row[0]

    def all(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Every row, on the control connection."""
        with self.catalog().cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def close(self) -> None:
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                self._ctl.close()
            self._ctl = None

    # --- GTIDs and binlog positions -------------------------------------------------------------

    def gtid_mode(self) -> bool:
        """Whether to stream by GTID (source.position_mode against what the server has)."""
        mode = self.config.position_mode
        if mode == "gtid" and not (self.is_mariadb or self.mysql_gtids):
            raise SourceError(
                "source.position_mode is gtid but the server has gtid_mode=OFF: turn GTIDs on "
                "(gtid_mode=ON, enforce_gtid_consistency=ON) or use position_mode: file"
            )
        return mode == "gtid" or (mode == "auto" and (self.is_mariadb or self.mysql_gtids))

    def executed_gtids(self, cur: Any = None) -> str | None:
        """The server's GTID position now: MariaDB's gtid_binlog_pos, MySQL's gtid_executed."""
        if not (self.is_mariadb or self.mysql_gtids):
            return None
        sql = "SELECT @@gtid_binlog_pos" if self.is_mariadb else "SELECT @@GLOBAL.gtid_executed"
        if cur is None:
            value = self.one(sql)
        else:
            cur.execute(sql)
            value = cur.fetchone()[0]
        return str(value).replace("\n", "") or None

    @property
    def status_sql(self) -> str:
        return binlog_status_sql(self.is_mariadb, self.version)

    def binlog_files(self) -> list[str]:
        return [str(r[0]) for r in self.all("SHOW BINARY LOGS")]

    def current_position(self) -> Position:
        row = self.all(self.status_sql)
        if not row:
            raise SourceError("the binary log is off: start the server with log_bin")
        return {"file": str(row[0][0]), "pos": int(row[0][1]), "gtid": self.executed_gtids()}

    def verify_available(self, start: Position) -> None:
        """PositionLost when ``start``'s binlog file was purged."""
        files = self.binlog_files()
        if start["file"] not in files:
            raise PositionLost(
                f"binlog file {start['file']!r} of the saved position "
                f"{start['file']}:{start['pos']} "
                f"is no longer on the server (oldest is {files[0] if files else 'none'!r}); it was "
                "purged before the changes in it were read. Ways out: set source.snapshot: "
                "when_needed to take a new snapshot, or move the sink's data aside and start over; "
                "keep binlogs longer (binlog_expire_logs_seconds / expire_logs_days) to avoid this"
            )
