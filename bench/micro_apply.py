"""Apply rate of the database targets beside the capture rate, on the bench's W1 (transactions of
1,000 inserts, then 1,000 updates, then 1,000 deletes on ``orders``).

For each source (Postgres, MariaDB) two pipelines are created on the same empty table: one into
the built-in log (capture), one into a Postgres target (capture + apply); W1 is loaded while both
are stopped, then each is run alone (in this process) and timed until it holds every change: the
log by its end offset, the target when its ``orders`` equals the source's (count and sums).

    python -m bench.micro_apply [--scale 0.05]

Figures on these shared 2-core machines vary from run to run; compare the two rates of one run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench import _workloads as wl
from bench._sources import MySQL, Postgres

W1_BASE = 0


class Running:
    def __init__(self, config: Path) -> None:
        from cdc.config import load
        from cdc.pipeline import Pipeline

        self.pipeline = Pipeline(load(config).pipelines[0])
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.pipeline.run()
        except BaseException as e:
            self.error = e

    def stop(self) -> None:
        self.pipeline.stop()
        self.thread.join(60)
        if self.error is not None:
            raise self.error


def _wait(check: Any, running: Running, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if running.error is not None:
            raise running.error
        if time.monotonic() > deadline:
            raise TimeoutError("the pipeline did not catch up")
        time.sleep(0.1)  # cheap checks, seldom: the pipeline runs in this process


def measure(src: Any, pg: Any, work: Path, scale: float, label: str) -> dict[str, float]:
    from cdc.sinks.log import LogReader

    sizes = wl.Sizes.at(scale)
    target_db = f"apply_{label}"
    target = pg.create_database(target_db)
    configs = {}
    for sink_kind in ("log", "postgres"):
        name = f"{label}_{sink_kind}"
        sink = (
            {"type": "log", "path": str(work / f"{name}-log")}
            if sink_kind == "log"
            else {"type": "postgres", "dsn": target, "schema": "app"}
        )
        cfg = {
            "pipelines": [
                {
                    "name": name,
                    "source": src.source_config("never", 4100 + len(configs)),
                    "sink": sink,
                }
            ]
        }
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        configs[sink_kind] = path
        run = Running(path)
        time.sleep(1.5)  # streaming: the slot / binlog position exists
        src.marker()
        if sink_kind == "log":
            log = work / f"{name}-log"
            _wait(lambda log=log: log.exists() and LogReader(log).info()["records"] > 0, run, 60)  # type: ignore[misc]
        else:
            _wait(
                lambda: _query(target, "SELECT to_regclass('app.bench_marker')") != [(None,)],
                run,
                60,
            )
        run.stop()
    src.load("W1", sizes, W1_BASE)
    expected = sizes.w1_changes
    rates = {}

    def source_state() -> Any:
        if isinstance(src, Postgres):
            return _query(src.server.dsn(src.db), "SELECT count(*), sum(amount) FROM orders")
        return [
            tuple(r) for r in src.server.sql("SELECT count(*), sum(amount) FROM orders", src.db)
        ]

    want = source_state()
    for sink_kind, path in configs.items():
        if sink_kind == "log":
            log = work / f"{label}_log-log"
            # every change, and BEGIN and END of each transaction (transaction metadata)
            txns = sizes.w1_inserts + sizes.w1_updates + sizes.w1_deletes
            until = LogReader(log).info()["end_offset"] + expected + 2 * txns

            def done(log: Path = log, until: int = until) -> bool:
                return int(LogReader(log).info()["end_offset"]) >= until

            t0 = time.perf_counter()
            run = Running(path)
            _wait(done, run, 900)
        else:
            t0 = time.perf_counter()
            run = Running(path)
            _wait(
                lambda: _query(target, "SELECT count(*), sum(amount) FROM app.orders") == want,
                run,
                900,
            )
        took = time.perf_counter() - t0
        run.stop()
        rates[sink_kind] = expected / took
    return rates


def _query(dsn: str, sql: str) -> list[tuple[Any, ...]] | None:
    """The rows of ``sql``; None while the table does not exist (created with the first batch)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
        except psycopg.errors.UndefinedTable:
            return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.05)
    args = parser.parse_args()
    from scratch.mariadb import start_mariadb
    from scratch.postgres import start_postgres

    work = Path(tempfile.mkdtemp(prefix="cdc-apply-"))
    pg = start_postgres()
    maria = start_mariadb()
    try:
        maria.sql("SET GLOBAL binlog_row_metadata = 'FULL'")
        pg_src = Postgres(pg)
        pg_src.setup("apply_src")
        my_src = MySQL(maria)
        my_src.setup("apply_src")
        n = wl.Sizes.at(args.scale).w1_changes
        print(f"W1: {n:,} changes in 1,000-row transactions (scale {args.scale})")
        for label, src in (("pg", pg_src), ("maria", my_src)):
            rates = measure(src, pg, work, args.scale, label)
            print(
                f"{'Postgres' if label == 'pg' else 'MariaDB'} -> log (capture): "
                f"{rates['log']:,.0f} changes/s; -> Postgres target (capture + apply): "
                f"{rates['postgres']:,.0f} changes/s"
            )
    finally:
        pg.stop("immediate")
        shutil.rmtree(pg.datadir.parent, ignore_errors=True)
        maria.stop()
        shutil.rmtree(maria.base_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
