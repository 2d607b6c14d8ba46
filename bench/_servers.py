"""The scratch servers one bench run uses, started once and stopped at the end."""

from __future__ import annotations

import shutil
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any


@dataclass
class Servers:
    pg: Any = None
    mysql: Any = None  # the mysql-* pipelines' server: MariaDB, or Oracle MySQL (mysql_flavour)
    kafka: Any = None
    registry: Any = None


def start(
    stack: ExitStack, *, postgres: bool, mysql: bool, kafka: bool, mysql_flavour: str = "mariadb"
) -> Servers:
    """Start the servers asked for; ``stack`` stops them (and removes their files) on exit.

    ``mysql_flavour`` "mysql" runs the mysql-* pipelines against Oracle MySQL (scratch/mysql.py)
    instead of MariaDB."""
    s = Servers()
    if postgres:
        from scratch.postgres import start_postgres

        # Logical decoding of 1000-row transactions spills to disk past this; keep it in memory
        # as a tuned server would. synchronous_commit back on (scratch turns it off): with it
        # off, WAL reaches the walsender only at the WAL writer's next round (200 ms), which
        # would be counted as our latency. fsync stays off, so it costs nothing here.
        s.pg = start_postgres(
            settings={"logical_decoding_work_mem": "256MB", "synchronous_commit": "on"}
        )
        stack.callback(shutil.rmtree, s.pg.datadir.parent, ignore_errors=True)
        stack.callback(s.pg.stop, "immediate")
    if mysql:
        from scratch.mariadb import start_mariadb
        from scratch.mysql import start_mysql

        start_server = start_mysql if mysql_flavour == "mysql" else start_mariadb
        s.mysql = start_server(settings={"innodb_buffer_pool_size": "256M"})
        stack.callback(shutil.rmtree, s.mysql.base_dir, ignore_errors=True)
        stack.callback(s.mysql.stop)
    if kafka:
        from scratch.kafka import start_kafka
        from scratch.registry import start_schema_registry

        s.kafka = start_kafka()
        stack.callback(shutil.rmtree, s.kafka.base_dir, ignore_errors=True)
        stack.callback(s.kafka.stop)
        s.registry = start_schema_registry()
        stack.callback(shutil.rmtree, s.registry.base_dir, ignore_errors=True)
        stack.callback(s.registry.stop)
    return s


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else None


def versions(s: Servers) -> dict[str, str | None]:
    v: dict[str, str | None] = {}
    if s.pg is not None:
        v["postgres"] = _first_line([str(s.pg.bindir / "postgres"), "--version"])
    if s.mysql is not None and getattr(s.mysql, "flavour", "mariadb") == "mysql":
        from scratch.mysql import mysqld_argv

        v["mysql"] = _first_line([*mysqld_argv(s.mysql.root), "--version"])
    elif s.mysql is not None:
        v["mariadb"] = _first_line([s.mysql.mariadbd, "--version"])
    if s.kafka is not None:
        from scratch.kafka import KAFKA_VERSION
        from scratch.registry import REGISTRY_VERSION

        v["kafka"] = KAFKA_VERSION
        v["schema_registry"] = f"apicurio {REGISTRY_VERSION}"
    return v
