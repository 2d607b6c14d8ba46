"""Preflight problems and a purged binlog position: clear messages that say what to do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cdc.errors import PositionLost, SourceError
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


def _source(server: Any, db: str, **kw: Any) -> Any:
    from cdc.sources.mysql._source import MySqlSource
    from cdc.sources.mysql.config import MySqlSourceConfig

    cfg = MySqlSourceConfig.model_validate(
        {
            "type": "mysql",
            "host": server.host,
            "port": server.port,
            "user": server.user,
            "password": server.password,
            "server_id": CLIENT_SERVER_ID,
            "tables": [f"{db}.*"],
            **kw,
        }
    )
    return MySqlSource(cfg, "p", "p")


def test_check_passes_on_a_well_set_up_server(server: Any, mysql_db: str) -> None:
    src = _source(server, mysql_db)
    try:
        assert src.check() == []
    finally:
        src.close()


def test_the_documented_privileges_are_enough(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY, j JSON)")
    cur.execute("""INSERT INTO t VALUES (1, '{"a": 1}')""")
    cur.execute("CREATE USER 'minimal'@'%' IDENTIFIED BY 'minimal'")
    try:
        # as docs/source-mysql.md says, with SELECT limited to the captured database; on MySQL
        # the password makes caching_sha2_password do its full (RSA) exchange over plain TCP
        if is_mysql(server):
            grants = "REPLICATION SLAVE, REPLICATION CLIENT, RELOAD"
        else:
            grants = "REPLICATION SLAVE, BINLOG MONITOR"
        cur.execute(f"GRANT {grants} ON *.* TO 'minimal'@'%'")
        cur.execute(f"GRANT SELECT ON `{db}`.* TO 'minimal'@'%'")
        server = type(
            "S",
            (),
            {
                "host": server.host,
                "port": server.port,
                "user": "minimal",
                "password": "minimal",
            },
        )()
        src = _source(server, db)
        try:
            assert src.check() == []
        finally:
            src.close()
        log_dir = tmp_path / "log"
        p = run_pipeline(write_config(tmp_path / "c.yaml", server, [f"{db}.t"], log_dir))
        topic = f"mysqltest.{db}.t"
        wait_until(lambda: len(read_log(log_dir, topic)) == 1, 30, "the snapshot row")
        cur.execute("""INSERT INTO t VALUES (2, '[1, 2]')""")
        wait_until(lambda: len(read_log(log_dir, topic)) == 2, 30, "the streamed row")
        p.stop()
    finally:
        cur.execute("DROP USER 'minimal'@'%'")
    values = [r["value"] for r in read_log(log_dir, topic)]
    assert [(v["op"], v["after"]["j"]) for v in values] == [("r", '{"a": 1}'), ("c", "[1, 2]")]
    # json recognised through information_schema, which the minimal user can read
    from cdc.sinks.log import LogReader

    store = LogReader(log_dir).schemas
    (sid,) = store.subjects()[f"{topic}-value"]
    value = store.get(sid)["fields"][0]["type"][1]
    j = next(f for f in value["fields"] if f["name"] == "j")
    assert j["type"][1]["connect.name"] == "io.debezium.data.Json"


def test_check_names_each_problem_and_the_fix(server: Any, mysql_db: str) -> None:
    root = connect(server)
    cur = root.cursor()
    cur.execute("CREATE USER 'weak'@'%' IDENTIFIED BY 'weak'")
    cur.execute(f"GRANT SELECT ON `{mysql_db}`.* TO 'weak'@'%'")
    cur.execute("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    cur.execute("SET GLOBAL binlog_row_image = 'MINIMAL'")
    try:
        from cdc.sources.mysql._source import MySqlSource
        from cdc.sources.mysql.config import MySqlSourceConfig

        cfg = MySqlSourceConfig.model_validate(
            {
                "type": "mysql",
                "host": server.host,
                "port": server.port,
                "user": "weak",
                "password": "weak",
                "server_id": 1,
                "tables": [f"{mysql_db}.*"],
            }
        )
        src = MySqlSource(cfg, "p", "p")
        try:
            problems = src.check()
            with pytest.raises(SourceError, match="binlog_row_metadata=FULL"):
                list(src.batches(None))
        finally:
            src.close()
    finally:
        cur.execute("SET GLOBAL binlog_row_metadata = 'FULL'")
        cur.execute("SET GLOBAL binlog_row_image = 'FULL'")
        cur.execute("DROP USER 'weak'@'%'")
    text = "\n".join(map(str, problems))
    # what keeps the source from streaming is chosen by the records' flag, not their wording
    assert [p.what for p in problems if p.blocking] == [
        "binlog_row_image is 'MINIMAL'",
        "binlog_row_metadata is 'MINIMAL'",
        "source.server_id 1 is the server's own server_id",
        "the user 'weak' lacks REPLICATION SLAVE",
    ]
    assert "binlog_row_metadata is 'MINIMAL': set binlog_row_metadata=FULL" in text
    assert "binlog_row_image is 'MINIMAL': set binlog_row_image=FULL" in text
    assert "server_id 1 is the server's own server_id" in text
    assert "lacks REPLICATION SLAVE (to read the binlog): GRANT REPLICATION SLAVE ON *.* " in text
    if is_mysql(server):
        assert "lacks REPLICATION CLIENT (for SHOW BINARY LOG STATUS" in text
        assert "lacks RELOAD (for the snapshot's brief FLUSH TABLES WITH READ LOCK)" in text
        assert len(problems) == 6, problems
    else:
        assert "lacks BINLOG MONITOR" in text
        assert len(problems) == 5, problems


def test_purged_binlog_is_position_lost_naming_the_file(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    log_dir = tmp_path / "log"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.t"], log_dir)
    p = run_pipeline(cfg)
    cur.execute("INSERT INTO t VALUES (1)")
    wait_until(lambda: len(read_log(log_dir, f"mysqltest.{db}.t")) == 1, 30, "the first row")
    p.stop()
    from cdc.sinks.log import LogReader

    saved = LogReader(log_dir).info()["last_position"]["file"]
    cur.execute("INSERT INTO t VALUES (2)")  # never read: it goes with the purged file
    cur.execute("FLUSH BINARY LOGS")
    newest = binlog_status(cur, server)[0]

    def purged() -> bool:
        # the server keeps a file a replica's dump thread still reads; it ends soon after close
        cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
        cur.execute("SHOW BINARY LOGS")
        return saved not in [r[0] for r in cur.fetchall()]

    wait_until(purged, 30, f"{saved} to be purged")

    p = run_pipeline(cfg)
    with pytest.raises(PositionLost) as e:
        wait_until(lambda: not p.thread.is_alive(), 30, "the pipeline to fail")
        p.stop()
    msg = str(e.value)
    assert f"binlog file {saved!r}" in msg and "purged" in msg
    assert "snapshot: when_needed" in msg and "move the sink's data aside" in msg

    # when_needed: a new snapshot instead of the error
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.t"], log_dir, snapshot="when_needed")
    p = run_pipeline(cfg)
    topic = f"mysqltest.{db}.t"
    wait_until(
        lambda: (
            [(r["value"]["op"], r["key"]["id"]) for r in read_log(log_dir, topic)][1:]
            == [("r", 1), ("r", 2)]
        ),
        30,
        "a new snapshot of both rows",
    )
    p.stop()


def test_events_written_without_full_metadata_are_refused_clearly(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    root = connect(server, db).cursor()
    root.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    log_dir = tmp_path / "log"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.t"], log_dir)
    p = run_pipeline(cfg)
    wait_until(lambda: _positioned(log_dir), 30, "start")
    p.stop()
    root.execute("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    try:
        writer = connect(server, db).cursor()  # a new session takes the global value
        writer.execute("INSERT INTO t VALUES (1)")
    finally:
        root.execute("SET GLOBAL binlog_row_metadata = 'FULL'")
    p = run_pipeline(cfg)
    wait_until(lambda: not p.thread.is_alive(), 30, "the pipeline to fail")
    with pytest.raises(SourceError) as e:
        p.stop()
    msg = str(e.value)
    assert f"no column names for {db}.t" in msg and "binlog_row_metadata was not FULL" in msg
    assert "move the sink's data aside" in msg


def _positioned(log_dir: Path) -> bool:
    from cdc.sinks.log import LogReader

    return log_dir.is_dir() and LogReader(log_dir).info()["last_position"] is not None


def test_an_idle_stream_records_that_the_binlog_moved_on(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any, monkeypatch: Any
) -> None:
    import cdc.sources.mysql._binlog as source_module

    monkeypatch.setattr(source_module, "POSITION_INTERVAL_S", 0.2)
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    cur.execute("CREATE TABLE busy (id INT PRIMARY KEY)")
    log_dir = tmp_path / "log"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.t"], log_dir)
    p = run_pipeline(cfg)
    wait_until(lambda: _positioned(log_dir), 30, "the snapshot position")
    from cdc.sinks.log import LogReader

    first = LogReader(log_dir).info()["last_position"]
    cur.execute("INSERT INTO busy VALUES (1)")  # not captured
    end = binlog_status(cur, server)[1]

    def moved() -> bool:
        last = LogReader(log_dir).info()["last_position"]
        return bool(last["pos"] >= end and last["pos"] != first["pos"])

    wait_until(moved, 30, "the position to pass the uncaptured transaction")
    p.stop()
    assert read_log(log_dir) == []


def test_an_idle_stream_outlives_the_read_timeout_on_heartbeats(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any, monkeypatch: Any
) -> None:
    """The server's heartbeats (the reader asks for them with @master_heartbeat_period, a name
    MySQL 9 still honours) keep an idle binlog connection alive past the read timeout."""
    import time

    import cdc.sources.mysql._binlog as source_module

    monkeypatch.setattr(source_module, "READ_TIMEOUT_S", 2)
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    log_dir = tmp_path / "log"
    p = run_pipeline(write_config(tmp_path / "c.yaml", server, [f"{db}.t"], log_dir))
    wait_until(lambda: _positioned(log_dir), 30, "the stream to start")
    time.sleep(5)  # the idleness under test: 2.5 read timeouts without an event
    assert p.thread.is_alive(), "the idle stream failed"
    cur.execute("INSERT INTO t VALUES (1)")
    wait_until(lambda: len(read_log(log_dir, f"mysqltest.{db}.t")) == 1, 30, "the row")
    p.stop()


@pytest.mark.parametrize("server", ["mysql"], indirect=True)
def test_a_vector_column_is_refused_naming_it(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """MySQL 9's VECTOR: neither the binlog library nor pymysql decodes it; say so clearly."""
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE v (id INT PRIMARY KEY, emb VECTOR(3))")
    cur.execute("INSERT INTO v VALUES (1, STRING_TO_VECTOR('[1, 2, 3]'))")
    p = run_pipeline(write_config(tmp_path / "a.yaml", server, [f"{db}.v"], tmp_path / "a"))
    wait_until(lambda: not p.thread.is_alive(), 30, "the snapshot to fail")
    with pytest.raises(SourceError, match=f"column {db}.v.emb has type vector"):
        p.stop()
    cfg = write_config(tmp_path / "b.yaml", server, [f"{db}.v"], tmp_path / "b", snapshot="never")
    p = run_pipeline(cfg)
    wait_until(lambda: _positioned(tmp_path / "b"), 30, "the stream to start")
    cur.execute("INSERT INTO v VALUES (2, STRING_TO_VECTOR('[4, 5, 6]'))")
    wait_until(lambda: not p.thread.is_alive(), 30, "the stream to fail")
    with pytest.raises(SourceError, match=r"cannot decode the event after .*VECTOR"):
        p.stop()
