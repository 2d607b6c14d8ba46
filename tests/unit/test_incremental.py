"""cdc.incremental: each rule of the watermark window (DBLog) both sources share, on its own."""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import count
from typing import Any

import pytest

from cdc.incremental import (
    Chunk,
    IncrementalSnapshots,
    Request,
    SignalError,
    Stop,
    Watermark,
    parse_signal,
)
from cdc.model import Column, RowChange, TableSchema, snapshot_event_id

A = TableSchema(
    "p.s.a",
    "s",
    "a",
    (Column("id", "int", False, "int"), Column("v", "string", True, "text")),
    (0,),
)
B = TableSchema("p.s.b", "s", "b", (Column("id", "int", False, "int"),), (0,))
NOKEY = TableSchema("p.s.n", "s", "n", (Column("x", "int", False, "int"),), ())
TABLES = ["s.a", "s.b", "s.n"]


def make(state: dict[str, Any] | None = None, size: int = 3) -> IncrementalSnapshots:
    ids = count(1)
    return IncrementalSnapshots(
        state if state is not None else {"snapshotted": TABLES},
        TABLES,
        chunk_size=size,
        window_ids=lambda: f"w{next(ids)}",
    )


def src(schema: TableSchema) -> dict[str, Any]:
    return {"table": schema.table, "snapshot": "false"}


def window(
    inc: IncrementalSnapshots,
    schema: TableSchema,
    rows: list[tuple[Any, ...]],
    during: Callable[[IncrementalSnapshots], None] = lambda inc: None,
) -> tuple[Chunk, list[RowChange]]:
    """One window as a source drives it: chunk, low watermark, read, changes, high watermark."""
    chunk = inc.next_chunk()
    assert chunk is not None
    assert inc.low_watermark(chunk.window)
    inc.chunk_read(chunk.window, schema, rows, rows[-1][0] if rows else None)
    during(inc)
    out = inc.high_watermark(chunk.window, src, 7)
    assert out is not None
    return chunk, out


def test_chunks_follow_the_last_key_emitted_until_a_short_chunk_ends_the_table() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a",)))
    c1, out1 = window(inc, A, [(1, "x"), (2, "y"), (3, "z")])
    assert (c1.table, c1.after, c1.size, c1.request) == ("s.a", None, 3, "r1")
    assert [r.after for r in out1] == [(1, "x"), (2, "y"), (3, "z")]
    c2, out2 = window(inc, A, [(4, "w")])
    assert c2.after == 3 and [r.after for r in out2] == [(4, "w")]
    assert inc.next_chunk() is None and not inc.active
    assert "s.a" in inc.state["snapshotted"]


def test_rows_are_reads_marked_incremental_with_snapshot_event_ids() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a",)))
    _, out = window(inc, A, [(1, "x")])
    r = out[0]
    assert (r.op, r.before, r.ts_ms, r.tx, r.table) == ("r", None, 7, None, A)
    assert r.source == {"table": "a", "snapshot": "incremental"}
    assert r.event_id == snapshot_event_id("r1", "s.a", (1,))


def test_a_key_changed_between_the_watermarks_is_dropped_from_the_chunk() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a",)))

    def changes(i: IncrementalSnapshots) -> None:
        i.observe("s.a", (2,))
        i.observe("s.b", (1,))  # another table's key 1: not this chunk's
        i.observe("s.a", (9,))  # a key outside the chunk: nothing to drop

    _, out = window(inc, A, [(1, "x"), (2, "y"), (3, "z")], changes)
    assert [r.after for r in out] == [(1, "x"), (3, "z")]
    # progress passes the dropped row all the same: the stream carried its newer state
    assert inc.next_chunk() == Chunk("w2", "r1", "s.a", 3, None, 3)


def test_a_change_before_the_low_watermark_does_not_drop_the_key() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a",)))
    chunk = inc.next_chunk()
    assert chunk is not None
    inc.observe("s.a", (1,))  # committed before the low watermark: the chunk holds it already
    inc.low_watermark(chunk.window)
    inc.chunk_read(chunk.window, A, [(1, "x")], 1)
    out = inc.high_watermark(chunk.window, src, 7)
    assert out is not None and [r.after for r in out] == [(1, "x")]


def test_a_truncate_in_the_window_drops_the_whole_chunk() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a",)))
    _, out = window(inc, A, [(1, "x"), (2, "y"), (3, "z")], lambda i: i.observe("s.a", None))
    assert out == []


def test_watermarks_of_another_window_are_ignored() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a",)))
    chunk = inc.next_chunk()
    assert chunk is not None
    assert not inc.low_watermark("old")  # replayed from before a restart
    assert inc.high_watermark("old", src, 7) is None
    assert inc.next_chunk() is None  # one window at a time
    assert inc.low_watermark(chunk.window)


def test_a_high_watermark_without_its_low_one_reads_the_chunk_again() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a",)))
    chunk = inc.next_chunk()
    assert chunk is not None
    inc.chunk_read(chunk.window, A, [(1, "x")], 1)
    assert inc.high_watermark(chunk.window, src, 7) is None
    again = inc.next_chunk()
    assert again is not None and again.after is None and again.window != chunk.window


def test_the_state_carries_progress_only_with_rows_emitted_and_never_the_open_window() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a",), {"s.a": "id > 0"}))
    window(inc, A, [(1, "x"), (2, "y"), (3, "z")])
    durable = inc.state
    chunk = inc.next_chunk()
    assert chunk is not None
    inc.low_watermark(chunk.window)
    inc.chunk_read(chunk.window, A, [(4, "w"), (5, "v"), (6, "u")], 6)
    assert inc.state == durable  # the open window is not in it
    json.dumps(durable)  # JSON, as positions are
    # a crash now: a new process resumes from the durable state and reads the chunk again
    resumed = make(durable)
    assert not resumed.low_watermark(chunk.window)  # the old window's watermarks replayed
    again = resumed.next_chunk()
    assert again is not None and (again.after, again.condition) == (3, "id > 0")


def test_the_state_is_a_copy() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a",)))
    st = inc.state
    window(inc, A, [(1, "x"), (2, "y"), (3, "z")])
    assert "after" not in st or st["after"] is None


def test_tables_of_a_request_are_read_in_turn_and_requests_queue() -> None:
    inc = make(size=2)
    inc.request(Request("r1", ("s.a", "s.b")))
    inc.request(Request("r2", ("s.a",), {"s.a": "v = 'x'"}))
    assert not inc.request(Request("r1", ("s.b",)))  # same id again: a replay, ignored
    seen = []
    while (c := inc.next_chunk()) is not None:
        seen.append((c.request, c.table, c.condition))
        inc.low_watermark(c.window)
        schema = A if c.table == "s.a" else B
        rows = [(1, "x")] if schema is A else [(1,)]
        inc.chunk_read(c.window, schema, rows, 1)
        inc.high_watermark(c.window, src, 7)
    assert seen == [("r1", "s.a", None), ("r1", "s.b", None), ("r2", "s.a", "v = 'x'")]


def test_requests_name_captured_tables_only() -> None:
    inc = make()
    with pytest.raises(SignalError, match=r"s\.zzz not captured by this pipeline"):
        inc.request(Request("r1", ("s.a", "s.zzz")))
    with pytest.raises(SignalError, match=r"a condition for s\.b"):
        inc.request(Request("r2", ("s.a",), {"s.b": "x"}))
    assert not inc.active


def test_stop_removes_tables_and_abandons_the_open_window() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a", "s.b")))
    inc.request(Request("r2", ("s.a",)))
    window(inc, A, [(1, "x"), (2, "y"), (3, "z")])
    chunk = inc.next_chunk()
    assert chunk is not None
    inc.low_watermark(chunk.window)
    assert inc.stop(Stop("r1", ("s.a",))) == ["s.a"]
    assert inc.high_watermark(chunk.window, src, 7) is None  # its window went with it
    nxt = inc.next_chunk()
    assert nxt is not None and (nxt.request, nxt.table, nxt.after) == ("r1", "s.b", None)
    inc.abandon()
    assert inc.stop(Stop(None)) == ["s.b", "s.a"]  # every table of every request
    assert not inc.active and inc.state == {"snapshotted": TABLES}


def test_stopping_another_request_keeps_the_window() -> None:
    inc = make()
    inc.request(Request("r1", ("s.a",)))
    inc.request(Request("r2", ("s.b",)))
    chunk = inc.next_chunk()
    assert chunk is not None
    inc.low_watermark(chunk.window)
    inc.chunk_read(chunk.window, A, [(1, "x")], 1)
    inc.stop(Stop("r2"))
    out = inc.high_watermark(chunk.window, src, 7)
    assert out is not None and len(out) == 1


def test_a_table_without_a_key_is_refused_by_name() -> None:
    inc = make()
    inc.request(Request("r1", ("s.n", "s.b")))
    chunk = inc.next_chunk()
    assert chunk is not None
    with pytest.raises(SignalError, match=r"table s\.n has no primary key"):
        inc.chunk_read(chunk.window, NOKEY, [(1,)], None)
    assert inc.reject_current("no primary key") == "s.n"
    nxt = inc.next_chunk()
    assert nxt is not None and nxt.table == "s.b"


def test_a_table_captured_but_never_snapshotted_is_backfilled() -> None:
    inc = make({"snapshotted": ["s.a"]})
    assert inc.captured(["s.a", "s.b"]) == ["s.b"]
    c = inc.next_chunk()
    assert c is not None and c.table == "s.b" and c.request.startswith("backfill-")
    assert inc.captured(["s.a", "s.b"]) == []  # queued already: not twice


def test_a_position_without_state_counts_every_captured_table_as_snapshotted() -> None:
    inc = IncrementalSnapshots(None, ["s.a", "s.b"])
    assert inc.captured(["s.a", "s.b"]) == []
    assert inc.state == {"snapshotted": ["s.a", "s.b"]}


def test_a_table_no_longer_captured_leaves_the_queue_and_is_backfilled_when_back() -> None:
    inc = make({"snapshotted": ["s.a", "s.b"]})
    inc.request(Request("r1", ("s.a", "s.b")))
    inc.captured(["s.b"])  # s.a removed from the config
    assert inc.state["snapshotted"] == ["s.b"]
    c = inc.next_chunk()
    assert c is not None and c.table == "s.b"
    inc.abandon()
    assert inc.captured(["s.a", "s.b"]) == ["s.a"]


def test_debezium_signals_parse() -> None:
    data = {
        "data-collections": ["s.a", "s.b"],
        "type": "incremental",
        "additional-conditions": [{"data-collection": "s.a", "filter": "id > 5"}],
    }
    assert parse_signal("x1", "execute-snapshot", json.dumps(data)) == Request(
        "x1", ("s.a", "s.b"), {"s.a": "id > 5"}
    )
    old = {"data-collections": ["s.a"], "additional-condition": "id < 3"}
    assert parse_signal("x2", "execute-snapshot", json.dumps(old)) == Request(
        "x2", ("s.a",), {"s.a": "id < 3"}
    )
    assert parse_signal("x3", "stop-snapshot", '{"data-collections": ["s.a"]}') == Stop(
        None, ("s.a",)
    )
    assert parse_signal("x4", "stop-snapshot", None) == Stop(None, ())
    assert parse_signal("w9", "snapshot-window-open", None) == Watermark("w9", True)
    assert parse_signal("w9", "snapshot-window-close", "") == Watermark("w9", False)
    assert parse_signal("x5", "log", '{"message": "hi"}') is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", "data is not JSON"),
        ("[1]", "not a JSON object"),
        ('{"data-collections": []}', "data-collections is empty"),
        ('{"data-collections": "s.a"}', "must be a list of table names"),
        ('{"data-collections": ["s.a"], "type": "blocking"}', "'blocking' is not supported"),
        ('{"data-collections": ["s.a"], "additional-conditions": [{"x": 1}]}', "bad additional"),
    ],
)
def test_bad_signals_are_refused_with_what_is_wrong(data: str, message: str) -> None:
    with pytest.raises(SignalError, match=message):
        parse_signal("x", "execute-snapshot", data)


def test_the_position_metric_label_leaves_the_incremental_state_out() -> None:
    # the state holds key values (row data) and a set of tables: not for a metrics label
    from cdc.model import ChangeBatch
    from cdc.pipeline import position_label

    inc = make()
    inc.request(Request("r1", ("s.a",)))
    window(inc, A, [(1, "x"), (2, "y"), (4711, "z")])
    batch = ChangeBatch([], {"lsn": 5, "incremental": inc.state})
    assert inc.state["after"] == 4711
    assert position_label(batch) == '{"lsn":5}'
