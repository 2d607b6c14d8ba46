"""Reader of the built-in log (format in ``_format``, writer in ``_writer``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from cdc.errors import LogCorrupt, SinkError
from cdc.sinks.log._consumers import Consumer
from cdc.sinks.log._format import (
    RECOVERY,
    FrameError,
    FrameInfo,
    LogRecord,
    check_tail,
    first_frame_time,
    frame_headers,
    read_frame,
    records_of,
    scan,
    segments,
)
from cdc.sinks.log._offsets import ConsumerState, read_states
from cdc.sinks.log._schemas import SchemaStore
from cdc.units import format_ms

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
        self,
        from_offset: Start = "earliest",
        follow: bool = False,
        poll: float = 0.2,
        wait: Callable[[float], object] = time.sleep,
    ) -> Iterator[FrameInfo]:
        """Frames holding records at or after ``from_offset`` (and empty frames from there), in
        order. ``from_offset``: an offset, ``"earliest"`` (the log's start) or ``"latest"`` (its
        end: only what is written from now on).

        Without ``follow`` it stops at the end (an incomplete last frame, being written or torn,
        is not returned). With ``follow`` it waits for new frames until the caller stops iterating,
        calling ``wait(poll)`` each time it has caught up; a true result ends the iteration (a
        source passes its stop event's ``wait``), and so does an exception it raises (a server's
        wait sends keep-alives and raises when the client went away).
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
                    if not follow or wait(poll):
                        return
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
                except OSError as e:
                    raise SinkError(
                        f"cannot read log segment {segs[idx][1]}: {e.strerror}"
                    ) from None
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
            if not follow or wait(poll):
                return

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
