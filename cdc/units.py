"""Durations, sizes and points in time as people write them in a config or on a command line.

One parser of each for the whole configuration: ``Duration`` (seconds) and ``Size`` (bytes) are
the field types every config model uses, so a value valid in one place is valid in all.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_BYTES.update({"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40})

DURATION_HELP = "a number of seconds or a duration such as 90s, 10m, 12h, 7d, 2w, 1d12h"
SIZE_HELP = (
    "a number of bytes or a size such as 500MB, 10GiB "
    "(KB/MB/GB/TB: powers of 1000; KiB/MiB/GiB/TiB: of 1024)"
)


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a non-negative number, or units summed ("1h30m"); ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}: use {DURATION_HELP}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"bad duration {value!r}: must not be negative")
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _SECONDS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"bad duration {value!r}: use {DURATION_HELP}")
    return total


def parse_size(value: object) -> int:
    """Bytes in ``value``: a non-negative integer, or a number with a unit; ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError(f"bad size {value!r}: use {SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad size {value!r}: must not be negative")
        return value
    m = _SIZE.fullmatch(str(value).strip())
    if m is None:
        raise ValueError(f"bad size {value!r}: use {SIZE_HELP}")
    return int(float(m.group(1)) * _BYTES[(m.group(2) or "b").lower()])


def parse_since(text: str, now: float | None = None) -> int:
    """Milliseconds since the epoch of ``text``: an ISO-8601 time (a time without an offset is
    UTC) or a duration back from ``now`` ("10m": ten minutes ago). ValueError if neither."""
    t = text.strip()
    try:
        seconds = parse_duration(t)
    except ValueError:
        pass
    else:
        return int(((time.time() if now is None else now) - seconds) * 1000)
    try:
        dt = datetime.fromisoformat(t[:-1] + "+00:00" if t[-1:] in "Zz" and t else t)
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: use an ISO-8601 time such as 2026-11-27T10:00:00Z "
            "(UTC when it has no offset) or a duration back from now such as 90s, 10m, 2h, 7d"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def format_ms(ms: int | None) -> str:
    """``ms`` since the epoch as an ISO-8601 UTC time with milliseconds ("-" for None)."""
    if ms is None:
        return "-"
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A config field in seconds: a number, or a string such as ``90s``, ``10m``, ``1h30m``, ``2w``."""

Size = Annotated[int, BeforeValidator(parse_size)]
"""A config field in bytes: an integer, or a string such as ``500MB``, ``64MiB``."""
