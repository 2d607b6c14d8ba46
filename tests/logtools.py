"""Reading the built-in log back in tests, as a user's consumer would."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cdc._jsonout import AvroDecoder
from cdc.sinks.log import LogReader


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


def comparable(value: Any) -> Any:
    """A decoded value without what depends on the pipeline rather than the change.

    Envelopes lose ts_ms/ts_us/ts_ns (when the pipeline processed the event), and a Postgres
    ``source.sequence`` keeps only its last element (its first is the last commit the pipeline saw
    before, which depends on when its slot was created). Other values are returned as they are.
    """
    if not (isinstance(value, dict) and "op" in value):
        return value
    out = {k: v for k, v in value.items() if k not in ("ts_ms", "ts_us", "ts_ns")}
    sequence = value["source"].get("sequence")
    if sequence is not None:
        out["source"] = {**value["source"], "sequence": json.loads(sequence)[-1]}
    return out


def by_topic(events: Iterable[tuple[str, Any, Any]]) -> dict[str, list[tuple[Any, Any]]]:
    """(topic, key, value) triples grouped per topic, in their order, values ``comparable``."""
    out: dict[str, list[tuple[Any, Any]]] = {}
    for topic, key, value in events:
        out.setdefault(topic, []).append((key, comparable(value)))
    return out


def log_by_topic(path: Path) -> dict[str, list[tuple[Any, Any]]]:
    """The built-in log's records as ``by_topic`` groups them."""
    return by_topic((r["topic"], r["key"], r["value"]) for r in read_log(path))


def assert_same_per_topic(
    got: dict[str, list[tuple[Any, Any]]], expected: dict[str, list[tuple[Any, Any]]], what: str
) -> None:
    """Same topics, and per topic the same (key, value) pairs in the same order."""
    assert sorted(got) == sorted(expected)
    for topic in expected:
        pairs = zip(got[topic], expected[topic], strict=False)
        diff = [(i, a, b) for i, (a, b) in enumerate(pairs) if a != b]
        assert not diff, f"{topic}: first difference (index, {what}, log): {diff[0]}"
        assert len(got[topic]) == len(expected[topic]), topic


def postgres_items_config(
    path: Path, name: str, dsn: str, extra: str = "", tables: str = "[public.items]"
) -> Path:
    """A config at ``path`` of one pipeline ``name`` capturing ``public.items`` (or ``tables``,
    a YAML list) of ``dsn`` into a log beside it (``extra``: more source fields, as YAML on one
    line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""
pipelines:
  - name: {name}
    batch: {{max_wait_ms: 20}}
    source:
      type: postgres
      dsn: "{dsn}"
      tables: {tables}
      {extra}
    sink:
      type: log
      path: {path.parent / "log"}
"""
    )
    return path
