"""Table versions rebuilt from the Avro schemas a log stores: the inverse of ``cdc.avro``'s
``envelope_schema`` / ``key_schema`` / ``column_field``.

A ``TableSchema`` made here encodes (``cdc.avro.Encoder``) to the very schemas it was read from,
so a relay writes the Avro its log holds. What Avro does not carry is not rebuilt: a column's
``source_type`` is its Avro semantic type (``connect.name``, else the Avro type), and its
``fallback`` is None (it only matters to a source filling a value the server did not send).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cdc.errors import SourceError
from cdc.model import NO_DEFAULT, Column, TableSchema

TX_VALUE = "io.debezium.connector.common.TransactionMetadataValue"


def record_name(schema: Any) -> str:
    """The full name of a record schema ("" for anything else)."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return ""
    ns = schema.get("namespace")
    return f"{ns}.{schema['name']}" if ns else str(schema.get("name", ""))


def _resolve(t: Any, named: dict[str, Any]) -> Any:
    """``t`` with every reference to a named record replaced by its definition, recording the
    definitions it meets in ``named``: the inverse of ``cdc.avro._once``, so that each column's
    type stands alone again (the encoder refers back to the first definition itself)."""
    if isinstance(t, str):
        return named.get(t, t)
    if isinstance(t, list):
        return [_resolve(x, named) for x in t]
    if isinstance(t, dict):
        if t.get("type") == "record":
            named.setdefault(record_name(t), t)
        elif t.get("type") == "array":
            return {**t, "items": _resolve(t["items"], named)}
    return t


def _without_default(t: Any) -> Any:
    """The type as ``Column.avro`` holds it: without the ``connect.default`` that
    ``cdc.avro._with_default`` put in, and back to a plain name where that made a dict of one."""
    if not isinstance(t, dict) or "connect.default" not in t:
        return t
    out = {k: v for k, v in t.items() if k != "connect.default"}
    return out["type"] if list(out) == ["type"] else out


def _row_default(avro_type: Any, value: Any) -> Any:
    """A field's JSON default back to the row value it was made from (``cdc.avro.default_json``
    reversed): bytes are one character per byte, a decimal its unscaled bytes."""
    if value is None:
        return NO_DEFAULT
    base = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    if base == "bytes" and isinstance(value, str):
        raw = value.encode("latin-1")
        if isinstance(avro_type, dict) and avro_type.get("logicalType") == "decimal":
            unscaled = int.from_bytes(raw, "big", signed=True)
            return Decimal(unscaled).scaleb(-int(avro_type.get("scale", 0)))
        return raw
    return value


def _semantic_name(avro_type: Any) -> str:
    if isinstance(avro_type, dict):
        return str(avro_type.get("connect.name") or avro_type.get("type"))
    return str(avro_type)


def column_of(field: dict[str, Any], named: dict[str, Any]) -> Column:
    t = _resolve(field["type"], named)
    optional = isinstance(t, list) and "null" in t
    if optional:
        (t,) = [x for x in t if x != "null"]
    default = NO_DEFAULT
    if "default" in field:
        stripped = _without_default(t)
        if stripped is not t:  # the column's own default, not an optional field's null
            default = _row_default(stripped, field["default"])
        t = stripped
    return Column(field["name"], t, optional, _semantic_name(t), None, default)


def table_of(
    topic: str,
    envelope: dict[str, Any],
    key: dict[str, Any] | None,
    source: dict[str, Any],
) -> TableSchema:
    """The table version of an envelope schema (and its key schema; None for a table without
    a primary key), named by a ``source`` block of one of its events (Postgres: ``schema``;
    MySQL: ``db``; both: ``table``)."""
    fields = {f["name"]: f["type"] for f in envelope.get("fields", [])}
    before = fields.get("before")
    value = before[1] if isinstance(before, list) and len(before) == 2 else None
    if not isinstance(value, dict) or value.get("type") != "record":
        raise SourceError(
            f"topic {topic}: schema {record_name(envelope)!r} is not a change event envelope "
            "(no before/after record); is this log written by cdc?",
            retryable=False,
        )
    named: dict[str, Any] = {}
    columns = tuple(column_of(f, named) for f in value["fields"])
    index = {c.name: i for i, c in enumerate(columns)}
    key_idx: tuple[int, ...] = ()
    if key is not None:
        try:
            key_idx = tuple(index[f["name"]] for f in key["fields"])
        except KeyError as e:
            raise SourceError(
                f"topic {topic}: key field {e} is not a column of {record_name(value)!r}; "
                "is this log written by cdc?",
                retryable=False,
            ) from None
    namespace = source.get("schema") or source.get("db") or ""
    return TableSchema(topic, str(namespace), str(source.get("table", "")), columns, key_idx)
