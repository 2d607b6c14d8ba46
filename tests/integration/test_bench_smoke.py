"""The benchmark harness runs end to end on a tiny workload and reports in the expected shape.

Only the shape is checked (rows of the table, fields of the JSON): figures from a tiny workload
on a shared machine mean nothing, and timings never go into tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOG = ["postgres-log", "mysql-log"]  # the Kafka ones add two JVM starts: out of budget
TARGETS = ["postgres-postgres", "mysql-postgres"]  # apply into a database target
PIPELINES = LOG + TARGETS


def test_bench_reports_table_and_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--scale",
            "0.001",
            "--runs",
            "1",
            "--pipelines",
            ",".join(PIPELINES),
            "--latency-rate",
            "500",
            "--latency-seconds",
            "1",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "scale=0.001" in out
    for pipeline in PIPELINES:
        for workload in ("W1", "W2", "W3"):
            assert any(
                line.startswith(pipeline) and f" {workload} " in line for line in out.splitlines()
            ), f"no {pipeline} {workload} row in:\n{out}"
    assert "pg_recvlogical" in out and "mariadb-binlog" in out
    assert "python-mysql-replication" in out
    assert "p99 ms" in out
    assert "COPY into the target" in out

    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["scale"] == 0.001 and doc["runs"] == 1
    assert doc["sizes"]["W1_changes"] == 3000 and doc["sizes"]["W3_rows"] == 2000
    assert {"cpu_model", "cores", "ram_gb"} <= doc["machine"].keys()
    assert {"python", "cdc", "postgres", "mariadb"} <= doc["versions"].keys()
    assert doc["git"]["commit"]
    rows = {(r["pipeline"], r["workload"]): r for r in doc["summary"]["throughput"]}
    # W4: a Postgres source into a sink with per-record times
    incremental = {("postgres-log", "W4"), ("postgres-log", "W4s")}
    assert set(rows) == {(p, w) for p in PIPELINES for w in ("W1", "W2", "W3")} | incremental
    for (pipeline, workload), r in rows.items():
        assert set(r["rows_per_s"]) == {"min", "median", "max"}
        assert r["cpu_s"]["median"] is not None and r["peak_rss_mb"]["median"] is not None
        assert r["cpu_us_per_row"]["median"] is not None
        if workload in ("W4", "W4s"):
            # beside the same run's W3 / W1 (rates, absent when n/a at this scale)
            assert set(r["ceilings"]) <= {
                "W3 alone (same run)",
                "W1 stream beside it",
                "W1 alone (same run)",
            }
            continue
        if workload == "W3":
            want = (
                {"COPY to /dev/null"}
                if pipeline.startswith("postgres")
                else {"SELECT to /dev/null"}
            )
        elif pipeline.startswith("postgres"):
            want = {"pg_recvlogical"}
        else:
            want = {"mariadb-binlog", "python-mysql-replication"}
        if pipeline in TARGETS:
            want = want | {"COPY into the target"}
            # the capture rate of the same source into the log, when it was measurable
            capture = f"capture {pipeline.split('-')[0]}-log"
            assert set(r["ceilings"]) - want <= {capture}
            want = set(r["ceilings"])
        assert set(r["ceilings"]) == want
        assert set(r["fraction_of_ceiling"]) == want
    assert len(doc["results"]) == 3 * len(PIPELINES) + len(incremental)
    lat = {x["pipeline"]: x for x in doc["summary"]["latency"]}
    assert set(lat) == set(LOG)  # a database target has no per-record times
    for x in lat.values():
        assert x["p50_ms"]["median"] <= x["p99_ms"]["median"] <= x["max_ms"]["max"]
