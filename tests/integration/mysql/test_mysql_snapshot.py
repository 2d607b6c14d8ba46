"""Snapshot of existing rows while a writer changes the table: replaying the log reproduces it.

The acceptance criterion speaks of 1M rows; 100,000 are used here to keep the shared 2-core
machines usable (the code path is the same: primary-key-ordered chunks, flat memory).
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.integration.mysql.conftest import connect, read_log, seq, write_config

pytestmark = pytest.mark.integration

ROWS = 100_000


def _replay(log_dir: Path, topic: str) -> tuple[dict[int, tuple[Any, ...]], list[str]]:
    table: dict[int, tuple[Any, ...]] = {}
    markers = []
    for r in read_log(log_dir, topic):
        v = r["value"]
        if v is None:
            continue
        if v["op"] in ("r", "c", "u"):
            a = v["after"]
            table[a["id"]] = (a["id"], a["v"], a["pad"])
        elif v["op"] == "d":
            table.pop(v["before"]["id"], None)
        if v["op"] == "r" and v["source"]["snapshot"] in ("first", "last"):
            markers.append(v["source"]["snapshot"])
    return table, markers


def _count(log_dir: Path) -> int:
    from cdc.sinks.log import LogReader

    if not log_dir.exists():
        return 0
    return sum(fr.count for fr in LogReader(log_dir).frames())


def _position(log_dir: Path) -> dict[str, Any]:
    from cdc.sinks.log import LogReader

    return LogReader(log_dir).info()["last_position"] or {}


@pytest.mark.parametrize("kill", [False, True], ids=["plain", "killed-mid-snapshot"])
def test_snapshot_under_writes_then_stream_reproduces_the_table(
    kill: bool, server: Any, mysql_db: str, tmp_path: Path, daemon: Any
) -> None:
    db = mysql_db
    conn = connect(server, db)
    cur = conn.cursor()
    cur.execute("CREATE TABLE s (id INT PRIMARY KEY, v INT NOT NULL, pad VARCHAR(20))")
    cur.execute(f"INSERT INTO s SELECT seq, seq, 'x' FROM {seq(server, ROWS)}")
    log_dir = tmp_path / "log"
    topic = f"mysqltest.{db}.s"
    cfg = write_config(
        tmp_path / "c.yaml",
        server,
        [f"{db}.s"],
        log_dir,
        max_events=1000,
        snapshot_chunk_rows=5000,
    )

    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0]

    def write() -> None:
        rnd = random.Random(7)
        next_id = 200_000
        try:
            w = connect(server, db)
            wc = w.cursor()
            while not stop.is_set():
                wc.execute("BEGIN")
                for _ in range(3):
                    k = rnd.randint(1, ROWS)
                    op = rnd.random()
                    if op < 0.4:
                        wc.execute("UPDATE s SET v = v + 1, pad = 'u' WHERE id = %s", (k,))
                    elif op < 0.7:
                        wc.execute("DELETE FROM s WHERE id = %s", (k,))
                    elif op < 0.75:
                        wc.execute("UPDATE s SET id = id + 1000000 WHERE id = %s", (k,))
                    else:
                        next_id += 1
                        wc.execute("INSERT INTO s VALUES (%s, %s, 'i')", (next_id, next_id))
                wc.execute("COMMIT")
                done[0] += 1
                stop.wait(0.002)  # a steady trickle, not a flood that starves the snapshot
            w.close()
        except BaseException as e:  # reported below
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: done[0] >= 50, 30, "the writer to get going")
        d = daemon(cfg).start()
        if kill:
            wait_until(lambda: _count(log_dir) >= 20_000, 120, "20,000 rows")
            d.kill()
            assert _position(log_dir).get("snapshot") == "running", (
                "the kill came after the snapshot: nothing tested"
            )
            d = daemon(cfg).start()
        wait_until(
            lambda: _count(log_dir) > 0 and "snapshot" not in _position(log_dir),
            180,
            "the end of the snapshot",
        )
        after = done[0]
        wait_until(lambda: done[0] >= after + 100, 30, "writes after the snapshot")
    finally:
        stop.set()
        writer.join(60)
    assert not errors, errors

    cur.execute("SELECT id, v, pad FROM s")
    expected = {row[0]: tuple(row) for row in cur.fetchall()}

    def matches() -> bool:
        return _replay(log_dir, topic)[0] == expected

    wait_until(matches, 120, "the replayed log to equal the table")
    assert d.terminate() == 0, d.output()
    markers = _replay(log_dir, topic)[1]
    assert markers.count("last") == 1
    # a resumed snapshot goes on: its first row is not the snapshot's first (issue 14 item 1)
    assert markers.count("first") == 1


def test_snapshot_chunks_composite_keys_and_keyless_tables_initial_only(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE c (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b))")
    keys = [(10, "z"), (1, "y"), (2, "c"), (1, "x"), (2, "a"), (3, "a"), (2, "b")]
    cur.executemany("INSERT INTO c VALUES (%s, %s, 0)", keys)
    cur.execute("CREATE TABLE n (x INT)")
    cur.execute("INSERT INTO n VALUES (5), (4), (3)")
    log_dir = tmp_path / "log"
    cfg = write_config(
        tmp_path / "c.yaml",
        server,
        [f"{db}.*"],
        log_dir,
        snapshot="initial_only",
        snapshot_chunk_rows=2,
    )
    p = run_pipeline(cfg)
    wait_until(lambda: not p.thread.is_alive(), 60, "initial_only to stop by itself")
    p.stop()
    records = read_log(log_dir)
    got = [(r["topic"].split(".")[-1], r["key"], r["value"]["source"]["snapshot"]) for r in records]
    ordered = sorted(keys)
    assert got == [
        ("c", {"a": ordered[0][0], "b": ordered[0][1]}, "first"),
        *[("c", {"a": a, "b": b}, "true") for a, b in ordered[1:-1]],
        ("c", {"a": ordered[-1][0], "b": ordered[-1][1]}, "last_in_data_collection"),
        ("n", None, "first_in_data_collection"),
        ("n", None, "true"),
        ("n", None, "last"),
    ]
    assert sorted(r["value"]["after"]["x"] for r in records[-3:]) == [3, 4, 5]
    assert all(r["value"]["op"] == "r" for r in records)
    # a second start has nothing left to do
    p = run_pipeline(cfg)
    wait_until(lambda: not p.thread.is_alive(), 60, "initial_only to stop again")
    p.stop()
    assert len(read_log(log_dir)) == len(records)


def test_a_table_truncated_after_the_snapshot_began_is_a_retryable_error_naming_it(
    server: Any, mysql_db: str, tmp_path: Path
) -> None:
    """The snapshot's consistent read cannot see a table altered or truncated after it began
    (the server's error 1412): a retryable error that says so (the daemon restarts the
    pipeline, the snapshot resumes under a new consistent read), not the driver's own."""
    from cdc.config import load
    from cdc.errors import SourceError
    from cdc.model import ChangeBatch
    from cdc.pipeline import Parts, Pipeline

    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE a (id INT PRIMARY KEY)")
    cur.execute(f"INSERT INTO a SELECT seq FROM {seq(server, 100)}")
    cur.execute("CREATE TABLE b (id INT PRIMARY KEY)")
    cur.execute("INSERT INTO b VALUES (1)")

    class Holding:
        """Holds the first batch (of table a) until the test has truncated table b."""

        event_details = True

        def __init__(self) -> None:
            self.first, self.go = threading.Event(), threading.Event()

        def write_rows(self, batch: ChangeBatch) -> None:
            self.first.set()
            self.go.wait(60)

        def committed(self) -> Any:
            return None

        def acknowledgeable(self) -> Any:
            return None

        def interrupt(self) -> None:
            self.go.set()

        def close(self) -> None:
            pass

    cfg = write_config(
        tmp_path / "c.yaml",
        server,
        [f"{db}.a", f"{db}.b"],
        tmp_path / "log",
        max_events=10,
        snapshot_chunk_rows=10,
    )
    sink = Holding()
    pipeline = Pipeline(load(cfg).pipelines[0], Parts(open_sink=lambda c, x: sink))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pipeline.run()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert sink.first.wait(60), "the snapshot's first batch"
    cur.execute("TRUNCATE b")
    sink.go.set()
    t.join(60)
    assert not t.is_alive()
    (err,) = errors
    assert isinstance(err, SourceError) and err.retryable
    assert f"table {db}.b was altered or truncated after the snapshot began" in str(err)
