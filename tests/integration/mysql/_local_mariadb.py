"""Stand-in MariaDB launcher used only while scratch/mariadb.py (branch ``servers``) is absent.

Same surface as that launcher: ``start_mariadb(dir) -> server`` with host/port/user/password,
``sql()``, ``create_database()``, ``stop()`` and ``start()``.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

from scratch._common import free_port, port_open

SETTINGS = [
    "--log-bin=mariadb-bin",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
    "--server-id=1",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=48M",
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
]


@dataclass
class LocalMariaDB:
    datadir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = "cdc"
    password: str = "cdc"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        return str(self.datadir.parent / "mysqld.sock")

    def start(self) -> None:
        log = open(self.datadir.parent / "server.log", "ab")  # noqa: SIM115 - the server holds it
        self.proc = subprocess.Popen(
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=root",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket}",
                f"--pid-file={self.datadir.parent / 'mysqld.pid'}",
                *SETTINGS,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mariadbd did not start; see {self.datadir.parent / 'server.log'}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
        self.proc = None

    def connect(self, database: str | None = None, **kw: object) -> pymysql.Connection:  # type: ignore[type-arg]
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database,
            autocommit=True,
            **kw,
        )  # type: ignore[arg-type]

    def sql(self, statement: str, database: str | None = None) -> list[tuple[object, ...]]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        self.sql(f"CREATE DATABASE `{name}`")
        return name


def start_mariadb(base: Path) -> LocalMariaDB:
    datadir = base / "data"
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            "--user=root",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
    )
    server = LocalMariaDB(datadir, free_port())
    server.start()
    subprocess.run(
        [
            "mariadb",
            f"--socket={server.socket}",
            "-uroot",
            "-e",
            f"CREATE USER '{server.user}'@'%' IDENTIFIED BY '{server.password}'; "
            f"GRANT ALL ON *.* TO '{server.user}'@'%' WITH GRANT OPTION;",
        ],
        check=True,
        capture_output=True,
    )
    return server
