"""Tables whose names are not legal topic or Avro names, with column defaults, into Kafka.

The broker takes the sanitised topics, the registry the schemas (defaults and Debezium's
transaction metadata schemas included), a consumer with AvroDeserializer reads what the log holds.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.kafka.conftest import (
    KafkaCase,
    dbname,
    postgres_source,
    set_compatibility,
    start_streaming,
    subject_versions,
)

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE "Spaced Table" (id serial PRIMARY KEY, "total-€" numeric(8,2) DEFAULT 1.5,
                             "1 n" int NOT NULL DEFAULT 5, note text);
CREATE TABLE "my-table" (id int PRIMARY KEY, "cost$" text DEFAULT 'free');
"""

WORKLOAD = [
    "INSERT INTO \"Spaced Table\" (note) SELECT 'n' || g FROM generate_series(1, 5) g",
    'BEGIN; UPDATE "Spaced Table" SET "total-€" = 2.25 WHERE id = 1; '
    'INSERT INTO "my-table" (id) VALUES (1), (2); COMMIT',
    'DELETE FROM "Spaced Table" WHERE id = 5',
]


def latest_schema(registry: Any, subject: str) -> dict[str, Any]:
    url = f"{registry.url}/subjects/{urllib.parse.quote(subject, safe='')}/versions/latest"
    with urllib.request.urlopen(url, timeout=10) as resp:
        schema: dict[str, Any] = json.loads(json.loads(resp.read())["schema"])
    return schema


def test_odd_names_and_defaults_reach_kafka(pg_server: Any, pg_db: str, case: KafkaCase) -> None:
    db, prefix = dbname(pg_db), case.prefix
    pg_server.psql(SCHEMA, db)
    source = postgres_source(pg_db, 'public."Spaced Table"', 'public."my-table"')
    d = start_streaming(pg_server, case, case.beside_log(source, source))
    for sql in WORKLOAD:
        pg_server.psql(sql, db)

    spaced, dashed = f"{prefix}.public.Spaced_Table", f"{prefix}.public.my-table"
    # 5 + 1 + 1 spaced changes and a tombstone, 2 my-table changes, 3 transactions.
    expected = 7 + 1 + 2 + 2 * 3
    _, in_kafka = case.read_as_the_log([spaced, dashed, f"{prefix}.transaction"], expected)

    first_key, first = in_kafka[spaced][0]
    assert first_key == {"id": 1}
    assert first["after"] == {"id": 1, "total__": Decimal("1.50"), "_1_n": 5, "note": "n1"}
    assert first["source"]["table"] == "Spaced Table"
    assert [v["after"]["cost_"] for _, v in in_kafka[dashed]] == ["free", "free"]
    ends = [v for _, v in in_kafka[f"{prefix}.transaction"] if v["status"] == "END"]
    assert ends[1]["data_collections"] == [
        {"data_collection": "public.Spaced Table", "event_count": 1},
        {"data_collection": "public.my-table", "event_count": 2},
    ]

    for subject in (f"{spaced}-key", f"{spaced}-value", f"{dashed}-value"):
        assert len(subject_versions(case.registry, subject)) == 1, subject
    value = latest_schema(case.registry, f"{spaced}-value")
    assert value["namespace"] == spaced and value["connect.name"] == f"{spaced}.Envelope"
    fields = {f["name"]: f for f in value["fields"][0]["type"][1]["fields"]}
    assert fields["id"]["default"] == 0  # serial
    assert fields["_1_n"]["default"] == 5
    assert fields["total__"]["type"][1] == "null"  # a nullable column with a default
    key = latest_schema(case.registry, f"{prefix}.transaction-key")
    assert key["name"] == "TransactionMetadataKey" and key["connect.version"] == 1
    assert d.terminate() == 0


def test_a_column_added_with_a_default_is_backward_compatible(
    pg_server: Any, pg_db: str, case: KafkaCase
) -> None:
    """Debezium's schemas carry the default, so a registry enforcing BACKWARD compatibility
    takes a NOT NULL column added with a constant default (old records read with it)."""
    db = dbname(pg_db)
    pg_server.psql("CREATE TABLE doc (id int PRIMARY KEY, title text NOT NULL)", db)
    d = start_streaming(pg_server, case, [case.pipeline(postgres_source(pg_db, "public.doc"))])
    topic = f"{case.prefix}.public.doc"
    pg_server.psql("INSERT INTO doc VALUES (1, 'a')", db)
    case.reader.read([topic], at_least=1)
    set_compatibility(case.registry, f"{topic}-value", "BACKWARD")
    pg_server.psql("ALTER TABLE doc ADD COLUMN n int NOT NULL DEFAULT 0", db)
    pg_server.psql("INSERT INTO doc VALUES (2, 'b', 7)", db)
    events = case.reader.read([topic], at_least=2)
    assert [e.value["after"] for e in events] == [
        {"id": 1, "title": "a"},
        {"id": 2, "title": "b", "n": 7},
    ]
    assert len(subject_versions(case.registry, f"{topic}-value")) == 2
    assert d.terminate() == 0
