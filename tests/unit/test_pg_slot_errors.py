"""Which replication errors mean the slot's position is gone (no server needed)."""

from __future__ import annotations

import pytest

from cdc.errors import PositionLost, SourceError
from cdc.sources.postgres._source import PostgresSource
from cdc.sources.postgres.config import PostgresSourceConfig


def source() -> PostgresSource:
    cfg = PostgresSourceConfig(type="postgres", dsn="host=nowhere", tables=["t"], slot="s1")
    return PostgresSource(cfg, "p", "p")


@pytest.mark.parametrize(
    "server_says",
    [
        # PostgreSQL 13-15
        'ERROR:  cannot read from logical replication slot "s1"\n'
        "DETAIL:  This slot has been invalidated because it exceeded the maximum reserved size.",
        # PostgreSQL 16+
        'ERROR:  can no longer get changes from replication slot "s1"',
        "ERROR:  requested WAL segment 000000010000000000000003 has already been removed",
    ],
)
def test_lost_wal_is_position_lost_with_the_ways_out(server_says: str) -> None:
    err = source().faults.stream_error(f"START_REPLICATION failed: {server_says}")
    assert isinstance(err, PositionLost) and not err.retryable
    text = str(err)
    assert "\n" not in text and "replication slot 's1' can no longer be read" in text
    assert "snapshot: when_needed" in text and "pg_drop_replication_slot('s1')" in text


def test_other_stream_errors_stay_retryable() -> None:
    err = source().faults.stream_error("replication stream ended: server closed the connection")
    assert type(err) is SourceError and err.retryable
