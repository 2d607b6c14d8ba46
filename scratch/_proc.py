"""Process handling shared by the launchers of long-running servers (MariaDB, NATS, Kafka, ...)."""

from __future__ import annotations

import atexit
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from scratch._common import is_root


def popen_as(
    user: str | None,
    argv: Sequence[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the background with stdout and stderr appended to ``log``.

    When we are root and ``user`` is given, the child switches to ``user`` itself (no runuser or
    su in between), so the returned process is the server's and signals reach it directly.
    """
    with open(log, "ab") as out:
        if user is not None and is_root():
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                user=user,
                group=user,
                extra_groups=[],
            )
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL it if it is still there after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL ``proc`` (a crash) and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.kill()
    proc.wait()


class Reaper:
    """Kills the processes it was given if the interpreter exits while they still run.

    A test that fails half-way should not leave a mariadbd or a java behind; an orderly stop()
    removes the process from here first.
    """

    def __init__(self) -> None:
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._registered = False

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        if not self._registered:
            atexit.register(self._reap)
            self._registered = True
        self._procs[proc.pid] = proc

    def discard(self, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None:
            self._procs.pop(proc.pid, None)

    def _reap(self) -> None:
        for proc in list(self._procs.values()):
            terminate(proc, 10)
        self._procs.clear()


REAPER = Reaper()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
