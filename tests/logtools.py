"""Reading the built-in log back in tests, as a user's consumer would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdc._jsonout import AvroDecoder
from sinks.log import LogReader


def read_log(path: Path, topic: str | None = None) -> list[dict[str, Any]]:
    """Every record of the log as {"offset", "topic", "key", "value", "timestamp"}, decoded."""
    if not path.exists():
        return []
    reader = LogReader(path)
    dec = AvroDecoder(reader.schemas.get)
    return [
        {
            "offset": r.offset,
            "topic": r.topic,
            "key": dec.decode(r.key),
            "value": dec.decode(r.value),
            "timestamp": r.timestamp_ms,
            "event_id": r.event_id,
        }
        for r in reader.records(0, topic)
    ]


def row_events(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r for r in records if not r["topic"].endswith(".transaction") and r["value"] is not None
    ]


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
