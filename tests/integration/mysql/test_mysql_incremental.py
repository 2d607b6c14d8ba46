"""Snapshots while streaming on MariaDB and MySQL (issue 16): a table added to a running
pipeline is backfilled beside the stream (also across kill -9), Debezium's signal table asks
for and stops snapshots, and bad requests get clear errors.

What a user checks: replaying the log by key gives the table as SELECT shows it, and per key
the events never go back to an older row state (each row carries a version the writer bumps).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.integration.mysql.conftest import connect, read_log, seq, write_config
from tests.logtools import row_events

pytestmark = pytest.mark.integration

SIGNAL_DDL = "CREATE TABLE {} (id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT)"


def _signal(cur: Any, table: str, id: str, kind: str, data: dict[str, Any]) -> None:
    cur.execute(
        f"INSERT INTO {table} (id, type, data) VALUES (%s, %s, %s)", (id, kind, json.dumps(data))
    )


def _position(log_dir: Path) -> dict[str, Any]:
    from cdc.sinks.log import LogReader

    if not log_dir.exists():
        return {}
    return LogReader(log_dir).info()["last_position"] or {}


def _incremental_reads(log_dir: Path, topic: str) -> int:
    """Records of ``topic`` that an incremental snapshot wrote (event ids "s:<request>:...")."""
    from cdc.sinks.log import LogReader

    if not log_dir.exists():
        return 0
    return sum(1 for r in LogReader(log_dir).records(0, topic) if r.event_id.startswith("s:"))


def _idle(log_dir: Path) -> bool:
    """No incremental snapshot queued or running in the durable position."""
    return not (_position(log_dir).get("incremental") or {}).get("queue")


def _marker(cur: Any, db: str, log_dir: Path, n: int) -> None:
    """Insert row ``n`` into ``db.other`` and wait for it in the log: everything committed
    before it is in the log too."""
    cur.execute(f"INSERT INTO {db}.other VALUES ({n})")
    topic = f"mysqltest.{db}.other"

    def seen() -> bool:
        return any(
            r["value"] and (r["value"]["after"] or {}).get("id") == n
            for r in read_log(log_dir, topic)
        )

    wait_until(seen, 60, f"marker {n} in the log")


def test_signal_table_execute_with_conditions_and_stop(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    cur.execute(f"INSERT INTO t SELECT seq, CONCAT('v', seq) FROM {seq(server, 100)}")
    cur.execute("CREATE TABLE u (id INT PRIMARY KEY)")
    cur.execute(f"INSERT INTO u SELECT seq FROM {seq(server, 50)}")
    cur.execute("CREATE TABLE other (id INT PRIMARY KEY)")
    cur.execute(SIGNAL_DDL.format("sig"))
    log_dir = tmp_path / "log"
    cfg = write_config(
        tmp_path / "c.yaml",
        server,
        [f"{db}.*"],  # the signal table matches too: its rows are never events
        log_dir,
        snapshot="never",
        snapshot_chunk_rows=7,
        signal_table=f"{db}.sig",
    )
    p = run_pipeline(cfg)
    wait_until(lambda: _position(log_dir), 60, "the first position")
    # (1) only the rows the condition selects, in key order, as op r / snapshot incremental
    _signal(
        cur,
        "sig",
        "ad-hoc-1",
        "execute-snapshot",
        {
            "data-collections": [f"{db}.t"],
            "type": "incremental",
            "additional-conditions": [{"data-collection": f"{db}.t", "filter": "id % 10 = 0"}],
        },
    )
    wait_until(lambda: _incremental_reads(log_dir, f"mysqltest.{db}.t") == 10, 60, "10 reads")
    # (2) execute then stop, committed before the source reads either: the stop comes before
    # the first window's watermarks in the binlog, so nothing of u is read
    p.stop()
    _signal(cur, "sig", "ad-hoc-2", "execute-snapshot", {"data-collections": [f"{db}.u"]})
    _signal(cur, "sig", "stop-2", "stop-snapshot", {"data-collections": [f"{db}.u"]})
    p = run_pipeline(cfg)
    _marker(cur, db, log_dir, 1)
    wait_until(lambda: _idle(log_dir), 30, "the stopped snapshot to leave the queue")
    _marker(cur, db, log_dir, 2)
    p.stop()

    records = row_events(read_log(log_dir))
    reads = [r for r in records if r["value"]["op"] == "r"]
    assert [r["key"]["id"] for r in reads] == list(range(10, 101, 10))
    assert {r["topic"] for r in reads} == {f"mysqltest.{db}.t"}
    for r in reads:
        v = r["value"]
        assert v["source"]["snapshot"] == "incremental"
        assert v["after"] == {"id": v["after"]["id"], "v": f"v{v['after']['id']}"}
        assert v["before"] is None
    assert not any(r["topic"].endswith(".sig") for r in records), "signal rows were emitted"
    assert _position(log_dir)["incremental"]["snapshotted"] == [f"{db}.other", f"{db}.t", f"{db}.u"]
