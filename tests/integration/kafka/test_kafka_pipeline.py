"""Postgres -> Kafka: what a consumer with AvroDeserializer reads equals the built-in log."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cdc._jsonout import AvroDecoder
from sinks.log import LogReader
from tests.conftest import wait_until
from tests.integration.kafka.conftest import (
    Reader,
    dbname,
    kafka_sink,
    wait_streaming,
    write_config,
)

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


def _strip(value: Any) -> Any:
    """The envelope without what depends on the pipeline rather than the change: ts_ms/ts_us/
    ts_ns (when the pipeline processed the event) and source.sequence's first element (the last
    commit the pipeline saw before, which depends on when its slot was created)."""
    if isinstance(value, dict) and "op" in value:
        out = {k: v for k, v in value.items() if k not in ("ts_ms", "ts_us", "ts_ns")}
        out["source"] = {**value["source"], "sequence": json.loads(value["source"]["sequence"])[1]}
        return out
    return value


def test_consumer_reads_what_the_log_holds(
    pg_server: Any,
    pg_db: str,
    daemon: Any,
    kafka: Any,
    registry: Any,
    reader: Reader,
    prefix: str,
    tmp_path: Path,
) -> None:
    db = dbname(pg_db)
    pg_server.psql(SCHEMA, db)
    tables = ["public.items", "public.tags"]
    source = {"type": "postgres", "dsn": pg_db, "tables": tables}
    config = write_config(
        tmp_path / "cdc.yaml",
        [
            {
                "name": prefix,
                "source": source,
                "sink": kafka_sink(kafka, registry, tmp_path / "kafka-state"),
            },
            {
                "name": prefix + "_log",
                "topic_prefix": prefix,
                "source": source,
                "sink": {"type": "log", "path": str(tmp_path / "log"), "tombstones": True},
            },
        ],
    )
    d = daemon(config).start()
    wait_streaming(pg_server, d, f"cdc_{prefix}")
    wait_streaming(pg_server, d, f"cdc_{prefix}_log")
    for sql in WORKLOAD:
        pg_server.psql(sql, db)

    # 371 item changes + 20 tombstones, 25 tag changes + 5 tombstones, 5 transactions.
    expected = 371 + 20 + 25 + 5 + 2 * 5

    def log_records() -> list[Any]:
        if not (tmp_path / "log").exists():
            return []
        return list(LogReader(tmp_path / "log").records())

    records = wait_until(lambda: len(log_records()) >= expected and log_records(), 60, "the log")
    log_reader = LogReader(tmp_path / "log")
    dec = AvroDecoder(log_reader.schemas.get)
    in_log: dict[str, list[Any]] = {}
    for r in records:
        in_log.setdefault(r.topic, []).append((dec.decode(r.key), _strip(dec.decode(r.value))))

    topics = [f"{prefix}.public.items", f"{prefix}.public.tags", f"{prefix}.transaction"]
    wait_until(lambda: set(reader.topics(prefix)) == set(topics), 60, "the topics")
    events = reader.read(topics, at_least=expected)
    in_kafka: dict[str, list[Any]] = {}
    for e in events:
        in_kafka.setdefault(e.topic, []).append((e.key, _strip(e.value)))

    assert len(events) == expected
    assert sorted(in_kafka) == sorted(in_log) == sorted(topics)
    for topic in topics:
        pairs = zip(in_kafka[topic], in_log[topic], strict=False)
        diff = [(i, a, b) for i, (a, b) in enumerate(pairs) if a != b]
        assert not diff, f"{topic}: first difference (index, kafka, log): {diff[0]}"
        assert len(in_kafka[topic]) == len(in_log[topic]), topic

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
