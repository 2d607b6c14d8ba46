"""Process handling shared by the launchers of long-running servers (MariaDB, NATS, Kafka, ...).

``ServerProcess`` is their common start / wait-until-ready / stop / kill; the functions below are
its parts, for a launcher that needs them on their own.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from scratch._common import is_root, wait_for


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
    as_user = user is not None and is_root()
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            user=user if as_user else None,
            group=user if as_user else None,
            extra_groups=[] if as_user else None,
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


class ServerProcess:
    """One long-running server process of a launcher: start it and wait until it serves, stop it,
    kill it, and kill it at interpreter exit if it is still running then.

    A subclass (a dataclass of the server's ports and paths) says what to run (``_argv``, and
    ``_user``/``_output``/``_cwd``), when it is ready (``_ready``) and which logs explain an early
    exit (``_logs``). ``start()`` raises RuntimeError with the tails of those logs if the process
    exits before it is ready, TimeoutError if it is not ready within ``startup_timeout``; either
    way nothing is left running.
    """

    process_name: ClassVar[str]  # as messages name it: "<name> exited with 1; ..."
    startup_timeout: ClassVar[float]
    shutdown_timeout: ClassVar[float]  # how long stop() waits after SIGTERM before SIGKILL

    _proc: subprocess.Popen[bytes] | None = None

    @property
    def _user(self) -> str | None:
        """The user to run the server as when we are root (None: as ourselves)."""
        return None

    @property
    def _output(self) -> Path:
        """Where the process's stdout and stderr go (appended)."""
        raise NotImplementedError

    @property
    def _cwd(self) -> Path | None:
        return None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether the server serves yet; an exception counts as not yet."""
        raise NotImplementedError

    def _waiting_for(self) -> str:
        """What start() waits for, as its TimeoutError names it ("kafka on port 9092")."""
        raise NotImplementedError

    def _logs(self) -> list[tuple[str, Path]]:
        """(label, path) of the logs whose tails explain an early exit; the label ends in a space
        or is empty."""
        return [("log ", self._output)]

    def _before_start(self) -> None:
        """Called by start() right before the process is started."""

    def _after_exit(self) -> None:
        """Called by stop() and kill() once the process is gone."""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or restart) the server; return once it is ready (see the class docstring)."""
        if self.running:
            return
        self._before_start()
        proc = popen_as(self._user, self._argv(), self._output, cwd=self._cwd)
        self._proc = proc
        REAPER.add(proc)
        exited: list[str] = []

        def check() -> bool:
            # wait_for takes an exception for "not yet", so an exit is reported through `exited`
            if proc.poll() is not None:
                exited.append(self._exit_report(proc.returncode))
                return True
            return self._ready()

        try:
            wait_for(check, self.startup_timeout, self._waiting_for())
            if exited:
                raise RuntimeError(exited[0])
        except BaseException:
            self.kill()
            raise

    def _exit_report(self, returncode: int) -> str:
        tails = "\n".join(f"{label}{path}:\n{log_tail(path)}" for label, path in self._logs())
        return f"{self.process_name} exited with {returncode}; {tails}"

    def stop(self) -> None:
        """Shut down cleanly: SIGTERM, then SIGKILL after ``shutdown_timeout`` seconds."""
        terminate(self._proc, self.shutdown_timeout)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        kill(self._proc)
        self._forget()

    def _forget(self) -> None:
        REAPER.discard(self._proc)
        self._proc = None
        self._after_exit()

    def wait(self) -> None:
        """Block until the server exits or the user presses Ctrl-C (a launcher's ``run``)."""
        if self._proc is not None:
            with contextlib.suppress(KeyboardInterrupt):
                self._proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
