"""Session servers shared by every test directory (a pytest plugin, see tests/conftest.py).

MariaDB, Oracle MySQL, Kafka with its schema registry, and NATS: each started once per session, on
first use, so that the source tests, the sink tests and the sink conformance suite share one of
each.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

_counter = itertools.count()
MYSQL_CLIENT_SERVER_ID = 1000  # the replication client's id; the server runs with another one


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[Any]:
    from scratch.mariadb import start_mariadb

    # its own temporary directory: the mysql user it runs as cannot reach pytest's tmp_path
    server = start_mariadb()
    try:
        conn = server.connect()
        cur = conn.cursor()
        cur.execute("SELECT @@log_bin, @@server_id")
        log_bin, server_id = cur.fetchone()
        assert log_bin == 1, "the test server runs without log_bin: start it with --log-bin"
        assert server_id != MYSQL_CLIENT_SERVER_ID
        # what the source requires (dynamic settings: new sessions take them)
        cur.execute("SET GLOBAL binlog_format = 'ROW'")
        cur.execute("SET GLOBAL binlog_row_image = 'FULL'")
        cur.execute("SET GLOBAL binlog_row_metadata = 'FULL'")
        conn.close()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[Any]:
    """Oracle MySQL (Debian sid's build, fetched into the scratch cache on first use)."""
    from scratch.mysql import start_mysql

    server = start_mysql()  # fails, never skips, when MySQL cannot be fetched or started
    try:
        server.sql("SET GLOBAL cte_max_recursion_depth = 1000000")  # tests' row generators
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)


@pytest.fixture
def mysql_db(mariadb_server: Any) -> str:
    """A fresh database on the session MariaDB; returns its name."""
    name = f"t{os.getpid()}_{next(_counter)}"
    mariadb_server.create_database(name)
    return name


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A single-node KRaft broker (scratch/kafka.py)."""
    from scratch.kafka import start_kafka

    server = start_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Confluent-compatible registry: Apicurio Registry's ccompat API (scratch/registry)."""
    from scratch.registry import start_schema_registry

    server = start_schema_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One JetStream server for the session; tests keep apart by their own streams."""
    from scratch.nats import start_nats

    server = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()
