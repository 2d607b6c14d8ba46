"""A scratch Oracle MySQL server (Debian sid's build), run from a private root on any Debian.

Debian 12 has no MySQL, and sid's ``mysql-server-core`` needs a newer glibc and libstdc++ than
the host has. So the first use unpacks the Depends closure of ``mysql-server-core`` (perl and
other things mysqld does not load skipped) into one root in the scratch cache
(``$CDC_SCRATCH_CACHE/mysql-<version>/root``; scratch/_debian.py does the fetching). mysqld
then runs through that root's own dynamic loader with ``--library-path`` pointing into the root,
so not one host library is used. Later runs reuse the newest complete root without touching the
network.

The server: a fresh datadir (``mysqld --initialize-insecure``) in a temporary directory, a free
port on 127.0.0.1, a socket in that directory, no X plugin, a binlog with ``binlog_format=ROW``,
``binlog_row_metadata=FULL``, ``gtid_mode=ON`` and ``enforce_gtid_consistency=ON``. Accounts:
``root`` without password from localhost and 127.0.0.1 (``MySQLServer.user``/``password``), and
``cdc`` with password ``cdc`` from any host (caching_sha2_password, MySQL's default), with ALL
PRIVILEGES WITH GRANT OPTION. When we are root, mysqld runs as root (``--user=root``), because the
cache is usually under root's home, which the ``mysql`` user cannot read.

``python -m scratch.mysql fetch`` fills the cache (prints the root); ``python -m scratch.mysql``
starts a server and waits for Ctrl-C.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from scratch._common import free_port, is_root, scratch_dir
from scratch._debian import MAINTAINER_ONLY, RootSpec, fetch_root, loader_argv, prune_docs
from scratch._jars import cache_root
from scratch._mysql_client import MySQLClient
from scratch._proc import ServerProcess, log_tail

STARTUP_TIMEOUT = 120.0
SHUTDOWN_TIMEOUT = 60.0
SUITE = "sid"
ROOT_PACKAGE = "mysql-server-core"
# Depends that mysqld never loads: the scripts' interpreter, and what only maintainer scripts use.
SKIP = MAINTAINER_ONLY


# --- fetching the root ----------------------------------------------------------------------


def _prune(root: Path) -> None:
    """Drop what a test server never uses: the other tools (80 MB), docs, man pages."""
    for tool in (root / "usr/bin").glob("*"):
        if tool.name != "mysqlbinlog":  # kept: handy to look at a test server's binlog
            tool.unlink()
    prune_docs(root)


SPEC = RootSpec(name="mysql", suite=SUITE, package=ROOT_PACKAGE, skip=SKIP, prune=_prune)


def fetch_mysql(*, verbose: bool = False) -> Path:
    """The root that holds mysqld and every library it loads; downloaded only if none is cached.

    Resolves the package set from sid's live index, caches it under the mysql version, and
    returns ``cache_root()/mysql-<version>/root`` (see scratch/_debian.py).
    """
    return fetch_root(SPEC, cache_root(), verbose=verbose)


def mysqld_argv(root: Path) -> list[str]:
    return [*loader_argv(root), str(root / "usr/sbin/mysqld")]


def mysqlbinlog_argv(root: Path) -> list[str]:
    """argv of the root's ``mysqlbinlog`` (the one tool _prune keeps)."""
    return [*loader_argv(root), str(root / "usr/bin/mysqlbinlog")]


# --- the server -----------------------------------------------------------------------------


@dataclass
class MySQLServer(MySQLClient, ServerProcess):
    """A running scratch server; ``connect_kwargs()`` are ready for ``pymysql.connect``.

    ``stop()`` (SIGTERM; SIGKILL after SHUTDOWN_TIMEOUT s) keeps the data and the port;
    ``kill()`` is a crash: InnoDB recovers on the next ``start()``.
    """

    base_dir: Path
    port: int
    server_id: int
    root: Path
    host: str = "127.0.0.1"
    user: str = "root"
    password: str = ""
    flavour: str = "mysql"

    process_name = "mysqld"
    startup_timeout = STARTUP_TIMEOUT
    shutdown_timeout = SHUTDOWN_TIMEOUT

    def _socket_sql(self, statements: list[str]) -> None:
        import pymysql

        conn = pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                for s in statements:
                    cur.execute(s)
        finally:
            conn.close()

    @property
    def _output(self) -> Path:
        return self.base_dir / "mysqld.out"

    def _argv(self) -> list[str]:
        return [*mysqld_argv(self.root), f"--defaults-file={self.config_file}"]

    def _ready(self) -> bool:
        # the socket: root@127.0.0.1 does not exist until start_mysql has created it
        import pymysql

        pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=2).close()
        return True

    def _waiting_for(self) -> str:
        return f"mysql on port {self.port} ({self.error_log})"

    def _logs(self) -> list[tuple[str, Path]]:
        return [("error log ", self.error_log)]


def _config(base_dir: Path, root: Path, port: int, server_id: int) -> dict[str, str]:
    share = root / "usr/share/mysql"
    return {
        "basedir": str(root / "usr"),
        "lc-messages-dir": str(share),
        "character-sets-dir": str(share / "charsets"),
        "plugin-dir": str(root / "usr/lib/mysql/plugin"),
        "datadir": str(base_dir / "data"),
        "socket": str(base_dir / "mysqld.sock"),
        "pid-file": str(base_dir / "mysqld.pid"),
        "log-error": str(base_dir / "error.log"),
        "tmpdir": str(base_dir),
        "secure-file-priv": str(base_dir),
        "user": getpass.getuser() if not is_root() else "root",
        "port": str(port),
        "bind-address": "127.0.0.1",
        "mysqlx": "OFF",
        "log-bin": "mysql-bin",
        "binlog_row_image": "FULL",
        "binlog_row_metadata": "FULL",
        "gtid_mode": "ON",
        "enforce_gtid_consistency": "ON",
        "server_id": str(server_id),
        "character-set-server": "utf8mb4",
        "default-time-zone": "+00:00",
        "max_connections": "200",
        "performance_schema": "OFF",
        "innodb_buffer_pool_size": "64M",
        "innodb_redo_log_capacity": "32M",
        "innodb_log_buffer_size": "8M",
        "innodb_flush_log_at_trx_commit": "2",
        "innodb_doublewrite": "OFF",
        "innodb_use_native_aio": "OFF",
        "sync_binlog": "0",
        "skip-external-locking": "ON",
    }


def _write_config(path: Path, conf: dict[str, str]) -> None:
    with open(path, "w") as f:
        f.write("[mysqld]\n")
        for k, v in conf.items():
            f.write(f"{k} = {v}\n")


def start_mysql(
    base_dir: Path | None = None,
    *,
    server_id: int = 1,
    port: int | None = None,
    settings: dict[str, str] | None = None,
) -> MySQLServer:
    """Fetch the root if needed, initialise a datadir and start mysqld on a free port.

    ``settings`` are extra or overriding ``[mysqld]`` options, e.g.
    ``{"binlog_row_metadata": "MINIMAL"}``.
    """
    root = fetch_mysql()
    base_dir = scratch_dir(base_dir, "cdc-mysql-")
    port = port or free_port()
    conf = _config(base_dir, root, port, server_id)
    conf.update(settings or {})
    config_file = base_dir / "my.cnf"
    _write_config(config_file, conf)
    proc = subprocess.run(
        [*mysqld_argv(root), f"--defaults-file={config_file}", "--initialize-insecure"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"mysqld --initialize-insecure failed ({proc.returncode}):\n{proc.stdout}\n"
            f"{proc.stderr}\n{log_tail(base_dir / 'error.log')}"
        )
    server = MySQLServer(base_dir=base_dir, port=port, server_id=server_id, root=root)
    server.start()
    try:
        server._socket_sql(
            [
                # kept out of the binlog: CDC tests start from a clean one
                "SET SESSION sql_log_bin = 0",
                "CREATE USER 'root'@'127.0.0.1'",
                "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION",
                "CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdc'",
                "GRANT ALL PRIVILEGES ON *.* TO 'cdc'@'%' WITH GRANT OPTION",
            ]
        )
    except BaseException:
        server.stop()
        raise
    return server


def main() -> None:
    if sys.argv[1:] == ["fetch"]:
        print(fetch_mysql(verbose=True))
        return
    server = start_mysql()
    print(f"mysql {server.sql('SELECT VERSION()')[0][0]} on 127.0.0.1:{server.port}")
    try:
        server.wait()
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
