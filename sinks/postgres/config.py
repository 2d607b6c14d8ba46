"""Configuration of the Postgres target (imports no driver)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from cdc.sinks._sql.config import TargetOptions


class PostgresSinkConfig(TargetOptions):
    """A Postgres database the changes are applied to, exactly once (the migration target)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["postgres"] = Field(description="selects the Postgres target")
    dsn: str = Field(
        description="libpq connection string or URI of the target database; the user needs "
        "CREATE on it (schemas and tables are created as needed), write access to the tables, "
        "and TEMPORARY for the staging tables of copy_min_rows (without it updates go by "
        "statements, slower)",
        json_schema_extra={"secret": True},
    )
    schema_: str | None = Field(
        None,
        alias="schema",
        description="schema the tables go to (created if missing); default: the source's "
        "schema (Postgres) or database (MySQL) of each table",
    )
    copy_min_rows: int = Field(
        64,
        ge=1,
        description="a batch's rows of one table are written by COPY (into the table when their "
        "keys are new in the source, else into a staging table, then upserted) once there are "
        "at least this many; fewer go as one statement with an array per column, which costs "
        "one round trip instead of three but more CPU per row",
    )
