"""Writer of the built-in log (format in ``_format``, files and lock in ``_files``)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from cdc.checkpoint import fsync_dir
from cdc.errors import LogCorrupt, SinkError
from cdc.model import EncodedRecord, Position
from cdc.sinks.log import _files, _retention
from cdc.sinks.log._format import (
    RECOVERY,
    FrameInfo,
    check_tail,
    encode_frame,
    scan,
    segment_name,
    segments,
)
from cdc.sinks.log._retention import RetentionResult
from cdc.sinks.log._schemas import SchemaStore
from cdc.sinks.log.config import LogRetention

log = logging.getLogger(__name__)


class LogWriter:
    """Appends frames to a log directory; one writer per directory (an flock on the directory).

    On open, the last segment is verified frame by frame. A torn tail (damage after the last
    valid frame that only a crash while appending can have left, see ``check_tail``) is cut: such
    a frame was never acknowledged to the source as durable (see ``acknowledgeable``), so the
    source sends its changes again. Anything else (damage followed by valid frames, a file that
    is not a segment of ours) raises LogCorrupt and nothing is changed.

    Before each append the writer checks that its segment is still the file it wrote, at the
    size it left it; if another process cut, replaced or deleted it, the append raises LogCorrupt
    instead of writing on. Files it creates get ``file_mode`` (directories the matching mode).
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 << 20,
        fsync: bool = True,
        retention: LogRetention | None = None,
        on_retention: Callable[[RetentionResult], None] | None = None,
        file_mode: int = _files.DEFAULT_FILE_MODE,
    ):
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.file_mode = file_mode
        self._fd = -1  # the active segment, opened for appending
        self._lock_fd = -1
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)  # parents: the umask's mode
            _files.make_dir(directory, file_mode)
            self._lock_fd = _files.lock_dir(directory)
        except OSError as e:
            raise _files.io_error("open the log directory", directory, e) from None
        # Everything from here on releases the lock if it fails: a daemon retrying in the same
        # process must not find its own leaked lock and take it for another writer.
        try:
            self.schemas = SchemaStore(directory, writable=True, file_mode=file_mode)
            self.next_offset = 0
            self.position: Position | None = None
            self.prev: Position | None = None
            self.truncated: str | None = None
            self._path = directory
            self._size = 0  # bytes of the active segment, all written by this writer
            self._ident = (0, 0)  # (st_dev, st_ino) of the active segment
            self._open_tail()
            self.retention = retention
            self._on_retention = on_retention
            self._first_times: dict[int, int] = {}
            # Appends compare their clock with this to apply an age limit on an idle log.
            self._retention_due = float("inf")
            if retention is not None and (retention.max_age or retention.max_bytes):
                self.apply_retention()
        except BaseException:
            self.close()
            raise

    def _open_tail(self) -> None:
        segs = segments(self.directory)
        if not segs:
            self._new_segment(0)
            return
        base, path = segs[-1]
        with open(path, "rb") as f:
            data = f.read()
        frames, err = scan(data)
        last: FrameInfo | None = frames[-1] if frames else None
        if err is not None:
            expect = last.base_offset + last.count if last is not None else base
            check_tail(data, err, expect, path)  # raises unless it is a torn last frame
            dropped = len(data) - err.file_offset
            self.truncated = f"{err.reason} in {path.name} at byte {err.file_offset}"
            log.warning(
                "log %s: torn last frame (%s); dropping the last %d bytes (a crash while "
                "writing them: they were never acknowledged to the source, which sends their "
                "changes again)",
                self.directory,
                self.truncated,
                dropped,
            )
            try:
                with open(path, "r+b") as f:
                    f.truncate(err.file_offset)
                    os.fsync(f.fileno())
            except OSError as e:
                raise _files.io_error("cut the torn tail of", path, e) from None
        if last is None and len(segs) > 1:
            # The newest segment is empty: the tail is the previous segment's last frame.
            with open(segs[-2][1], "rb") as f:
                prev_frames, perr = scan(f.read())
            if perr is not None:
                raise LogCorrupt(
                    f"log segment {segs[-2][1]}: {perr.reason} at byte {perr.file_offset} "
                    f"(the segment before the active one); {RECOVERY}"
                )
            last = prev_frames[-1] if prev_frames else None
        if last is not None:
            self.next_offset = last.base_offset + last.count
            self.position, self.prev = last.position, last.prev
        else:
            self.next_offset = base
        self._open_segment(path)

    def _open_segment(self, path: Path) -> None:
        try:
            fd = _files.open_append(path, self.file_mode)
        except OSError as e:
            raise _files.io_error("open the log segment", path, e) from None
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        st = os.fstat(fd)
        self._path, self._size, self._ident = path, st.st_size, (st.st_dev, st.st_ino)

    def _new_segment(self, base: int) -> None:
        path = self.directory / segment_name(base)
        self._open_segment(path)
        try:
            fsync_dir(self.directory)
        except OSError as e:
            raise _files.io_error("sync the log directory", self.directory, e) from None

    def _check_segment(self) -> None:
        """Raise LogCorrupt if the active segment is no longer what this writer left: another
        process (a second daemon whose lock check was fooled, a person) cut, grew, replaced or
        deleted it. Writing on would put frames where no reader finds them, or after a hole."""
        st = os.fstat(self._fd)
        problem = None
        if st.st_nlink == 0:
            problem = "was deleted"
        elif st.st_size != self._size:
            problem = f"is {st.st_size} bytes long, but this writer left it at {self._size}"
        else:
            try:
                now = os.stat(self._path)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != self._ident:
                problem = "was replaced by another file (or the directory was moved)"
        if problem is not None:
            raise LogCorrupt(
                f"log segment {self._path} {problem} while this daemon was writing it: another "
                "process changed the log; nothing more was written. Stop every other process "
                "writing to the log, check it with `cdc log info`, then restart (see 'Faults' "
                "in docs/log.md)"
            )

    def append(self, records: list[EncodedRecord], position: Position) -> int:
        """Write one frame holding ``records`` and ``position``; durable when this returns.

        Returns the offset the next record will get. Raises SinkError naming the segment when
        the write fails (a full disk: retryable); the writer is closed then, and a new one cuts
        what was half written as a torn tail.
        """
        if self._fd < 0:
            raise SinkError(f"log {self.directory}: the writer is closed", retryable=True)
        self._check_segment()
        rolled = self._size >= self.segment_bytes
        if rolled:
            self._new_segment(self.next_offset)
        now_ms = int(time.time() * 1000)
        data = encode_frame(self.next_offset, records, position, self.position, now_ms)
        try:
            _files.write_all(self._fd, data)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as e:
            path = self._path
            self.close()  # half a frame may be in the file: only a reopen may go on from here
            raise _files.io_error("write to the log segment", path, e) from None
        self._size += len(data)
        self.next_offset += len(records)
        self.prev, self.position = self.position, position
        if now_ms >= self._retention_due or (rolled and self.retention is not None):
            self.apply_retention(now_ms)
        return self.next_offset

    def apply_retention(self, now_ms: int | None = None) -> RetentionResult | None:
        """Delete the closed segments the retention settings allow (see ``_retention``)."""
        r = self.retention
        if r is None or not (r.max_age or r.max_bytes):
            return None
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if r.max_age:
            self._retention_due = now_ms + r.check_interval * 1000
        try:
            res = _retention.apply(self.directory, r, now_ms, self._first_times)
        except OSError as e:
            # The frame is durable already: writing goes on, and so does the next check.
            log.warning("log %s: retention failed (%s); it is tried again later", self.directory, e)
            return None
        if res.deleted:
            log.info(
                "log %s: retention deleted %d segment(s) (%s..%s); the log starts at offset %d",
                self.directory,
                len(res.deleted),
                res.deleted[0],
                res.deleted[-1],
                res.start_offset,
            )
        if res.held_bytes:
            log.warning(
                "log %s: retention keeps %d bytes past its limits because consumer(s) %s have "
                "not committed them (total %d bytes); let them catch up, or delete a consumer "
                "that is gone with `cdc log consumers %s --delete NAME`",
                self.directory,
                res.held_bytes,
                ", ".join(res.held_by),
                res.total_bytes,
                self.directory,
            )
        if self._on_retention is not None:
            self._on_retention(res)
        return res

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
