"""What the database targets' configurations share: where tables go and how they are named and
typed (imports no driver)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator


class TargetOptions(BaseModel):
    """Fields common to ``type: postgres`` and ``type: mysql`` sinks (a base model, not a block
    of its own: the fields sit directly in the sink's config)."""

    table_prefix: str = Field(
        "", description="prepended to every target table name (not to names given in tables)"
    )
    tables: dict[str, str] = Field(
        default_factory=dict,
        description="rename map: source table (namespace.table, as the source names it) -> "
        "target table (table, or schema.table / database.table to put it elsewhere)",
    )
    column_types: dict[str, str] = Field(
        default_factory=dict,
        description="per-column target type overrides: namespace.table.column (the source's "
        "names) -> SQL type used when the column is created (e.g. interval for a MySQL TIME "
        "holding durations); such a column's type is never compared or widened",
    )
    state_schema: str = Field(
        "cdc",
        description="schema (Postgres) or database (MySQL) of the cdc_positions table, where "
        "each pipeline's applied position is written in the same transaction as its rows; "
        "created if missing",
    )
    max_retry_backoff_s: float = Field(
        30.0,
        gt=0,
        description="longest wait between two attempts to reach the target while it is down "
        "(waits double from 0.5 s up to this)",
    )

    @field_validator("column_types")
    @classmethod
    def _columns(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if k.count(".") < 2]
        if bad:
            raise ValueError(
                f"invalid column_types key {bad[0]!r}: use namespace.table.column, as the "
                "source names them"
            )
        return v

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if "." not in k]
        if bad:
            raise ValueError(
                f"invalid tables key {bad[0]!r}: use namespace.table, as the source names it"
            )
        return v
