"""JSON records in Kafka Connect JsonConverter's layout (cdc/connectjson.py), without servers."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest

from cdc import avro
from cdc._jsonout import dumps
from cdc.connectjson import JsonEncoder
from cdc.errors import SourceError
from cdc.model import ChangeBatch, Column, RowChange, TableSchema, TxBoundary

SOURCE_SCHEMA = avro.source_schema(
    "io.debezium.connector.postgresql",
    [{"name": "schema", "type": "string"}, {"name": "table", "type": "string"}],
)
SOURCE = {
    "version": "1.0",
    "connector": "postgresql",
    "name": "p",
    "ts_ms": 5,
    "snapshot": "false",
    "db": "d",
    "sequence": None,
    "ts_us": None,
    "ts_ns": None,
    "schema": "public",
    "table": "t",
}

TYPES = TableSchema(
    "p.public.t",
    "public",
    "t",
    (
        Column("id", avro.INT16, False, "int2"),
        Column("amount", avro.decimal(10, 2), True, "numeric"),
        Column("any", avro.VARIABLE_SCALE_DECIMAL, True, "numeric"),
        Column("f", "double", True, "float8"),
        Column("raw", "bytes", True, "bytea"),
        Column("tags", avro.array(["null", "string"]), True, "text[]"),
        Column("p", avro.POINT, True, "point"),
        Column("state", "string", True, "text", default="new"),
        Column("at", avro.TIMESTAMP_MICROS, True, "timestamp"),
    ),
    (0,),
)
ROW = (
    7,
    Decimal("-1.50"),
    {"scale": 1, "value": b"\x0f"},
    float("-inf"),
    b"\x00\xff",
    ["a", None],
    {"x": 1.0, "y": 2.5, "wkb": None, "srid": None},
    None,
    1700000000000000,
)


def encode(*events: Any, **kw: Any) -> list[Any]:
    enc = JsonEncoder(SOURCE_SCHEMA, "p.transaction", True, **kw)
    return enc.encode(ChangeBatch(list(events), {})).records


def test_each_type_as_jsonconverter_writes_it() -> None:
    rec = encode(RowChange(TYPES, "c", None, ROW, SOURCE, 1, "e"))
    assert len(rec) == 1
    doc = json.loads(rec[0].value)
    assert set(doc) == {"schema", "payload"}
    after = doc["payload"]["after"]
    assert after == {
        "id": 7,
        "amount": base64.b64encode(b"\xff\x6a").decode(),  # -150 unscaled, two's complement
        "any": {"scale": 1, "value": "Dw=="},
        "f": "-Infinity",
        "raw": "AP8=",
        "tags": ["a", None],
        "p": {"x": 1.0, "y": 2.5, "wkb": None, "srid": None},
        "state": "new",  # null with a default: the default (replace.null.with.default)
        "at": 1700000000000000,
    }
    fields = {f["field"]: f for f in doc["schema"]["fields"][1]["fields"]}
    assert fields["id"] == {"type": "int16", "optional": False, "field": "id"}
    assert fields["amount"] == {
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "version": 1,
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "amount",
    }
    assert fields["tags"] == {
        "type": "array",
        "items": {"type": "string", "optional": True},
        "optional": True,
        "field": "tags",
    }
    assert fields["state"] == {
        "type": "string",
        "optional": True,
        "default": "new",
        "field": "state",
    }
    assert fields["at"] == {
        "type": "int64",
        "optional": True,
        "name": "io.debezium.time.MicroTimestamp",
        "version": 1,
        "field": "at",
    }
    assert fields["p"]["name"] == "io.debezium.data.geometry.Point"
    assert fields["p"]["doc"] == "Geometry (POINT)"
    assert list(fields["p"]) == ["type", "fields", "optional", "name", "version", "doc", "field"]


def test_numeric_decimals_and_payload_only() -> None:
    rec = encode(
        RowChange(TYPES, "c", None, ROW, SOURCE, 1, "e"),
        schemas_enable=False,
        decimal_format="numeric",
    )
    doc = json.loads(rec[0].value, parse_float=Decimal)
    assert set(doc) == {"before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"}
    assert doc["after"]["amount"] == Decimal("-1.50")
    assert b'"amount":-1.50,' in rec[0].value
    assert json.loads(rec[0].key) == {"id": 7}


def test_a_delete_is_followed_by_a_tombstone_and_tx_metadata_has_its_schema() -> None:
    rec = encode(
        TxBoundary("BEGIN", "9", 3, "b"),
        RowChange(TYPES, "d", ROW, None, SOURCE, 1, "e", ("9", 1, 1)),
        TxBoundary("END", "9", 3, "x", 1, {"public.t": 1}),
    )
    assert [(r.topic, r.value is None) for r in rec] == [
        ("p.transaction", False),
        ("p.public.t", False),
        ("p.public.t", True),
        ("p.transaction", False),
    ]
    assert rec[2].key == rec[1].key
    end = json.loads(rec[3].value)
    assert end["payload"] == {
        "status": "END",
        "id": "9",
        "event_count": 1,
        "data_collections": [{"data_collection": "public.t", "event_count": 1}],
        "ts_ms": 3,
    }
    assert end["schema"]["name"] == "io.debezium.connector.common.TransactionMetadataValue"
    assert json.loads(rec[1].value)["payload"]["transaction"] == {
        "id": "9",
        "total_order": 1,
        "data_collection_order": 1,
    }


def test_cdc_log_read_writes_non_finite_floats_as_jsonconverter_does() -> None:
    assert dumps({"a": [float("nan"), float("inf")], "b": -float("inf"), "d": Decimal("1.50")}) == (
        '{"a":["NaN","Infinity"],"b":"-Infinity","d":"1.50"}'
    )
    assert dumps({"x": 1.5, "raw": b"\x00\xff"}) == '{"x":1.5,"raw":"AP8="}'


def test_replace_null_with_default_off_writes_null() -> None:
    rec = encode(RowChange(TYPES, "c", None, ROW, SOURCE, 1, "e"), replace_null_with_default=False)
    doc = json.loads(rec[0].value)
    assert doc["payload"]["after"]["state"] is None
    fields = {f["field"]: f for f in doc["schema"]["fields"][1]["fields"]}
    assert fields["state"]["default"] == "new"  # the schema still shows the default


def test_two_tables_on_one_sanitised_topic_are_refused_as_in_avro() -> None:
    spaced = TableSchema("p.public.a_b", "public", "a b", TYPES.columns, (0,))
    under = TableSchema("p.public.a_b", "public", "a_b", TYPES.columns, (0,))
    enc = JsonEncoder(SOURCE_SCHEMA, None, True)
    enc.encode(ChangeBatch([RowChange(spaced, "c", None, ROW, SOURCE, 1, "e")], {}))
    with pytest.raises(SourceError, match=r"both have the topic 'p\.public\.a_b'"):
        enc.encode(ChangeBatch([RowChange(under, "c", None, ROW, SOURCE, 1, "e")], {}))


def _as_jsonconverter(avro_type: Any, value: Any) -> Any:
    """A decoded Avro value as JsonConverter writes it, restated independently of
    cdc.connectjson: bytes in base64, decimals in base64 of their unscaled bytes, non-finite
    floats as strings, records and arrays element by element."""
    if value is None:
        return None
    if isinstance(avro_type, list):
        return _as_jsonconverter(next(t for t in avro_type if t != "null"), value)
    base = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    if base == "record":
        return {
            f["name"]: _as_jsonconverter(f["type"], value[f["name"]]) for f in avro_type["fields"]
        }
    if base == "array":
        return [_as_jsonconverter(avro_type["items"], v) for v in value]
    if isinstance(value, Decimal):
        return base64.b64encode(avro.decimal_bytes(value, avro_type["scale"])).decode()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def test_every_postgres_type_in_json_as_its_avro_decodes() -> None:
    """Differential: each Postgres type's values (the fallback and unchanged-TOAST placeholder
    of every mapping, and the sample row) through the JSON encoder equal the Avro encoder's
    bytes decoded and restated by JsonConverter's rules."""
    import io

    import fastavro

    from cdc.avro import Encoder, unframe
    from cdc.sources.postgres._types import _FIXED

    schemas: dict[int, Any] = {}

    class Registry:
        def register(self, subject: str, schema: Any) -> int:
            schemas[len(schemas) + 1] = schema
            return len(schemas)

    cases = [(m.name, m.avro, v) for m in _FIXED.values() for v in (m.fallback, m.unavailable)]
    cases += [(c.name, c.avro, v) for c, v in zip(TYPES.columns, ROW, strict=True)]
    for name, avro_type, value in cases:
        table = TableSchema(
            "p.public.t",
            "public",
            "t",
            (Column("id", "int", False, "int4"), Column("v", avro_type, True, name)),
            (0,),
        )
        ev = RowChange(table, "c", None, (1, value), SOURCE, 1, "e")
        (rec,) = (
            Encoder(Registry(), SOURCE_SCHEMA, None, False).encode(ChangeBatch([ev], {})).records
        )
        sid, body = unframe(rec.value or b"")
        decoded = fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schemas[sid]))
        (js,) = encode(ev, schemas_enable=False)
        got = json.loads(js.value)["after"]["v"]
        assert got == _as_jsonconverter(avro_type, decoded["after"]["v"]), name
