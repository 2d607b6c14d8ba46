"""Postgres target: applies change batches to a Postgres database, exactly once (see
``cdc.sinks._sql`` for the apply and its guarantee, docs/targets.md for the type mapping)."""

from __future__ import annotations

from cdc.model import PipelineContext, RowSink
from cdc.sinks.postgres.config import PostgresSinkConfig

Config = PostgresSinkConfig


def open_sink(config: PostgresSinkConfig, context: PipelineContext) -> RowSink:
    """Create the target (imports psycopg only now; connects on ``committed()``)."""
    from cdc.sinks.postgres._sink import PostgresTarget

    return PostgresTarget(config, context.name, max_events=context.max_events)


__all__ = ["Config", "PostgresSinkConfig", "open_sink"]
