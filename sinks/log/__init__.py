"""The built-in durable log: segmented, checksummed, append-only files on local disk.

Public API for consumers: ``open_log(path)`` -> ``EventLog`` (decoded ``Event`` objects from an
offset, a time or a named consumer, following new data; ``EventConsumer`` commits progress).
Lower level: ``LogWriter`` and ``LogReader`` (offsets, time, follow), ``Consumer`` (named
consumers with committed offsets), ``OffsetOutOfRange`` (records deleted by retention), and the
low-level frame access a tool that tails the segment files itself needs: ``segments``,
``read_frame``, ``records_of``, ``FrameInfo``, ``FrameError``.
"""

from cdc.model import PipelineContext, Sink
from cdc.sinks.log._consumers import Consumer
from cdc.sinks.log._events import Event, EventBatch, EventConsumer, EventLog, open_log
from cdc.sinks.log._format import FrameError, FrameInfo, LogRecord, read_frame, records_of, segments
from cdc.sinks.log._log import LogReader, OffsetOutOfRange
from cdc.sinks.log._sink import LogSink
from cdc.sinks.log._writer import LogWriter
from cdc.sinks.log.config import LogRetention, LogSinkConfig
from cdc.units import parse_since

Config = LogSinkConfig


def open_sink(config: LogSinkConfig, context: PipelineContext) -> Sink:
    """Open (create) the log in ``config.path``; ``SinkError`` if another writer has it."""
    return LogSink(config, context.name)


__all__ = [
    "Config",
    "Consumer",
    "Event",
    "EventBatch",
    "EventConsumer",
    "EventLog",
    "FrameError",
    "FrameInfo",
    "LogReader",
    "LogRecord",
    "LogRetention",
    "LogSink",
    "LogSinkConfig",
    "LogWriter",
    "OffsetOutOfRange",
    "open_log",
    "open_sink",
    "parse_since",
    "read_frame",
    "records_of",
    "segments",
]
