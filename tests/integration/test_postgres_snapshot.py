"""Initial snapshot of existing rows, handed over to the stream with no gap."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.sinks.log import LogReader
from tests.conftest import RecordingReporter, wait_until
from tests.logtools import read_log, row_events, write_config

pytestmark = pytest.mark.integration

# the acceptance figure is 1M (CDC_SNAPSHOT_ROWS=1000000); CI uses 200k to stay quick
ROWS = int(os.environ.get("CDC_SNAPSHOT_ROWS", "200000"))


def config(tmp_path: Path, dsn: str, snapshot: str = "initial", extra: str = "") -> Path:
    slot = "s_" + dsn.rsplit("dbname=", 1)[1]
    return write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: snap
    source:
      type: postgres
      dsn: "{dsn}"
      tables: ["public.items", "public.other"]
      slot: {slot}
      snapshot: {snapshot}
      {extra}
    sink:
      type: log
      path: {tmp_path / "log"}
""",
    )


def setup_tables(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, s text)")
        c.execute("CREATE TABLE other (k text PRIMARY KEY, n numeric(10,2))")
        c.execute(
            "INSERT INTO items SELECT g, g %% 1000, 'row ' || g FROM generate_series(1, %s) g",
            (rows,),
        )
        c.execute("INSERT INTO other VALUES ('a', 1.5), ('b', NULL)")
        c.execute("ANALYZE items")


class Tail:
    """Reads the log incrementally and applies events by key, as a consumer would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.state: dict[str, dict[Any, Any]] = {}
        self.ops: list[tuple[str, str]] = []
        self.flags: list[str] = []
        self.read_keys: list[tuple[str, Any]] = []
        self._reader: Any = None

    def poll(self) -> Tail:
        from cdc._jsonout import AvroDecoder

        if not self.path.exists():
            return self
        if self._reader is None:
            self._reader = LogReader(self.path)
            self._dec = AvroDecoder(self._reader.schemas.get)
        for r in self._reader.records(self.offset):
            self.offset = r.offset + 1
            if r.topic.endswith(".transaction") or r.value is None:
                continue
            v = self._dec.decode(r.value)
            table = v["source"]["table"]
            rows = self.state.setdefault(table, {})
            op = v["op"]
            self.ops.append((table, op))
            key = tuple(self._dec.decode(r.key).values()) if r.key else None
            if op == "r":
                self.flags.append(v["source"]["snapshot"])
                self.read_keys.append((table, key))
            if op in ("r", "c", "u"):
                rows[key] = v["after"]
            elif op == "d":
                rows.pop(key, None)
            elif op == "t":
                rows.clear()
        return self


def table_state(dsn: str) -> dict[str, dict[Any, Any]]:
    with psycopg.connect(dsn) as c:
        items = {
            (r[0],): {"id": r[0], "v": r[1], "s": r[2]}
            for r in c.execute("SELECT id, v, s FROM items").fetchall()
        }
        other = {(r[0],): r[1] for r in c.execute("SELECT k, n FROM other").fetchall()}
    return {"items": items, "other": other}


def _churn(dsn: str, stop: threading.Event, counter: list[int]) -> None:
    rnd = random.Random(11)
    next_id = ROWS + 1
    with psycopg.connect(dsn, autocommit=True) as c:
        while not stop.is_set():
            kind = rnd.random()
            if kind < 0.4:
                c.execute("INSERT INTO items VALUES (%s, %s, 'new')", (next_id, next_id % 7))
                next_id += 1
            elif kind < 0.8:
                c.execute(
                    "UPDATE items SET v = v + 1, s = 'updated' WHERE id = %s",
                    (rnd.randint(1, next_id),),
                )
            else:
                c.execute("DELETE FROM items WHERE id = %s", (rnd.randint(1, next_id),))
            counter[0] += 1


def converge(tmp_path: Path, dsn: str, tail: Tail) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO other VALUES ('sentinel', 0)")

    def caught_up() -> bool:
        return ("sentinel",) in tail.poll().state.get("other", {})

    wait_until(caught_up, 180, "the sentinel row in the log")
    expected = table_state(dsn)
    got_items = tail.state["items"]
    assert len(got_items) == len(expected["items"])
    assert got_items == expected["items"]
    got_other = {k: (v["n"] if v else None) for k, v in tail.state["other"].items()}
    assert got_other == expected["other"]


def test_snapshot_with_concurrent_writes_reproduces_the_table(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    setup_tables(pg_db, ROWS)
    d = daemon(config(tmp_path, pg_db)).start()
    stop = threading.Event()
    counter = [0]
    w = threading.Thread(target=_churn, args=(pg_db, stop, counter))
    w.start()
    tail = Tail(tmp_path / "log")
    try:
        wait_until(lambda: "snapshot public.items: done" in d.output(), 240, "snapshot done")
        wait_until(lambda: counter[0] > 200, 60, "some concurrent changes")
    finally:
        stop.set()
        w.join()
    converge(tmp_path, pg_db, tail)
    assert d.terminate() == 0
    ops = tail.ops
    n_r = sum(1 for _, op in ops if op == "r")
    # the writer started before the slot's snapshot, so rows it inserted early are read too
    assert n_r >= ROWS + 2
    assert len(set(tail.read_keys)) == n_r, "no row read twice"
    first_stream = next(i for i, (_, op) in enumerate(ops) if op != "r")
    assert all(op == "r" for _, op in ops[:first_stream]) and n_r == first_stream
    assert tail.flags[0] == "first" and tail.flags[-1] == "last"
    assert tail.flags.count("last_in_data_collection") == 1
    assert set(tail.flags[1:-1]) <= {"true", "first_in_data_collection", "last_in_data_collection"}
    assert counter[0] > 200


def _snapshot_records(path: Path) -> int:
    """Records in the log while its last durable position is still inside the snapshot."""
    if not path.exists():
        return 0
    info = LogReader(path).info()
    pos = info["last_position"]
    return int(info["records"]) if pos and "snapshot" in pos else 0


def test_kill_9_during_snapshot_then_restart_converges(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    setup_tables(pg_db, ROWS)
    cfg = config(tmp_path, pg_db, extra="snapshot_fetch_size: 2000")
    d = daemon(cfg).start()
    stop = threading.Event()
    counter = [0]
    w = threading.Thread(target=_churn, args=(pg_db, stop, counter))
    w.start()
    tail = Tail(tmp_path / "log")
    try:
        # the log's own index, not the (slower) decoding tail, decides when to kill: the
        # snapshot now outruns a consumer that decodes every record
        wait_until(lambda: _snapshot_records(tmp_path / "log") >= 40_000, 120, "40k rows written")
        d.kill()
        info = LogReader(tmp_path / "log").info()
        assert "snapshot" in info["last_position"], "killed in the middle of the snapshot"
        d = daemon(cfg).start()
        wait_until(lambda: "snapshot public.items: done" in d.output(), 240, "snapshot done")
        wait_until(lambda: counter[0] > 200, 60, "some concurrent changes")
    finally:
        stop.set()
        w.join()
    converge(tmp_path, pg_db, tail)
    assert "resuming after the last key written" in d.output()
    d.terminate()


def test_never_and_initial_only(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    setup_tables(pg_db, 10)
    d = daemon(config(tmp_path, pg_db, "initial_only")).start()
    assert d.proc is not None
    assert d.proc.wait(60) == 0, "initial_only stops by itself once the snapshot is complete"
    ops = [r["value"]["op"] for r in row_events(read_log(tmp_path / "log"))]
    assert ops == ["r"] * 12
    with psycopg.connect(pg_db) as c:
        slots = c.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
    # a second start does nothing more
    d2 = daemon(config(tmp_path, pg_db, "initial_only")).start()
    assert d2.proc is not None and d2.proc.wait(60) == 0
    assert len(row_events(read_log(tmp_path / "log"))) == 12
    assert slots is not None

    never = tmp_path / "never"
    never.mkdir()
    d3 = daemon(config(never, pg_db, "never")).start()
    wait_until(lambda: "streaming from slot" in d3.output(), 30, "streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO items VALUES (-5, 1, 'x')")
    wait_until(lambda: len(row_events(read_log(never / "log"))) == 1, 30, "one event")
    d3.terminate()
    assert [r["value"]["op"] for r in row_events(read_log(never / "log"))] == ["c"]


def test_lost_slot_is_reported_or_resnapshotted(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    setup_tables(pg_db, 5)
    cfg = config(tmp_path, pg_db)
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    d.terminate()
    slot = "s_" + pg_db.rsplit("dbname=", 1)[1]
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    d = daemon(cfg).start()
    assert d.proc is not None and d.proc.wait(60) == 1
    assert f"replication slot '{slot}' does not exist" in d.output()
    assert "snapshot: when_needed" in d.output()

    d = daemon(config(tmp_path, pg_db, "when_needed")).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming again")
    d.terminate()
    ops = [r["value"]["op"] for r in row_events(read_log(tmp_path / "log"))]
    assert ops == ["r"] * 7 * 2, "a second full snapshot after the lost position"


def test_the_source_reports_through_its_context_and_flags_its_snapshot_batches(
    pg_db: str,
) -> None:
    """Progress goes to the reporter the source was opened with (not to a board found by
    thread), and every snapshot batch but the last (whose position is where streaming
    starts) says it belongs to the snapshot."""
    from cdc.model import PipelineContext
    from cdc.sources.postgres import Config, open_source

    setup_tables(pg_db, 250)
    cfg = Config.model_validate(
        {
            "type": "postgres",
            "dsn": pg_db,
            "tables": ["public.items", "public.other"],
            "snapshot_fetch_size": 100,
        }
    )
    reporter = RecordingReporter()
    source = open_source(cfg, PipelineContext("rep", "rep", max_events=100, reporter=reporter))
    batches = []
    try:
        for batch in source.batches(None):
            batches.append(batch)
            flags = [e.source["snapshot"] for e in batch.events if hasattr(e, "source")]
            if "last" in flags:
                break
    finally:
        source.close()
    assert len(batches) > 2
    assert [b.snapshot for b in batches] == [True] * (len(batches) - 1) + [False]
    assert all("snapshot" in b.position for b in batches[:-1])
    assert list(batches[-1].position) == ["lsn"]
    final = {t: (done, total) for t, done, total in reporter.progress}
    assert final == {"public.items": (250, 250), "public.other": (2, 2)}


def test_kill_9_during_a_snapshot_read_in_key_ranges_resumes_each_range_exactly(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    """A large table is read by two connections in key ranges of the same exported snapshot;
    after kill -9 each range resumes after its own last key: every row once, none missing."""
    from cdc.sources.postgres._snapshot_read import SPLIT_MIN_ROWS

    rows = SPLIT_MIN_ROWS + 10_000
    setup_tables(pg_db, rows)
    cfg = config(tmp_path, pg_db, extra="snapshot_fetch_size: 1000\n      snapshot_parallelism: 2")
    log = tmp_path / "log"
    d = daemon(cfg).start()
    # The compiled reader snapshots ~100k rows/s: kill as soon as the first batch is durable
    # (polled every 5 ms, not by wait_until's growing intervals), with most rows still to read.
    deadline = time.monotonic() + 120
    while _snapshot_records(log) < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    d.kill()
    pos = LogReader(log).info()["last_position"]
    assert "snapshot" in pos, "killed in the middle of the snapshot"
    assert len(pos["snapshot"]["ranges"]["public.items"]) == 2, pos
    d = daemon(cfg).start()
    wait_until(lambda: "snapshot public.items: done" in d.output(), 240, "snapshot done")
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    assert d.terminate() == 0, d.output()
    assert "resuming after the last key written" in d.output()
    assert "in 2 key ranges of id" in d.output()
    reads = [r for r in row_events(read_log(log)) if r["value"]["op"] == "r"]
    items = [r for r in reads if r["value"]["source"]["table"] == "items"]
    keys = [r["key"]["id"] for r in items]
    assert len(keys) == rows and sorted(keys) == list(range(1, rows + 1)), "each row once"
    assert len({r["event_id"] for r in reads}) == len(reads) == rows + 2
    assert all(r["value"]["after"]["s"] == f"row {r['key']['id']}" for r in items)
    flags = [r["value"]["source"]["snapshot"] for r in reads]
    assert flags[0] == "first" and flags.count("first") == 1
    assert flags[-1] == "last" and flags.count("last") == 1
    # the table's last row written is marked, "last" instead when it is the snapshot's last
    item_flags = [r["value"]["source"]["snapshot"] for r in items]
    assert item_flags.count("last_in_data_collection") + item_flags.count("last") == 1
