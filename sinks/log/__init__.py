"""The built-in durable log: segmented, checksummed, append-only files on local disk."""

from sinks.log._format import LogRecord
from sinks.log._log import LogReader, LogWriter
from sinks.log._sink import LogSink
from sinks.log.config import LogSinkConfig

Config = LogSinkConfig


def open_sink(config: LogSinkConfig, pipeline: object) -> LogSink:
    return LogSink(config)


__all__ = ["Config", "LogReader", "LogRecord", "LogSink", "LogSinkConfig", "LogWriter", "open_sink"]
