"""cdc.assembler: each rule of the transaction assembler both sources share, on its own."""

from __future__ import annotations

from cdc.assembler import TransactionAssembler
from cdc.model import Column, RowChange, TableSchema, TxBoundary

T1 = TableSchema("p.s.a", "s", "a", (Column("id", "int", False, "int"),), (0,))
T2 = TableSchema("p.s.b", "s", "b", (Column("id", "int", False, "int"),), (0,))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**kw: object) -> tuple[TransactionAssembler, Clock]:
    clock = Clock()
    args: dict[str, object] = {"tx_metadata": True, "max_events": 100, "max_wait_s": 0.1}
    args.update(kw)
    return TransactionAssembler(clock=clock, **args), clock  # type: ignore[arg-type]


def txn(a: TransactionAssembler, tx: str, rows: list[tuple[TableSchema, int]]) -> None:
    a.begin(tx, begin_event_id=f"{tx}:b")
    for table, i in rows:
        a.change(table, "c", None, (i,), {}, 7, f"{tx}:{i}")
    a.commit(f"{tx}:e")


def test_begin_and_end_surround_the_rows_with_counts_per_table() -> None:
    a, _ = make()
    txn(a, "t1", [(T1, 1), (T2, 2), (T1, 3)])
    evs = a.take({"p": 1}).events
    assert isinstance(evs[0], TxBoundary) and evs[0].status == "BEGIN"
    assert evs[0].tx_id == "t1" and evs[0].event_id == "t1:b"
    end = evs[-1]
    assert isinstance(end, TxBoundary) and end.status == "END" and end.event_id == "t1:e"
    assert end.event_count == 3 and end.per_table == {"s.a": 2, "s.b": 1}


def test_rows_carry_total_and_per_table_order() -> None:
    a, _ = make()
    txn(a, "t1", [(T1, 1), (T2, 2), (T1, 3)])
    rows = [e for e in a.take({}).events if isinstance(e, RowChange)]
    assert [r.tx for r in rows] == [("t1", 1, 1), ("t1", 2, 1), ("t1", 3, 2)]


def test_a_transaction_without_captured_changes_produces_nothing() -> None:
    a, _ = make()
    a.begin("t1", begin_event_id="b")
    a.commit("e")
    assert a.events == [] and not a.in_txn


def test_without_metadata_no_boundaries_and_no_tx_block() -> None:
    a, _ = make(tx_metadata=False)
    txn(a, "t1", [(T1, 1)])
    evs = a.take({}).events
    assert len(evs) == 1 and isinstance(evs[0], RowChange) and evs[0].tx is None


def test_resuming_inside_a_transaction_skips_what_was_written() -> None:
    a, _ = make(max_events=3)
    a.begin("t1", begin_event_id="b")
    i = 0
    while not a.due(more_buffered=True):  # as a source's loop: take the batch once due
        a.change(T1, "c", None, (i,), {}, 7, f"r{i}")
        i += 1
    first = a.take({"skip": a.seq})  # BEGIN + rows 0 and 1
    assert first.position == {"skip": 3} and len(first.events) == 3
    # a restart re-reads the transaction from its start, told to skip 3
    b, _ = make(max_events=3)
    b.begin("t1", begin_event_id="b", skip=3)
    for i in range(5):
        b.change(T1, "c", None, (i,), {}, 7, f"r{i}")
    b.commit("e")
    rest = b.take({})
    assert [e.event_id for e in first.events + rest.events] == [
        "b",
        "r0",
        "r1",
        "r2",
        "r3",
        "r4",
        "e",
    ]
    end = rest.events[-1]
    assert isinstance(end, TxBoundary) and end.event_count == 5  # counts the skipped rows too


def test_full_batch_is_due_even_inside_a_transaction() -> None:
    a, _ = make(max_events=3)
    a.begin("t1", begin_event_id="b")
    a.change(T1, "c", None, (1,), {}, 7, "r1")
    assert not a.due(more_buffered=False)  # inside a transaction: the rest is on its way
    a.change(T1, "c", None, (2,), {}, 7, "r2")
    assert a.due(more_buffered=True)


def test_stopping_makes_anything_gathered_due() -> None:
    a, _ = make()
    a.begin("t1", begin_event_id="b")
    a.change(T1, "c", None, (1,), {}, 7, "r1")
    assert a.due(more_buffered=True, stopping=True)


def test_nothing_more_buffered_makes_a_batch_due_at_once() -> None:
    a, _ = make(max_wait_s=10)
    txn(a, "t1", [(T1, 1)])
    assert not a.due(more_buffered=True)  # more is coming: gather it
    assert a.due(more_buffered=False)  # the stream paused: write now, not after the timer


def test_the_timer_makes_a_partial_batch_due() -> None:
    a, clock = make(max_wait_s=0.25)
    txn(a, "t1", [(T1, 1)])
    assert a.wait_s() == 0.25
    clock.now += 0.125
    assert not a.due(more_buffered=True) and a.wait_s() == 0.125
    clock.now += 0.125
    assert a.due(more_buffered=True) and a.wait_s() == 0.0


def test_nothing_gathered_is_never_due_and_take_starts_afresh() -> None:
    a, _ = make()
    assert not a.due(more_buffered=False, stopping=True) and a.wait_s() is None
    txn(a, "t1", [(T1, 1)])
    a.take({})
    assert a.events == [] and not a.due(more_buffered=False)


def test_heartbeat_is_a_batch_without_events() -> None:
    hb = TransactionAssembler.heartbeat({"lsn": 5})
    assert hb.events == [] and hb.position == {"lsn": 5}


def test_row_seq_is_the_seq_of_the_next_row_after_the_begin_it_brings() -> None:
    for meta, first in ((True, 1), (False, 0)):
        a, _ = make(tx_metadata=meta)
        a.begin("t", begin_event_id="t:0")
        assert a.row_seq == first  # the first change brings the BEGIN (with metadata) first
        a.change(T1, "c", None, (1,), {}, 7, f"t:{a.row_seq}")
        assert a.row_seq == first + 1
        a.change(T1, "c", None, (2,), {}, 7, f"t:{a.row_seq}")
        a.commit(f"t:{a.seq}")
        ids = [e.event_id for e in a.take({}).events]
        # with metadata: BEGIN t:0, the rows t:1 and t:2, END t:3 (the seq before it)
        assert ids == (["t:0", "t:1", "t:2", "t:3"] if meta else ["t:0", "t:1"])


def test_a_batch_taken_inside_a_transaction_says_so() -> None:
    a, _ = make(max_events=2)
    a.begin("t1", begin_event_id="b")
    a.change(T1, "c", None, (1,), {}, 7, "r1")
    first = a.take({"at": 1})
    assert first.open_txn  # the transaction goes on in the next batch
    a.change(T1, "c", None, (2,), {}, 7, "r2")
    a.commit("e")
    assert not a.take({"at": 2}).open_txn
    assert not a.heartbeat({"at": 3}).open_txn


def test_snapshot_reads_go_between_transactions_without_boundaries() -> None:
    a, _ = make()
    txn(a, "t1", [(T1, 1)])
    read = RowChange(T1, "r", None, (5,), {}, 7, "s:x:s.a:5")
    a.reads([read])
    txn(a, "t2", [(T1, 2)])
    evs = a.take({}).events
    assert [getattr(e, "status", None) or e.op for e in evs] == [  # type: ignore[union-attr]
        "BEGIN",
        "c",
        "END",
        "r",
        "BEGIN",
        "c",
        "END",
    ]
    assert read.tx is None


def _fill(a: TransactionAssembler, tx: str, start: int) -> int:
    """Rows of an open transaction ``tx`` until a batch is due; the next row number."""
    i = start
    while not a.due(more_buffered=True):
        a.change(T1, "c", None, (i,), {}, 7, f"{tx}:{i}")
        i += 1
    return i


def test_a_batch_full_inside_a_transaction_ends_at_the_last_boundary_it_holds() -> None:
    a, _ = make(max_events=10)
    txn(a, "t1", [(T1, 1), (T1, 2)])  # 4 events: below half a batch, no boundary kept
    assert not a.wants_boundary
    txn(a, "t2", [(T1, 3)])  # 7 events: a boundary is wanted
    assert a.wants_boundary
    a.boundary({"after": "t2"})
    a.begin("t3", begin_event_id="t3:b")
    _fill(a, "t3", 4)
    batch = a.take({"inside": "t3"})
    # the two whole transactions, resuming after t2; nothing of t3 is in it
    assert batch.position == {"after": "t2"} and not batch.open_txn
    assert batch.events[-1].event_id == "t2:e"
    assert len(batch.events) == 7
    # t3's events so far start the next batch, which goes on to t3's END
    assert a.events[0].event_id == "t3:b"
    a.change(T1, "c", None, (99,), {}, 7, "t3:99")
    a.commit("t3:e")
    rest = a.take({"after": "t3"})
    assert rest.events[0].event_id == "t3:b" and rest.events[-1].event_id == "t3:e"
    assert not rest.open_txn and rest.position == {"after": "t3"}


def test_a_transaction_that_fills_a_batch_alone_is_still_split_open() -> None:
    a, _ = make(max_events=10)
    a.begin("big", begin_event_id="big:b")
    i = _fill(a, "big", 0)
    first = a.take({"skip": a.seq})
    assert first.open_txn and len(first.events) == 10
    _fill(a, "big", i)
    assert a.take({"skip": a.seq}).open_txn


def test_a_boundary_is_used_once_and_not_inside_a_transaction() -> None:
    a, _ = make(max_events=6)
    txn(a, "t1", [(T1, 1), (T1, 2)])
    a.boundary({"after": "t1"})
    a.begin("t2", begin_event_id="t2:b")
    a.boundary({"bogus": True})  # inside a transaction: ignored
    _fill(a, "t2", 3)
    assert a.take({"inside": "t2"}).position == {"after": "t1"}
    # the carried events (t2's BEGIN and rows) plus more: no boundary left, split open
    _fill(a, "t2", 100)
    second = a.take({"inside": "t2", "n": 2})
    assert second.open_txn and second.position == {"inside": "t2", "n": 2}


def test_a_boundary_outside_a_transaction_does_not_change_a_batch_taken_there() -> None:
    a, _ = make(max_events=4)
    txn(a, "t1", [(T1, 1), (T1, 2)])
    a.boundary({"after": "t1"})
    batch = a.take({"now": 1})  # outside a transaction: the whole batch, the given position
    assert batch.position == {"now": 1} and len(batch.events) == 4 and not a.events
