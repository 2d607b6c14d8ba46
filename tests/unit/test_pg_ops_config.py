"""The Postgres source's heartbeat and slot-health settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cdc.sources.postgres.config import PostgresSourceConfig

BASE = {"type": "postgres", "dsn": "host=db", "tables": ["t"]}


def test_defaults() -> None:
    c = PostgresSourceConfig.model_validate(BASE)
    assert c.heartbeat_interval_s == 10 and c.heartbeat_action_query is None
    assert c.slot_check_interval_s == 60 and c.max_retained_wal_mb == 1024


@pytest.mark.parametrize(
    "field, value",
    [("heartbeat_interval_s", -1), ("slot_check_interval_s", 0), ("max_retained_wal_mb", -5)],
)
def test_out_of_range_values_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as e:
        PostgresSourceConfig.model_validate({**BASE, field: value})
    assert field in str(e.value)


def test_zero_disables_heartbeats_and_the_warning() -> None:
    c = PostgresSourceConfig.model_validate(
        {**BASE, "heartbeat_interval_s": 0, "max_retained_wal_mb": 0}
    )
    assert c.heartbeat_interval_s == 0 and c.max_retained_wal_mb == 0
