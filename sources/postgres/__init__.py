from __future__ import annotations

from typing import TYPE_CHECKING

from cdc.model import PipelineContext, Problem, Source
from cdc.sources.postgres.config import PostgresSourceConfig

if TYPE_CHECKING:
    from cdc.config import PipelineConfig

Config = PostgresSourceConfig


def open_source(config: PostgresSourceConfig, context: PipelineContext) -> Source:
    """Create the source (imports psycopg only now, so validating a config never needs it)."""
    from cdc.sources.postgres._source import PostgresSource

    return PostgresSource(
        config,
        context.name,
        context.prefix,
        max_events=context.max_events,
        max_wait_ms=context.max_wait_ms,
        transaction_metadata=context.transaction_metadata,
        reporter=context.reporter,
        event_details=context.event_details,
    )


def check_source(config: PostgresSourceConfig, pipeline: PipelineConfig) -> list[Problem]:
    """Preflight problems of this pipeline's server and tables (``cdc check``); [] when none."""
    from cdc.sources.postgres._check import check

    return check(config, pipeline.name)


def request_snapshot(
    config: PostgresSourceConfig, pipeline: str, tables: list[str], condition: str | None
) -> str:
    """Ask this pipeline's running source for an incremental snapshot of ``tables`` (names as
    in ``source.tables``), only rows meeting the SQL ``condition`` when given (``cdc snapshot``).

    Optional for a source plugin. Checks first and sends nothing when a check fails: a table
    not captured (ConfigError), without a primary key, or a condition the server rejects (a
    CdcError saying which and why). Then sends the request through the source's own change
    stream and returns its id once the server holds it; the running source reads it there.
    """
    from cdc.sources.postgres._incremental import request_snapshot as send

    return send(config, pipeline, tables, condition)


__all__ = ["Config", "PostgresSourceConfig", "check_source", "open_source", "request_snapshot"]


def plan_drop(config: PostgresSourceConfig, pipeline: str) -> object:
    """What `cdc drop` would drop of this pipeline on the server, read now (a ``Teardown``:
    ``drops``, ``kept``, ``absent``, ``refusal``, ``execute()``, ``close()``); connects, so a
    SourceError when the server cannot be reached. Optional for a source plugin: one without it
    keeps nothing on the server."""
    from cdc.sources.postgres._teardown import Teardown

    return Teardown(config, pipeline)


def verify_side(dsn: str, label: str) -> object:
    """A connected ``cdc.verify.SqlSide`` on the Postgres database ``dsn`` (``cdc verify``'s
    source or target side)."""
    from cdc.sources.postgres._verify import PostgresSide

    return PostgresSide(dsn, label)


def verify_reached(applied: dict[str, object] | None, point: object) -> bool:
    """Whether a target's applied position of this source covers a verify point."""
    from cdc.sources.postgres._verify import reached

    return reached(applied, point)
