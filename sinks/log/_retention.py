"""Retention of the built-in log: which whole, closed segments to delete, oldest first.

Rules, applied by the writer at open, after each roll to a new segment, and (with ``max_age``)
at most every ``check_interval`` while it writes:

- Only whole segments are deleted, oldest first, and never the active (newest) segment, nor the
  newest segment holding a frame (the writer resumes from the last frame's position).
- By age: segment *i* goes once the first frame of segment *i + 1* was written more than
  ``max_age`` ago (every frame of *i* is older than that frame).
- By size: the oldest go while all segments together are larger than ``max_bytes``.
- With ``keep_unconsumed``, a segment goes only if every named consumer has committed past its
  last record; a consumer file that cannot be read holds everything.

Crash safety: one unlink at a time, oldest first, each followed by an fsync of the directory, so
a crash leaves the segments contiguous from a later start; a file already gone is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from cdc.checkpoint import fsync_dir
from cdc.sinks.log._format import first_frame_time, segments
from cdc.sinks.log._offsets import read_states
from cdc.sinks.log.config import LogRetention

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RetentionResult:
    deleted: list[str] = field(default_factory=list)  # segment file names, oldest first
    start_offset: int = 0  # the log's first offset afterwards
    total_bytes: int = 0  # of all segments afterwards
    held_bytes: int = 0  # would have been deleted but a named consumer has not committed them
    held_by: list[str] = field(default_factory=list)  # those consumers, "name@offset"


def apply(
    directory: Path,
    retention: LogRetention,
    now_ms: int,
    first_times: dict[int, int],
) -> RetentionResult:
    """Delete what ``retention`` allows. ``first_times`` caches first-frame times by base offset."""
    segs = []
    for base, path in segments(directory):
        try:
            segs.append((base, path, path.stat().st_size))
        except FileNotFoundError:
            continue
    res = RetentionResult()
    if not segs:
        return res
    total = sum(size for _, _, size in segs)
    keep_from = len(segs) - 1
    if segs[-1][2] == 0 and keep_from > 0:
        keep_from -= 1  # an empty active segment: the resume position is in the one before
    min_committed: int | None = None
    holders: list[str] = []
    if retention.keep_unconsumed:
        states = read_states(directory)
        if states:
            offsets = [-1 if s.offset is None else s.offset for s in states]
            min_committed = min(offsets)
            holders = [
                f"{s.name}@{'unreadable' if s.offset is None else s.offset}"
                for s in states
                if (-1 if s.offset is None else s.offset) == min_committed
            ]
    cutoff = None if retention.max_age is None else now_ms - int(retention.max_age * 1000)
    first = 0
    holding = False
    for i in range(keep_from):
        base, path, size = segs[i]
        next_base, next_path, _ = segs[i + 1]
        by_size = retention.max_bytes is not None and total > retention.max_bytes
        by_age = False
        if cutoff is not None and not by_size:
            ts = first_times.get(next_base)
            if ts is None:
                ts = first_frame_time(next_path)
                if ts is not None:
                    first_times[next_base] = ts
            by_age = ts is not None and ts < cutoff
        if not (by_size or by_age):
            break
        if holding or (min_committed is not None and next_base > min_committed):
            holding = True  # the rest only counts what the consumers hold
            res.held_bytes += size
            total -= size
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fsync_dir(directory)
        first_times.pop(base, None)
        res.deleted.append(path.name)
        total -= size
        first = i + 1
    res.start_offset = segs[first][0]
    res.total_bytes = sum(size for _, _, size in segs[first:])
    if res.held_bytes:
        res.held_by = holders
    return res
