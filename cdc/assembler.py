"""The transaction assembler every source shares: from a change stream's transactions to batches.

A source reads its protocol (pgoutput, the binlog) and tells the assembler what it sees:
``begin`` a transaction, each row ``change``, ``commit``. The assembler adds what Debezium puts
around the rows (BEGIN and END events with per-table counts, each row's total and per-table
order in its transaction), skips what a resumed position says is already written, and decides
when the events gathered so far form a batch (``due``); the source then ``take``s it with the
position that resumes after it.

Rules, each with a unit test in tests/unit/test_assembler.py:
- BEGIN comes with a transaction's first captured change, so a transaction that touches no
  captured table produces nothing; END carries the event count and the count per table.
- ``seq`` counts the events of the open transaction, BEGIN included, skipped ones too: a
  position taken inside a transaction says ``skip: seq``, and ``begin(..., skip=n)`` after a
  restart drops the first ``n`` events again, so a transaction split over frames is never
  written twice. ``row_seq`` is the ``seq`` the next row gets (after the BEGIN it may bring).
- A batch is due when it holds ``max_events`` events, when the source is stopping, or outside a
  transaction when the source has nothing more buffered (the latency rule: write as soon as the
  stream pauses) or ``max_wait_s`` passed since its first event. Inside a transaction only size
  and stopping make it due: the rest of the transaction is on its way.
- A batch full inside a transaction ends at the last transaction boundary it holds, when it
  holds one (``boundary``, marked by the source after each commit with the position that
  resumes there): the events after it (the open transaction's so far) start the next batch. So
  batches end inside a transaction only when one transaction alone fills a batch, and a
  database target, which commits only between source transactions, commits once per batch
  rather than holding its transaction open across batches until one ends on a boundary by
  chance (which, with transactions of 1,000 rows and batches of 5,000 events, took hundreds of
  transactions, all of them kept in memory to replay).
- A position-only batch (``heartbeat``) carries no events: the sink makes the position durable
  and the source may be acknowledged up to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cdc.model import ChangeBatch, Op, Position, RowChange, TableSchema, TxBoundary


class TransactionAssembler:
    """Gathers one source's events into batches. Not thread-safe: one per stream."""

    def __init__(
        self,
        *,
        tx_metadata: bool,
        max_events: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tx_metadata = tx_metadata
        self.max_events = max_events
        self.max_wait_s = max_wait_s
        self._clock = clock
        self.events: list[RowChange | TxBoundary] = []
        self._first_at = 0.0
        # the open transaction
        self.in_txn = False
        self.began = False  # its BEGIN was emitted (or would have been, without metadata)
        self.seq = 0  # its events so far, BEGIN included, skipped ones too
        self._skip = 0
        self._tx_id = ""
        self._begin_id = ""
        self._total = 0
        self._per_table: dict[str, int] = {}
        self._ts_ms = 0
        # the last transaction boundary of the gathered events: how many events end there, and
        # the position that resumes after them (see ``boundary``)
        self._cut = 0
        self._cut_position: Position | None = None

    # --- a transaction ---------------------------------------------------------------------

    def begin(self, tx_id: str, *, begin_event_id: str, skip: int = 0) -> None:
        """A transaction starts. ``skip``: how many of its events a batch already written holds
        (the ``skip`` of the position resumed from, when it names this transaction)."""
        self.in_txn = True
        self.began = False
        self.seq = 0
        self._skip = skip
        self._tx_id = tx_id
        self._begin_id = begin_event_id
        self._total = 0
        self._per_table = {}

    @property
    def row_seq(self) -> int:
        """The ``seq`` the next ``change`` gives its row: after the BEGIN that change brings
        first (with transaction metadata), for an event id derived from it."""
        return self.seq + 1 if self.tx_metadata and not self.began else self.seq

    def change(
        self,
        table: TableSchema,
        op: Op,
        before: tuple[Any, ...] | None,
        after: tuple[Any, ...] | None,
        source: dict[str, Any],
        ts_ms: int,
        event_id: str,
    ) -> None:
        """A row change of the open transaction (the BEGIN goes out before the first)."""
        self._ts_ms = ts_ms
        if not self.began:
            self.began = True
            if self.tx_metadata:
                self._add(TxBoundary("BEGIN", self._tx_id, ts_ms, self._begin_id))
        self._total += 1
        n = self._per_table.get(table.qualified, 0) + 1
        self._per_table[table.qualified] = n
        tx = (self._tx_id, self._total, n) if self.tx_metadata else None
        self._add(RowChange(table, op, before, after, source, ts_ms, event_id, tx))

    def commit(self, end_event_id: str) -> None:
        """The open transaction committed: its END (if it had a captured change). ``seq`` is
        still the transaction's before the END, for an id derived from it."""
        if not self.in_txn:
            return
        if self.began and self.tx_metadata:
            self._add(
                TxBoundary(
                    "END",
                    self._tx_id,
                    self._ts_ms,
                    end_event_id,
                    self._total,
                    self._per_table,
                )
            )
        self.in_txn = False

    @property
    def wants_boundary(self) -> bool:
        """Whether ``boundary`` would be kept now: only once the gathered events fill half a
        batch (an earlier boundary is soon replaced by a later one, and making a position for
        every small transaction costs the sources time)."""
        return 2 * len(self.events) >= self.max_events and not self.in_txn

    def boundary(self, position: Position) -> None:
        """The gathered events end a transaction here (just after ``commit``, outside any
        transaction) and ``position`` resumes after them: a batch that fills up inside a later
        transaction may end here instead (see the module's rules). ``position`` must be a value
        that later changes of the source's state do not alter."""
        if self.events and not self.in_txn:
            self._cut = len(self.events)
            self._cut_position = position

    def reads(self, rows: list[RowChange]) -> None:
        """Rows of an incremental snapshot chunk (``cdc.incremental``), between transactions:
        no BEGIN or END, no transaction block, in the one order of the batches."""
        assert not self.in_txn, "snapshot rows go between transactions"
        if rows and not self.events:
            self._first_at = self._clock()
        self.events.extend(rows)

    def _add(self, ev: RowChange | TxBoundary) -> None:
        if self.seq >= self._skip:
            if not self.events:
                self._first_at = self._clock()
            self.events.append(ev)
        self.seq += 1

    # --- batches ---------------------------------------------------------------------------

    def due(self, *, more_buffered: bool, stopping: bool = False) -> bool:
        """Whether the events gathered form a batch now (see the module's rules)."""
        events = self.events
        if not events:
            return False
        if len(events) >= self.max_events or stopping:
            return True
        if self.in_txn:
            return False
        return not more_buffered or self._clock() - self._first_at >= self.max_wait_s

    def wait_s(self) -> float | None:
        """Seconds until the timer makes the gathered events due; None when nothing is."""
        if not self.events:
            return None
        return max(0.0, self._first_at + self.max_wait_s - self._clock())

    def take(self, position: Position) -> ChangeBatch:
        """The gathered events as a batch resuming at ``position``; the next batch starts
        empty. The batch is ``open_txn`` when taken inside a transaction, unless a
        ``boundary`` was marked among its events: then it ends there, resuming at that
        boundary's position, and the events after it stay for the next batch."""
        events, cut = self.events, self._cut
        self._cut, cut_position = 0, self._cut_position
        self._cut_position = None
        if self.in_txn and 0 < cut < len(events) and cut_position is not None:
            self.events = events[cut:]
            self._first_at = self._clock()
            return ChangeBatch(events[:cut], cut_position)
        self.events = []
        return ChangeBatch(events, position, open_txn=self.in_txn)

    @staticmethod
    def heartbeat(position: Position) -> ChangeBatch:
        """A batch without events: the sink makes ``position`` durable all the same."""
        return ChangeBatch([], position)
