"""Avro schemas in Debezium's shapes, and the encoder from ``ChangeBatch`` to framed records.

Schema names, ``connect.name`` annotations and field order follow what Debezium's AvroConverter
produces, so consumers written for Debezium (Flink's debezium-avro-confluent, ksqlDB, Kafka Connect
sinks with ExtractNewRecordState) read these events unchanged. Topic, record and field names are
made in ``cdc._names`` (re-exported here).

Past 500 lines: the semantic types, the schema builders and the encoder are one module because
the encoder's specialised writers are planned from the exact shapes these builders return (field
order, union order); the next split would move the encoder (from "framing" down) to a module of
its own.
"""

from __future__ import annotations

import io
import json
import logging
import math
import struct
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import fastavro

from cdc import _native_avro
from cdc._avrofast import Unsupported, Writer
from cdc._names import MAX_TOPIC_LENGTH as MAX_TOPIC_LENGTH
from cdc._names import avro_name as avro_name
from cdc._names import avro_namespace as avro_namespace
from cdc._names import field_names as field_names
from cdc._names import topic_name as topic_name
from cdc.errors import CdcError, EncodeError, SourceError
from cdc.model import (
    NO_DEFAULT,
    ChangeBatch,
    Column,
    EncodedBatch,
    EncodedRecord,
    RowChange,
    SchemaRegistry,
    TableSchema,
    TxBoundary,
)

log = logging.getLogger(__name__)

# --- Debezium semantic types (Avro type of a non-null value) --------------------------------------

INT16: dict[str, Any] = {"type": "int", "connect.type": "int16"}
INT32 = "int"
INT64 = "long"
FLOAT32 = "float"
FLOAT64 = "double"
BOOLEAN = "boolean"
STRING = "string"
BYTES = "bytes"


def _named(base: str, name: str, version: int = 1, **extra: Any) -> dict[str, Any]:
    return {"type": base, "connect.version": version, "connect.name": name, **extra}


DATE = _named("int", "io.debezium.time.Date")
TIME_MILLIS = _named("int", "io.debezium.time.Time")
TIME_MICROS = _named("long", "io.debezium.time.MicroTime")
TIMESTAMP_MILLIS = _named("long", "io.debezium.time.Timestamp")
TIMESTAMP_MICROS = _named("long", "io.debezium.time.MicroTimestamp")
ZONED_TIMESTAMP = _named("string", "io.debezium.time.ZonedTimestamp")
ZONED_TIME = _named("string", "io.debezium.time.ZonedTime")
MICRO_DURATION = _named("long", "io.debezium.time.MicroDuration")
UUID = _named("string", "io.debezium.data.Uuid")
JSON = _named("string", "io.debezium.data.Json")
XML = _named("string", "io.debezium.data.Xml")
LTREE = _named("string", "io.debezium.data.Ltree")
TSVECTOR = _named("string", "io.debezium.data.TsVector")

POINT: dict[str, Any] = {
    "type": "record",
    "name": "Point",
    "namespace": "io.debezium.data.geometry",
    "fields": [
        {"name": "x", "type": "double"},
        {"name": "y", "type": "double"},
        {"name": "wkb", "type": ["null", "bytes"], "default": None},
        {"name": "srid", "type": ["null", "int"], "default": None},
    ],
    "connect.doc": "Geometry (POINT)",
    "connect.version": 1,
    "connect.name": "io.debezium.data.geometry.Point",
}
YEAR = _named("int", "io.debezium.time.Year")


def bits(length: int) -> dict[str, Any]:
    """Debezium's Bits: the bit string as an unsigned integer, little-endian bytes."""
    t = _named("bytes", "io.debezium.data.Bits")
    t["connect.parameters"] = {"length": str(length)}
    return t


def decimal(precision: int | None, scale: int) -> dict[str, Any]:
    """Kafka Connect's Decimal: big-endian two's-complement unscaled bytes.

    Without a precision (e.g. Postgres money) Confluent's AvroData writes precision 64.
    """
    params = {"scale": str(scale)}
    if precision is not None:
        params["connect.decimal.precision"] = str(precision)
    return {
        "type": "bytes",
        "scale": scale,
        "precision": 64 if precision is None else precision,
        "connect.version": 1,
        "connect.parameters": params,
        "connect.name": "org.apache.kafka.connect.data.Decimal",
        "logicalType": "decimal",
    }


VARIABLE_SCALE_DECIMAL: dict[str, Any] = {
    "type": "record",
    "name": "VariableScaleDecimal",
    "namespace": "io.debezium.data",
    "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}],
    "connect.doc": "Variable scaled decimal",
    "connect.version": 1,
    "connect.name": "io.debezium.data.VariableScaleDecimal",
}


def enum(values: list[str]) -> dict[str, Any]:
    t = _named("string", "io.debezium.data.Enum")
    t["connect.parameters"] = {"allowed": ",".join(values)}
    return t


def enum_set(values: list[str]) -> dict[str, Any]:
    """Debezium's EnumSet: the chosen values, comma-separated, in definition order."""
    out = _named("string", "io.debezium.data.EnumSet")
    out["connect.parameters"] = {"allowed": ",".join(values)}
    return out


def array(items: Any) -> dict[str, Any]:
    return {"type": "array", "items": items}


def unscaled_bytes(unscaled: int) -> bytes:
    """Minimal big-endian two's-complement bytes of ``unscaled`` (as Java's BigInteger)."""
    length = (unscaled + (unscaled < 0)).bit_length() // 8 + 1
    return unscaled.to_bytes(length, "big", signed=True)


def decimal_bytes(value: Decimal, scale: int) -> bytes:
    """Encode ``value`` at a fixed ``scale`` (rounding half-even beyond it, as the column would)."""
    return unscaled_bytes(int(value.scaleb(scale).to_integral_value()))


def variable_scale(value: Decimal) -> dict[str, Any]:
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits)) or "0")
    if sign:
        unscaled = -unscaled
    if exponent > 0:
        unscaled *= 10**exponent
        exponent = 0
    return {"scale": -exponent, "value": unscaled_bytes(unscaled)}


# --- schemas --------------------------------------------------------------------------------------


def _field(name: str, avro_type: Any, optional: bool) -> dict[str, Any]:
    if optional:
        return {"name": name, "type": ["null", avro_type], "default": None}
    return {"name": name, "type": avro_type}


# Properties Confluent's AvroData writes after ``connect.default`` (it writes connect.doc,
# connect.version, connect.parameters, connect.default, connect.name, connect.type in that order;
# ``logicalType`` comes later still).
_AFTER_DEFAULT = ("connect.name", "connect.type", "logicalType")


def default_json(avro_type: Any, value: Any) -> Any:
    """The JSON form of a column default ``value`` (the value as a row holds it) for a field of
    ``avro_type``, as Confluent's AvroData writes a Connect default; ``NO_DEFAULT`` when the
    type takes none here (records and arrays: Debezium gives Struct defaults up; non-finite floats:
    JSON has no literal for them).

    Bytes (and decimals, as their unscaled bytes) become a string of one character per byte
    (ISO-8859-1), as the Avro specification writes bytes defaults.
    """
    if value is None or value is NO_DEFAULT:
        return NO_DEFAULT
    base = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    if base == "bytes":
        if isinstance(value, Decimal):
            if not isinstance(avro_type, dict) or avro_type.get("logicalType") != "decimal":
                return NO_DEFAULT
            value = decimal_bytes(value, int(avro_type.get("scale", 0)))
        return value.decode("latin-1") if isinstance(value, bytes) else NO_DEFAULT
    if base == "boolean":
        return value if isinstance(value, bool) else NO_DEFAULT
    if base in ("int", "long"):
        return value if isinstance(value, int) and not isinstance(value, bool) else NO_DEFAULT
    if base in ("float", "double"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok and math.isfinite(value) else NO_DEFAULT
    if base == "string":
        return value if isinstance(value, str) else NO_DEFAULT
    return NO_DEFAULT


def _with_default(avro_type: Any, value: Any) -> Any:
    """``avro_type`` carrying ``connect.default``, where AvroData puts it among the properties."""
    t = {"type": avro_type} if isinstance(avro_type, str) else avro_type
    out: dict[str, Any] = {}
    for k, v in t.items():
        if k in _AFTER_DEFAULT and "connect.default" not in out:
            out["connect.default"] = value
        if k != "connect.default":
            out[k] = v
    out.setdefault("connect.default", value)
    return out


def column_field(name: str, column: Column, avro_type: Any, optional: bool) -> dict[str, Any]:
    """The record field of ``column``, as AvroConverter writes the field Debezium makes of it.

    With a default: the field's ``default`` and the type's ``connect.default`` hold it, and an
    optional field's union puts the type first (``[T, "null"]``: an Avro default must match the
    union's first branch). Without: ``["null", T]`` with default null when optional.
    """
    value = default_json(avro_type, column.default)
    if value is NO_DEFAULT:
        return _field(name, avro_type, optional)
    typed = _with_default(avro_type, value)
    if optional:
        return {"name": name, "type": [typed, "null"], "default": value}
    return {"name": name, "type": typed, "default": value}


def _once(t: Any, seen: set[str]) -> Any:
    """``t`` with every named record already in ``seen`` replaced by its full name.

    Avro allows a named type to be defined once per schema; two columns of one semantic record
    type (VariableScaleDecimal, Point) must refer to the first definition.
    """
    if isinstance(t, list):
        return [_once(x, seen) for x in t]
    if isinstance(t, dict):
        if t.get("type") == "record":
            full = f"{t['namespace']}.{t['name']}" if "namespace" in t else t["name"]
            if full in seen:
                return full
            seen.add(full)
        elif t.get("type") == "array":
            return {**t, "items": _once(t["items"], seen)}
    return t


def value_record(table: TableSchema) -> dict[str, Any]:
    seen: set[str] = set()
    ns = avro_namespace(table.topic)
    names = field_names(table)
    return {
        "type": "record",
        "name": "Value",
        "namespace": ns,
        "fields": [
            column_field(n, c, _once(c.avro, seen), c.optional)
            for n, c in zip(names, table.columns, strict=True)
        ],
        "connect.name": f"{ns}.Value",
    }


def key_schema(table: TableSchema) -> dict[str, Any] | None:
    if not table.key:
        return None
    seen: set[str] = set()
    ns = avro_namespace(table.topic)
    names = field_names(table)
    return {
        "type": "record",
        "name": "Key",
        "namespace": ns,
        "fields": [
            column_field(names[i], table.columns[i], _once(table.columns[i].avro, seen), False)
            for i in table.key
        ],
        "connect.name": f"{ns}.Key",
    }


TX_BLOCK: dict[str, Any] = {
    "type": "record",
    "name": "block",
    "namespace": "event",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "total_order", "type": "long"},
        {"name": "data_collection_order", "type": "long"},
    ],
    "connect.version": 1,
    "connect.name": "event.block",
}

OPTIONAL_LONG: list[Any] = ["null", "long"]


SNAPSHOT_FLAG: dict[str, Any] = {
    "type": "string",
    "connect.version": 1,
    "connect.parameters": {
        "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,"
        "incremental"
    },
    "connect.default": "false",
    "connect.name": "io.debezium.data.Enum",
}


def source_schema(namespace: str, connector_fields: list[dict[str, Any]]) -> dict[str, Any]:
    """Debezium's ``source`` record: the fields every connector has, then ``connector_fields``."""
    return {
        "type": "record",
        "name": "Source",
        "namespace": namespace,
        "fields": [
            {"name": "version", "type": "string"},
            {"name": "connector", "type": "string"},
            {"name": "name", "type": "string"},
            {"name": "ts_ms", "type": "long"},
            {"name": "snapshot", "type": [SNAPSHOT_FLAG, "null"], "default": "false"},
            {"name": "db", "type": "string"},
            {"name": "sequence", "type": ["null", "string"], "default": None},
            {"name": "ts_us", "type": OPTIONAL_LONG, "default": None},
            {"name": "ts_ns", "type": OPTIONAL_LONG, "default": None},
            *connector_fields,
        ],
        "connect.name": f"{namespace}.Source",
    }


def envelope_schema(table: TableSchema, source_schema: dict[str, Any]) -> dict[str, Any]:
    ns = avro_namespace(table.topic)
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": ns,
        "fields": [
            {"name": "before", "type": ["null", value_record(table)], "default": None},
            {"name": "after", "type": ["null", f"{ns}.Value"], "default": None},
            {"name": "source", "type": source_schema},
            {"name": "transaction", "type": ["null", TX_BLOCK], "default": None},
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": OPTIONAL_LONG, "default": None},
            {"name": "ts_us", "type": OPTIONAL_LONG, "default": None},
            {"name": "ts_ns", "type": OPTIONAL_LONG, "default": None},
        ],
        "connect.version": 2,
        "connect.name": f"{ns}.Envelope",
    }


TX_COLLECTION: dict[str, Any] = {
    "type": "record",
    "name": "collection",
    "namespace": "event",
    "fields": [
        {"name": "data_collection", "type": "string"},
        {"name": "event_count", "type": "long"},
    ],
    "connect.version": 1,
    "connect.name": "event.collection",
}


def transaction_schemas(prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Key and value schemas of Debezium's transaction metadata topic.

    As AvroConverter writes the Connect schemas of Debezium's SchemaFactory
    (``transactionKeySchema``, ``transactionValueSchema``): both version 1; ``data_collections`` an
    optional array of optional ``event.collection`` (version 1) structs, so its items are the union
    ``["null", event.collection]``. ``prefix`` does not enter the schemas (Debezium's names are
    fixed), only the subjects they are registered under.
    """
    ns = "io.debezium.connector.common"
    key = {
        "type": "record",
        "name": "TransactionMetadataKey",
        "namespace": ns,
        "fields": [{"name": "id", "type": "string"}],
        "connect.version": 1,
        "connect.name": f"{ns}.TransactionMetadataKey",
    }
    value = {
        "type": "record",
        "name": "TransactionMetadataValue",
        "namespace": ns,
        "fields": [
            {"name": "status", "type": "string"},
            {"name": "id", "type": "string"},
            {"name": "event_count", "type": OPTIONAL_LONG, "default": None},
            {
                "name": "data_collections",
                "type": ["null", {"type": "array", "items": ["null", TX_COLLECTION]}],
                "default": None,
            },
            {"name": "ts_ms", "type": "long"},
        ],
        "connect.version": 1,
        "connect.name": f"{ns}.TransactionMetadataValue",
    }
    return key, value


def key_row(ev: RowChange) -> tuple[Any, ...] | None:
    """The row an event's key is read from (the old key of a primary-key change, else the new
    row, else the old one); None for a truncate, whose key is null."""
    if ev.op == "t":
        return None
    row = ev.key_override or ev.after or ev.before
    assert row is not None
    return row


def transaction_value(ev: TxBoundary) -> dict[str, Any]:
    """The record of a BEGIN or END on the transaction topic (``transaction_schemas``' value)."""
    return {
        "status": ev.status,
        "id": ev.tx_id,
        "event_count": ev.event_count,
        "data_collections": None
        if ev.per_table is None
        else [{"data_collection": t, "event_count": n} for t, n in ev.per_table.items()],
        "ts_ms": ev.ts_ms,
    }


# --- framing --------------------------------------------------------------------------------------

_MAGIC = b"\x00"


def canonical_schema(schema: Any) -> str:
    """The one text of ``schema`` that identical schemas share (keys sorted, no spaces): what
    every schema store and registry client compares to give an identical schema one id."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def frame(schema_id: int, body: bytes) -> bytes:
    """Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body."""
    return _MAGIC + struct.pack(">I", schema_id) + body


def unframe(data: bytes) -> tuple[int, bytes]:
    if len(data) < 5 or data[0] != 0:
        raise ValueError("not a Confluent-framed Avro payload (magic byte 0 missing)")
    return struct.unpack(">I", data[1:5])[0], data[5:]


# --- encoder --------------------------------------------------------------------------------------


class _TableCodec:
    __slots__ = (
        "fast_key",
        "fast_row",
        "fast_value",
        "fell_back",
        "key_head",
        "key_id",
        "key_names",
        "key_schema",
        "names",
        "value_head",
        "value_id",
        "value_schema",
    )

    def __init__(
        self,
        table: TableSchema,
        source_schema: dict[str, Any],
        registry: SchemaRegistry,
        specialise: bool,
        native: bool | None = None,
    ):
        env = envelope_schema(table, source_schema)
        key = key_schema(table)
        self.names = field_names(table)
        self.value_schema = fastavro.parse_schema(env, _write_hint=False)
        self.value_id = registry.register(f"{table.topic}-value", env)
        self.value_head = frame(self.value_id, b"")
        self.fast_value = _specialise_envelope(self.value_schema, native) if specialise else None
        self.fast_key = None
        self.fell_back = False
        if key is None:
            self.key_schema = None
            self.key_id = 0
            self.key_head = b""
            self.key_names: list[tuple[str, int]] = []
        else:
            self.key_schema = parsed_key = fastavro.parse_schema(key, _write_hint=False)
            self.key_id = registry.register(f"{table.topic}-key", key)
            self.key_head = frame(self.key_id, b"")
            self.key_names = [(self.names[i], i) for i in table.key]
            if specialise:
                # The key record reads the key columns straight from the row tuple.
                self.fast_key = _specialise(
                    parsed_key, {f"{key['namespace']}.{key['name']}": tuple(table.key)}, (), native
                )
        # Native key and envelope writers: both in one call per row change.
        self.fast_row = _native_avro.row_encoder(
            self.fast_key, self.fast_value, key is not None, self.key_head, self.value_head
        )


def _specialise(
    schema: Any,
    positional: dict[str, tuple[int, ...] | None],
    memo: tuple[str, ...] = (),
    native: bool | None = None,
) -> Writer | None:
    try:
        return _native_avro.compile_writer(schema, positional, memo, native=native)
    except Unsupported:
        return None  # fastavro writes this schema


def _specialise_envelope(schema: Any, native: bool | None = None) -> Writer | None:
    """A writer of the envelope as the tuple (before, after, source, tx, op, ts_ms, ts_us, ts_ns),
    rows and ``tx`` as the tuples ``RowChange`` carries, ``source`` as its dict."""
    types = {f["name"]: f["type"] for f in schema["fields"]}
    if list(types) != ["before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"]:
        return None
    value, source, tx = types["before"], types["source"], types["transaction"]
    if not (
        isinstance(value, list)
        and isinstance(value[1], dict)
        and isinstance(source, dict)
        and isinstance(tx, list)
    ):
        return None
    positional: dict[str, tuple[int, ...] | None] = {
        schema["name"]: None,
        value[1]["name"]: None,
        tx[1]["name"]: None,
    }
    # The source block's and the envelope's own strings and numbers repeat from one event to
    # the next (names, commit time, processing time): their bytes are reused while they do.
    return _specialise(schema, positional, (schema["name"], source["name"]), native)


class _TxCodec:
    """Schemas and writers of the transaction metadata topic; records read from tuples:
    key (id,), value (status, id, event_count, [(data_collection, event_count), ...], ts_ms)."""

    __slots__ = ("fast_key", "fast_value", "key_head", "key_schema", "value_head", "value_schema")

    def __init__(
        self, topic: str, registry: SchemaRegistry, specialise: bool, native: bool | None = None
    ) -> None:
        k, v = transaction_schemas(topic)
        self.key_schema = fastavro.parse_schema(k, _write_hint=False)
        self.key_head = frame(registry.register(f"{topic}-key", k), b"")
        self.value_schema = fastavro.parse_schema(v, _write_hint=False)
        self.value_head = frame(registry.register(f"{topic}-value", v), b"")
        self.fast_key = self.fast_value = None
        if specialise:
            ns = k["namespace"]
            self.fast_key = _specialise(self.key_schema, {f"{ns}.{k['name']}": None}, (), native)
            self.fast_value = _specialise(
                self.value_schema,
                {f"{ns}.{v['name']}": None, "event.collection": None},
                (),
                native,
            )


MESSAGE_NAMESPACE = "io.debezium.connector.postgresql"


def message_schemas(source_schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Key and value schemas of logical decoding message events (``TableSchema.form``
    ``message``), as Debezium's PostgresSchemaFactory makes them (all version 1): key
    ``MessageKey`` {prefix}, value ``MessageValue`` {op, ts_ms, source, transaction, message
    ``Message`` {prefix, content}}, prefix and content optional. Fixed names, as the
    transaction topic's: the topic enters only the subjects."""
    ns = MESSAGE_NAMESPACE
    key = {
        "type": "record",
        "name": "MessageKey",
        "namespace": ns,
        "fields": [{"name": "prefix", "type": ["null", "string"], "default": None}],
        "connect.version": 1,
        "connect.name": f"{ns}.MessageKey",
    }
    block = {
        "type": "record",
        "name": "Message",
        "namespace": ns,
        "fields": [
            {"name": "prefix", "type": ["null", "string"], "default": None},
            {"name": "content", "type": ["null", "bytes"], "default": None},
        ],
        "connect.version": 1,
        "connect.name": f"{ns}.Message",
    }
    value = {
        "type": "record",
        "name": "MessageValue",
        "namespace": ns,
        "fields": [
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": OPTIONAL_LONG, "default": None},
            {"name": "source", "type": source_schema},
            {"name": "transaction", "type": ["null", TX_BLOCK], "default": None},
            {"name": "message", "type": block},
        ],
        "connect.version": 1,
        "connect.name": f"{ns}.MessageValue",
    }
    return key, value


def tx_block(tx: tuple[str, int, int] | None) -> dict[str, Any] | None:
    """The envelope's ``transaction`` record of ``RowChange.tx`` (None outside transactions)."""
    if tx is None:
        return None
    return {"id": tx[0], "total_order": tx[1], "data_collection_order": tx[2]}


def message_value(ev: RowChange, now_us: int) -> dict[str, Any]:
    """The value record of a message event (``message_schemas``); ``now_us``: when processed.
    A transactional message has its transaction block, as a row change has."""
    assert ev.after is not None
    return {
        "op": "m",
        "ts_ms": now_us // 1000,
        "source": ev.source,
        "transaction": tx_block(ev.tx),
        "message": {"prefix": ev.after[0], "content": ev.after[1]},
    }


def shaped_schemas(
    table: TableSchema, source_schema: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """Key and value schemas (key None: no key) of a table a transform reshaped: ``row`` (the
    flat ``Value`` record, the table's ``Key``) or ``payload`` (the key column's and the payload
    column's own types, as Debezium's outbox EventRouter gives them); or of the message events
    (``message_schemas``: ``source_schema`` required)."""
    if table.form == "message":
        assert source_schema is not None
        return message_schemas(source_schema)
    if table.form == "payload":
        k, v = table.columns[table.key[0]], table.columns[1]
        return (["null", k.avro] if k.optional else k.avro), (
            ["null", v.avro] if v.optional else v.avro
        )
    return key_schema(table), value_record(table)


class _ShapedCodec:
    """Schemas of a reshaped table or of message events (``shaped_schemas``), registered like
    the envelope's."""

    __slots__ = ("key_head", "key_of", "key_schema", "names", "value_head", "value_schema")

    def __init__(
        self, table: TableSchema, registry: SchemaRegistry, source_schema: dict[str, Any]
    ) -> None:
        key, value = shaped_schemas(table, source_schema)
        self.names = field_names(table)
        self.value_schema = fastavro.parse_schema(value, _write_hint=False)
        self.value_head = frame(registry.register(f"{table.topic}-value", value), b"")
        self.key_schema = None if key is None else fastavro.parse_schema(key, _write_hint=False)
        self.key_head = b""
        if key is not None:
            self.key_head = frame(registry.register(f"{table.topic}-key", key), b"")
        names, idx = self.names, table.key
        if table.form == "payload":
            i = idx[0]
            self.key_of: Callable[[tuple[Any, ...]], Any] = lambda row: row[i]
        else:
            self.key_of = lambda row: {names[i]: row[i] for i in idx}


def _unwritable(ev: RowChange, e: Exception) -> EncodeError:
    return EncodeError(
        f"topic {ev.table.topic}: event {ev.event_id} (op {ev.op}) cannot be written as Avro by "
        f"its table's schema ({type(e).__name__}: {e}); a restart would fail on it again, so the "
        "pipeline stops. A value the source produced that its own schema refuses is a bug: "
        "report it; to go on meanwhile, drop or truncate the column with a transform "
        "(docs/transforms.md)"
    )


class TopicOwners:
    """Refuses two tables whose names sanitise to one topic (``"Order Lines"`` and
    ``Order_Lines``): their events would share a topic, its schemas and its keys. Topics a
    transform routed on purpose (RegexRouter merging shards, the outbox's topics) are not names
    made by sanitising, and are let through. Called once per table version by each encoder."""

    def __init__(self) -> None:
        # topic -> ((namespace, table), whether the topic is the table's own sanitised name)
        self._topics: dict[str, tuple[tuple[str, str], bool]] = {}

    def __call__(self, table: TableSchema) -> None:
        me = (table.namespace, table.table)
        natural = table.topic.endswith("." + topic_name(*me))
        owner = self._topics.setdefault(table.topic, (me, natural))
        if owner[0] == me or not (natural and owner[1]):
            return
        (ns, name) = owner[0]
        raise SourceError(
            f"tables {ns}.{name!r} and {table.namespace}.{table.table!r} both have the topic "
            f"{table.topic!r} (characters other than letters, digits, '.', '_' and '-' become "
            "'_' in topic names, as in Debezium); capture only one of them, or give one another "
            "topic with a route_topics transform (docs/transforms.md)",
            retryable=False,
        )


class Encoder:
    """Encodes batches into Confluent-framed Avro records; schemas are registered on first use.

    One codec per ``TableSchema`` object: a new table version registers new schema versions.
    Each codec compiles writers specialised to its schemas, "native" (``cdc._native``, compiled)
    or "python" (``cdc._avrofast``) as ``cdc._native_avro`` chooses: they give the bytes fastavro
    gives; a datum they do not take (or a schema they do not handle) is written by fastavro, so
    output and errors are fastavro's either way; ``fallbacks`` counts the records fastavro wrote
    that way. ``specialise=False`` writes everything with fastavro (the reference the specialised
    writers are tested against); ``native`` True or False forces that path (None: the process's,
    ``cdc._native_avro.PATH``). On the native path a row change's framed key and value come from
    one call (``cdc._native.RowEncoder``); an event it raises on is encoded part by part.
    """

    def __init__(
        self,
        registry: SchemaRegistry,
        source_schema: dict[str, Any],
        tx_topic: str | None,
        tombstones: bool,
        *,
        specialise: bool = True,
        native: bool | None = None,
    ) -> None:
        self._specialise = specialise
        self._native = native
        if specialise and native is None:
            _native_avro.log_choice()
        self.fallbacks = 0
        self._registry = registry
        self._source_schema = source_schema
        self._tx_topic = tx_topic
        self._tombstones = tombstones
        self._codecs: dict[int, tuple[TableSchema, _TableCodec]] = {}
        self._tx: _TxCodec | None = None
        self._shapes: dict[int, tuple[TableSchema, _ShapedCodec]] = {}
        self._check_topic = TopicOwners()

    def _codec(self, table: TableSchema) -> _TableCodec:
        hit = self._codecs.get(id(table))
        if hit is not None and hit[0] is table:
            return hit[1]
        self._check_topic(table)
        codec = _TableCodec(
            table, self._source_schema, self._registry, self._specialise, self._native
        )
        self._codecs[id(table)] = (table, codec)
        return codec

    def _tx_codec(self) -> _TxCodec:
        if self._tx is None:
            assert self._tx_topic is not None
            self._tx = _TxCodec(self._tx_topic, self._registry, self._specialise, self._native)
        return self._tx

    def _fell_back(self, c: _TableCodec, ev: RowChange, part: str, e: Exception) -> None:
        self.fallbacks += 1
        if not c.fell_back:
            c.fell_back = True
            log.debug(
                "%s: %s of event %s written by fastavro (specialised writer: %r)",
                ev.table.topic,
                part,
                ev.event_id,
                e,
            )

    @staticmethod
    def _slow_value(
        c: _TableCodec, ev: RowChange, now_us: int, body: Callable[[Any, Any], bytes]
    ) -> bytes:
        names = c.names
        before = None if ev.before is None else dict(zip(names, ev.before, strict=True))
        after = None if ev.after is None else dict(zip(names, ev.after, strict=True))
        tx = None
        if ev.tx is not None:
            tx = {"id": ev.tx[0], "total_order": ev.tx[1], "data_collection_order": ev.tx[2]}
        value = {
            "before": before,
            "after": after,
            "source": ev.source,
            "transaction": tx,
            "op": ev.op,
            "ts_ms": now_us // 1000,
            "ts_us": now_us,
            "ts_ns": now_us * 1000,
        }
        return body(c.value_schema, value)

    def _encode_row(
        self,
        c: _TableCodec,
        ev: RowChange,
        now: tuple[int, int, int],
        body: Callable[[Any, Any], bytes],
    ) -> tuple[bytes | None, bytes]:
        """Key and value of ``ev``, each with its writer, or fastavro where that one refuses;
        ``now``: the envelope's (ts_ms, ts_us, ts_ns)."""
        now_ms, now_us, now_ns = now
        key: bytes | None = None
        if c.key_schema is not None and ev.op != "t":
            row = ev.key_override or ev.after or ev.before
            assert row is not None
            kbody = None
            if c.fast_key is not None:
                try:
                    kbody = c.fast_key(row)
                except Exception as e:
                    self._fell_back(c, ev, "key", e)  # fastavro writes it or raises
            if kbody is None:
                kbody = body(c.key_schema, {n: row[i] for n, i in c.key_names})
            key = c.key_head + kbody
        vbody = None
        if c.fast_value is not None:
            try:
                vbody = c.fast_value(
                    (ev.before, ev.after, ev.source, ev.tx, ev.op, now_ms, now_us, now_ns)
                )
            except Exception as e:
                self._fell_back(c, ev, "value", e)
        if vbody is None:
            vbody = self._slow_value(c, ev, now_us, body)
        vbytes = c.value_head + vbody
        return key, vbytes

    def _shaped(
        self, ev: RowChange, body: Callable[[Any, Any], bytes], now_us: int
    ) -> EncodedRecord:
        """The record of a row change whose table a transform reshaped (``TableSchema.form``
        ``row`` or ``payload``), or of a message event: written by fastavro (no specialised
        writer, not a fallback)."""
        hit = self._shapes.get(id(ev.table))
        if hit is None or hit[0] is not ev.table:
            self._check_topic(ev.table)
            codec = _ShapedCodec(ev.table, self._registry, self._source_schema)
            hit = self._shapes[id(ev.table)] = (ev.table, codec)
        c = hit[1]
        try:
            key = None
            row = key_row(ev)
            if c.key_schema is not None and row is not None:
                key = c.key_head + body(c.key_schema, c.key_of(row))
            value = None
            if ev.table.form == "message":
                value = c.value_head + body(c.value_schema, message_value(ev, now_us))
            elif ev.after is not None:
                datum = (
                    ev.after[1]
                    if ev.table.form == "payload"
                    else dict(zip(c.names, ev.after, strict=True))
                )
                value = c.value_head + body(c.value_schema, datum)
        except CdcError:
            raise
        except Exception as e:
            raise _unwritable(ev, e) from None
        return EncodedRecord(ev.table.topic, key, value, ev.ts_ms, ev.event_id, ev.headers)

    def encode(self, batch: ChangeBatch) -> EncodedBatch:
        out: list[EncodedRecord] = []
        buf = io.BytesIO()
        write = fastavro.schemaless_writer

        def body(schema: Any, record: Any) -> bytes:
            buf.seek(0)
            buf.truncate()
            write(buf, schema, record)
            return buf.getvalue()

        # The envelope's ts_* say when the connector processed the event (source.ts_* say when
        # the database committed it), as in Debezium.
        now_us = time.time_ns() // 1000
        now_ms, now_ns = now_us // 1000, now_us * 1000
        last_table, c = None, None
        for ev in batch.events:
            if isinstance(ev, RowChange):
                if ev.table.form != "envelope":
                    out.append(self._shaped(ev, body, now_us))
                    continue
                if ev.table is not last_table:  # runs of one table are the common case
                    last_table, c = ev.table, self._codec(ev.table)
                assert c is not None
                kv = None
                if c.fast_row is not None:
                    try:
                        kv = c.fast_row(ev, now_ms, now_us, now_ns)
                    except Exception:
                        kv = None  # written below part by part, by fastavro where one refuses
                if kv is not None:
                    key, vbytes = kv
                else:
                    try:
                        key, vbytes = self._encode_row(c, ev, (now_ms, now_us, now_ns), body)
                    except CdcError:
                        raise
                    except Exception as e:  # fastavro refused it too: it always will
                        raise _unwritable(ev, e) from None
                out.append(
                    EncodedRecord(ev.table.topic, key, vbytes, ev.ts_ms, ev.event_id, ev.headers)
                )
                if ev.op == "d" and self._tombstones and key is not None:
                    out.append(
                        EncodedRecord(ev.table.topic, key, None, ev.ts_ms, ev.event_id + "~")
                    )
            elif self._tx_topic is not None:
                tc = self._tx_codec()
                if tc.fast_key is not None and tc.fast_value is not None:
                    try:
                        per_table = None if ev.per_table is None else list(ev.per_table.items())
                        out.append(
                            EncodedRecord(
                                self._tx_topic,
                                tc.key_head + tc.fast_key((ev.tx_id,)),
                                tc.value_head
                                + tc.fast_value(
                                    (ev.status, ev.tx_id, ev.event_count, per_table, ev.ts_ms)
                                ),
                                ev.ts_ms,
                                ev.event_id,
                            )
                        )
                        continue
                    except Exception:
                        self.fallbacks += 1
                tx_value = transaction_value(ev)
                out.append(
                    EncodedRecord(
                        self._tx_topic,
                        tc.key_head + body(tc.key_schema, {"id": ev.tx_id}),
                        tc.value_head + body(tc.value_schema, tx_value),
                        ev.ts_ms,
                        ev.event_id,
                    )
                )
        return EncodedBatch(out, batch.position)
