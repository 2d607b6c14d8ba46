"""Decoding log records to JSON for ``cdc log read``."""

from __future__ import annotations

import base64
import io
import json
import math
from decimal import Decimal
from typing import Any

import fastavro

from cdc.avro import unframe


class AvroDecoder:
    """Decodes Confluent-framed Avro payloads using a schema lookup ``get(id) -> schema``."""

    def __init__(self, get_schema: Any) -> None:
        self._get = get_schema
        self._parsed: dict[int, Any] = {}

    def decode(self, data: bytes | None) -> Any:
        if data is None:
            return None
        sid, body = unframe(data)
        parsed = self._parsed.get(sid)
        if parsed is None:
            parsed = self._parsed[sid] = fastavro.parse_schema(self._get(sid))
        return fastavro.schemaless_reader(io.BytesIO(body), parsed, None)


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(o)).decode()
    raise TypeError(f"cannot serialise {type(o).__name__}")


def _finite(o: Any) -> Any:
    """``o`` with NaN and infinities as the strings JsonConverter (Jackson) writes for them."""
    if isinstance(o, float) and not math.isfinite(o):
        return "NaN" if math.isnan(o) else ("Infinity" if o > 0 else "-Infinity")
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    return o


def dumps(obj: Any) -> str:
    """JSON with decimals as strings, bytes as base64 and NaN/Infinity as strings (as Kafka
    Connect's JsonConverter writes bytes and non-finite floats; docs/log.md says how this differs
    from ``format: json``)."""
    try:
        return json.dumps(
            obj, default=_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    except ValueError:  # a NaN or an infinity: not JSON; rare, so only then walk the value
        return json.dumps(_finite(obj), default=_default, ensure_ascii=False, separators=(",", ":"))
