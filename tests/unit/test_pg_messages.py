"""Logical decoding message events (``TableSchema.form`` ``message``) without servers: which
prefixes are captured, the transforms let them through, both encoders write Debezium's layout."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from cdc.avro import Encoder
from cdc.connectjson import JsonEncoder
from cdc.model import ChangeBatch, RowChange, message_table
from cdc.sources.postgres.config import MessagesConfig
from tests.unit.test_event_transforms import (
    OUTBOX_T,
    SOURCE,
    SOURCE_SCHEMA,
    _Registry,
    apply,
    transforms,
)

TABLE = message_table("shop.message")
SRC = {**SOURCE, "schema": "", "table": ""}


def message(prefix: str = "app.orders", content: bytes = b"\x00hi") -> RowChange:
    return RowChange(TABLE, "m", None, (prefix, content), SRC, 1, "9:m", ("1:9", 2, 1))


@pytest.mark.parametrize(
    ("config", "captured"),
    [
        ({}, ["app.orders", "app.secret", "audit", "auditx"]),
        ({"prefixes": ["app\\..*", "audit"]}, ["app.orders", "app.secret", "audit"]),
        ({"exclude_prefixes": ["app\\.secret"]}, ["app.orders", "audit", "auditx"]),
        ({"prefixes": [".*"], "exclude_prefixes": ["audit.*"]}, ["app.orders", "app.secret"]),
    ],
)
def test_prefixes_match_whole_and_our_own_are_never_captured(
    config: dict[str, Any], captured: list[str]
) -> None:
    m = MessagesConfig(**config)
    prefixes = ["app.orders", "app.secret", "audit", "auditx", "cdc.incremental.s_1"]
    assert [p for p in prefixes if m.captures(p)] == captured


def test_a_prefix_pattern_that_does_not_compile_is_refused() -> None:
    with pytest.raises(ValueError, match=r"invalid prefix pattern '\(app'"):
        MessagesConfig(prefixes=["(app"])


def test_event_transforms_let_messages_through() -> None:
    t = transforms(
        "      - {type: filter, condition: 'id = 1'}\n" + OUTBOX_T + "      - {type: unwrap}\n"
    )
    ev = message()
    assert apply(t, ev) == [ev]
    assert ev.table is TABLE and ev.after == ("app.orders", b"\x00hi")


def test_avro_record_is_debeziums_message_event() -> None:
    reg = _Registry()
    (rec,) = Encoder(reg, SOURCE_SCHEMA, None, True).encode(ChangeBatch([message()], {})).records
    assert (rec.topic, rec.event_id) == ("shop.message", "9:m")
    assert reg.decode(rec.key) == {"prefix": "app.orders"}
    value = reg.decode(rec.value)
    assert value["op"] == "m" and value["source"] == SRC
    assert value["transaction"] == {"id": "1:9", "total_order": 2, "data_collection_order": 1}
    assert value["message"] == {"prefix": "app.orders", "content": b"\x00hi"}
    subjects = {subject: schema["name"] for subject, schema in reg.schemas.values()}
    assert subjects == {"shop.message-key": "MessageKey", "shop.message-value": "MessageValue"}


def test_json_record_is_debeziums_message_event() -> None:
    enc = JsonEncoder(SOURCE_SCHEMA, None, True, schemas_enable=False)
    (rec,) = enc.encode(ChangeBatch([message()], {})).records
    assert json.loads(rec.key or b"") == {"prefix": "app.orders"}
    value = json.loads(rec.value or b"")
    assert value["op"] == "m" and value["source"]["table"] == ""
    assert value["transaction"]["total_order"] == 2
    assert value["message"] == {
        "prefix": "app.orders",
        "content": base64.b64encode(b"\x00hi").decode(),
    }
    with_schema = JsonEncoder(SOURCE_SCHEMA, None, True).encode(ChangeBatch([message()], {}))
    schema = json.loads(with_schema.records[0].value or b"")["schema"]
    assert schema["name"] == "io.debezium.connector.postgresql.MessageValue"


def test_a_database_target_ignores_messages() -> None:
    from tests.unit.test_sql_apply import FakeTarget, _batch, _ev, _table

    t = _table("id", "v")
    sink = FakeTarget()
    sink.committed()
    sink.write_rows(
        _batch(_ev(t, "c", None, (1, 10)), message(), _ev(t, "c", None, (2, 20)), pos=1)
    )
    assert sink.rows() == {(1,): {"id": 1, "v": 10}, (2,): {"id": 2, "v": 20}}
    assert list(sink.committed_db["tables"]) == ['"tgt"."t"']  # no table made for messages
    assert sink.committed() == {"n": 1}


def test_column_transforms_leave_messages_alone_and_routing_renames_their_topic() -> None:
    t = transforms(
        "      - {type: drop_columns, columns: ['.*\\.content']}\n"
        "      - {type: hash_columns, columns: ['.*'], salt: x}\n"
        "      - {type: route_topics, regex: 'shop\\.(.*)', replacement: 'x.$1'}\n"
    )
    (out,) = apply(t, message())
    assert (out.table.topic, out.table.form) == ("x.message", "message")
    assert out.table.columns == TABLE.columns and out.after == ("app.orders", b"\x00hi")
