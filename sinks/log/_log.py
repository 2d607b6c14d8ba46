"""Writer and reader of the built-in log (format in ``_format``)."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cdc.checkpoint import fsync_dir
from cdc.errors import LogCorrupt, SinkError
from cdc.model import EncodedRecord, Position
from sinks.log._format import (
    SEGMENT_SUFFIX,
    FrameError,
    FrameInfo,
    LogRecord,
    encode_frame,
    read_frame,
    records_of,
    scan,
    segment_name,
)
from sinks.log._schemas import SchemaStore

log = logging.getLogger(__name__)

LOCK_FILE = ".writer.lock"


def segments(directory: Path) -> list[tuple[int, Path]]:
    """Segment files of a log directory as (base offset, path), in offset order."""
    out = []
    for p in directory.glob("*" + SEGMENT_SUFFIX):
        try:
            out.append((int(p.name[: -len(SEGMENT_SUFFIX)]), p))
        except ValueError:
            continue
    return sorted(out)


class LogWriter:
    """Appends frames to a log directory; one writer per directory (enforced by a lock).

    On open, the last segment is verified frame by frame and cut at the first incomplete or
    corrupt frame: such a frame was never acknowledged to the source as durable (see
    ``acknowledgeable``), so the source sends its changes again.
    """

    def __init__(self, directory: Path, *, segment_bytes: int = 64 << 20, fsync: bool = True):
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(directory / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SinkError(
                f"log {directory} is in use by another writer; "
                "stop the other daemon or point this pipeline at another path"
            ) from None
        self.schemas = SchemaStore(directory, writable=True)
        self.next_offset = 0
        self.position: Position | None = None
        self.prev: Position | None = None
        self.truncated: str | None = None
        self._file: Any = None
        self._open_tail()

    def _open_tail(self) -> None:
        segs = segments(self.directory)
        if not segs:
            self._new_segment(0)
            return
        base, path = segs[-1]
        with open(path, "rb") as f:
            data = f.read()
        frames, err = scan(data)
        if err is not None:
            dropped = len(data) - err.file_offset
            self.truncated = f"{err.reason} in {path.name} at byte {err.file_offset}"
            log.warning(
                "log %s: %s; dropping the last %d bytes (changes they held were never "
                "acknowledged to the source and will be read again)",
                self.directory,
                self.truncated,
                dropped,
            )
            with open(path, "r+b") as f:
                f.truncate(err.file_offset)
                os.fsync(f.fileno())
        last: FrameInfo | None = frames[-1] if frames else None
        if last is None and len(segs) > 1:
            # The newest segment is empty: the tail is the previous segment's last frame.
            with open(segs[-2][1], "rb") as f:
                prev_frames, perr = scan(f.read())
            if perr is not None:
                raise LogCorrupt(f"log {self.directory}: {perr} in {segs[-2][1].name}")
            last = prev_frames[-1] if prev_frames else None
        if last is not None:
            self.next_offset = last.base_offset + last.count
            self.position, self.prev = last.position, last.prev
        else:
            self.next_offset = base
        self._file = open(path, "ab")

    def _new_segment(self, base: int) -> None:
        if self._file is not None:
            self._file.close()
        path = self.directory / segment_name(base)
        self._file = open(path, "ab")
        fsync_dir(self.directory)

    def append(self, records: list[EncodedRecord], position: Position) -> int:
        """Write one frame holding ``records`` and ``position``; durable when this returns.

        Returns the offset the next record will get.
        """
        if self._file.tell() >= self.segment_bytes:
            self._new_segment(self.next_offset)
        data = encode_frame(
            self.next_offset, records, position, self.position, int(time.time() * 1000)
        )
        self._file.write(data)
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self.next_offset += len(records)
        self.prev, self.position = self.position, position
        return self.next_offset

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


class LogReader:
    """Reads a log directory while a writer may be appending to it. Never modifies it."""

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise SinkError(f"log directory {directory} does not exist")
        self.directory = directory
        self.schemas = SchemaStore(directory, writable=False)

    def frames(
        self, from_offset: int = 0, follow: bool = False, poll: float = 0.2
    ) -> Iterator[FrameInfo]:
        """Frames holding records at or after ``from_offset``, in order.

        Without ``follow`` it stops at the end (an incomplete last frame, being written or torn,
        is not returned). With ``follow`` it waits for new frames until the caller stops iterating.
        """
        segs = segments(self.directory)
        idx = 0
        for i, (base, _) in enumerate(segs):
            if base <= from_offset:
                idx = i
        pos = 0
        while True:
            segs = segments(self.directory)
            if idx >= len(segs):
                if not follow:
                    return
                time.sleep(poll)
                continue
            path = segs[idx][1]
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
            at = 0
            while at < len(data):
                try:
                    fr = read_frame(data, at)
                except FrameError as e:
                    last_segment = idx == len(segs) - 1
                    if not last_segment:
                        raise LogCorrupt(
                            f"log {self.directory}: {e.reason} in {path.name} at byte {pos + at}"
                        ) from None
                    break  # an incomplete tail: being written, or torn and cut on next open
                at += fr.size
                if fr.base_offset + fr.count > from_offset:
                    yield fr
            pos += at
            if idx < len(segs) - 1:  # listed before the read: that segment was complete
                idx += 1
                pos = 0
                continue
            if not follow:
                return
            time.sleep(poll)

    def records(
        self, from_offset: int = 0, topic: str | None = None, follow: bool = False
    ) -> Iterator[LogRecord]:
        for fr in self.frames(from_offset, follow):
            for r in records_of(fr):
                if r.offset < from_offset or (topic is not None and r.topic != topic):
                    continue
                yield r

    def info(self) -> dict[str, Any]:
        segs = segments(self.directory)
        seg_info = []
        first = last = None
        frames = 0
        position = None
        last_ts = None
        for _base, path in segs:
            with open(path, "rb") as f:
                fr, err = scan(f.read())
            seg_info.append(
                {
                    "file": path.name,
                    "bytes": path.stat().st_size,
                    "frames": len(fr),
                    **({"tail_error": str(err)} if err else {}),
                }
            )
            frames += len(fr)
            for x in fr:
                if x.count:
                    first = x.base_offset if first is None else first
                    last = x.base_offset + x.count - 1
                position = x.position
                last_ts = x.timestamp_ms
        return {
            "path": str(self.directory),
            "segments": seg_info,
            "frames": frames,
            "first_offset": first,
            "last_offset": last,
            "records": 0 if first is None or last is None else last - first + 1,
            "last_position": position,
            "last_write_ms": last_ts,
            "subjects": self.schemas.subjects(),
        }
