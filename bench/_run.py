"""One pipeline's runs: the latency phase, W1 and W2 streamed, W3 snapshotted.

Pipelines into a database target (``*-postgres``) are timed by polling the target (bench/_target.py)
instead of per-record stamps, have no latency phase, and add the target's own COPY of the same
rows as a ceiling."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _workloads as wl
from bench._daemon import Daemon
from bench._observe import KafkaObserver, LogObserver, Observer
from bench._stats import ProcStats, percentile, rate
from bench._target import SCHEMA, TargetObserver, logged_at

PIPELINES = (
    "postgres-log",
    "mysql-log",
    "postgres-kafka",
    "mysql-kafka",
    "postgres-postgres",
    "mysql-postgres",
)
TARGET_COPY = "COPY into the target"
WORKLOADS = ("W1", "W2", "W3", "W4")
ADDED = "orders_w3"  # W4's table: W3's rows, added to the pipeline's tables while it runs
W1_BASE = 0
W2_BASE = 20_000_000


@dataclass
class Options:
    scale: float
    runs: int
    pipelines: list[str]
    workloads: list[str]
    ceilings: bool
    latency_rate: float
    latency_seconds: float
    latency_tx_rows: int
    profile: bool
    workdir: Path
    peer: str | None = None
    keep: bool = False
    say: Any = print


@dataclass
class Result:
    pipeline: str
    workload: str
    run: int
    rows: int
    rows_per_s: float | None
    span_s: float
    cpu_s: float | None
    peak_rss_mb: float | None
    ceilings: dict[str, float] = field(default_factory=dict)
    load_s: float = 0.0
    profiled: bool = False
    # the rows the daemon's CPU went to when that is not ``rows`` (W4: backfill and stream)
    cpu_rows: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Latency:
    pipeline: str
    run: int
    offered_rows_per_s: float
    tx_rows: int
    achieved_rows_per_s: float
    rows: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def _wait_count(
    obs: Observer, topic: str, want: int, daemon: Daemon | None, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while obs.count(topic) < want:
        if daemon is not None:
            daemon.check()
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{what}: {obs.count(topic)} of {want} records on {topic} after {timeout:.0f}s"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _from_start(rows: int, stamps: list[tuple[int, int]], d: Daemon, line: str) -> dict[str, float]:
    """The rate timed as a database target's apply is (bench/_target.py): from the daemon's log
    line matching ``line`` (streaming, or the snapshot, started) to the last row durable."""
    span = stamps[-1][0] / 1000 - logged_at(d.output(), line)
    return {"rows_per_s_from_streaming": rows / max(span, 1e-3)}


class PipelineRun:
    """Everything measured for one pipeline in one run; the servers are shared."""

    def __init__(self, opts: Options, servers: Any, pipeline: str, run: int) -> None:
        from bench._sources import MySQL, Postgres

        self.opts = opts
        self.servers = servers
        self.pipeline = pipeline
        self.run = run
        source_kind, self.sink_kind = pipeline.split("-")
        self.src: Any = Postgres(servers.pg) if source_kind == "postgres" else MySQL(servers.mysql)
        self.sizes = wl.Sizes.at(opts.scale)
        short = f"{'pg' if source_kind == 'postgres' else 'my'}_{self.sink_kind}_r{run}"
        self.short = short
        self.dir = opts.workdir / short
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.server_id = 1000 + run * 10 + PIPELINES.index(pipeline)
        self.results: list[Result] = []
        self.latency: Latency | None = None
        self.profiles: list[Path] = []
        self.target_db = ""  # the database a *-postgres pipeline applies into

    @property
    def applies(self) -> bool:
        """Into a database target: no records, rows visible in tables."""
        return self.sink_kind == "postgres"

    def _target_setup(self, db: str) -> None:
        if self.applies:
            self.target_db = db
            self.servers.pg.create_database(db)

    def _target_cleanup(self) -> None:
        if self.target_db:
            self.servers.pg.psql(f'DROP DATABASE IF EXISTS "{self.target_db}" WITH (FORCE)')
            self.target_db = ""

    # --- config and sink ----------------------------------------------------------------------

    def _config(self, name: str, snapshot: str, added: tuple[str, ...] = ()) -> Path:
        sink: dict[str, Any]
        if self.sink_kind == "log":
            sink = {"type": "log", "path": f"./{name}-log"}
        elif self.applies:
            sink = {
                "type": "postgres",
                "dsn": self.servers.pg.dsn(self.target_db),
                "schema": SCHEMA,
            }
        else:
            sink = {
                "type": "kafka",
                "bootstrap_servers": self.servers.kafka.bootstrap_servers,
                "schema_registry": {"url": self.servers.registry.url},
                "path": f"./{name}-state",
                # The broker stamps each record when it appends it: the time it became durable.
                "topics": {"config": {"message.timestamp.type": "LogAppendTime"}},
            }
        source = self.src.source_config(snapshot, self.server_id)
        source["tables"] += [self.src.qualified(t) for t in added]
        cfg = {
            "pipelines": [
                {
                    "name": name,
                    "source": source,
                    "sink": sink,
                }
            ]
        }
        path = self.dir / f"{name}.yaml"
        path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
        return path

    def _observer(self, name: str) -> Any:
        if self.applies:
            return TargetObserver(self.servers.pg.dsn(self.target_db), name)
        if self.sink_kind == "log":
            return LogObserver(self.dir / f"{name}-log")
        return KafkaObserver(self.servers.kafka.bootstrap_servers)

    def _daemon(self, config: Path, profile: Path | None = None) -> Daemon:
        return Daemon(config, self.dir / "daemon.log", profile)

    # --- phases -------------------------------------------------------------------------------

    def execute(self) -> None:
        say = self.opts.say
        try:
            streaming = [w for w in self.opts.workloads if w in ("W1", "W2")]
            if streaming or self.opts.latency_seconds > 0:
                say(f"[{self.pipeline} run {self.run}] streaming")
                self._streaming(streaming)
            if "W3" in self.opts.workloads:
                say(f"[{self.pipeline} run {self.run}] W3 snapshot")
                self._snapshot()
            if "W4" in self.opts.workloads:
                if self.src.kind == "postgres" and not self.applies:
                    say(f"[{self.pipeline} run {self.run}] W4 backfill while W1 streams")
                    self._incremental()
                else:  # MySQL's incremental snapshots are another branch; targets have no stamps
                    say(f"[{self.pipeline} run {self.run}] W4: Postgres source into log/kafka only")
        finally:
            if not self.opts.keep:
                shutil.rmtree(self.dir, ignore_errors=True)

    def _streaming(self, workloads: list[str]) -> None:
        name = f"bench_{self.short}"
        self.src.setup(f"b_{self.short}")
        self._target_setup(f"t_{self.short}")
        try:
            config = self._config(name, "never")
            obs = self._observer(name)
            orders = self.src.topic(name, "orders")
            marker = self.src.topic(name, "bench_marker")
            try:
                d = self._daemon(config)
                try:
                    d.wait_output(self.src.streaming_text, 120)
                    # A first change makes the sink hold a position, so later starts resume
                    # from it (MySQL with snapshot=never would otherwise start at the end).
                    self.src.marker()
                    _wait_count(obs, marker, 1, d, 60, "the marker row")
                    if self.opts.latency_seconds > 0 and not self.applies:
                        self._latency(obs, orders, d)
                finally:
                    d.stop()
                for w in workloads:
                    self._catch_up(w, config, obs, orders)
            finally:
                obs.close()
        finally:
            self.src.cleanup()
            self._target_cleanup()

    def _latency(self, obs: Observer, orders: str, d: Daemon) -> None:
        n = max(1, round(self.opts.latency_rate * self.opts.latency_seconds))
        before = obs.count(orders)
        commits = self.src.paced(self.opts.latency_rate, n, self.opts.latency_tx_rows)
        _wait_count(obs, orders, before + n, d, 60 + n / 100, "the latency rows")
        durable: list[int] = []
        for ts, rows in obs.stamps(orders, before, before + n):
            durable.extend([ts] * rows)
        # One writer, rows inserted in id order: the k-th record is the k-th row committed.
        lat = sorted(max(0.0, t - c * 1000) for t, c in zip(durable, commits, strict=True))
        span = commits[-1] - commits[0]
        self.latency = Latency(
            self.pipeline,
            self.run,
            self.opts.latency_rate,
            self.opts.latency_tx_rows,
            (n - 1) / span if span > 0 else float(n),
            n,
            percentile(lat, 50),
            percentile(lat, 99),
            lat[-1],
        )

    def _catch_up(self, workload: str, config: Path, obs: Any, orders: str) -> None:
        """Load the workload with the daemon stopped, then time the daemon catching up."""
        sizes = self.sizes
        if workload == "W1":
            rows, base = sizes.w1_changes, W1_BASE
            records = rows + (sizes.w1_deletes_rows if self.sink_kind == "kafka" else 0)
        else:
            rows = records = sizes.w2_txns
            base = W2_BASE
        if self.applies:
            self._apply(workload, config, obs, rows, base)
            return
        before = obs.count(orders)
        peer = (
            self.opts.peer == "debezium" and self.pipeline == "postgres-kafka" and workload == "W1"
        )
        if peer:
            self.src.server.psql(
                "SELECT pg_create_logical_replication_slot('bench_dbz', 'pgoutput')", self.src.db
            )
        start = self.src.mark() if self.opts.ceilings else None
        t0 = time.perf_counter()
        self.src.load(workload, sizes, base)
        load_s = time.perf_counter() - t0
        ceilings: dict[str, float] = {}
        if self.opts.ceilings:
            ceilings = self.src.ceilings(start, self.src.end(), rows, self.server_id + 500)
        profile = None
        if self.opts.profile and self.run == 1 and workload == "W1":
            profile = self.dir.parent / f"profile-{self.pipeline}-W1.txt"
            self.profiles.append(profile)
        d = self._daemon(config, profile)
        try:
            _wait_count(obs, orders, before + records, d, 300 + rows / 300, f"{workload} rows")
            stats = d.stop()
        except BaseException:
            d.kill()
            raise
        stamps = obs.stamps(orders, before, before + records)
        r, span = rate(stamps)
        # As a database target's apply is timed (bench/_target.py): from the streaming log line
        # to the last row durable, so that the two compare like for like.
        notes = _from_start(rows, stamps, d, re.escape(self.src.streaming_text))
        self._record(workload, rows, r, span, stats, ceilings, load_s, profile is not None, notes)
        if peer:
            self._debezium(obs, rows, records, ceilings)

    def _apply(
        self, workload: str, config: Path, obs: TargetObserver, rows: int, base: int
    ) -> None:
        """Load the workload with the daemon stopped, then time its apply into the target."""
        markers = obs.progress()[0] + 1
        start = self.src.mark() if self.opts.ceilings else None
        t0 = time.perf_counter()
        self.src.load(workload, self.sizes, base)
        load_s = time.perf_counter() - t0
        ceilings: dict[str, float] = {}
        if self.opts.ceilings:  # before the marker: the MySQL ceilings read to the binlog's end
            ceilings = self.src.ceilings(start, self.src.end(), rows, self.server_id + 500)
        self.src.marker()  # after the workload: applied last
        want = self.src.state()
        d = self._daemon(config)
        try:
            done = obs.wait_applied(
                obs.progress, lambda p: p[0] >= markers, d, 300 + rows / 300, f"{workload} apply"
            )
            span = done - logged_at(d.output(), re.escape(self.src.streaming_text))
            stats = d.stop()
        except BaseException:
            d.kill()
            raise
        if obs.state() != want:
            raise RuntimeError(f"{workload}: the target holds {obs.state()}, the source {want}")
        if self.opts.ceilings:
            ceilings.update(self._copy_ceiling(obs, base, base + rows))
        self._record(workload, rows, rows / span, span, stats, ceilings, load_s)

    def _record(
        self,
        workload: str,
        rows: int,
        r: float | None,
        span: float,
        stats: ProcStats | None,
        ceilings: dict[str, float],
        load_s: float,
        profiled: bool = False,
        notes: dict[str, Any] | None = None,
    ) -> None:
        cpu, rss = (stats.cpu_s, stats.peak_rss_mb) if stats else (None, None)
        self.results.append(
            Result(self.pipeline, workload, self.run, rows, r, span, cpu, rss, ceilings, load_s,
                   profiled, notes=notes or {})
        )  # fmt: skip

    def _copy_ceiling(self, obs: TargetObserver, lo: int, hi: int) -> dict[str, float]:
        copied, took = obs.copy_ceiling(self.servers.pg, self.target_db, lo, hi)
        return {TARGET_COPY: copied / took} if copied else {}

    def _debezium(self, obs: Observer, rows: int, records: int, ceilings: dict[str, float]) -> None:
        from bench import _debezium

        self.opts.say(f"[{self.pipeline} run {self.run}] W1 debezium server")
        prefix = f"dbz_{self.short}"
        topic = f"{prefix}.public.orders"
        _debezium.create_topic(self.servers.kafka.bootstrap_servers, topic)
        dbz = _debezium.DebeziumServer(
            self.dir / "debezium", self.servers.pg, self.src.db, "bench_dbz", prefix, self.servers
        )
        try:
            _debezium.wait_count(obs, topic, records, dbz, 600 + rows / 100)
        finally:
            stats = dbz.stop()
        r, span = rate(obs.stamps(topic, 0, records))
        self.results.append(
            Result(
                "debezium:postgres-kafka",
                "W1",
                self.run,
                rows,
                r,
                span,
                stats.cpu_s if stats else None,
                stats.peak_rss_mb if stats else None,
                ceilings,
            )
        )

    def _snapshot(self) -> None:
        name = f"bench_{self.short}_snap"
        self.src.setup(f"b_{self.short}_snap")
        self._target_setup(f"t_{self.short}_snap")
        try:
            rows = self.sizes.w3_rows
            t0 = time.perf_counter()
            self.src.load("W3", self.sizes, 0)
            load_s = time.perf_counter() - t0
            ceilings = self.src.snapshot_ceiling(rows) if self.opts.ceilings else {}
            config = self._config(name, "initial_only")
            obs = self._observer(name)
            orders = self.src.topic(name, "orders")
            r: float | None
            notes: dict[str, Any] = {}
            try:
                if self.applies:
                    r, span, stats = self._snapshot_apply(config, obs, rows, ceilings)
                else:
                    r, span, stats, notes = self._snapshot_log(config, obs, orders, rows)
            finally:
                obs.close()
            self._record("W3", rows, r, span, stats, ceilings, load_s, notes=notes)
        finally:
            self.src.cleanup()
            self._target_cleanup()

    def _snapshot_apply(
        self, config: Path, obs: TargetObserver, rows: int, ceilings: dict[str, float]
    ) -> tuple[float, float, Any]:
        want = self.src.state()
        d = self._daemon(config)
        try:
            done = obs.wait_applied(
                obs.state, lambda s: s == want, d, 300 + rows / 300, "W3 apply", exits=True
            )
            span = done - logged_at(d.output(), "snapshot .*started")
            stats = d.stop()  # initial_only may exit by itself once done, or may not yet
        except BaseException:
            d.kill()
            raise
        if self.opts.ceilings:
            ceilings.update(self._copy_ceiling(obs, 0, rows))
        return rows / span, span, stats

    def _snapshot_log(
        self, config: Path, obs: Observer, orders: str, rows: int
    ) -> tuple[float | None, float, Any, dict[str, Any]]:
        d = self._daemon(config)
        try:
            deadline = time.monotonic() + 300 + rows / 300
            while obs.count(orders) < rows:
                if not d.alive():  # initial_only: exits when done; check once more
                    if obs.count(orders) >= rows:
                        break
                    d.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"W3: {obs.count(orders)} of {rows} rows")
                time.sleep(0.1)
            stats = d.wait(60, d.stats())
        except BaseException:
            d.kill()
            raise
        stamps = obs.stamps(orders, 0, rows)
        r, span = rate(stamps)
        notes = _from_start(rows, stamps, d, "snapshot .*started")
        return r, span, stats, notes

    def _incremental(self) -> None:
        """W4: W3's rows, already in a table the pipeline did not capture at its first start,
        backfilled after the table is added to its config (restart) while W1 streams.

        Results: "W4" the backfill's rows/s, beside W3's initial snapshot and the stream's rate;
        "W4s" the stream's rows/s (W1) while the backfill runs, beside W1 alone."""
        name = f"bench_{self.short}_incr"
        self.src.setup(f"b_{self.short}_incr")
        try:
            rows = self.sizes.w3_rows
            self.src.load_added(ADDED, self.sizes)
            obs = self._observer(name)
            orders = self.src.topic(name, "orders")
            added = self.src.topic(name, ADDED)
            try:
                d = self._daemon(self._config(name, "initial"))
                try:
                    d.wait_output(self.src.streaming_text, 120)
                    self.src.marker()
                    _wait_count(obs, self.src.topic(name, "bench_marker"), 1, d, 60, "the marker")
                finally:
                    d.stop()
                # The table joins the pipeline: the next start queues its backfill.
                config = self._config(name, "initial", (ADDED,))
                stream = self.sizes.w1_changes + (
                    self.sizes.w1_deletes_rows if self.sink_kind == "kafka" else 0
                )
                before = obs.count(orders)
                failed: list[BaseException] = []

                def load() -> None:
                    try:
                        self.src.load("W1", self.sizes, W1_BASE)
                    except BaseException as e:
                        failed.append(e)

                loader = threading.Thread(target=load, daemon=True)
                d = self._daemon(config)
                try:
                    # W1 starts once the backfill has: the stream runs beside it, not before it
                    _wait_count(obs, added, 1, d, 120, "the backfill's first rows")
                    loader.start()
                    _wait_count(obs, added, rows, d, 300 + rows / 300, "W4 backfilled rows")
                    loader.join(300 + stream / 300)
                    if failed:
                        raise failed[0]
                    _wait_count(obs, orders, before + stream, d, 300 + stream / 300, "W4 stream")
                    stats = d.stop()
                except BaseException:
                    d.kill()
                    raise
                bf_stamps = obs.stamps(added, 0, rows)
                st_stamps = obs.stamps(orders, before, before + stream)
            finally:
                obs.close()
        finally:
            self.src.cleanup()
        bf_rate, bf_span = rate(bf_stamps)
        st_rate, st_span = rate(st_stamps)
        # the stream's rows durable within the backfill's window: how much really overlapped
        lo, hi = bf_stamps[0][0], bf_stamps[-1][0]
        during = sum(n for ts, n in st_stamps if lo <= ts <= hi)
        cpu = stats.cpu_s if stats else None
        rss = stats.peak_rss_mb if stats else None
        beside: dict[str, float] = {}
        for r in self.results:
            if r.workload in ("W3", "W1") and r.rows_per_s:
                beside[f"{r.workload} alone (same run)"] = r.rows_per_s
        w3 = {k: v for k, v in beside.items() if k.startswith("W3")}
        if st_rate:
            w3["W1 stream beside it"] = st_rate
        w1 = {k: v for k, v in beside.items() if k.startswith("W1")}
        changes = self.sizes.w1_changes
        both = rows + changes
        notes = {"stream_rows_during_backfill": during, "stream_rows": changes}
        self.results += [
            Result(self.pipeline, "W4", self.run, rows, bf_rate, bf_span, cpu, rss, w3,
                   cpu_rows=both, notes=notes),
            Result(self.pipeline, "W4s", self.run, changes, st_rate, st_span, cpu, rss, w1,
                   cpu_rows=both, notes=notes),
        ]  # fmt: skip
        self.opts.say(
            f"[{self.pipeline} run {self.run}] W4: {during:,} of {changes:,} stream rows became "
            "durable while the backfill ran"
        )
