"""A Postgres database target (`sink: {type: postgres}`) watched from outside the daemon: when
the applied rows are visible, and the target's own bulk-load rate of the same rows.

The span of an apply runs from the daemon's log line that it started streaming (or its snapshot)
to the first poll that sees all of it applied: daemon start-up is outside it, as for the other
sinks. Streamed workloads are followed by a marker row in the source: the apply is done when the
target holds it (a source transaction is applied as one target transaction, in commit order);
the target's ``orders`` is then checked against the source's (row count and sum of ``amount``).
A snapshot (W3) is done when ``orders`` equals the source's. The rate is a lower bound, off by
at most one polling interval (which grows with the cost of the query, to keep the polling's own
load small).
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

SCHEMA = "bench"  # where the target tables go (the sink's `schema:`)
State = tuple[int, Any]
T = TypeVar("T")


class TargetObserver:
    """Rows of the target tables the pipeline applied into (database ``dsn``, schema SCHEMA)."""

    def __init__(self, dsn: str, pipeline: str) -> None:
        import psycopg

        self.dsn = dsn
        self.pipeline = pipeline
        self.conn = psycopg.connect(dsn, autocommit=True)

    def _exists(self, table: str) -> bool:
        row = self.conn.execute("SELECT to_regclass(%s)", [f"{SCHEMA}.{table}"]).fetchone()
        return row is not None and row[0] is not None

    def count(self, topic: str) -> int:
        """Rows now in the target table of ``topic`` (its last dotted part); 0 before it exists."""
        table = topic.rsplit(".", 1)[-1]
        if not self._exists(table):
            return 0
        row = self.conn.execute(f"SELECT count(*) FROM {SCHEMA}.{table}").fetchone()
        return int(row[0]) if row else 0

    def state(self, table: str = "orders") -> State:
        if not self._exists(table):
            return (0, 0)
        row = self.conn.execute(
            f"SELECT count(*), coalesce(sum(amount), 0) FROM {SCHEMA}.{table}"
        ).fetchone()
        assert row is not None
        return (int(row[0]), row[1])

    def progress(self) -> tuple[int, str | None]:
        """(rows of bench_marker, the applied position): both cheap to read. The position changes
        with every target transaction; a marker row inserted after a workload is applied after
        all of it (one target transaction per source commit, in commit order)."""
        markers = self.count("bench_marker")
        row = self.conn.execute(
            "SELECT position::text FROM cdc.cdc_positions WHERE pipeline = %s", [self.pipeline]
        ).fetchone()
        return (markers, row[0] if row else None)

    def wait_applied(
        self,
        probe: Callable[[], T],
        done: Callable[[T], bool],
        daemon: Any,
        timeout: float,
        what: str,
        exits: bool = False,
    ) -> float:
        """Poll ``probe`` until ``done``; the wall-clock time (time.time()) of the first poll
        that is done. ``exits``: the daemon may exit once done (an initial_only snapshot)."""
        deadline = time.monotonic() + timeout
        while True:
            at = time.time()
            t0 = time.perf_counter()
            now = probe()
            took = time.perf_counter() - t0
            if done(now):
                return at
            if exits and not daemon.alive():
                if done(probe()):
                    return time.time()
                daemon.check()
            elif not exits:
                daemon.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not applied after {timeout:.0f}s (the target: {now})")
            time.sleep(min(max(0.05, 4 * took), 1.0))

    def copy_ceiling(self, pg: Any, db: str, lo: int, hi: int) -> tuple[int, float]:
        """The target's own bulk load of the same rows: the rows of ``orders`` with ids in
        (lo, hi], as the pipeline applied them, COPYed from a file (psql, as a client loads)
        into a new table of the same shape (primary key included). (rows, seconds)."""
        self.conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.orders_copy")
        self.conn.execute(f"CREATE TABLE {SCHEMA}.orders_copy (LIKE {SCHEMA}.orders INCLUDING ALL)")
        with tempfile.TemporaryDirectory(prefix="cdc-bench-copy-") as tmp:
            path = Path(tmp) / "rows.copy"
            with open(path, "wb") as f, self.conn.cursor() as cur:
                rows_sql = f"SELECT * FROM {SCHEMA}.orders WHERE id > {lo} AND id <= {hi}"
                with cur.copy(f"COPY ({rows_sql}) TO STDOUT") as copy:
                    for chunk in copy:
                        f.write(chunk)
            rows = sum(1 for _ in open(path, "rb"))
            argv = [str(pg.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                    pg.dsn(db), "-c", f"COPY {SCHEMA}.orders_copy FROM STDIN"]  # fmt: skip
            with open(path, "rb") as f:
                t0 = time.perf_counter()
                proc = subprocess.run(argv, stdin=f, capture_output=True, text=False)
                took = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"COPY into the target failed: {proc.stderr.decode().strip()}")
        self.conn.execute(f"DROP TABLE {SCHEMA}.orders_copy")
        return rows, took

    def close(self) -> None:
        self.conn.close()


def logged_at(output: str, pattern: str) -> float:
    """The time (as time.time()) of the daemon's first log line matching ``pattern``: when it
    started streaming or snapshotting. The log's timestamps are local time, to the millisecond."""
    for line in output.splitlines():
        if re.search(pattern, line):
            stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    raise RuntimeError(f"bench: no log line matching {pattern!r} in the daemon's output")
