"""MariaDB source test helpers: connections, configs, reading the log, pipelines in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import MYSQL_CLIENT_SERVER_ID

# The servers (mariadb_server, mysql_db) are session fixtures of tests/servers.py.
CLIENT_SERVER_ID = MYSQL_CLIENT_SERVER_ID


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
