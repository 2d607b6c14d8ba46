"""Names, transaction metadata schemas and column defaults as Debezium and AvroConverter make them.

The expected schemas are written out by hand from Debezium's SchemaFactory and Confluent's
AvroData (fromConnectSchema), not computed by the code under test.
"""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from cdc import avro
from cdc.errors import SourceError
from cdc.model import NO_DEFAULT, ChangeBatch, Column, RowChange, TableSchema, TxBoundary
from cdc.sinks.kafka._registry import RegistryClient
from cdc.sinks.kafka.config import SchemaRegistryConfig
from cdc.sinks.nats._subjects import SubjectMap
from tests.unit.kafka_registry_standin import RegistryServer

SOURCE = {
    "type": "record",
    "name": "Source",
    "namespace": "test",
    "fields": [{"name": "ts_us", "type": "long"}],
}


class Registry:
    def __init__(self) -> None:
        self.schemas: dict[int, Any] = {}
        self.subjects: dict[str, int] = {}

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        sid = len(self.schemas) + 1
        self.schemas[sid] = schema
        self.subjects[subject] = sid
        return sid


def decode(schema: Any, data: bytes, reader: Any = None) -> Any:
    _, body = avro.unframe(data)
    parsed_reader = None if reader is None else fastavro.parse_schema(reader)
    return fastavro.schemaless_reader(
        io.BytesIO(body), fastavro.parse_schema(schema), parsed_reader
    )


# --- the transaction topic ------------------------------------------------------------------------

DEBEZIUM_TX_KEY = {
    "type": "record",
    "name": "TransactionMetadataKey",
    "namespace": "io.debezium.connector.common",
    "fields": [{"name": "id", "type": "string"}],
    "connect.version": 1,
    "connect.name": "io.debezium.connector.common.TransactionMetadataKey",
}
DEBEZIUM_TX_VALUE = {
    "type": "record",
    "name": "TransactionMetadataValue",
    "namespace": "io.debezium.connector.common",
    "fields": [
        {"name": "status", "type": "string"},
        {"name": "id", "type": "string"},
        {"name": "event_count", "type": ["null", "long"], "default": None},
        {
            "name": "data_collections",
            "type": [
                "null",
                {
                    "type": "array",
                    "items": [
                        "null",
                        {
                            "type": "record",
                            "name": "collection",
                            "namespace": "event",
                            "fields": [
                                {"name": "data_collection", "type": "string"},
                                {"name": "event_count", "type": "long"},
                            ],
                            "connect.version": 1,
                            "connect.name": "event.collection",
                        },
                    ],
                },
            ],
            "default": None,
        },
        {"name": "ts_ms", "type": "long"},
    ],
    "connect.version": 1,
    "connect.name": "io.debezium.connector.common.TransactionMetadataValue",
}


@pytest.mark.parametrize("specialise", [True, False])
def test_transaction_schemas_are_debeziums(specialise: bool) -> None:
    key, value = avro.transaction_schemas("shop")
    assert key == DEBEZIUM_TX_KEY
    assert value == DEBEZIUM_TX_VALUE
    reg = Registry()
    enc = avro.Encoder(reg, SOURCE, "shop.transaction", False, specialise=specialise)
    out = enc.encode(
        ChangeBatch(
            [
                TxBoundary("BEGIN", "7:100", 5, "b"),
                TxBoundary("END", "7:100", 6, "e", 3, {"public.a": 2, "public.b": 1}),
            ],
            {},
        )
    )
    assert enc.fallbacks == 0
    begin, end = out.records
    # A consumer holding Debezium's schemas reads them.
    assert decode(DEBEZIUM_TX_KEY, begin.key or b"") == {"id": "7:100"}
    assert decode(DEBEZIUM_TX_VALUE, begin.value or b"") == {
        "status": "BEGIN",
        "id": "7:100",
        "event_count": None,
        "data_collections": None,
        "ts_ms": 5,
    }
    assert decode(DEBEZIUM_TX_VALUE, end.value or b"")["data_collections"] == [
        {"data_collection": "public.a", "event_count": 2},
        {"data_collection": "public.b", "event_count": 1},
    ]


# --- topic and Avro names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "topic"),
    [
        ("orders", "p.public.orders"),
        ("Spaced Table", "p.public.Spaced_Table"),
        ("my-table", "p.public.my-table"),  # legal in a topic: kept, as Debezium keeps it
        ("cost$", "p.public.cost_"),
        ("1st", "p.public.1st"),
        ("café", "p.public.caf_"),
        ("a😀b", "p.public.a__b"),  # two UTF-16 units, two underscores, as in Java
        ('we"ird/na:me', "p.public.we_ird_na_me"),
    ],
)
def test_topic_names_are_debeziums(table: str, topic: str) -> None:
    assert avro.topic_name("p", "public", table) == topic


def test_topic_names_are_cut_at_kafkas_limit() -> None:
    assert avro.topic_name("p", "s", "t" * 300) == ("p.s." + "t" * 300)[:249]


_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def avro_names(schema: Any) -> list[str]:
    """Every record name, namespace part and field name in ``schema``."""
    out: list[str] = []
    if isinstance(schema, list):
        for s in schema:
            out += avro_names(s)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            out.append(schema["name"])
            out += schema.get("namespace", "").split(".") if schema.get("namespace") else []
            for f in schema["fields"]:
                out.append(f["name"])
                out += avro_names(f["type"])
        elif schema.get("type") == "array":
            out += avro_names(schema["items"])
    return out


ODD = [
    "Spaced Table",
    "my-table",
    "cost$",
    "1st",
    "café",
    "日本",
]


def odd_table(name: str) -> TableSchema:
    return TableSchema(
        avro.topic_name("p", "public", name),
        "public",
        name,
        (
            Column("1 id", "int", False, "integer"),
            Column("total-€", "string", True, "text"),
            Column("ok", "boolean", True, "boolean"),
        ),
        (0,),
    )


@pytest.mark.parametrize("name", ODD)
def test_odd_table_names_give_valid_avro_and_round_trip(name: str) -> None:
    table = odd_table(name)
    reg = Registry()
    enc = avro.Encoder(reg, SOURCE, None, True)
    out = enc.encode(
        ChangeBatch([RowChange(table, "c", None, (1, "x", True), {"ts_us": 1}, 1, "a")], {})
    )
    (rec,) = out.records
    assert _KAFKA_TOPIC.fullmatch(rec.topic), rec.topic
    for sid in reg.schemas.values():
        for n in avro_names(sid):
            assert _AVRO_NAME.fullmatch(n), (n, sid)
    env = reg.schemas[reg.subjects[f"{rec.topic}-value"]]
    ns = env["namespace"]
    assert env["connect.name"] == f"{ns}.Envelope"
    value = env["fields"][0]["type"][1]
    assert value["connect.name"] == f"{ns}.Value" == f"{value['namespace']}.{value['name']}"
    assert [f["name"] for f in value["fields"]] == ["_1_id", "total__", "ok"]
    assert decode(env, rec.value or b"")["after"] == {"_1_id": 1, "total__": "x", "ok": True}
    assert decode(reg.schemas[reg.subjects[f"{rec.topic}-key"]], rec.key or b"") == {"_1_id": 1}


def test_debezium_names_where_they_are_valid_avro() -> None:
    ns = avro.value_record(odd_table("Spaced Table"))["namespace"]
    assert ns == "p.public.Spaced_Table"
    assert avro.value_record(odd_table("my-table"))["connect.name"] == "p.public.my_table.Value"
    # Debezium keeps "1st" after a dot (not valid Avro); ours is the nearest valid name.
    assert avro.value_record(odd_table("1st"))["namespace"] == "p.public._1st"


def test_odd_table_is_accepted_by_the_registry_and_maps_to_one_nats_subject() -> None:
    """The same topic names the log record, the Kafka topic and its subjects, and the NATS
    subject; the registry takes the schemas and a deserializer reads the event back."""
    server = RegistryServer()
    try:
        client = RegistryClient(SchemaRegistryConfig(url=server.url))
        table = odd_table("Spaced Table")
        enc = avro.Encoder(client, SOURCE, "p.transaction", True)
        out = enc.encode(
            ChangeBatch(
                [
                    RowChange(table, "c", None, (1, "x", None), {"ts_us": 1}, 1, "a"),
                    RowChange(table, "d", (1, "x", None), None, {"ts_us": 2}, 1, "b"),
                ],
                {},
            )
        )
        topics = {r.topic for r in out.records}
        assert topics == {"p.public.Spaced_Table"}
        assert server.versions("p.public.Spaced_Table-value") == [1]
        assert server.versions("p.public.Spaced_Table-key") == [2]
        sid, _ = avro.unframe(out.records[0].value or b"")
        schema = json.loads(server.state.schemas[sid - 1])
        assert decode(schema, out.records[0].value or b"")["after"]["total__"] == "x"
        assert out.records[2].value is None  # the tombstone, same topic
        subjects = SubjectMap("p", "cdc")
        assert subjects.subject("p.public.Spaced_Table") == "cdc.public.Spaced_Table"
    finally:
        server.stop()


# --- columns whose names collide ------------------------------------------------------------------


def test_columns_that_become_one_field_name_are_refused_naming_them() -> None:
    table = TableSchema(
        "p.public.t",
        "public",
        "t",
        (
            Column("id", "int", False, "integer"),
            Column("a b", "string", True, "text"),
            Column("a_b", "string", True, "text"),
            Column("a-b", "string", True, "text"),
        ),
        (0,),
    )
    enc = avro.Encoder(Registry(), SOURCE, None, False)
    with pytest.raises(SourceError) as e:
        enc.encode(
            ChangeBatch([RowChange(table, "c", None, (1, "1", "2", "3"), {"ts_us": 1}, 1, "a")], {})
        )
    assert not e.value.retryable
    msg = str(e.value)
    assert "public.t" in msg and "'a b', 'a_b', 'a-b'" in msg and "'a_b'" in msg
    assert "drop_columns" in msg


def test_leading_digits_do_not_collide() -> None:
    # Debezium keeps the digit behind the underscore: "1a" and "a" stay apart.
    assert avro.avro_name("1a") == "_1a" and avro.avro_name("_1a") == "_1a"
    assert avro.avro_name("a") == "a"


# --- column defaults ------------------------------------------------------------------------------

DEFAULTS = TableSchema(
    "p.public.d",
    "public",
    "d",
    (
        Column("id", "int", False, "integer", default=0),
        Column("small", avro.INT16, True, "smallint", default=5),
        Column("price", avro.decimal(5, 2), True, "numeric(5,2)", default=Decimal("1.50")),
        Column("name", "string", False, "text", default="n/a"),
        Column("raw", "bytes", True, "bytea", default=b"\x00\xff"),
        Column("ratio", "double", True, "float8", default=1.5),
        Column("ok", "boolean", False, "boolean", default=False),
        Column("day", avro.DATE, True, "date", default=0),
        Column("note", "string", True, "text"),
        Column("gone", "string", True, "text", default=None),
        Column("big", "long", True, "bigint", default=NO_DEFAULT),
    ),
    (0,),
)


def test_defaults_are_written_as_avroconverter_writes_them() -> None:
    fields = {f["name"]: f for f in avro.value_record(DEFAULTS)["fields"]}
    # A required column: the type carries connect.default, the field default.
    assert fields["id"] == {
        "name": "id",
        "type": {"type": "int", "connect.default": 0},
        "default": 0,
    }
    assert fields["name"] == {
        "name": "name",
        "type": {"type": "string", "connect.default": "n/a"},
        "default": "n/a",
    }
    assert fields["ok"]["default"] is False
    # An optional column with a default: the union puts the type first.
    assert fields["small"] == {
        "name": "small",
        "type": [{"type": "int", "connect.default": 5, "connect.type": "int16"}, "null"],
        "default": 5,
    }
    # Bytes, and decimals as their unscaled bytes: one character per byte.
    assert fields["raw"]["default"] == "\x00\xff"
    assert fields["price"]["default"] == "\x00\x96"  # 150 at scale 2
    assert list(fields["price"]["type"][0]) == [
        "type",
        "scale",
        "precision",
        "connect.version",
        "connect.parameters",
        "connect.default",
        "connect.name",
        "logicalType",
    ]
    assert fields["day"]["type"][0] == {
        "type": "int",
        "connect.version": 1,
        "connect.default": 0,
        "connect.name": "io.debezium.time.Date",
    }
    # No default: as before.
    for n in ("note", "gone", "big"):
        assert fields[n]["type"][0] == "null" and fields[n]["default"] is None
    key = avro.key_schema(DEFAULTS)
    assert key is not None and key["fields"] == [fields["id"]]


def test_a_reader_fills_a_new_column_with_its_default() -> None:
    """Schema evolution as a consumer meets it: an event written before a column was added,
    read with the newer schema, gets the column's default."""
    old = TableSchema("p.public.d", "public", "d", DEFAULTS.columns[:1], (0,))
    reg = Registry()
    enc = avro.Encoder(reg, SOURCE, None, False)
    out = enc.encode(ChangeBatch([RowChange(old, "c", None, (7,), {"ts_us": 1}, 1, "a")], {}))
    new_env = avro.envelope_schema(DEFAULTS, SOURCE)
    sid, _ = avro.unframe(out.records[0].value or b"")
    after = decode(reg.schemas[sid], out.records[0].value or b"", new_env)["after"]
    # fastavro hands a bytes default back as its JSON string; Java's Avro decodes that string
    # as ISO-8859-1, as the specification says bytes defaults are written.
    assert after.pop("raw").encode("latin-1") == b"\x00\xff"
    assert after.pop("price").encode("latin-1") == avro.decimal_bytes(Decimal("1.50"), 2)
    assert after == {
        "id": 7,
        "small": 5,
        "name": "n/a",
        "ratio": 1.5,
        "ok": False,
        "day": 0,
        "note": None,
        "gone": None,
        "big": None,
    }


def test_defaults_of_other_forms_are_left_out() -> None:
    assert avro.default_json(avro.POINT, {"x": 0.0}) is NO_DEFAULT
    assert avro.default_json(avro.array("int"), [1]) is NO_DEFAULT
    assert avro.default_json("double", float("nan")) is NO_DEFAULT
    assert avro.default_json("int", "7") is NO_DEFAULT  # a source bug must not break the schema
    assert avro.default_json("bytes", Decimal(1)) is NO_DEFAULT


def test_tables_that_sanitise_to_one_topic_are_refused() -> None:
    a, b = odd_table("Order Lines"), odd_table("Order_Lines")
    assert a.topic == b.topic == "p.public.Order_Lines"
    enc = avro.Encoder(Registry(), SOURCE, None, False)
    enc.encode(ChangeBatch([RowChange(a, "c", None, (1, "x", None), {"ts_us": 1}, 1, "a")], {}))
    with pytest.raises(SourceError) as e:
        enc.encode(ChangeBatch([RowChange(b, "c", None, (1, "x", None), {"ts_us": 1}, 1, "b")], {}))
    assert not e.value.retryable
    assert "public.'Order Lines' and public.'Order_Lines'" in str(e.value)
    assert "'p.public.Order_Lines'" in str(e.value)


def test_tables_routed_to_one_topic_on_purpose_are_let_through() -> None:
    shards = [odd_table(f"shard_{i}") for i in (1, 2)]
    merged = [
        TableSchema("p.public.shards", t.namespace, t.table, t.columns, t.key) for t in shards
    ]
    enc = avro.Encoder(Registry(), SOURCE, None, False)
    out = enc.encode(
        ChangeBatch(
            [RowChange(t, "c", None, (1, "x", None), {"ts_us": 1}, 1, "a") for t in merged], {}
        )
    )
    assert [r.topic for r in out.records] == ["p.public.shards"] * 2


@pytest.mark.parametrize("prefix", ["my shop", "café", "a/b", "x" * 201, ""])
def test_topic_prefix_must_be_a_legal_topic_name(prefix: str) -> None:
    """Debezium validates topic.prefix: every topic starts with it, unsanitised."""
    from cdc.config import parse
    from cdc.errors import ConfigError

    text = f"""
pipelines:
  - name: shop
    topic_prefix: "{prefix}"
    source: {{type: postgres, dsn: "host=127.0.0.1 dbname=shop", tables: ["public.t"]}}
    sink: {{type: log, path: ./data}}
"""
    with pytest.raises(ConfigError, match=r"pipelines\[0\]\.topic_prefix: .*invalid topic prefix"):
        parse(text)
    assert parse(text.replace(f'"{prefix}"', '"my-shop.v2_x"')).pipelines[0].prefix == (
        "my-shop.v2_x"
    )
