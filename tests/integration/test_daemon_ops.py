"""The daemon as operators run it: several pipelines, a database going away, metrics, status.

Acceptance (issue 7): with one pipeline's database stopped the other keeps delivering, and the
stopped one resumes by itself with nothing lost; ``/metrics`` scraped during a load shows lag and
counts that match the log's content; ``cdc status`` works while the daemon runs; a DSN password
never appears in the logs or the status file.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scratch._common import free_port
from tests.conftest import ROOT, scratch_postgres, wait_until
from tests.logtools import read_log, row_events

pytestmark = pytest.mark.integration

PASSWORD = "Pw-never-printed-7731"


class Daemon:
    """``cdc run --log-format json`` as a subprocess; stderr/stdout into a file."""

    def __init__(self, config: Path, out: Path) -> None:
        self.config = config
        self.out = out
        self._f = open(out, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdc", "run", "-c", str(config), "--log-format", "json"],
            stdout=self._f,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            cwd=ROOT,
        )

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        self._f.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._f.close()


@pytest.fixture
def run_daemon() -> Iterator[Any]:
    started: list[Daemon] = []

    def make(config: Path, out: Path) -> Daemon:
        d = Daemon(config, out)
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()


@pytest.fixture
def private_pg() -> Iterator[Any]:
    """A server of this test's own, which it may stop and start."""
    yield from scratch_postgres()


def status(cfg: Path) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "cdc", "status", "-c", str(cfg), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if not r.stdout.strip():
        return {}
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def states(cfg: Path) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in status(cfg).get("pipelines", [])}


def ids(log: Path) -> list[int]:
    return [r["value"]["after"]["id"] for r in row_events(read_log(log)) if r["value"]["after"]]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""  # not listening (yet)


def with_password(dsn: str) -> str:
    # trust authentication ignores it: it is here to be kept out of every output
    return f"{dsn} password={PASSWORD}"


def test_one_database_down_the_other_keeps_delivering_and_it_resumes_with_nothing_lost(
    tmp_path: Path, pg_db: str, private_pg: Any, run_daemon: Any
) -> None:
    dsn_b = private_pg.create_database("b")
    for dsn in (pg_db, dsn_b):
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
    port = free_port()
    cfg = tmp_path / "cdc.yaml"
    cfg.write_text(
        f"""
pipelines:
  - name: a
    source: {{type: postgres, dsn: "{with_password(pg_db)}", tables: [public.items],
              slot: "a_{pg_db.rsplit("dbname=", 1)[1]}"}}
    sink: {{type: log, path: {tmp_path / "a"}}}
  - name: b
    source: {{type: postgres, dsn: "{with_password(dsn_b)}", tables: [public.items]}}
    sink: {{type: log, path: {tmp_path / "b"}}}
http: {{enabled: true, port: {port}}}
"""
    )
    d = run_daemon(cfg, tmp_path / "daemon.jsonl")
    ready = f"http://127.0.0.1:{port}/ready"
    wait_until(lambda: get(ready)[0] == 200, 60, "both pipelines streaming")

    def insert(dsn: str, lo: int, hi: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            # the scratch servers default to synchronous_commit=off, which an immediate stop
            # would turn into lost commits in the database itself
            c.execute("SET synchronous_commit = on")
            for i in range(lo, hi):
                c.execute("INSERT INTO items VALUES (%s, 'x')", (i,))

    insert(pg_db, 0, 50)
    # b's last rows may still be in flight when its server stops: they must arrive later
    insert(dsn_b, 0, 50)
    # immediate: a fast shutdown waits for the walsender, which waits for our acknowledgement
    # of WAL past the last captured change (the heartbeat work of issue 7 covers that)
    private_pg.stop("immediate")
    wait_until(
        lambda: states(cfg).get("b", {}).get("restarts", 0) >= 2, 60, "b failing and restarting"
    )
    code, body = get(ready)
    assert code == 503 and "b" in json.loads(body)["not_ready"]
    assert "a" not in json.loads(body)["not_ready"]
    insert(pg_db, 50, 100)
    wait_until(lambda: sorted(ids(tmp_path / "a")) == list(range(100)), 60, "a delivering")
    assert states(cfg)["b"]["state"] in ("restarting", "starting")
    assert states(cfg)["b"]["last_error"]

    private_pg.start()
    wait_until(lambda: states(cfg)["b"]["state"] == "streaming", 120, "b resumed by itself")
    insert(dsn_b, 50, 80)
    wait_until(lambda: len(ids(tmp_path / "b")) >= 80, 60, "b's rows")
    # exactly the rows written: nothing lost, nothing twice
    with psycopg.connect(dsn_b) as c:
        in_db = [r[0] for r in c.execute("SELECT id FROM items ORDER BY id")]
    assert in_db == list(range(80))
    assert ids(tmp_path / "b") == in_db
    assert ids(tmp_path / "a") == list(range(100))
    wait_until(lambda: get(ready)[0] == 200, 30, "ready again")

    _, text = get(f"http://127.0.0.1:{port}/metrics")
    restarts = [ln for ln in text.splitlines() if ln.startswith("cdc_pipeline_restarts_total{")]
    assert any('pipeline="b"' in ln and float(ln.split()[-1]) >= 2 for ln in restarts)
    assert not any('pipeline="a"' in ln and float(ln.split()[-1]) > 0 for ln in restarts)

    assert d.terminate() == 0
    lines = d.lines()
    assert all({"ts", "level", "logger", "message"} <= set(obj) for obj in lines)
    failures = [o for o in lines if o["message"].startswith("pipeline b failed (attempt")]
    assert len(failures) >= 2
    assert all(o["pipeline"] == "b" and o["level"] == "warning" for o in failures)
    # the reason is given: a connection problem
    assert all("SourceError" in o["message"] or "Error" in o["message"] for o in failures)
    sigterm = next(i for i, o in enumerate(lines) if o["message"].startswith("received SIGTERM"))
    assert not any("restarting in" in o["message"] for o in lines[sigterm:])
    output = (tmp_path / "daemon.jsonl").read_text()
    assert PASSWORD not in output
    status_file = tmp_path / "cdc.status.json"
    assert PASSWORD not in status_file.read_text()
    final = json.loads(status_file.read_text())
    assert final["running"] is False
    assert {p["name"]: p["state"] for p in final["pipelines"]} == {"a": "stopped", "b": "stopped"}


def test_metrics_during_a_load_match_the_log_and_status_works_while_running(
    tmp_path: Path, pg_db: str, run_daemon: Any
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE orders (id int PRIMARY KEY, n int)")
        c.execute("CREATE TABLE lines (id int PRIMARY KEY, n int)")
        c.execute("INSERT INTO orders SELECT g, 0 FROM generate_series(1, 300) g")
    port = free_port()
    cfg = tmp_path / "ops.yaml"
    cfg.write_text(
        f"""
pipelines:
  - name: load
    source: {{type: postgres, dsn: "{with_password(pg_db)}", tables: [public.orders, public.lines],
              slot: "l_{pg_db.rsplit("dbname=", 1)[1]}"}}
    sink: {{type: log, path: {tmp_path / "log"}}}
http: {{enabled: true, port: {port}}}
status_file: state/ops.json
"""
    )
    (tmp_path / "state").mkdir()
    d = run_daemon(cfg, tmp_path / "daemon.jsonl")
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: get(base + "/ready")[0] == 200, 60, "streaming")
    assert get(base + "/health")[0] == 200
    # the status file follows within status_interval_s (the endpoint reads the live state)
    wait_until(lambda: states(cfg)["load"]["state"] == "streaming", 30, "status: streaming")

    failed: list[BaseException] = []

    def load() -> None:
        try:
            work()
        except BaseException as e:
            failed.append(e)
            raise

    def work() -> None:
        with psycopg.connect(pg_db, autocommit=True) as c:
            for k in range(40):
                with c.transaction():
                    c.execute(
                        "INSERT INTO lines SELECT g, %s FROM generate_series(%s::int, %s::int) g",
                        (k, k * 200, k * 200 + 199),
                    )
                    c.execute("UPDATE orders SET n = n + 1 WHERE id %% 40 = %s", (k,))
                    c.execute(
                        "DELETE FROM lines WHERE id BETWEEN %s AND %s", (k * 200, k * 200 + 9)
                    )
                time.sleep(0.1)  # a steady load over a few seconds, not one burst

    loader = threading.Thread(target=load)
    loader.start()
    scrapes = []
    while loader.is_alive():
        _, text = get(base + "/metrics")
        scrapes.append(parse_metrics(text))
        if len(scrapes) == 2:
            # `cdc status` works while the daemon runs (a process start: not on every scrape)
            assert states(cfg)["load"]["state"] == "streaming"
        loader.join(0.2)
    assert not failed
    expected = Counter(
        {("public.orders", "r"): 300, ("public.lines", "c"): 8000}
        | {("public.orders", "u"): 300, ("public.lines", "d"): 400}
    )

    def log_counts() -> Counter[tuple[str, str]]:
        out: Counter[tuple[str, str]] = Counter()
        for r in row_events(read_log(tmp_path / "log")):
            out[(r["topic"].removeprefix("load."), r["value"]["op"])] += 1
        return out

    wait_until(lambda: log_counts() == expected, 60, "the load in the log")
    final = wait_until(
        lambda: (m := parse_metrics(get(base + "/metrics")[1])) and events(m) == expected and m,
        30,
        "metrics to settle",
    )
    # during the load, counts only grew, and never ahead of the log's final content
    assert scrapes
    for prev, cur in itertools.pairwise(scrapes):
        for k, n in events(prev).items():
            assert events(cur)[k] >= n
    assert all(events(s)[k] <= expected[k] for s in scrapes for k in events(s))
    lags = [s[LAG] for s in scrapes if LAG in s]
    assert len(lags) >= 2, f"{len(scrapes)} scrapes, {len(lags)} with a lag"
    assert all(v >= 0 for v in lags)
    # lag: the newest durable event's commit time is the newest commit in the log, and the lag
    # is the time from it to the moment that batch was durable
    rows = row_events(read_log(tmp_path / "log"))
    newest_commit_ms = max(r["value"]["source"]["ts_ms"] for r in rows if r["value"]["op"] != "r")
    commit_s = final[("cdc_last_event_commit_timestamp_seconds", (("pipeline", "load"),))]
    assert round(commit_s * 1000) == newest_commit_ms
    lag = final[("cdc_lag_ms", (("pipeline", "load"),))]
    durable_at = final[("cdc_last_durable_timestamp_seconds", (("pipeline", "load"),))]
    assert 0 <= lag <= durable_at * 1000 - newest_commit_ms + 1
    assert (
        final[("cdc_snapshot_rows_done", (("pipeline", "load"), ("table", "public.orders")))] == 300
    )
    # the status file is rewritten every status_interval_s (1 s): it may still hold the state of
    # a moment before the metrics settled, so wait for its next rewrite
    st = wait_until(
        lambda: (s := states(cfg)["load"])["events"] == sum(expected.values()) and s,
        10,
        "the status file to follow the metrics",
    )
    assert st["events"] == sum(expected.values())
    assert st["lag_ms"] is not None and st["position"]["lsn"] > 0
    assert st["snapshot"]["public.orders"] == {"done": 300, "total": 300}
    r = subprocess.run(
        [sys.executable, "-m", "cdc", "status", "-c", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0 and "load: streaming" in r.stdout
    assert d.terminate() == 0
    assert PASSWORD not in (tmp_path / "daemon.jsonl").read_text()
    assert PASSWORD not in (tmp_path / "state" / "ops.json").read_text()


Sample = tuple[str, tuple[tuple[str, str], ...]]
LAG: Sample = ("cdc_lag_ms", (("pipeline", "load"),))


def parse_metrics(text: str) -> dict[Sample, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Sample, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def events(m: dict[Sample, float]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for (name, labels), v in m.items():
        if name == "cdc_events_total":
            lab = dict(labels)
            out[(lab["table"], lab["op"])] = int(v)
    return out
