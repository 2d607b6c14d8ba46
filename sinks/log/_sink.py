"""The built-in log as a pipeline sink.

Delivery guarantee: exactly-once into the log across crashes. Each frame carries the source
position after its last record and is fsynced before ``write`` returns; on restart the source
resumes from the last frame's position and skips what that frame already holds.

The source is acknowledged only up to the position of the frame *before* the last one, so that
if the last frame is found torn on open (and cut), its changes are still retained by the source
and are read again. Damage anywhere else is never cut: opening raises LogCorrupt (docs/log.md,
Faults). Retention never deletes the segment holding the last frame.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from cdc.metrics import REGISTRY
from cdc.model import EncodedBatch, Position
from cdc.sinks.log._retention import RetentionResult
from cdc.sinks.log._writer import LogWriter
from cdc.sinks.log.config import LogSinkConfig

START_OFFSET = Gauge(
    "cdc_log_start_offset",
    "First offset still in the built-in log (moves forward as retention deletes segments).",
    ["pipeline"],
    registry=REGISTRY,
)
RETAINED_BYTES = Gauge(
    "cdc_log_retained_bytes",
    "Bytes of the built-in log's segments after the last retention check.",
    ["pipeline"],
    registry=REGISTRY,
)
HELD_BYTES = Gauge(
    "cdc_log_retention_held_bytes",
    "Bytes retention would have deleted at its last check but kept for named consumers that "
    "have not committed them (retention.keep_unconsumed).",
    ["pipeline"],
    registry=REGISTRY,
)
DELETED = Counter(
    "cdc_log_segments_deleted",
    "Segments of the built-in log deleted by retention.",
    ["pipeline"],
    registry=REGISTRY,
)


class LogSink:
    def __init__(self, config: LogSinkConfig, pipeline_name: str = "") -> None:
        self._name = pipeline_name
        self._writer = LogWriter(
            config.path,
            segment_bytes=config.segment_bytes,
            fsync=config.fsync,
            retention=config.retention,
            on_retention=self._retained,
            file_mode=config.file_mode,
        )
        self.registry = self._writer.schemas
        self.tombstones = config.tombstones
        self.truncated = self._writer.truncated

    def _retained(self, res: RetentionResult) -> None:
        START_OFFSET.labels(self._name).set(res.start_offset)
        RETAINED_BYTES.labels(self._name).set(res.total_bytes)
        HELD_BYTES.labels(self._name).set(res.held_bytes)
        if res.deleted:
            DELETED.labels(self._name).inc(len(res.deleted))

    def write(self, batch: EncodedBatch) -> None:
        self._writer.append(batch.records, batch.position)

    def committed(self) -> Position | None:
        return self._writer.position

    def acknowledgeable(self) -> Position | None:
        return self._writer.prev

    def interrupt(self) -> None:
        """Nothing to do: a write waits only on the local disk."""

    def close(self) -> None:
        self._writer.close()
