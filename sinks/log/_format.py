"""On-disk format of the built-in log.

A log directory holds segment files named by the offset of their first record
(``00000000000000000000.seg``) and a schema store (``schemas.jsonl``); the writer holds an flock
on the directory itself.
A segment is a sequence of frames; a frame is one durable batch:

    header  (32 bytes, big-endian)
        magic        4s   b"CDCF"
        crc          u32  CRC-32 of everything after this field (rest of header + payload)
        length       u32  payload length in bytes
        base_offset  u64  offset of the frame's first record
        count        u32  number of records
        timestamp    u64  milliseconds since the epoch when the frame was written
    payload
        position     u32 length + JSON   source position after the last record of this frame
        prev         u32 length + JSON   position of the previous frame ("null" for none)
        records      ``count`` times:
            timestamp  u64 ms (commit time), topic u16+utf8, key i32+bytes (-1: null),
            value i32+bytes (-1: null, a tombstone), event id u16+utf8,
            headers u16 count, each name u16+utf8 and value u32+bytes

The position travels inside the frame it covers, so one fsync makes the data and the checkpoint
durable together: delivery into the log is exactly-once across crashes.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdc.errors import LogCorrupt, SinkError
from cdc.model import EncodedRecord, Position

MAGIC = b"CDCF"
HEADER = struct.Struct(">4sIIQIQ")
HEADER_SIZE = HEADER.size
SEGMENT_SUFFIX = ".seg"
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_REC = struct.Struct(">QH")
_SEGMENT = re.compile(r"\d{20}" + re.escape(SEGMENT_SUFFIX))
RECOVERY = "see 'Recovering a damaged log' in docs/log.md"
# The smallest record: timestamp, topic length, key and value lengths, event id length, header
# count (all empty); and the smallest payload holds two position lengths besides the records.
_MIN_RECORD = _REC.size + 4 + 4 + 2 + 2


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}{SEGMENT_SUFFIX}"


def segments(directory: Path) -> list[tuple[int, Path]]:
    """Segment files of a log directory as (base offset, path), in offset order (none if the
    directory is gone). Only names the writer gives (20 digits + ``.seg``) count; raises
    LogCorrupt for such a name that is not a file, which no reader or writer could use."""
    out = []
    try:
        with os.scandir(directory) as it:
            for e in it:
                if not _SEGMENT.fullmatch(e.name):
                    continue
                if not e.is_file():  # d_type from the listing: no stat per segment
                    raise LogCorrupt(
                        f"log {directory}: {e.name} is named like a segment but is not a file "
                        "(a directory?); move it out of the log directory"
                    )
                out.append((int(e.name[:20]), Path(e.path)))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise SinkError(f"cannot list the log directory {directory}: {e.strerror}") from None
    return sorted(out)


def first_frame_time(path: Path) -> int | None:
    """``timestamp_ms`` of a segment's first frame from its header (None: no complete header).

    The header is not checksummed on its own; this is for skipping segments, not for trusting.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_SIZE)
    except FileNotFoundError:
        return None
    if len(head) < HEADER_SIZE:
        return None
    magic, _crc, _length, _base, _count, ts = HEADER.unpack(head)
    return int(ts) if magic == MAGIC else None


def frame_headers(path: Path) -> list[tuple[int, int, int]]:
    """(base offset, count, timestamp_ms) of each frame of a segment, from the headers alone
    (no checksum verified; stops at an incomplete frame or bad magic). Cheap: no payload read."""
    out = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        at = 0
        while at + HEADER_SIZE <= size:
            f.seek(at)
            head = f.read(HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                break
            magic, _crc, length, base, count, ts = HEADER.unpack(head)
            if magic != MAGIC or at + HEADER_SIZE + length > size:
                break
            out.append((base, count, ts))
            at += HEADER_SIZE + length
    return out


@dataclass(slots=True)
class FrameInfo:
    """One frame as read back (``payload`` is parsed into records by ``records_of``)."""

    base_offset: int
    count: int
    timestamp_ms: int
    position: Position | None
    prev: Position | None
    file_offset: int  # where the frame starts in its segment
    size: int  # header + payload bytes
    payload: bytes
    segment: str = ""  # the segment file's path, for messages (set by readers that know it)


@dataclass(slots=True)
class LogRecord:
    """One record as read back: its global offset and the bytes the encoder wrote."""

    offset: int
    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    event_id: str
    headers: tuple[tuple[str, bytes], ...]


def encode_frame(
    base_offset: int,
    records: list[EncodedRecord],
    position: Position,
    prev: Position | None,
    now_ms: int,
) -> bytes:
    parts: list[bytes] = []
    pos = json.dumps(position, separators=(",", ":")).encode()
    prv = json.dumps(prev, separators=(",", ":")).encode()
    parts += [_U32.pack(len(pos)), pos, _U32.pack(len(prv)), prv]
    for r in records:
        topic = r.topic.encode()
        eid = r.event_id.encode()
        parts.append(_REC.pack(r.timestamp_ms, len(topic)))
        parts.append(topic)
        if r.key is None:
            parts.append(_I32.pack(-1))
        else:
            parts += [_I32.pack(len(r.key)), r.key]
        if r.value is None:
            parts.append(_I32.pack(-1))
        else:
            parts += [_I32.pack(len(r.value)), r.value]
        parts += [_U16.pack(len(eid)), eid, _U16.pack(len(r.headers))]
        for name, hv in r.headers:
            n = name.encode()
            parts += [_U16.pack(len(n)), n, _U32.pack(len(hv)), hv]
    payload = b"".join(parts)
    rest = struct.pack(">IQIQ", len(payload), base_offset, len(records), now_ms)
    crc = zlib.crc32(payload, zlib.crc32(rest))
    return MAGIC + _U32.pack(crc) + rest + payload


class FrameError(Exception):
    """A frame that is incomplete or fails its checksum (``reason`` says which). ``intact``: it
    passed its checksum but cannot be parsed, so no crash made it (a crafted or foreign file)."""

    def __init__(self, reason: str, file_offset: int, intact: bool = False) -> None:
        self.reason = reason
        self.file_offset = file_offset
        self.intact = intact
        super().__init__(f"{reason} at byte {file_offset}")


def read_frame(buf: bytes | memoryview, at: int) -> FrameInfo:
    """Parse and verify the frame starting at ``at`` in ``buf``; raise FrameError if bad."""
    if len(buf) - at < HEADER_SIZE:
        raise FrameError("incomplete frame header", at)
    magic, crc, length, base, count, ts = HEADER.unpack_from(buf, at)
    if magic != MAGIC:
        raise FrameError("bad frame magic", at)
    end = at + HEADER_SIZE + length
    if end > len(buf):
        raise FrameError("incomplete frame", at)
    payload = bytes(buf[at + HEADER_SIZE : end])
    if zlib.crc32(payload, zlib.crc32(bytes(buf[at + 8 : at + HEADER_SIZE]))) != crc:
        raise FrameError("frame checksum mismatch", at)
    try:
        (plen,) = _U32.unpack_from(payload, 0)
        position = json.loads(payload[4 : 4 + plen])
        (qlen,) = _U32.unpack_from(payload, 4 + plen)
        prev = json.loads(payload[8 + plen : 8 + plen + qlen])
    except (struct.error, ValueError):
        raise FrameError("bad frame payload (positions unreadable)", at, intact=True) from None
    return FrameInfo(base, count, ts, position, prev, at, end - at, payload)


def records_of(frame: FrameInfo) -> Iterator[LogRecord]:
    """The records of a frame read by ``read_frame``, in offset order. Raises LogCorrupt naming
    the frame if the payload does not hold exactly ``count`` records (it passed its checksum, so
    it was written that way: a crafted or foreign file), before yielding any of them."""
    try:
        out, end = _parse_records(frame)
    except (struct.error, UnicodeDecodeError) as e:
        raise _bad_frame(frame, f"record payload unreadable ({e})") from None
    if end != len(frame.payload):
        raise _bad_frame(
            frame, f"{len(frame.payload) - end} bytes left after its {frame.count} records"
        )
    return iter(out)


def _bad_frame(frame: FrameInfo, why: str) -> LogCorrupt:
    where = f"log segment {frame.segment}" if frame.segment else "log frame"
    return LogCorrupt(
        f"{where} at byte {frame.file_offset} (offsets from {frame.base_offset}, {frame.count} "
        f"records): {why}; the frame passed its checksum, so it was written like this (not by "
        f"a crash): a crafted or foreign file? {RECOVERY}"
    )


def _parse_records(frame: FrameInfo) -> tuple[list[LogRecord], int]:
    p = frame.payload
    out: list[LogRecord] = []
    (plen,) = _U32.unpack_from(p, 0)
    i = 4 + plen
    (qlen,) = _U32.unpack_from(p, i)
    i += 4 + qlen
    for n in range(frame.count):
        ts, tlen = _REC.unpack_from(p, i)
        i += _REC.size
        topic = p[i : i + tlen].decode()
        i += tlen
        (klen,) = _I32.unpack_from(p, i)
        i += 4
        key: bytes | None = None
        if klen >= 0:
            key = p[i : i + klen]
            i += klen
        (vlen,) = _I32.unpack_from(p, i)
        i += 4
        value: bytes | None = None
        if vlen >= 0:
            value = p[i : i + vlen]
            i += vlen
        (elen,) = _U16.unpack_from(p, i)
        i += 2
        eid = p[i : i + elen].decode()
        i += elen
        (nh,) = _U16.unpack_from(p, i)
        i += 2
        headers: list[tuple[str, bytes]] = []
        for _ in range(nh):
            (hn,) = _U16.unpack_from(p, i)
            i += 2
            hname = p[i : i + hn].decode()
            i += hn
            (hl,) = _U32.unpack_from(p, i)
            i += 4
            headers.append((hname, p[i : i + hl]))
            i += hl
        if i > len(p):  # a slice past the end is short, not an error: check once per record
            raise struct.error(f"record {n} runs past the payload's end")
        out.append(LogRecord(frame.base_offset + n, topic, key, value, ts, eid, tuple(headers)))
    return out, i


def scan(buf: bytes | memoryview) -> tuple[list[FrameInfo], FrameError | None]:
    """All valid frames from the start of a segment, and the error that ended the scan, if any."""
    frames: list[FrameInfo] = []
    at = 0
    while at < len(buf):
        try:
            f = read_frame(buf, at)
        except FrameError as e:
            return frames, e
        frames.append(f)
        at += f.size
    return frames, None


def check_tail(buf: bytes, err: FrameError, expect: int, segment: Path, base_at: int = 0) -> None:
    """Raise LogCorrupt unless ``buf`` from ``err.file_offset`` to its end can be a torn last
    frame: what a crash while appending one frame leaves behind.

    The writer appends one frame at a time and fsyncs each before writing the next, so a crash
    damages only the frame being written: a prefix of it, maybe with zeros where the file grew
    but the data did not reach the disk. So the tail is torn only if it starts like a frame (the
    magic or zeros), holds nothing but zeros past the end its own header declares, did not pass
    its checksum, and no valid frame (checksum good, base offset not before ``expect``, the end
    of the last good frame) follows it. Anything else is damage in the middle of the log or a
    file that is not ours: nothing may be cut. ``base_at``: where ``buf`` starts in the segment.
    """
    at = err.file_offset
    where = f"log segment {segment}: {err.reason} at byte {base_at + at}"
    if err.intact:
        raise LogCorrupt(f"{where}: it passed its checksum, so no crash made it; {RECOVERY}")
    j = at + 1
    while (j := buf.find(MAGIC, j)) >= 0:
        fr = None
        if j + HEADER_SIZE <= len(buf):
            _, _, length, base, count, _ = HEADER.unpack_from(buf, j)
            # A frame of this log after the damage starts at or after the offset where the good
            # frames end, and no further on than the records the bytes between could hold. The
            # checksum is computed only for such candidates.
            if expect <= base <= expect + (j - at) // _MIN_RECORD and length >= 8 + (
                _MIN_RECORD * count
            ):
                try:
                    fr = read_frame(buf, j)
                except FrameError:
                    fr = None
        if fr is not None:
            raise LogCorrupt(
                f"{where}, but a valid frame (offset {fr.base_offset}) follows at byte "
                f"{base_at + j}: the log is damaged in its middle (a crash only tears the last "
                f"frame), so nothing was cut; stop the daemon, keep a copy of the directory, "
                f"{RECOVERY}"
            )
        j += 1
    head = buf[at : at + 4]
    if not MAGIC.startswith(head) and head.count(0) != len(head):
        if at + base_at == 0:
            raise LogCorrupt(
                f"log segment {segment} does not start with a frame of a cdc log (it starts "
                f"with {head!r}): a file that is not ours? nothing was changed; move it out of "
                "the log directory"
            )
        raise LogCorrupt(
            f"{where}: the bytes there ({head!r}) start no frame, so a crash did not leave them "
            f"(nothing was cut); stop the daemon, keep a copy of the directory, {RECOVERY}"
        )
    if head == MAGIC and len(buf) - at >= HEADER_SIZE:
        _, _, length, _, count, _ = HEADER.unpack_from(buf, at)
        if length < 8 + _MIN_RECORD * count:
            raise LogCorrupt(
                f"{where}: its header is impossible ({count} records cannot fit in {length} "
                f"bytes), so no writer of ours wrote it (nothing was cut); {RECOVERY}"
            )
        end = at + HEADER_SIZE + length
        extra = len(buf) - end
        if extra > 0 and buf.count(0, end) != extra:
            raise LogCorrupt(
                f"{where}: {extra} bytes follow past the end that frame declares, so a crash did "
                f"not leave them (nothing was cut); stop the daemon, keep a copy of the "
                f"directory, {RECOVERY}"
            )


def dumps_position(p: Any) -> str:
    return json.dumps(p, separators=(",", ":"))
