"""Faults of the built-in log with `cdc run` as a real process (issue 14, items 2 and 3): damage
in the middle of the active segment stops the pipeline and cuts nothing; a second daemon cannot
get past the writer's lock by deleting files."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.integration.test_postgres_log import config, count_rows
from tests.logtools import read_log, row_events

pytestmark = pytest.mark.integration


def frame_starts(seg: Path) -> list[int]:
    from cdc.sinks.log._format import scan

    frames, err = scan(seg.read_bytes())
    assert err is None
    return [f.file_offset for f in frames]


def test_a_changed_byte_mid_segment_stops_the_daemon_and_cuts_nothing(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, x text)")
    cfg = config(
        tmp_path, pg_db, ["public.t"], extra="    batch: {max_events: 100, max_wait_ms: 5}"
    )
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    log = tmp_path / "log"
    with psycopg.connect(pg_db, autocommit=True) as c:
        for i in range(1, 9):  # eight transactions, each its own frame
            c.execute("INSERT INTO t VALUES (%s, %s)", (i, "x" * 50))
            wait_until(lambda n=i: count_rows(log) >= n, 30, f"row {i}")
    assert d.terminate() == 0
    seg = sorted(log.glob("*.seg"))[-1]
    good = seg.read_bytes()
    starts = frame_starts(seg)
    assert len(starts) >= 8
    at = starts[len(starts) // 2] + 40  # inside a frame with acknowledged frames after it
    bad = bytearray(good)
    bad[at] ^= 0x01
    seg.write_bytes(bytes(bad))

    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO t VALUES (9, 'while the log is damaged')")
    d = daemon(cfg).start()
    assert d.proc is not None
    rc = d.proc.wait(60)
    out = d.output()
    assert rc == 1, out
    assert f"log segment {seg}" in out and f"at byte {starts[len(starts) // 2]}" in out, out
    assert "nothing was cut" in out and "dropping the last" not in out, out
    assert seg.read_bytes() == bytes(bad), "acknowledged frames were deleted"

    seg.write_bytes(good)  # the operator restores the segment from a backup
    d = daemon(cfg).start()
    wait_until(lambda: count_rows(log) >= 9, 30, "the row written while damaged")
    d.terminate()
    ids = [r["value"]["after"]["id"] for r in row_events(read_log(log))]
    assert ids == list(range(1, 10))


def test_deleting_lock_files_lets_no_second_daemon_write(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    total = 3000
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, x text)")
    cfg = config(tmp_path, pg_db, ["public.t"], extra="    batch: {max_events: 50, max_wait_ms: 5}")
    first = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in first.output(), 30, "daemon streaming")
    log = tmp_path / "log"

    def write() -> None:
        with psycopg.connect(pg_db, autocommit=True) as c:
            for i in range(total):
                c.execute("INSERT INTO t VALUES (%s, 'x')", (i,))

    w = threading.Thread(target=write)
    w.start()
    try:
        wait_until(lambda: count_rows(log) >= 200, 60, "rows flowing")
        for p in log.iterdir():
            if p.name.startswith(".") and p.is_file():
                p.unlink()
        second = daemon(cfg).start()
        assert second.proc is not None
        rc = second.proc.wait(60)
        assert rc == 1 and "in use by another writer" in second.output(), second.output()
    finally:
        w.join()
    wait_until(lambda: count_rows(log) >= total, 120, "every row")
    assert first.proc is not None and first.proc.poll() is None, first.output()
    first.terminate()
    ids = [r["value"]["after"]["id"] for r in row_events(read_log(log))]
    assert ids == list(range(total)), "no hole, no duplicate"
