"""The Postgres source under server operations and faults: shutdown, publication changes,
name collisions, dropped and renamed tables (issue 14 items 4, 5, 7, 8).

Each test that stops or changes the server runs on a private scratch server of its own.
"""

from __future__ import annotations

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
