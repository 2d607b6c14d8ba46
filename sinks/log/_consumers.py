"""Named consumers of the built-in log: committed offsets kept in the log directory (their
files: ``_offsets``). An open ``Consumer`` holds an flock on ``consumers/.<name>.lock`` so that
two readers never commit for the same name at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol

from cdc.checkpoint import fsync_dir, try_lock
from cdc.errors import SinkError
from cdc.sinks.log import _files
from cdc.sinks.log._format import FrameInfo, LogRecord, records_of
from cdc.sinks.log._offsets import DIR, check_name, make_consumers_dir, read_states, write_offset


class Reader(Protocol):
    """What a ``Consumer`` uses of its log's reader (``_log.LogReader``, which makes consumers:
    naming it here would be an import cycle)."""

    directory: Path

    def start_offset(self) -> int: ...

    def end_offset(self) -> int: ...

    def frames(
        self,
        from_offset: int | Literal["earliest", "latest"] = "earliest",
        follow: bool = False,
        poll: float = 0.2,
    ) -> Iterator[FrameInfo]: ...


class Consumer:
    """A named consumer of one log: where it resumes, and ``commit`` to move that forward.

    Delivery is what the caller makes of it: committing after processing gives at-least-once
    (a crash between the two replays the records since the last commit). While the log's
    retention has ``keep_unconsumed`` on (the default), records at or after the committed offset
    are never deleted. Use as a context manager, or call ``close``.
    """

    def __init__(self, reader: Reader, name: str) -> None:
        self.reader = reader
        self.name = check_name(name)
        self._dir = reader.directory / DIR
        lock = self._dir / f".{name}.lock"
        try:
            mode = make_consumers_dir(reader.directory)
            fd = try_lock(lock)
            if fd is not None:
                try:
                    os.fchmod(fd, mode)
                except OSError:
                    os.close(fd)
                    raise
        except OSError as e:
            raise _files.io_error("lock the consumer", lock, e) from None
        self._lock_fd = -1 if fd is None else fd
        if fd is None:
            raise SinkError(
                f"consumer {name!r} of log {reader.directory} is in use by another reader; "
                "stop it or use another consumer name"
            ) from None
        self._end_seen = 0

    @property
    def committed(self) -> int | None:
        """The committed offset (the next record wanted), or None if never committed."""
        for s in read_states(self.reader.directory):
            if s.name == self.name:
                return s.offset
        return None

    def position(self) -> int:
        """Where ``records`` starts: the committed offset, or the log's start if none."""
        c = self.committed
        return self.reader.start_offset() if c is None else c

    def lag(self) -> int:
        """Records in the log at or after ``position``."""
        return max(0, self.reader.end_offset() - self.position())

    def commit(self, offset: int) -> None:
        """Durably record that every record before ``offset`` is done (may move backwards)."""
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise SinkError(f"bad offset to commit for consumer {self.name!r}: {offset!r}")
        if offset > self._end_seen:
            self._end_seen = self.reader.end_offset()
            if offset > self._end_seen:
                raise SinkError(
                    f"cannot commit offset {offset} for consumer {self.name!r}: the log ends "
                    f"at offset {self._end_seen} (the next record written gets that offset)"
                )
        write_offset(self.reader.directory, self.name, offset)

    def frames(self, follow: bool = False, poll: float = 0.2) -> Iterator[FrameInfo]:
        """Frames from ``position`` on (see ``LogReader.frames``)."""
        for fr in self.reader.frames(self._start(), follow, poll):
            # what was read can be committed without looking at the log's end again
            self._end_seen = max(self._end_seen, fr.base_offset + fr.count)
            yield fr

    def records(self, topic: str | None = None, follow: bool = False) -> Iterator[LogRecord]:
        """Records from ``position`` on; commit as you go. Raises ``OffsetOutOfRange`` if
        retention deleted the committed offset (commit ``reader.start_offset()`` to skip)."""
        start = self.committed
        for fr in self.frames(follow):
            for r in records_of(fr):
                if (start is not None and r.offset < start) or (
                    topic is not None and r.topic != topic
                ):
                    continue
                yield r

    def _start(self) -> int | Literal["earliest"]:
        c = self.committed
        return "earliest" if c is None else c

    def delete(self) -> None:
        """Forget this consumer: retention no longer keeps records for it."""
        try:
            (self._dir / f"{self.name}.json").unlink()
        except FileNotFoundError:
            return
        fsync_dir(self._dir)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
