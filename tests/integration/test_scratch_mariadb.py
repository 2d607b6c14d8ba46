"""The scratch MariaDB launcher: a real server with a row binlog, a round trip with pymysql."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pymysql
import pytest

from scratch.mariadb import MariaDBServer, start_mariadb

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[MariaDBServer]:
    # Not under pytest's tmp_path: when we are root mariadbd runs as mysql, which cannot enter it.
    started = time.monotonic()
    srv = start_mariadb(server_id=7)
    print(f"mariadb started in {time.monotonic() - started:.1f}s")
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(srv.base_dir, ignore_errors=True)
    assert not srv.running


def test_binlog_settings_and_round_trip(server: MariaDBServer) -> None:
    rows = server.sql(
        "SELECT @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, @@server_id,"
        " @@gtid_strict_mode, @@log_bin, @@bind_address"
    )
    assert rows == [("ROW", "FULL", "FULL", 7, 1, 1, "127.0.0.1")]

    kwargs = server.create_database("shop")
    conn = pymysql.connect(**kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE item (id INT PRIMARY KEY, name VARCHAR(20))")
            cur.execute("INSERT INTO item VALUES (1, 'anvil'), (2, 'rope')")
            cur.execute("SELECT id, name FROM item ORDER BY id")
            assert cur.fetchall() == ((1, "anvil"), (2, "rope"))
            cur.execute("SHOW BINARY LOGS")
            logs = cur.fetchall()
            assert logs and logs[0][0].startswith("mariadb-bin.")
            cur.execute("SELECT @@gtid_binlog_pos")
            (pos,) = cur.fetchone()
            assert pos.startswith("0-7-")  # domain 0, our server_id, a sequence number
    finally:
        conn.close()


def test_accounts_are_checked(server: MariaDBServer) -> None:
    conn = pymysql.connect(host=server.host, port=server.port, user="cdc", password="cdc")
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GRANTS")
            grants = " ".join(row[0] for row in cur.fetchall())
        assert "ALL PRIVILEGES" in grants and "WITH GRANT OPTION" in grants
    finally:
        conn.close()
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=server.host, port=server.port, user="cdc", password="wrong")


def test_restart_keeps_data_and_port(server: MariaDBServer) -> None:
    server.create_database("keep")
    server.sql("CREATE TABLE t (id INT PRIMARY KEY)", db="keep")
    server.sql("INSERT INTO t VALUES (42)", db="keep")
    port = server.port
    server.stop()
    assert not server.running
    with pytest.raises(pymysql.err.OperationalError):
        server.sql("SELECT 1")
    server.start()
    assert server.port == port
    assert server.sql("SELECT id FROM t", db="keep") == [(42,)]
    assert len(server.sql("SHOW BINARY LOGS")) >= 2  # a restart opens a new binlog file


def test_crash_recovery(server: MariaDBServer) -> None:
    server.create_database("crash")
    server.sql("CREATE TABLE t (id INT PRIMARY KEY)", db="crash")
    server.sql("INSERT INTO t VALUES (1)", db="crash")
    server.kill()
    server.start()
    assert server.sql("SELECT id FROM t", db="crash") == [(1,)]
