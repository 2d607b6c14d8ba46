"""MariaDB -> Kafka: what a consumer with AvroDeserializer reads equals the built-in log."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.kafka.conftest import KafkaCase
from tests.integration.mysql.conftest import (
    MIXED_EVENTS,
    MIXED_OPS,
    mixed_tables,
    mysql_source,
    run_mixed_workload,
    wait_started,
)

pytestmark = pytest.mark.integration


def test_consumer_reads_what_the_log_holds(
    mariadb_server: Any, mysql_db: str, case: KafkaCase
) -> None:
    db, prefix = mysql_db, case.prefix
    tables = mixed_tables(mariadb_server, db)
    d = case.start(
        case.beside_log(
            mysql_source(mariadb_server, tables, 1001), mysql_source(mariadb_server, tables, 1002)
        )
    )
    wait_started(d, case.log_dir, case.state / "checkpoint.json")
    run_mixed_workload(mariadb_server, db)

    topics = [f"{prefix}.{db}.items", f"{prefix}.{db}.tags", f"{prefix}.transaction"]
    events, from_kafka = case.read_as_the_log(topics, MIXED_EVENTS)
    assert d.terminate() == 0, d.output()

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
