"""``format: json`` into Kafka, read by a consumer written for Debezium's JSON (JsonConverter's
schema + payload documents, or payloads alone), and the outbox and unwrap transforms on that path.

The expected documents copy the shape of Debezium's documented PostgreSQL create event (the
``customers`` table of its "Data change events" section: key and value, each a schema and a
payload). Our events carry what Debezium 2.x adds since that example was written (``sequence``,
``ts_us``, ``ts_ns``, the ``transaction`` block): the consumer finds every documented field, with
the documented type, optionality and name, and the documented payload values.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.kafka.conftest import (
    Event,
    KafkaCase,
    Reader,
    dbname,
    postgres_source,
    start_streaming,
)

pytestmark = pytest.mark.integration

# Debezium's example table (its PostgreSQL connector documentation).
CUSTOMERS = """
CREATE TABLE customers (
  id SERIAL,
  first_name VARCHAR(255) NOT NULL,
  last_name VARCHAR(255) NOT NULL,
  email VARCHAR(255) NOT NULL,
  PRIMARY KEY(id)
);
"""


def documented_key(prefix: str) -> dict[str, Any]:
    """Debezium's documented key of a customers change (its server name replaced by ours)."""
    return {
        "schema": {
            "type": "struct",
            "name": f"{prefix}.public.customers.Key",
            "optional": False,
            "fields": [{"field": "id", "type": "int32", "optional": False}],
        },
        "payload": {"id": 1},
    }


def _row_schema(prefix: str, field: str) -> dict[str, Any]:
    return {
        "type": "struct",
        "fields": [
            {"type": "int32", "optional": False, "field": "id"},
            {"type": "string", "optional": False, "field": "first_name"},
            {"type": "string", "optional": False, "field": "last_name"},
            {"type": "string", "optional": False, "field": "email"},
        ],
        "optional": True,
        "name": f"{prefix}.public.customers.Value",
        "field": field,
    }


def documented_create(prefix: str, db: str) -> dict[str, Any]:
    """Debezium's documented value of a create event of the customers table."""
    return {
        "schema": {
            "type": "struct",
            "fields": [
                _row_schema(prefix, "before"),
                _row_schema(prefix, "after"),
                {
                    "type": "struct",
                    "fields": [
                        {"type": "string", "optional": False, "field": "version"},
                        {"type": "string", "optional": False, "field": "connector"},
                        {"type": "string", "optional": False, "field": "name"},
                        {"type": "int64", "optional": False, "field": "ts_ms"},
                        {
                            "type": "string",
                            "optional": True,
                            "name": "io.debezium.data.Enum",
                            "version": 1,
                            "default": "false",
                            "field": "snapshot",
                        },
                        {"type": "string", "optional": False, "field": "db"},
                        {"type": "string", "optional": False, "field": "schema"},
                        {"type": "string", "optional": False, "field": "table"},
                        {"type": "int64", "optional": True, "field": "txId"},
                        {"type": "int64", "optional": True, "field": "lsn"},
                        {"type": "int64", "optional": True, "field": "xmin"},
                    ],
                    "optional": False,
                    "name": "io.debezium.connector.postgresql.Source",
                    "field": "source",
                },
                {"type": "string", "optional": False, "field": "op"},
                {"type": "int64", "optional": True, "field": "ts_ms"},
            ],
            "optional": False,
            "name": f"{prefix}.public.customers.Envelope",
        },
        "payload": {
            "before": None,
            "after": {
                "id": 1,
                "first_name": "Anne",
                "last_name": "Kretchmar",
                "email": "annek@noanswer.org",
            },
            "source": {
                "connector": "postgresql",
                "name": prefix,
                "snapshot": "false",
                "db": db,
                "schema": "public",
                "table": "customers",
                "xmin": None,
            },
            "op": "c",
        },
    }


def conforms(ours: Any, documented: Any, where: str = "") -> None:
    """``ours`` holds everything ``documented`` shows, as a Debezium JSON consumer reads it:
    objects key by key (ours may have more keys), a struct's ``fields`` by their ``field`` name
    and in the documented relative order, other values equal."""
    if isinstance(documented, dict):
        assert isinstance(ours, dict), f"{where}: {ours!r} is not an object"
        for k, v in documented.items():
            assert k in ours, f"{where}: no {k!r} in {sorted(ours)}"
            if k == "fields":
                by_name = {f["field"]: f for f in ours[k]}
                order = [f["field"] for f in ours[k]]
                names = [f["field"] for f in v]
                assert [n for n in order if n in names] == names, f"{where}.fields order"
                for f in v:
                    assert f["field"] in by_name, f"{where}: no field {f['field']!r}"
                    conforms(by_name[f["field"]], f, f"{where}.{f['field']}")
            else:
                conforms(ours[k], v, f"{where}.{k}")
    else:
        assert ours == documented, f"{where}: {ours!r} != {documented!r}"


def read_json(case: KafkaCase, topics: list[str], at_least: int) -> list[Event]:
    """The records of ``topics`` as a plain consumer gets them: bytes, parsed as JSON."""
    raw = Reader(case.kafka.bootstrap_servers, None).read(topics, at_least=at_least)
    for e in raw:
        e.key = None if e.key is None else json.loads(e.key)
        e.value = None if e.value is None else json.loads(e.value)
    return raw


def test_json_with_and_without_schemas_as_debezium_documents_it(
    pg_server: Any, pg_db: str, case: KafkaCase
) -> None:
    db, prefix = dbname(pg_db), case.prefix
    plain = prefix + "_plain"
    pg_server.psql(CUSTOMERS, db)
    source = postgres_source(pg_db, "public.customers")
    pipelines = [
        case.pipeline(source, case.sink(format="json")),
        {
            "name": plain,
            "source": source,
            "sink": case.sink(
                format="json", schemas_enable=False, path=str(case.tmp_path / "plain")
            ),
        },
    ]
    d = start_streaming(pg_server, case, pipelines)
    pg_server.psql(
        "INSERT INTO customers (first_name, last_name, email) "
        "VALUES ('Anne', 'Kretchmar', 'annek@noanswer.org'); "
        "UPDATE customers SET email = 'anne@example.org' WHERE id = 1; "
        "DELETE FROM customers WHERE id = 1",
        db,
    )
    topic = f"{prefix}.public.customers"
    # create, update, delete and its tombstone; BEGIN and END of each of the 3 transactions
    events = read_json(case, [topic, f"{prefix}.transaction"], 4 + 6)
    rows = [e for e in events if e.topic == topic]
    assert len(rows) == 4
    conforms(rows[0].key, documented_key(prefix))
    conforms(rows[0].value, documented_create(prefix, db))
    assert rows[0].value["payload"]["source"]["lsn"] > 0
    assert [r.value["payload"]["op"] for r in rows[:3]] == ["c", "u", "d"]
    assert rows[1].value["payload"]["after"]["email"] == "anne@example.org"
    assert rows[2].value["payload"]["before"]["id"] == 1
    assert rows[3].value is None and rows[3].key == rows[2].key  # the tombstone
    tx = [e.value["payload"] for e in events if e.topic == f"{prefix}.transaction"]
    assert [t["status"] for t in tx] == ["BEGIN", "END"] * 3
    assert rows[0].value["payload"]["transaction"]["id"] == tx[0]["id"]

    # schemas_enable false: the payloads alone, equal to the payloads above
    plain_topic = f"{plain}.public.customers"
    bare = read_json(case, [plain_topic], 4)
    assert bare[0].key == {"id": 1}
    assert bare[0].value["after"] == rows[0].value["payload"]["after"]
    assert "schema" not in bare[0].value
    assert [b.value and b.value["op"] for b in bare] == ["c", "u", "d", None]
    assert d.terminate() == 0


OUTBOX = """
CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text NOT NULL, aggregateid text NOT NULL,
                     type text NOT NULL, payload jsonb);
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(8,2));
ALTER TABLE items REPLICA IDENTITY FULL;
"""


def test_outbox_routes_and_unwrap_flattens_into_kafka_json(
    pg_server: Any, pg_db: str, case: KafkaCase
) -> None:
    db, prefix = dbname(pg_db), case.prefix
    pg_server.psql(OUTBOX, db)
    pipeline = case.pipeline(
        postgres_source(pg_db, "public.outbox", "public.items"),
        case.sink(format="json", decimal_format="numeric"),
        transforms=[
            {
                "type": "outbox",
                "tables": [r"public\.outbox"],
                "route_topic_replacement": prefix + ".outbox.{routedByValue}",
            },
            {"type": "unwrap", "delete_handling_mode": "rewrite", "add_fields": ["op", "table"]},
        ],
    )
    d = start_streaming(pg_server, case, [pipeline])
    pg_server.psql(
        "BEGIN;"
        "INSERT INTO outbox VALUES ('0f8fad5b-d9cb-469f-a165-70867728950e', 'Order', '42', "
        """'OrderCreated', '{"total": 10}');"""
        "INSERT INTO outbox VALUES ('1b4e28ba-2fa1-11d2-883f-0016d3cca427', 'Customer', '7', "
        """'Moved', '{"to": "Paris"}');"""
        "DELETE FROM outbox;"
        "INSERT INTO items VALUES (1, 'pen', 2.50), (2, 'ink', NULL);"
        "COMMIT;"
        "UPDATE items SET price = 3.00 WHERE id = 1;"
        "DELETE FROM items WHERE id = 2;",
        db,
    )
    orders, customers = f"{prefix}.outbox.Order", f"{prefix}.outbox.Customer"
    items = f"{prefix}.public.items"
    events = read_json(case, [orders, customers, items], 2 + 4)
    by_topic: dict[str, list[Event]] = {}
    for e in events:
        by_topic.setdefault(e.topic, []).append(e)
    assert sorted(by_topic) == sorted([orders, customers, items])
    (order,) = by_topic[orders]
    assert order.key == {"schema": {"type": "string", "optional": False}, "payload": "42"}
    assert order.value["schema"] == {
        "type": "string",
        "optional": True,
        "name": "io.debezium.data.Json",
        "version": 1,
    }
    assert json.loads(order.value["payload"]) == {"total": 10}
    assert [c.key["payload"] for c in by_topic[customers]] == ["7"]

    rows = [(e.key["payload"], e.value["payload"]) for e in by_topic[items]]
    assert rows == [
        (
            {"id": 1},
            {
                "id": 1,
                "name": "pen",
                "price": 2.5,
                "__op": "c",
                "__table": "items",
                "__deleted": "false",
            },
        ),
        (
            {"id": 2},
            {
                "id": 2,
                "name": "ink",
                "price": None,
                "__op": "c",
                "__table": "items",
                "__deleted": "false",
            },
        ),
        (
            {"id": 1},
            {
                "id": 1,
                "name": "pen",
                "price": 3.0,
                "__op": "u",
                "__table": "items",
                "__deleted": "false",
            },
        ),
        (
            {"id": 2},
            {
                "id": 2,
                "name": "ink",
                "price": None,
                "__op": "d",
                "__table": "items",
                "__deleted": "true",
            },
        ),
    ]
    schema = by_topic[items][0].value["schema"]
    assert schema["name"] == f"{prefix}.public.items.Value"
    assert [f["field"] for f in schema["fields"]] == [
        "id",
        "name",
        "price",
        "__op",
        "__table",
        "__deleted",
    ]
    assert d.terminate() == 0
