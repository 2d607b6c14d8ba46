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


def scaled(full: int, small: int) -> int:
    """A volume for a ``scale``-marked test: ``small`` in ``make test`` (CI), ``full`` (what the
    issue's acceptance names, e.g. 200,000 rows) in ``make test-scale`` (CDC_TEST_FULL_SCALE=1)."""
    return full if os.environ.get("CDC_TEST_FULL_SCALE") == "1" else small


# 18 beside the host's 15 costs under a minute (docs/testing.md); 17 is in `make test-pg-all`.
DEFAULT_PG_VERSIONS = "15,18"


def pg_versions() -> list[str]:
    """The Postgres majors the version-matrix tests run on: ``$CDC_PG_VERSIONS`` (e.g. "15,17"),
    default DEFAULT_PG_VERSIONS. The first one is the server every other Postgres test uses;
    15 is the host's, others come from scratch/postgres.py's private Debian roots."""
    raw = os.environ.get("CDC_PG_VERSIONS", "").strip() or DEFAULT_PG_VERSIONS
    versions = [v.strip() for v in raw.split(",") if v.strip()]
    bad = [v for v in versions if not v.isdigit()]
    if bad:
        raise pytest.UsageError(f"CDC_PG_VERSIONS={raw!r}: {bad} are not majors; use e.g. 15,18")
    return versions


# Modules whose Postgres tests run once per version in pg_versions(), with "pg<major>" in the id.
# tests/conformance/test_sources.py does the same through its own ``db`` fixture's params.
PG_MATRIX_MODULES = {"test_postgres_types", "test_postgres_snapshot"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rpartition(".")[2]
    if module in PG_MATRIX_MODULES and "pg_version" in metafunc.fixturenames:
        versions = pg_versions()
        metafunc.parametrize(
            "pg_version", versions, indirect=True, scope="session", ids=[f"pg{v}" for v in versions]
        )


def scratch_postgres(version: str | None = None) -> Iterator[Any]:
    """A scratch Postgres (``version`` None: the host's) for a fixture to yield; removed after."""
    from scratch.postgres import start_postgres

    # Not under pytest's tmp dir: when we are root the server runs as the postgres user, which
    # cannot enter pytest's private (0700) directories.
    server = start_postgres(version=version)
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.datadir.parent, ignore_errors=True)


class PgServers:
    """One scratch Postgres per major, started on first use and stopped at the session's end."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[Any, Iterator[Any]]] = {}

    def get(self, version: str) -> Any:
        if version not in self._running:
            gen = scratch_postgres(None if version == "15" else version)
            self._running[version] = (next(gen), gen)
        return self._running[version][0]

    def close(self) -> None:
        for _server, gen in self._running.values():
            for _ in gen:  # runs the generator's cleanup
                pass


@pytest.fixture(scope="session")
def pg_servers() -> Iterator[PgServers]:
    servers = PgServers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session")
def pg_version(request: pytest.FixtureRequest) -> str:
    """The Postgres major of ``pg_server``: a matrix module's parameter, else the first listed."""
    return str(getattr(request, "param", pg_versions()[0]))


@pytest.fixture(scope="session")
def pg_server(pg_servers: PgServers, pg_version: str) -> Any:
    return pg_servers.get(pg_version)


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


class RecordingReporter:
    """A ``Reporter`` that keeps every call (the source is used outside any pipeline thread)."""

    def __init__(self) -> None:
        self.progress: list[tuple[str, int, int | None]] = []

    def snapshot_progress(self, table: str, done: int, total: int | None) -> None:
        self.progress.append((table, done, total))

    def set_state(self, state: Any) -> None:
        pass
