"""A snapshot resumed after kill -9s, on every source: event ids and markers as if uninterrupted.

Issue 14 item 1: a resumed snapshot numbered its rows from 0 again, so distinct rows shared an
event id and a de-duplicating sink (NATS JetStream by ``Nats-Msg-Id``) dropped them; the
``first_in_data_collection`` marker and the row count restarted, and no row carried ``last``
when the last captured table was empty.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cdc.sinks.log import LogReader
from tests.conformance import test_sources
from tests.conformance.test_sources import Db, Run, db, ops  # noqa: F401 (db: the fixture)
from tests.conftest import wait_until

# pytest imports test_sources.py by its own name as well: that copy counts database names from
# 0 too, so this one counts from elsewhere (names are per process and server)
test_sources._counter = itertools.count(100_000)

N = 20_000
NO_KEY = 300


def _snapshot_rows_durable(run: Run) -> int:
    """Records in the log while its last durable position is still inside the snapshot."""
    if not run.log.exists():
        return 0
    info = LogReader(run.log).info()
    pos = info.get("last_position")
    return int(info["records"]) if pos and "snapshot" in pos else 0


def _kill_mid_snapshot(run: Run, more_than: int) -> int:
    """Start, kill -9 once more than ``more_than`` snapshot records are durable; the count."""
    run.start()
    deadline = time.monotonic() + 60
    while (n := _snapshot_rows_durable(run)) <= more_than:
        assert run.proc.proc.poll() is None, run.proc.output()
        assert time.monotonic() < deadline, f"no snapshot progress in 60s:\n{run.proc.output()}"
        time.sleep(0.005)
    run.kill()
    assert "snapshot" in (LogReader(run.log).info()["last_position"] or {}), (
        "the kill came after the snapshot: nothing resumed"
    )
    return n


def test_resumed_snapshot_keeps_ids_unique_and_markers_right(
    tmp_path: Path,
    daemon: Any,
    db: Db,  # noqa: F811 (the fixture imported above)
) -> None:
    db.execute(["CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)"])
    db.execute(["CREATE TABLE u (a INT, b INT)"])  # no key: read again from its start
    db.execute(["CREATE TABLE zz (id INT PRIMARY KEY)"])  # captured last, and empty
    for lo in range(1, N + 1, 5000):
        values = ", ".join(f"({i}, {-i})" for i in range(lo, min(lo + 5000, N + 1)))
        db.execute([f"INSERT INTO t VALUES {values}"])
    db.execute([f"INSERT INTO u VALUES {', '.join(f'({i}, {i})' for i in range(NO_KEY))}"])
    run = Run(tmp_path, daemon, db, ["t", "u", "zz"], max_events=100, chunk=100)

    first = _kill_mid_snapshot(run, 0)
    _kill_mid_snapshot(run, first)  # a second resume, from a resumed attempt's position
    run.start()
    run.wait(lambda rows: len(ops(rows, "r")) >= N + NO_KEY, "the whole snapshot")
    # the position's own "snapshot" key (progress), not the word inside a value (an
    # incremental state's "snapshotted" tables)
    wait_until(lambda: "snapshot" not in (LogReader(run.log).info()["last_position"] or {}), 60)
    time.sleep(0.3)  # nothing more may follow
    records = [r for r in run.records() if r["value"] is not None]
    run.stop()
    reads = [r for r in records if r["value"]["op"] == "r"]

    # every distinct row has its own id, and a row read twice (a table without a key, read
    # again from its start) has the same id both times, so a de-duplicating sink keeps one
    by_id: dict[str, set[Any]] = {}
    for r in records:
        after = r["value"].get("after")
        by_id.setdefault(r["event_id"], set()).add(
            (r["topic"], repr(r["key"]), repr(sorted(after.items())) if after else None)
        )
    shared = {i: v for i, v in by_id.items() if len(v) > 1}
    assert not shared, f"{len(shared)} event ids name different rows, e.g. {list(shared)[:3]}"
    keyed = Counter(r["event_id"] for r in reads if r["topic"] == run.topic("t"))
    assert len(keyed) == N and max(keyed.values()) == 1, "each keyed row once, with its own id"
    assert sorted(r["key"]["id"] for r in reads if r["topic"] == run.topic("t")) == list(
        range(1, N + 1)
    )
    assert len({r["event_id"] for r in reads if r["topic"] == run.topic("u")}) == NO_KEY

    flags = [r["value"]["source"]["snapshot"] for r in reads]
    assert flags[0] == "first" and flags.count("first") == 1, Counter(flags)
    # "last" on the snapshot's last row, though it comes from u: zz, read last, is empty
    assert flags[-1] == "last" and flags.count("last") == 1, Counter(flags)
    assert reads[-1]["topic"] == run.topic("u")
    t_flags = [f for r, f in zip(reads, flags, strict=True) if r["topic"] == run.topic("t")]
    assert t_flags.count("last_in_data_collection") == 1
    assert "first_in_data_collection" not in t_flags, "t's first row is the snapshot's first"
    u_flags = [f for r, f in zip(reads, flags, strict=True) if r["topic"] == run.topic("u")]
    assert u_flags[0] == "first_in_data_collection"
    # the row count goes on across resumes rather than restarting
    out = run.proc.output()
    if db.kind == "postgres":
        assert f"snapshot public.t: done, {N:,} rows" in out, out
    else:
        assert f"snapshot finished: {N + NO_KEY} rows" in out, out
