"""MariaDB fixtures: one server per session, one database per test, log-reading helpers."""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_counter = itertools.count()
CLIENT_SERVER_ID = 1000  # the replication client's id; the server runs with another one


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[Any]:
    from scratch.mariadb import start_mariadb

    # its own temporary directory: the mysql user it runs as cannot reach pytest's tmp_path
    server = start_mariadb()
    try:
        cur = connect(server).cursor()
        cur.execute("SELECT @@log_bin, @@server_id")
        log_bin, server_id = cur.fetchone()
        assert log_bin == 1, "the test server runs without log_bin: start it with --log-bin"
        assert server_id != CLIENT_SERVER_ID
        # what the source requires (dynamic settings: new sessions take them)
        cur.execute("SET GLOBAL binlog_format = 'ROW'")
        cur.execute("SET GLOBAL binlog_row_image = 'FULL'")
        cur.execute("SET GLOBAL binlog_row_metadata = 'FULL'")
        cur.connection.close()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)


@pytest.fixture
def mysql_db(mariadb_server: Any) -> str:
    """A fresh database on the session server; returns its name."""
    name = f"t{os.getpid()}_{next(_counter)}"
    mariadb_server.create_database(name)
    return name


def connect(server: Any, db: str | None = None) -> Any:
    import pymysql

    return pymysql.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        database=db,
        autocommit=True,
    )


def write_config(
    path: Path,
    server: Any,
    tables: list[str],
    log_dir: Path,
    *,
    name: str = "mysqltest",
    server_id: int = CLIENT_SERVER_ID,
    max_events: int = 5000,
    **source: Any,
) -> Path:
    import yaml

    src = {
        "type": "mysql",
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "server_id": server_id,
        "tables": tables,
        **source,
    }
    cfg = {
        "pipelines": [
            {
                "name": name,
                "batch": {"max_events": max_events, "max_wait_ms": 50},
                "source": src,
                "sink": {"type": "log", "path": str(log_dir)},
            }
        ]
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_log(log_dir: Path, topic: str | None = None) -> list[dict[str, Any]]:
    """Every record of the log, decoded: {"topic", "key", "value"}."""
    from cdc._jsonout import AvroDecoder
    from sinks.log import LogReader

    if not log_dir.exists():
        return []
    reader = LogReader(log_dir)
    dec = AvroDecoder(reader.schemas.get)
    return [
        {"topic": r.topic, "key": dec.decode(r.key), "value": dec.decode(r.value)}
        for r in reader.records(0, topic)
    ]


class Running:
    """A pipeline running in a thread of this process."""

    def __init__(self, config_path: Path) -> None:
        from cdc.config import load
        from cdc.pipeline import Pipeline

        self.pipeline = Pipeline(load(config_path).pipelines[0])
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.pipeline.run()
        except BaseException as e:  # reported by stop()
            self.error = e

    def stop(self) -> None:
        self.pipeline.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "pipeline did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def run_pipeline() -> Iterator[Any]:
    started: list[Running] = []

    def start(config_path: Path) -> Running:
        r = Running(config_path)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.thread.is_alive():
            r.pipeline.stop()
            r.thread.join(60)
