"""High availability (issue 18 item 5): logical decoding from a standby (Postgres 16+), and a
failover slot (17+) that a promoted standby holds, so the pipeline resumes on the new primary with
nothing lost and nothing twice in the log.

Each test runs a primary and a physical standby of its own (scratch.postgres.start_standby) on
the newest Postgres the project tests (18: failover slots need 17+).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.logtools import read_log, row_events, write_config

pytestmark = pytest.mark.integration

VERSION = "18"


@pytest.fixture
def pair() -> Iterator[tuple[Any, Any]]:
    """A primary whose logical walsenders wait for the standby's physical slot
    (synchronized_standby_slots), and a standby that synchronises failover slots."""
    from scratch.postgres import start_postgres, start_standby

    primary = start_postgres(version=VERSION, settings={"synchronized_standby_slots": "'standby1'"})
    standby = None
    try:
        primary.psql("CREATE DATABASE shop")
        standby = start_standby(
            primary,
            slot="standby1",
            settings={
                "sync_replication_slots": "on",
                # copied from the primary by the base backup: once promoted, its walsenders
                # would wait for a slot it does not have (docs/operations-postgres.md)
                "synchronized_standby_slots": "''",
                "primary_conninfo": f"'{primary.dsn('shop')}'",
            },
        )
        yield primary, standby
    finally:
        for server in (standby, primary):
            if server is not None:
                server.stop("immediate")
                shutil.rmtree(server.datadir.parent, ignore_errors=True)


def ids(log: Path) -> list[int]:
    return [r["value"]["after"]["id"] for r in row_events(read_log(log)) if r["value"]["after"]]


def config(tmp_path: Path, dsn: str, extra: str = "") -> Path:
    return write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: ha
    batch: {{max_wait_ms: 20}}
    source:
      type: postgres
      dsn: "{dsn}"
      tables: [public.items]
      heartbeat_interval_s: 1
      {extra}
    sink:
      type: log
      path: {tmp_path / "log"}
""",
    )


class Writer(threading.Thread):
    """Inserts ids one transaction each (synchronous_commit on) into whichever server accepts
    writes; ``committed`` holds the ids whose COMMIT returned."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.committed: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        conn: psycopg.Connection[Any] | None = None
        while not self.halt.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                    conn.execute("SET synchronous_commit = on")
                conn.execute("INSERT INTO items VALUES (%s)", (n,))
                self.committed.append(n)
                n += 1
                self.halt.wait(0.005)
            except psycopg.Error:
                # the primary went away: an insert in flight may or may not have committed, so
                # its id is not counted as committed (and the next insert takes a new one)
                conn = None
                n += 1
                self.halt.wait(0.2)


def multi_host(primary: Any, standby: Any, db: str) -> str:
    return (
        f"host=127.0.0.1,127.0.0.1 port={primary.port},{standby.port} user=postgres "
        f"dbname={db} target_session_attrs=read-write"
    )


def test_a_failover_slot_resumes_on_the_promoted_standby_nothing_lost_nothing_twice(
    tmp_path: Path, pair: tuple[Any, Any], daemon: Any
) -> None:
    primary, standby = pair
    with psycopg.connect(primary.dsn("shop"), autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY)")
    d = daemon(
        config(tmp_path, multi_host(primary, standby, "shop"), "slot_failover: true")
    ).start()
    wait_until(lambda: "streaming from slot" in d.output(), 90, "streaming")
    assert "(failover)" in d.output()

    writer = Writer(multi_host(primary, standby, "shop"))
    writer.start()
    wait_until(lambda: len(ids(tmp_path / "log")) >= 200, 60, "changes before the failover")

    def synced() -> bool:
        with psycopg.connect(standby.dsn("shop")) as c:
            row = c.execute(
                "SELECT synced, temporary FROM pg_replication_slots WHERE slot_name = 'cdc_ha'"
            ).fetchone()
        return row == (True, False)

    # The standby keeps a persistent copy of the slot only once it has caught up with it: an
    # operator checks this before relying on failover (docs/operations-postgres.md).
    # the slot-sync worker naps up to 30 s between rounds, and a new copy needs two rounds
    wait_until(synced, 150, "the standby to synchronise the failover slot")
    primary.stop("fast")  # the primary goes away while the writer runs
    standby.promote()
    n = len(writer.committed)
    wait_until(lambda: len(writer.committed) >= n + 200, 60, "writes on the new primary")
    writer.halt.set()
    writer.join(10)
    committed = writer.committed
    try:
        wait_until(
            lambda: set(committed) <= set(ids(tmp_path / "log")), 120, "every committed change"
        )
    except BaseException:  # what a failure needs to be understood
        print(d.output()[-6000:])
        with psycopg.connect(standby.dsn("shop")) as c:
            print(c.execute("SELECT * FROM pg_replication_slots").fetchall())
            print(c.execute("SELECT * FROM pg_stat_replication").fetchall())
        print("missing:", sorted(set(committed) - set(ids(tmp_path / "log")))[:20])
        raise
    assert d.terminate() == 0
    got = ids(tmp_path / "log")
    assert len(got) == len(set(got)), "nothing twice in the log"
    assert got == sorted(got), "in commit order"
    assert set(committed) <= set(got), "nothing lost"
    out = d.output()
    assert "restarting in" in out, "the pipeline reconnected after the primary went away"


def test_logical_decoding_from_a_standby_snapshot_and_stream(
    tmp_path: Path, pair: tuple[Any, Any], daemon: Any
) -> None:
    """Postgres 16+: the slot lives on the standby; the publication is made on the primary
    (the standby is read-only), so the pipeline uses it as it is (mode disabled)."""
    primary, standby = pair
    with psycopg.connect(primary.dsn("shop"), autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY)")
        c.execute("INSERT INTO items SELECT generate_series(0, 99)")
        c.execute("CREATE PUBLICATION cdc_ha FOR TABLE items")

    def replayed() -> bool:  # the standby has the publication and the rows (replication lags)
        try:
            with psycopg.connect(standby.dsn("shop")) as c:
                row = c.execute(
                    "SELECT (SELECT count(*) FROM pg_publication WHERE pubname = 'cdc_ha'), "
                    "(SELECT count(*) FROM items)"
                ).fetchone()
        except psycopg.errors.UndefinedTable:  # not even the table yet
            return False
        return row == (1, 100)

    wait_until(replayed, 60, "the standby to replay the publication and the rows")
    stop = threading.Event()

    def nudge() -> None:
        # a standby creates a logical slot at the primary's next running-xacts record: ask for
        # one often rather than wait for the checkpointer's (every 15 s)
        while not stop.is_set():
            with psycopg.connect(primary.dsn("shop"), autocommit=True) as c:
                c.execute("SELECT pg_log_standby_snapshot()")
            stop.wait(0.5)

    t = threading.Thread(target=nudge, daemon=True)
    t.start()
    try:
        cfg = config(
            tmp_path,
            standby.dsn("shop"),
            "publication_autocreate_mode: disabled\n      heartbeat_action_query: null",
        )
        d = daemon(cfg).start()
        try:
            wait_until(
                lambda: "streaming from slot" in d.output(), 90, "streaming from the standby"
            )
        except BaseException:  # what a failure needs to be understood
            print(d.output()[-6000:])
            raise
        with psycopg.connect(primary.dsn("shop"), autocommit=True) as c:
            for i in range(100, 150):
                c.execute("INSERT INTO items VALUES (%s)", (i,))
        wait_until(lambda: ids(tmp_path / "log") == list(range(150)), 60, "snapshot and stream")
        assert d.terminate() == 0
        assert "ERROR" not in d.output(), d.output()
    finally:
        stop.set()
        t.join(5)
