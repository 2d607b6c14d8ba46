"""One pipeline: source -> encoder -> sink, acknowledging the source only behind the sink."""

from __future__ import annotations

import logging
import threading
from typing import Any

from cdc import plugins
from cdc.avro import Encoder
from cdc.config import PipelineConfig
from cdc.model import Sink, Source

log = logging.getLogger(__name__)


class Pipeline:
    """Runs one configured pipeline until ``stop()``; not restartable (make a new one)."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self._stop = threading.Event()
        self._source: Source | None = None
        self._sink: Sink | None = None
        self.events_written = 0
        self.batches_written = 0

    def stop(self) -> None:
        """Ask the pipeline to stop after making its current batch durable (signal-safe)."""
        self._stop.set()
        if self._source is not None:
            self._source.stop()
        # A sink whose write() can wait on a broker without limit offers interrupt() to end it.
        interrupt = getattr(self._sink, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def run(self) -> None:
        cfg: Any = self.config
        sink: Sink = plugins.plugin("sink", cfg.sink.type).open_sink(cfg.sink, cfg)
        self._sink = sink
        if self._stop.is_set():
            self.stop()
        try:
            source: Source = plugins.plugin("source", cfg.source.type).open_source(cfg.source, cfg)
            self._source = source
            if self._stop.is_set():
                source.stop()
            try:
                self._loop(source, sink)
            finally:
                source.close()
        finally:
            sink.close()

    def _loop(self, source: Source, sink: Sink) -> None:
        cfg = self.config
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
        log.info("pipeline %s: starting from %s", cfg.name, start or "the beginning")
        batch: Any
        for batch in source.batches(start):
            encoded = encoder.encode(batch)
            sink.write(encoded)
            self.events_written += len(batch.events)
            self.batches_written += 1
            ack = sink.acknowledgeable()
            if ack is not None:
                source.acknowledge(ack)
        log.info("pipeline %s: stopped at %s", cfg.name, sink.committed())
