"""The Postgres source under server operations and faults: shutdown, publication changes,
name collisions, dropped and renamed tables (issue 14 items 4, 5, 7, 8).

Each test that stops or changes the server runs on a private scratch server of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scratch._common import run_as
from tests.conftest import ROOT, scratch_postgres, wait_until
from tests.logtools import postgres_items_config, read_log, row_events

pytestmark = pytest.mark.integration


@pytest.fixture
def private_pg() -> Iterator[Any]:
    """A server of this test's own, which it may stop and start."""
    yield from scratch_postgres()


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
    d = daemon(postgres_items_config(tmp_path / "cdc.yaml", "ops", dsn)).start()
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
    # cdc check says so before a start
    r = subprocess.run(
        [sys.executable, "-m", "cdc", "check", "-c", str(tmp_path / "b_items" / "cdc.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "publication 'cdc_dup_a' belongs to pipeline 'dup.a'" in r.stdout
    assert "replication slot 'cdc_dup_a' belongs to pipeline 'dup.a'" in r.stdout


def two_tables(tmp_path: Path, dsn: str, extra: str = "", tables: str = "items, other") -> Path:
    db = dsn.rsplit("dbname=", 1)[1]
    cfg = tmp_path / "cdc.yaml"
    cfg.write_text(
        f"""
pipelines:
  - name: p{db}
    batch: {{max_wait_ms: 20}}
    source:
      type: postgres
      dsn: "{dsn}"
      tables: [{tables}]
      slot: s_{db}
      slot_check_interval_s: 0.5
      {extra}
    sink:
      type: log
      path: {tmp_path / "log"}
"""
    )
    return cfg


def create_two(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        c.execute("CREATE TABLE other (id int PRIMARY KEY, note text)")


def published(dsn: str, pub: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (pub,)
        ).fetchall()
    return sorted(r[0] for r in rows)


def stops(d: Any, what: str) -> str:
    """Wait for the daemon to exit 1 (a fatal error); return its output."""
    try:
        rc = d.proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the daemon kept running or retrying instead of stopping on {what}:\n{d.output()}"
        )
    out: str = d.output()
    assert rc == 1, out
    assert "restarting in" not in out, f"{what} cannot heal: not retried"
    return out


def test_a_table_removed_from_our_publication_is_added_back_loudly(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    create_two(pg_db)
    cfg = two_tables(tmp_path, pg_db)
    pub = f"cdc_p{pg_db.rsplit('dbname=', 1)[1]}"
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(f"ALTER PUBLICATION {pub} DROP TABLE other")
    wait_until(lambda: "no longer published table public.other" in d.output(), 30, "the warning")
    assert "re-snapshot" in d.output()
    assert published(pg_db, pub) == ["items", "other"]
    insert(pg_db, 0, 3, "other")
    wait_until(lambda: ids(tmp_path / "log", "other") == [0, 1, 2], 30, "other's rows again")
    assert d.terminate() == 0


def test_a_table_removed_from_a_users_publication_stops_the_pipeline(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    create_two(pg_db)
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE PUBLICATION userpub FOR TABLE items, other")
    d = daemon(two_tables(tmp_path, pg_db, "publication: userpub")).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("ALTER PUBLICATION userpub DROP TABLE other")
    out = stops(d, "a table removed from the publication")
    assert "publication 'userpub' no longer publishes table public.other" in out
    assert published(pg_db, "userpub") == ["items"], "a user's publication is not changed"


def test_a_dropped_and_recreated_publication_stops_with_the_ways_out(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    create_two(pg_db)
    db = pg_db.rsplit("dbname=", 1)[1]
    d = daemon(two_tables(tmp_path, pg_db, "publication: mypub")).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    # a change between the drop and the re-creation can never be decoded with the new one
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("DROP PUBLICATION mypub")
        c.execute("INSERT INTO items VALUES (0, 'x')")
        c.execute("CREATE PUBLICATION mypub FOR TABLE items, other")
    insert(pg_db, 1, 3)
    out = stops(d, "a dropped publication")
    assert "publication 'mypub' was dropped after the slot's position" in out
    assert f"pg_drop_replication_slot('s_{db}')" in out and "MB now" in out


def test_a_dropped_table_stops_the_pipeline_at_once_and_at_every_start(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    create_two(pg_db)
    cfg = two_tables(tmp_path, pg_db)
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    insert(pg_db, 0, 3, "other")
    wait_until(lambda: ids(tmp_path / "log", "other") == [0, 1, 2], 30, "other's rows")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("DROP TABLE other")
    out = stops(d, "a dropped table")
    assert "captured table public.other does not exist" in out
    assert "Remove it from source.tables" in out
    again = stops(daemon(cfg).start(), "a dropped table, on start")
    assert "captured table public.other does not exist" in again and "MB now" in again


def test_a_renamed_table_stops_then_resumes_under_its_new_name(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    create_two(pg_db)
    d = daemon(two_tables(tmp_path, pg_db)).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    insert(pg_db, 0, 3, "other")
    wait_until(lambda: ids(tmp_path / "log", "other") == [0, 1, 2], 30, "other's rows")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("ALTER TABLE other RENAME TO other2")
    insert(pg_db, 3, 6, "other2")
    out = stops(d, "a renamed table")
    assert "captured table public.other was renamed to public.other2" in out
    assert "Put public.other2 in source.tables" in out
    # neither the old topic nor a silent drop: the changes after the rename wait in the slot
    assert ids(tmp_path / "log", "other") == [0, 1, 2]
    d2 = daemon(two_tables(tmp_path, pg_db, tables="items, other2")).start()
    wait_until(lambda: ids(tmp_path / "log", "other2") == [3, 4, 5], 60, "the rows after")
    assert d2.terminate() == 0
    assert ids(tmp_path / "log", "other") == [0, 1, 2], "nothing twice"


def test_a_partitioned_table_is_published_through_its_partitions_at_every_start(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    """pg_publication_tables lists a partitioned table's partitions, not the table itself: not
    a table missing from the publication (neither on start nor for the publication check)."""
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, note text) PARTITION BY RANGE (id)")
        c.execute("CREATE TABLE items_1 PARTITION OF items FOR VALUES FROM (0) TO (1000)")
    cfg = two_tables(tmp_path, pg_db, tables="items")
    for lo in (0, 3):
        d = daemon(cfg).start()
        wait_until(lambda d=d: "streaming from slot" in d.output(), 60, "streaming")
        insert(pg_db, lo, lo + 3)
        wait_until(lambda lo=lo: len(ids(tmp_path / "log", "items_1")) == lo + 3, 30, "rows")
        assert d.terminate() == 0
        assert "WARNING" not in d.output() and "ERROR" not in d.output(), d.output()
    assert ids(tmp_path / "log", "items_1") == list(range(6))
