"""The daemon's supervision, status, metrics, HTTP endpoint and logs, with in-memory plugins."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cdc import logs, metrics, status
from cdc.config import Config, parse
from cdc.daemon import EXIT_STUCK, Daemon
from cdc.errors import SourceError
from cdc.model import ChangeBatch, Column, Reporter, RowChange, TableSchema, TxBoundary
from cdc.pipeline import Parts
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
TABLE = TableSchema("p.public.t", "public", "t", (Column("id", "int", False, "int4"),), (0,))


class FakeSink:
    """Keeps batches in memory; ``committed`` is the last position written."""

    tombstones = False
    registry: Any = None

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name

    def write(self, batch: Any) -> None:
        self.store.setdefault(self.name, []).append(batch)

    def committed(self) -> Any:
        batches = self.store.get(self.name)
        return batches[-1].position if batches else None

    def acknowledgeable(self) -> Any:
        return self.committed()

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


CONVERSION_ERROR = (
    "cannot convert public.t.d (date) at lsn 0/16B3748: '0000-00-00' is not a date; "
    "fix the row or drop the column with a drop_columns transform"
)


class FakeSource:
    """Behaviour by pipeline name: ``ok`` streams a change every 20 ms; ``bad`` fails at once;
    ``stuck`` ignores stop(); ``snap`` snapshots 3 rows then streams; ``fatal`` delivers one
    batch, then fails as a source does on a value it cannot convert."""

    source_schema: dict[str, Any] = {}

    def __init__(self, kind: str, reporter: Reporter) -> None:
        self.kind = kind
        self.reporter = reporter
        self._stopping = threading.Event()
        self.streaming = False

    def check(self) -> list[str]:
        return []

    def batches(self, start: Any) -> Any:
        if self.kind == "bad":
            raise SourceError("cannot connect to db at 127.0.0.1:1 password=hunter2-secret")
        if self.kind == "stuck":
            time.sleep(3600)
        if self.kind == "fatal":
            yield ChangeBatch([RowChange(TABLE, "c", None, (1,), {}, 0, "1:0")], {"n": 1})
            raise SourceError(CONVERSION_ERROR, retryable=False)
        n = int(start["n"]) if start else 0
        if self.kind == "snap" and start is None:
            rows = [RowChange(TABLE, "r", None, (i,), {}, 0, f"s{i}") for i in range(3)]
            self.reporter.snapshot_progress("public.t", 3, 3)
            yield ChangeBatch(rows[:2], {"n": 0, "snapshot": {"done": []}}, snapshot=True)
            yield ChangeBatch(rows[2:], {"n": 0})
        self.streaming = True
        while not self._stopping.is_set():
            n += 1
            now_ms = int(time.time() * 1000)
            yield ChangeBatch(
                [
                    TxBoundary("BEGIN", str(n), now_ms - 50, f"{n}:b"),
                    RowChange(TABLE, "c", None, (n,), {}, now_ms - 50, f"{n}:0"),
                    RowChange(TABLE, "u", (n,), (n,), {}, now_ms - 50, f"{n}:1"),
                    TxBoundary("END", str(n), now_ms - 50, f"{n}:e", 2, {"public.t": 2}),
                ],
                {"n": n},
            )
            self._stopping.wait(0.02)

    def acknowledge(self, upto: Any) -> None:
        pass

    def stop(self) -> None:
        if self.kind != "stuck":
            self._stopping.set()

    def close(self) -> None:
        pass


class FakeEncoder:
    fallbacks = 0

    def __init__(self, *args: Any) -> None:
        pass

    def encode(self, batch: ChangeBatch) -> ChangeBatch:
        return batch


class Store(dict[str, Any]):
    """Batches written, by pipeline name; ``parts`` opens the fakes that write them here."""

    @property
    def parts(self) -> Parts:
        return Parts(
            open_source=lambda cfg, ctx: FakeSource(ctx.name.split("-")[0], ctx.reporter),
            open_sink=lambda cfg, ctx: FakeSink(self, ctx.name),
            encoder=lambda source, sink, ctx: FakeEncoder(),
        )


@pytest.fixture
def store() -> Store:
    return Store()


def config(tmp_path: Path, *names: str, extra: str = "") -> Config:
    pipelines = "".join(
        f"""
  - name: {n}
    source: {{type: postgres, dsn: "host=h user=u password=hunter2-secret", tables: [public.t]}}
    sink: {{type: log, path: {tmp_path / n}}}
"""
        for n in names
    )
    cfg = parse(f"pipelines:{pipelines}\nstatus_file: {tmp_path / 'status.json'}\n{extra}")
    logs.add_secrets(logs.secrets_in(cfg))
    return cfg


def start(daemon: Daemon) -> tuple[threading.Thread, list[int]]:
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(daemon.run(install_signals=False)))
    t.start()
    return t, rc


def value(name: str, **labels: str) -> float:
    v = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_failing_pipeline_restarts_with_backoff_while_the_other_delivers(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    restarts0 = value("cdc_pipeline_restarts_total", pipeline="bad-1")
    d = Daemon(config(tmp_path, "ok-1", "bad-1"), parts=store.parts, max_backoff=2)
    t, rc = start(d)
    wait_until(lambda: status.BOARD.get("bad-1").restarts >= 2, 10, "two restarts")
    delivered = len(store["ok-1"])
    wait_until(lambda: len(store["ok-1"]) > delivered + 5, 10, "ok-1 still delivering")
    assert status.BOARD.get("bad-1").state in ("restarting", "starting")
    assert "hunter2" in (status.BOARD.get("bad-1").last_error or "")  # redacted on publication
    published = (tmp_path / "status.json").read_text()
    assert "hunter2" not in published
    d.stop()
    t.join(10)
    assert rc == [0]
    failures = [r for r in caplog.records if "pipeline bad-1 failed" in r.getMessage()]
    # once per attempt, with the reason
    assert len(failures) == status.BOARD.get("bad-1").restarts + 1
    assert all("SourceError: cannot connect" in r.getMessage() for r in failures)
    assert value("cdc_pipeline_restarts_total", pipeline="bad-1") - restarts0 >= 2
    assert value("cdc_pipeline_errors_total", pipeline="bad-1", error="SourceError") >= 3
    final = json.loads((tmp_path / "status.json").read_text())
    assert final["running"] is False
    assert {p["name"]: p["state"] for p in final["pipelines"]} == {
        "ok-1": "stopped",
        "bad-1": "stopped",
    }


def test_stop_during_backoff_does_not_claim_a_restart(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    d = Daemon(config(tmp_path, "bad-2"), parts=store.parts, max_backoff=30)
    t, rc = start(d)
    wait_until(lambda: status.BOARD.get("bad-2").restarts >= 1, 10, "a restart")
    # now in a backoff of 2 s: stop
    wait_until(lambda: status.BOARD.get("bad-2").state == "restarting", 10, "backoff")
    n = len(caplog.records)
    d.stop()
    t.join(10)
    assert rc == [0]
    after = [r.getMessage() for r in caplog.records[n:]]
    assert not any("restarting in" in m for m in after), after
    assert any("not restarted: the daemon is stopping" in m for m in after), after


def test_a_pipeline_that_does_not_stop_makes_the_daemon_exit_3_naming_it(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    d = Daemon(
        config(tmp_path, "ok-3", "stuck-3", extra="shutdown_timeout_s: 0.5"), parts=store.parts
    )
    t, rc = start(d)
    wait_until(lambda: len(store.get("ok-3", [])) > 2, 10, "ok-3 delivering")
    d.stop()
    t.join(10)
    assert rc == [EXIT_STUCK]
    stuck = [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage()]
    assert stuck and "stuck-3" in stuck[0] and "ok-3" not in stuck[0]


def test_metrics_count_durable_events_per_table_and_op_and_lag(
    tmp_path: Path, store: Store
) -> None:
    d = Daemon(config(tmp_path, "snap-4"), parts=store.parts)
    t, rc = start(d)
    wait_until(lambda: len(store.get("snap-4", [])) > 10, 10, "batches")
    wait_until(lambda: status.BOARD.get("snap-4").state == "streaming", 10, "streaming")
    d.stop()
    t.join(10)
    assert rc == [0]
    batches = store["snap-4"]
    for op in ("r", "c", "u"):
        expected = sum(1 for b in batches for e in b.events if getattr(e, "op", None) == op)
        got = value("cdc_events_total", pipeline="snap-4", table="public.t", op=op)
        assert got == expected, op
    assert value("cdc_snapshot_rows_done", pipeline="snap-4", table="public.t") == 3
    assert value("cdc_snapshot_rows_total", pipeline="snap-4", table="public.t") == 3
    assert value("cdc_lag_ms", pipeline="snap-4") >= 50  # commit 50 ms before it was made
    last = json.dumps(batches[-1].position, sort_keys=True, separators=(",", ":"))
    assert value("cdc_last_durable_position_info", pipeline="snap-4", position=last) == 1
    # only the newest position is exposed
    positions = [
        s
        for m in metrics.REGISTRY.collect()
        for s in m.samples
        if s.name == "cdc_last_durable_position_info" and s.labels["pipeline"] == "snap-4"
    ]
    assert len(positions) == 1
    assert status.BOARD.get("snap-4").events == sum(
        1 for b in batches for e in b.events if isinstance(e, RowChange)
    )


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_http_endpoint_serves_metrics_health_and_readiness(tmp_path: Path, store: Store) -> None:
    cfg = config(tmp_path, "ok-5", "bad-5", extra="http: {enabled: true, port: 0}")
    d = Daemon(cfg, parts=store.parts, max_backoff=1)
    t, rc = start(d)
    try:
        wait_until(lambda: d.http is not None, 5, "endpoint")
        base = f"http://127.0.0.1:{d.http.port}"
        wait_until(lambda: status.BOARD.get("ok-5").state == "streaming", 10, "ok-5 streaming")
        assert get(base + "/health")[0] == 200
        code, body = get(base + "/ready")
        assert code == 503
        assert json.loads(body)["not_ready"] == {"bad-5": status.BOARD.get("bad-5").state}
        code, text = get(base + "/metrics")
        assert code == 200
        assert 'cdc_events_total{op="c",pipeline="ok-5",table="public.t"}' in text
        assert 'cdc_pipeline_state{pipeline="ok-5",state="streaming"} 1.0' in text
        assert get(base + "/nope")[0] == 404
    finally:
        d.stop()
        t.join(10)
    assert rc == [0]


def test_ready_when_every_pipeline_streams(tmp_path: Path, store: Store) -> None:
    d = Daemon(config(tmp_path, "ok-6", extra="http: {enabled: true, port: 0}"), parts=store.parts)
    t, rc = start(d)
    try:
        wait_until(lambda: d.http is not None, 5, "endpoint")
        url = f"http://127.0.0.1:{d.http.port}/ready"
        wait_until(lambda: get(url)[0] == 200, 10, "ready")
        assert json.loads(get(url)[1]) == {"ready": True, "not_ready": {}}
    finally:
        d.stop()
        t.join(10)
    assert rc == [0]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_cdc_status_while_running_and_after(tmp_path: Path, store: Store) -> None:
    cfg_file = tmp_path / "cdc.yaml"
    cfg_file.write_text(
        f"""pipelines:
  - name: ok-7
    source: {{type: postgres, dsn: "host=h password=hunter2-secret", tables: [public.t]}}
    sink: {{type: log, path: {tmp_path / "log"}}}
"""
    )
    missing = run_cli("status", "-c", str(cfg_file))
    assert missing.returncode == 1
    assert "no daemon has published a status" in missing.stderr
    from cdc.config import load

    cfg = load(cfg_file)
    assert cfg.status_file == tmp_path / "cdc.status.json"
    logs.add_secrets(logs.secrets_in(cfg))
    d = Daemon(cfg, parts=store.parts)
    t, rc = start(d)
    try:
        wait_until(lambda: len(store.get("ok-7", [])) > 3, 10, "batches")

        def shows_streaming() -> subprocess.CompletedProcess[str] | None:
            r = run_cli("status", "-c", str(cfg_file))
            return r if "ok-7: streaming" in r.stdout else None

        r = wait_until(shows_streaming, 10, "status shows streaming")
        assert r.returncode == 0, r.stderr
        assert "running" in r.stdout
        assert '"n":' in r.stdout.replace(" ", "")  # the position
        assert "lag: " in r.stdout and " ms" in r.stdout
    finally:
        d.stop()
        t.join(10)
    assert rc == [0]
    after = run_cli("status", "-c", str(cfg_file))
    assert after.returncode == 1
    assert "not running" in after.stdout
    assert "ok-7: stopped" in after.stdout
    js = run_cli("status", "-c", str(cfg_file), "--json")
    assert json.loads(js.stdout)["pipelines"][0]["name"] == "ok-7"
    assert "hunter2" not in (tmp_path / "cdc.status.json").read_text()


def test_status_says_when_it_is_stale(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"pipelines:\n  - name: x\n    source: {{type: postgres, dsn: h, tables: [a.b]}}\n"
        f"    sink: {{type: log, path: {tmp_path}}}\n"
    )
    doc = {
        "pid": 999999999,
        "running": True,
        "written_at": time.time() - 600,
        "interval_s": 1,
        "pipelines": [{"name": "x", "state": "streaming", "since": time.time() - 700}],
    }
    (tmp_path / "c.status.json").write_text(json.dumps(doc))
    r = run_cli("status", "-c", str(cfg_file))
    assert r.returncode == 1
    assert "stale" in r.stdout and "that process is gone" in r.stdout
    assert "x: streaming" in r.stdout


# --- logs and secrets -------------------------------------------------------------------------


def test_secrets_are_found_in_dsns_urls_and_password_fields() -> None:
    cfg = parse(
        """
pipelines:
  - name: a
    source: {type: postgres, dsn: "host=h user=u password='p w\\\\'x' dbname=d", tables: [s.t]}
    sink: {type: log, path: /tmp/a}
  - name: b
    source: {type: postgres, dsn: "postgresql://u:url%2Fpass@h/d", tables: [s.t]}
    sink: {type: log, path: /tmp/b}
  - name: c
    source: {type: mysql, host: h, user: u, password: mysqlpass, tables: [d.t], server_id: 7}
    sink: {type: log, path: /tmp/c}
"""
    )
    found = set(logs.secrets_in(cfg))
    assert {"p w'x", "url%2Fpass", "url/pass", "mysqlpass"} <= found
    assert "u" not in found and "h" not in found


def test_log_lines_mask_secrets_in_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    logs.add_secrets(["s3cr3t-pw"])
    record = logging.LogRecord("cdc.x", logging.ERROR, __file__, 1, "failed: %s", ("x",), None)
    record.msg = "connection to host=h password=s3cr3t-pw failed: %s"
    try:
        raise SourceError("dsn host=h password=s3cr3t-pw refused")
    except SourceError:
        record.exc_info = sys.exc_info()
    text = logs.TextFormatter().format(record)
    assert "s3cr3t-pw" not in text and "password=***" in text
    record.exc_text = None
    obj = json.loads(logs.JsonFormatter().format(record))
    assert set(obj) == {"ts", "level", "logger", "message", "exc"}
    assert obj["level"] == "error" and obj["logger"] == "cdc.x"
    assert "s3cr3t-pw" not in json.dumps(obj)
    assert "SourceError" in obj["exc"]


def test_json_log_names_the_pipeline_of_the_thread() -> None:
    out: list[str] = []

    def work() -> None:
        status.set_current_pipeline("orders")
        record = logging.LogRecord("cdc.x", logging.INFO, __file__, 1, "hello", (), None)
        out.append(logs.JsonFormatter().format(record))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert json.loads(out[0])["pipeline"] == "orders"


def test_text_log_lines_name_the_pipeline_in_brackets() -> None:
    out: list[str] = []

    def work() -> None:
        status.set_current_pipeline("orders")
        record = logging.LogRecord("cdc.x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
        out.append(logs.TextFormatter().format(record))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert out[0].endswith(" INFO cdc.x [orders]: hello you")
    record = logging.LogRecord("cdc.y", logging.WARNING, __file__, 1, "plain", (), None)
    assert logs.TextFormatter().format(record).endswith(" WARNING cdc.y: plain")


def test_top_level_settings_are_validated_with_their_path() -> None:
    from cdc.errors import ConfigError

    base = """
pipelines:
  - name: a
    source: {type: postgres, dsn: h, tables: [s.t]}
    sink: {type: log, path: /tmp/a}
"""
    with pytest.raises(ConfigError) as e:
        parse(base + "http: {enabled: true, port: 70000, bnd: x}\nshutdown_timeout_s: 0\n")
    problems = "\n".join(e.value.problems)
    assert "http.port: bad value: 70000" in problems
    assert "http.bnd: unknown field" in problems
    assert "shutdown_timeout_s: bad value: 0" in problems
    cfg = parse(base)
    assert cfg.http.enabled is False and cfg.http.bind == "127.0.0.1"


def test_a_port_in_use_is_a_configuration_error(tmp_path: Path, store: Store) -> None:
    import socket

    from cdc.errors import ConfigError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        d = Daemon(
            config(tmp_path, "ok-8", extra=f"http: {{enabled: true, port: {port}}}"),
            parts=store.parts,
        )
        with pytest.raises(ConfigError, match=f"http: cannot listen on 127.0.0.1:{port}"):
            d.run(install_signals=False)


def test_per_batch_counts_equal_a_plain_count() -> None:
    import random
    from collections import Counter

    from cdc.pipeline import _count_runs

    other = TableSchema("p.public.u", "public", "u", TABLE.columns, (0,))
    rng = random.Random(7)
    events: list[Any] = []
    for i in range(2000):
        if rng.random() < 0.1:
            events.append(TxBoundary("BEGIN", str(i), 0, str(i)))
        else:
            t = TABLE if rng.random() < 0.5 else other
            events.append(RowChange(t, rng.choice("cudrt"), None, (i,), {}, 0, str(i)))  # type: ignore[arg-type]
    expected = Counter((e.table, e.op) for e in events if isinstance(e, RowChange))
    assert _count_runs(events) == dict(expected)
    assert _count_runs([]) == {}


def test_idle_connections_neither_pile_up_threads_nor_stay_open() -> None:
    """300 clients that connect and send nothing: the endpoint serves at most its cap at once,
    refuses the rest at once, closes the idle ones after its timeout, and still answers."""
    import socket

    from cdc.http import Endpoint

    cap = 8
    before = threading.active_count()
    ep = Endpoint("127.0.0.1", 0, max_connections=cap, idle_timeout_s=1.0)
    socks: list[socket.socket] = []
    try:
        for _ in range(300):
            socks.append(socket.create_connection(("127.0.0.1", ep.port), timeout=10))
            # the server thread and at most `cap` handlers, plus as many that have given back
            # their slot and are returning: bounded by the cap, whatever the number of clients
            assert threading.active_count() <= before + 1 + 2 * cap
        # every connection ends: one past the cap at once (with a 503), the others once idle for
        # the timeout (which connections get refused depends on how fast they came)
        answers: list[bytes] = []
        for s in socks:
            s.settimeout(30)  # a deadline, not a claim: the timeout is 1 s
            chunks = []
            while chunk := s.recv(4096):
                chunks.append(chunk)
            answers.append(b"".join(chunks))
        assert all(a == b"" or a.startswith(b"HTTP/1.0 503") for a in answers)
        wait_until(lambda: threading.active_count() <= before + 1, 10, "handler threads to end")
        assert get(f"http://127.0.0.1:{ep.port}/health")[0] == 200
    finally:
        for s in socks:
            s.close()
        ep.close()


def test_a_fatal_source_error_stops_the_pipeline_visibly_without_restarts(
    tmp_path: Path, store: Store
) -> None:
    """What a source raises for a value it cannot convert (SourceError, retryable=False, with a
    located message): the pipeline stops for good, `cdc status` and the metrics show it, and the
    other pipelines go on."""
    errors0 = value("cdc_pipeline_errors_total", pipeline="fatal-9", error="SourceError")
    cfg_file = tmp_path / "cdc.yaml"
    cfg_file.write_text(
        "pipelines:\n"
        + "".join(
            f"  - name: {n}\n"
            f"    source: {{type: postgres, dsn: h, tables: [public.t]}}\n"
            f"    sink: {{type: log, path: {tmp_path / n}}}\n"
            for n in ("ok-9", "fatal-9")
        )
    )
    from cdc.config import load

    d = Daemon(load(cfg_file), parts=store.parts, max_backoff=1)
    t, rc = start(d)
    try:
        wait_until(lambda: status.BOARD.get("fatal-9").state == "failed", 10, "fatal-9 failed")
        delivered = len(store["ok-9"])
        wait_until(lambda: len(store["ok-9"]) > delivered + 3, 10, "ok-9 still delivering")

        def shows_it() -> subprocess.CompletedProcess[str] | None:
            r = run_cli("status", "-c", str(cfg_file))
            return r if "fatal-9: failed" in r.stdout else None

        out = wait_until(shows_it, 10, "cdc status shows the failure").stdout
        assert "last error" in out and CONVERSION_ERROR in out
        assert status.BOARD.get("fatal-9").restarts == 0
        assert value("cdc_pipeline_state", pipeline="fatal-9", state="failed") == 1
        assert (
            value("cdc_pipeline_errors_total", pipeline="fatal-9", error="SourceError") - errors0
            == 1
        )
    finally:
        d.stop()
        t.join(10)
    assert rc == [1]  # a pipeline stopped on a fatal error
    assert status.BOARD.get("fatal-9").restarts == 0
    assert len(store.get("fatal-9", [])) == 1  # what came before the bad value was delivered


def test_cdc_run_tunes_the_garbage_collector_for_a_long_life() -> None:
    """``tune_gc`` (called by ``cdc run``): the start-up's objects frozen, the youngest
    generation collected far less often. In a child process: it changes process-wide state."""
    import subprocess
    import sys

    code = (
        "import gc\n"
        "from cdc.daemon import GC_YOUNG_THRESHOLD, tune_gc\n"
        "before = gc.get_threshold()\n"
        "tune_gc()\n"
        "after = gc.get_threshold()\n"
        "assert after == (GC_YOUNG_THRESHOLD, *before[1:]), (before, after)\n"
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
