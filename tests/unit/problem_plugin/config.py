"""The plugin's config is the Postgres source's (the test's config file says ``type: postgres``)."""

from cdc.sources.postgres.config import PostgresSourceConfig as Config

__all__ = ["Config"]
