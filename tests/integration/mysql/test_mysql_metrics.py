"""MySQL/MariaDB snapshot progress and event counts in the daemon's metrics and status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cdc import metrics
from cdc.status import BOARD
from tests.conftest import RecordingReporter, wait_until
from tests.integration.mysql.conftest import connect, read_log, write_config

pytestmark = pytest.mark.integration


def sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_snapshot_progress_and_counts_reach_the_metrics(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    conn = connect(server, mysql_db)
    cur = conn.cursor()
    cur.execute("CREATE TABLE a (id INT PRIMARY KEY, v INT)")
    cur.execute("CREATE TABLE b (id INT PRIMARY KEY, v INT)")
    cur.executemany("INSERT INTO a VALUES (%s, 0)", [(i,) for i in range(1, 1201)])
    cur.executemany("INSERT INTO b VALUES (%s, 0)", [(i,) for i in range(1, 31)])
    cur.execute("ANALYZE TABLE a, b")
    cur.fetchall()
    name = f"m_{mysql_db}"
    cfg = write_config(
        tmp_path / "c.yaml",
        server,
        [f"{mysql_db}.*"],
        tmp_path / "log",
        name=name,
        max_events=500,
    )
    r = run_pipeline(cfg)
    wait_until(lambda: BOARD.get(name).state == "streaming", 60, "snapshot done, streaming")
    for table, n in ((f"{mysql_db}.a", 1200), (f"{mysql_db}.b", 30)):
        assert sample("cdc_snapshot_rows_done", pipeline=name, table=table) == n
        assert sample("cdc_snapshot_rows_total", pipeline=name, table=table) == n
        assert BOARD.get(name).snapshot[table] == {"done": n, "total": n}
        assert sample("cdc_events_total", pipeline=name, table=table, op="r") == n
    cur.execute("UPDATE a SET v = 1 WHERE id <= 10")
    cur.execute("DELETE FROM b WHERE id <= 3")
    wait_until(
        lambda: sample("cdc_events_total", pipeline=name, table=f"{mysql_db}.b", op="d") == 3,
        60,
        "the deletes counted",
    )
    assert sample("cdc_events_total", pipeline=name, table=f"{mysql_db}.a", op="u") == 10
    lag = sample("cdc_lag_ms", pipeline=name)
    assert lag is not None and lag >= 0
    r.stop()
    rows = [x for x in read_log(tmp_path / "log") if x["value"] is not None]
    ops = [x["value"]["op"] for x in rows if not x["topic"].endswith(".transaction")]
    assert ops.count("r") == 1230 and ops.count("u") == 10 and ops.count("d") == 3


def test_the_source_reports_through_its_context_and_flags_its_snapshot_batches(
    server: Any, mysql_db: str
) -> None:
    """Progress goes to the reporter the source was opened with (not to a board found by
    thread), and every snapshot batch but the last (whose position is where streaming
    starts) says it belongs to the snapshot."""
    from cdc.model import PipelineContext
    from cdc.sources.mysql import Config, open_source
    from tests.integration.mysql.conftest import CLIENT_SERVER_ID

    cur = connect(server, mysql_db).cursor()
    cur.execute("CREATE TABLE a (id INT PRIMARY KEY, v INT)")
    cur.execute("CREATE TABLE b (id INT PRIMARY KEY, v INT)")
    cur.executemany("INSERT INTO a VALUES (%s, 0)", [(i,) for i in range(1, 251)])
    cur.execute("INSERT INTO b VALUES (1, 0), (2, 0)")
    cfg = Config.model_validate(
        {
            "type": "mysql",
            "host": server.host,
            "port": server.port,
            "user": server.user,
            "password": server.password,
            "server_id": CLIENT_SERVER_ID,
            "tables": [f"{mysql_db}.*"],
        }
    )
    reporter = RecordingReporter()
    source = open_source(cfg, PipelineContext("rep", "rep", max_events=100, reporter=reporter))
    batches = []
    try:
        for batch in source.batches(None):
            batches.append(batch)
            flags = [e.source["snapshot"] for e in batch.events if hasattr(e, "source")]
            if "last" in flags:
                break
    finally:
        source.close()
    assert len(batches) > 2
    assert [b.snapshot for b in batches] == [True] * (len(batches) - 1) + [False]
    assert all(b.position.get("snapshot") == "running" for b in batches[:-1])
    assert sorted(batches[-1].position) == ["file", "gtid", "pos"]
    final = {t: (done, total) for t, done, total in reporter.progress}
    assert final == {f"{mysql_db}.a": (250, 250), f"{mysql_db}.b": (2, 2)}
