"""Acceptance of the Postgres target (issue 17): MariaDB -> Postgres and Postgres -> Postgres under
a stream of inserts, updates, deletes, multi-table transactions, primary-key changes, a
transaction larger than a batch and an ADD COLUMN, with two kill -9s of the daemon and one loss
of the target (a restart of the target server, or its backend terminated when the source shares
the server). Every target table must end equal to the source's, and a reader on the target must
never see a transaction half applied.

The invariant every source transaction keeps: for each id, a.v + b.v = 0 (a row of ``a`` and a
row of ``b`` are inserted, changed, re-keyed and deleted together), so on the target
``sum(a.v) + sum(b.v) = 0`` and ``count(a) = count(b)`` at every commit.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.test_sources import Db, PostgresDb
from tests.conftest import scaled, wait_until
from tests.integration.targets.conftest import pg_query, pg_sink, target_config, wait_equal
from tests.integration.test_chaos import db  # the source: Postgres or MariaDB, a fresh database
from tests.servers import _counter

__all__ = ["db"]

pytestmark = [pytest.mark.integration, pytest.mark.scale]

CHANGES = scaled(100_000, 10_000)
BIG_TXN_PAIRS = 600  # 1,200 changes in one transaction: more than max_events (500)


class Writer(threading.Thread):
    """Transactions of 1-5 paired operations until CHANGES row changes are written: first one
    big transaction, an ADD COLUMN half way."""

    def __init__(self, db: Db, seed: int) -> None:
        super().__init__(daemon=True)
        self.write = db.writer()
        self.db = db
        self.rng = random.Random(seed)
        self.live: list[int] = []
        self.next_id = 1
        self.changes = 0
        self.error: BaseException | None = None
        self.altered = False
        # Half way the writer waits until the target was lost, so that changes come after it.
        self.paused = threading.Event()
        self.resume = threading.Event()

    def _pair(self) -> list[str]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.35 or len(self.live) < 20:
            i, x = self.next_id, rng.randint(1, 1000)
            self.next_id += 1
            self.live.append(i)
            return [f"INSERT INTO a (id, v) VALUES ({i}, {x})", f"INSERT INTO b VALUES ({i}, {-x})"]
        if roll < 0.8:
            i, x = rng.choice(self.live), rng.randint(1, 50)
            note = ", note = 'u'" if self.altered else ""
            return [
                f"UPDATE a SET v = v - {x}{note} WHERE id = {i}",
                f"UPDATE b SET v = v + {x} WHERE id = {i}",
            ]
        if roll < 0.9:
            pos = rng.randrange(len(self.live))
            i, new = self.live[pos], self.next_id
            self.next_id += 1
            self.live[pos] = new
            return [  # a primary-key change on both sides
                f"UPDATE a SET id = {new} WHERE id = {i}",
                f"UPDATE b SET id = {new} WHERE id = {i}",
            ]
        i = self.live.pop(rng.randrange(len(self.live)))
        return [f"DELETE FROM a WHERE id = {i}", f"DELETE FROM b WHERE id = {i}"]

    def run(self) -> None:
        try:
            while self.changes < CHANGES:
                if self.changes >= CHANGES // 2 and not self.resume.is_set():
                    self.paused.set()
                    self.resume.wait(300)
                if not self.altered and self.changes >= CHANGES // 2:
                    self.db.execute(["ALTER TABLE a ADD COLUMN note varchar(10) DEFAULT 'n'"])
                    self.altered = True
                n = BIG_TXN_PAIRS if self.changes == 0 else self.rng.randint(1, 5)
                statements = [s for _ in range(n) for s in self._pair()]
                self.write(statements)
                self.changes += len(statements)
        except BaseException as e:  # reported by the test
            self.error = e


class Reader(threading.Thread):
    """Checks the invariant on the target until stopped; reconnects when the target is down."""

    def __init__(self, dsn: str, schema: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.sql = (
            f'SELECT (SELECT coalesce(sum(v), 0) FROM "{schema}".a) + '
            f'(SELECT coalesce(sum(v), 0) FROM "{schema}".b), '
            f'(SELECT count(*) FROM "{schema}".a) - (SELECT count(*) FROM "{schema}".b)'
        )
        self.stop = threading.Event()
        self.checks = 0
        self.broken: list[tuple[Any, ...]] = []

    def run(self) -> None:
        import psycopg

        while not self.stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2) as conn:
                    while not self.stop.is_set():
                        try:
                            row = conn.execute(self.sql).fetchone()
                        except psycopg.errors.UndefinedTable:
                            self.stop.wait(0.05)  # created with the first transaction
                            continue
                        assert row is not None
                        self.checks += 1
                        if row != (0, 0):
                            self.broken.append(tuple(row))
            except psycopg.OperationalError:
                self.stop.wait(0.2)


def test_apply_under_kills_and_target_loss_keeps_every_commit_whole(
    db: Db, pg_server: Any, daemon: Any, tmp_path: Path
) -> None:
    same_server = isinstance(db, PostgresDb)
    target = pg_server.create_database(f"tgt{next(_counter)}_{random.randrange(10**6)}")
    db.execute(
        [
            "CREATE TABLE a (id int PRIMARY KEY, v int NOT NULL)",
            "CREATE TABLE b (id int PRIMARY KEY, v int NOT NULL)",
        ]
    )
    name = f"accept{next(_counter)}"
    cfg = target_config(
        tmp_path / "c.yaml",
        db.source(["a", "b"]),
        pg_sink(target, schema="app", max_retry_backoff_s=1),
        name=name,
        max_events=500,
    )
    run = daemon(cfg).start()
    # The (empty) snapshot applied first: a snapshot is applied table by table, so the target
    # is consistent at every commit from the change stream on.
    wait_until(
        lambda: (
            pg_query(target, "SELECT to_regclass('cdc.cdc_positions')") != [(None,)]
            and pg_query(target, "SELECT 1 FROM cdc.cdc_positions WHERE pipeline = %s", (name,))
        ),
        120,
        "the snapshot's position in the target",
    )
    reader = Reader(target, "app")
    reader.start()
    writer = Writer(db, seed=17)
    writer.start()

    def past(fraction: float) -> None:
        wait_until(
            lambda: writer.changes >= CHANGES * fraction or not writer.is_alive(),
            600,
            f"{fraction:.0%} of the changes written",
        )

    def applied_some() -> None:
        wait_until(lambda: reader.checks > 0, 120, "the target tables to exist")

    past(0.3)
    applied_some()
    run.kill()  # kill -9, mid-stream
    run = daemon(cfg).start()
    wait_until(writer.paused.is_set, 600, "the writer half way")
    sink_backend = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s"
        if same_server  # the source shares the server: lose only the sink's connection
        else "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
    )
    wait_until(
        lambda: pg_query(target, sink_backend, (f"cdc target {name}",)),
        60,
        "the restarted daemon's connection to the target",
    )
    if not same_server:
        pg_server.stop("fast")
        pg_server.start()
    writer.resume.set()
    # The next batch finds the connection gone, reconnects and replays its transaction.
    wait_until(lambda: "postgres target available again" in run.output(), 120, "a reconnect")
    past(0.7)
    run.kill()
    run = daemon(cfg).start()
    writer.join(900)
    assert writer.error is None, writer.error
    for table, cols in (("a", "id, v, note"), ("b", "id, v")):
        select = f"SELECT {cols} FROM {db.qualified(table)} ORDER BY id"
        wait_equal(
            lambda select=select: [tuple(r) for r in db.query(select)],  # type: ignore[misc]
            lambda select=select, table=table: pg_query(  # type: ignore[misc]
                target, select.replace(db.qualified(table), f"app.{table}")
            ),
            f"target table app.{table} equal to the source's",
            timeout=scaled(600, 180),
        )
    reader.stop.set()
    reader.join(30)
    run.terminate()
    assert reader.checks > 10
    assert not reader.broken, f"the reader saw transactions half applied: {reader.broken[:5]}"
