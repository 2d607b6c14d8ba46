"""One pipeline: source -> transforms -> encoder -> sink, acknowledging the source only behind
the sink."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any

from cdc import metrics, plugins
from cdc.avro import Encoder
from cdc.config import PipelineConfig
from cdc.model import ChangeBatch, Position, RowChange, Sink, Source, TableSchema, TxBoundary
from cdc.status import BOARD, set_current_pipeline
from cdc.transforms import transformer

log = logging.getLogger(__name__)

STREAMING_AFTER_S = 2.0

# The position label each pipeline last published, so a new one replaces it (across restarts).
_position_labels: dict[str, str] = {}


def is_snapshot_position(position: Position | None) -> bool:
    """True for the positions a source writes while its snapshot is unfinished.

    Both sources mark them with a ``snapshot`` key (Postgres: per-table progress; MySQL:
    ``"running"``); the snapshot's last batch carries the plain streaming position.
    """
    return position is not None and "snapshot" in position


def _count_runs(events: list[RowChange | TxBoundary]) -> dict[tuple[TableSchema, str], int]:
    """Row changes per (table version, op), counting runs of equal keys (changes mostly come in
    runs: a transaction's rows of one table): ~50 ns per event, against ~8 us to encode one."""
    out: dict[tuple[TableSchema, str], int] = {}
    prev_table: TableSchema | None = None
    prev_op = ""
    n = 0
    for ev in events:
        if type(ev) is RowChange:
            table, op = ev.table, ev.op
            if table is prev_table and op == prev_op:
                n += 1
                continue
            if prev_table is not None:
                k = (prev_table, prev_op)
                out[k] = out.get(k, 0) + n
            prev_table, prev_op, n = table, op, 1
    if prev_table is not None:
        k = (prev_table, prev_op)
        out[k] = out.get(k, 0) + n
    return out


class Pipeline:
    """Runs one configured pipeline until ``stop()``; not restartable (make a new one).

    State, as published on ``cdc.status.BOARD``: ``starting`` until the source reports its
    snapshot (``snapshot``) or is reading the change stream (``streaming``). A source may expose a
    ``streaming`` attribute (True once connected to its change stream, past any snapshot); without
    one, the pipeline is ``streaming`` once a batch past the snapshot is durable, or, resuming from
    a position past the snapshot, once the source has read for ``STREAMING_AFTER_S`` without
    failing.
    """

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self._stop = threading.Event()
        self._source: Source | None = None
        self._sink: Sink | None = None
        self.events_written = 0
        self.batches_written = 0
        self._resumed_at: float | None = None  # when a resumed source without a flag started

    def stop(self) -> None:
        """Ask the pipeline to stop after making its current batch durable (signal-safe)."""
        self._stop.set()
        if self._source is not None:
            self._source.stop()
        # A sink whose write() can wait on a broker without limit offers interrupt() to end it.
        interrupt = getattr(self._sink, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def poll_state(self) -> None:
        """Called by the daemon about every second: follow the source's ``streaming`` flag, or
        without one, call a resumed pipeline streaming once its source has read for
        ``STREAMING_AFTER_S`` without failing (connecting to a server that is down fails sooner)."""
        name = self.config.name
        flag = getattr(self._source, "streaming", None)
        if not isinstance(flag, bool):
            entered = self._resumed_at
            if entered is None or time.monotonic() - entered < STREAMING_AFTER_S:
                return
            flag = True
        if flag and BOARD.get(name).state in ("starting", "snapshot"):
            BOARD.set_state(name, "streaming")

    def run(self) -> None:
        cfg: Any = self.config
        set_current_pipeline(cfg.name)
        BOARD.set_state(cfg.name, "starting")
        try:
            sink: Sink = plugins.plugin("sink", cfg.sink.type).open_sink(cfg.sink, cfg)
            self._sink = sink
            if self._stop.is_set():
                self.stop()
            try:
                source: Source = plugins.plugin("source", cfg.source.type).open_source(
                    cfg.source, cfg
                )
                self._source = source
                if self._stop.is_set():
                    source.stop()
                try:
                    self._loop(source, sink)
                finally:
                    source.close()
            finally:
                sink.close()
        finally:
            set_current_pipeline(None)

    def _loop(self, source: Source, sink: Sink) -> None:
        cfg = self.config
        name = cfg.name
        encoder = Encoder(
            sink.registry,
            source.source_schema,
            f"{cfg.prefix}.transaction" if cfg.transaction_metadata else None,
            sink.tombstones,
        )
        start = sink.committed()
        ack = sink.acknowledgeable()
        if ack is not None:
            source.acknowledge(ack)
        log.info("pipeline %s: starting from %s", name, start or "the beginning")
        st = BOARD.get(name)
        st.position = start
        own_flag = isinstance(getattr(source, "streaming", None), bool)
        if not own_flag and start is not None and not is_snapshot_position(start):
            self._resumed_at = time.monotonic()
        batch: Any
        fallbacks = 0
        transforms = transformer(cfg.transforms, name)  # None: no stage at all
        for batch in source.batches(start):
            if transforms is not None:
                batch = transforms.apply(batch)
            encoded = encoder.encode(batch)
            if encoder.fallbacks != fallbacks:
                metrics.ENCODER_FALLBACKS.labels(pipeline=name).inc(encoder.fallbacks - fallbacks)
                fallbacks = encoder.fallbacks
            sink.write(encoded)
            self._durable(batch)
            ack = sink.acknowledgeable()
            if ack is not None:
                source.acknowledge(ack)
        log.info("pipeline %s: stopped at %s", name, sink.committed())

    def _durable(self, batch: ChangeBatch) -> None:
        """Update metrics and status for a batch the sink has just made durable.

        One pass over the events counts per (table, op) (see ``_count_runs``); the labelled
        counters are then touched once per distinct pair, not once per event.
        """
        name = self.config.name
        now = time.time()
        events = batch.events
        commit_ms = None
        by_table = _count_runs(events)
        counts: dict[tuple[str, str], int] = {}
        for (version, op), n in by_table.items():
            k = (version.qualified, op)  # several versions of a table share its name
            counts[k] = counts.get(k, 0) + n
        # The newest change-stream event's commit time (snapshot rows carry the read time).
        for ev in reversed(events):
            if type(ev) is TxBoundary or (type(ev) is RowChange and ev.op != "r"):
                commit_ms = ev.ts_ms
                break
        for (table, op), n in counts.items():
            metrics.EVENTS.labels(name, table, op).inc(n)
        rows = sum(counts.values())
        self.events_written += rows
        self.batches_written += 1
        st = BOARD.get(name)
        st.events += rows
        st.position = batch.position
        st.last_durable_at = now
        metrics.LAST_DURABLE_TIME.labels(name).set(now)
        if commit_ms is not None:
            lag = max(0, int(now * 1000) - commit_ms)
            st.lag_ms = lag
            metrics.LAG_MS.labels(name).set(lag)
            metrics.LAST_COMMIT_TIME.labels(name).set(commit_ms / 1000)
        shown = batch.position
        if is_snapshot_position(shown):
            # snapshot progress holds primary-key values (row data): not for a metrics label
            shown = {k: v for k, v in shown.items() if k != "snapshot"} | {"snapshot": "running"}
        label = json.dumps(shown, sort_keys=True, separators=(",", ":"), default=str)
        old = _position_labels.get(name)
        if label != old:
            if old is not None:
                with contextlib.suppress(KeyError):
                    metrics.LAST_DURABLE_POSITION.remove(name, old)
            metrics.LAST_DURABLE_POSITION.labels(name, label).set(1)
            _position_labels[name] = label
        if is_snapshot_position(batch.position):
            if st.state == "starting":
                BOARD.set_state(name, "snapshot")
        elif st.state in ("starting", "snapshot"):
            # A durable batch past the snapshot (whose last batch carries a plain position).
            BOARD.set_state(name, "streaming")
