"""Postgres -> Kafka: what a consumer with AvroDeserializer reads equals the built-in log."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.kafka.conftest import KafkaCase, dbname, postgres_source, start_streaming

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2),
                    seen timestamptz, flag boolean, doc jsonb);
CREATE TABLE tags (item int, tag text, PRIMARY KEY (item, tag));
"""

WORKLOAD = [
    "INSERT INTO items SELECT g, 'item ' || g, g * 1.25, "
    "'2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', g % 2 = 0, "
    "json_build_object('g', g) FROM generate_series(1, 300) g",
    "BEGIN; UPDATE items SET price = price + 1 WHERE id <= 50; "
    "INSERT INTO tags SELECT g, 't' || g FROM generate_series(1, 20) g; COMMIT",
    "DELETE FROM items WHERE id > 280",
    "DELETE FROM tags WHERE item <= 5",
    "UPDATE items SET name = 'renamed' WHERE id = 7",
]


def test_consumer_reads_what_the_log_holds(pg_server: Any, pg_db: str, case: KafkaCase) -> None:
    db, prefix = dbname(pg_db), case.prefix
    pg_server.psql(SCHEMA, db)
    source = postgres_source(pg_db, "public.items", "public.tags")
    d = start_streaming(pg_server, case, case.beside_log(source, source))
    for sql in WORKLOAD:
        pg_server.psql(sql, db)

    # 371 item changes + 20 tombstones, 25 tag changes + 5 tombstones, 5 transactions.
    expected = 371 + 20 + 25 + 5 + 2 * 5
    topics = [f"{prefix}.public.items", f"{prefix}.public.tags", f"{prefix}.transaction"]
    _, in_kafka = case.read_as_the_log(topics, expected)

    items = in_kafka[f"{prefix}.public.items"]
    ops = Counter("tombstone" if v is None else v["op"] for _, v in items)
    assert ops == {"c": 300, "u": 51, "d": 20, "tombstone": 20}
    first_key, first = items[0]
    assert first_key == {"id": 1}
    assert first["after"]["name"] == "item 1"
    assert first["after"]["price"] == Decimal("1.25")
    assert first["after"]["flag"] is False
    assert first["source"]["table"] == "items" and first["source"]["name"] == prefix
    # A delete is followed by a tombstone with the same key.
    deletes = [i for i, (_, v) in enumerate(items) if v is not None and v["op"] == "d"]
    assert all(items[i + 1] == (items[i][0], None) for i in deletes)
    tx = in_kafka[f"{prefix}.transaction"]
    assert [v["status"] for _, v in tx] == ["BEGIN", "END"] * 5
    d.terminate()
