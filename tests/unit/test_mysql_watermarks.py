"""The MySQL side of snapshots while streaming, without a server: keys in positions, the chunk
query, signal rows as the binlog gives them, and signals applied at their commit."""

from __future__ import annotations

import datetime
import decimal
from types import SimpleNamespace
from typing import Any

import pytest

from cdc.incremental import IncrementalSnapshots, Request, Stop, Watermark
from cdc.model import Column, NullReporter, RowChange, TableSchema
from cdc.sources.mysql._incremental import ChunkReader, Windows, key_from_json, key_to_json
from cdc.sources.mysql._signals import SignalTable


def _version(*names: str, key: tuple[int, ...] = (0,)) -> Any:
    cols = tuple(Column(n, "int", False, "INT") for n in names)
    return SimpleNamespace(schema=TableSchema("p.shop.t", "shop", "t", cols, key))


@pytest.mark.parametrize(
    "key",
    [
        [1, "a"],
        [b"\x00\xff"],
        [decimal.Decimal("12.340")],
        [datetime.datetime(2024, 1, 2, 3, 4, 5, 6), datetime.date(2024, 1, 2)],
        [datetime.timedelta(hours=-1, microseconds=5)],
        [1.5],
    ],
)
def test_keys_survive_json_exactly(key: list[Any]) -> None:
    import json

    assert key_from_json(json.loads(json.dumps(key_to_json(key)))) == key


def test_the_chunk_query_follows_a_composite_key_and_escapes_the_users_percent() -> None:
    sql, params = ChunkReader.sql(_version("a", "b", "v", key=(0, 1)), [1, "x"], "v % 2 = 0", 50)
    assert sql == (
        "SELECT `a`, `b`, `v` FROM `shop`.`t` WHERE ((`a` > %s) OR (`a` = %s AND `b` > %s)) "
        "AND (v %% 2 = 0) ORDER BY `a`, `b` LIMIT 50"
    )
    assert params == [1, 1, "x"]
    first, none = ChunkReader.sql(_version("id"), None, None, 7)
    assert first == "SELECT `id` FROM `shop`.`t` ORDER BY `id` LIMIT 7" and none == []


def test_signal_rows_as_the_binlog_gives_them() -> None:
    def row(id: str, kind: str, data: Any) -> dict[str, Any]:
        return {"id": id, "type": kind, "data": data}

    assert SignalTable.signal(row("w1-open", "snapshot-window-open", b"{}")) == Watermark(
        "w1", True
    )
    assert SignalTable.signal(row("w1-close", "snapshot-window-close", "{}")) == Watermark(
        "w1", False
    )
    req = SignalTable.signal(row("r1", "execute-snapshot", '{"data-collections": ["shop.t"]}'))
    assert req == Request("r1", ("shop.t",))
    assert SignalTable.signal(row("l", "log", "{}")) is None  # Debezium's other signals
    assert SignalTable.signal({"x": 1}) is None  # not Debezium's columns


class _Fakes:
    """A source-side stand-in: a signal table that records watermarks, a reader of fixed rows."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.marks: list[tuple[str, bool]] = []
        self.rows = rows
        self.schema = _version("id").schema

    def watermark(self, window: str, low: bool) -> None:
        self.marks.append((window, low))

    def version(self, db: str, table: str) -> Any:
        return SimpleNamespace(schema=self.schema)

    def read(self, version: Any, after: Any, condition: Any, size: int) -> Any:
        rows = [r for r in self.rows if after is None or r[0] > after[0]][:size]
        return SimpleNamespace(rows=rows, keys=[[r[0]] for r in rows])

    def estimate(self, db: str, table: str) -> int:
        return len(self.rows)


def _windows(rows: list[tuple[Any, ...]], reporter: Any = None) -> tuple[Windows, _Fakes]:
    fakes = _Fakes(rows)
    snapshots = IncrementalSnapshots(None, ["shop.t"], chunk_size=2)
    w = Windows(snapshots, fakes, fakes, reporter or NullReporter())  # type: ignore[arg-type]
    return w, fakes


def _commit(w: Windows) -> list[RowChange]:
    out: list[RowChange] = []
    w.commit(out.extend, lambda schema: {"snapshot": "x"})
    return out


def _signal_row(id: str, kind: str, data: str = "{}") -> dict[str, Any]:
    return {"id": id, "type": kind, "data": data}


def test_signals_take_effect_at_their_commit_and_rows_come_after_it() -> None:
    w, fakes = _windows([(1,), (2,), (3,)])
    w.begin()
    w.row(_signal_row("r1", "execute-snapshot", '{"data-collections": ["shop.t"]}'))
    assert not w.ready(), "queued before its transaction committed"
    assert _commit(w) == []
    assert w.ready()
    w.open()
    (window, low), (same, high) = fakes.marks
    assert window == same and low and not high
    assert not w.ready() or w.snapshots.next_chunk() is None  # one window at a time
    for kind in ("open", "close"):
        w.begin()
        w.row(_signal_row(f"{window}-{kind}", f"snapshot-window-{kind}"))
        rows = _commit(w)
    assert [r.after for r in rows] == [(1,), (2,)]
    assert rows[0].source["snapshot"] == "incremental"
    assert w.snapshots.state["after"] == [2]


def test_progress_is_reported_per_chunk_of_the_estimate_and_the_total_at_the_end() -> None:
    from tests.conftest import RecordingReporter

    reporter = RecordingReporter()
    w, fakes = _windows([(1,), (2,), (3,)], reporter)
    w.snapshots.request(Request("r1", ("shop.t",)))
    while w.snapshots.active:
        w.open()
        window = fakes.marks[-1][0]
        for kind in ("open", "close"):
            w.begin()
            w.row(_signal_row(f"{window}-{kind}", f"snapshot-window-{kind}"))
            _commit(w)
    assert reporter.progress == [("shop.t", 0, 3), ("shop.t", 2, 3), ("shop.t", 3, 3)]


def test_a_stop_in_the_same_binlog_before_the_high_watermark_drops_the_chunk() -> None:
    w, fakes = _windows([(1,), (2,), (3,)])
    w.snapshots.request(Request("r1", ("shop.t",)))
    w.open()
    window = fakes.marks[0][0]
    w.begin()
    w.row(_signal_row(f"{window}-open", "snapshot-window-open"))
    w.row(_signal_row("s", "stop-snapshot", "{}"))
    w.row(_signal_row(f"{window}-close", "snapshot-window-close"))
    assert _commit(w) == []
    assert not w.snapshots.active
    assert w.snapshots.stop(Stop(None)) == []


def test_the_signal_table_is_never_captured_even_when_a_pattern_matches_it() -> None:
    from cdc.sources.mysql._schema import SchemaCache
    from cdc.sources.mysql._tables import Tables

    tables = Tables(None, ["shop.*"], SchemaCache("p"), signal_table="shop.sig")  # type: ignore[arg-type]
    assert tables.captured("shop", "orders")
    assert not tables.captured("shop", "sig")
