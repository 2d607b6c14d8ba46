"""One hierarchy for every error the service reports.

Messages are lowercase, name the thing, show the value and say what to do. A ``CdcError`` is a
user-facing failure: the CLI prints its message without a traceback.
"""

from __future__ import annotations


class CdcError(Exception):
    """Base of every error the service raises on purpose."""


class ConfigError(CdcError):
    """The configuration is invalid; ``problems`` holds one located message per mistake."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class SourceError(CdcError):
    """The source database cannot be read. ``retryable`` says whether a restart may help
    (a lost connection may; a slot owned by another database will not)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)


class PositionLost(SourceError):
    """The position to resume from is gone (a dropped slot, a purged binlog)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class SinkError(CdcError):
    """The destination refused or failed a write. ``retryable`` says whether a retry may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class LogCorrupt(SinkError):
    """The built-in log holds data that fails its checksum somewhere other than its tail."""


class EncodeError(CdcError):
    """An event the encoder cannot write as Avro by its own schema. Fatal: a restart reads the
    same event again and fails the same way, so the pipeline stops instead of looping."""
