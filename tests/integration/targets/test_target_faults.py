"""Bad input for the database targets: the target down at start, a change the target refuses,
a source table without a primary key, and credentials kept out of logs and errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from cdc.errors import SinkError
from tests.conftest import wait_until
from tests.integration.targets.conftest import (
    mariadb_source,
    my_exec,
    mysql_sink,
    pg_exec,
    pg_query,
    pg_sink,
    stopped_with,
    target_config,
)

pytestmark = pytest.mark.integration

SECRET = "s3cret-Target-pw"


def _position(dsn: str) -> Any:
    """The pipeline's applied position in the target (None before its first commit)."""
    if pg_query(dsn, "SELECT to_regclass('cdc.cdc_positions')") == [(None,)]:
        return None
    rows = pg_query(dsn, "SELECT position::text FROM cdc.cdc_positions WHERE pipeline = 'apply'")
    return json.loads(rows[0][0]) if rows else None


def test_target_down_at_start_is_retried_then_applied_and_no_password_is_logged(
    mariadb_server: Any,
    mysql_db: str,
    pg_server: Any,
    pg_db: str,
    tmp_path: Path,
    run_pipeline: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = mysql_db
    mariadb_server.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT)", db)
    mariadb_server.sql("INSERT INTO t VALUES (1, 10)", db)
    dsn = f"{pg_db} password={SECRET}"  # the scratch server trusts local users: any password
    cfg = target_config(
        tmp_path / "c.yaml",
        mariadb_source(mariadb_server, [f"{db}.t"]),
        pg_sink(dsn, max_retry_backoff_s=1),
    )
    caplog.set_level(logging.INFO)
    pg_server.stop("fast")
    try:
        p = run_pipeline(cfg)
        wait_until(lambda: "postgres target unavailable" in caplog.text, 30, "a retry logged")
        my_exec(mariadb_server, db, "INSERT INTO t VALUES (2, 20)")
        assert p.thread.is_alive(), f"the pipeline gave up: {p.error!r}"
    finally:
        pg_server.start()
    wait_until(
        lambda: (
            pg_query(pg_db, f"SELECT id, v FROM {db}.t ORDER BY id") == [(1, 10), (2, 20)]
            if _position(pg_db)
            else False
        ),
        60,
        "both rows applied once the target is up",
    )
    assert "postgres target available again" in caplog.text
    p.stop()
    assert SECRET not in caplog.text


@pytest.mark.parametrize("copy_min_rows", [64, 1])
def test_a_refused_change_stops_with_table_key_and_message_and_keeps_the_position(
    mariadb_server: Any,
    mysql_db: str,
    pg_db: str,
    tmp_path: Path,
    run_pipeline: Any,
    copy_min_rows: int,
) -> None:
    """``copy_min_rows`` 1 and small batches: the rows go by COPY and the commit without
    waiting, so the refusal comes with the answer to a deferred statement; the batch is applied
    again statement by statement to name the row."""
    db = mysql_db
    mariadb_server.sql("CREATE TABLE items (id INT PRIMARY KEY, price DECIMAL(8,2))", db)
    # The target table exists already, with a rule the source does not have.
    pg_exec(
        pg_db,
        f'CREATE SCHEMA "{db}"',
        f'CREATE TABLE "{db}".items (id integer PRIMARY KEY, price numeric(8,2) '
        "CONSTRAINT cheap CHECK (price < 100))",
    )
    cfg = target_config(
        tmp_path / "c.yaml",
        mariadb_source(mariadb_server, [f"{db}.items"]),
        pg_sink(pg_db, copy_min_rows=copy_min_rows),
        # batches of at least half max_events defer their statements
        max_events=4 if copy_min_rows == 1 else 5000,
    )
    p = run_pipeline(cfg)
    my_exec(mariadb_server, db, "INSERT INTO items VALUES (1, 5), (2, 6)")
    wait_until(
        lambda: pg_query(pg_db, f'SELECT count(*) FROM "{db}".items') == [(2,)], 30, "2 rows"
    )
    wait_until(lambda: _position(pg_db) is not None, 30, "the position written")
    before = _position(pg_db)
    my_exec(
        mariadb_server,
        db,
        "INSERT INTO items VALUES (3, 7)",
        "INSERT INTO items VALUES (4, 500)",
        "UPDATE items SET price = 8 WHERE id = 1",
    )
    err = stopped_with(p)
    assert isinstance(err, SinkError) and not err.retryable
    text = str(err)
    assert f"table {db}.items" in text
    assert "key id=4" in text
    assert 'violates check constraint "cheap"' in text
    assert "position was not advanced" in text
    # Nothing of the refused transaction is in the target, and the position did not move.
    assert pg_query(pg_db, f'SELECT id, price FROM "{db}".items ORDER BY id') == [
        (1, pytest.approx(5)),
        (2, pytest.approx(6)),
    ]
    assert _position(pg_db) == before
    # Fixed in the target: a restart applies the transaction that was refused.
    pg_exec(pg_db, f'ALTER TABLE "{db}".items DROP CONSTRAINT cheap')
    p = run_pipeline(cfg)
    wait_until(
        lambda: (
            pg_query(pg_db, f'SELECT id, price::text FROM "{db}".items ORDER BY id')
            == [(1, "8.00"), (2, "6.00"), (3, "7.00"), (4, "500.00")]
        ),
        30,
        "the refused transaction applied after the fix",
    )
    p.stop()


def test_a_table_without_primary_key_is_a_clear_error(
    mariadb_server: Any, mysql_db: str, pg_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    mariadb_server.sql("CREATE TABLE nokey (a INT, b INT)", db)
    mariadb_server.sql("INSERT INTO nokey VALUES (1, 2)", db)
    cfg = target_config(
        tmp_path / "c.yaml", mariadb_source(mariadb_server, [f"{db}.nokey"]), pg_sink(pg_db)
    )
    err = stopped_with(run_pipeline(cfg))
    assert isinstance(err, SinkError) and not err.retryable
    assert f"table {db}.nokey has no primary key" in str(err)
    assert "add one to the source table" in str(err)
    assert pg_query(pg_db, "SELECT to_regclass(%s)", (f"{db}.nokey",)) == [(None,)]


def test_a_mysql_target_refusing_a_change_stops_naming_table_and_key(
    mariadb_server: Any, mysql_db: str, mysql_server: Any, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    mariadb_server.sql("CREATE TABLE items (id INT PRIMARY KEY, price DECIMAL(8,2))", db)
    mysql_server.create_database(db)
    mysql_server.sql(
        "CREATE TABLE items (id INT PRIMARY KEY, price DECIMAL(8,2), "
        "CONSTRAINT cheap CHECK (price < 100))",
        db,
    )
    cfg = target_config(
        tmp_path / "c.yaml",
        mariadb_source(mariadb_server, [f"{db}.items"]),
        mysql_sink(mysql_server),
    )
    p = run_pipeline(cfg)
    my_exec(mariadb_server, db, "INSERT INTO items VALUES (1, 5)")
    wait_until(lambda: mysql_server.sql("SELECT id FROM items", db) == [(1,)], 30, "row 1")
    my_exec(mariadb_server, db, "INSERT INTO items VALUES (2, 6), (3, 500)")
    err = stopped_with(p)
    assert isinstance(err, SinkError) and not err.retryable
    text = str(err)
    assert f"mysql target refused a change to table {db}.items (key id=3)" in text
    assert "Check constraint 'cheap' is violated" in text
    assert mysql_server.sql("SELECT id FROM items", db) == [(1,)]
