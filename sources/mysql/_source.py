"""MySQL/MariaDB binlog source (row format), with a consistent initial snapshot.

Delivery guarantee: every row change committed after the start position is yielded once, in
commit order, as long as the server keeps the binlog. Positions are
``{"file": F, "pos": P, "gtid": G}`` after a complete transaction (F:P = the end of its commit
event; G = MariaDB's GTID state, domain-server-seq per domain, at that point) or the same plus
``"skip": N`` inside the next transaction (N = how many of its events, BEGIN included, were already
yielded). While a snapshot runs, positions carry ``"snapshot": "running"``, the F/P/G to stream
from once it is complete, ``"done"`` (tables fully read) and ``"after"`` (the table under way and
its last primary key written), from which an interrupted snapshot resumes.

python-mysql-replication reconnects silently on a lost connection (from its start position in GTID
mode, so it would repeat changes); this source refuses that reconnection and fails instead, so the
pipeline restarts from the position the sink holds.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import struct
import time
from collections.abc import Generator, Iterator
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    NotImplementedEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.gtid import Gtid, GtidSet
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

import cdc
from cdc import avro
from cdc.errors import PositionLost, SourceError
from cdc.model import ChangeBatch, Position, RowChange, TableSchema, TxBoundary
from cdc.model import snapshot_event_id as snapshot_event_id  # own line: fewer merge conflicts
from cdc.sources.mysql import _decoders, _json
from cdc.sources.mysql._schema import SchemaCache, TableVersion
from cdc.sources.mysql._types import (
    TEXT_KINDS,
    UNREADABLE,
    ColumnType,
    from_binlog,
    from_catalog,
    undecodable_charset,
)
from cdc.sources.mysql.config import MySqlSourceConfig
from cdc.status import snapshot_progress

log = logging.getLogger(__name__)
# a snapshot row: (version, row, first in its table, last in its table, key to resume after)
SnapshotItem = tuple[TableVersion, tuple[Any, ...], bool, bool, list[Any] | None]
_json.install()  # MySQL's binary JSON as the text SELECT gives, not lossy Python values
_decoders.install()  # TIME, DATE, DATETIME from the binlog as the server stores them

_CONNECTOR_FIELDS: list[dict[str, Any]] = [
    {"name": "table", "type": ["null", "string"], "default": None},
    {"name": "server_id", "type": "long"},
    {"name": "gtid", "type": ["null", "string"], "default": None},
    {"name": "file", "type": "string"},
    {"name": "pos", "type": "long"},
    {"name": "row", "type": "int"},
    {"name": "thread", "type": ["null", "long"], "default": None},
    {"name": "query", "type": ["null", "string"], "default": None},
]
SOURCE_SCHEMA = avro.source_schema("io.debezium.connector.mysql", _CONNECTOR_FIELDS)

SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")
_FL_STANDALONE = 1  # MariaDB GTID event flag: the group is one statement without COMMIT
_LOST_POSITION = 1236  # ER_MASTER_FATAL_ERROR_READING_BINLOG
# Compressed events the binlog reader cannot decode, by event type -> the setting that writes them:
# MySQL's Transaction_payload, MariaDB's compressed query and rows events.
_COMPRESSED = {0x28: "binlog_transaction_compression"} | {
    code: "log_bin_compress" for code in range(0xA5, 0xAC)
}
POSITION_INTERVAL_S = 10.0  # how often an idle stream records that the binlog moved on
READ_TIMEOUT_S = 30  # no byte (not even a heartbeat) for this long: the connection is dead
_FLOAT_CODE = 4  # MYSQL_TYPE_FLOAT in a table map
# what the binlog library raises on bytes it cannot decode (UnicodeDecodeError is a ValueError)
_UNDECODABLE = (ValueError, KeyError, IndexError, NotImplementedError, struct.error)


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
                f"(ALTER TABLE {_q(db)}.{_q(table)} CONVERT TO CHARACTER SET utf8mb4) or leave "
                f"{db}.{table} out of source.tables",
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


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class MySqlSource:
    """Reads the binlog of one MySQL/MariaDB server as a replica with ``server_id``."""

    source_schema = SOURCE_SCHEMA

    def __init__(
        self,
        config: MySqlSourceConfig,
        pipeline_name: str,
        prefix: str,
        *,
        max_events: int = 5000,
        max_wait_ms: int = 100,
        transaction_metadata: bool = True,
    ) -> None:
        self.config = config
        self.pipeline_name = pipeline_name
        self.prefix = prefix
        self.max_events = max_events
        self.max_wait = max_wait_ms / 1000
        self.tx_metadata = transaction_metadata
        self._patterns = [tuple(p.split(".", 1)) for p in config.tables]
        self._match_cache: dict[tuple[str, str], bool] = {}
        self._stopping = False
        self._ctl: pymysql.Connection[Any] | None = None
        self._reader: BinLogStreamReader | None = None
        self._schemas = SchemaCache(prefix, adjust_years=config.time_adjuster)
        self.connector = config.connector_name
        if self.connector != "mysql":  # Debezium's MariaDB connector: same fields, its own name
            self.source_schema = avro.source_schema(
                f"io.debezium.connector.{self.connector}", _CONNECTOR_FIELDS
            )
        self._float_cache: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
        self._json_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._default_cache: dict[tuple[str, str], dict[str, tuple[Any, Any]]] = {}
        self.is_mariadb = False
        self.version: tuple[int, ...] = ()
        self.mysql_gtids = False  # MySQL with gtid_mode=ON
        self.server_id = 0

    # --- connections --------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        c = self.config
        return {
            "host": c.host,
            "port": c.port,
            "user": c.user,
            "password": c.password,
            "charset": "utf8mb4",
            "connect_timeout": 10,
        }

    def _connect(self, **extra: Any) -> pymysql.Connection[Any]:
        try:
            return pymysql.connect(**self._settings(), autocommit=True, **extra)
        except pymysql.err.MySQLError as e:
            raise SourceError(
                f"cannot connect to mysql at {self.config.host}:{self.config.port} as "
                f"{self.config.user!r}: {e.args[-1] if e.args else e}"
            ) from None

    def _catalog(self) -> pymysql.Connection[Any]:
        if self._ctl is None or not self._ctl.open:
            self._ctl = self._connect()
            version = str(self._one("SELECT VERSION()"))
            self.is_mariadb = "mariadb" in version.lower()
            self.version = parse_version(version)
            self.server_id = int(self._one("SELECT @@server_id") or 0)
            if not self.is_mariadb:
                self.mysql_gtids = str(self._one("SELECT @@GLOBAL.gtid_mode")).upper() == "ON"
        return self._ctl

    def _one(self, sql: str, args: Any = None) -> Any:
        with self._catalog().cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
        return None if row is None else row[0]

    def _all(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self._catalog().cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def _gtid_mode(self) -> bool:
        mode = self.config.position_mode
        if mode == "gtid" and not (self.is_mariadb or self.mysql_gtids):
            raise SourceError(
                "source.position_mode is gtid but the server has gtid_mode=OFF: turn GTIDs on "
                "(gtid_mode=ON, enforce_gtid_consistency=ON) or use position_mode: file"
            )
        return mode == "gtid" or (mode == "auto" and (self.is_mariadb or self.mysql_gtids))

    def _executed_gtids(self, cur: Any = None) -> str | None:
        """The server's GTID position now: MariaDB's gtid_binlog_pos, MySQL's gtid_executed."""
        if not (self.is_mariadb or self.mysql_gtids):
            return None
        sql = "SELECT @@gtid_binlog_pos" if self.is_mariadb else "SELECT @@GLOBAL.gtid_executed"
        if cur is None:
            value = self._one(sql)
        else:
            cur.execute(sql)
            value = cur.fetchone()[0]
        return str(value).replace("\n", "") or None

    # --- preflight ----------------------------------------------------------------------------

    def check(self) -> list[str]:
        self._catalog()
        problems: list[str] = []
        variables = {
            str(k).lower(): str(v)
            for k, v in self._all(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', "
                "'server_id', 'binlog_transaction_compression', 'log_bin_compress')"
            )
        }
        if variables.get("log_bin", "OFF").upper() not in ("ON", "1"):
            problems.append(
                "the binary log is off (log_bin=OFF): start the server with log_bin "
                "(log-bin=mysql-bin in my.cnf) and restart it"
            )
        fmt = variables.get("binlog_format", "")
        if fmt.upper() != "ROW":
            problems.append(
                f"binlog_format is {fmt!r}: set binlog_format=ROW (SET GLOBAL binlog_format='ROW' "
                "and in my.cnf)"
            )
        image = variables.get("binlog_row_image", "")
        if image.upper() != "FULL":
            problems.append(
                f"binlog_row_image is {image!r}: set binlog_row_image=FULL (SET GLOBAL "
                "binlog_row_image='FULL' and in my.cnf)"
            )
        meta = variables.get("binlog_row_metadata")
        if meta is None:
            problems.append(
                "the server has no binlog_row_metadata (column names are not in the binlog): "
                "use MariaDB >= 10.5 or MySQL >= 8.0.14"
            )
        elif meta.upper() != "FULL":
            problems.append(
                f"binlog_row_metadata is {meta!r}: set binlog_row_metadata=FULL (SET GLOBAL "
                "binlog_row_metadata='FULL' and in my.cnf), so that every event carries the column "
                "names and types it was written with"
            )
        for setting in ("binlog_transaction_compression", "log_bin_compress"):
            if variables.get(setting, "OFF").upper() in ("ON", "1"):
                problems.append(
                    f"{setting} is ON: compressed binlog events cannot be decoded by the binlog "
                    f"reader and their changes would be missed; set {setting}=OFF (SET GLOBAL and "
                    "in my.cnf)"
                )
        if self.config.position_mode == "gtid" and not (self.is_mariadb or self.mysql_gtids):
            problems.append(
                "source.position_mode is gtid but the server has gtid_mode=OFF: turn GTIDs on "
                "(gtid_mode=ON, enforce_gtid_consistency=ON; on a running server step gtid_mode "
                "through OFF_PERMISSIVE and ON_PERMISSIVE) or use position_mode: file"
            )
        if int(variables.get("server_id", "0") or 0) == self.config.server_id:
            problems.append(
                f"source.server_id {self.config.server_id} is the server's own server_id: choose "
                "another number, unique among the server's replicas"
            )
        problems += self._check_grants()
        return problems

    def _global_privileges(self) -> set[str]:
        """The privileges the user holds ON *.*, upper case ("ALL PRIVILEGES" as such)."""
        privileges: set[str] = set()
        for (line,) in self._all("SHOW GRANTS"):
            text = str(line)
            if not text.upper().startswith("GRANT ") or " ON *.* TO " not in text.upper():
                continue
            head = text[len("GRANT ") : text.upper().index(" ON *.* TO ")]
            privileges.update(p.strip().upper() for p in head.split(",") if p.strip())
        return privileges

    def _check_grants(self) -> list[str]:
        held = self._global_privileges()
        if "ALL PRIVILEGES" in held or "ALL" in held:
            return []
        # (privilege, what else also grants it, why)
        needed: list[tuple[str, tuple[str, ...], str]] = [
            ("REPLICATION SLAVE", (), "to read the binlog")
        ]
        if self.is_mariadb:
            needed.append(("BINLOG MONITOR", ("SUPER",), "for SHOW MASTER STATUS / BINARY LOGS"))
        else:
            needed.append(
                ("REPLICATION CLIENT", ("SUPER",), "for SHOW BINARY LOG STATUS / BINARY LOGS")
            )
            if self.config.snapshot != "never":
                needed.append(
                    ("RELOAD", (), "for the snapshot's brief FLUSH TABLES WITH READ LOCK")
                )
        problems = []
        for priv, alternatives, why in needed:
            if priv not in held and not held.intersection(alternatives):
                problems.append(
                    f"the user {self.config.user!r} lacks {priv} ({why}): GRANT {priv} ON *.* TO "
                    f"'{self.config.user}'@'<host>'"
                )
        return problems

    def _require_settings(self) -> None:
        problems = [p for p in self.check() if "server_id" in p or "binlog" in p or "log_bin" in p]
        if problems:
            raise SourceError(
                "the server cannot be captured as it is set up: " + "; ".join(problems)
            )

    # --- tables -------------------------------------------------------------------------------

    def captured(self, db: str, table: str) -> bool:
        key = (db, table)
        hit = self._match_cache.get(key)
        if hit is None:
            hit = db not in SYSTEM_DATABASES and any(
                fnmatch.fnmatchcase(db, d) and fnmatch.fnmatchcase(table, t)
                for d, t in self._patterns
            )
            self._match_cache[key] = hit
        return hit

    def _float_digits(self, db: str, table: str) -> dict[str, tuple[int, int]]:
        """The (M, D) of each FLOAT(M,D) column of ``db.table``: the binlog's table map does not
        carry them, and they make the column a double (as in Debezium)."""
        key = (db, table)
        hit = self._float_cache.get(key)
        if hit is None:
            rows = self._all(
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
            if self.is_mariadb:
                rows = self._all(
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
            rows = self._all(
                "SELECT COLUMN_NAME, COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (db, table),
            )
            hit = self._default_cache[key] = {str(r[0]): (r[1], r[2]) for r in rows}
        return tuple(hit.get(n, (None, None)) for n in names)

    def _catalog_version(self, cur: Any, db: str, table: str) -> TableVersion:
        cur.execute(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE, "
            "DATETIME_PRECISION, CHARACTER_OCTET_LENGTH, IS_NULLABLE, COLUMN_KEY, "
            "CHARACTER_SET_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        rows = cur.fetchall()
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
        return self._schemas.version(db, table, cols, tuple(key), defaults, self.is_mariadb)

    def _binlog_version(self, ev: TableMapEvent, where: str) -> TableVersion:
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
        return self._schemas.version(
            ev.schema, ev.table, cols, tuple(key), defaults, self.is_mariadb
        )

    # --- positions ----------------------------------------------------------------------------

    @property
    def _status_sql(self) -> str:
        return binlog_status_sql(self.is_mariadb, self.version)

    def _binlog_files(self) -> list[str]:
        return [str(r[0]) for r in self._all("SHOW BINARY LOGS")]

    def _current_position(self) -> Position:
        row = self._all(self._status_sql)
        if not row:
            raise SourceError("the binary log is off: start the server with log_bin")
        return {"file": str(row[0][0]), "pos": int(row[0][1]), "gtid": self._executed_gtids()}

    def _verify_available(self, start: Position) -> None:
        files = self._binlog_files()
        if start["file"] not in files:
            raise PositionLost(
                f"binlog file {start['file']!r} of the saved position "
                f"{start['file']}:{start['pos']} "
                f"is no longer on the server (oldest is {files[0] if files else 'none'!r}); it was "
                "purged before the changes in it were read. Ways out: set source.snapshot: "
                "when_needed to take a new snapshot, or move the sink's data aside and start over; "
                "keep binlogs longer (binlog_expire_logs_seconds / expire_logs_days) to avoid this"
            )

    def acknowledge(self, upto: Position) -> None:
        """Nothing to tell the server: a binlog reader keeps no state there."""

    def stop(self) -> None:
        self._stopping = True

    # --- main ---------------------------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        """True while connected to the change stream (past any snapshot); read by the daemon's
        status and ``/ready``."""
        return self._reader is not None

    def batches(self, start: Position | None) -> Iterator[ChangeBatch]:
        self._catalog()
        self._require_settings()
        mode = self.config.snapshot
        if start is not None and start.get("snapshot") != "running":
            if mode == "initial_only":
                log.info("snapshot already complete (initial_only): nothing to do")
                return
            try:
                self._verify_available(start)
            except PositionLost:
                if mode != "when_needed":
                    raise
                log.warning(
                    "binlog position %s:%s is gone; taking a new snapshot (snapshot: when_needed)",
                    start["file"],
                    start["pos"],
                )
                start = yield from self._snapshot(None)
        elif mode == "never":
            if start is None:
                start = self._current_position()
                # make the starting point durable: a restart must not begin at a later end
                yield ChangeBatch([], start)
        else:
            if start is not None:
                try:
                    self._verify_available(start)
                    log.warning(
                        "the snapshot was interrupted: reading the rest (after the last key "
                        "written); streaming will then resume from the first attempt's binlog "
                        "position %s:%s",
                        start["file"],
                        start["pos"],
                    )
                except PositionLost:
                    if mode != "when_needed":
                        raise
                    log.warning(
                        "the snapshot was interrupted and its binlog position %s:%s is gone: "
                        "taking a new one (snapshot: when_needed)",
                        start["file"],
                        start["pos"],
                    )
                    start = None
            start = yield from self._snapshot(start)
            if mode == "initial_only" or self._stopping:
                return
        yield from self._stream(start)

    # --- snapshot -----------------------------------------------------------------------------

    def _snapshot(self, running: Position | None) -> Generator[ChangeBatch, None, Position]:
        """Read every captured table inside one consistent read; yield op=r batches.

        Returns the position to stream from. ``running`` is the position of an interrupted
        earlier snapshot: streaming starts from there (not from this snapshot's point) so that
        rows deleted or changed between the two attempts are not missed.
        """
        conn = self._connect()
        try:
            cur = conn.cursor()
            cur.execute("SET SESSION time_zone = '+00:00'")
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            if self.is_mariadb:
                # MariaDB reports the binlog position matching a consistent snapshot: no lock.
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
                status = {str(k).lower(): str(v) for k, v in cur.fetchall()}
                file, pos = status["binlog_snapshot_file"], int(status["binlog_snapshot_position"])
                cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
                row = cur.fetchone()
                gtid = str(row[0]) if row and row[0] is not None else None
            else:
                # MySQL has no such status: hold a global read lock for the moment it takes.
                cur.execute("FLUSH TABLES WITH READ LOCK")
                try:
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    cur.execute(self._status_sql)
                    row = cur.fetchone()
                    file, pos = str(row[0]), int(row[1])
                    gtid = self._executed_gtids(cur)
                finally:
                    cur.execute("UNLOCK TABLES")
            here: Position = {"file": file, "pos": pos, "gtid": gtid}
            stream_from: Position = (
                {"file": running["file"], "pos": running["pos"], "gtid": running.get("gtid")}
                if running
                else here
            )
            # Tables done and the last key written of the one under way, from the interrupted
            # attempt: the rest is read at this newer snapshot (changes in between are streamed
            # from the first attempt's position).
            done: list[str] = list(running.get("done") or []) if running else []
            resume: dict[str, list[Any]] = dict(running.get("after") or {}) if running else {}
            # rows written per table, carried across resumes; a table read again from its start
            # (no resumable key) counts from its start
            carried = dict(running.get("rows") or {}) if running else {}
            counts = {t: int(r) for t, r in carried.items() if t in done or t in resume}
            resumed = bool(running and (done or resume or any(carried.values())))
            # ids: the snapshot is named by where streaming starts, the same in every attempt
            scope = f"{stream_from['file']}:{stream_from['pos']}"
            progress: Position = {**stream_from, "snapshot": "running"}
            cur.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES "
                "WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME"
            )
            listed = [(str(d), str(t), r) for d, t, r in cur.fetchall()]
            tables = [
                (d, t) for d, t, _ in listed if self.captured(d, t) and f"{d}.{t}" not in done
            ]
            # snapshot progress for metrics and `cdc status`: rows read per table of an estimate
            progress_rows = {f"{d}.{t}": counts.get(f"{d}.{t}", 0) for d, t in tables}
            for d, t, r in listed:
                if f"{d}.{t}" in progress_rows:
                    snapshot_progress(
                        f"{d}.{t}", progress_rows[f"{d}.{t}"], -1 if r is None else int(r)
                    )
            log.info(
                "snapshot of %d tables at %s:%s started%s",
                len(tables),
                file,
                pos,
                " (resuming after the last key written)" if running and (done or resume) else "",
            )
            events: list[RowChange | TxBoundary] = []
            n = 0
            pending: SnapshotItem | None = None
            pending_id = ""
            after: dict[str, list[Any]] = {}
            read_here: dict[str, int] = {}  # rows of each table read in this attempt
            for item in self._snapshot_rows(cur, conn, tables, resume):
                qualified = item[0].schema.qualified
                progress_rows[qualified] = progress_rows.get(qualified, 0) + 1
                ordinal = read_here[qualified] = read_here.get(qualified, 0) + 1
                if pending is not None:
                    events.append(
                        self._snapshot_event(
                            pending, n == 1 and not resumed, False, here, pending_id
                        )
                    )
                    name, key = pending[0].schema.qualified, pending[4]
                    counts[name] = counts.get(name, 0) + 1
                    if pending[3]:
                        done.append(name)
                        after = {}
                    else:  # without a resumable key the table is read again from its start
                        after = {name: key} if key is not None else {}
                    if len(events) >= self.max_events:
                        for table_name, rows in progress_rows.items():
                            snapshot_progress(table_name, rows, None)
                        progress = {
                            **stream_from,
                            "snapshot": "running",
                            "done": list(done),
                            "after": after,
                            "rows": dict(counts),
                        }
                        yield ChangeBatch(events, progress)
                        events = []
                        if self._stopping:
                            return stream_from
                pending = item
                pending_id = self._snapshot_event_id(item, scope, here, ordinal)
                n += 1
            if pending is not None:
                events.append(
                    self._snapshot_event(pending, n == 1 and not resumed, True, here, pending_id)
                )
                name = pending[0].schema.qualified
                counts[name] = counts.get(name, 0) + 1
            cur.execute("COMMIT")
            for table_name, rows in progress_rows.items():
                snapshot_progress(table_name, rows, rows)
            yield ChangeBatch(events, stream_from)
            log.info(
                "snapshot finished: %d rows; streaming from %s:%s",
                sum(counts.values()),
                stream_from["file"],
                stream_from["pos"],
            )
            return stream_from
        finally:
            conn.close()

    def _snapshot_rows(
        self,
        cur: Any,
        conn: pymysql.Connection[Any],
        tables: list[tuple[str, str]],
        resume: dict[str, list[Any]],
    ) -> Iterator[SnapshotItem]:
        """(version, row, first in its table, last in its table, resumable key) for every
        captured row; a table in ``resume`` starts after the key it maps to."""
        for db, table in tables:
            version = self._catalog_version(cur, db, table)
            prev: tuple[tuple[Any, ...], list[Any] | None] | None = None
            first = f"{db}.{table}" not in resume  # a resumed table had its first row before
            for row in self._read_table(conn, db, table, version, resume.get(f"{db}.{table}")):
                if prev is not None:
                    yield version, prev[0], first, False, prev[1]
                    first = False
                prev = row
            if prev is not None:
                yield version, prev[0], first, True, prev[1]

    @staticmethod
    def _snapshot_event_id(item: SnapshotItem, scope: str, here: Position, ordinal: int) -> str:
        """Unique in the snapshot and the same when a row is read again after a resume: from
        the primary key; without one, from the row's place in its table at this attempt's
        binlog position (an unchanged binlog position means unchanged rows, read in the same
        clustered-index order; a changed one gives new ids, so no distinct row takes an id a
        de-duplicating sink has seen)."""
        version, row = item[0], item[1]
        schema = version.schema
        if schema.key:
            return snapshot_event_id(scope, schema.qualified, [row[k] for k in schema.key])
        return f"s:{scope}:{schema.qualified}:@{here['file']}:{here['pos']}:{ordinal}"

    def _snapshot_event(
        self,
        item: SnapshotItem,
        first: bool,
        last: bool,
        here: Position,
        event_id: str,
    ) -> RowChange:
        version, row, first_in, last_in, _ = item
        # Debezium's markers: first/last of the whole snapshot, then of each table
        if last:  # also when it is the only row: "last" is what tells the snapshot ended
            marker = "last"
        elif first:
            marker = "first"
        elif last_in:
            marker = "last_in_data_collection"
        elif first_in:
            marker = "first_in_data_collection"
        else:
            marker = "true"
        src = self._snapshot_source(version.schema, marker, here)
        return RowChange(version.schema, "r", None, row, src, src["ts_ms"], event_id)

    def _snapshot_source(self, table: TableSchema, marker: str, here: Position) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        return {
            "version": cdc.__version__,
            "connector": self.connector,
            "name": self.prefix,
            "ts_ms": now_ms,
            "snapshot": marker,
            "db": table.namespace,
            "sequence": None,
            "ts_us": now_ms * 1000,
            "ts_ns": now_ms * 1_000_000,
            "table": table.table,
            "server_id": self.server_id,
            "gtid": None,
            "file": here["file"],
            "pos": here["pos"],
            "row": 0,
            "thread": None,
            "query": None,
        }

    def _read_table(
        self,
        conn: pymysql.Connection[Any],
        db: str,
        table: str,
        version: TableVersion,
        start_after: list[Any] | None = None,
    ) -> Iterator[tuple[tuple[Any, ...], list[Any] | None]]:
        """(row, key) of ``db.table`` in primary-key order, ``snapshot_chunk_rows`` at a time,
        after ``start_after`` when given. ``key`` is the row's primary key as JSON can hold it
        (ints and strings), or None (no key, or other key types): where a resumed snapshot
        starts again."""
        schema = version.schema
        convs = list(enumerate(version.from_select))
        cols = ", ".join(_q(c.name) for c in schema.columns)
        source = f"{_q(db)}.{_q(table)}"

        def convert(raw: tuple[Any, ...]) -> tuple[Any, ...]:
            try:
                return tuple(
                    None if v is None else (v if conv is None else conv(v))
                    for v, (_, conv) in zip(raw, convs, strict=True)
                )
            except Exception as e:
                key = [raw[i] for i in schema.key]
                where = f"the snapshot (row with key {key!r})" if key else "the snapshot"
                failure = version.conversion_failure(list(raw), False, where)
                raise SourceError(failure, retryable=False) from e

        if not schema.key:
            cur = conn.cursor(pymysql.cursors.SSCursor)
            try:
                cur.execute(f"SELECT {cols} FROM {source}")
                for raw in cur:
                    yield convert(raw), None
            finally:
                cur.close()
            return
        keys = [schema.columns[i].name for i in schema.key]
        order = ", ".join(_q(k) for k in keys)
        limit = self.config.snapshot_chunk_rows
        # (k1 > ?) OR (k1 = ? AND k2 > ?) OR ...: a range the primary key index serves
        terms = []
        for j in range(len(keys)):
            eq = [f"{_q(k)} = %s" for k in keys[:j]]
            terms.append("(" + " AND ".join([*eq, f"{_q(keys[j])} > %s"]) + ")")
        after_sql = (
            f"SELECT {cols} FROM {source} WHERE {' OR '.join(terms)} ORDER BY {order} LIMIT {limit}"
        )
        first_sql = f"SELECT {cols} FROM {source} ORDER BY {order} LIMIT {limit}"
        last: list[Any] | None = list(start_after) if start_after else None

        def resumable(raw: tuple[Any, ...]) -> list[Any] | None:
            key = [raw[i] for i in schema.key]
            ok = all(isinstance(v, int | str) and not isinstance(v, bool) for v in key)
            return key if ok else None

        cur = conn.cursor()
        try:
            while True:
                if last is None:
                    cur.execute(first_sql)
                else:
                    params: list[Any] = []
                    for j in range(len(keys)):
                        params += [*last[:j], last[j]]
                    cur.execute(after_sql, params)
                rows = cur.fetchall()
                for raw in rows:
                    yield convert(raw), resumable(raw)
                if len(rows) < limit:
                    return
                last = [rows[-1][i] for i in schema.key]
        finally:
            cur.close()

    # --- streaming ----------------------------------------------------------------------------

    def _stream(self, start: Position) -> Iterator[ChangeBatch]:
        gtid_mode = self._gtid_mode()
        mysql_set = GtidSet(start.get("gtid") or "") if gtid_mode and not self.is_mariadb else None
        # An empty GTID position would make the server send its binlog from the very beginning:
        # until a transaction has a GTID here, resume from file + position.
        by_gtid = gtid_mode and bool(start.get("gtid"))
        connects = 0

        def connect(**kw: Any) -> Any:
            nonlocal connects
            if "db" in kw:  # the library still uses pymysql's deprecated name
                kw["database"] = kw.pop("db")
            if kw.get("database") != "information_schema":
                if connects:
                    raise SourceError(
                        "the binlog connection was lost; restarting from the last durable position"
                    )
                connects += 1
            return pymysql.connect(**kw)

        heartbeat = max(0.05, min(self.max_wait, 1.0))
        # The server sends heartbeats when idle, so a silent socket means a dead connection.
        settings = {**self._settings(), "read_timeout": READ_TIMEOUT_S}
        reader = self._reader = BinLogStreamReader(
            settings,
            server_id=self.config.server_id,
            resume_stream=True,
            blocking=True,
            log_file=start["file"],
            log_pos=int(start["pos"]),
            auto_position=start.get("gtid") if by_gtid else None,
            is_mariadb=by_gtid and self.is_mariadb,
            slave_heartbeat=heartbeat,
            pymysql_wrapper=connect,
            only_events=[
                MariadbGtidEvent,
                GtidEvent,
                QueryEvent,
                XidEvent,
                RotateEvent,
                TableMapEvent,
                WriteRowsEvent,
                UpdateRowsEvent,
                DeleteRowsEvent,
                HeartbeatLogEvent,
                NotImplementedEvent,  # to see what it must not silently skip
            ],
            filter_non_implemented_events=False,
            enable_logging=False,
        )
        log.info(
            "streaming the binlog from %s (%s)",
            f"GTID {start.get('gtid')}" if by_gtid else f"{start['file']}:{start['pos']}",
            f"server {self.config.host}:{self.config.port}",
        )
        tx_meta = self.tx_metadata
        max_events = self.max_events
        max_wait = self.max_wait
        prefix = self.prefix
        version_str = cdc.__version__

        commit_file, commit_pos = str(start["file"]), int(start["pos"])
        gtid_state = parse_gtid_state(start.get("gtid")) if self.is_mariadb else {}
        pending_skip = int(start.get("skip", 0))
        cur_file, end_pos = commit_file, commit_pos
        tables: dict[int, TableVersion | None] = {}

        events: list[RowChange | TxBoundary] = []
        first_at = 0.0
        in_txn = began = standalone = False
        seq = skip_n = total = 0
        tx_id = ""
        txn_gtid: str | None = None
        txn_domain = -1
        txn_server = 0
        ts = 0
        per_table: dict[str, int] = {}

        def position() -> Position:
            gtid = format_gtid_state(gtid_state) if mysql_set is None else str(mysql_set)
            p: Position = {"file": commit_file, "pos": commit_pos, "gtid": gtid or None}
            if in_txn and seq > 0:
                p["skip"] = seq
            return p

        def add(ev: RowChange | TxBoundary) -> None:
            nonlocal seq, first_at
            if seq >= skip_n:
                if not events:
                    first_at = time.monotonic()
                events.append(ev)
            seq += 1

        def begin_group(gtid: str | None, domain: int, server: int) -> None:
            nonlocal in_txn, began, seq, skip_n, pending_skip, total, per_table, tx_id
            nonlocal txn_gtid, txn_domain, txn_server
            in_txn, began = True, False
            seq = total = 0
            skip_n, pending_skip = pending_skip, 0
            per_table = {}
            txn_gtid, txn_domain, txn_server = gtid, domain, server
            tx_id = gtid or f"{cur_file}:{end_pos}"

        def commit(end: int) -> None:
            nonlocal in_txn, commit_file, commit_pos, standalone
            if in_txn and began and tx_meta:
                add(TxBoundary("END", tx_id, ts * 1000, f"{tx_id}:end", total, per_table))
            commit_file, commit_pos = cur_file, end
            if txn_gtid is not None and txn_domain >= 0:
                gtid_state[txn_domain] = txn_gtid
            elif txn_gtid is not None and mysql_set is not None:
                mysql_set.merge_gtid(Gtid(txn_gtid))
            in_txn = standalone = False

        def change(
            table: TableSchema, op: Any, before: Any, after: Any, src: dict[str, Any], eid: str
        ) -> None:
            nonlocal began, total
            if not began:
                began = True
                if tx_meta:
                    add(TxBoundary("BEGIN", tx_id, ts * 1000, f"{tx_id}:begin"))
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
                    ts * 1000,
                    eid,
                    (tx_id, total, n) if tx_meta else None,
                )
            )

        def convert(
            values: dict[str, Any], none_sources: dict[str, str], v: TableVersion
        ) -> tuple[Any, ...]:
            try:
                row = [
                    None if x is None else (x if conv is None else conv(x))
                    for x, conv in zip(values.values(), v.from_binlog, strict=True)
                ]
            except Exception as e:
                where = f"the binlog event at {cur_file}:{ev_start}"
                failure = v.conversion_failure(list(values.values()), True, where)
                raise SourceError(failure, retryable=False) from e
            for i in v.sets:
                if row[i] is None and none_sources.get(v.schema.columns[i].name) == "empty set":
                    row[i] = ""
            return tuple(row)

        fetch = reader.fetchone
        last_yield = time.monotonic()
        yielded_at = (commit_file, commit_pos)
        while True:
            if events and (
                len(events) >= max_events
                or self._stopping
                or (not in_txn and time.monotonic() - first_at >= max_wait)
            ):
                yield ChangeBatch(events, position())
                events = []
                last_yield, yielded_at = time.monotonic(), (commit_file, commit_pos)
            elif (
                not events
                and not in_txn
                and (commit_file, commit_pos) != yielded_at
                and time.monotonic() - last_yield >= POSITION_INTERVAL_S
            ):
                # Nothing captured for a while, but the binlog moved on (other tables): record
                # the position so a restart does not re-read, or lose to purging, what was passed.
                yield ChangeBatch([], position())
                last_yield, yielded_at = time.monotonic(), (commit_file, commit_pos)
            if self._stopping:
                return
            try:
                ev = fetch()
            except pymysql.err.MySQLError as e:
                code = e.args[0] if e.args else None
                msg = e.args[-1] if e.args else str(e)
                if code == _LOST_POSITION:
                    where = (
                        f"GTID {start.get('gtid')}"
                        if by_gtid
                        else f"{start['file']}:{start['pos']}"
                    )
                    raise PositionLost(
                        f"the server cannot send the binlog from {where}: {msg}. Ways out: set "
                        "source.snapshot: when_needed to take a new snapshot, or move the sink's "
                        "data aside and start over"
                    ) from None
                raise SourceError(f"binlog stream failed: {msg}") from None
            except _UNDECODABLE as e:
                raise SourceError(
                    f"the binlog reader cannot decode the event after {cur_file}:{end_pos} "
                    f"({type(e).__name__}: {e}); a column type it does not know (MySQL 9's VECTOR "
                    "is one) in any table written to on the server stops it: drop or convert "
                    "that column, or capture from a server without it",
                    retryable=False,  # the same event fails the same way after a restart
                ) from None
            if ev is None:
                raise SourceError("the server ended the binlog stream; restarting")
            packet = ev.packet
            ev_end = packet.log_pos
            ev_start = end_pos
            if isinstance(ev, HeartbeatLogEvent):
                continue
            if isinstance(ev, NotImplementedEvent):
                setting = _COMPRESSED.get(packet.event_type)
                if setting is not None:
                    raise SourceError(
                        f"the binlog holds a compressed event at {cur_file}:{end_pos} ({setting}"
                        "=ON, set globally or by a session), which the binlog reader cannot "
                        f"decode: its changes would be missed. Set {setting}=OFF (SET GLOBAL and "
                        "in my.cnf); compressed events already written cannot be read: move the "
                        "sink's data aside and start over with a new snapshot"
                    )
                if ev_end:
                    end_pos = ev_end
                continue
            if isinstance(ev, RotateEvent):
                cur_file = ev.next_binlog
                end_pos = ev.position
                if not in_txn and (not by_gtid or ev.timestamp != 0):
                    commit_file, commit_pos = cur_file, ev.position
                tables.clear()
                continue
            if ev_end:
                end_pos = ev_end
            if isinstance(ev, TableMapEvent):
                if self.captured(ev.schema, ev.table):
                    tables[ev.table_id] = self._binlog_version(ev, f"{cur_file}:{ev_start}")
                else:
                    tables[ev.table_id] = None
                continue
            if isinstance(ev, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                v = tables.get(ev.table_id)
                if v is None or not in_txn:
                    continue
                ts = ev.timestamp
                schema = v.schema
                src_base = {
                    "version": version_str,
                    "connector": self.connector,
                    "name": prefix,
                    "ts_ms": ts * 1000,
                    "snapshot": "false",
                    "db": schema.namespace,
                    "sequence": None,
                    "ts_us": ts * 1_000_000,
                    "ts_ns": ts * 1_000_000_000,
                    "table": schema.table,
                    "server_id": packet.server_id,
                    "gtid": txn_gtid,
                    "file": cur_file,
                    "pos": ev_start,
                    "row": 0,
                    "thread": None,
                    "query": None,
                }
                try:
                    rows = ev.rows  # the library decodes the row images here, on first access
                except _UNDECODABLE as e:
                    raise SourceError(
                        f"the binlog reader cannot decode the rows of {schema.namespace}."
                        f"{schema.table} in the event at {cur_file}:{ev_start} "
                        f"({type(e).__name__}: {e}); every restart would fail on it: change the "
                        "column's type or character set, or leave the table out of source.tables",
                        retryable=False,
                    ) from None
                for i, r in enumerate(rows):
                    src = dict(src_base, row=i) if i else src_base
                    eid = f"{cur_file}:{ev_start}:{i}"
                    if isinstance(ev, WriteRowsEvent):
                        change(
                            schema, "c", None, convert(r["values"], r["none_sources"], v), src, eid
                        )
                    elif isinstance(ev, DeleteRowsEvent):
                        change(
                            schema, "d", convert(r["values"], r["none_sources"], v), None, src, eid
                        )
                    else:
                        before = convert(r["before_values"], r["before_none_sources"], v)
                        after = convert(r["after_values"], r["after_none_sources"], v)
                        if schema.key and any(before[k] != after[k] for k in schema.key):
                            change(schema, "d", before, None, src, eid + ":d")
                            change(schema, "c", None, after, src, eid + ":c")
                        else:
                            change(schema, "u", before, after, src, eid)
                continue
            if isinstance(ev, MariadbGtidEvent):
                ts = ev.timestamp
                begin_group(ev.gtid, ev.domain_id, ev.server_id)
                standalone = bool(ev.flags & _FL_STANDALONE)
                continue
            if isinstance(ev, GtidEvent):
                ts = ev.timestamp
                begin_group(ev.gtid, -1, packet.server_id)
                standalone = True  # until a BEGIN query says it is a transaction
                continue
            if isinstance(ev, XidEvent):
                commit(ev_end)
                continue
            if isinstance(ev, QueryEvent):
                q = ev.query.strip().upper() if isinstance(ev.query, str) else ""
                if q == "BEGIN":
                    if not in_txn:
                        begin_group(None, -1, packet.server_id)
                    standalone = False
                elif q == "COMMIT":
                    commit(ev_end)
                elif not in_txn or standalone:
                    # DDL (or another statement logged on its own): a group of its own
                    if not in_txn:
                        begin_group(None, -1, packet.server_id)
                    self._float_cache.clear()
                    self._json_cache.clear()
                    self._default_cache.clear()
                    commit(ev_end)
                continue

    def close(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                self._reader.close()
            self._reader = None
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                self._ctl.close()
            self._ctl = None
