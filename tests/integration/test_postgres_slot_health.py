"""Slot health: the retained-WAL gauge and warning, and a slot the server invalidated."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc import metrics
from cdc.errors import PositionLost, SourceError
from cdc.sources.postgres._connections import connect_replication
from cdc.sources.postgres._source import PostgresSource
from cdc.sources.postgres.config import PostgresSourceConfig
from tests.conftest import wait_until
from tests.integration.test_postgres_check import cdc_check, config

pytestmark = pytest.mark.integration


def source(dsn: str, slot: str, **fields: Any) -> PostgresSource:
    cfg = PostgresSourceConfig(type="postgres", dsn=dsn, tables=["t"], slot=slot, **fields)
    return PostgresSource(cfg, "health", "health")


def test_retained_wal_gauge_and_one_warning(pg_db: str, caplog: pytest.LogCaptureFixture) -> None:
    slot = "s_" + pg_db.rsplit("dbname=", 1)[1]
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)")
        c.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 40000) g")
    src = source(pg_db, slot, max_retained_wal_mb=1)
    try:
        with caplog.at_level("INFO", logger="cdc.sources.postgres._slot"):
            for _ in range(3):
                src.slot_ctl.health()
    finally:
        src.close()
    retained = metrics.REGISTRY.get_sample_value(
        "cdc_postgres_slot_retained_wal_bytes", {"pipeline": "health", "slot": slot}
    )
    assert retained is not None and retained > 2 << 20
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert f"replication slot {slot} retains" in warnings[0]
    assert "over max_retained_wal_mb 1" in warnings[0]


@pytest.fixture(scope="module")
def small_wal_server() -> Iterator[Any]:
    """A server that invalidates slots as soon as they hold back a WAL segment."""
    from scratch.postgres import start_postgres

    server = start_postgres(settings={"max_slot_wal_keep_size": "1MB"})
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.datadir.parent, ignore_errors=True)


def test_invalidated_slot_is_position_lost_with_the_ways_out(
    tmp_path: Path, small_wal_server: Any
) -> None:
    dsn = small_wal_server.create_database("lost")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
        c.execute("SELECT pg_create_logical_replication_slot('lost_slot', 'pgoutput')")

        def invalidated() -> bool:
            c.execute("INSERT INTO t SELECT coalesce(max(id), 0) + 1 FROM t")
            c.execute("SELECT pg_switch_wal()")
            c.execute("CHECKPOINT")
            row = c.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'lost_slot'"
            ).fetchone()
            return row is not None and row[0] == "lost"

        wait_until(invalidated, 60, "the slot to be invalidated")

    src = source(dsn, "lost_slot")
    try:
        with pytest.raises(PositionLost) as health:
            src.slot_ctl.health()  # what the streaming loop runs every slot_check_interval_s
        assert "replication slot 'lost_slot' was invalidated (wal_status lost" in str(health.value)
        assert "snapshot: when_needed" in str(health.value)
        assert "pg_drop_replication_slot('lost_slot')" in str(health.value)

        src.catalog.connect()
        conn = connect_replication(dsn)
        with pytest.raises(PositionLost) as start:
            src._start_streaming(conn, 0)  # the server's own refusal maps to PositionLost too
        assert "invalidated" in str(start.value) and "Ways out" in str(start.value)

        with pytest.raises(PositionLost) as resume:
            next(iter(src.batches({"lsn": 1})))
        assert "Ways out" in str(resume.value)
    finally:
        src.close()

    rc, out = cdc_check(config(tmp_path, dsn, ["t"], slot="lost_slot"))
    assert rc == 1
    assert "replication slot 'lost_slot' is invalidated (wal_status lost)" in out


def _invalidate(dsn: str, slot: str) -> None:
    """Write and switch WAL until the server invalidates ``slot`` (max_slot_wal_keep_size 1MB)."""
    with psycopg.connect(dsn, autocommit=True) as c:

        def lost() -> bool:
            c.execute("CREATE TABLE IF NOT EXISTS churn (id serial PRIMARY KEY)")
            c.execute("INSERT INTO churn DEFAULT VALUES")
            c.execute("SELECT pg_switch_wal()")
            c.execute("CHECKPOINT")
            row = c.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            return row is not None and row[0] == "lost"

        wait_until(lost, 60, f"slot {slot} to be invalidated")


@pytest.mark.parametrize("mode", ["initial", "when_needed"])
def test_slot_invalidated_during_the_snapshot_stops_it(small_wal_server: Any, mode: str) -> None:
    dsn = small_wal_server.create_database(f"snaplost_{mode}")
    slot = f"snaplost_{mode}"
    rows = 5000
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, %s) g", (rows,))
    src = source(dsn, slot, snapshot=mode, snapshot_fetch_size=100, slot_check_interval_s=0.01)
    read = 0
    try:
        batches = src.batches(None)
        read += len(next(batches).events)
        _invalidate(dsn, slot)
        with pytest.raises(SourceError) as e:
            for b in batches:
                read += len(b.events)
    finally:
        src.close()
    # stopped mid-snapshot, not after reading the whole table on a slot that can no longer stream
    assert read < rows
    assert "was invalidated (wal_status lost" in str(e.value)
    if mode == "initial":
        assert isinstance(e.value, PositionLost) and "Ways out" in str(e.value)
    else:
        # retryable: the restarted source takes a new snapshot (see test_postgres_snapshot.py)
        assert not isinstance(e.value, PositionLost)
        assert "restarting to take a new snapshot" in str(e.value)
