"""Shared fixtures: real servers started once per test session from this machine's binaries."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.servers"]  # MariaDB, Kafka + registry, NATS: one of each per session
_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests under tests/unit are unit tests unless marked otherwise; everything else must say.
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.unit)


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def scratch_postgres() -> Iterator[Any]:
    """A scratch Postgres for a fixture to yield; stopped and removed after."""
    from scratch.postgres import start_postgres

    # Not under pytest's tmp dir: when we are root the server runs as the postgres user, which
    # cannot enter pytest's private (0700) directories.
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.datadir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    yield from scratch_postgres()


@pytest.fixture
def pg_db(pg_server: Any) -> Iterator[str]:
    """A fresh database on the session server; returns its DSN. Its slots are dropped after."""
    name = f"t{os.getpid()}_{next(_counter)}"
    yield str(pg_server.create_database(name))
    # Replication slots are per server: free this test's, or later tests run out of them.
    pg_server.psql(
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        f"WHERE database = '{name}' AND active_pid IS NOT NULL;"
        "SELECT pg_sleep(0.3);"
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        f"WHERE database = '{name}' AND NOT active;"
    )


class Daemon:
    """``cdc run`` as a real subprocess, as a user runs it."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdc", "run", "-c", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.terminate()
        rc = self.proc.wait(timeout)
        self._log.close()
        return rc

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[[Path], Daemon]]:
    started: list[Daemon] = []

    def make(config_path: Path) -> Daemon:
        d = Daemon(config_path, tmp_path / f"daemon{len(started)}.log")
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
