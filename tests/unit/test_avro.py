from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import fastavro

from cdc import avro
from cdc.model import ChangeBatch, Column, RowChange, TableSchema, TxBoundary


class Registry:
    def __init__(self) -> None:
        self.schemas: dict[int, Any] = {}
        self.subjects: dict[str, int] = {}

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        sid = len(self.schemas) + 1
        self.schemas[sid] = schema
        self.subjects[subject] = sid
        return sid


def test_unscaled_bytes_match_java_biginteger() -> None:
    assert avro.unscaled_bytes(0) == b"\x00"
    assert avro.unscaled_bytes(127) == b"\x7f"
    assert avro.unscaled_bytes(128) == b"\x00\x80"
    assert avro.unscaled_bytes(-1) == b"\xff"
    assert avro.unscaled_bytes(-128) == b"\x80"
    assert avro.unscaled_bytes(-129) == b"\xff\x7f"
    assert avro.decimal_bytes(Decimal("12.50"), 2) == (1250).to_bytes(2, "big")


def test_variable_scale_decimal() -> None:
    assert avro.variable_scale(Decimal("3.14159")) == {
        "scale": 5,
        "value": avro.unscaled_bytes(314159),
    }
    assert avro.variable_scale(Decimal("1E+3")) == {"scale": 0, "value": avro.unscaled_bytes(1000)}


def test_names_are_sanitised() -> None:
    assert avro.avro_namespace("my-db.public.1table") == "my_db.public._1table"


TABLE = TableSchema(
    topic="shop.public.orders",
    namespace="public",
    table="orders",
    columns=(
        Column("id", "int", False, "integer"),
        Column("amount", avro.decimal(12, 2), True, "numeric(12,2)"),
        Column("note", "string", True, "text"),
    ),
    key=(0,),
)
SOURCE = {
    "type": "record",
    "name": "Source",
    "namespace": "test",
    "fields": [{"name": "ts_us", "type": "long"}],
}


def decode(reg: Registry, data: bytes) -> Any:
    sid, body = avro.unframe(data)
    return fastavro.schemaless_reader(
        io.BytesIO(body), fastavro.parse_schema(reg.schemas[sid]), None
    )


def test_encoder_envelope_key_and_tombstone() -> None:
    reg = Registry()
    enc = avro.Encoder(reg, SOURCE, "shop.transaction", tombstones=True)
    src = {"ts_us": 5}
    batch = ChangeBatch(
        [
            TxBoundary("BEGIN", "7:100", 1, "100:0"),
            RowChange(
                TABLE, "c", None, (1, Decimal("1.50"), None), src, 1, "100:1", ("7:100", 1, 1)
            ),
            RowChange(TABLE, "d", (1, Decimal("1.50"), "x"), None, src, 1, "100:2"),
            TxBoundary("END", "7:100", 1, "100:3", 2, {"public.orders": 2}),
        ],
        {"lsn": 1},
    )
    out = enc.encode(batch)
    assert [r.topic for r in out.records] == [
        "shop.transaction",
        "shop.public.orders",
        "shop.public.orders",
        "shop.public.orders",
        "shop.transaction",
    ]
    create = decode(reg, out.records[1].value or b"")
    assert create["after"] == {"id": 1, "amount": Decimal("1.50"), "note": None}
    assert create["op"] == "c" and create["transaction"]["id"] == "7:100"
    assert decode(reg, out.records[1].key or b"") == {"id": 1}
    tomb = out.records[3]
    assert tomb.value is None and tomb.key == out.records[2].key
    end = decode(reg, out.records[4].value or b"")
    assert end["event_count"] == 2
    assert end["data_collections"] == [{"data_collection": "public.orders", "event_count": 2}]
    assert set(reg.subjects) == {
        "shop.transaction-key",
        "shop.transaction-value",
        "shop.public.orders-key",
        "shop.public.orders-value",
    }
    env = reg.schemas[reg.subjects["shop.public.orders-value"]]
    assert env["name"] == "Envelope" and env["namespace"] == "shop.public.orders"
    assert [f["name"] for f in env["fields"]] == [
        "before",
        "after",
        "source",
        "transaction",
        "op",
        "ts_ms",
        "ts_us",
        "ts_ns",
    ]


def test_new_table_version_registers_new_schema() -> None:
    reg = Registry()
    enc = avro.Encoder(reg, SOURCE, None, tombstones=False)
    t2 = TableSchema(
        TABLE.topic, "public", "orders", (*TABLE.columns, Column("x", "long", True, "bigint")), (0,)
    )
    src = {"ts_us": 1}
    enc.encode(ChangeBatch([RowChange(TABLE, "c", None, (1, None, None), src, 1, "a")], {}))
    n = len(reg.schemas)
    enc.encode(ChangeBatch([RowChange(TABLE, "c", None, (2, None, None), src, 1, "b")], {}))
    assert len(reg.schemas) == n
    out = enc.encode(ChangeBatch([RowChange(t2, "c", None, (3, None, None, 9), src, 1, "c")], {}))
    assert len(reg.schemas) == n + 2
    assert decode(reg, out.records[0].value or b"")["after"]["x"] == 9


def test_an_event_its_schema_refuses_stops_the_pipeline_naming_it() -> None:
    """A value fastavro refuses too would fail again after every restart: fatal, located."""
    from cdc.daemon import is_fatal
    from cdc.errors import EncodeError

    enc = avro.Encoder(Registry(), SOURCE, None, tombstones=False)
    bad = RowChange(TABLE, "c", None, ("not an int", None, None), {"ts_us": 1}, 1, "9:1")
    try:
        enc.encode(ChangeBatch([bad], {"lsn": 1}))
    except EncodeError as e:
        assert "shop.public.orders" in str(e) and "event 9:1" in str(e)
        assert is_fatal(e)
    else:
        raise AssertionError("the encoder wrote a value its schema refuses")
