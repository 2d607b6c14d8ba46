"""A scratch PostgreSQL server: initdb in a temporary directory, wal_level=logical, a free port.

Postgres refuses to run as root, so when we are root the cluster is owned by and run as the
``postgres`` user (Debian's package creates it). Connections go over TCP to 127.0.0.1 with trust
authentication: it is a throwaway server on loopback.
"""

from __future__ import annotations

import glob
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from scratch._common import chown_to, free_port, is_root, port_open, run_as, scratch_dir, wait_for


def _bindir() -> Path:
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]),
    )
    if not versions:
        raise FileNotFoundError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql; "
            "install Debian's postgresql package (bash .ci/setup does)"
        )
    return Path(versions[-1]).parent


@dataclass
class PostgresServer:
    """A running scratch server. ``superuser`` connects without a password over TCP."""

    datadir: Path
    port: int
    bindir: Path
    host: str = "127.0.0.1"
    superuser: str = "postgres"
    _os_user: str | None = field(default=None, repr=False)

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"host={self.host} port={self.port} user={user or self.superuser} dbname={dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with psql (ON_ERROR_STOP) and return its unaligned output."""
        proc = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-qAt",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(dbname),
            ],
            input=sql,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {proc.stderr.strip()}")
        return proc.stdout

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return a DSN for it."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            run_as(
                self._os_user,
                [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"],
            )

    def start(self) -> None:
        log = self.datadir / "server.log"
        run_as(
            self._os_user,
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        wait_for(lambda: port_open(self.port), 30, f"postgres on port {self.port}")

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_postgres(
    base_dir: Path | None = None,
    *,
    port: int | None = None,
    settings: dict[str, str] | None = None,
) -> PostgresServer:
    """initdb + start a server with wal_level=logical; ``settings`` override postgresql.conf."""
    bindir = _bindir()
    base_dir = scratch_dir(base_dir, "cdc-pg-")
    datadir = base_dir / "data"
    os_user = "postgres" if is_root() else None
    if os_user:
        os.chmod(base_dir, 0o755)
        chown_to(base_dir, os_user)
    run_as(
        os_user,
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
    )
    port = port or free_port()
    conf = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{datadir}'",
        "wal_level": "logical",
        "max_wal_senders": "40",
        "max_replication_slots": "40",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "128MB",
        "max_connections": "100",
        "log_min_messages": "warning",
        "TimeZone": "'UTC'",
    }
    conf.update(settings or {})
    with open(datadir / "postgresql.conf", "a") as f:
        for k, v in conf.items():
            f.write(f"{k} = {v}\n")
    with open(datadir / "pg_hba.conf", "w") as f:
        f.write("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        f.write("local replication all trust\nhost replication all 127.0.0.1/32 trust\n")
    server = PostgresServer(datadir=datadir, port=port, bindir=bindir, _os_user=os_user)
    server.start()
    return server
