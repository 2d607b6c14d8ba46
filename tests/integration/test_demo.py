"""`make demo` works and shows captured events (the README's first command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_events() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scratch.demo"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "shop.public.customers  op=c" in out
    assert "shop.public.orders     op=u" in out
    assert "shop.public.orders     op=d" in out
    assert out.count("BEGIN") == 3 and out.count("END ") == 3
