"""Configuration of the MySQL/MariaDB target (imports no driver)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from cdc.sinks._sql.config import TargetOptions
from cdc.sources.mysql.config import apply_dsn, check_dsn


class MySqlSinkConfig(TargetOptions):
    """A MySQL or MariaDB server the changes are applied to, exactly once (InnoDB tables)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["mysql"] = Field(description="selects the MySQL/MariaDB target")
    dsn: str | None = Field(
        None,
        description="mysql://user:password@host:port URI; instead of host/port/user/password",
        json_schema_extra={"secret": True},
    )
    host: str = Field("127.0.0.1", description="server host name or address")
    port: int = Field(3306, ge=1, le=65535, description="server TCP port")
    user: str = Field(
        "root",
        description="user with CREATE, ALTER, DROP, INSERT, UPDATE, DELETE and SELECT on the "
        "target databases and the state database",
    )
    password: str = Field(
        "", description="password of the user", json_schema_extra={"secret": True}
    )
    database: str | None = Field(
        None,
        description="database the tables go to (created if missing); default: the source's "
        "database (MySQL) or schema (Postgres) of each table",
    )

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        return check_dsn(v)

    @model_validator(mode="after")
    def _apply_dsn(self) -> MySqlSinkConfig:
        apply_dsn(self)
        return self
