"""``cdc run -c CONFIG`` as a subprocess, as a user runs it, optionally under py-spy."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench._stats import ProcStats, proc_stats

ROOT = Path(__file__).resolve().parent.parent


def py_spy() -> str | None:
    """The py-spy next to this interpreter, or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.is_file() else shutil.which("py-spy")


class Daemon:
    def __init__(self, config: Path, log: Path, profile: Path | None = None) -> None:
        self.config = config
        self.log = log
        self.profile = profile
        self._log_start = log.stat().st_size if log.exists() else 0
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        argv = [sys.executable, "-m", "cdc", "run", "-c", str(config)]
        if profile is not None:
            spy = py_spy()
            if spy is None:
                raise SystemExit("bench: --profile needs py-spy (pip install py-spy)")
            # py-spy starts the daemon itself, so it samples from the first instruction; idle
            # threads (waiting on the socket, the supervisor's join) are left out.
            argv = [spy, "record", "--nonblocking", "-r", "97", "-f", "raw", "-o", str(profile),
                    "--", *argv]  # fmt: skip
        self._out = open(log, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=config.parent
        )
        self.final: ProcStats | None = None
        # VmHWM as last sampled: wait4's ru_maxrss cannot be used, since Linux carries the
        # parent's high-water mark into a forked child (the harness's RSS would show).
        self.peak_rss_mb: float | None = None
        self.pid = self.proc.pid if profile is None else self._child(self.proc.pid)

    @staticmethod
    def _child(parent: int) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                for task in os.listdir(f"/proc/{parent}/task"):
                    with open(f"/proc/{parent}/task/{task}/children") as f:
                        kids = f.read().split()
                    if kids:
                        return int(kids[0])
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("py-spy did not start the daemon")

    def output(self) -> str:
        with open(self.log, "rb") as f:
            f.seek(self._log_start)
            return f.read().decode(errors="replace")

    def _reap(self) -> bool:
        """Reap our child if it exited, keeping its rusage; True if it has exited."""
        if self.proc.returncode is not None:
            return True
        pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if not pid:
            return False
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.final = ProcStats(ru.ru_utime + ru.ru_stime, self.peak_rss_mb)
        return True

    def alive(self) -> bool:
        self.stats()
        if self.profile is None:
            return not self._reap()
        return proc_stats(self.pid) is not None

    def check(self) -> None:
        """Raise with the daemon's output if it exited."""
        if not self.alive():
            tail = self.output()[-3000:]
            raise RuntimeError(f"the daemon exited; its output ({self.log}):\n{tail}")

    def wait_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"daemon: no {text!r} after {timeout:.0f}s:\n{self.output()}")
            time.sleep(0.05)

    def stats(self) -> ProcStats | None:
        """CPU seconds and peak RSS now (None once it exited); also keeps the peak RSS."""
        now = proc_stats(self.pid)
        if now is not None:
            self.peak_rss_mb = max(self.peak_rss_mb or 0.0, now.peak_rss_mb or 0.0)
        return now

    def stop(self, timeout: float = 60) -> ProcStats | None:
        """SIGTERM and wait; the CPU and peak RSS at the end (from wait4 when it is our child)."""
        last = self.stats()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout, last)

    def wait(self, timeout: float, last: ProcStats | None = None) -> ProcStats | None:
        """Wait for the daemon to exit; its final CPU and peak RSS."""
        stats = last
        if self.profile is None:
            deadline = time.monotonic() + timeout
            while True:
                self.stats()
                if self._reap():
                    break
                if time.monotonic() > deadline:
                    self.proc.kill()
                    self.proc.wait()
                    break
                time.sleep(0.05)
            stats = self.final or stats
        else:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                now = self.stats()
                if now is None:
                    break
                stats = now
                time.sleep(0.05)
            try:
                self.proc.wait(timeout)  # py-spy writes its report once the daemon is gone
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self.final = stats
        return stats

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._out.close()
