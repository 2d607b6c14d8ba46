"""The latency rule (issue 12 item 6): outside a transaction, a batch is written as soon as the
stream pauses, not when max_wait_ms fires; a transaction is never cut by a pause."""

from __future__ import annotations

import queue
import threading
from typing import Any

import psycopg
import pytest

from cdc.model import ChangeBatch, RowChange, TxBoundary
from cdc.sources.postgres._source import PostgresSource
from cdc.sources.postgres.config import PostgresSourceConfig
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

AN_HOUR_MS = 3_600_000


def test_a_paused_stream_writes_its_batch_without_waiting_for_the_timer(pg_db: str) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = PostgresSourceConfig(
        type="postgres", dsn=pg_db, tables=["t"], snapshot="never", heartbeat_interval_s=0
    )
    # With the timer alone, the batch would wait an hour (or for stop()).
    src = PostgresSource(cfg, "lat", "lat", max_wait_ms=AN_HOUR_MS)
    out: queue.Queue[ChangeBatch | BaseException] = queue.Queue()

    def read() -> None:
        try:
            for batch in src.batches(None):
                if batch.events:
                    out.put(batch)
        except BaseException as e:  # the test fails with it below
            out.put(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: src.streaming, 30, "the source to stream")
        with psycopg.connect(pg_db) as c:  # one transaction of three rows
            c.execute("INSERT INTO t SELECT g FROM generate_series(1, 3) g")

        def first_batch() -> ChangeBatch | None:
            try:
                item = out.get_nowait()
            except queue.Empty:
                return None
            if isinstance(item, BaseException):
                raise item
            return item

        # 15 s, not 30: a keepalive asking for a reply (every wal_sender_timeout / 2 = 30 s by
        # default) also makes the source write what it holds, timer or not
        batch = wait_until(first_batch, 15, "the transaction's batch, long before max_wait_ms")
        # the whole transaction, BEGIN to END, in one batch: a pause inside it does not cut it
        got: list[Any] = batch.events
        assert len(got) == 5, got
        assert isinstance(got[0], TxBoundary) and got[0].status == "BEGIN"
        assert [e.after for e in got[1:4] if isinstance(e, RowChange)] == [(1,), (2,), (3,)]
        assert isinstance(got[4], TxBoundary) and got[4].status == "END"
    finally:
        src.stop()
        reader.join(30)
        src.close()
    assert not reader.is_alive()
