"""Snapshots while streaming on MariaDB and MySQL (issue 16): a table added to a running
pipeline is backfilled beside the stream (also across kill -9), Debezium's signal table asks
for and stops snapshots, and bad requests get clear errors.

What a user checks: replaying the log by key gives the table as SELECT shows it, and per key
the events never go back to an older row state (each row carries a version the writer bumps).
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import scaled, wait_until
from tests.integration.mysql.conftest import connect, read_log, seq, write_config
from tests.logtools import row_events

pytestmark = pytest.mark.integration

SIGNAL_DDL = "CREATE TABLE {} (id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data TEXT)"


def _signal(cur: Any, table: str, id: str, kind: str, data: dict[str, Any]) -> None:
    cur.execute(
        f"INSERT INTO {table} (id, type, data) VALUES (%s, %s, %s)", (id, kind, json.dumps(data))
    )


def _position(log_dir: Path) -> dict[str, Any]:
    from cdc.sinks.log import LogReader

    if not log_dir.exists():
        return {}
    return LogReader(log_dir).info()["last_position"] or {}


def _snapshot_reads(log_dir: Path, topic: str) -> int:
    """Records of ``topic`` that a snapshot wrote, initial or incremental (event ids "s:...")."""
    from cdc.sinks.log import LogReader

    if not log_dir.exists():
        return 0
    return sum(1 for r in LogReader(log_dir).records(0, topic) if r.event_id.startswith("s:"))


def _backfilled(log_dir: Path) -> int:
    """Rows the running incremental snapshot wrote of its table, as the position says."""
    return int((_position(log_dir).get("incremental") or {}).get("rows", 0))


def _backfill_done(log_dir: Path, db: str) -> bool:
    return f"{db}.big" in (_position(log_dir).get("incremental") or {}).get("snapshotted", [])


def _idle(log_dir: Path) -> bool:
    """No incremental snapshot queued or running in the durable position."""
    return not (_position(log_dir).get("incremental") or {}).get("queue")


def _marker(cur: Any, db: str, log_dir: Path, n: int) -> None:
    """Insert row ``n`` into ``db.other`` and wait for it in the log: everything committed
    before it is in the log too."""
    cur.execute(f"INSERT INTO {db}.other VALUES ({n})")
    topic = f"mysqltest.{db}.other"

    def seen() -> bool:
        return any(
            r["value"] and (r["value"]["after"] or {}).get("id") == n
            for r in read_log(log_dir, topic)
        )

    wait_until(seen, 60, f"marker {n} in the log")


def test_signal_table_execute_with_conditions_and_stop_before_and_during(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    cur.execute(f"INSERT INTO t SELECT seq, CONCAT('v', seq) FROM {seq(server, 100)}")
    cur.execute("CREATE TABLE u (id INT PRIMARY KEY)")
    cur.execute(f"INSERT INTO u SELECT seq FROM {seq(server, 50)}")
    cur.execute("CREATE TABLE w (id INT PRIMARY KEY)")
    cur.execute(f"INSERT INTO w SELECT seq FROM {seq(server, 700)}")
    cur.execute("CREATE TABLE other (id INT PRIMARY KEY)")
    cur.execute(SIGNAL_DDL.format("sig"))
    log_dir = tmp_path / "log"
    cfg = write_config(
        tmp_path / "c.yaml",
        server,
        [f"{db}.*"],  # the signal table matches too: its rows are never events
        log_dir,
        snapshot="never",
        incremental_chunk_size=7,
        signal_table=f"{db}.sig",
    )
    p = run_pipeline(cfg)
    wait_until(lambda: _position(log_dir), 60, "the first position")
    # (1) only the rows the condition selects, in key order, as op r / snapshot incremental
    _signal(
        cur,
        "sig",
        "ad-hoc-1",
        "execute-snapshot",
        {
            "data-collections": [f"{db}.t"],
            "type": "incremental",
            "additional-conditions": [{"data-collection": f"{db}.t", "filter": "id % 10 = 0"}],
        },
    )
    wait_until(lambda: _snapshot_reads(log_dir, f"mysqltest.{db}.t") == 10, 60, "10 reads")
    # (2) execute then stop, committed before the source reads either: the stop comes before
    # the first window's watermarks in the binlog, so nothing of u is read
    p.stop()
    _signal(cur, "sig", "ad-hoc-2", "execute-snapshot", {"data-collections": [f"{db}.u"]})
    _signal(cur, "sig", "stop-2", "stop-snapshot", {"data-collections": [f"{db}.u"]})
    p = run_pipeline(cfg)
    _marker(cur, db, log_dir, 1)
    assert _idle(log_dir)
    # (3) stop a snapshot under way (100 windows of 7 rows): while the test holds this lock the
    # source's next watermark waits, so the stop lands in the binlog before it
    _signal(cur, "sig", "ad-hoc-3", "execute-snapshot", {"data-collections": [f"{db}.w"]})
    topic_w = f"mysqltest.{db}.w"
    wait_until(lambda: _snapshot_reads(log_dir, topic_w) >= 14, 60, "two chunks of w")
    cur.execute("LOCK TABLES sig WRITE")
    _signal(cur, "sig", "stop-3", "stop-snapshot", {"data-collections": [f"{db}.w"]})
    cur.execute("UNLOCK TABLES")
    _marker(cur, db, log_dir, 2)  # committed after the stop: its position holds the stop too
    assert _idle(log_dir)
    p.stop()

    records = row_events(read_log(log_dir))
    stopped = [r["key"]["id"] for r in records if r["topic"] == topic_w]
    assert 14 <= len(stopped) < 700 and len(stopped) % 7 == 0, len(stopped)
    assert stopped == list(range(1, len(stopped) + 1))  # whole chunks, in key order
    reads = [r for r in records if r["value"]["op"] == "r" and r["topic"] != topic_w]
    assert [r["key"]["id"] for r in reads] == list(range(10, 101, 10))
    assert {r["topic"] for r in reads} == {f"mysqltest.{db}.t"}
    for r in reads:
        v = r["value"]
        assert v["source"]["snapshot"] == "incremental"
        assert v["after"] == {"id": v["after"]["id"], "v": f"v{v['after']['id']}"}
        assert v["before"] is None
    assert not any(r["topic"].endswith(".sig") for r in records), "signal rows were emitted"
    snapshotted = [f"{db}.other", f"{db}.t", f"{db}.u", f"{db}.w"]  # snapshot: never counts all
    assert _position(log_dir)["incremental"]["snapshotted"] == snapshotted


def _replay(log_dir: Path, topic: str) -> tuple[dict[int, tuple[Any, ...]], list[str]]:
    """The table the log's events of ``topic`` rebuild, by key; and every way an event went
    back to an older row state (a version lower than the key's last, an event after a delete:
    no row is inserted again under a deleted key), or read a key twice."""
    table: dict[int, tuple[Any, ...]] = {}
    last: dict[int, int] = {}
    deleted: set[int] = set()
    read: set[int] = set()
    wrong: list[str] = []
    for r in row_events(read_log(log_dir, topic)):
        v = r["value"]
        key = r["key"]["id"]
        if key in deleted:
            wrong.append(f"{v['op']} of {key} after its delete")
        if v["op"] == "d":
            table.pop(key, None)
            deleted.add(key)
            continue
        a = v["after"]
        if a["version"] < last.get(key, -1):
            wrong.append(f"{v['op']} of {key} at version {a['version']} after {last[key]}")
        if v["op"] == "r":
            if key in read:
                wrong.append(f"{key} read twice")
            read.add(key)
        last[key] = a["version"]
        table[key] = (a["id"], a["version"], a["pad"])
    return table, wrong


def _backfill_under_writes(
    server: Any, db: str, tmp_path: Path, daemon: Any, kills: int
) -> dict[str, Any]:
    """A table of ``scaled(200_000, 20_000)`` rows added to a running pipeline while a writer
    updates, deletes and inserts in it (~500 transactions/s); the daemon killed ``kills`` times
    (kill -9) during the backfill. Checks the replayed log against SELECT."""
    rows = scaled(200_000, 20_000)
    cur = connect(server, db).cursor()
    cur.execute(
        "CREATE TABLE big (id INT PRIMARY KEY, version INT NOT NULL, pad VARCHAR(40) NOT NULL)"
    )
    cur.execute(f"INSERT INTO big SELECT seq, 0, REPEAT('x', 40) FROM {seq(server, rows)}")
    cur.execute("CREATE TABLE other (id INT PRIMARY KEY)")
    cur.execute(SIGNAL_DDL.format("sig"))
    log_dir = tmp_path / "log"
    cfg_path = write_config(
        tmp_path / "c.yaml",
        server,
        [f"{db}.other"],
        log_dir,
        # many small windows when killed: three kills land inside the backfill
        incremental_chunk_size=rows // (1000 if kills else 20),
        signal_table=f"{db}.sig",
    )
    d = daemon(cfg_path).start()
    wait_until(lambda: _position(log_dir), 60, "the first position")

    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0]

    def write() -> None:
        rnd = random.Random(16)
        next_id = rows
        next_at = time.monotonic()
        try:
            w = connect(server, db)
            wc = w.cursor()
            while not stop.is_set():
                k = rnd.randint(1, rows)
                op = rnd.random()
                if op < 0.6:
                    wc.execute(
                        "UPDATE big SET version = version + 1, pad = %s WHERE id = %s",
                        (f"u{done[0]}", k),
                    )
                elif op < 0.8:
                    wc.execute("DELETE FROM big WHERE id = %s", (k,))
                else:
                    next_id += 1
                    wc.execute("INSERT INTO big VALUES (%s, 0, 'i')", (next_id,))
                done[0] += 1
                # 500 transactions a second, on a schedule (never a burst to catch up)
                next_at = max(next_at + 1 / 500, time.monotonic() - 0.1)
                stop.wait(max(0.0, next_at - time.monotonic()))
            w.close()
        except BaseException as e:  # reported below
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    topic = f"mysqltest.{db}.big"
    try:
        wait_until(lambda: done[0] >= 200, 30, "the writer to get going")
        # the table enters the pipeline: config edited, daemon restarted
        assert d.terminate() == 0, d.output()
        writes_before = done[0]
        config = yaml.safe_load(cfg_path.read_text())
        config["pipelines"][0]["source"]["tables"].append(f"{db}.big")
        cfg_path.write_text(yaml.safe_dump(config))
        d = daemon(cfg_path).start()
        began = time.monotonic()
        wait_until(lambda: "backfilling while streaming" in d.output(), 60, "the backfill")
        lock = connect(server, db).cursor()
        progress = 0
        for _ in range(kills):

            def advanced(was: int = progress) -> int:
                # While this lock is held the daemon's next watermark waits for it: the
                # progress holds still, and the kill comes between windows or inside one.
                lock.execute("LOCK TABLES sig WRITE")
                assert not _backfill_done(log_dir, db), "it ended before the kill: nothing tested"
                now = _backfilled(log_dir)
                if now > was and not _idle(log_dir):
                    return now
                lock.execute("UNLOCK TABLES")
                return 0

            progress = wait_until(advanced, 120, "the backfill to move on")
            d.kill()
            lock.execute("UNLOCK TABLES")
            d = daemon(cfg_path).start()
        wait_until(lambda: _backfill_done(log_dir, db), 600, "the end of the backfill")
        seconds = time.monotonic() - began  # reported, never asserted
        writes_during = done[0] - writes_before
        after = done[0]
        wait_until(lambda: done[0] >= after + 200, 30, "writes after the backfill")
    finally:
        stop.set()
        writer.join(60)
    assert not errors, errors
    _marker(cur, db, log_dir, 1)
    assert d.terminate() == 0, d.output()

    cur.execute("SELECT id, version, pad FROM big")
    expected = {row[0]: tuple(row) for row in cur.fetchall()}
    got, wrong = _replay(log_dir, topic)
    assert not wrong, wrong[:10]
    assert got == expected
    return {
        "rows": rows,
        "backfill_s (restart to done, with the kills)": round(seconds, 1),
        "writes_during_backfill": writes_during,
        "writes_per_s_during_backfill": round(writes_during / seconds),
        "writes": done[0],
        "reads": _snapshot_reads(log_dir, topic),
    }


@pytest.mark.scale
def test_a_table_added_later_is_backfilled_under_writes(
    server: Any, mysql_db: str, tmp_path: Path, daemon: Any
) -> None:
    figures = _backfill_under_writes(server, mysql_db, tmp_path, daemon, kills=0)
    print(f"backfill under writes: {figures}")


@pytest.mark.scale
@pytest.mark.parametrize("server", ["mariadb"], indirect=True)
def test_a_backfill_survives_kill_9_three_times(
    server: Any, mysql_db: str, tmp_path: Path, daemon: Any
) -> None:
    figures = _backfill_under_writes(server, mysql_db, tmp_path, daemon, kills=3)
    print(f"backfill under writes, killed 3 times: {figures}")


def test_bad_requests_are_refused_with_clear_errors_and_streaming_goes_on(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any, caplog: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE nokey (x INT)")
    cur.execute("INSERT INTO nokey VALUES (1), (2)")
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    cur.execute("INSERT INTO t VALUES (1), (2), (3)")
    cur.execute("CREATE TABLE other (id INT PRIMARY KEY)")
    cur.execute(SIGNAL_DDL.format("sig"))
    log_dir = tmp_path / "log"
    cfg = write_config(
        tmp_path / "c.yaml",
        server,
        [f"{db}.nokey", f"{db}.t", f"{db}.other"],
        log_dir,
        snapshot="never",
        signal_table=f"{db}.sig",
    )
    p = run_pipeline(cfg)
    wait_until(lambda: _position(log_dir), 60, "the first position")
    bad_condition = {"data-collection": f"{db}.t", "filter": "no_such_column > 1"}
    signals = [
        ("s1", {"data-collections": [f"{db}.nokey"]}),
        ("s2", {"data-collections": [f"{db}.t"], "additional-conditions": [bad_condition]}),
        ("s3", {"data-collections": [f"{db}.not_captured"]}),
        ("s4", {"data-collections": [f"{db}.t"], "type": "blocking"}),
    ]
    for id, data in signals:
        _signal(cur, "sig", id, "execute-snapshot", data)
    cur.execute("INSERT INTO sig VALUES ('s5', 'execute-snapshot', 'not json')")
    _marker(cur, db, log_dir, 1)
    wait_until(lambda: _idle(log_dir), 30, "the refused requests to leave the queue")
    _marker(cur, db, log_dir, 2)
    p.stop()
    assert not [r for r in row_events(read_log(log_dir)) if r["value"]["op"] == "r"]
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert f"table {db}.nokey has no primary key" in errors, errors
    assert f"the server rejects the chunk query on {db}.t WHERE no_such_column > 1" in errors
    assert "Unknown column 'no_such_column'" in errors
    assert f"{db}.not_captured not captured by this pipeline" in errors
    assert "snapshot type 'blocking' is not supported" in errors
    assert "signal 's5' (execute-snapshot): data is not JSON" in errors


def test_a_missing_or_read_only_signal_table_is_refused(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    from cdc.config import load
    from cdc.sources.mysql import check_source

    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    log_dir = tmp_path / "log"
    cfg = write_config(
        tmp_path / "c.yaml",
        server,
        [f"{db}.t"],
        log_dir,
        snapshot="never",
        signal_table=f"{db}.sig",
    )
    p = run_pipeline(cfg)
    wait_until(lambda: not p.thread.is_alive(), 60, "the pipeline to stop")
    assert f"signal table {db}.sig (source.signal_table) does not exist" in str(p.error)
    assert "CREATE TABLE `" in str(p.error)

    cur.execute(SIGNAL_DDL.format("sig"))
    user = f"ro_{db}"
    cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
    try:
        cur.execute(f"GRANT SELECT ON `{db}`.* TO '{user}'@'%'")
        pipeline = load(write_config(tmp_path / "ro.yaml", server, [f"{db}.t"], log_dir)).pipelines[
            0
        ]
        source = pipeline.source.model_copy(
            update={"user": user, "password": "pw", "signal_table": f"{db}.sig"}
        )
        problems = [str(problem) for problem in check_source(source, pipeline)]
        assert any(
            f"the user '{user}' cannot insert into the signal table {db}.sig" in text
            and f"GRANT INSERT ON `{db}`.`sig`" in text
            for text in problems
        ), problems
        cur.execute("SELECT COUNT(*) FROM sig")
        assert cur.fetchone()[0] == 0  # the check left nothing behind
    finally:
        cur.execute(f"DROP USER '{user}'@'%'")


@pytest.mark.parametrize("server", ["mariadb"], indirect=True)  # the same checks run on MySQL
def test_cdc_snapshot_checks_before_sending_and_reads_a_range(
    server: Any, mysql_db: str, tmp_path: Path, daemon: Any
) -> None:
    from tests.integration.test_postgres_incremental import cdc_snapshot

    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    cur.execute(f"INSERT INTO t SELECT seq, seq FROM {seq(server, 300)}")
    cur.execute("CREATE TABLE nokey (x INT)")
    cur.execute("CREATE TABLE other (id INT PRIMARY KEY)")
    cur.execute(SIGNAL_DDL.format("sig"))
    log_dir = tmp_path / "log"
    tables = [f"{db}.t", f"{db}.nokey", f"{db}.other"]
    cfg = write_config(tmp_path / "c.yaml", server, tables, log_dir, snapshot="never")

    d = daemon(cfg).start()
    wait_until(lambda: _position(log_dir), 60, "the first position")
    wait_until(lambda: cfg.with_name("c.status.json").exists(), 30, "the status file")
    no_signal_table = cdc_snapshot(cfg, "mysqltest", f"{db}.t")
    assert no_signal_table.returncode == 2, no_signal_table.stderr
    assert "set source.signal_table" in no_signal_table.stderr
    assert d.terminate() == 0, d.output()

    cfg = write_config(cfg, server, tables, log_dir, snapshot="never", signal_table=f"{db}.sig")
    down = cdc_snapshot(cfg, "mysqltest", f"{db}.t")
    assert down.returncode == 1, down.stderr
    assert "the daemon is not running" in down.stderr and "nothing was sent" in down.stderr

    d = daemon(cfg).start()
    wait_until(lambda: "streaming the binlog" in d.output(), 60, "streaming")
    wait_until(lambda: cdc_snapshot(cfg, "mysqltest", f"{db}.sig").returncode == 2, 30, "running")
    other = cdc_snapshot(cfg, "mysqltest", f"{db}.sig")
    assert other.returncode == 2, other.stderr
    assert f"error: table '{db}.sig' is not captured by pipeline 'mysqltest'" in other.stderr

    bad = cdc_snapshot(cfg, "mysqltest", f"{db}.t", "--where", "no_such_column > 3")
    assert bad.returncode == 1, bad.stderr
    assert f"the server rejects the chunk query on {db}.t WHERE no_such_column > 3" in bad.stderr
    assert "Unknown column 'no_such_column'" in bad.stderr and "nothing was sent" in bad.stderr

    nokey = cdc_snapshot(cfg, "mysqltest", f"{db}.nokey")
    assert nokey.returncode == 1, nokey.stderr
    assert f"table {db}.nokey has no primary key" in nokey.stderr
    cur.execute("SELECT COUNT(*) FROM sig")
    assert cur.fetchone()[0] == 0, "a refused request was sent"

    ok = cdc_snapshot(cfg, "mysqltest", f"{db}.t", "--where", "id BETWEEN 100 AND 149")
    assert ok.returncode == 0, ok.stderr
    assert "requested" in ok.stdout
    wait_until(lambda: ": finished" in d.output(), 60, "the snapshot to finish")
    assert d.terminate() == 0, d.output()
    reads = [r for r in row_events(read_log(log_dir)) if r["value"]["op"] == "r"]
    assert [r["key"]["id"] for r in reads] == list(range(100, 150))


TYPED = (
    "CREATE TABLE ty (id INT PRIMARY KEY, d DECIMAL(20,6), f FLOAT, g DOUBLE, dt DATETIME(6), "
    "ts TIMESTAMP(6) NULL, dd DATE, tm TIME(3), y YEAR, e ENUM('a','b'), st SET('x','y'), "
    "b BIT(5), bn BINARY(4), vb VARBINARY(10), j JSON, tx TEXT, u BIGINT UNSIGNED)"
)
TYPED_ROWS = [
    "(1, 12345678901234.123456, 1.5, -2.25, '2024-02-29 23:59:59.999999', "
    "'2024-01-01 00:00:00.5', '0001-01-01', '-838:59:59.000', 2155, 'b', 'x,y', b'10101', "
    "x'00ff', x'', '{\"k\": [1, 2.5, null]}', 'é ✓', 18446744073709551615)",
    "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', NULL, NULL, NULL, NULL, "
    "NULL, 0)",
]


def test_an_incremental_snapshot_gives_the_initial_snapshots_values_per_type(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute(TYPED)
    cur.execute(f"INSERT INTO ty VALUES {', '.join(TYPED_ROWS)}")
    cur.execute(SIGNAL_DDL.format("sig"))
    log_dir = tmp_path / "log"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.ty"], log_dir, signal_table=f"{db}.sig")
    p = run_pipeline(cfg)
    topic = f"mysqltest.{db}.ty"
    wait_until(lambda: len(read_log(log_dir, topic)) == 2, 60, "the initial snapshot")
    _signal(cur, "sig", "again", "execute-snapshot", {"data-collections": [f"{db}.ty"]})
    wait_until(lambda: _snapshot_reads(log_dir, topic) == 2 + 2, 60, "the incremental snapshot")
    p.stop()
    records = read_log(log_dir, topic)
    initial = [(r["key"], r["value"]["after"]) for r in records[:2]]
    again = [(r["key"], r["value"]["after"]) for r in records[2:]]
    assert [r["value"]["source"]["snapshot"] for r in records[2:]] == ["incremental"] * 2
    assert again == initial
