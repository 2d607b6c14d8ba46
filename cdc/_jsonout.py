"""Decoding log records to JSON for ``cdc log read``."""

from __future__ import annotations

import base64
import io
import json
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


def dumps(obj: Any) -> str:
    """JSON with decimals as strings and bytes as base64 (as Kafka Connect's JSON does)."""
    return json.dumps(obj, default=_default, ensure_ascii=False, separators=(",", ":"))
