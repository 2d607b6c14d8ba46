"""MySQL/MariaDB source test helpers: the server of each flavour, connections, configs, reading
the log, pipelines in a thread.

Tests here take ``server`` (and ``mysql_db``, a fresh database on it): by default each runs twice,
once on MariaDB and once on Oracle MySQL. A test that only concerns one flavour, or is too slow to
double, narrows it with ``@pytest.mark.parametrize("server", ["mariadb"], indirect=True)``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.logtools import read_log as read_log  # for the mysql tests
from tests.servers import (
    MYSQL_CLIENT_SERVER_ID,
    _counter,  # one counter for every database name of the session
)

# The servers (mariadb_server, mysql_server) are session fixtures of tests/servers.py.
CLIENT_SERVER_ID = MYSQL_CLIENT_SERVER_ID
FLAVOURS = ["mariadb", "mysql"]


@pytest.fixture(params=FLAVOURS)
def server(request: pytest.FixtureRequest) -> Any:
    """The session server of one flavour: MariaDB 10.11 or Oracle MySQL 9.x."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(params=["native", "python"])
def rows_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The binlog rows decoders and the snapshot's row reader of the pipelines a test runs in
    this process (sources/mysql/_rows.py, _snapshot_read.py): the compiled ones (skipped where
    the extension is not built), none of their events or tables handed to the reference, or
    the python reference (as ``CDC_NATIVE=0``)."""
    from cdc.sources.mysql import _rows, _snapshot_read

    if request.param == _rows.NATIVE and _rows.PATH != _rows.NATIVE:
        pytest.skip(_rows.describe())
    if request.param == _rows.NATIVE and _snapshot_read.PATH != _snapshot_read.NATIVE:
        pytest.skip(_snapshot_read.describe())
    monkeypatch.setattr(_rows, "PATH", request.param)
    monkeypatch.setattr(_snapshot_read, "PATH", request.param)
    before = _rows.native_fallbacks(), _snapshot_read.native_fallbacks()
    yield request.param
    after = _rows.native_fallbacks(), _snapshot_read.native_fallbacks()
    assert after == before, "events or tables went to the reference"


@pytest.fixture
def mysql_db(server: Any) -> str:
    """A fresh database on ``server``; returns its name (overrides tests/servers.py's)."""
    name = f"t{os.getpid()}_{next(_counter)}"
    server.create_database(name)
    return name


def is_mysql(server: Any) -> bool:
    """Oracle MySQL (scratch/mysql.py), not MariaDB."""
    return getattr(server, "flavour", "mariadb") == "mysql"


def binlog_status(cur: Any, server: Any) -> tuple[str, int]:
    """The server's current binlog file and position (MySQL >= 8.4 removed SHOW MASTER STATUS)."""
    cur.execute("SHOW BINARY LOG STATUS" if is_mysql(server) else "SHOW MASTER STATUS")
    row = cur.fetchone()
    return str(row[0]), int(row[1])


def seq(server: Any, n: int) -> str:
    """A FROM item of the integers 1..n in a column ``seq`` (MariaDB's sequence engine; a
    recursive CTE on MySQL, whose fixture raises cte_max_recursion_depth)."""
    if is_mysql(server):
        return (
            f"(WITH RECURSIVE s (seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM s "
            f"WHERE seq < {n}) SELECT seq FROM s) AS seq_1_to_{n}"
        )
    return f"seq_1_to_{n}"


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

    src = mysql_source(server, tables, server_id, **source)
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


RUNNING: list[Running] = []  # the current test's, for failure messages (targets' wait_equal)


@pytest.fixture
def run_pipeline() -> Iterator[Any]:
    def start(config_path: Path) -> Running:
        r = Running(config_path)
        RUNNING.append(r)
        return r

    yield start
    for r in RUNNING:
        if r.thread.is_alive():
            r.pipeline.stop()
            r.thread.join(60)
    RUNNING.clear()


# A workload of several tables, types and kinds of change, for comparing a sink with the log.
MIXED_TABLES = ["items", "tags"]
MIXED_SCHEMA = [
    "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, price DECIMAL(10,2), "
    "seen DATETIME(3), flag BOOLEAN, doc JSON, data BLOB, note TEXT)",
    "CREATE TABLE tags (item INT, tag VARCHAR(20), PRIMARY KEY (item, tag))",
]
MIXED_WORKLOAD = [
    [
        "INSERT INTO items SELECT seq, CONCAT('item ', seq), seq * 1.25, "
        "'2024-01-01 00:00:00.123' + INTERVAL seq MINUTE, seq % 2 = 0, "
        "JSON_OBJECT('g', seq), UNHEX(LPAD(HEX(seq), 4, '0')), IF(seq % 3 = 0, NULL, 'é') "
        "FROM {seq50}"
    ],
    # a multi-row transaction over both tables
    [
        "UPDATE items SET price = price + 1 WHERE id <= 10",
        "INSERT INTO tags SELECT seq, CONCAT('t', seq) FROM {seq10}",
        "UPDATE items SET doc = JSON_OBJECT('g', 'changed'), flag = NULL WHERE id = 3",
    ],
    ["DELETE FROM items WHERE id > 45"],
    ["DELETE FROM tags WHERE item <= 2"],
    ["UPDATE items SET name = 'renamed' WHERE id = 7"],
]
# 50 + 10 + 1 + 5 + 1 item changes, 10 + 2 tag changes, a tombstone after each of the 7 deletes,
# BEGIN and END of each of the 5 transactions.
MIXED_EVENTS = 67 + 12 + 7 + 2 * 5
MIXED_OPS = {"c": 60, "u": 12, "d": 7}


def run_mixed_workload(server: Any, db: str) -> None:
    """Each entry of MIXED_WORKLOAD as one transaction."""
    conn = connect(server, db)
    try:
        cur = conn.cursor()
        for statements in MIXED_WORKLOAD:
            cur.execute("BEGIN")
            for s in statements:
                cur.execute(s.format(seq50=seq(server, 50), seq10=seq(server, 10)))
            cur.execute("COMMIT")
    finally:
        conn.close()


def mysql_source(server: Any, tables: list[str], server_id: int, **extra: Any) -> dict[str, Any]:
    """A pipeline's source config; each pipeline reading the binlog needs its own ``server_id``."""
    return {
        "type": "mysql",
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "server_id": server_id,
        "tables": tables,
        **extra,
    }


def mixed_tables(server: Any, db: str) -> list[str]:
    """Create the MIXED_SCHEMA tables in ``db``; return their qualified names."""
    for statement in MIXED_SCHEMA:
        server.sql(statement, db)
    return [f"{db}.{t}" for t in MIXED_TABLES]


def wait_started(daemon: Any, log_dir: Path, checkpoint: Path) -> None:
    """Wait until a log pipeline and a broker pipeline each checkpointed their (empty) snapshot:
    changes committed from then on are streamed by both."""
    from cdc.sinks.log import LogReader
    from tests.conftest import wait_until

    def started() -> bool:
        if daemon.proc.poll() is not None:
            pytest.fail(f"daemon exited early:\n{daemon.output()}")
        in_log = log_dir.exists() and LogReader(log_dir).info()["last_position"] is not None
        return in_log and checkpoint.exists()

    wait_until(started, 60, "both pipelines to start streaming")
