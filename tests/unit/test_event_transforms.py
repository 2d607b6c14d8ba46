"""The event transforms (filter, unwrap, outbox: cdc/transforms/_events.py, _expr.py) and their
configuration, without servers; their Avro and JSON records through both encoders."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest

from cdc import avro
from cdc.avro import Encoder, unframe
from cdc.config import parse
from cdc.connectjson import JsonEncoder
from cdc.errors import ConfigError
from cdc.model import ChangeBatch, Column, RowChange, TableSchema, TxBoundary
from cdc.transforms import Transformer, transformer
from cdc.transforms._expr import ExprError, compile_condition
from cdc.transforms._expr import parse as parse_condition
from tests.unit.test_transforms import HEAD, problems

ROOT = Path(__file__).resolve().parents[2]

SOURCE_SCHEMA = avro.source_schema(
    "io.debezium.connector.postgresql",
    [
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "lsn", "type": ["null", "long"], "default": None},
    ],
)
SOURCE = {
    "version": "1.0",
    "connector": "postgresql",
    "name": "shop",
    "ts_ms": 1700000000000,
    "snapshot": "false",
    "db": "shop",
    "sequence": None,
    "ts_us": None,
    "ts_ns": None,
    "schema": "public",
    "table": "orders",
    "lsn": 1234,
}

ORDERS = TableSchema(
    "shop.public.orders",
    "public",
    "orders",
    (
        Column("id", "int", False, "int4"),
        Column("status", "string", True, "text"),
        Column("amount", avro.decimal(10, 2), True, "numeric"),
        Column("paid", "boolean", True, "bool"),
    ),
    (0,),
)
OUTBOX = TableSchema(
    "shop.public.outbox",
    "public",
    "outbox",
    (
        Column("id", avro.UUID, False, "uuid"),
        Column("aggregatetype", "string", False, "text"),
        Column("aggregateid", "string", False, "text"),
        Column("type", "string", False, "text"),
        Column("payload", avro.JSON, True, "jsonb"),
    ),
    (0,),
)


def transforms(yaml_list: str) -> Transformer:
    cfg = parse(HEAD + yaml_list).pipelines[0]
    t = transformer(cfg.transforms, cfg.name, SOURCE_SCHEMA)
    assert t is not None
    return t


def change(
    table: TableSchema,
    op: Any,
    before: Any = None,
    after: Any = None,
    eid: str = "e",
    tx: tuple[str, int, int] | None = None,
) -> RowChange:
    return RowChange(table, op, before, after, SOURCE, 1, eid, tx)


def apply(t: Transformer, *events: RowChange | TxBoundary) -> list[Any]:
    return t.apply(ChangeBatch(list(events), {})).events


R1 = (1, "paid", Decimal("150.00"), True)
R2 = (2, "new", Decimal("20.00"), False)
R3 = (3, None, None, None)


# --- filter ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "kept"),
    [
        ("status = 'paid'", [1]),
        ("status != 'paid'", [2]),  # NULL is neither equal nor unequal
        ("amount >= 100 or paid", [1]),
        ("not (amount < 100)", [1]),
        ("status in ('new', 'paid') and not paid", [2]),
        ("status not in ('new')", [1]),
        ("status is null", [3]),
        ("amount is not null and id <> 1", [2]),
        ("\"status\" = 'it''s'", []),
        ("id in (1, 3) or amount > 1e3", [1, 3]),
    ],
)
def test_filter_keeps_exactly_the_rows_the_condition_holds_for(
    condition: str, kept: list[int]
) -> None:
    t = transforms(f"      - type: filter\n        condition: {json.dumps(condition)}\n")
    out = apply(t, *(change(ORDERS, "c", after=r) for r in (R1, R2, R3)))
    assert [ev.after[0] for ev in out] == kept


def test_filter_drop_action_deletes_by_before_and_other_events_pass() -> None:
    t = transforms("      - {type: filter, condition: \"status = 'paid'\", action: drop}\n")
    begin = TxBoundary("BEGIN", "7", 1, "b")
    out = apply(
        t,
        begin,
        change(ORDERS, "d", before=R1),
        change(ORDERS, "d", before=R2),
        change(ORDERS, "t"),
        change(ORDERS, "u", before=R1, after=R3),  # status NULL: unknown, not dropped
    )
    assert out[0] is begin
    assert [(e.op, (e.after or e.before or (None,))[0]) for e in out[1:]] == [
        ("d", 2),
        ("t", None),
        ("u", 3),
    ]


def test_filter_tables_limit_it() -> None:
    t = transforms(r"      - {type: filter, condition: 'id = 1', tables: 'public\.other'}" + "\n")
    out = apply(t, change(ORDERS, "c", after=R2))
    assert len(out) == 1


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("amount >", "expected a column or a value at position 8, found the end"),
        ("status = 'paid", 'unexpected character "\'" at position 9'),
        ("id in 1", "expected '(' at position 6, found 1"),
        ("id = 1 status", "unexpected 'status' at position 7"),
        ("status is 3", "expected null at position 10, found 3"),
        ("", "empty condition"),
    ],
)
def test_a_condition_that_does_not_parse_is_a_config_error_with_its_position(
    condition: str, message: str
) -> None:
    got = problems(f"      - type: filter\n        condition: {json.dumps(condition)}\n")
    assert got == [
        f"pipelines[0].transforms[0].condition: cannot parse condition {condition!r}: {message}"
    ]


def test_a_condition_naming_a_missing_column_stops_at_the_table() -> None:
    t = transforms("      - {type: filter, condition: 'amount > 1 and colour = 1'}\n")
    with pytest.raises(ConfigError) as e:
        apply(t, change(ORDERS, "c", after=R1))
    assert e.value.problems == [
        "pipeline 'shop': transforms[0].condition: table public.orders: unknown column 'colour' "
        "at position 15 (columns: id, status, amount, paid)"
    ]


def test_a_condition_comparing_unlike_values_is_refused() -> None:
    node = parse_condition("status > 3")
    with pytest.raises(ExprError, match="cannot compare values at position 0: a string with a"):
        compile_condition(node, ["status"], ["string"])


def test_the_condition_is_never_evaluated_as_python() -> None:
    with pytest.raises(ExprError):
        parse_condition("__import__('os').system('true')")


# --- unwrap ---------------------------------------------------------------------------------------


def test_unwrap_gives_the_row_and_drops_deletes_and_truncates_by_default() -> None:
    t = transforms("      - {type: unwrap}\n")
    out = apply(
        t,
        change(ORDERS, "r", after=R1),
        change(ORDERS, "u", before=R1, after=R2),
        change(ORDERS, "d", before=R2),
        change(ORDERS, "t"),
    )
    assert [(e.op, e.after) for e in out] == [("r", R1), ("u", R2)]
    assert out[0].table.form == "row" and out[0].table.columns == ORDERS.columns


def test_unwrap_rewrite_adds_deleted_and_fields_and_tombstones() -> None:
    t = transforms(
        "      - type: unwrap\n        delete_handling_mode: rewrite\n"
        "        drop_tombstones: false\n"
        "        add_fields: [op, table, source.ts_ms, lsn, total_order]\n"
    )
    out = apply(
        t,
        change(ORDERS, "c", after=R1, tx=("7", 1, 1)),
        change(ORDERS, "d", before=R1, eid="d1", tx=("7", 2, 2)),
    )
    names = [c.name for c in out[0].table.columns]
    assert names[4:] == ["__op", "__table", "__source_ts_ms", "__lsn", "__total_order", "__deleted"]
    assert out[0].after == (*R1, "c", "orders", 1700000000000, 1234, 1, "false")
    assert out[1].after == (*R1, "d", "orders", 1700000000000, 1234, 2, "true")
    assert (out[2].after, out[2].before, out[2].event_id) == (None, R1, "d1~")
    assert len(out) == 3


def test_unwrap_tombstone_mode_and_an_unknown_source_field() -> None:
    t = transforms("      - {type: unwrap, delete_handling_mode: tombstone}\n")
    out = apply(t, change(ORDERS, "d", before=R1))
    assert [(e.op, e.after, e.before) for e in out] == [("d", None, R1)]
    with pytest.raises(ConfigError) as e:
        transforms("      - {type: unwrap, add_fields: [colour]}\n")
    assert e.value.problems[0].startswith(
        "pipeline 'shop': transforms[0].add_fields: the source block has no field 'colour' (it "
        "has version, connector, name,"
    )


def test_flat_rows_in_avro_and_json() -> None:
    t = transforms("      - {type: unwrap, add_fields: [op]}\n")
    ev = apply(t, change(ORDERS, "c", after=R1))[0]
    schemas: dict[int, Any] = {}

    class Registry:
        def register(self, subject: str, schema: Any) -> int:
            schemas[len(schemas) + 1] = schema
            return len(schemas)

    rec = Encoder(Registry(), SOURCE_SCHEMA, None, True).encode(ChangeBatch([ev], {})).records
    sid, body = unframe(rec[0].value or b"")
    value = fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schemas[sid]))
    assert value == {
        "id": 1,
        "status": "paid",
        "amount": Decimal("150.00"),
        "paid": True,
        "__op": "c",
    }
    assert schemas[sid]["name"] == "Value" and schemas[sid]["namespace"] == "shop.public.orders"
    assert len(rec) == 1

    js = JsonEncoder(SOURCE_SCHEMA, None, True).encode(ChangeBatch([ev], {})).records
    doc = json.loads(js[0].value or b"")
    assert doc["payload"] == {
        "id": 1,
        "status": "paid",
        "amount": "Opg=",
        "paid": True,
        "__op": "c",
    }
    assert doc["schema"]["name"] == "shop.public.orders.Value"
    assert doc["schema"]["fields"][-1] == {"type": "string", "optional": True, "field": "__op"}
    assert json.loads(js[0].key or b"")["payload"] == {"id": 1}


# --- outbox ---------------------------------------------------------------------------------------

OUTBOX_T = "      - {type: outbox, tables: 'public\\.outbox'}\n"
ORDER_EVENT = ("0f8fad5b-d9cb-469f-a165-70867728950e", "Order", "42", "OrderCreated", '{"n": 1}')


def test_outbox_routes_by_aggregate_type_keyed_by_aggregate_id() -> None:
    t = transforms(OUTBOX_T)
    customer = ("1b4e28ba-2fa1-11d2-883f-0016d3cca427", "Customer", "7", "Moved", '{"to": "x"}')
    out = apply(
        t,
        change(OUTBOX, "c", after=ORDER_EVENT),
        change(OUTBOX, "c", after=customer),
        change(OUTBOX, "d", before=ORDER_EVENT),
        change(OUTBOX, "u", before=customer, after=customer),
        change(ORDERS, "c", after=R1),
    )
    assert [(e.table.topic, e.after) for e in out] == [
        ("outbox.event.Order", ("42", '{"n": 1}')),
        ("outbox.event.Customer", ("7", '{"to": "x"}')),
        ("shop.public.orders", R1),
    ]
    assert out[0].headers == (("id", ORDER_EVENT[0].encode()),)
    js = JsonEncoder(SOURCE_SCHEMA, None, True, schemas_enable=False)
    rec = js.encode(ChangeBatch(out[:1], {})).records[0]
    assert (rec.topic, rec.key, rec.value, rec.headers) == (
        "outbox.event.Order",
        b'"42"',
        b'"{\\"n\\": 1}"',
        (("id", ORDER_EVENT[0].encode()),),
    )
    with_schema = JsonEncoder(SOURCE_SCHEMA, None, True).encode(ChangeBatch(out[:1], {}))
    assert json.loads(with_schema.records[0].key or b"") == {
        "schema": {"type": "string", "optional": False},
        "payload": "42",
    }


def test_outbox_table_without_the_columns_is_a_clear_error() -> None:
    t = transforms("      - {type: outbox, tables: 'public\\.orders'}\n")
    with pytest.raises(ConfigError) as e:
        apply(t, change(ORDERS, "c", after=R1))
    assert e.value.problems == [
        "pipeline 'shop': transforms[0]: outbox table public.orders has no column "
        "aggregate_type_column 'aggregatetype', no column aggregate_id_column 'aggregateid', no "
        "column payload_column 'payload' (its columns: id, status, amount, paid): add them to "
        "the table, or name its columns in the transform's *_column settings"
    ]


def test_outbox_update_as_error() -> None:
    t = transforms("      - {type: outbox, tables: 'public\\.outbox', on_update: error}\n")
    with pytest.raises(ConfigError, match=r"an update of outbox table public\.outbox"):
        apply(t, change(OUTBOX, "u", before=ORDER_EVENT, after=ORDER_EVENT))


# --- configuration --------------------------------------------------------------------------------


def test_bad_options_are_reported_with_their_path() -> None:
    got = problems(
        """      - {type: drop_columns, columns: [x]}
      - {type: unwrap, delete_handling_mode: keep, colour: red}
      - {type: outbox}
      - {type: filter, condition: 'a = 1', action: maybe}
      - {type: unwrap, add_fields: ['a.b.c']}
"""
    )
    assert got == [
        "pipelines[0].transforms[1].delete_handling_mode: bad value: 'keep': input should be "
        "'drop', 'tombstone' or 'rewrite'",
        "pipelines[0].transforms[1].colour: unknown field; check its spelling against "
        "docs/configuration.md",
        "pipelines[0].transforms[2].tables: required field is missing",
        "pipelines[0].transforms[3].action: bad value: 'maybe': input should be 'keep' or 'drop'",
        "pipelines[0].transforms[4].add_fields: invalid field 'a.b.c': use a name or source.<name>",
    ]


def test_event_transforms_come_last() -> None:
    got = problems(
        """      - {type: unwrap}
      - {type: drop_columns, columns: [x]}
"""
    )
    assert got == [
        "pipelines[0].transforms: transforms[1] (drop_columns) comes after transforms[0] "
        "(unwrap): filter, unwrap and outbox apply after every other transform; list them last"
    ]


def test_cdc_validate_reports_each_with_its_location_and_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        """
pipelines:
  - name: shop
    source: {type: postgres, dsn: "host=x dbname=shop", tables: [public.orders]}
    sink: {type: kafka, bootstrap_servers: 'k:9092', path: ./x, format: xml}
    transforms:
      - {type: filter, condition: "amount >"}
      - {type: outbox, tables: ['public\\.outbox'], route_topic: x}
      - {type: unwrap, delete_handling: drop}
      - {type: flatten}
"""
    )
    run = subprocess.run(
        [sys.executable, "-m", "cdc", "validate", "-c", str(f)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines == [
        "error: pipelines[0].sink.format: bad value: 'xml': input should be 'avro' or 'json'",
        "error: pipelines[0].transforms[0].condition: cannot parse condition 'amount >': "
        "expected a column or a value at position 8, found the end",
        "error: pipelines[0].transforms[1].route_topic: unknown field; check its spelling "
        "against docs/configuration.md",
        "error: pipelines[0].transforms[2].delete_handling: unknown field; check its spelling "
        "against docs/configuration.md",
        "error: pipelines[0].transforms[3]: unknown type 'flatten': use one of drop_columns, "
        "mask_columns, hash_columns, truncate_columns, skip_operations, route_topics, filter, "
        "unwrap, outbox",
    ]


def test_the_json_settings_need_format_json_and_avro_needs_a_registry() -> None:
    base = """
pipelines:
  - name: shop
    source: {type: postgres, dsn: "host=x dbname=shop", tables: [public.orders]}
"""
    with pytest.raises(ConfigError) as e:
        parse(
            base + "    sink: {type: kafka, bootstrap_servers: 'k:9092', path: ./x, "
            "schemas_enable: false}\n"
        )
    assert e.value.problems == [
        "pipelines[0].sink: schemas_enable only apply to format: json (format is 'avro'): "
        "remove them or set format: json"
    ]
    with pytest.raises(ConfigError) as e:
        parse(base + "    sink: {type: nats, path: ./x, decimal_format: numeric}\n")
    assert "decimal_format only apply to format: json" in e.value.problems[0]
    cfg = parse(
        base + "    sink: {type: kafka, bootstrap_servers: 'k:9092', path: ./x, format: json}\n"
    )
    assert cfg.pipelines[0].sink.schema_registry is None


def test_the_documented_example_config_runs() -> None:
    """config/outbox-kafka-json.yaml (docs/transforms.md's example): paid orders pass as flat
    rows, outbox rows become routed events, the sink writes JSON."""
    from cdc.config import load

    cfg = load(ROOT / "config" / "outbox-kafka-json.yaml").pipelines[0]
    assert cfg.sink.format == "json" and cfg.sink.schema_registry is None
    doc = (ROOT / "docs" / "transforms.md").read_text()
    example = (ROOT / "config" / "outbox-kafka-json.yaml").read_text()
    for t in cfg.transforms:  # the page shows the same transforms
        assert f"type: {t.type}" in doc and f"type: {t.type}" in example
    orders = replace(ORDERS, columns=(*ORDERS.columns[:3], Column("priority", "string", True, "")))
    t = transformer(cfg.transforms, cfg.name, SOURCE_SCHEMA)
    assert t is not None
    out = apply(
        t,
        change(orders, "c", after=(1, "draft", Decimal(500), "high")),
        change(orders, "c", after=(2, "paid", Decimal(50), "low")),
        change(orders, "c", after=(3, "paid", Decimal(50), "urgent")),
        change(OUTBOX, "c", after=ORDER_EVENT),
    )
    assert [(e.table.topic, e.after[0]) for e in out] == [
        ("shop.public.orders", 3),
        ("shop.events.Order", "42"),
    ]
    assert out[0].after[4:] == ("c", "orders", 1700000000000, "false")


def test_filter_compares_unconstrained_numeric_as_a_number() -> None:
    table = TableSchema(
        "shop.public.orders",
        "public",
        "orders",
        (Column("id", "int", False, "int4"), Column("n", avro.VARIABLE_SCALE_DECIMAL, True, "")),
        (0,),
    )
    t = transforms("      - {type: filter, condition: 'n > 1.5'}\n")
    rows = [
        (1, avro.variable_scale(Decimal("1.51"))),
        (2, avro.variable_scale(Decimal("-7"))),
        (3, None),
    ]
    out = apply(t, *(change(table, "c", after=r) for r in rows))
    assert [e.after[0] for e in out] == [1]


class _Registry:
    """Keeps what is registered: subject and schema by id."""

    def __init__(self) -> None:
        self.schemas: dict[int, tuple[str, Any]] = {}

    def register(self, subject: str, schema: Any) -> int:
        self.schemas[len(self.schemas) + 1] = (subject, schema)
        return len(self.schemas)

    def decode(self, data: bytes | None) -> Any:
        if data is None:
            return None
        sid, body = unframe(data)
        schema = fastavro.parse_schema(self.schemas[sid][1])
        return fastavro.schemaless_reader(io.BytesIO(body), schema)


def test_outbox_events_and_unwrap_tombstones_in_avro() -> None:
    t = transforms(
        OUTBOX_T + "      - {type: unwrap, delete_handling_mode: tombstone, "
        "drop_tombstones: false}\n"
    )
    out = apply(
        t,
        change(OUTBOX, "r", after=ORDER_EVENT, eid="o"),
        change(ORDERS, "d", before=R1, eid="d"),
    )
    reg = _Registry()
    recs = Encoder(reg, SOURCE_SCHEMA, None, True).encode(ChangeBatch(out, {})).records
    got = [(r.topic, reg.decode(r.key), reg.decode(r.value), r.event_id) for r in recs]
    assert got == [
        ("outbox.event.Order", "42", '{"n": 1}', "o"),
        ("shop.public.orders", {"id": 1}, None, "d"),  # the delete as a tombstone
        ("shop.public.orders", {"id": 1}, None, "d~"),  # and the tombstone after it
    ]
    assert recs[0].headers == (("id", ORDER_EVENT[0].encode()),)
    subjects = {subject: schema for subject, schema in reg.schemas.values()}
    assert subjects["outbox.event.Order-key"] == "string"
    assert subjects["outbox.event.Order-value"] == ["null", avro.JSON]


def test_debeziums_outbox_placeholder_gets_a_hint() -> None:
    got = problems(
        "      - {type: outbox, tables: 'public\\.outbox', "
        "route_topic_replacement: 'outbox.event.${routedByValue}'}\n"
    )
    assert got == [
        "pipelines[0].transforms[0].route_topic_replacement: environment variable routedByValue "
        "is not set; set it or write ${routedByValue:-default} (the outbox transform's "
        "placeholder is written {routedByValue})"
    ]
