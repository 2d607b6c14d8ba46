"""The Postgres source under server operations and faults: shutdown, publication changes,
name collisions, dropped and renamed tables (issue 14 items 4, 5, 7, 8).

Each test that stops or changes the server runs on a private scratch server of its own.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scratch._common import run_as
from tests.conftest import scratch_postgres, wait_until
from tests.logtools import read_log, row_events

pytestmark = pytest.mark.integration


@pytest.fixture
def private_pg() -> Iterator[Any]:
    """A server of this test's own, which it may stop and start."""
    yield from scratch_postgres()


def pipeline_config(path: Path, dsn: str, name: str = "ops", extra: str = "") -> Path:
    path.write_text(
        f"""
pipelines:
  - name: {name}
    batch: {{max_wait_ms: 20}}
    source:
      type: postgres
      dsn: "{dsn}"
      tables: [public.items]
      {extra}
    sink:
      type: log
      path: {path.parent / "log"}
"""
    )
    return path


def insert(dsn: str, lo: int, hi: int, table: str = "items") -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        # the scratch servers default to synchronous_commit=off: a stop could lose the commits
        c.execute("SET synchronous_commit = on")
        for i in range(lo, hi):
            c.execute(f"INSERT INTO {table} VALUES (%s, 'x')", (i,))


def ids(log: Path, table: str = "items") -> list[int]:
    return [
        r["value"]["after"]["id"]
        for r in row_events(read_log(log))
        if r["value"]["after"] and r["topic"].endswith(f".{table}")
    ]


def test_fast_shutdown_completes_while_streaming_and_the_daemon_resumes(
    tmp_path: Path, private_pg: Any, daemon: Any
) -> None:
    dsn = private_pg.create_database("shut")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
    d = daemon(pipeline_config(tmp_path / "cdc.yaml", dsn)).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    insert(dsn, 0, 50)
    wait_until(lambda: len(ids(tmp_path / "log")) == 50, 60, "the first 50 rows")

    # The walsender of a fast shutdown exits only once our flush position reaches the end of
    # what it sent (its shutdown checkpoint included): pg_ctl's own bound decides.
    try:
        pg_ctl = [str(private_pg.bindir / "pg_ctl"), "-D", str(private_pg.datadir)]
        run_as(private_pg._os_user, [*pg_ctl, "-m", "fast", "-w", "-t", "40", "stop"])
    except RuntimeError as e:
        pytest.fail(f"pg_ctl stop -m fast did not complete while the daemon was connected: {e}")
    private_pg.start()
    wait_until(lambda: d.output().count("streaming from slot") >= 2, 120, "the daemon resumed")
    insert(dsn, 50, 80)
    wait_until(lambda: len(ids(tmp_path / "log")) >= 80, 60, "the rows after the restart")
    assert d.terminate() == 0
    assert ids(tmp_path / "log") == list(range(80)), "each row once, in order"


def test_pipelines_mapping_to_one_slot_never_touch_each_others(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    """``dup.a`` and ``dup-a`` both map to slot and publication ``cdc_dup_a``: run from two
    config files (one file is refused by ``cdc validate``), the second refuses to start rather
    than drop the first's slot or add its tables to the first's publication."""
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE a_items (id int PRIMARY KEY, note text)")
        c.execute("CREATE TABLE b_items (id int PRIMARY KEY, note text)")

    def config(name: str, table: str) -> Path:
        d = tmp_path / table
        d.mkdir()
        (d / "cdc.yaml").write_text(
            f"""
pipelines:
  - name: {name}
    batch: {{max_wait_ms: 20}}
    source: {{type: postgres, dsn: "{pg_db}", tables: [public.{table}]}}
    sink: {{type: log, path: {d / "log"}}}
"""
        )
        return d / "cdc.yaml"

    def published() -> list[str]:
        with psycopg.connect(pg_db) as c:
            rows = c.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = 'cdc_dup_a'"
            ).fetchall()
        return sorted(r[0] for r in rows)

    def slot_active() -> Any:
        with psycopg.connect(pg_db) as c:
            row = c.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = 'cdc_dup_a'"
            ).fetchone()
        return None if row is None else row[0]

    a = daemon(config("dup.a", "a_items")).start()
    wait_until(lambda: "streaming from slot" in a.output(), 60, "dup.a streaming")
    b = daemon(config("dup-a", "b_items")).start()
    assert b.proc is not None
    try:
        rc = b.proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dup-a kept retrying instead of refusing:\n{b.output()}")
    assert rc == 1, b.output()
    assert "belongs to pipeline 'dup.a'" in b.output()
    assert published() == ["a_items"], "dup-a's table was added to dup.a's publication"
    assert slot_active() is True, "dup.a's slot is intact and in use"

    insert(pg_db, 0, 5, "a_items")
    insert(pg_db, 0, 5, "b_items")
    wait_until(lambda: ids(tmp_path / "a_items" / "log", "a_items") == list(range(5)), 60)
    assert a.terminate() == 0
    assert ids(tmp_path / "a_items" / "log", "b_items") == [], "dup.a captured dup-a's table"

    # with dup.a stopped its slot is idle: dup-a still leaves it alone
    b2 = daemon(tmp_path / "b_items" / "cdc.yaml").start()
    assert b2.proc is not None and b2.proc.wait(60) == 1, b2.output()
    assert slot_active() is False, "dup.a's slot was dropped"
    assert published() == ["a_items"]
