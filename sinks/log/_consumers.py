"""Named consumers of the built-in log: committed offsets kept in the log directory.

``consumers/<name>.json`` holds ``{"offset": N, "committed_at_ms": T}``. ``offset`` is the offset
of the next record the consumer wants: every record before it is done (Kafka's convention). The
file is replaced atomically (temp file, fsync, rename, fsync of the directory), so after a crash
it holds the previous or the new offset, never a torn mix. An open ``Consumer`` holds an flock on
``consumers/.<name>.lock`` so that two readers never commit for the same name at once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cdc.checkpoint import fsync_dir, replace_file, try_lock
from cdc.errors import SinkError
from sinks.log import _files
from sinks.log._format import records_of

if TYPE_CHECKING:
    from sinks.log._format import FrameInfo, LogRecord
    from sinks.log._log import LogReader

log = logging.getLogger(__name__)

DIR = "consumers"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise SinkError(
            f"bad consumer name {name!r}: use letters, digits, '_', '.' and '-' "
            "(starting with a letter or digit, at most 100 characters)"
        )
    return name


@dataclass(frozen=True, slots=True)
class ConsumerState:
    """A consumer as stored: ``offset`` is the next offset it wants (None: file unreadable)."""

    name: str
    offset: int | None
    committed_at_ms: int | None


def read_states(directory: Path) -> list[ConsumerState]:
    """Every consumer of the log in ``directory``, by name. Missing directory: none."""
    out = []
    try:
        paths = sorted((directory / DIR).glob("*.json"))
    except OSError:
        return []
    for p in paths:
        name = p.name[: -len(".json")]
        if not _NAME.fullmatch(name):
            continue
        try:
            doc: Any = json.loads(p.read_bytes())
            out.append(ConsumerState(name, int(doc["offset"]), int(doc["committed_at_ms"])))
        except FileNotFoundError:
            continue  # deleted since the listing
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("log consumer file %s is unreadable (%s)", p, e)
            out.append(ConsumerState(name, None, None))
    return out


def make_consumers_dir(directory: Path) -> int:
    """Create ``consumers/`` if missing; return the mode its files get (the log directory's)."""
    mode = _files.file_mode_of(directory)
    _files.make_dir(directory / DIR, mode)
    return mode


def write_offset(directory: Path, name: str, offset: int) -> None:
    path = directory / DIR / f"{name}.json"
    data = json.dumps({"offset": offset, "committed_at_ms": int(time.time() * 1000)}).encode()
    try:
        mode = make_consumers_dir(directory)
        replace_file(path, data)
        # replace_file creates with the umask's mode; consumers/ is private already, this makes
        # the file match too (a mode argument to replace_file would do it in one step).
        os.chmod(path, mode)
    except OSError as e:
        if e.errno in _files.FULL:  # the message of a failed os.write names no file
            raise _files.io_error("commit the consumer offset to", path, e) from None
        raise


class Consumer:
    """A named consumer of one log: where it resumes, and ``commit`` to move that forward.

    Delivery is what the caller makes of it: committing after processing gives at-least-once
    (a crash between the two replays the records since the last commit). While the log's
    retention has ``keep_unconsumed`` on (the default), records at or after the committed offset
    are never deleted. Use as a context manager, or call ``close``.
    """

    def __init__(self, reader: LogReader, name: str) -> None:
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
