"""Configuration of the MySQL/MariaDB source."""

from __future__ import annotations

import re
from typing import Literal, Protocol
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_GLOB = re.compile(r"^[^.\s]+\.[^.\s]+$")


class _Connection(Protocol):
    dsn: str | None
    host: str
    port: int
    user: str
    password: str


def check_dsn(v: str | None) -> str | None:
    """A ``dsn`` field's validator (shared with the MySQL target's config)."""
    if v is not None:
        parts = urlsplit(v)
        if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
            raise ValueError("invalid dsn: use mysql://user:password@host:port")
    return v


def apply_dsn(config: _Connection) -> None:
    """Set host, port, user and password from ``config.dsn`` where it gives them."""
    if config.dsn is not None:
        parts = urlsplit(config.dsn)
        config.host = parts.hostname or config.host
        config.port = parts.port or config.port
        if parts.username is not None:
            config.user = unquote(parts.username)
        if parts.password is not None:
            config.password = unquote(parts.password)


class MySqlSourceConfig(BaseModel):
    """MySQL/MariaDB binlog (row format) source."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mysql"] = Field(description="selects the MySQL/MariaDB source")
    dsn: str | None = Field(
        None,
        description="mysql://user:password@host:port URI; instead of host/port/user/password",
        json_schema_extra={"secret": True},
    )
    host: str = Field("127.0.0.1", description="server host name or address")
    port: int = Field(3306, ge=1, le=65535, description="server TCP port")
    user: str = Field(
        "root",
        description="user with REPLICATION SLAVE, REPLICATION CLIENT (BINLOG MONITOR on "
        "MariaDB) and SELECT on the captured tables",
    )
    password: str = Field(
        "", description="password of the user", json_schema_extra={"secret": True}
    )
    server_id: int = Field(
        ge=1,
        le=4294967295,
        description="replica server id this connector announces; must differ from the server's "
        "and from every other replica's",
    )
    tables: list[str] = Field(
        min_length=1,
        description='tables to capture, "database.table", each part may use the globs * ? [...]',
    )
    snapshot: Literal["initial", "never", "initial_only", "when_needed"] = Field(
        "initial",
        description="initial: snapshot existing rows on first start, then stream; never: stream "
        "from the current end of the binlog; initial_only: snapshot, then stop; when_needed: "
        "like initial, and snapshot again instead of failing when the saved binlog position "
        "is gone",
    )
    position_mode: Literal["auto", "gtid", "file"] = Field(
        "auto",
        description="how to resume: gtid (MariaDB GTID state), file (binlog file + position); "
        "auto picks gtid on MariaDB and file on MySQL",
    )
    snapshot_chunk_rows: int = Field(
        10000, ge=1, description="rows per primary-key-ordered chunk read during the snapshot"
    )
    incremental_chunk_size: int = Field(
        1024,
        ge=1,
        description="rows read per chunk (one watermark window) of an incremental snapshot: a "
        "table added to tables later, `cdc snapshot`, or the signal table",
    )
    signal_table: str | None = Field(
        None,
        description='Debezium\'s signal table, "database.table" (columns id VARCHAR(42) '
        "PRIMARY KEY, type VARCHAR(32), data TEXT): snapshots while streaming write their "
        "watermarks into it (the user needs INSERT on it) and execute-snapshot / stop-snapshot "
        "signals are read from it; without it a table added to tables later is not backfilled "
        "and cdc snapshot is refused (docs/source-mysql.md)",
    )
    connector_name: Literal["mysql", "mariadb"] = Field(
        "mysql",
        description="the connector named in each event's source block and in its schema "
        "(io.debezium.connector.<name>.Source): mysql, as Debezium's MySQL connector writes on "
        "MySQL and MariaDB alike; mariadb, as Debezium's MariaDB connector (2.7+) writes",
    )
    time_adjuster: bool = Field(
        False,
        description="as Debezium's enable.time.adjuster: a DATE or DATETIME year 0001-0069 "
        "becomes 2001-2069 and 0070-0099 becomes 1970-1999; off: the year as stored, as SELECT "
        "returns it",
    )

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not _GLOB.match(t)]
        if bad:
            raise ValueError(
                f"invalid table pattern {bad[0]!r}: use database.table (globs allowed)"
            )
        if len(set(v)) != len(v):
            raise ValueError("a table pattern is listed twice")
        return v

    @field_validator("signal_table")
    @classmethod
    def _signal_table(cls, v: str | None) -> str | None:
        if v is not None and (not _GLOB.match(v) or any(ch in v for ch in "*?[")):
            raise ValueError(f"invalid signal_table {v!r}: use database.table (no globs)")
        return v

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        return check_dsn(v)

    @model_validator(mode="after")
    def _apply_dsn(self) -> MySqlSourceConfig:
        apply_dsn(self)
        return self
