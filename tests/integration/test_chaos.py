"""Chaos: random kill -9s of the daemon during the snapshot and the stream, for each source into
the built-in log and into NATS JetStream; what arrives must replay to the table, and every event
id must be unique (sinks de-duplicate by it: NATS drops a message whose id it has seen).

Bounded: one table of a few thousand rows, a writer of a fixed number of transactions running
from the start (so the snapshot and the stream overlap), three kills at random moments chosen by
a seeded generator whose seed the failure message names. About 30-60 s per case.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdc.sinks.log import LogReader
from tests.conformance.test_sources import Db, MySqlDb, PostgresDb
from tests.integration.nats.conftest import decode_all, read_stream, stream_count
from tests.logtools import read_log

pytestmark = pytest.mark.integration

_counter = itertools.count()
SNAPSHOT_ROWS = 20000
TRANSACTIONS = 1200
KILLS = 3


@pytest.fixture(params=["postgres", "mariadb"])
def db(request: pytest.FixtureRequest) -> Any:
    d: PostgresDb | MySqlDb
    if request.param == "postgres":
        d = PostgresDb(request.getfixturevalue("pg_server"))
    else:
        d = MySqlDb("mariadb", request.getfixturevalue("mariadb_server"))
    try:
        yield d
    finally:
        d.close_writers()
        d.drop()


class Writer(threading.Thread):
    """TRANSACTIONS transactions of 1-4 inserts, updates and deletes of random rows, paced."""

    def __init__(self, db: Db, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.write = db.writer()
        self.rng = rng
        self.live = list(range(1, SNAPSHOT_ROWS + 1))
        self.next_id = SNAPSHOT_ROWS + 1
        self.done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(TRANSACTIONS):
                statements = []
                for _ in range(self.rng.randint(1, 4)):
                    roll = self.rng.random()
                    if roll < 0.4 or len(self.live) < 10:
                        statements.append(f"INSERT INTO t VALUES ({self.next_id}, 0)")
                        self.live.append(self.next_id)
                        self.next_id += 1
                    elif roll < 0.8:
                        target = self.rng.choice(self.live)
                        statements.append(f"UPDATE t SET v = v + 1 WHERE id = {target}")
                    else:
                        victim = self.live.pop(self.rng.randrange(len(self.live)))
                        statements.append(f"DELETE FROM t WHERE id = {victim}")
                self.write(statements)
                self.done += 1
                time.sleep(0.002)
        except BaseException as e:  # reported by the test
            self.error = e


class Chaos:
    """One pipeline of ``db`` into ``sink`` ("log" or "nats"), run by cdc processes in turn."""

    def __init__(self, tmp_path: Path, daemon: Any, db: Db, sink: str, nats_url: str) -> None:
        self.db = db
        self.sink = sink
        self.name = f"chaos{os.getpid()}_{next(_counter)}"
        self.log = tmp_path / "log"
        self.nats_url = nats_url
        sink_cfg: dict[str, Any] = (
            {"type": "log", "path": str(self.log)}
            if sink == "log"
            else {
                "type": "nats",
                "servers": [nats_url],
                "stream": self.name,
                "path": str(tmp_path / "state"),
            }
        )
        self.config = tmp_path / "cdc.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "pipelines": [
                        {
                            "name": self.name,
                            "batch": {"max_events": 300, "max_wait_ms": 20},
                            "source": db.source(["t"], chunk=300),
                            "sink": sink_cfg,
                        }
                    ]
                }
            )
        )
        self._daemon = daemon
        self.proc: Any = None
        self.outputs: list[str] = []

    def start(self) -> None:
        self.proc = self._daemon(self.config).start()

    def kill(self) -> None:
        self.proc.kill()
        self.outputs.append(self.proc.output())

    def stored(self) -> int:
        """How many records the sink holds now (cheap: no decoding)."""
        if self.sink == "log":
            if not self.log.exists():
                return 0
            return sum(1 for _ in LogReader(self.log).records())
        return stream_count(self.nats_url, self.name)

    def events(self) -> list[tuple[str, str, Any, Any]]:
        """(event id, topic, key, value) of every stored record, in the sink's order."""
        if self.sink == "log":
            return [(r["event_id"], r["topic"], r["key"], r["value"]) for r in read_log(self.log)]
        msgs = read_stream(self.nats_url, self.name)
        decoded = decode_all(self.nats_url, self.name, msgs)
        return [
            (m.headers["Nats-Msg-Id"], topic, key, value)
            for m, (topic, key, value) in zip(msgs, decoded, strict=True)
        ]

    def alive(self) -> None:
        if self.proc.proc.poll() is not None:
            pytest.fail(f"daemon exited on its own:\n{self.proc.output()}")


def _replay(events: list[tuple[str, str, Any, Any]], topic: str) -> dict[int, int]:
    table: dict[int, int] = {}
    for _, t, key, value in events:
        if t != topic or value is None:
            continue
        if value["op"] == "d":
            table.pop(key["id"], None)
        else:
            table[key["id"]] = value["after"]["v"]
    return table


@pytest.mark.parametrize("sink", ["log", "nats"])
def test_random_kills_during_snapshot_and_stream_lose_and_repeat_nothing(
    tmp_path: Path, daemon: Callable[[Path], Any], db: Db, sink: str, nats_server: Any
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    where = f"(seed {seed}, {db.kind} -> {sink})"
    db.execute(["CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)"])
    for lo in range(1, SNAPSHOT_ROWS + 1, 2000):
        values = ", ".join(f"({i}, 0)" for i in range(lo, min(lo + 2000, SNAPSHOT_ROWS + 1)))
        db.execute([f"INSERT INTO t VALUES {values}"])
    run = Chaos(tmp_path, daemon, db, sink, nats_server.url)
    run.start()
    writer = Writer(db, rng)
    writer.start()

    # the first kill lands in the snapshot: as soon as part of it is stored
    deadline = time.monotonic() + 60
    while run.stored() == 0:
        run.alive()
        assert time.monotonic() < deadline, f"nothing stored in 60 s {where}:\n{run.proc.output()}"
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.05))
    run.kill()
    at_first_kill = run.stored()
    for _ in range(KILLS - 1):
        run.start()
        time.sleep(rng.uniform(0.5, 3.0))
        run.alive()
        run.kill()
    run.start()
    writer.join(180)
    assert not writer.is_alive(), f"the writer did not finish in 180 s {where}"
    assert writer.error is None, f"the writer failed {where}: {writer.error!r}"

    topic = f"{run.name}.{db.namespace}.t"
    expected = dict(db.query("SELECT id, v FROM t"))
    deadline = time.monotonic() + 120
    while True:
        run.alive()
        events = run.events()
        if _replay(events, topic) == expected:
            break
        if time.monotonic() > deadline:
            got = _replay(events, topic)
            missing = sorted(set(expected) - set(got))[:5]
            extra = sorted(set(got) - set(expected))[:5]
            stale = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])[:5]
            pytest.fail(
                f"the sink does not replay to the table after 120 s {where}: "
                f"{len(got)} rows replayed, {len(expected)} in the table; missing e.g. {missing}, "
                f"extra {extra}, stale {stale}"
            )
        time.sleep(0.5)
    time.sleep(0.5)  # anything written twice after catching up would arrive now
    assert run.proc.terminate() == 0, run.proc.output()

    events = run.events()
    assert _replay(events, topic) == expected, where
    ids = Counter(eid for eid, *_ in events)
    repeated = [(eid, n) for eid, n in ids.items() if n > 1]
    assert not repeated, f"{len(repeated)} event ids used more than once {where}: {repeated[:5]}"
    reads = Counter(
        key["id"] for _, t, key, value in events if t == topic and value and value["op"] == "r"
    )
    # A resumed snapshot reads the rows as they are then (the writer runs meanwhile), so the set
    # of keys read is not the table's first state; each is read once all the same.
    twice = [k for k, n in reads.items() if n > 1]
    assert not twice, f"{len(twice)} snapshot rows stored twice {where}, e.g. {twice[:5]}"
    assert 0 < at_first_kill < SNAPSHOT_ROWS, f"the first kill came after the snapshot {where}"
