"""Database target test helpers: pipelines from MariaDB/MySQL or Postgres into a Postgres or
MySQL target, reading the target back, comparing it with the source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import wait_until
from tests.integration.mysql.conftest import (
    RUNNING,
    Running,
    mysql_source,
    run_pipeline,  # the fixture, for the tests here
)
from tests.servers import MYSQL_CLIENT_SERVER_ID

__all__ = ["Running", "mysql_source", "run_pipeline"]


def pg_sink(dsn: str, **extra: Any) -> dict[str, Any]:
    return {"type": "postgres", "dsn": dsn, **extra}


def mysql_sink(server: Any, **extra: Any) -> dict[str, Any]:
    """A MySQL target on ``server``: the connection fields a source on it has."""
    source = mysql_source(server, [], MYSQL_CLIENT_SERVER_ID)
    return {
        "type": "mysql",
        **{k: source[k] for k in ("host", "port", "user", "password")},
        **extra,
    }


def mariadb_source(server: Any, tables: list[str], **extra: Any) -> dict[str, Any]:
    return mysql_source(server, tables, MYSQL_CLIENT_SERVER_ID, **extra)


def pg_source(dsn: str, tables: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "postgres", "dsn": dsn, "tables": tables, **extra}


def target_config(
    path: Path,
    source: dict[str, Any],
    sink: dict[str, Any],
    *,
    name: str = "apply",
    max_events: int = 5000,
) -> Path:
    """A config of one pipeline ``name`` from ``source`` into ``sink`` at ``path``."""
    cfg = {
        "pipelines": [
            {
                "name": name,
                "batch": {"max_events": max_events, "max_wait_ms": 20},
                "source": source,
                "sink": sink,
            }
        ]
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def pg_query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
        return list(conn.execute(sql, params).fetchall())


def pg_rows(dsn: str, sql: str) -> list[tuple[Any, ...]] | None:
    """``pg_query``, or None while the table does not exist (the target creates it)."""
    import psycopg

    try:
        return pg_query(dsn, sql)
    except psycopg.errors.UndefinedTable:
        return None


def pg_exec(dsn: str, *statements: str) -> None:
    """Run ``statements`` in one transaction."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        for s in statements:
            conn.execute(s)


def my_query(server: Any, db: str | None, sql: str) -> list[tuple[Any, ...]]:
    return server.sql(sql, db)


def my_exec(server: Any, db: str, *statements: str) -> None:
    """Run ``statements`` in one transaction."""
    conn = server.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            for s in statements:
                cur.execute(s)
            cur.execute("COMMIT")
    finally:
        conn.close()


def wait_equal(
    read_source: Callable[[], Any], read_target: Callable[[], Any], what: str, timeout: float = 60
) -> None:
    """Poll until the target reads as the source does; on timeout show the difference, and
    what became of the pipelines running in this process (an error they stopped with)."""
    last: list[Any] = [None, None]

    def same() -> bool:
        last[0] = None
        try:
            last[0] = read_source()
            last[1] = read_target()
        except Exception as e:  # the target table may not exist yet
            last[1] = e
            return False
        return bool(last[0] == last[1])

    try:
        wait_until(same, timeout, what)
    except BaseException:
        src, tgt = last
        for r in RUNNING:
            what += (
                f" [pipeline {r.pipeline.config.name}: "
                f"{'running' if r.thread.is_alive() else 'stopped'}, error {r.error!r}, "
                f"{r.pipeline.events_written} events written]"
            )
        if isinstance(src, list) and isinstance(tgt, list):
            missing = [r for r in src if r not in tgt][:5]
            extra = [r for r in tgt if r not in src][:5]
            pytest.fail(f"{what}: source-only rows {missing}, target-only rows {extra}")
        pytest.fail(f"{what}: source {src!r}, target {tgt!r}")


def stopped_with(running: Running, timeout: float = 60) -> BaseException:
    """The error a pipeline thread stopped with (fails the test when it keeps running)."""
    wait_until(lambda: not running.thread.is_alive(), timeout, "the pipeline to stop with an error")
    assert running.error is not None, "the pipeline stopped without an error"
    return running.error
