"""kill -9 of ``cdc run`` while a writer commits: every change exactly once, in order."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.integration.mysql.conftest import connect, read_log, write_config

pytestmark = pytest.mark.integration

ROWS = 50_000
PER_TXN = 10


def _count(log_dir: Path, topic: str) -> int:
    from cdc.sinks.log import LogReader

    if not log_dir.exists():
        return 0
    return sum(1 for _ in LogReader(log_dir).records(0, topic))


@pytest.mark.parametrize("mode", ["file", "gtid"])
def test_kill_9_during_writes_loses_and_repeats_nothing(
    mode: str, server: Any, mysql_db: str, tmp_path: Path, daemon: Any
) -> None:
    db = mysql_db
    conn = connect(server, db)
    cur = conn.cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY, n INT NOT NULL)")
    log_dir = tmp_path / "log"
    topic = f"mysqltest.{db}.t"
    # batches of 500 events cut transactions of 12 events (BEGIN, 10 rows, END) in the middle
    cfg = write_config(
        tmp_path / "c.yaml",
        server,
        [f"{db}.t"],
        log_dir,
        max_events=500,
        position_mode=mode,
    )
    d = daemon(cfg).start()
    wait_until(
        lambda: log_dir.exists() and any(log_dir.glob("*.seg*")) and _has_position(log_dir),
        60,
        "the daemon's first position",
    )

    errors: list[BaseException] = []

    def write() -> None:
        try:
            w = connect(server, db)
            wc = w.cursor()
            for start in range(0, ROWS, PER_TXN):
                values = ", ".join(f"({i}, {i})" for i in range(start, start + PER_TXN))
                wc.execute("BEGIN")
                wc.execute(f"INSERT INTO t VALUES {values}")
                wc.execute("COMMIT")
            w.close()
        except BaseException as e:  # reported below
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for threshold in (5_000, 20_000, 35_000):
            wait_until(lambda t=threshold: _count(log_dir, topic) >= t, 120, f"{threshold} rows")
            d.kill()
            d = daemon(cfg).start()
    finally:
        writer.join(300)
    assert not errors, errors
    wait_until(lambda: _count(log_dir, topic) >= ROWS, 180, f"all {ROWS} rows in the log")
    # all rows may be in before the last restart (the compiled rows decoder is fast): a SIGTERM
    # before the daemon's handler is installed would end it with -15, not a clean stop
    wait_until(lambda: "starting from" in d.output(), 60, "the restarted daemon to start")
    assert d.terminate() == 0, d.output()

    records = read_log(log_dir, topic)
    ids = [r["value"]["after"]["id"] for r in records]
    assert len(ids) == ROWS, (
        f"{len(ids) - len(set(ids))} duplicates, {ROWS - len(set(ids))} missing"
    )
    assert ids == list(range(ROWS))
    assert all(r["value"]["op"] == "c" for r in records)
    # transaction metadata: every transaction has one BEGIN and one END with 10 events
    tx = read_log(log_dir, "mysqltest.transaction")
    ends = [t["value"] for t in tx if t["value"]["status"] == "END"]
    assert len(ends) == ROWS // PER_TXN
    assert all(e["event_count"] == PER_TXN for e in ends)
    assert sum(1 for t in tx if t["value"]["status"] == "BEGIN") == ROWS // PER_TXN


def _has_position(log_dir: Path) -> bool:
    from cdc.sinks.log import LogReader

    return LogReader(log_dir).info()["last_position"] is not None


def test_a_dropped_binlog_connection_restarts_from_the_durable_position(
    server: Any, mysql_db: str, tmp_path: Path, daemon: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    log_dir = tmp_path / "log"
    topic = f"mysqltest.{db}.t"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.t"], log_dir)
    d = daemon(cfg).start()
    wait_until(lambda: log_dir.is_dir() and _has_position(log_dir), 60, "the first position")
    cur.execute("INSERT INTO t VALUES (1), (2)")
    wait_until(lambda: _count(log_dir, topic) == 2, 30, "two rows")

    def dump_threads() -> list[int]:
        # MySQL names it 'Binlog Dump GTID' when the reader resumes by GTID
        cur.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'"
        )
        return [r[0] for r in cur.fetchall()]

    for thread_id in wait_until(dump_threads, 30, "the binlog dump thread"):
        cur.execute(f"KILL {thread_id}")
    cur.execute("INSERT INTO t VALUES (3)")
    wait_until(lambda: "binlog connection was lost" in d.output(), 60, "the failure to be seen")
    cur.execute("INSERT INTO t VALUES (4)")
    wait_until(lambda: _count(log_dir, topic) >= 4, 60, "rows after the restart")
    assert d.terminate() == 0, d.output()
    ids = [r["value"]["after"]["id"] for r in read_log(log_dir, topic)]
    assert ids == [1, 2, 3, 4]
