"""Incremental snapshots beside the stream on a real Postgres (issue 16), run as a user runs them:
a table added to a running pipeline is backfilled while a writer changes it (and across kill -9),
Debezium's signal table, and ``cdc snapshot``.

What a user checks: replaying the log by key gives the table; per key the events never go back
to an older row state (each row carries a version the writer only increments, and a deleted row
never comes back); into the log nothing twice (event ids are unique)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, scaled, wait_until
from tests.logtools import postgres_items_config, read_log, row_events

pytestmark = pytest.mark.integration


def name_of(dsn: str) -> str:
    return "inc_" + dsn.rsplit("dbname=", 1)[1]


def fill(dsn: str, rows: int) -> None:
    """items (captured from the start) and big (``rows`` rows, version 1), keys 1..rows."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        c.execute("CREATE TABLE big (id int PRIMARY KEY, version int NOT NULL, payload text)")
        c.execute(
            "INSERT INTO big SELECT g, 1, md5(g::text) FROM generate_series(1, %s) g", (rows,)
        )


def config(tmp_path: Path, dsn: str, tables: str, *extra: str) -> Path:
    """The pipeline's config (rewritten in place): ``tables``, and ``extra`` source fields."""
    fields = "\n      ".join(extra)
    return postgres_items_config(tmp_path / "cdc.yaml", name_of(dsn), dsn, fields, tables)


def topic(dsn: str, table: str) -> str:
    return f"{name_of(dsn)}.public.{table}"


class Writer(threading.Thread):
    """Inserts (new keys only), updates (version + 1) and deletes rows of big, one change per
    transaction, about ``rate`` transactions a second, until stopped."""

    def __init__(self, dsn: str, first_new: int, rate: int = 500) -> None:
        super().__init__(daemon=True)
        self.dsn, self.next_id, self.rate = dsn, first_new, rate
        self.done = threading.Event()
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rnd = random.Random(16)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                start = time.monotonic()
                while not self.done.is_set():
                    k = rnd.randrange(1, self.next_id)
                    p = rnd.random()
                    if p < 0.6:
                        c.execute("UPDATE big SET version = version + 1 WHERE id = %s", (k,))
                    elif p < 0.8:
                        c.execute("INSERT INTO big VALUES (%s, 1, 'new')", (self.next_id,))
                        self.next_id += 1
                    else:
                        c.execute("DELETE FROM big WHERE id = %s", (k,))
                    self.count += 1
                    ahead = self.count / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
        except BaseException as e:  # reported by stop()
            self.error = e

    def stop(self) -> None:
        self.done.set()
        self.join(30)
        assert self.error is None, self.error


def caught_up(dsn: str, log: Path, mark: int) -> None:
    """Wait until a marker row inserted into items now is in the log: all before it is too."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO items VALUES (%s, 'mark')", (mark,))
    wait_until(
        lambda: any(
            r["topic"] == topic(dsn, "items") and (r["value"]["after"] or {}).get("id") == mark
            for r in row_events(read_log(log))
        ),
        120,
        "the marker row in the log",
    )


def check_big(dsn: str, log: Path) -> dict[str, int]:
    """Replay big's events by key: equal to the table, versions never decrease per key, no key
    back after its delete, no event twice. Returns the counts per op."""
    records = read_log(log)
    ids = [r["event_id"] for r in records]
    assert len(ids) == len(set(ids)), "an event is in the log twice"
    state: dict[int, dict[str, Any]] = {}
    seen: dict[int, int] = {}  # key -> the newest version seen
    deleted: set[int] = set()
    ops: dict[str, int] = {}
    events = [r for r in row_events(records) if r["topic"] == topic(dsn, "big")]
    for r in events:
        v = r["value"]
        ops[v["op"]] = ops.get(v["op"], 0) + 1
        if v["op"] == "d":
            key = v["before"]["id"]
            state.pop(key, None)
            deleted.add(key)
            continue
        row = v["after"]
        key = row["id"]
        assert key not in deleted, f"key {key}: an event after its delete: {v}"
        assert row["version"] >= seen.get(key, 0), f"key {key} went back: {v}"
        seen[key] = row["version"]
        state[key] = row
        if v["op"] == "r":
            assert v["source"]["snapshot"] == "incremental"
    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT id, version, payload FROM big ORDER BY id").fetchall()
    table = {i: {"id": i, "version": ver, "payload": p} for i, ver, p in rows}
    diff = sorted(k for k in state.keys() | table.keys() if state.get(k) != table.get(k))
    history = {
        k: [(r["value"]["op"], r["value"]["source"]["lsn"], r["value"]["after"]) for r in mine]
        for k in diff[:5]
        for mine in [[r for r in events if r["key"]["id"] == k]]
    }
    assert not diff, f"{len(diff)} keys differ; replayed, table, events: " + "; ".join(
        f"{k}: {state.get(k)}, {table.get(k)}, {history[k]}" for k in diff[:5]
    )
    return ops


def backfill_while_writing(
    tmp_path: Path, dsn: str, daemon: Any, kills: int
) -> tuple[dict[str, int], float]:
    rows = scaled(200_000, 20_000)
    fill(dsn, rows)
    cfg = config(tmp_path, dsn, "[public.items]")
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    assert d.terminate() == 0, d.output()
    # big joins the pipeline's tables while the daemon is down, and is written to from now on.
    # The default chunks (1024 rows) catch the most changes inside a window (the case the window
    # is for: about the writer's rate x one chunk's read time x the chunk size); with kills,
    # 2000 small windows keep the backfill running across every kill.
    small_chunks = [f"incremental_chunk_size: {rows // 2000}"] if kills else []
    config(tmp_path, dsn, "[public.items, public.big]", *small_chunks)
    writer = Writer(dsn, rows + 1)
    writer.start()
    started = time.monotonic()
    runs = [daemon(cfg).start()]

    def said(text: str) -> bool:
        return any(text in r.output() for r in runs)

    wait_until(lambda: said("backfilling while streaming"), 60, "the backfill logged")
    log = cfg.parent / "log"

    def reads() -> int:
        return sum(1 for r in row_events(read_log(log)) if r["value"]["op"] == "r")

    for i in range(kills):
        # kill -9 once the backfill has moved past what the previous run left
        floor = reads()
        wait_until(lambda floor=floor: reads() > floor, 120, f"progress before kill {i}")
        runs[-1].kill()
        assert not said("finished"), f"the backfill finished before kill {i}"
        runs.append(daemon(cfg).start())
    d = runs[-1]
    wait_until(lambda: said("finished"), 900, "the backfill to finish")
    elapsed = time.monotonic() - started
    writer.stop()
    caught_up(dsn, log, 10**9)
    ops = check_big(dsn, log)
    assert d.terminate() == 0, d.output()
    print(f"\nbackfill of {rows:,} rows, {writer.count:,} writes: {elapsed:.1f}s, ops {ops}")
    return ops, elapsed


@pytest.mark.scale
def test_a_table_added_later_is_backfilled_while_it_is_written(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    ops, _ = backfill_while_writing(tmp_path, pg_db, daemon, kills=0)
    assert ops.get("r", 0) > 0 and ops.get("u", 0) > 0 and ops.get("d", 0) > 0


@pytest.mark.scale
def test_the_backfill_survives_kill_9_three_times(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    ops, _ = backfill_while_writing(tmp_path, pg_db, daemon, kills=3)
    assert ops.get("r", 0) > 0


def signal(dsn: str, sid: str, kind: str, data: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO debezium_signal VALUES (%s, %s, %s)", (sid, kind, data))


def test_signal_table_snapshots_the_matching_rows_and_stop_snapshot_stops(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    fill(pg_db, 3000)
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE debezium_signal (id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL,"
            " data varchar(2048))"
        )
    cfg = config(
        tmp_path,
        pg_db,
        "[public.items, public.big]",
        "snapshot: never",
        "signal_table: public.debezium_signal",
        "incremental_chunk_size: 100",
    )
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    log = cfg.parent / "log"
    signal(
        pg_db,
        "ad-hoc-1",
        "execute-snapshot",
        '{"data-collections": ["public.big"], "type": "incremental", '
        '"additional-conditions": [{"data-collection": "public.big", "filter": "id % 7 = 0"}]}',
    )
    wait_until(lambda: "ad-hoc-1: finished" in d.output(), 120, "the snapshot to finish")
    caught_up(pg_db, log, 1)
    reads = [r for r in row_events(read_log(log)) if r["value"]["op"] == "r"]
    assert sorted(r["key"]["id"] for r in reads) == list(range(7, 3001, 7))
    assert {r["topic"] for r in reads} == {topic(pg_db, "big")}
    assert all(r["value"]["source"]["snapshot"] == "incremental" for r in reads)

    # a request and its stop in one transaction: the stop comes before a second chunk
    with psycopg.connect(pg_db) as c:
        for sid, kind, data in [
            ("ad-hoc-2", "execute-snapshot", '{"data-collections": ["public.big"]}'),
            ("stop-2", "stop-snapshot", '{"data-collections": ["public.big"]}'),
        ]:
            c.execute("INSERT INTO debezium_signal VALUES (%s, %s, %s)", (sid, kind, data))
    wait_until(lambda: "stopped for public.big" in d.output(), 60, "the stop logged")
    caught_up(pg_db, log, 2)
    records = row_events(read_log(log))
    second = [r for r in records if r["value"]["op"] == "r"][len(reads) :]
    assert len(second) <= 100  # at most the chunk in flight when the stop came
    assert not any(r["topic"].endswith("debezium_signal") for r in read_log(log))
    assert d.terminate() == 0, d.output()


def cdc_snapshot(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cdc_cmd("snapshot", cfg, *args)


def cdc_cmd(command: str, cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc", command, "-c", str(cfg), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
        timeout=60,
    )


def test_cdc_snapshot_refuses_clearly_and_reads_a_range(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    fill(pg_db, 500)
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE nokey (x int)")
    cfg = config(tmp_path, pg_db, "[public.items, public.big, public.nokey]", "snapshot: never")
    name = name_of(pg_db)

    down = cdc_snapshot(cfg, name, "public.big")
    assert down.returncode == 1, down.stderr
    assert f"error: pipeline {name}: the daemon is not running with {cfg}" in down.stderr
    assert "nothing was sent" in down.stderr

    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    wait_until(lambda: cfg.with_name("cdc.status.json").exists(), 30, "the status file")

    other = cdc_snapshot(cfg, name, "public.other")
    assert other.returncode == 2, other.stderr
    assert f"error: table 'public.other' is not captured by pipeline '{name}'" in other.stderr

    bad = cdc_snapshot(cfg, name, "public.big", "--where", "no_such_column > 3")
    assert bad.returncode == 1, bad.stderr
    assert "error: the condition 'no_such_column > 3' is rejected by the server" in bad.stderr
    assert 'column "no_such_column" does not exist' in bad.stderr

    nokey = cdc_snapshot(cfg, name, "public.nokey")
    assert nokey.returncode == 1, nokey.stderr
    assert "public.nokey has no primary key" in nokey.stderr

    # any database user may write a logical message: one not signed by cdc snapshot is refused
    data = json.dumps({"data-collections": ["public.big"]})
    forged = json.dumps({"id": "forged", "type": "execute-snapshot", "data": data})
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(
            "SELECT pg_logical_emit_message(false, %s, %s)",
            (f"cdc.incremental.cdc_{name}", forged),
        )
    wait_until(
        lambda: (
            "snapshot request 'forged' (execute-snapshot) in a logical message not "
            "signed with this pipeline's configuration: ignored" in d.output()
        ),
        30,
        "refused",
    )

    ok = cdc_snapshot(cfg, name, "public.big", "--where", "id BETWEEN 100 AND 149")
    assert ok.returncode == 0, ok.stderr
    assert "requested" in ok.stdout
    wait_until(lambda: ": finished" in d.output(), 60, "the snapshot to finish")
    caught_up(pg_db, cfg.parent / "log", 10**6)  # the rows logged as read are in the log too
    reads = [r for r in row_events(read_log(cfg.parent / "log")) if r["value"]["op"] == "r"]
    assert sorted(r["key"]["id"] for r in reads) == list(range(100, 150))

    def shown() -> dict[str, Any]:  # what cdc status shows of the pipeline
        out = cdc_cmd("status", cfg, "--json")
        doc = json.loads(out.stdout) if out.stdout.strip() else {}
        return next((p for p in doc.get("pipelines", []) if p["name"] == name), {})

    # progress as for the initial snapshot (the rows done), while the pipeline streams
    wait_until(lambda: shown().get("snapshot", {}).get("public.big", {}).get("done") == 50, 30)
    assert shown()["state"] == "streaming"
    assert d.terminate() == 0, d.output()


def test_a_transaction_committing_right_after_a_watermark_is_delivered(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    # The source resumes past each of its messages (a restart must not read a request again).
    # The server reports a message's LSN as the END of its record, where the next record (here
    # the commit record of the transaction that wrote the message) starts: resuming one byte
    # further skipped that transaction.
    fill(pg_db, 0)
    cfg = config(tmp_path, pg_db, "[public.items]")
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    stale = '{"id": "stale", "type": "snapshot-window-open", "data": null}'
    with psycopg.connect(pg_db) as c:
        c.execute("INSERT INTO items VALUES (1, 'right after the message')")
        c.execute(
            "SELECT pg_logical_emit_message(false, %s, %s)",
            (f"cdc.incremental.cdc_{name_of(pg_db)}", stale),
        )
    caught_up(pg_db, cfg.parent / "log", 2)
    ids = [r["key"]["id"] for r in row_events(read_log(cfg.parent / "log"))]
    assert ids == [1, 2]
    assert d.terminate() == 0, d.output()


def test_a_missing_signal_table_is_named_with_how_to_create_it(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    fill(pg_db, 0)
    cfg = config(tmp_path, pg_db, "[public.items]", "signal_table: public.nosuch")
    d = daemon(cfg).start()
    wait_until(
        lambda: (
            "signal table public.nosuch (source.signal_table) does not exist: create it with "
            "CREATE TABLE public.nosuch (id varchar(64) PRIMARY KEY" in d.output()
        ),
        60,
        "the error",
    )
    d.terminate()


def test_a_long_transaction_is_waited_for_once_not_per_chunk(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    fill(pg_db, 1000)
    cfg = config(
        tmp_path,
        pg_db,
        "[public.items, public.big]",
        "snapshot: never",
        "incremental_chunk_size: 100",
    )
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    wait_until(lambda: cfg.with_name("cdc.status.json").exists(), 30, "the status file")
    with psycopg.connect(pg_db) as long:
        long.execute("UPDATE items SET note = 'held' WHERE id = 0")  # takes an xid
        long.execute("SELECT pg_current_xact_id()")
        ok = cdc_snapshot(cfg, name_of(pg_db), "public.big")
        assert ok.returncode == 0, ok.stderr
        wait_until(lambda: ": finished" in d.output(), 120, "the snapshot to finish")
    caught_up(pg_db, cfg.parent / "log", 10**6)  # the rows logged as read are in the log too
    assert d.output().count("still run 1s after a low watermark") == 1
    reads = [r for r in row_events(read_log(cfg.parent / "log")) if r["value"]["op"] == "r"]
    assert sorted(r["key"]["id"] for r in reads) == list(range(1, 1001))
    assert d.terminate() == 0, d.output()
