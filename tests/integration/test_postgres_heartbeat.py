"""Heartbeats and slot health: WAL written only by tables we do not capture must not pile up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.sinks.log import LogReader
from tests.conftest import wait_until
from tests.logtools import read_log, row_events, write_config

pytestmark = pytest.mark.integration


def config(tmp_path: Path, dsn: str, slot: str) -> Path:
    return write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: hb
    batch: {{max_wait_ms: 50}}
    source:
      type: postgres
      dsn: "{dsn}"
      tables: [public.captured]
      slot: {slot}
      heartbeat_interval_s: 1
      heartbeat_action_query: "INSERT INTO beats DEFAULT VALUES"
      status_interval_s: 1
    sink:
      type: log
      path: {tmp_path / "log"}
""",
    )


def slot_state(c: psycopg.Connection[Any], slot: str) -> tuple[int, int, int]:
    """(confirmed_flush_lsn, retained WAL bytes, current WAL position) as integers."""
    row = c.execute(
        "SELECT confirmed_flush_lsn - '0/0', pg_current_wal_lsn() - restart_lsn, "
        "pg_current_wal_lsn() - '0/0' FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    assert row is not None, f"slot {slot} is gone"
    return int(row[0]), int(row[1]), int(row[2])


def last_position(log: Path) -> dict[str, Any]:
    return dict(LogReader(log).info()["last_position"])


def captured_ids(log: Path) -> list[int]:
    return [r["value"]["after"]["id"] for r in row_events(read_log(log))]


def test_uncaptured_writes_do_not_pin_wal(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    slot = "s_" + pg_db.rsplit("dbname=", 1)[1]
    log = tmp_path / "log"
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE captured (id int PRIMARY KEY, note text)")
        c.execute("CREATE TABLE other (id bigserial PRIMARY KEY, pad text)")
        c.execute("CREATE TABLE beats (n bigserial PRIMARY KEY)")
        c.execute("INSERT INTO captured SELECT g, 'snapshot' FROM generate_series(1, 5) g")
    d = daemon(config(tmp_path, pg_db, slot)).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO captured SELECT g, 'before' FROM generate_series(6, 10) g")
        wait_until(lambda: len(captured_ids(log)) == 10, 30, "10 captured rows")

        # A steady stream of writes to a table the pipeline does not capture. A CHECKPOINT every
        # few seconds stands in for the running-xacts record the server logs every 15 s by
        # itself, which is what lets it move the slot's restart_lsn: it compresses time.
        start_confirmed, _, start_wal = slot_state(c, slot)
        confirmed_seen = {start_confirmed}
        retained_seen: list[int] = []
        halfway_wal = 0
        began = last_checkpoint = time.monotonic()
        while (elapsed := time.monotonic() - began) < 40:
            c.execute(
                "INSERT INTO other (pad) SELECT repeat('x', 1000) FROM generate_series(1, 40)"
            )
            if elapsed >= 20 and not halfway_wal:
                halfway_wal = slot_state(c, slot)[2]
            if time.monotonic() - last_checkpoint >= 4:
                c.execute("CHECKPOINT")
                last_checkpoint = time.monotonic()
            confirmed, retained, _ = slot_state(c, slot)
            confirmed_seen.add(confirmed)
            retained_seen.append(retained)
            time.sleep(0.05)  # pacing the load, not waiting for a result
        confirmed, retained, end_wal = slot_state(c, slot)
        written = end_wal - start_wal

        # confirmed_flush_lsn kept moving, and well into the second half of the run
        assert len(confirmed_seen) >= 10, sorted(confirmed_seen)
        assert confirmed > halfway_wal
        # what the slot keeps is a small part of what was written, not all of it
        assert written > 8 << 20, written
        assert retained < written // 3, (retained, written)
        assert max(retained_seen[len(retained_seen) // 2 :]) < written * 2 // 3

        # captured changes after the quiet period, across a crash, each delivered once
        c.execute("INSERT INTO captured SELECT g, 'after' FROM generate_series(11, 15) g")
        wait_until(lambda: len(captured_ids(log)) == 15, 30, "15 captured rows")
        c.execute("INSERT INTO other (pad) SELECT repeat('y', 1000) FROM generate_series(1, 500)")
        c.execute("INSERT INTO captured VALUES (16, 'after')")
        wait_until(lambda: len(captured_ids(log)) == 16, 30, "16 captured rows")
        after_16 = last_position(log)
        c.execute("INSERT INTO other (pad) SELECT repeat('z', 1000) FROM generate_series(1, 500)")
        # a heartbeat frame lands after the last captured change: the crash resumes from it
        wait_until(lambda: last_position(log)["lsn"] > after_16["lsn"], 30, "a heartbeat position")
        d.kill()
        c.execute("INSERT INTO captured SELECT g, 'restart' FROM generate_series(17, 20) g")
        d2 = daemon(config(tmp_path, pg_db, slot)).start()
        wait_until(lambda: len(captured_ids(log)) >= 20, 30, "20 captured rows")
        c.execute("INSERT INTO captured VALUES (21, 'end')")
        wait_until(lambda: len(captured_ids(log)) >= 21, 30, "21 captured rows")
        assert d2.terminate() == 0
        beats = c.execute("SELECT count(*) FROM beats").fetchone()
        assert beats is not None and beats[0] >= 20  # heartbeat_action_query ran every second
    assert captured_ids(log) == list(range(1, 22))


def test_open_transaction_is_not_lost_when_heartbeats_pass_it(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    slot = "s_" + pg_db.rsplit("dbname=", 1)[1]
    log = tmp_path / "log"
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE captured (id int PRIMARY KEY, note text)")
        c.execute("CREATE TABLE other (id bigserial PRIMARY KEY, pad text)")
        c.execute("CREATE TABLE beats (n bigserial PRIMARY KEY)")
    d = daemon(config(tmp_path, pg_db, slot)).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    with psycopg.connect(pg_db) as open_tx, psycopg.connect(pg_db, autocommit=True) as c:
        open_tx.execute("INSERT INTO captured VALUES (1, 'open')")  # commits last
        after_open = slot_state(c, slot)[2]
        c.execute("INSERT INTO captured VALUES (2, 'committed first')")
        wait_until(lambda: captured_ids(log) == [2], 30, "row 2")

        def slot_passed_the_open_insert() -> bool:
            c.execute("INSERT INTO other (pad) SELECT md5(g::text) FROM generate_series(1, 200) g")
            return slot_state(c, slot)[0] > after_open

        # heartbeats confirm WAL past the open transaction's change: the server must still
        # send that transaction when it commits, also to a restarted pipeline
        wait_until(slot_passed_the_open_insert, 30, "confirmed_flush_lsn past the open insert")
        d.kill()
        open_tx.commit()
        c.execute("INSERT INTO captured VALUES (3, 'later')")
        d2 = daemon(config(tmp_path, pg_db, slot)).start()
        wait_until(lambda: len(captured_ids(log)) >= 3, 30, "3 captured rows")
        assert d2.terminate() == 0
    assert captured_ids(log) == [2, 1, 3]
