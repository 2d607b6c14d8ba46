"""The specialised Avro writers (cdc/_avrofast.py) write exactly fastavro's bytes.

Every check compares with ``fastavro.schemaless_writer`` on the same schema and datum. Values the
sources produce must take the specialised path (no fallback); anything else must either give
fastavro's bytes or raise, and the Encoder's output must be fastavro's in every case.
"""

from __future__ import annotations

import io
import json
import math
import random
import struct
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from cdc import _avrofast, avro
from cdc.avro import Encoder, _TableCodec
from cdc.model import ChangeBatch, Column, RowChange, TableSchema, TxBoundary
from cdc.sources.mysql._source import SOURCE_SCHEMA as MYSQL_SOURCE
from cdc.sources.mysql._types import ColumnType
from cdc.sources.mysql._types import mapping as mysql_mapping
from cdc.sources.postgres._source import SOURCE_SCHEMA as PG_SOURCE
from cdc.sources.postgres._types import mapping_for
from tests.unit.test_pg_types import Catalog, rows_of_types_md

NOW_NS = 1_795_123_456_789_012_345


class Registry:
    """An id per distinct (subject, schema), as a schema registry gives."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], int] = {}

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        return self.ids.setdefault((subject, json.dumps(schema)), 100 + len(self.ids))


def fastavro_bytes(schema: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, datum)
    return buf.getvalue()


def same_or_raises(parsed: Any, write: _avrofast.Writer, fa_datum: Any, datum: Any) -> str:
    """Either both give the same bytes, or the specialised writer raises (the Encoder then uses
    fastavro). Returns "fast", "fallback" or "error" (fastavro raised too)."""
    try:
        want = fastavro_bytes(parsed, fa_datum)
    except Exception:
        with pytest.raises(Exception):  # noqa: B017 - fastavro's error is whatever it is
            write(datum)
        return "error"
    try:
        got = write(datum)
    except Exception:
        return "fallback"
    assert got == want, (datum, got, want)
    return "fast"


# --- the envelope, through the Encoder ------------------------------------------------------------


def pg_source(i: int = 0) -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "connector": "postgresql",
        "name": "p",
        "ts_ms": 1_700_000_000_123 + i,
        "snapshot": "false" if i % 3 else "last",
        "db": "shop",
        "sequence": None if i % 2 else f'[null,"{i}"]',
        "ts_us": 1_700_000_000_123_456 + i,
        "ts_ns": 1_700_000_000_123_456_000 + i,
        "schema": "public",
        "table": "t",
        "txId": None if i % 4 == 0 else 700 + i,
        "lsn": 0x16B374D848 + i,
        "xmin": None,
    }


def row_events(table: TableSchema, rows: list[tuple[Any, ...]], source: Any) -> list[Any]:
    events: list[Any] = []
    for i, row in enumerate(rows):
        tx = None if i % 2 else (f"{700 + i}:{i}", i + 1, i)
        prev = rows[i - 1]
        src = source(i)
        events.append(RowChange(table, "c", None, row, src, 1, f"c{i}", tx))
        events.append(RowChange(table, "u", prev, row, src, 1, f"u{i}", tx))
        events.append(RowChange(table, "d", row, None, src, 1, f"d{i}", tx))
        events.append(RowChange(table, "u", None, row, src, 1, f"k{i}", tx, key_override=prev))
    events.append(RowChange(table, "t", None, None, source(0), 1, "t", None))
    events.append(TxBoundary("BEGIN", "700:1", 5, "b"))
    events.append(TxBoundary("END", "700:1", 5, "e", 3, {"p.public.t": 3}))
    events.append(TxBoundary("BEGIN", "é:2", -1, "b2", None, {}))
    events.append(TxBoundary("END", "é:2", 2**62, "e2", 2**40, {"p.public.t": 1, "p.x.y": 2}))
    return events


def assert_encoders_agree(
    monkeypatch: pytest.MonkeyPatch,
    table: TableSchema,
    source_schema: dict[str, Any],
    rows: list[tuple[Any, ...]],
    source: Any = pg_source,
    all_fast: bool = True,
) -> int:
    """Encoder output is fastavro's; with ``all_fast`` no event needed the fallback.

    Returns how many records fastavro wrote for lack of a specialised writer."""
    monkeypatch.setattr(avro.time, "time_ns", lambda: NOW_NS)
    batch = ChangeBatch(row_events(table, rows, source), {"lsn": 1})
    want = Encoder(Registry(), source_schema, "p.transaction", True, specialise=False).encode(batch)
    fast = Encoder(Registry(), source_schema, "p.transaction", True)
    got = fast.encode(batch)
    assert len(got.records) == len(want.records) > len(rows) * 4
    for g, w in zip(got.records, want.records, strict=True):
        assert (g.topic, g.key, g.value, g.event_id) == (w.topic, w.key, w.value, w.event_id)
    if all_fast:
        assert fast.fallbacks == 0
        codec = _TableCodec(table, source_schema, Registry(), True)
        assert codec.fast_value is not None
        now_us = NOW_NS // 1000
        for ev in batch.events:
            if isinstance(ev, RowChange):
                # Raises if the specialised writer cannot take what the source produced.
                codec.fast_value(
                    (ev.before, ev.after, ev.source, ev.tx, ev.op, now_us // 1000, now_us, NOW_NS)
                )
                if table.key and ev.op != "t":
                    assert codec.fast_key is not None
                    codec.fast_key(ev.key_override or ev.after or ev.before)
    return fast.fallbacks


def test_every_postgres_type_in_types_md(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each TYPES.md row: converted value, fallback, TOAST placeholder and null, all as before."""
    catalog = Catalog()
    columns = [Column("id", "long", False, "bigint")]
    values: list[list[Any]] = []
    for n, (spec, _, _, text, _) in enumerate(rows_of_types_md()):
        oid, typmod = catalog.column(spec)
        m = mapping_for(oid, typmod, None, catalog.resolve)
        raw = text[1:-1]
        columns.append(Column(f"c{n}", m.avro, True, m.name))
        columns.append(Column(f"r{n}", m.avro, False, m.name, m.fallback))
        value = raw if m.convert is None else m.convert(raw)
        choices = [value, m.fallback, m.unavailable, None]
        values.append([(c, m.fallback if c is None else c) for c in choices])
    table = TableSchema("p.public.t", "public", "t", tuple(columns), (0, 2))
    rows = []
    for i in range(4):
        row: list[Any] = [i * 1_000_003 - 5]
        for per_col in values:
            opt, req = per_col[i]
            row += [opt, req]
        rows.append(tuple(row))
    assert_encoders_agree(monkeypatch, table, PG_SOURCE, rows)


MYSQL_TYPES = [
    ColumnType("tinyint"),
    ColumnType("tinyint", unsigned=True),
    ColumnType("smallint"),
    ColumnType("smallint", unsigned=True),
    ColumnType("mediumint"),
    ColumnType("int"),
    ColumnType("int", unsigned=True),
    ColumnType("bigint"),
    ColumnType("bigint", unsigned=True),
    ColumnType("decimal", precision=10, scale=3),
    ColumnType("decimal", precision=65, scale=30),
    ColumnType("float"),
    ColumnType("double"),
    ColumnType("bit", length=1),
    ColumnType("bit", length=12),
    ColumnType("char"),
    ColumnType("varchar"),
    ColumnType("text"),
    ColumnType("binary", length=4),
    ColumnType("varbinary"),
    ColumnType("blob"),
    ColumnType("geometry"),
    ColumnType("date"),
    ColumnType("time", fsp=6),
    ColumnType("datetime"),
    ColumnType("datetime", fsp=6),
    ColumnType("timestamp", fsp=6),
    ColumnType("year"),
    ColumnType("json"),
    ColumnType("enum", values=("a", "b")),
    ColumnType("set", values=("x", "y", "z")),
]


def mysql_source(i: int) -> dict[str, Any]:
    return random_datum(MYSQL_SOURCE, random.Random(i), {})


def test_every_mysql_type(monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(7)
    maps = [mysql_mapping(t) for t in MYSQL_TYPES]
    columns = [Column("id", "int", False, "int")]
    for n, m in enumerate(maps):
        columns.append(Column(f"c{n}", m.avro, True, m.name))
        columns.append(Column(f"r{n}", m.avro, False, m.name, m.fallback))
    table = TableSchema("m.shop.t", "shop", "t", tuple(columns), (0,))
    rows = []
    for i in range(30):
        row: list[Any] = [i - 15]
        for m in maps:
            opt = None if i % 5 == 0 else random_datum(m.avro, rnd, {})
            row += [opt, m.fallback if i % 7 == 0 else random_datum(m.avro, rnd, {})]
        rows.append(tuple(row))
    assert_encoders_agree(monkeypatch, table, MYSQL_SOURCE, rows, mysql_source)


def orders(avro_amount: Any = None) -> TableSchema:
    return TableSchema(
        "w1.public.orders",
        "public",
        "orders",
        (
            Column("id", "long", False, "bigint"),
            Column("customer_id", "int", True, "integer"),
            Column("amount", avro_amount or avro.decimal(12, 2), True, "numeric(12,2)"),
            Column("status", "string", True, "text"),
            Column("note", "string", True, "varchar(64)"),
            Column("created_at", avro.ZONED_TIMESTAMP, True, "timestamptz"),
        ),
        (0,),
    )


def test_edge_values_through_the_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    ts = "2024-05-06T05:08:09.120000Z"
    rows = [
        (0, 0, Decimal("0.00"), "", "", ts),
        (-1, -1, Decimal("-0.01"), "é", "日本語 🎉", ts),
        (2**63 - 1, 2**31 - 1, Decimal("9999999999.99"), "x" * 63, "y" * 64, ts),
        (-(2**63), -(2**31), Decimal("-9999999999.99"), "x" * 10_000, None, None),
        (63, 64, Decimal("-128.00"), None, None, None),
        (-64, -65, Decimal("-1.28"), "a", "b", ts),
        (8191, 8192, Decimal("1.28"), "a", "b", ts),
        (2**31, None, None, None, None, None),
    ]
    assert_encoders_agree(monkeypatch, orders(), PG_SOURCE, rows)


def test_decimals_of_another_exponent_or_as_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """fastavro takes these too; the specialised writer hands the Decimals to fastavro's own
    conversion."""
    ts = "2024-05-06T05:08:09Z"
    rows = [
        (1, 2, Decimal("1.5"), "new", "n", ts),  # fewer fraction digits than the scale
        (1, 2, Decimal("15E+2"), "new", "n", ts),  # positive exponent
        (1, 2, b"\x01\x02", "new", "n", ts),  # decimal already as bytes
    ]
    assert_encoders_agree(monkeypatch, orders(), PG_SOURCE, rows)


def test_columns_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """A default turns an optional column's union around (``[T, "null"]``) and puts
    ``connect.default`` on its type: the specialised writers still write fastavro's bytes."""
    from tests.unit.test_avro_names import DEFAULTS

    rows = [
        (1, 5, Decimal("1.50"), "x", b"\x00", 1.5, True, 19000, "n", "g", 2**40),
        (2, None, None, "", None, None, False, None, None, None, None),
        (-3, -(2**15), Decimal("-999.99"), "é", b"", -0.0, True, -1, "", "", -1),
    ]
    assert_encoders_agree(monkeypatch, DEFAULTS, PG_SOURCE, rows)
    assert_encoders_agree(monkeypatch, DEFAULTS, MYSQL_SOURCE, rows, source=mysql_source)


def test_encoder_falls_back_record_by_record(monkeypatch: pytest.MonkeyPatch) -> None:
    table = TableSchema(
        "p.public.f",
        "public",
        "f",
        (Column("id", "long", False, "bigint"), Column("x", "double", True, "float8")),
        (0,),
    )
    # An int where a double is declared: valid for fastavro, not what a source produces.
    rows = [(1, 2.5), (2, 3), (3, None), (4, 0.5)]
    fell_back = assert_encoders_agree(monkeypatch, table, PG_SOURCE, rows, all_fast=False)
    # Row 2 is in 4 events of its own and in the next row's update as its before image
    # (row_events); the keys are longs, written by the specialised key writer.
    assert fell_back == 5


def test_values_fastavro_rejects_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(avro.time, "time_ns", lambda: NOW_NS)
    bad = [
        (1, 2**31, None, None, None, None),  # int out of range inside the row's union
        (1, True, None, None, None, None),  # bool in an optional int
        (1, None, Decimal("1.234"), None, None, None),  # more fraction digits than the scale
        (1, None, Decimal("NaN"), None, None, None),
        (1, None, Decimal("1" * 13), None, None, None),  # more digits than the precision
        (1, None, None, b"new", None, None),  # bytes for a string
        (2**63, None, None, None, None, None),  # past the long range
    ]
    for row in bad:
        batch = ChangeBatch([RowChange(orders(), "c", None, row, pg_source(), 1, "e")], {})
        for specialise in (False, True):
            enc = Encoder(Registry(), PG_SOURCE, None, False, specialise=specialise)
            with pytest.raises(Exception):  # noqa: B017 - fastavro's error, whichever it is
                enc.encode(batch)


def test_unsupported_schema_is_written_by_fastavro(monkeypatch: pytest.MonkeyPatch) -> None:
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    table = orders(avro_amount=millis)
    codec = _TableCodec(table, PG_SOURCE, Registry(), True)
    assert codec.fast_value is None and codec.fast_key is not None
    rows = [(1, 2, 1_700_000_000_000, "new", "n", None), (2, None, None, None, None, None)]
    assert_encoders_agree(monkeypatch, table, PG_SOURCE, rows, all_fast=False)


# --- single values --------------------------------------------------------------------------------


def single(avro_type: Any) -> tuple[Any, _avrofast.Writer, Any, _avrofast.Writer]:
    """(parsed, writer) for a record with one required and one optional field of ``avro_type``."""
    again = avro_type
    if isinstance(avro_type, dict) and avro_type["type"] in ("record", "enum", "fixed"):
        again = ".".join(filter(None, [avro_type.get("namespace"), avro_type["name"]]))
    schema = {
        "type": "record",
        "name": "R",
        "namespace": "t",
        "fields": [
            {"name": "v", "type": avro_type},
            {"name": "o", "type": ["null", again]},
        ],
    }
    parsed = fastavro.parse_schema(schema, _write_hint=False)
    return (
        parsed,
        _avrofast.compile_writer(parsed),
        parsed,
        _avrofast.compile_writer(parsed, {"t.R": None}),
    )


EDGES: list[tuple[Any, list[Any]]] = [
    ("int", [0, 1, -1, 63, 64, -64, -65, 8191, 8192, -8193, 2**31 - 1, -(2**31)]),
    ("long", [0, -1, 2**31, 2**53 + 1, 2**62, 2**63 - 1, -(2**63), 1_795_123_456_789_012_345]),
    ("float", [0.0, -0.0, 1.5, 1.1, math.inf, -math.inf, math.nan, 3.4e38, 1e-45, -2.5e-40]),
    ("double", [0.0, -0.0, 1.1, math.inf, -math.inf, math.nan, 1.7976931348623157e308, 5e-324]),
    ("boolean", [True, False]),
    ("string", ["", "a", "é", "日本語 🎉", "x" * 63, "x" * 64, "\x00", "y" * 100_000]),
    ("bytes", [b"", b"\x00", b"\xff" * 63, b"\xff" * 64, bytes(range(256)) * 40]),
    (avro.decimal(12, 2), [Decimal("0.00"), Decimal("-0.00"), Decimal("-12.50"), Decimal("1.28")]),
    (avro.decimal(None, 2), [Decimal("-1234.56"), Decimal("92233720368547758.07")]),
    (
        avro.decimal(65, 30),
        [Decimal("-" + "9" * 35 + "." + "9" * 30), Decimal("1E-30"), Decimal("0E-30")],
    ),
    (avro.decimal(20, 0), [Decimal("18446744073709551615"), Decimal("0"), Decimal("-1")]),
    (avro.array(["null", "int"]), [[], [None], [1, None, -1], list(range(100))]),
    (avro.array(["null", "string"]), [[], ["a", None, ""], ["é"] * 70]),
    (avro.array("long"), [[], [2**63 - 1]]),
    ({"type": "map", "values": "long"}, [{}, {"a": 1, "é": -(2**40)}]),
    ({"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}, ["A", "C"]),
    ({"type": "fixed", "name": "F", "size": 3}, [b"abc", b"\x00\x00\x00"]),
    (
        avro.POINT,
        [
            {"x": 1.5, "y": -2.0, "wkb": None, "srid": None},
            {"x": 0.0, "y": 0.0, "wkb": b"\x01", "srid": 4326},
        ],
    ),
    (
        avro.VARIABLE_SCALE_DECIMAL,
        [{"scale": 5, "value": b"\x04\xcb/"}, {"scale": 0, "value": b""}],
    ),
    (avro.SNAPSHOT_FLAG, ["true", "false", "incremental"]),
]


@pytest.mark.parametrize(("avro_type", "values"), EDGES, ids=[str(i) for i in range(len(EDGES))])
def test_edge_values(avro_type: Any, values: list[Any]) -> None:
    parsed, by_name, _, by_index = single(avro_type)
    for v in [*values, None]:
        for o in (v, None):
            d = {"v": v, "o": o}
            # None for the required field: fastavro raises, or writes what it converts (False
            # for a boolean), and the specialised writer leaves that to fastavro.
            want = ("error", "fallback") if v is None else ("fast",)
            assert same_or_raises(parsed, by_name, d, d) in want, d
            assert same_or_raises(parsed, by_index, d, (v, o)) in want, d


def test_values_only_fastavro_takes_fall_back() -> None:
    """Outside a union fastavro writes what its C writer can convert; the writer declines."""
    parsed, write, _, _ = single("float")
    d = {"v": 1e39, "o": None}  # fastavro writes infinity; struct refuses
    assert same_or_raises(parsed, write, d, d) == "fallback"
    parsed, write, _, _ = single("long")
    for v in (True, 1.0):  # fastavro: 1 (bool and float convert to a C long)
        d = {"v": v, "o": None}
        assert same_or_raises(parsed, write, d, d) == "fallback"
    parsed, write, _, _ = single("double")
    d = {"v": 3, "o": 4}  # ints are valid doubles for fastavro, even in a union
    assert same_or_raises(parsed, write, d, d) == "fallback"


def test_generated_source_holds_no_names_or_symbols() -> None:
    evil = "x'); import os  # "
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "a_" + str(i), "type": t}
            for i, t in enumerate(
                ["string", {"type": "enum", "name": "E", "symbols": ["ZZSYMBOL"]}, "long"]
            )
        ],
    }
    schema["fields"][0]["name"] = "ZZFIELD"
    parsed = fastavro.parse_schema(schema, _write_hint=False)
    src, _ = _avrofast.generate(parsed)
    assert "ZZFIELD" not in src and "ZZSYMBOL" not in src
    write = _avrofast.compile_writer(parsed)
    d = {"ZZFIELD": evil, "a_1": "ZZSYMBOL", "a_2": 5}
    assert write(d) == fastavro_bytes(parsed, d)


DEEP_ARRAY: dict[str, Any] = {"type": "array", "items": "long"}
for _ in range(40):  # more nested loops than Python's compiler allows in one function
    DEEP_ARRAY = {"type": "array", "items": DEEP_ARRAY}


@pytest.mark.parametrize(
    "schema",
    [
        ["null", "int", "string"],
        ["int", "string"],
        {"type": "long", "logicalType": "timestamp-micros"},
        {"type": "fixed", "name": "D", "size": 8, "logicalType": "decimal", "precision": 5},
        {"type": "record", "name": "L", "fields": [{"name": "n", "type": ["null", "L"]}]},
        DEEP_ARRAY,
    ],
)
def test_unsupported_schemas(schema: Any) -> None:
    parsed = fastavro.parse_schema(
        {"type": "record", "name": "W", "fields": [{"name": "f", "type": schema}]},
        _write_hint=False,
    )
    with pytest.raises(_avrofast.Unsupported):
        _avrofast.compile_writer(parsed)


# --- randomized -----------------------------------------------------------------------------------


def random_datum(t: Any, rnd: random.Random, named: dict[str, Any]) -> Any:
    """A value of Avro type ``t`` (raw schema), of the Python types the sources produce."""
    if isinstance(t, list):
        non_null = [b for b in t if b != "null"]
        if "null" in t and rnd.random() < 0.3:
            return None
        return random_datum(non_null[0], rnd, named)
    if isinstance(t, str):
        if t in named:
            return random_datum(named[t], rnd, named)
        base = t
        t = {"type": t}
    else:
        base = t["type"]
    if base == "null":
        return None
    if base == "boolean":
        return rnd.random() < 0.5
    if base in ("int", "long"):
        bits = 31 if base == "int" else 63
        k = rnd.choice([3, 6, 7, 13, 14, 20, 27, 28, bits])
        return rnd.randint(-(2**k), 2**k - 1)
    if base in ("float", "double"):
        r = rnd.random()
        if r < 0.1:
            return rnd.choice([math.nan, math.inf, -math.inf, -0.0, 0.0])
        v = rnd.uniform(-1e6, 1e6) * 10 ** rnd.randint(-30, 30)
        if base == "float":
            v = struct.unpack("<f", struct.pack("<f", max(-3e38, min(3e38, v))))[0]
        return v
    if base == "string":
        alphabet = "ab z09é日本🎉\x00\n'\""
        return "".join(rnd.choice(alphabet) for _ in range(rnd.choice([0, 1, 5, 63, 64, 200])))
    if base == "bytes":
        if t.get("logicalType") == "decimal":
            precision, scale = t["precision"], t["scale"]
            digits = rnd.randint(1, precision)
            unscaled = rnd.randint(-(10**digits) + 1, 10**digits - 1)
            return Decimal(f"{unscaled}E-{scale}")
        return rnd.randbytes(rnd.choice([0, 1, 16, 63, 64, 300]))
    if base == "fixed":
        named[t["name"]] = t
        return rnd.randbytes(t["size"])
    if base == "enum":
        named[t["name"]] = t
        return rnd.choice(t["symbols"])
    if base == "array":
        return [random_datum(t["items"], rnd, named) for _ in range(rnd.choice([0, 1, 3, 70]))]
    if base == "map":
        n = rnd.choice([0, 1, 4])
        return {f"k{i}é": random_datum(t["values"], rnd, named) for i in range(n)}
    if base == "record":
        full = f"{t['namespace']}.{t['name']}" if "namespace" in t else t["name"]
        named[full] = named[t["name"]] = t
        return {f["name"]: random_datum(f["type"], rnd, named) for f in t["fields"]}
    raise AssertionError(f"no generator for {t!r}")


def random_type(rnd: random.Random, depth: int, names: list[str]) -> Any:
    simple: list[Any] = [
        "int",
        "long",
        "float",
        "double",
        "boolean",
        "string",
        "bytes",
        avro.INT16,
        avro.DATE,
        avro.ZONED_TIMESTAMP,
        avro.bits(12),
        avro.decimal(rnd.randint(1, 40), rnd.randint(0, 10)),
        avro.decimal(None, 2),
    ]
    r = rnd.random()
    complete = [n for n in names if not n.startswith("~")]
    if 0.5 <= r < 0.55 and complete:
        return rnd.choice(complete)  # a reference to a named type defined before
    if depth > 2 or r < 0.55:
        t = rnd.choice(simple)
        if isinstance(t, dict) and t.get("logicalType") == "decimal":
            t = {**t, "scale": min(t["scale"], t["precision"])}
        return t
    if 0.7 <= r < 0.85:
        key = "items" if r < 0.8 else "values"
        return {"type": "array" if r < 0.8 else "map", key: random_type(rnd, depth + 1, names)}
    name = f"N{len(names)}"
    names.append(name)
    if r < 0.65:
        return {
            "type": "enum",
            "name": name,
            "symbols": [f"S{i}" for i in range(rnd.randint(1, 70))],
        }
    if r < 0.7:
        return {"type": "fixed", "name": name, "size": rnd.randint(0, 20)}
    names[-1] = "~" + name  # not to be referenced from inside itself (recursion)
    record = random_record(rnd, depth + 1, names, name)
    names[names.index("~" + name)] = name
    return record


def random_record(rnd: random.Random, depth: int, names: list[str], name: str) -> dict[str, Any]:
    fields = []
    for i in range(rnd.randint(0, 8)):
        t = random_type(rnd, depth, names)
        if rnd.random() < 0.4:
            t = ["null", t] if rnd.random() < 0.7 else [t, "null"]
        fields.append({"name": f"f{i}", "type": t})
    return {"type": "record", "name": name, "namespace": "r", "fields": fields}


def named_types(t: Any, named: dict[str, Any]) -> dict[str, Any]:
    """Every named type defined in ``t``, by name, for random_datum to follow references."""
    if isinstance(t, list):
        for b in t:
            named_types(b, named)
    elif isinstance(t, dict):
        if t["type"] in ("record", "enum", "fixed"):
            named[t["name"]] = t
        for f in t.get("fields", ()):
            named_types(f["type"], named)
        for k in ("items", "values"):
            if k in t:
                named_types(t[k], named)
    return named


def test_random_schemas_and_datums() -> None:
    rnd = random.Random(20261126)
    kinds: dict[str, int] = {}
    refs = 0
    for n in range(300):
        names: list[str] = []
        schema = random_record(rnd, 0, names, "Top")
        parsed = fastavro.parse_schema(schema, _write_hint=False)
        refs += str(schema).count("'N") - str(schema).count("'name': 'N")
        by_name = _avrofast.compile_writer(parsed)
        by_index = _avrofast.compile_writer(parsed, {"r.Top": None})
        for _ in range(10):
            d = random_datum(schema, rnd, named_types(schema, {}))
            t = tuple(d[f["name"]] for f in schema["fields"])
            assert same_or_raises(parsed, by_name, d, d) == "fast", (n, schema, d)
            assert same_or_raises(parsed, by_index, d, t) == "fast", (n, schema, d)
            # A wrong value in one field: fastavro's bytes, its error, or the fallback.
            if schema["fields"]:
                f = rnd.choice(schema["fields"])["name"]
                bad = {**d, f: rnd.choice([None, 1.5, "s", b"b", 2**40, True, [1], {"a": 1}, ()])}
                k = same_or_raises(parsed, by_name, bad, bad)
                kinds[k] = kinds.get(k, 0) + 1
    assert kinds.get("error", 0) > 100 and kinds.get("fallback", 0) > 10  # both were exercised
    assert refs > 30  # named types were referenced again


def test_varint_at_every_length_boundary() -> None:
    """The chunked varint against fastavro, at each 7-bit boundary and around it."""
    parsed = fastavro.parse_schema({"type": "long"})
    write = _avrofast.compile_writer(parsed)
    for k in range(64):
        for n in (2**k - 1, 2**k, 2**k + 1, -(2**k), -(2**k) - 1, -(2**k) + 1):
            if -(2**63) <= n < 2**63:
                assert write(n) == fastavro_bytes(parsed, n), n
    for n in (2**63, -(2**63) - 1, 2**64, -(2**70)):
        with pytest.raises(OverflowError):
            write(n)


def test_tables_and_table_versions_interleaved(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event is written with its own table version's writers and schema ids."""
    monkeypatch.setattr(avro.time, "time_ns", lambda: NOW_NS)
    v1 = orders()
    v2 = TableSchema(v1.topic, v1.namespace, v1.table, (*v1.columns[:4],), v1.key)  # 2 dropped
    other = TableSchema(
        "w1.public.items", "public", "items", (Column("sku", "string", False, "text"),), (0,)
    )
    row = (7, 8, Decimal("1.00"), "new", "n", None)
    events: list[Any] = [
        RowChange(v1, "c", None, row, pg_source(1), 1, "a"),
        RowChange(other, "c", None, ("sku-1",), pg_source(2), 1, "b"),
        RowChange(v2, "c", None, row[:4], pg_source(3), 1, "c"),
        RowChange(v1, "d", row, None, pg_source(4), 1, "d"),
        RowChange(v2, "u", row[:4], row[:4], pg_source(5), 1, "e"),
    ]
    batch = ChangeBatch(events, {})
    registry = Registry()
    want = Encoder(Registry(), PG_SOURCE, None, False, specialise=False).encode(batch)
    fast = Encoder(registry, PG_SOURCE, None, False)
    got = fast.encode(batch)
    assert [(r.topic, r.key, r.value) for r in got.records] == [
        (r.topic, r.key, r.value) for r in want.records
    ]
    assert fast.fallbacks == 0
    assert len({avro.unframe(r.value)[0] for r in got.records if r.value}) == 3
    # orders: one key schema, a value schema per version; items: key and value
    assert len(registry.ids) == 5
