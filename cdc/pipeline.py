"""One pipeline: source -> transforms -> encoder -> sink, acknowledging the source only behind
the sink.

With ``batch.read_ahead`` above 0, two threads per pipeline: a reader thread iterates
``source.batches`` (receive and decode) and applies the transforms; the pipeline's own thread
encodes, writes and acknowledges (``ReadAhead``), so the source's socket is read while the
previous batch is encoded, written and fsynced. Off by default: on 2 cores it did not measurably
raise rows/s and cost 5-10 % more CPU, as the per-row work on both sides holds Python's GIL and
each receive that releases it waits to get it back."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from cdc import metrics, plugins
from cdc.avro import Encoder
from cdc.config import PipelineConfig
from cdc.model import (
    BatchEncoder,
    ChangeBatch,
    FormatSink,
    PipelineContext,
    Position,
    Reporter,
    RowChange,
    RowSink,
    Sink,
    Source,
    TableSchema,
    TxBoundary,
)
from cdc.status import BOARD, BoardReporter, set_current_pipeline
from cdc.transforms import Transformer, transformer

log = logging.getLogger(__name__)

# The position label each pipeline last published, so a new one replaces it (across restarts).
_position_labels: dict[str, str] = {}


def position_label(batch: ChangeBatch) -> str:
    """The ``cdc_last_durable_position_info`` label of a durable batch: its position as JSON.

    A snapshot batch's position (opaque here) holds the snapshot's progress, primary-key values
    among it (row data, not for a metrics label): only its plain values are shown (where
    streaming will start: an LSN, a binlog file and offset, a GTID set), with
    ``"snapshot": "running"``. A streaming position's nested values (an incremental
    snapshot's progress, also holding key values) are left out alike.
    """
    plain = (str, int, float, bool, type(None))
    shown = {k: v for k, v in batch.position.items() if isinstance(v, plain)}
    if batch.snapshot:
        shown["snapshot"] = "running"
    return json.dumps(shown, sort_keys=True, separators=(",", ":"), default=str)


def context_of(config: PipelineConfig, reporter: Reporter) -> PipelineContext:
    """What a pipeline's plugins are opened with."""
    return PipelineContext(
        name=config.name,
        prefix=config.prefix,
        max_events=config.batch.max_events,
        max_wait_ms=config.batch.max_wait_ms,
        transaction_metadata=config.transaction_metadata,
        reporter=reporter,
    )


def registered_source(config: PipelineConfig, context: PipelineContext) -> Source:
    """The source plugin that ``config.source.type`` names in ``cdc.plugins``."""
    source: plugins.PluginConfig = config.source
    return plugins.source_plugin(source.type).open_source(source, context)


def registered_sink(config: PipelineConfig, context: PipelineContext) -> Sink | RowSink:
    """The sink plugin that ``config.sink.type`` names in ``cdc.plugins``."""
    sink: plugins.PluginConfig = config.sink
    return plugins.sink_plugin(sink.type).open_sink(sink, context)


def avro_encoder(source: Source, sink: Sink, context: PipelineContext) -> BatchEncoder:
    """Avro in Debezium's envelope, schemas registered with the sink's registry."""
    return Encoder(
        sink.registry,
        source.source_schema,
        f"{context.prefix}.transaction" if context.transaction_metadata else None,
        sink.tombstones,
    )


def sink_encoder(source: Source, sink: Sink, context: PipelineContext) -> BatchEncoder:
    """The encoder the sink's ``record_format`` asks for (a ``FormatSink``: Kafka, NATS):
    ``json``, Kafka Connect's JsonConverter layout (``cdc.connectjson``, no registry); otherwise,
    and for any other sink (the log), Avro (``avro_encoder``)."""
    if not isinstance(sink, FormatSink) or sink.record_format.kind != "json":
        return avro_encoder(source, sink, context)
    from cdc.connectjson import JsonEncoder

    return JsonEncoder(
        source.source_schema,
        f"{context.prefix}.transaction" if context.transaction_metadata else None,
        sink.tombstones,
        sink.record_format,
    )


@dataclass(frozen=True)
class Parts:
    """How a pipeline gets its source, sink and encoder. The defaults open the plugins the
    config names; tests pass fakes here instead of patching modules."""

    open_source: Callable[[PipelineConfig, PipelineContext], Source] = registered_source
    open_sink: Callable[[PipelineConfig, PipelineContext], Sink | RowSink] = registered_sink
    encoder: Callable[[Source, Sink, PipelineContext], BatchEncoder] = sink_encoder


PLUGINS = Parts()


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


_END = object()


class _Failed:
    """What the reader thread hands over when ``batches`` (or a transform) raised."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ReadAhead:
    """``source.batches(start)``, transformed, iterated on a reader thread of its own and handed
    to the iterating thread through a queue of ``depth`` batches (``batch.read_ahead``): in
    flight at most ``depth + 2`` batches (one written, ``depth`` queued, one the reader holds),
    each at most ``max_events``. ``depth`` 0: no thread, the iterating thread reads (as the
    pipeline did before read-ahead), with the same contract.

    Contract: the iterator yields exactly the batches ``batches`` yielded, in their order (one
    queue, one consumer), and ends when ``batches`` returns; an exception ``batches`` or a
    transform raised is raised by the iterator (the same object, so the daemon classifies it as
    before), after the batches yielded before it. Leaving the ``with`` block, normally or by an
    exception of the consumer (a sink's error), stops the source and waits for the reader thread
    to end, taking what it still puts so that it never blocks; the caller closes the source only
    after that, so no two threads ever use its connections at once.
    """

    def __init__(
        self,
        source: Source,
        start: Position | None,
        transforms: Transformer | None,
        pipeline: str,
        depth: int,
    ) -> None:
        self._source = source
        self._start = start
        self._transforms = transforms
        self._pipeline = pipeline
        self._depth = depth
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(depth, 1))
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"cdc-read-{pipeline}", daemon=True)

    def __enter__(self) -> ReadAhead:
        if self._depth:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            # The consumer gave up (a sink's error) or stopped early: the reader's batches are
            # not wanted; stop the source and drain until the reader has returned.
            self._abandoned.set()
            self._source.stop()
            while self._thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    self._queue.get(timeout=0.05)
        if self._depth:
            self._thread.join()

    def __iter__(self) -> Iterator[ChangeBatch]:
        if not self._depth:
            yield from self._inline()
            return
        get = self._queue.get
        while True:
            item = get()
            if item is _END:
                return
            if type(item) is _Failed:
                raise item.error
            yield item  # type: ignore[misc]

    def _inline(self) -> Iterator[ChangeBatch]:
        transforms = self._transforms
        batches = self._source.batches(self._start)
        try:
            for batch in batches:
                yield batch if transforms is None else transforms.apply(batch)
        finally:
            if isinstance(batches, Generator):
                batches.close()

    def _read(self) -> None:
        set_current_pipeline(self._pipeline)  # its log lines name the pipeline too
        put, transforms = self._queue.put, self._transforms
        batches = self._source.batches(self._start)
        try:
            for batch in batches:
                if transforms is not None:
                    batch = transforms.apply(batch)
                put(batch)
                if self._abandoned.is_set():
                    return
            put(_END)
        except BaseException as e:  # every failure reaches the consumer, which raises it
            put(_Failed(e))
        finally:
            if isinstance(batches, Generator):  # its cleanup runs here, on its own thread
                with contextlib.suppress(Exception):
                    batches.close()
            set_current_pipeline(None)


class Pipeline:
    """Runs one configured pipeline until ``stop()``; not restartable (make a new one).

    State, as published on ``cdc.status.BOARD``: ``starting`` until the source reports its
    snapshot (``snapshot``) or is reading the change stream (``streaming``): the source's
    ``streaming`` flag, polled by the daemon, or sooner, a durable batch past the snapshot.

    A ``Sink`` gets encoded batches; a ``RowSink`` gets the batches themselves (after
    transforms), and no encoder is made for it.
    """

    def __init__(self, config: PipelineConfig, parts: Parts = PLUGINS) -> None:
        self.config = config
        self.parts = parts
        self._stop = threading.Event()
        self._source: Source | None = None
        self._sink: Sink | RowSink | None = None
        self._reporter = BoardReporter(config.name)
        self.events_written = 0
        self.batches_written = 0

    def stop(self) -> None:
        """Ask the pipeline to stop after making its current batch durable (signal-safe)."""
        self._stop.set()
        if self._source is not None:
            self._source.stop()
        if self._sink is not None:
            self._sink.interrupt()  # a write waiting on a broker without limit gives up

    def poll_state(self) -> None:
        """Called by the daemon about every second: follow the source's ``streaming`` flag."""
        source = self._source
        if source is None or not source.streaming:
            return
        if BOARD.get(self.config.name).state in ("starting", "snapshot"):
            self._reporter.set_state("streaming")

    def run(self) -> None:
        cfg = self.config
        # Log lines name the pipeline by thread (plugins report through context.reporter).
        set_current_pipeline(cfg.name)
        self._reporter.set_state("starting")
        context = context_of(cfg, self._reporter)
        try:
            sink = self.parts.open_sink(cfg, context)
            self._sink = sink
            if self._stop.is_set():
                self.stop()
            try:
                if isinstance(sink, RowSink) and not sink.event_details and not cfg.transforms:
                    # nothing reads each change's source block or event id (PipelineContext)
                    context = dataclasses.replace(context, event_details=False)
                source = self.parts.open_source(cfg, context)
                self._source = source
                if self._stop.is_set():
                    source.stop()
                try:
                    self._loop(source, sink, context)
                finally:
                    source.close()
            finally:
                sink.close()
        finally:
            set_current_pipeline(None)

    def _deliver(
        self, source: Source, sink: Sink | RowSink, context: PipelineContext
    ) -> Callable[[ChangeBatch], None]:
        """The step that makes one batch durable, chosen once: a row sink takes the batch as it
        is; any other gets it encoded, by an encoder made only for it."""
        if isinstance(sink, RowSink):
            return sink.write_rows
        encoder = self.parts.encoder(source, sink, context)
        name = self.config.name
        seen = 0

        def write(batch: ChangeBatch) -> None:
            nonlocal seen
            encoded = encoder.encode(batch)
            if encoder.fallbacks != seen:
                metrics.ENCODER_FALLBACKS.labels(pipeline=name).inc(encoder.fallbacks - seen)
                seen = encoder.fallbacks
            sink.write(encoded)

        return write

    def _loop(self, source: Source, sink: Sink | RowSink, context: PipelineContext) -> None:
        name = self.config.name
        deliver = self._deliver(source, sink, context)
        start = sink.committed()
        ack = sink.acknowledgeable()
        if ack is not None:
            source.acknowledge(ack)
        log.info("pipeline %s: starting from %s", name, start or "the beginning")
        BOARD.get(name).position = start
        # None: no stage at all
        transforms = transformer(self.config.transforms, name, source.source_schema)
        depth = self.config.batch.read_ahead
        with ReadAhead(source, start, transforms, name, depth) as ahead:
            for batch in ahead:
                deliver(batch)
                self._durable(batch)
                ack = sink.acknowledgeable()
                if ack is not None:
                    source.acknowledge(ack)  # from this thread, not the reader's (see Source)
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
        label = position_label(batch)
        old = _position_labels.get(name)
        if label != old:
            if old is not None:
                with contextlib.suppress(KeyError):
                    metrics.LAST_DURABLE_POSITION.remove(name, old)
            metrics.LAST_DURABLE_POSITION.labels(name, label).set(1)
            _position_labels[name] = label
        if batch.snapshot:
            if st.state == "starting":
                self._reporter.set_state("snapshot")
        elif st.state in ("starting", "snapshot"):
            # A durable batch past the snapshot (whose last batch carries a plain position).
            self._reporter.set_state("streaming")
