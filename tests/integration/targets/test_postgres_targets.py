"""Postgres -> Postgres (types, unchanged TOASTed values, truncate, pk change), Postgres -> MySQL
and MySQL -> MySQL: the smoke tests of each pair of docs/targets.md."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.integration.targets.conftest import (
    mariadb_source,
    my_exec,
    my_query,
    mysql_sink,
    pg_exec,
    pg_query,
    pg_rows,
    pg_sink,
    pg_source,
    target_config,
    wait_equal,
)
from tests.servers import _counter

pytestmark = pytest.mark.integration

# (column, Postgres type, literal): the target holds the same text for each (Postgres -> Postgres).
PG_TYPES = [
    ("i2", "smallint", "-32768"),
    ("i8", "bigint", "-9223372036854775808"),
    ("nu", "numeric(12,2)", "-12.50"),
    ("nv", "numeric", "3.14159"),
    ("r4", "real", "1.5"),
    ("f8", "double precision", "'Infinity'"),
    ("bo", "boolean", "true"),
    ("vc", "varchar(10)", "'héllo'"),
    ("tx", "text", "'日本語 🎉'"),
    ("by", "bytea", "'\\x00ff'"),
    ("da", "date", "'2024-02-29'"),
    ("da_bc", "date", "'0044-03-15 BC'"),
    ("da_inf", "date", "'infinity'"),
    ("tm", "time", "'13:14:15.25'"),
    ("ts", "timestamp", "'2001-02-03 04:05:06.789'"),
    ("ts_bc", "timestamp", "'0044-03-15 12:00:00 BC'"),
    ("ts_inf", "timestamp", "'infinity'"),
    ("ts3", "timestamp(3)", "'2001-02-03 04:05:06.789'"),
    ("tz", "timestamptz", "'2024-05-06 05:08:09.12+00'"),
    ("tz_inf", "timestamptz", "'-infinity'"),
    ("uu", "uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
    ("js", "jsonb", """'{"a": [1, 2]}'"""),
    ("b12", "bit(12)", "B'000100000010'"),
    ("pt", "point", "'(1.5,-2)'"),
    ("en", "mood", "'sad'"),
    ("ai", "integer[]", "'{1,NULL,-3}'"),
    ("at", "text[]", """'{plain,"with space",NULL}'"""),
    ("ad", "date[]", "'{2024-01-01,NULL}'"),
    ("oi", "oid", "4294967295"),
    ("c1", '"char"', "'x'"),
    ("nm", "name", "'pg_class'"),
    ("xm", "xml", "'<a>1</a>'"),
    ("ip", "inet", "'192.168.0.1/24'"),
    ("cd", "cidr", "'10.0.0.0/8'"),
    ("ma", "macaddr", "'08:00:2b:01:02:03'"),
    ("rg", "int4range", "'[1,5)'"),
    ("tv", "tsvector", "'a b'"),
]
# Lossy (docs/targets.md): (column, type, literal, the target's text). An interval goes through
# Debezium's MicroDuration (a month is 30.4375 days); a timetz through ZonedTime (in UTC).
LOSSY = [
    ("iv", "interval", "'1 year 2 mons 3 days 04:05:06.789'", "429 days 07:05:06.789"),
    ("tt", "timetz", "'13:14:15.25+02'", "11:14:15.25+00"),
    ("mo", "money", "'-1234.56'", "-1234.56"),  # numeric: the amount, no currency format
    ("vb", "varbit(20)", "B'101'", "00000000000000000101"),  # padded to its length
]


def _cols(table: str) -> str:
    return ", ".join(f"{c}::text" for c, *_ in PG_TYPES)


# copy_min_rows 1: every row goes by COPY (new keys straight into the table, updates through
# the staging table); 1,000,000: every row by the one-statement path (arrays, or a row per
# statement for the table with array columns). Both must give the source's values.
@pytest.mark.parametrize("copy_min_rows", [1, 1_000_000], ids=["copy", "statements"])
def test_postgres_to_postgres_types_toast_truncate_and_key_change(
    pg_server: Any, pg_db: str, tmp_path: Path, run_pipeline: Any, copy_min_rows: int
) -> None:
    target = pg_server.create_database(f"target{os.getpid()}_{next(_counter)}")
    every = [*PG_TYPES, *(x[:3] for x in LOSSY)]
    cols = ", ".join(f"{c} {t}" for c, t, _ in every)
    literals = ", ".join(lit for *_, lit in every)
    pg_exec(
        pg_db,
        "CREATE TYPE mood AS ENUM ('happy', 'sad')",
        f"CREATE TABLE types (id int PRIMARY KEY, {cols})",
        "CREATE TABLE docs (id int PRIMARY KEY, n int, body text)",
        "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",  # TOASTed uncompressed
        f"INSERT INTO types VALUES (1, {literals})",
        "INSERT INTO docs SELECT g, g, repeat('x', 10000) || g FROM generate_series(1, 3) g",
    )
    cfg = target_config(
        tmp_path / "c.yaml",
        pg_source(pg_db, ["public.types", "public.docs"]),
        pg_sink(target, copy_min_rows=copy_min_rows),
        name=f"pgpg{next(_counter)}",
    )
    p = run_pipeline(cfg)
    docs = "SELECT id, n, md5(body) FROM public.docs ORDER BY id"
    # the snapshot first, so that what follows comes by the stream (which carries no value for
    # a TOASTed column an update left alone)
    wait_equal(lambda: pg_query(pg_db, docs), lambda: pg_query(target, docs), "docs snapshot")
    pg_exec(pg_db, f"INSERT INTO types VALUES (2, {literals})", "INSERT INTO types (id) VALUES (3)")
    # updates of every column: upserted (through the staging table with COPY)
    pg_exec(
        pg_db, f"UPDATE types SET ({', '.join(c for c, *_ in every)}) = ({literals}) WHERE id = 1"
    )
    pg_exec(
        pg_db, f"UPDATE types SET ({', '.join(c for c, *_ in every)}) = ({literals}) WHERE id = 3"
    )
    # An update that leaves the TOASTed body alone: the change carries no body; the target
    # keeps its own. Then a primary-key change, which carries no body either (the source's
    # delete of key 3 and create of key 30): the target's row moves to the new key with it.
    # Then a delete.
    pg_exec(pg_db, "UPDATE docs SET n = n + 10 WHERE id = 1")
    pg_exec(pg_db, "UPDATE docs SET id = 30 WHERE id = 3", "DELETE FROM docs WHERE id = 2")
    select = f"SELECT id, {_cols('types')} FROM public.types ORDER BY id"
    wait_equal(lambda: pg_query(pg_db, select), lambda: pg_query(target, select), "types")
    wait_equal(lambda: pg_query(pg_db, docs), lambda: pg_query(target, docs), "docs")
    lossy = ", ".join(f"{c}::text" for c, *_ in LOSSY)
    got = pg_query(target, f"SELECT {lossy} FROM public.types WHERE id = 1")
    assert got == [tuple(text for *_, text in LOSSY)]
    pg_exec(pg_db, "TRUNCATE docs", "INSERT INTO docs VALUES (7, 7, 'seven')")
    wait_equal(lambda: pg_query(pg_db, docs), lambda: pg_query(target, docs), "docs truncated")
    p.stop()


def test_postgres_to_mysql(
    pg_db: str, mariadb_server: Any, tmp_path: Path, run_pipeline: Any
) -> None:
    database = f"pgmy{os.getpid()}_{next(_counter)}"
    pg_exec(
        pg_db,
        "CREATE TABLE items (id int PRIMARY KEY, name varchar(20), price numeric(8,2), "
        "seen timestamptz, day date, tags text[], doc jsonb, flag boolean)",
        "INSERT INTO items VALUES (1, 'one', 1.5, '2024-01-02 03:04:05.5+00', '2024-02-29', "
        """'{a,b}', '{"k": 1}', true)""",
        "CREATE TABLE docs (id int PRIMARY KEY, body text)",
        "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",  # TOASTed uncompressed
        "INSERT INTO docs VALUES (5, repeat('y', 10000))",
    )
    cfg = target_config(
        tmp_path / "c.yaml",
        pg_source(pg_db, ["public.items", "public.docs"]),
        mysql_sink(mariadb_server, database=database),
        name=f"pgmy{next(_counter)}",
    )
    p = run_pipeline(cfg)

    def docs() -> list[tuple[Any, ...]]:
        try:
            return my_query(mariadb_server, database, "SELECT id, md5(body) FROM docs")
        except Exception:  # created with the first batch
            return []

    wait_until(lambda: len(docs()) == 1, 60, "the docs snapshot in MySQL")
    # a primary-key change that leaves the TOASTed body alone (the stream carries none): the
    # target's row moves to the new key with its body
    pg_exec(pg_db, "UPDATE docs SET id = 55 WHERE id = 5")
    body = pg_query(pg_db, "SELECT md5(body) FROM docs")[0][0]
    wait_until(lambda: docs() == [(55, body)], 60, "the docs row moved in MySQL")
    pg_exec(
        pg_db,
        "INSERT INTO items (id, name, price) VALUES (2, 'two', 2), (3, 'three', 3)",
        "UPDATE items SET price = 9.25, flag = false WHERE id = 1",
    )
    pg_exec(pg_db, "DELETE FROM items WHERE id = 2", "UPDATE items SET id = 33 WHERE id = 3")

    def target() -> list[tuple[Any, ...]]:
        try:
            return my_query(
                mariadb_server,
                database,
                "SELECT id, name, price, seen, day, tags, doc, flag FROM items ORDER BY id",
            )
        except Exception:  # created with the first batch
            return []

    import datetime as dt

    wait_until(lambda: len(target()) == 2 and target()[1][0] == 33, 60, "2 rows in MySQL")
    rows = target()
    assert rows[0][:5] == (
        1,
        "one",
        Decimal("9.25"),
        dt.datetime(2024, 1, 2, 3, 4, 5, 500000),
        dt.date(2024, 2, 29),
    )
    assert [x.replace(" ", "") for x in rows[0][5:7]] == ['["a","b"]', '{"k":1}']
    assert rows[0][7] == 0
    assert rows[1] == (33, "three", Decimal("3.00"), None, None, None, None, None)
    p.stop()


def test_mysql_to_mysql(
    mariadb_server: Any, mysql_db: str, mysql_server: Any, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    src = mariadb_server
    src.sql(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(8,2), "
        "seen DATETIME(6), e ENUM('a','b'), s SET('x','y'), b BIT(12), j JSON, bin BLOB)",
        db,
    )
    src.sql(
        "INSERT INTO items VALUES (1, 'one', 1.5, '2024-01-02 03:04:05.123456', 'b', 'x,y', "
        """b'101010101010', '{"k": [1, 2]}', x'00ff')""",
        db,
    )
    cfg = target_config(
        tmp_path / "c.yaml",
        mariadb_source(src, [f"{db}.items"]),
        mysql_sink(mysql_server),  # MariaDB -> Oracle MySQL, into a database of the same name
    )
    p = run_pipeline(cfg)
    my_exec(
        src,
        db,
        "INSERT INTO items (id, name) VALUES (2, 'two'), (3, 'three')",
        "UPDATE items SET price = 2.25 WHERE id = 1",
        "DELETE FROM items WHERE id = 2",
        "UPDATE items SET id = 30 WHERE id = 3",
    )
    select = "SELECT id, name, price, seen, e, s, b + 0, bin FROM items ORDER BY id"
    wait_equal(
        lambda: my_query(src, db, select), lambda: my_query(mysql_server, db, select), "items"
    )
    json_doc = "SELECT j FROM items WHERE id = 1"
    assert my_query(mysql_server, db, json_doc) == [('{"k": [1, 2]}',)]
    # Schema changes on a MySQL target (DDL outside the data transaction there).
    src.sql("ALTER TABLE items ADD COLUMN qty INT NOT NULL DEFAULT 7, DROP COLUMN bin", db)
    src.sql("ALTER TABLE items MODIFY price DECIMAL(12,3)", db)
    my_exec(src, db, "INSERT INTO items (id, name, price, qty) VALUES (4, 'four', 4.125, 40)")
    select = "SELECT id, name, price, qty FROM items ORDER BY id"
    wait_equal(
        lambda: my_query(src, db, select), lambda: my_query(mysql_server, db, select), "altered"
    )
    columns = my_query(
        mysql_server,
        None,
        "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
        f"WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 'items' AND COLUMN_NAME IN "
        "('bin', 'price', 'qty') ORDER BY COLUMN_NAME",
    )
    assert columns == [("price", "decimal(12,3)"), ("qty", "int")]
    p.stop()


@pytest.mark.parametrize("rls", [False, True], ids=["plain", "row-level-security"])
def test_new_keys_already_in_the_target_are_upserted_not_refused(
    pg_server: Any, pg_db: str, tmp_path: Path, run_pipeline: Any, rls: bool
) -> None:
    """Rows the source inserts go into the target by a plain COPY; when the target holds one of
    their keys already (a row added there by hand) the copy is undone and the rows upserted:
    the target ends equal to the source and the pipeline keeps running. The same when the
    table is under row-level security, where COPY FROM is refused whatever the keys."""
    name = f"target{os.getpid()}_{next(_counter)}"
    target = pg_server.create_database(name)
    dsn = target
    if rls:  # the sink as an owner without BYPASSRLS (a superuser passes row-level security)
        role = f"owner{os.getpid()}_{next(_counter)}"
        pg_exec(target, f"CREATE ROLE {role} LOGIN", f"GRANT CREATE ON DATABASE {name} TO {role}")
        dsn = pg_server.dsn(name, user=role)
    pg_exec(
        pg_db,
        "CREATE TABLE items (id int PRIMARY KEY, v text)",
        "INSERT INTO items VALUES (0, 'zero')",
    )
    cfg = target_config(
        tmp_path / "c.yaml",
        pg_source(pg_db, ["public.items"]),
        pg_sink(dsn, schema="app", copy_min_rows=10),
        name=f"pgnew{next(_counter)}",
        max_events=100,  # batches of at least 50: their statements deferred
    )
    p = run_pipeline(cfg)
    select = "SELECT id, v FROM {} WHERE id <= {} ORDER BY id"
    every = 10**9
    source, copy = select.format("public.items", every), select.format("app.items", every)
    wait_equal(lambda: pg_query(pg_db, source), lambda: pg_query(target, copy), "snapshot")
    pg_exec(target, "INSERT INTO app.items VALUES (50, 'by hand'), (150, 'by hand')")
    if rls:  # COPY FROM is refused for a table under row-level security; INSERT is not
        pg_exec(
            target,
            "ALTER TABLE app.items ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE app.items FORCE ROW LEVEL SECURITY",
            "CREATE POLICY everything ON app.items USING (true) WITH CHECK (true)",
        )
    for hi in (100, 200):  # the second batch comes while plain copies pause on the table
        pg_exec(
            pg_db,
            f"INSERT INTO items SELECT g, 'source ' || g FROM generate_series({hi - 99}, {hi}) g",
        )
        wait_equal(
            lambda hi=hi: pg_query(pg_db, select.format("public.items", hi)),  # type: ignore[misc]
            lambda hi=hi: pg_query(target, select.format("app.items", hi)),  # type: ignore[misc]
            f"ids up to {hi}",
        )
    assert pg_query(target, "SELECT v FROM app.items WHERE id IN (50, 150) ORDER BY id") == [
        ("source 50",),
        ("source 150",),
    ]
    assert p.error is None
    p.stop()


def test_a_target_user_without_temporary_tables_upserts_by_statements(
    pg_server: Any, pg_db: str, tmp_path: Path, run_pipeline: Any, caplog: Any
) -> None:
    """Staging tables are temporary tables; TEMPORARY on a database is PUBLIC's by default but
    may be revoked: then updates go by statements (a warning says so), not a refused change."""
    name = f"target{os.getpid()}_{next(_counter)}"
    target = pg_server.create_database(name)
    role = f"notemp{os.getpid()}_{next(_counter)}"
    pg_exec(
        target,
        f"CREATE ROLE {role} LOGIN",
        f"REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC",
        f"GRANT CREATE ON DATABASE {name} TO {role}",
    )
    pg_exec(pg_db, "CREATE TABLE items (id int PRIMARY KEY, v text)")
    cfg = target_config(
        tmp_path / "c.yaml",
        pg_source(pg_db, ["public.items"]),
        pg_sink(pg_server.dsn(name, user=role), schema="app", copy_min_rows=1),
        name=f"pgnotemp{next(_counter)}",
    )
    with caplog.at_level("WARNING"):
        p = run_pipeline(cfg)
        select = "SELECT id, v FROM {} ORDER BY id"
        source, copy = select.format("public.items"), select.format("app.items")
        pg_exec(pg_db, "INSERT INTO items SELECT g, 'new' FROM generate_series(1, 100) g")
        wait_equal(lambda: pg_query(pg_db, source), lambda: pg_query(target, copy), "inserts")
        pg_exec(pg_db, "UPDATE items SET v = 'changed ' || id")
        wait_equal(lambda: pg_query(pg_db, source), lambda: pg_query(target, copy), "updates")
    assert p.error is None
    assert "may not create temporary tables" in caplog.text
    p.stop()


def test_a_transaction_over_batches_keeps_its_order_when_statements_are_deferred(
    pg_server: Any, pg_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """One source transaction over two batches (``max_events`` 100), every group by COPY
    (``copy_min_rows`` 1): keys inserted and deleted in the first batch come back in the second,
    where they are new keys again. What one batch queued goes before the next batch's
    statements, so the deletes of the first batch do not land after those inserts."""
    target = pg_server.create_database(f"target{os.getpid()}_{next(_counter)}")
    pg_exec(pg_db, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (0, '0')")
    cfg = target_config(
        tmp_path / "c.yaml",
        pg_source(pg_db, ["public.t"]),
        pg_sink(target, schema="app", copy_min_rows=1),
        name=f"pgorder{next(_counter)}",
        max_events=100,
    )
    p = run_pipeline(cfg)
    wait_until(lambda: pg_rows(target, "SELECT id FROM app.t") == [(0,)], 60, "the snapshot")
    # the staging table of deletes made beforehand (making one sends what is queued)
    pg_exec(pg_db, "INSERT INTO t VALUES (1000, 'x')", "DELETE FROM t WHERE id = 1000")
    wait_until(lambda: pg_rows(target, "SELECT count(*) FROM app.t") == [(1,)], 60, "warm-up")
    pg_exec(
        pg_db,
        "INSERT INTO t SELECT g, 'first ' || g FROM generate_series(1, 50) g",
        "DELETE FROM t WHERE id BETWEEN 1 AND 30",
        "INSERT INTO t SELECT g, 'first ' || g FROM generate_series(51, 70) g",
        # the second batch: new keys only (its first statement copies them)
        "INSERT INTO t SELECT g, 'again ' || g FROM generate_series(1, 30) g",
    )
    select = "SELECT id, v FROM {} ORDER BY id"
    wait_equal(
        lambda: pg_query(pg_db, select.format("public.t")),
        lambda: pg_query(target, select.format("app.t")),
        "the transaction applied",
    )
    assert p.error is None
    p.stop()


def test_tables_of_the_same_columns_in_one_batch_take_staging_tables_of_their_own(
    pg_server: Any, pg_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """Updates of two tables with the same columns go through staging tables of the same
    shape, both queued in one batch: each group copies into a staging table no queued
    statement reads. The first is made while another table's statement is queued: making it
    sends the queue, which must not free the one just taken for the next group."""
    target = pg_server.create_database(f"target{os.getpid()}_{next(_counter)}")
    fill = "INSERT INTO {} SELECT g, 'old' FROM generate_series({}, {}) g"
    pg_exec(
        pg_db,
        "CREATE TABLE c (id int PRIMARY KEY, n int)",
        "CREATE TABLE a (id int PRIMARY KEY, v text)",
        "CREATE TABLE b (id int PRIMARY KEY, v text)",
        "INSERT INTO c SELECT g, g FROM generate_series(1, 20) g",
        fill.format("a", 1, 20),
        fill.format("b", 101, 120),  # keys a does not have: its rows would fit there
    )
    cfg = target_config(
        tmp_path / "c.yaml",
        pg_source(pg_db, ["public.c", "public.a", "public.b"]),
        pg_sink(target, schema="app", copy_min_rows=1),
        name=f"pgshape{next(_counter)}",
        max_events=100,  # the batch defers its statements (at least half of it)
    )
    p = run_pipeline(cfg)
    count = "SELECT count(*) FROM {}"
    wait_until(
        lambda: [pg_rows(target, count.format(f"app.{t}")) for t in "cab"] == [[(20,)]] * 3,
        60,
        "the snapshot",
    )
    pg_exec(pg_db, "UPDATE c SET n = -n", "UPDATE a SET v = 'a new'", "UPDATE b SET v = 'b new'")
    select = "SELECT id, v FROM {} ORDER BY id"
    for t in ("a", "b"):
        wait_equal(
            lambda t=t: pg_query(pg_db, select.format(f"public.{t}")),  # type: ignore[misc]
            lambda t=t: pg_query(target, select.format(f"app.{t}")),  # type: ignore[misc]
            f"table {t} in the target",
        )
    assert p.error is None
    p.stop()
