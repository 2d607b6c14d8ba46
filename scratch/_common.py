"""Helpers shared by the scratch-server launchers."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def free_port(other_than: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (and is not ``other_than``)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != other_than:
            return port


def scratch_dir(base_dir: Path | None, prefix: str) -> Path:
    """``base_dir``, created if missing, or else a new temporary directory named ``prefix...``."""
    if base_dir is None:
        base_dir = Path(tempfile.mkdtemp(prefix=prefix))
    base_dir.mkdir(parents=True, exist_ok=True)
    return base_dir


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until true; raise TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def is_root() -> bool:
    return os.geteuid() == 0


def chown_to(path: Path, user: str) -> None:
    """Give ``path`` (recursively) to ``user``; used when root must hand a directory to a server."""
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def run_as(
    user: str | None, argv: Sequence[str], **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` (runuser when we are root); raise with its output on failure."""
    cmd = list(argv)
    if user is not None and is_root():
        cmd = ["runuser", "-u", user, "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc  # type: ignore[no-any-return]


def find_binary(name: str, candidates: Sequence[str] = ()) -> str:
    """Locate ``name`` on PATH or in ``candidates``; raise with an install hint otherwise."""
    for c in candidates:
        if Path(c).is_file():
            return c
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found; run .ci/setup (or install it) first")
