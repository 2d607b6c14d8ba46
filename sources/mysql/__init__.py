"""MySQL/MariaDB source: the binlog in row format, with a consistent initial snapshot."""

from cdc.model import PipelineContext, Source
from cdc.sources.mysql.config import MySqlSourceConfig

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
    )


def check_source(config: MySqlSourceConfig, pipeline: object) -> list[str]:
    """Preflight problems: binlog settings, privileges, table patterns (``cdc check``)."""
    from cdc.sources.mysql._check import check

    return check(config, pipeline.name)  # type: ignore[attr-defined]


__all__ = ["Config", "MySqlSourceConfig", "check_source", "open_source"]
