"""Streaming from a real MariaDB and MySQL: order, images, keys, source block, schema versions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.integration.mysql.conftest import (
    CLIENT_SERVER_ID,
    binlog_status,
    connect,
    is_mysql,
    read_log,
    write_config,
)

pytestmark = pytest.mark.integration


def _rows(log_dir: Path) -> list[dict[str, Any]]:
    return [r for r in read_log(log_dir) if not r["topic"].endswith(".transaction")]


def _snapshot_done(log_dir: Path) -> bool:
    from cdc.sinks.log import LogReader

    return log_dir.exists() and LogReader(log_dir).info()["last_position"] is not None


def test_transactions_over_two_tables_in_commit_order_and_alter_mid_stream(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    conn = connect(server, db)
    cur = conn.cursor()
    cur.execute("CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(20))")
    cur.execute("CREATE TABLE b (id INT PRIMARY KEY, n INT NOT NULL)")
    cur.execute("CREATE TABLE other (id INT PRIMARY KEY)")
    log_dir = tmp_path / "log"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.a", f"{db}.b"], log_dir)
    p = run_pipeline(cfg)

    wait_until(lambda: _snapshot_done(log_dir), 60, "the (empty) snapshot to complete")

    def txn(*stmts: str) -> None:
        cur.execute("BEGIN")
        for s in stmts:
            cur.execute(s)
        cur.execute("COMMIT")

    txn(
        "INSERT INTO a VALUES (1, 'x')",
        "INSERT INTO other VALUES (1)",
        "INSERT INTO b VALUES (1, 10)",
    )
    txn(
        "UPDATE a SET v = 'y' WHERE id = 1",
        "DELETE FROM b WHERE id = 1",
        "INSERT INTO b VALUES (2, 20)",
    )
    txn("UPDATE a SET id = 5 WHERE id = 1")
    wait_until(lambda: len(_rows(log_dir)) >= 7, 30, "7 change events")
    p.stop()

    # Written while the pipeline is down, around an ALTER: read back after it, each event must
    # still decode with the columns it was written with.
    txn("INSERT INTO a VALUES (2, 'before')")
    cur.execute("ALTER TABLE a ADD COLUMN w INT NOT NULL DEFAULT 7")
    txn("INSERT INTO a VALUES (3, 'after', 8)", "UPDATE a SET v = 'q' WHERE id = 5")
    binlog_file = binlog_status(cur, server)[0]
    cur.execute("SELECT @@server_id")
    server_id = cur.fetchone()[0]
    p = run_pipeline(cfg)
    wait_until(lambda: len(_rows(log_dir)) >= 10, 30, "10 change events")
    p.stop()

    rows = _rows(log_dir)
    got = [
        (r["topic"].split(".")[-1], r["value"]["op"], r["value"]["before"], r["value"]["after"])
        for r in rows
    ]
    assert got == [
        ("a", "c", None, {"id": 1, "v": "x"}),
        ("b", "c", None, {"id": 1, "n": 10}),
        ("a", "u", {"id": 1, "v": "x"}, {"id": 1, "v": "y"}),
        ("b", "d", {"id": 1, "n": 10}, None),
        ("b", "c", None, {"id": 2, "n": 20}),
        ("a", "d", {"id": 1, "v": "y"}, None),
        ("a", "c", None, {"id": 5, "v": "y"}),
        ("a", "c", None, {"id": 2, "v": "before"}),
        ("a", "c", None, {"id": 3, "v": "after", "w": 8}),
        ("a", "u", {"id": 5, "v": "y", "w": 7}, {"id": 5, "v": "q", "w": 7}),
    ]
    assert [r["topic"] for r in rows[:2]] == [f"mysqltest.{db}.a", f"mysqltest.{db}.b"]
    assert [r["key"] for r in rows[:3]] == [{"id": 1}, {"id": 1}, {"id": 1}]
    assert rows[5]["key"] == {"id": 1} and rows[6]["key"] == {"id": 5}

    sources = [r["value"]["source"] for r in rows]
    for s in sources:
        assert s["connector"] == "mysql" and s["name"] == "mysqltest" and s["db"] == db
        assert s["snapshot"] == "false"
        assert s["server_id"] == server_id != CLIENT_SERVER_ID
        assert s["file"] == binlog_file
        assert s["gtid"] is not None
        if is_mysql(server):  # MySQL's GTID: server_uuid:transaction number
            uuid, _ = s["gtid"].split(":")
            assert uuid == server.sql("SELECT @@server_uuid")[0][0]
        else:  # MariaDB's: domain-server_id-sequence
            assert s["gtid"].startswith(f"0-{server_id}-")
    assert [s["table"] for s in sources[:2]] == ["a", "b"]
    # one GTID per transaction, increasing; the positions increase in commit order
    gtids = [int(re.split("[-:]", s["gtid"])[-1]) for s in sources]
    assert gtids[0] == gtids[1] < gtids[2] == gtids[3] == gtids[4] < gtids[5] == gtids[6]
    assert gtids[6] < gtids[7] < gtids[8] == gtids[9]
    positions = [(s["pos"], s["row"]) for s in sources]
    assert positions == sorted(positions)
    # the two rows of the first transaction come from two rows events, the pk change from one
    assert sources[5]["pos"] == sources[6]["pos"]

    # the ALTER made a new schema version of a's value; b kept one
    from cdc.sinks.log import LogReader

    subjects = LogReader(log_dir).schemas.subjects()
    assert len(subjects[f"mysqltest.{db}.a-value"]) == 2
    assert len(subjects[f"mysqltest.{db}.b-value"]) == 1
    tx = [r for r in read_log(log_dir) if r["topic"].endswith(".transaction")]
    assert [t["value"]["status"] for t in tx[:2]] == ["BEGIN", "END"]
    assert tx[1]["value"]["event_count"] == 2


def test_snapshot_never_keeps_its_starting_point_across_a_restart(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    cur.execute("INSERT INTO t VALUES (1)")  # before the start: neither snapshot nor stream
    log_dir = tmp_path / "log"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.t"], log_dir, snapshot="never")
    p = run_pipeline(cfg)

    def started() -> bool:
        from cdc.sinks.log import LogReader

        return log_dir.exists() and LogReader(log_dir).info()["last_position"] is not None

    wait_until(started, 30, "the starting position to be recorded")
    p.stop()
    cur.execute("INSERT INTO t VALUES (2)")  # while the pipeline is down
    p = run_pipeline(cfg)
    cur.execute("INSERT INTO t VALUES (3)")
    topic = f"mysqltest.{db}.t"
    wait_until(lambda: len(read_log(log_dir, topic)) >= 2, 30, "two rows")
    p.stop()
    assert [(r["value"]["op"], r["key"]["id"]) for r in read_log(log_dir, topic)] == [
        ("c", 2),
        ("c", 3),
    ]


def test_mysql_without_gtids_streams_and_resumes_by_file_position(
    tmp_path: Path, run_pipeline: Any
) -> None:
    """gtid_mode=OFF (MySQL's default): anonymous GTID events, file + position resumes."""
    import shutil

    from scratch.mysql import start_mysql

    server = start_mysql(settings={"gtid_mode": "OFF", "enforce_gtid_consistency": "OFF"})
    try:
        server.sql("CREATE DATABASE g")
        server.sql("CREATE TABLE g.t (id INT PRIMARY KEY, v INT NOT NULL)")
        server.sql("INSERT INTO g.t VALUES (1, 1)")
        log_dir = tmp_path / "log"
        cfg = write_config(tmp_path / "c.yaml", server, ["g.t"], log_dir)
        cur = connect(server, "g").cursor()
        for n in (1, 2):  # the second run resumes from the first one's position
            p = run_pipeline(cfg)
            wait_until(lambda n=n: len(_rows(log_dir)) >= 3 * n - 2, 30, "the stream to start")
            cur.execute("BEGIN")
            cur.execute(f"INSERT INTO t VALUES ({10 + n}, 2)")
            cur.execute("UPDATE t SET v = v + 1 WHERE id = 1")
            cur.execute("COMMIT")
            cur.execute(f"DELETE FROM t WHERE id = {10 + n}")
            wait_until(lambda n=n: len(_rows(log_dir)) >= 3 * n + 1, 30, "the changes")
            p.stop()
        rows = _rows(log_dir)
        got = [(r["value"]["op"], r["key"]["id"], r["value"]["source"]["gtid"]) for r in rows]
        assert got == [
            ("r", 1, None),
            ("c", 11, None),
            ("u", 1, None),
            ("d", 11, None),
            ("c", 12, None),
            ("u", 1, None),
            ("d", 12, None),
        ]
        from cdc.sinks.log import LogReader

        assert LogReader(log_dir).info()["last_position"]["gtid"] is None
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)


def test_truncate_of_a_captured_table_is_a_t_event_also_after_a_restart(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    conn = connect(server, db)
    cur = conn.cursor()
    cur.execute("CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(20))")
    cur.execute("CREATE TABLE other (id INT PRIMARY KEY)")
    log_dir = tmp_path / "log"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.a"], log_dir)
    p = run_pipeline(cfg)

    wait_until(lambda: _snapshot_done(log_dir), 60, "the (empty) snapshot to complete")
    cur.execute("INSERT INTO a VALUES (1, 'x')")
    cur.execute("TRUNCATE a")
    cur.execute("INSERT INTO other VALUES (1)")
    cur.execute("TRUNCATE TABLE other")  # not captured: no event
    wait_until(lambda: len(_rows(log_dir)) >= 2, 30, "2 change events")
    p.stop()
    # Read after a restart: no table map of `a` seen since, so its columns come from the catalog
    cur.execute("INSERT INTO other VALUES (2)")
    cur.execute(f"TRUNCATE TABLE `{db}`.`a`")
    p = run_pipeline(cfg)
    wait_until(lambda: len(_rows(log_dir)) >= 3, 30, "3 change events")
    p.stop()
    rows = _rows(log_dir)
    assert [(r["topic"].rsplit(".", 1)[1], r["value"]["op"]) for r in rows] == [
        ("a", "c"),
        ("a", "t"),
        ("a", "t"),
    ]
    for r in rows[1:]:
        value = r["value"]
        assert value["before"] is None and value["after"] is None
        assert value["source"]["table"] == "a" and value["source"]["db"] == db
        assert value["source"]["pos"] > 0
