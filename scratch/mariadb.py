"""A scratch MariaDB server: a fresh datadir in a temporary directory, row binlog, a free port.

Uses Debian's ``mariadb-install-db`` and ``mariadbd`` (package mariadb-server). The server reads
only the ``my.cnf`` written next to its datadir (``--defaults-file``), listens on 127.0.0.1 and
on a socket in the temporary directory, and writes a binlog with ``binlog_format=ROW``,
``binlog_row_image=FULL`` and ``binlog_row_metadata=FULL``, as a CDC source needs.

Accounts: ``root`` with no password, from 127.0.0.1 (and the socket); also ``cdc`` with password
``cdc`` from any host, with ALL PRIVILEGES WITH GRANT OPTION. ``MariaDBServer.user``/``password``
are root's. Grants are enforced (no skip-grant-tables).

mariadbd will not run as root, so when we are root the directory is given to and the server run as
the ``mysql`` user (Debian's package creates it). Durability is traded for speed
(innodb_flush_log_at_trx_commit=2, sync_binlog=0): it is a throwaway server.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from scratch._common import chown_to, find_binary, free_port, is_root, run_as, scratch_dir
from scratch._mysql_client import MySQLClient
from scratch._proc import ServerProcess

STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 60.0


def _os_user() -> str | None:
    return "mysql" if is_root() else None


@dataclass
class MariaDBServer(MySQLClient, ServerProcess):
    """A running scratch server; ``connect_kwargs()`` are ready for ``pymysql.connect``.

    ``stop()`` (SIGTERM; SIGKILL after SHUTDOWN_TIMEOUT s) keeps the data and the port;
    ``kill()`` is a crash: InnoDB recovers on the next ``start()``.
    """

    base_dir: Path
    port: int
    server_id: int
    mariadbd: str
    host: str = "127.0.0.1"
    user: str = "root"
    password: str = ""
    _os_user: str | None = field(default=None, repr=False)

    process_name = "mariadbd"
    startup_timeout = STARTUP_TIMEOUT
    shutdown_timeout = SHUTDOWN_TIMEOUT

    @property
    def _user(self) -> str | None:
        return self._os_user

    @property
    def _output(self) -> Path:
        return self.base_dir / "mariadbd.out"

    def _argv(self) -> list[str]:
        return [self.mariadbd, f"--defaults-file={self.config_file}"]

    def _ready(self) -> bool:
        self.sql("SELECT 1")
        return True

    def _waiting_for(self) -> str:
        return f"mariadb on port {self.port} ({self.error_log})"

    def _logs(self) -> list[tuple[str, Path]]:
        return [("error log ", self.error_log)]


def _config(base_dir: Path, port: int, server_id: int, gtid_strict: bool) -> dict[str, str]:
    return {
        "datadir": str(base_dir / "data"),
        "socket": str(base_dir / "mysqld.sock"),
        "pid-file": str(base_dir / "mysqld.pid"),
        "log-error": str(base_dir / "error.log"),
        "port": str(port),
        "bind-address": "127.0.0.1",
        "skip-name-resolve": "ON",
        "log-bin": "mariadb-bin",
        "binlog_format": "ROW",
        "binlog_row_image": "FULL",
        "binlog_row_metadata": "FULL",
        "server_id": str(server_id),
        "gtid_strict_mode": "ON" if gtid_strict else "OFF",
        "character-set-server": "utf8mb4",
        "collation-server": "utf8mb4_general_ci",
        "default-time-zone": "+00:00",
        "max_connections": "200",
        "performance_schema": "OFF",
        "innodb_buffer_pool_size": "64M",
        "innodb_log_file_size": "32M",
        "innodb_log_buffer_size": "8M",
        "innodb_flush_log_at_trx_commit": "2",
        "innodb_doublewrite": "OFF",
        "innodb_use_native_aio": "OFF",
        "sync_binlog": "0",
        "skip-external-locking": "ON",
    }


def _write_config(path: Path, conf: dict[str, str]) -> None:
    with open(path, "w") as f:
        f.write("[client-server]\n")
        f.write(f"socket = {conf['socket']}\nport = {conf['port']}\n\n[mariadbd]\n")
        for k, v in conf.items():
            f.write(f"{k} = {v}\n")


def start_mariadb(
    base_dir: Path | None = None,
    *,
    server_id: int = 1,
    gtid_strict: bool = True,
    port: int | None = None,
    settings: dict[str, str] | None = None,
) -> MariaDBServer:
    """Initialise a datadir with mariadb-install-db and start mariadbd on a free port.

    ``settings`` are extra or overriding ``[mariadbd]`` options, e.g.
    ``{"binlog_row_image": "MINIMAL"}``. ``base_dir`` (default: a new temporary directory) must
    be reachable by the ``mysql`` user when we are root; pytest's ``tmp_path`` is not.
    """
    mariadbd = find_binary("mariadbd", ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"])
    install_db = find_binary("mariadb-install-db", ["/usr/bin/mariadb-install-db"])
    base_dir = scratch_dir(base_dir, "cdc-mariadb-")
    os_user = _os_user()
    port = port or free_port()
    conf = _config(base_dir, port, server_id, gtid_strict)
    conf.update(settings or {})
    config_file = base_dir / "my.cnf"
    _write_config(config_file, conf)
    if os_user:
        os.chmod(base_dir, 0o755)
        chown_to(base_dir, os_user)
        if subprocess.run(["runuser", "-u", os_user, "--", "test", "-w", str(base_dir)]).returncode:
            raise PermissionError(f"{base_dir} is not reachable by the {os_user} user")
    run_as(
        None,
        [
            install_db,
            f"--defaults-file={config_file}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            *([f"--user={os_user}"] if os_user else []),
        ],
    )
    server = MariaDBServer(
        base_dir=base_dir, port=port, server_id=server_id, mariadbd=mariadbd, _os_user=os_user
    )
    server.start()
    try:
        conn = server.connect()
        try:
            with conn.cursor() as cur:  # kept out of the binlog: CDC tests start from a clean one
                cur.execute("SET SESSION sql_log_bin = 0")
                cur.execute("CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdc'")
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO 'cdc'@'%' WITH GRANT OPTION")
        finally:
            conn.close()
    except BaseException:
        server.stop()
        raise
    return server
