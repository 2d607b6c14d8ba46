"""`make demo` works and shows captured events (the README's first command)."""

from __future__ import annotations

import os
import shutil
import socket
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


def _clusters() -> dict[str, str]:
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
    return {f"{f[0]}/{f[1]}": f[3] for f in (line.split() for line in out.stdout.splitlines())}


def test_make_demo_leaves_another_postgres_cluster_running(tmp_path: Path) -> None:
    """A developer's own Debian cluster, running on the host, is still running after `make demo`
    (its setup used to stop every online cluster)."""
    if os.geteuid() != 0 or shutil.which("pg_createcluster") is None:
        pytest.skip("needs root and Debian's postgresql-common to create a cluster of the host")
    version = sorted(p.name for p in Path("/usr/lib/postgresql").iterdir())[-1]
    name = f"cdc_guard_{os.getpid()}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        ["pg_createcluster", version, name, "-p", str(port), "--start"],
        check=True,
        capture_output=True,
    )
    try:
        assert _clusters().get(f"{version}/{name}") == "online"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("MAKEFLAGS", None)
        proc = subprocess.run(
            ["make", "demo"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "shop.public.customers  op=c" in proc.stdout
        assert _clusters().get(f"{version}/{name}") == "online", "make demo stopped the cluster"
    finally:
        subprocess.run(
            ["pg_dropcluster", "--stop", version, name], check=False, capture_output=True
        )
