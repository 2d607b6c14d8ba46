"""A scratch PostgreSQL server: initdb in a temporary directory, wal_level=logical, a free port.

Postgres refuses to run as root, so when we are root the cluster is owned by and run as the
``postgres`` user (Debian's package creates it). Connections go over TCP to 127.0.0.1 with trust
authentication: it is a throwaway server on loopback.

Versions: ``start_postgres()`` (or version 15) runs the host's Debian 12 build. Other majors run
the host's ``/usr/lib/postgresql/<major>`` if it is installed, else Debian's own build unpacked into
a private root (see scratch/_debian.py): 17 from trixie's ``postgresql-17``, 18 from sid's
``postgresql-18``. 16 is in no current Debian suite: it comes from PyPI's ``pgserver`` wheel, a
relocatable build run from where it is unpacked (``PYPI_BUILDS``). The Debian builds
need a newer glibc than the host's, and their programs exec each other (pg_ctl and initdb start
``postgres``), so running them through the root's loader with ``--library-path`` is not enough:
``patchelf`` rewrites every ELF file of the root to use the root's loader (interpreter) and
libraries (DT_RPATH). Postgres finds its share and lib directories relative to its bindir, so the
tree stays as Debian lays it out. LLVM is left out (it is only loaded for JIT), so those servers
run with ``jit = off``.

When we are root the private roots live in ``/var/cache/cdc-scratch`` (world-readable), not in
root's ``~/.cache``: the server runs as ``postgres``, which cannot enter ``/root``. Otherwise they
live in the scratch cache (``$CDC_SCRATCH_CACHE``, see scratch/_jars.py).

``python -m scratch.postgres fetch 18`` fills the cache (prints the bindir);
``python -m scratch.postgres [VERSION]`` starts a server and waits for Ctrl-C.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from scratch._common import chown_to, free_port, is_root, port_open, run_as, scratch_dir, wait_for
from scratch._debian import MAINTAINER_ONLY, RootSpec, fetch_root, patch_elves, prune_docs
from scratch._jars import cache_root

HOST_VERSION = 15  # Debian 12's
# major -> (Debian suite, package): the builds fetched into a private root
DEBIAN_BUILDS = {17: ("trixie", "postgresql-17"), 18: ("sid", "postgresql-18")}
# Depends a test server never loads: the cluster wrappers (we call initdb/pg_ctl directly), the
# snakeoil certificate, tzdata and locales (the host's zoneinfo and glibc's built-in C.UTF-8 do),
# LLVM (only for JIT, which these servers run without).
SKIP = MAINTAINER_ONLY | {
    "postgresql-common",
    "postgresql-common-dev",
    "postgresql-client-common",
    "ssl-cert",
    "tzdata",
    "locales",
    "locales-all",
    "libllvm*",
    "libz3-*",
}
SYSTEM_CACHE = Path("/var/cache/cdc-scratch")


def pg_cache() -> Path:
    """Where private Postgres roots live: readable by the postgres user when we are root."""
    if is_root():
        SYSTEM_CACHE.mkdir(parents=True, exist_ok=True)
        os.chmod(SYSTEM_CACHE, 0o755)
        return SYSTEM_CACHE
    return cache_root()


def _spec(major: int) -> RootSpec:
    suite, package = DEBIAN_BUILDS[major]

    def finish(root: Path) -> None:
        patch_elves(root, [root / f"usr/lib/postgresql/{major}/lib"])

    return RootSpec(
        name=f"postgres-{major}",
        suite=suite,
        package=package,
        skip=SKIP,
        prune=prune_docs,
        finish=finish,
    )


# 16 is in no current Debian suite: PyPI's pgserver wheel bundles a relocatable PostgreSQL 16
# build (bin/, lib/ with pgoutput, share/), which is run from where it is unpacked.
PYPI_BUILDS = {16: ("pgserver", "0.1.4", "pgserver/pginstall/bin")}


def _fetch_pypi(version: int, verbose: bool) -> Path:
    """The bindir of the PostgreSQL build a PyPI wheel carries (downloaded and unpacked once)."""
    import zipfile

    dist, release, bindir = PYPI_BUILDS[version]
    root = pg_cache() / f"postgres-{version}-{dist}-{release}"
    if not (root / bindir / "postgres").is_file():
        wheels = root.with_name(root.name + ".download")
        shutil.rmtree(wheels, ignore_errors=True)
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
                *("-q", "-d", str(wheels), f"{dist}=={release}"),
            ],
            check=True,
            capture_output=not verbose,
        )
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(next(wheels.glob("*.whl"))) as z:
            z.extractall(tmp)
        for f in (tmp / bindir).iterdir():
            f.chmod(0o755)  # zip entries lose their mode
        for d, _, _ in os.walk(tmp):
            os.chmod(d, 0o755)  # readable by the postgres user
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        shutil.rmtree(wheels, ignore_errors=True)
    return root / bindir


def fetch_postgres(version: int, *, verbose: bool = False) -> Path:
    """The bindir of Debian's build of Postgres ``version`` in a private root, or of the build
    a PyPI wheel carries for 16 (fetched once)."""
    if version in PYPI_BUILDS:
        return _fetch_pypi(version, verbose)
    if version not in DEBIAN_BUILDS:
        raise ValueError(
            f"postgres {version}: no build to fetch; use {HOST_VERSION} (the host's) or "
            f"{' or '.join(str(v) for v in sorted(DEBIAN_BUILDS | PYPI_BUILDS))}, or install "
            f"it under /usr/lib/postgresql/{version}"
        )
    root = fetch_root(_spec(version), pg_cache(), verbose=verbose)
    return root / f"usr/lib/postgresql/{version}/bin"


def bindir_for(version: int | str | None) -> tuple[Path, bool]:
    """(bindir, private) for ``version``: None means the host's newest (PG_BINDIR overrides);
    private is true for a fetched root (which runs with jit off)."""
    if version is None:
        return _bindir(), False
    major = int(version)
    host = Path(f"/usr/lib/postgresql/{major}/bin")
    if (host / "initdb").is_file():
        return host, False
    if major == HOST_VERSION:
        return _bindir(), False
    return fetch_postgres(major), True


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

    def promote(self) -> None:
        """End recovery: a standby becomes a primary (waits until it accepts writes)."""
        run_as(
            self._os_user, [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "promote"]
        )

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
    version: int | str | None = None,
) -> PostgresServer:
    """initdb + start a server with wal_level=logical; ``settings`` override postgresql.conf.

    ``version`` is a major (15, 17, 18); None is the host's (see the module docstring).
    """
    bindir, private = bindir_for(version)
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
    if private:
        conf["jit"] = "off"  # LLVM is not in the root
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


def start_standby(
    primary: PostgresServer, *, slot: str, settings: dict[str, str] | None = None
) -> PostgresServer:
    """A hot standby of ``primary`` streaming through the physical slot ``slot`` (created),
    with hot_standby_feedback on, as logical decoding on a standby and slot synchronisation
    need; ``settings`` add to its postgresql.conf (e.g. sync_replication_slots = on, 17+).
    ``primary_conninfo`` names a database, which slot synchronisation requires."""
    base_dir = scratch_dir(None, "cdc-pg-standby-")
    datadir = base_dir / "data"
    os_user = primary._os_user
    if os_user:
        os.chmod(base_dir, 0o755)
        chown_to(base_dir, os_user)
    run_as(
        os_user,
        [
            str(primary.bindir / "pg_basebackup"),
            "-D",
            str(datadir),
            "-d",
            primary.dsn(),
            "-C",
            "-S",
            slot,
            "-X",
            "stream",
            "-c",
            "fast",  # checkpoint now, not spread over checkpoint_timeout
            "--no-sync",
        ],
    )
    port = free_port()
    conf = {
        "port": str(port),
        "unix_socket_directories": f"'{datadir}'",
        "hot_standby": "on",
        "hot_standby_feedback": "on",
        "primary_conninfo": f"'{primary.dsn()}'",
        "primary_slot_name": f"'{slot}'",
    }
    conf.update(settings or {})
    with open(datadir / "postgresql.conf", "a") as f:
        for k, v in conf.items():
            f.write(f"{k} = {v}\n")
    (datadir / "standby.signal").touch()
    if os_user:
        chown_to(datadir, os_user)
    (datadir / "postmaster.pid").unlink(missing_ok=True)
    server = PostgresServer(datadir=datadir, port=port, bindir=primary.bindir, _os_user=os_user)
    server.start()
    return server


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["fetch"]:
        for v in args[1:] or [str(max(DEBIAN_BUILDS))]:
            print(fetch_postgres(int(v), verbose=True))
        return
    server = start_postgres(version=args[0] if args else None)
    print(f"{server.psql('SELECT version()').strip()} on 127.0.0.1:{server.port}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        shutil.rmtree(server.datadir.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
