"""Column defaults in MySQL/MariaDB schemas, as Debezium carries them; odd table names.

Snapshot and binlog must make one table version (one schema), defaults included.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cdc.sinks.log import LogReader
from tests.conftest import wait_until
from tests.integration.mysql.conftest import connect, read_log, write_config

pytestmark = pytest.mark.integration

DDL = (
    "CREATE TABLE `d-$ t` (id INT AUTO_INCREMENT PRIMARY KEY, "
    "n INT NOT NULL DEFAULT 42, neg BIGINT DEFAULT -7, big BIGINT UNSIGNED DEFAULT 5, "
    "price DECIMAL(6,2) DEFAULT 12.5, ratio DOUBLE DEFAULT 1.5, "
    "label VARCHAR(20) DEFAULT 'it''s', c ENUM('a','b') NOT NULL DEFAULT 'b', "
    "flag BOOLEAN DEFAULT TRUE, "
    "seen TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, born DATE DEFAULT '2024-02-29', "
    "tm TIME DEFAULT '-12:00:00', dt DATETIME(3) DEFAULT '2024-01-02 03:04:05.5', "
    "y YEAR DEFAULT 2024, "
    "nul VARCHAR(5) DEFAULT NULL, `a b` TEXT)"
)


def schema_ids(log_dir: Path, topic: str) -> set[int]:
    return {
        int.from_bytes((r.value or b"")[1:5], "big")
        for r in LogReader(log_dir).records(0, topic)
        if r.value
    }


def test_defaults_in_the_schema_snapshot_and_binlog_alike(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    conn = connect(server, db)
    cur = conn.cursor()
    cur.execute(DDL)
    cur.execute("INSERT INTO `d-$ t` () VALUES ()")  # read by the snapshot
    log_dir = tmp_path / "log"
    # The config takes no such name (yet): a glob matches it.
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.d*"], log_dir)
    p = run_pipeline(cfg)
    topic = f"mysqltest.{db}.d-__t"
    wait_until(lambda: len(read_log(log_dir, topic)) >= 1, 60, "the snapshot")
    cur.execute("INSERT INTO `d-$ t` () VALUES ()")  # read from the binlog
    wait_until(lambda: len(read_log(log_dir, topic)) >= 2, 60, "the streamed row")
    p.stop()

    records = read_log(log_dir, topic)
    assert [r["value"]["op"] for r in records] == ["r", "c"]
    assert [r["value"]["after"]["n"] for r in records] == [42, 42]
    (sid,) = schema_ids(log_dir, topic)  # one version for the snapshot and the binlog
    schema = LogReader(log_dir).schemas.get(sid)
    assert schema["namespace"] == f"mysqltest.{db}.d___t"
    fields = {f["name"]: f for f in schema["fields"][0]["type"][1]["fields"]}
    defaults = {n: f.get("default", "<none>") for n, f in fields.items()}
    assert defaults == {
        "id": "<none>",  # AUTO_INCREMENT: no default
        "n": 42,
        "neg": -7,
        "big": "\x05",  # BIGINT UNSIGNED is a Decimal(20,0): its unscaled bytes
        "price": "\x04\xe2",  # 12.50 as its unscaled bytes (1250)
        "ratio": 1.5,
        "label": "it's",
        "c": "b",
        "flag": 1,  # BOOLEAN is TINYINT(1): an int16
        "seen": "1970-01-01T00:00:00Z",  # CURRENT_TIMESTAMP on NOT NULL: the epoch
        "born": 19782,  # days since 1970
        "tm": -43_200_000_000,
        "dt": 1704164645500,
        "y": 2024,
        "nul": None,
        "a_b": None,
    }
    assert fields["n"]["type"] == {"type": "int", "connect.default": 42}
    assert fields["price"]["type"][1] == "null"
    assert records[0]["value"]["after"]["price"] == Decimal("12.50")
