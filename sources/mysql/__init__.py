"""MySQL/MariaDB source: the binlog in row format, with a consistent initial snapshot."""

from sources.mysql.config import MySqlSourceConfig

Config = MySqlSourceConfig


def open_source(config: MySqlSourceConfig, pipeline: object) -> object:
    """Create the source (imports pymysql only now, so validating a config never needs it)."""
    from sources.mysql._source import MySqlSource

    return MySqlSource(
        config,
        pipeline.name,  # type: ignore[attr-defined]
        pipeline.prefix,  # type: ignore[attr-defined]
        max_events=pipeline.batch.max_events,  # type: ignore[attr-defined]
        max_wait_ms=pipeline.batch.max_wait_ms,  # type: ignore[attr-defined]
        transaction_metadata=pipeline.transaction_metadata,  # type: ignore[attr-defined]
    )


def check_source(config: MySqlSourceConfig, pipeline: object) -> list[str]:
    """Preflight problems: binlog settings, privileges, table patterns (``cdc check``)."""
    from sources.mysql._check import check

    return check(config, pipeline.name)  # type: ignore[attr-defined]


__all__ = ["Config", "MySqlSourceConfig", "check_source", "open_source"]
