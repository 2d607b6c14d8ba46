"""Writer and reader of the built-in log (format in ``_format``)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from cdc.checkpoint import fsync_dir
from cdc.errors import LogCorrupt, SinkError
from cdc.model import EncodedRecord, Position
from sinks.log import _files, _retention
from sinks.log._consumers import Consumer, ConsumerState, read_states
from sinks.log._format import (
    RECOVERY,
    FrameError,
    FrameInfo,
    LogRecord,
    check_tail,
    encode_frame,
    first_frame_time,
    frame_headers,
    read_frame,
    records_of,
    scan,
    segment_name,
    segments,
)
from sinks.log._retention import RetentionResult
from sinks.log._schemas import SchemaStore
from sinks.log._units import format_ms
from sinks.log.config import LogRetention

log = logging.getLogger(__name__)

Start = int | Literal["earliest", "latest"]


class OffsetOutOfRange(SinkError):
    """A reader asked for records that retention has deleted. ``start_offset``: the log's first."""

    def __init__(self, message: str, offset: int, start_offset: int) -> None:
        self.offset = offset
        self.start_offset = start_offset
        super().__init__(message)


def _deleted(directory: Path, offset: int, start: int) -> OffsetOutOfRange:
    return OffsetOutOfRange(
        f"log {directory}: offset {offset} is no longer in the log (retention deleted it); "
        f"the log starts at offset {start} now: read from there or from 'earliest' "
        "(`--from earliest`), knowing that the records in between are gone",
        offset,
        start,
    )


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


class LogReader:
    """Reads a log directory while a writer may be appending to it. Never modifies the log
    (named consumers write their own files under ``consumers/``).

    Offsets: every record has a global offset, from 0, in commit order. Retention deletes whole
    segments from the front: ``start_offset()`` is the first offset still in the log, and asking
    for an earlier one raises ``OffsetOutOfRange`` rather than silently skipping, unless the
    start is ``"earliest"``.
    """

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise SinkError(f"log directory {directory} does not exist")
        self.directory = directory
        self.schemas = SchemaStore(directory, writable=False)

    def start_offset(self) -> int:
        """The first offset in the log (0 until retention deletes a segment)."""
        segs = segments(self.directory)
        return segs[0][0] if segs else 0

    def end_offset(self) -> int:
        """The offset the next record written will get (one past the last record), from the
        newest segment's frame headers (cheap; a frame that fails its checksum still counts)."""
        segs = segments(self.directory)
        while segs:
            base, path = segs[-1]
            try:
                heads = frame_headers(path)
            except FileNotFoundError:  # only a deleted log loses its last segment
                segs = segments(self.directory)
                continue
            # A segment is created when the previous one rolls, named by the next offset.
            return heads[-1][0] + heads[-1][1] if heads else base
        return 0

    def offset_for_time(self, ts_ms: int) -> int:
        """The offset of the first frame written at or after ``ts_ms`` (ms since the epoch), or
        ``end_offset()`` if none is. Frame times are the writer's wall clock when it wrote them;
        segments are skipped by their first frame's time, so a clock that stepped back makes the
        answer approximate. Raises ``OffsetOutOfRange`` when retention deleted records and the
        log's first frame is newer than ``ts_ms`` (records of that time may be gone)."""
        segs = segments(self.directory)
        if not segs:
            return 0
        times = [first_frame_time(p) for _, p in segs]
        idx = 0
        for i, t in enumerate(times):
            if t is not None and t < ts_ms:
                idx = i
        if idx == 0 and segs[0][0] > 0 and times[0] is not None and times[0] > ts_ms:
            raise OffsetOutOfRange(
                f"log {self.directory}: records written before {format_ms(times[0])} (offset "
                f"{segs[0][0]}, the log's first) were deleted by retention, so the log cannot "
                f"start at {format_ms(ts_ms)}; read from 'earliest' (`--from earliest`) to get "
                "what is left",
                segs[0][0],
                segs[0][0],
            )
        end = segs[idx][0]
        for fr in self.frames(segs[idx][0]):
            if fr.timestamp_ms >= ts_ms:
                return fr.base_offset
            end = fr.base_offset + fr.count
        return end

    def _resolve(self, start: Start) -> int:
        if start == "earliest":
            return self.start_offset()
        if start == "latest":
            return self.end_offset()
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise SinkError(f"bad start offset {start!r}: use an offset >= 0, earliest or latest")
        return start

    def frames(
        self, from_offset: Start = "earliest", follow: bool = False, poll: float = 0.2
    ) -> Iterator[FrameInfo]:
        """Frames holding records at or after ``from_offset`` (and empty frames from there), in
        order. ``from_offset``: an offset, ``"earliest"`` (the log's start) or ``"latest"`` (its
        end: only what is written from now on).

        Without ``follow`` it stops at the end (an incomplete last frame, being written or torn,
        is not returned). With ``follow`` it waits for new frames until the caller stops iterating.
        Raises ``OffsetOutOfRange`` if the records wanted are deleted by retention, before or
        while reading (with ``"earliest"``, only once it has returned a frame).
        """
        earliest = from_offset == "earliest"
        offset = self._resolve(from_offset)
        want = offset  # the next offset the caller has not seen
        cur: int | None = None  # base offset of the segment being read
        pos = 0
        started = False
        expect: int | None = None  # the base offset the next frame must have
        while True:
            segs = segments(self.directory)
            if cur is None:
                if not segs:
                    if not follow:
                        return
                    time.sleep(poll)
                    continue
                if want < segs[0][0]:
                    if not (earliest and not started):
                        raise _deleted(self.directory, want, segs[0][0])
                    offset = want = segs[0][0]
                cur = max(b for b, _ in segs if b <= want)
                pos = 0
                expect = None
            idx = next((i for i, (b, _) in enumerate(segs) if b == cur), None)
            data: bytes | None = None
            if idx is not None:
                try:
                    with open(segs[idx][1], "rb") as f:
                        f.seek(pos)
                        data = f.read()
                except FileNotFoundError:
                    data = None
            if idx is None or data is None:  # deleted by retention under this reader
                if earliest and not started:
                    cur = None
                    continue
                segs = segments(self.directory)
                raise _deleted(self.directory, want, segs[0][0] if segs else want)
            path = segs[idx][1]
            at = 0
            while at < len(data):
                try:
                    fr = read_frame(data, at)
                except FrameError as e:
                    if idx != len(segs) - 1:
                        raise LogCorrupt(
                            f"log segment {path}: {e.reason} at byte {pos + at} (a closed "
                            f"segment, so not a torn write); {RECOVERY}"
                        ) from None
                    # The end of the log: a frame being written, or torn by a crash (the writer
                    # cuts it on its next open) is waited for; anything else is an error.
                    check_tail(data, e, cur if expect is None else expect, path, pos)
                    break
                fr.segment = str(path)
                if expect is not None and fr.base_offset != expect:
                    raise LogCorrupt(
                        f"log {self.directory}: offsets {expect}..{fr.base_offset - 1} are "
                        f"missing before {path.name} (a segment file removed by hand?); read "
                        f"from offset {fr.base_offset} to skip them"
                    )
                expect = fr.base_offset + fr.count
                at += fr.size
                if fr.base_offset + fr.count > offset or fr.base_offset >= offset:
                    started = True
                    want = max(want, fr.base_offset + fr.count)
                    yield fr
            pos += at
            if idx < len(segs) - 1:  # listed before the read: that segment was complete
                cur = segs[idx + 1][0]
                pos = 0
                continue
            if not follow:
                return
            time.sleep(poll)

    def records(
        self,
        from_offset: Start = "earliest",
        topic: str | None = None,
        follow: bool = False,
        since: int | None = None,
    ) -> Iterator[LogRecord]:
        """Records at or after ``from_offset`` (see ``frames``), or, given ``since`` (ms since
        the epoch), from the first frame written at or after that time."""
        start: Start = from_offset if since is None else self.offset_for_time(since)
        first = self._resolve(start) if isinstance(start, int) else 0
        for fr in self.frames(start, follow):
            if since is not None:
                if fr.timestamp_ms < since:  # a time still ahead when following began
                    continue
                since = None
            for r in records_of(fr):
                if r.offset < first or (topic is not None and r.topic != topic):
                    continue
                yield r

    def consumer(self, name: str) -> Consumer:
        """The named consumer ``name`` (created by its first ``commit``); close it when done."""
        return Consumer(self, name)

    def consumers(self) -> list[dict[str, Any]]:
        """Every named consumer: name, committed offset, its lag in records, when it committed."""
        end = self.end_offset()
        start = self.start_offset()
        out = []
        for s in read_states(self.directory):
            out.append(_consumer_info(s, start, end))
        return out

    def info(self) -> dict[str, Any]:
        """Segments, offsets, the last source position, consumers and schema subjects.

        Closed segments are summarised from their frame headers (cheap, checksums not
        verified: reading verifies them); the last one is verified frame by frame.
        """
        segs = segments(self.directory)
        seg_info: list[dict[str, Any]] = []
        first = last = None
        frames = 0
        position = None
        last_ts = None
        end = 0
        for i, (base, path) in enumerate(segs):
            tail_error = None
            try:
                size = path.stat().st_size
                if i < len(segs) - 1:
                    heads = frame_headers(path)
                else:
                    data = path.read_bytes()
                    fr, err = scan(data)
                    heads = [(x.base_offset, x.count, x.timestamp_ms) for x in fr]
                    if err is not None:
                        check_tail(data, err, heads[-1][0] + heads[-1][1] if heads else base, path)
                        tail_error = (
                            f"{err}: an incomplete last frame (being written, or torn by a "
                            "crash and cut when the writer next opens the log)"
                        )
                    if fr:
                        position = fr[-1].position
                    elif i > 0:  # an empty newest segment: the position is in the one before
                        prev, _ = scan(segs[i - 1][1].read_bytes())
                        position = prev[-1].position if prev else None
            except FileNotFoundError:
                continue  # deleted by retention since the listing
            seg_info.append(
                {
                    "file": path.name,
                    "bytes": size,
                    "frames": len(heads),
                    "first_write": format_ms(heads[0][2]) if heads else None,
                    **({"tail_error": tail_error} if tail_error else {}),
                }
            )
            frames += len(heads)
            end = heads[-1][0] + heads[-1][1] if heads else base
            for fbase, count, ts in heads:
                if count:
                    first = fbase if first is None else first
                    last = fbase + count - 1
                last_ts = ts
        start = int(seg_info[0]["file"][:20]) if seg_info else 0
        return {
            "path": str(self.directory),
            "segments": seg_info,
            "bytes": sum(int(s["bytes"]) for s in seg_info),
            "frames": frames,
            "start_offset": start,
            "end_offset": end,
            "first_offset": first,
            "last_offset": last,
            "records": 0 if first is None or last is None else last - first + 1,
            "last_position": position,
            "last_write_ms": last_ts,
            "consumers": [_consumer_info(s, start, end) for s in read_states(self.directory)],
            "subjects": self.schemas.subjects(),
        }


def _consumer_info(s: ConsumerState, start: int, end: int) -> dict[str, Any]:
    return {
        "name": s.name,
        "committed": s.offset,
        "lag": None if s.offset is None else max(0, end - s.offset),
        "behind_start": s.offset is not None and s.offset < start,
        "committed_at": format_ms(s.committed_at_ms) if s.committed_at_ms else None,
    }
