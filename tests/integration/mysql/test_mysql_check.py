"""`cdc check` against real MariaDB servers, run as a user runs it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.mysql.conftest import CLIENT_SERVER_ID, write_config
from tests.integration.test_postgres_check import cdc_check

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def statement_server() -> Iterator[Any]:
    """A server logging statements, not rows: what a CDC source cannot read."""
    from scratch.mariadb import start_mariadb

    server = start_mariadb(settings={"binlog_format": "STATEMENT", "binlog_row_image": "MINIMAL"})
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)


def test_check_names_binlog_settings_and_privileges(tmp_path: Path, statement_server: Any) -> None:
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
    cfg["pipelines"][0]["source"].update(user="app", password="pw")
    path.write_text(yaml.safe_dump(cfg))
    rc, out = cdc_check(path)
    assert rc == 1, out
    assert "pipeline shop (mysql source): 5 problem(s)" in out
    assert "binlog_format is 'STATEMENT': set binlog_format=ROW" in out
    assert "binlog_row_image is 'MINIMAL': set binlog_row_image=FULL" in out
    assert "user 'app' lacks REPLICATION SLAVE (to read the binlog): GRANT REPLICATION SLAVE" in out
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
