"""MySQL/MariaDB target: applies change batches to a MySQL or MariaDB server, exactly once (see
``cdc.sinks._sql`` for the apply and its guarantee, docs/targets.md for the type mapping)."""

from __future__ import annotations

from cdc.model import PipelineContext, RowSink
from cdc.sinks.mysql.config import MySqlSinkConfig

Config = MySqlSinkConfig


def open_sink(config: MySqlSinkConfig, context: PipelineContext) -> RowSink:
    """Create the target (imports pymysql only now; connects on ``committed()``)."""
    from cdc.sinks.mysql._sink import MySqlTarget

    return MySqlTarget(config, context.name)


__all__ = ["Config", "MySqlSinkConfig", "open_sink"]
