"""JSON output in the layout of Kafka Connect's JsonConverter, as Debezium users receive it.

A Kafka or NATS sink with ``format: json`` gets its records from ``JsonEncoder`` instead of the
Avro ``Encoder``: the same events (envelope, flat rows of ``unwrap``, payloads of ``outbox``,
transaction metadata), each key and value written as JsonConverter writes the Connect record
Debezium would have produced:

- ``schemas_enable: true`` (JsonConverter's ``schemas.enable``, its default):
  ``{"schema": <Connect schema>, "payload": <value>}``; ``false``: the payload alone.
- The Connect schema is derived from the Avro schema the Avro encoder would register (so the two
  formats never disagree on names, optionality, versions or parameters): a record is a
  ``struct`` (its ``connect.name`` as ``name``), a union with null an ``optional`` type,
  ``int``/``long``/``float``/``double`` are ``int32``/``int64``/``float``/``float64``
  (``connect.type`` int16 kept), ``connect.version``/``connect.doc``/``connect.parameters``/
  ``connect.default`` become ``version``/``doc``/``parameters``/``default``. Keys in
  JsonConverter's order: type, fields/items, optional, name, version, doc, parameters, default,
  and a struct member's ``field`` last.
- Values: bytes as base64; decimals (``org.apache.kafka.connect.data.Decimal``) as the base64 of
  their unscaled two's-complement bytes (``decimal_format: base64``, JsonConverter's default) or
  as a plain JSON number (``numeric``); NaN and infinities as the strings Jackson writes
  (``"NaN"``, ``"Infinity"``, ``"-Infinity"``); a null field that has a default is written as the
  default (JsonConverter's ``replace.null.with.default``, on by default).
- A tombstone is a record with a null value (no JSON at all), as JsonConverter returns null.

No schema registry is involved. Each table version's schema text and value writers are made once
(``_TableJson``; struct writers are generated code, as the transforms' row functions); a row then
costs one string join per struct. Measured on the 2-core development machine (loaded), per row
of a 12-column table: ~17 us without schemas, ~30 us with them (the schema text, ~3.5 KB, is
copied into every record), against ~2-6 us for the Avro encoder.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from cdc._names import field_names
from cdc.avro import (
    TopicOwners,
    decimal_bytes,
    envelope_schema,
    key_row,
    key_schema,
    message_value,
    shaped_schemas,
    transaction_schemas,
    transaction_value,
)
from cdc.errors import EncodeError
from cdc.model import (
    ChangeBatch,
    EncodedBatch,
    EncodedRecord,
    RecordFormat,
    RowChange,
    TableSchema,
)

Text = Callable[[Any], str]
"""A value -> its JSON text (never called with None: ``_nullable`` handles that)."""

DECIMAL = "org.apache.kafka.connect.data.Decimal"


# The fields a broker sink's config (Kafka, NATS) declares for its record format, last among its
# fields, each with its default: ``format: Format = "avro"``...; ``check_format`` in a validator.
Format = Annotated[
    Literal["avro", "json"],
    Field(
        description="avro: Confluent-framed Avro, schemas in a registry; json: what Kafka "
        "Connect's JsonConverter writes for Debezium's events (docs/sink-kafka.md, JSON output)"
    ),
]
SchemasEnable = Annotated[
    bool,
    Field(
        description="format json only: each key and value as {schema, payload} "
        "(JsonConverter's schemas.enable); false: the payload alone"
    ),
]
DecimalFormat = Annotated[
    Literal["base64", "numeric"],
    Field(
        description="format json only: decimals as base64 of their unscaled bytes "
        "(JsonConverter's decimal.format BASE64, its default) or as JSON numbers (NUMERIC)"
    ),
]


ReplaceNullWithDefault = Annotated[
    bool,
    Field(
        description="format json only: a null in a field that has a default is written as the "
        "default (JsonConverter's replace.null.with.default, on by default); false: as null"
    ),
]
JSON_SETTINGS = {"schemas_enable", "decimal_format", "replace_null_with_default"}


def record_format(config: Any) -> RecordFormat:
    """The ``RecordFormat`` of a sink config declaring the fields above."""
    return RecordFormat(
        config.format,
        config.schemas_enable,
        config.decimal_format,
        config.replace_null_with_default,
    )


def check_format(config: BaseModel) -> None:
    """Refuse the JSON settings beside ``format: avro`` (they would silently do nothing)."""
    fmt = getattr(config, "format", "avro")
    if fmt != "json":
        extra = sorted(JSON_SETTINGS & config.model_fields_set)
        if extra:
            raise ValueError(
                f"{' and '.join(extra)} only apply to format: json (format is {fmt!r}): remove "
                "them or set format: json"
            )


# --- schemas --------------------------------------------------------------------------------------

_PRIMITIVES = {
    "int": "int32",
    "long": "int64",
    "float": "float",
    "double": "float64",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
}


def _float_text(v: Any) -> str:
    f = float(v)
    if math.isfinite(f):
        return repr(f) if isinstance(v, float) else str(v)
    return '"NaN"' if math.isnan(f) else ('"Infinity"' if f > 0 else '"-Infinity"')


_escape: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]
"""A string as a JSON string literal, non-ASCII kept (the C function json.dumps uses)."""


def _string_text(v: Any) -> str:
    return _escape(v)


def _bytes_text(v: Any) -> str:
    return '"' + base64.b64encode(bytes(v)).decode() + '"'


def _int_text(v: Any) -> str:
    return str(int(v))


def _bool_text(v: Any) -> str:
    return "true" if v else "false"


def _decimal_text(scale: int, numeric: bool) -> Text:
    def text(v: Any) -> str:
        if isinstance(v, bytes | bytearray):
            if not numeric:
                return _bytes_text(v)
            v = Decimal(int.from_bytes(v, "big", signed=True)).scaleb(-scale)
        if numeric:
            return format(Decimal(v).quantize(Decimal(1).scaleb(-scale)), "f")
        return _bytes_text(decimal_bytes(Decimal(v), scale))

    return text


class _Converter:
    """Walks Avro types (resolving named references) into Connect schemas and value writers."""

    def __init__(self, fmt: RecordFormat) -> None:
        self.numeric = fmt.decimal_format == "numeric"
        self.replace_null = fmt.replace_null_with_default
        self.named: dict[str, Any] = {}

    def convert(self, t: Any, optional: bool = False) -> tuple[dict[str, Any], Text]:
        """(Connect JSON schema, writer of a non-null value) of Avro type ``t``."""
        if isinstance(t, list):
            others = [x for x in t if x != "null"]
            if len(others) != 1:
                raise ValueError(f"union {t!r} has no Connect equivalent")
            return self.convert(others[0], optional or "null" in t)
        if isinstance(t, str) and t in self.named:
            t = self.named[t]
        props: dict[str, Any] = t if isinstance(t, dict) else {"type": t}
        base = props["type"]
        schema: dict[str, Any]
        text: Text
        if base == "record":
            full = (
                f"{props['namespace']}.{props['name']}" if "namespace" in props else props["name"]
            )
            self.named[full] = props
            fields = []
            writers: list[tuple[str, Text, bool]] = []
            for f in props["fields"]:
                fs, ft, nullable = self.field(f["type"])
                fields.append({**fs, "field": f["name"]})
                writers.append((f["name"], ft, nullable))
            schema = {"type": "struct", "fields": fields}
            text = _struct_text(writers)
            props = {**props, "connect.name": props.get("connect.name", full)}
        elif base == "array":
            items, item_text, nullable = self.field(props["items"])
            schema = {"type": "array", "items": items}
            text = _array_text(_nullable(item_text) if nullable else item_text)
        elif base == "bytes" and props.get("connect.name") == DECIMAL:
            schema = {"type": "bytes"}
            text = _decimal_text(int(props.get("scale", 0)), self.numeric)
        elif base in _PRIMITIVES:
            schema = {"type": props.get("connect.type", _PRIMITIVES[base])}
            text = {
                "int": _int_text,
                "long": _int_text,
                "float": _float_text,
                "double": _float_text,
                "boolean": _bool_text,
                "string": _string_text,
                "bytes": _bytes_text,
            }[base]
        else:
            raise ValueError(f"avro type {base!r} has no Connect equivalent")
        schema["optional"] = optional
        for avro_key, connect_key in (
            ("connect.name", "name"),
            ("connect.version", "version"),
            ("connect.doc", "doc"),
            ("connect.parameters", "parameters"),
        ):
            if avro_key in props:
                schema[connect_key] = props[avro_key]
        if props.get("connect.default") is not None:
            default = props["connect.default"]
            if base == "bytes":  # Avro writes a bytes default as one character per byte
                default = default.encode("latin-1")
                if props.get("connect.name") == DECIMAL:
                    default = Decimal(int.from_bytes(default, "big", signed=True)).scaleb(
                        -int(props.get("scale", 0))
                    )
            default_text = text(default)
            schema["default"] = json.loads(default_text)
            if self.replace_null:
                text = _or_default(text, default_text)
        return schema, text

    def field(self, t: Any) -> tuple[dict[str, Any], Text, bool]:
        """Like ``convert``, and whether None is written as ``null`` by the caller (False: the
        writer takes None itself, writing the default)."""
        schema, text = self.convert(t)
        return schema, text, not ("default" in schema and self.replace_null)


def _nullable(text: Text) -> Text:
    def out(v: Any) -> str:
        return "null" if v is None else text(v)

    return out


def _or_default(text: Text, default: str) -> Text:
    def out(v: Any) -> str:
        return default if v is None else text(v)

    return out


# Writers of the commonest types, inlined into the generated struct writers (a call less each).
_INLINE: dict[Text, str] = {
    _string_text: "_escape(_x)",
    _int_text: "str(int(_x))",
    _bool_text: "('true' if _x else 'false')",
}


def _struct_text(writers: list[tuple[str, Text, bool]]) -> Text:
    """The writer of a struct from a dict (by field name) or a tuple (a row: by position).

    Generated once per struct, as the transforms' row functions are: source holds field names
    as string literals and indexes only; the field writers are bound as defaults.
    """
    bound: dict[str, Any] = {"_escape": _escape}
    by_index: list[str] = []
    by_name: list[str] = []
    for j, (name, text, nullable) in enumerate(writers):
        key = json.dumps(("," if j else "{") + json.dumps(name) + ":")
        bound[f"w{j}"] = text
        for out, x in ((by_index, f"v[{j}]"), (by_name, f"v.get({name!r})")):
            if not nullable:
                out.append(f"{key}, w{j}({x})")
            elif text in _INLINE:
                out.append(f"{key}, ('null' if (_x := {x}) is None else {_INLINE[text]})")
            else:
                out.append(f"{key}, ('null' if (_x := {x}) is None else w{j}(_x))")
    close = "'}'" if writers else "'{}'"
    args = "".join(f", {n}={n}" for n in bound)
    code = (
        f"def struct(v{args}):\n"
        f"    if type(v) is tuple:\n"
        f"        if len(v) != {len(writers)}:\n"
        f"            raise ValueError(f'a row of {{len(v)}} values for {len(writers)} fields')\n"
        f"        return ''.join(({''.join(p + ', ' for p in by_index)}{close}))\n"
        f"    return ''.join(({''.join(p + ', ' for p in by_name)}{close}))\n"
    )
    ns: dict[str, Any] = dict(bound)
    exec(compile(code, "<cdc.connectjson struct>", "exec"), ns)
    made: Text = ns["struct"]
    return made


def _array_text(item: Text) -> Text:
    def out(v: Any) -> str:
        return "[" + ",".join(item(x) for x in v) + "]"

    return out


class _Part:
    """How one key or value of a table version is written: ``head`` + payload text + ``tail``."""

    __slots__ = ("head", "tail", "text")

    def __init__(self, avro_schema: Any, fmt: RecordFormat) -> None:
        schema, text, nullable = _Converter(fmt).field(avro_schema)
        self.text = _nullable(text) if nullable else text
        if fmt.schemas_enable:
            head = '{"schema":' + json.dumps(schema, separators=(",", ":")) + ',"payload":'
            self.head, self.tail = head.encode(), b"}"
        else:
            self.head = self.tail = b""

    def __call__(self, v: Any) -> bytes:
        return b"".join((self.head, self.text(v).encode(), self.tail))


class _TableJson:
    """Key and value writers of one table version, for its ``TableSchema.form``."""

    __slots__ = ("form", "key", "key_of", "value")

    def __init__(
        self, table: TableSchema, source_schema: dict[str, Any], fmt: RecordFormat
    ) -> None:
        self.form = table.form
        if table.form == "envelope":
            key, value = key_schema(table), envelope_schema(table, source_schema)
        else:
            key, value = shaped_schemas(table, source_schema)
        self.value = _Part(value, fmt)
        self.key = None if key is None else _Part(key, fmt)
        names, idx = field_names(table), table.key
        self.key_of: Callable[[tuple[Any, ...]], Any]
        if table.form == "payload":  # outbox: the aggregate id column itself
            i = idx[0]
            self.key_of = lambda row: row[i]
        else:
            self.key_of = lambda row: {names[i]: row[i] for i in idx}


class JsonEncoder:
    """``BatchEncoder`` writing JsonConverter's JSON (see the module docstring).

    Tombstones follow deletes of envelope tables when the sink keeps them, as in ``Encoder``;
    tables reshaped by ``unwrap`` or ``outbox`` carry their own (the transform emits them).
    ``fallbacks`` stays 0: there is one path.
    """

    fallbacks = 0

    def __init__(
        self,
        source_schema: dict[str, Any],
        tx_topic: str | None,
        tombstones: bool,
        fmt: RecordFormat | None = None,
        **options: Any,
    ) -> None:
        """``fmt``: the sink's ``RecordFormat`` (kind json); or its fields as ``options``
        (``schemas_enable=False``...)."""
        self._source_schema = source_schema
        self._tx_topic = tx_topic
        self._tombstones = tombstones
        self._fmt = fmt or RecordFormat("json", **options)
        self._check_topic = TopicOwners()
        self._tables: dict[int, tuple[TableSchema, _TableJson]] = {}
        self._tx: tuple[_Part, _Part] | None = None

    def _table(self, table: TableSchema) -> _TableJson:
        hit = self._tables.get(id(table))
        if hit is not None and hit[0] is table:
            return hit[1]
        self._check_topic(table)
        made = _TableJson(table, self._source_schema, self._fmt)
        self._tables[id(table)] = (table, made)
        return made

    def _tx_parts(self) -> tuple[_Part, _Part]:
        if self._tx is None:
            assert self._tx_topic is not None
            k, v = transaction_schemas(self._tx_topic)
            self._tx = (
                _Part(k, self._fmt),
                _Part(v, self._fmt),
            )
        return self._tx

    def encode(self, batch: ChangeBatch) -> EncodedBatch:
        out: list[EncodedRecord] = []
        now_us = time.time_ns() // 1000
        for ev in batch.events:
            if isinstance(ev, RowChange):
                t = self._table(ev.table)
                try:
                    key, value = self._row(t, ev, now_us)
                except (TypeError, ValueError, AttributeError, KeyError) as e:
                    raise EncodeError(
                        f"topic {ev.table.topic}: event {ev.event_id} (op {ev.op}) cannot be "
                        f"written as JSON by its table's schema ({type(e).__name__}: {e}); a "
                        "value the source produced that its own schema refuses is a bug: report "
                        "it; to go on meanwhile, drop the column with a transform "
                        "(docs/transforms.md)"
                    ) from None
                out.append(
                    EncodedRecord(ev.table.topic, key, value, ev.ts_ms, ev.event_id, ev.headers)
                )
                if t.form == "envelope" and ev.op == "d" and self._tombstones and key is not None:
                    out.append(
                        EncodedRecord(ev.table.topic, key, None, ev.ts_ms, ev.event_id + "~")
                    )
            elif self._tx_topic is not None:
                kp, vp = self._tx_parts()
                out.append(
                    EncodedRecord(
                        self._tx_topic,
                        kp({"id": ev.tx_id}),
                        vp(transaction_value(ev)),
                        ev.ts_ms,
                        ev.event_id,
                    )
                )
        return EncodedBatch(out, batch.position)

    @staticmethod
    def _row(t: _TableJson, ev: RowChange, now_us: int) -> tuple[bytes | None, bytes | None]:
        key = None
        row = key_row(ev)
        if t.key is not None and row is not None:
            key = t.key(t.key_of(row))
        if t.form == "payload":
            return key, None if ev.after is None else t.value(ev.after[1])
        if t.form == "message":
            return key, t.value(message_value(ev, now_us))
        if t.form == "row":
            return key, None if ev.after is None else t.value(ev.after)
        tx = None
        if ev.tx is not None:
            tx = {"id": ev.tx[0], "total_order": ev.tx[1], "data_collection_order": ev.tx[2]}
        value = {
            "before": ev.before,
            "after": ev.after,
            "source": ev.source,
            "transaction": tx,
            "op": ev.op,
            "ts_ms": now_us // 1000,
            "ts_us": now_us,
            "ts_ns": now_us * 1000,
        }
        return key, t.value(value)


__all__ = [
    "DECIMAL",
    "DecimalFormat",
    "Format",
    "JsonEncoder",
    "ReplaceNullWithDefault",
    "SchemasEnable",
    "check_format",
    "record_format",
]
