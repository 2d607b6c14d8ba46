"""MariaDB -> Kafka: what a consumer with AvroDeserializer reads equals the built-in log."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sinks.log import LogReader
from tests.conftest import wait_until
from tests.integration.kafka.conftest import Reader, kafka_sink, write_config
from tests.integration.mysql.conftest import (
    MIXED_EVENTS,
    MIXED_OPS,
    mixed_tables,
    mysql_source,
    run_mixed_workload,
    wait_started,
)
from tests.logtools import assert_same_per_topic, by_topic, log_by_topic

pytestmark = pytest.mark.integration


def test_consumer_reads_what_the_log_holds(
    mariadb_server: Any,
    mysql_db: str,
    daemon: Any,
    kafka: Any,
    registry: Any,
    reader: Reader,
    prefix: str,
    tmp_path: Path,
) -> None:
    db = mysql_db
    tables = mixed_tables(mariadb_server, db)
    log_dir, state = tmp_path / "log", tmp_path / "kafka-state"
    config = write_config(
        tmp_path / "cdc.yaml",
        [
            {
                "name": prefix,
                "source": mysql_source(mariadb_server, tables, 1001),
                "sink": kafka_sink(kafka, registry, state),
            },
            {
                "name": prefix + "_log",
                "topic_prefix": prefix,
                "source": mysql_source(mariadb_server, tables, 1002),
                "sink": {"type": "log", "path": str(log_dir), "tombstones": True},
            },
        ],
    )
    d = daemon(config).start()

    wait_started(d, log_dir, state / "checkpoint.json")
    run_mixed_workload(mariadb_server, db)

    def in_log() -> int:
        return sum(1 for _ in LogReader(log_dir).records())

    wait_until(lambda: in_log() >= MIXED_EVENTS, 60, "the log to hold every event")
    from_log = log_by_topic(log_dir)
    topics = [f"{prefix}.{db}.items", f"{prefix}.{db}.tags", f"{prefix}.transaction"]
    wait_until(lambda: set(reader.topics(prefix)) == set(topics), 60, "the topics")
    events = reader.read(topics, at_least=MIXED_EVENTS)
    assert d.terminate() == 0, d.output()

    assert len(events) == MIXED_EVENTS
    assert sorted(from_log) == sorted(topics)
    from_kafka = by_topic((e.topic, e.key, e.value) for e in events)
    assert_same_per_topic(from_kafka, from_log, "kafka")

    values = [e.value for e in events if e.value is not None and "op" in e.value]
    assert Counter(v["op"] for v in values) == MIXED_OPS
    items = from_kafka[f"{prefix}.{db}.items"]
    first_key, first = items[0]
    assert first_key == {"id": 1}
    assert first["after"]["name"] == "item 1" and first["after"]["price"] == Decimal("1.25")
    assert first["after"]["data"] == b"\x00\x01" and first["after"]["note"] == "é"
    assert first["source"]["connector"] == "mysql" and first["source"]["db"] == db
    # A delete is followed by a tombstone with the same key.
    deletes = [i for i, (_, v) in enumerate(items) if v is not None and v["op"] == "d"]
    assert len(deletes) == 5 and all(items[i + 1] == (items[i][0], None) for i in deletes)
    tx = from_kafka[f"{prefix}.transaction"]
    assert [v["status"] for _, v in tx] == ["BEGIN", "END"] * 5
    # The multi-row transaction: 10 + 1 item changes and 10 tags, in one transaction.
    assert tx[3][1]["event_count"] == 21
