"""`cdc check` against real MariaDB and MySQL servers, run as a user runs it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.mysql.conftest import CLIENT_SERVER_ID, FLAVOURS, is_mysql, write_config
from tests.integration.test_postgres_check import cdc_check

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=FLAVOURS)
def statement_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A server logging statements, not rows, and compressing its binlog: what a CDC source
    cannot read. The MySQL one also has GTIDs off, and TLS off so that a password user's
    caching_sha2_password login takes the RSA key exchange (pymysql needs cryptography for it)."""
    settings = {"binlog_format": "STATEMENT", "binlog_row_image": "MINIMAL"}
    if request.param == "mysql":
        from scratch.mysql import start_mysql

        server = start_mysql(
            settings={
                **settings,
                "binlog_transaction_compression": "ON",
                "tls_version": "''",
                "gtid_mode": "OFF",
                "enforce_gtid_consistency": "OFF",
            }
        )
    else:
        from scratch.mariadb import start_mariadb

        server = start_mariadb(settings={**settings, "log_bin_compress": "ON"})
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)


def test_check_names_binlog_settings_and_privileges(tmp_path: Path, statement_server: Any) -> None:
    mysql = is_mysql(statement_server)
    statement_server.sql("CREATE DATABASE shop")
    statement_server.sql("CREATE TABLE shop.orders (id int PRIMARY KEY)")
    statement_server.sql("CREATE USER 'app'@'%' IDENTIFIED BY 'pw'")
    statement_server.sql("GRANT SELECT ON shop.* TO 'app'@'%'")
    path = write_config(
        tmp_path / "cdc.yaml",
        statement_server,
        ["shop.orders", "shop.nomatch*"],
        tmp_path / "log",
        name="shop",
    )
    cfg = yaml.safe_load(path.read_text())
    cfg["pipelines"][0]["source"].update(user="app", password="pw", position_mode="gtid")
    path.write_text(yaml.safe_dump(cfg))
    rc, out = cdc_check(path)
    assert rc == 1, out
    assert f"pipeline shop (mysql source): {8 if mysql else 6} problem(s)" in out
    assert "binlog_format is 'STATEMENT': set binlog_format=ROW" in out
    assert "binlog_row_image is 'MINIMAL': set binlog_row_image=FULL" in out
    assert "user 'app' lacks REPLICATION SLAVE (to read the binlog): GRANT REPLICATION SLAVE" in out
    if mysql:
        assert "binlog_transaction_compression is ON (compressed binlog events cannot be" in out
        assert "the user 'app' lacks REPLICATION CLIENT" in out
        assert "the user 'app' lacks RELOAD" in out
        assert "source.position_mode is gtid but the server has gtid_mode=OFF" in out
        # and the password login really went over plain TCP
        conn = statement_server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW STATUS LIKE 'Ssl_cipher'")
                assert cur.fetchone()[1] == ""
        finally:
            conn.close()
    else:
        assert "log_bin_compress is ON (compressed binlog events cannot be" in out
        assert "the user 'app' lacks BINLOG MONITOR" in out
    assert "table pattern 'shop.nomatch*' matches no table the user 'app' can see" in out


def test_check_ok(tmp_path: Path, server: Any, mysql_db: str) -> None:
    server.sql(f"CREATE TABLE `{mysql_db}`.t (id int PRIMARY KEY)")
    path = write_config(
        tmp_path / "cdc.yaml", server, [f"{mysql_db}.*"], tmp_path / "log", name="ok"
    )
    rc, out = cdc_check(path)
    assert (rc, out.strip()) == (0, "pipeline ok (mysql source): ok")
    assert server.server_id != CLIENT_SERVER_ID
