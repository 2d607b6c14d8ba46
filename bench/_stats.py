"""Small measurements: a process's CPU time and peak RSS, rates from durable timestamps."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcStats:
    cpu_s: float
    peak_rss_mb: float | None


def proc_stats(pid: int) -> ProcStats | None:
    """CPU seconds (user + system) and peak RSS (VmHWM) of a live process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    hwm_kb = 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            hwm_kb = int(line.split()[1])
    if hwm_kb == 0:  # a zombie: its memory is gone already
        return None
    return ProcStats(cpu, hwm_kb / 1024)


def rate(stamps: Sequence[tuple[int, int]]) -> tuple[float | None, float]:
    """Rows/s from the first to the last event durable in the sink, and that span in seconds.

    ``stamps`` are (durable time in ms, rows made durable at that time), in order. The rows made
    durable at the first instant are not counted: the span starts when they were already there.
    None when every row became durable within one millisecond tick (too small to time).
    """
    if not stamps:
        return None, 0.0
    first = stamps[0][0]
    last = stamps[-1][0]
    span = (last - first) / 1000
    if span <= 0:
        return None, 0.0
    after_first = sum(n for t, n in stamps if t > first)
    return after_first / span, span


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """min/median/max of the values that were measured (None ones skipped)."""
    got = [v for v in values if v is not None]
    if not got:
        return {"min": None, "median": None, "max": None}
    return {"min": min(got), "median": statistics.median(got), "max": max(got)}
