"""MySQL/MariaDB source: the binlog in row format, with a consistent initial snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdc.model import PipelineContext, Problem, Source
from cdc.sources.mysql.config import MySqlSourceConfig

if TYPE_CHECKING:
    from cdc.config import PipelineConfig

Config = MySqlSourceConfig


def open_source(config: MySqlSourceConfig, context: PipelineContext) -> Source:
    """Create the source (imports pymysql only now, so validating a config never needs it)."""
    from cdc.sources.mysql._source import MySqlSource

    return MySqlSource(
        config,
        context.name,
        context.prefix,
        max_events=context.max_events,
        max_wait_ms=context.max_wait_ms,
        transaction_metadata=context.transaction_metadata,
        reporter=context.reporter,
        event_details=context.event_details,
    )


def check_source(config: MySqlSourceConfig, pipeline: PipelineConfig) -> list[Problem]:
    """Preflight problems: binlog settings, privileges, table patterns (``cdc check``)."""
    from cdc.sources.mysql._check import check

    return check(config, pipeline.name)


def request_snapshot(
    config: MySqlSourceConfig, pipeline: str, tables: list[str], condition: str | None
) -> str:
    """Ask this pipeline's running source for an incremental snapshot of ``tables``
    ("database.table"), only rows meeting the SQL ``condition`` when given (``cdc snapshot``):
    checked first (ConfigError: no signal table, a table not captured; SourceError: no primary
    key, a condition the server rejects), then an execute-snapshot row is inserted into the
    signal table; returns its id. The running source reads it from the binlog."""
    from cdc.sources.mysql._incremental import request_snapshot as send

    return send(config, pipeline, tables, condition)


def verify_side(host: str, port: int, user: str, password: str, label: str) -> object:
    """A connected ``cdc.verify.SqlSide`` on a MySQL/MariaDB server (``cdc verify``'s source or
    target side)."""
    from cdc.sources.mysql._verify import MySqlSide

    return MySqlSide(host, port, user, password, label)


def verify_reached(applied: dict[str, object] | None, point: object) -> bool:
    """Whether a target's applied position of this source covers a verify point."""
    from cdc.sources.mysql._verify import reached

    return reached(applied, point)


__all__ = [
    "Config",
    "MySqlSourceConfig",
    "check_source",
    "open_source",
    "request_snapshot",
]
