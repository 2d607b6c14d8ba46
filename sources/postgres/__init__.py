from sources.postgres.config import PostgresSourceConfig

Config = PostgresSourceConfig


def open_source(config: PostgresSourceConfig, pipeline: object) -> object:
    """Create the source (imports psycopg only now, so validating a config never needs it)."""
    from sources.postgres._source import PostgresSource

    return PostgresSource(
        config,
        pipeline.name,  # type: ignore[attr-defined]
        pipeline.prefix,  # type: ignore[attr-defined]
        max_events=pipeline.batch.max_events,  # type: ignore[attr-defined]
        max_wait_ms=pipeline.batch.max_wait_ms,  # type: ignore[attr-defined]
        transaction_metadata=pipeline.transaction_metadata,  # type: ignore[attr-defined]
    )


def check_source(config: PostgresSourceConfig, pipeline: object) -> list[str]:
    """Preflight problems of this pipeline's server and tables (``cdc check``); [] when none."""
    from sources.postgres._check import check

    return check(config, pipeline.name)  # type: ignore[attr-defined]


__all__ = ["Config", "PostgresSourceConfig", "check_source", "open_source"]
