"""The latency rule on the binlog: a batch is written as soon as the stream pauses (nothing more
buffered on the binlog connection), not when the batch timer fires (issue 12, item 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import wait_until
from tests.integration.mysql.conftest import connect, read_log, write_config

pytestmark = pytest.mark.integration


def _positioned(log_dir: Path) -> bool:
    from cdc.sinks.log import LogReader

    return log_dir.is_dir() and LogReader(log_dir).info()["last_position"] is not None


def test_a_change_is_written_when_the_binlog_pauses_not_when_the_timer_fires(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    log_dir = tmp_path / "log"
    path = write_config(tmp_path / "c.yaml", server, [f"{db}.t"], log_dir)
    cfg = yaml.safe_load(path.read_text())
    # a timer far beyond the test's deadlines: only the latency rule can write the batches
    cfg["pipelines"][0]["batch"]["max_wait_ms"] = 3_600_000
    path.write_text(yaml.safe_dump(cfg))
    topic = f"mysqltest.{db}.t"
    p = run_pipeline(path)
    wait_until(lambda: _positioned(log_dir), 30, "the (empty) snapshot's position")
    cur.execute("INSERT INTO t VALUES (1, 1)")
    wait_until(lambda: len(read_log(log_dir, topic)) == 1, 30, "the first row")
    # a transaction of several statements is still written whole, after its commit
    cur.execute("BEGIN")
    cur.execute("INSERT INTO t VALUES (2, 2)")
    cur.execute("UPDATE t SET v = 10 WHERE id = 1")
    cur.execute("COMMIT")
    wait_until(lambda: len(read_log(log_dir, topic)) == 3, 30, "the transaction's two changes")
    p.stop()
    ops = [e["value"]["op"] for e in read_log(log_dir, topic)]
    assert ops == ["c", "c", "u"]
