"""The built-in log as a pipeline sink.

Delivery guarantee: exactly-once into the log across crashes. Each frame carries the source
position after its last record and is fsynced before ``write`` returns; on restart the source
resumes from the last frame's position and skips what that frame already holds.

The source is acknowledged only up to the position of the frame *before* the last one, so that
if the last frame is found torn or corrupt on open (and cut), its changes are still retained by the
source and are read again.
"""

from __future__ import annotations

from cdc.model import EncodedBatch, Position
from sinks.log._log import LogWriter
from sinks.log.config import LogSinkConfig


class LogSink:
    def __init__(self, config: LogSinkConfig) -> None:
        self._writer = LogWriter(
            config.path, segment_bytes=config.segment_bytes, fsync=config.fsync
        )
        self.registry = self._writer.schemas
        self.tombstones = config.tombstones
        self.truncated = self._writer.truncated

    def write(self, batch: EncodedBatch) -> None:
        self._writer.append(batch.records, batch.position)

    def committed(self) -> Position | None:
        return self._writer.position

    def acknowledgeable(self) -> Position | None:
        return self._writer.prev

    def close(self) -> None:
        self._writer.close()
