"""Hot spots from a py-spy raw (collapsed stacks) report: self and total share per function."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")


def _frame(f: str) -> str:
    f = _LINE.sub(")", f.strip())
    # Long absolute paths to site-packages or the interpreter are noise in a report.
    return re.sub(r"\(/[^()]*/(site-packages|lib/python3\.\d+)/", r"(", f)


def hot_spots(path: Path, top: int = 10) -> list[dict[str, Any]]:
    self_n: Counter[str] = Counter()
    total_n: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += n
        self_n[frames[-1]] += n
        for f in set(frames):
            total_n[f] += n
    if not samples:
        return []
    return [
        {
            "function": f,
            "self_pct": 100 * n / samples,
            "total_pct": 100 * total_n[f] / samples,
        }
        for f, n in self_n.most_common(top)
    ]
