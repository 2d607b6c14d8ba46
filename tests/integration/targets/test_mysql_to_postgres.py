"""MariaDB -> Postgres target: every MySQL type arrives with its value (docs/targets.md), and
inserts, updates, deletes, a primary-key change, a truncate and an ADD/DROP COLUMN are applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.integration.targets.conftest import (
    mariadb_source,
    my_exec,
    my_query,
    pg_query,
    pg_sink,
    target_config,
    wait_equal,
)

pytestmark = pytest.mark.integration

# (column, MySQL type, literal, Postgres type, the Postgres value as text): every row of
# sources/mysql/TYPES.md. Lossy cases (docs/targets.md) are asserted as they arrive: TIME out of
# 00:00-24:00 needs the interval override (the three *_dur columns), geometry is MySQL's bytes.
TYPES: list[tuple[str, str, str, str, str]] = [
    ("ti", "tinyint", "-128", "smallint", "-128"),
    ("tiu", "tinyint unsigned", "255", "smallint", "255"),
    ("si", "smallint", "-32768", "smallint", "-32768"),
    ("siu", "smallint unsigned", "65535", "integer", "65535"),
    ("mi", "mediumint", "-8388608", "integer", "-8388608"),
    ("miu", "mediumint unsigned", "16777215", "integer", "16777215"),
    ("i", "int", "-2147483648", "integer", "-2147483648"),
    ("iu", "int unsigned", "4294967295", "bigint", "4294967295"),
    ("bi", "bigint", "-9223372036854775808", "bigint", "-9223372036854775808"),
    (
        "biu",
        "bigint unsigned",
        "18446744073709551615",
        "numeric(20,0)",
        "18446744073709551615",
    ),
    ("de", "decimal(10,3)", "-1234567.891", "numeric(10,3)", "-1234567.891"),
    ("fl", "float", "1.5", "real", "1.5"),
    ("flmd", "float(7,2)", "-12345.67", "double precision", "-12345.67"),
    ("db", "double", "-2.25e100", "double precision", "-2.25e+100"),
    ("b1", "bit(1)", "b'1'", "boolean", "true"),
    ("b12", "bit(12)", "b'101010101010'", "bit varying(12)", "101010101010"),
    ("bo", "boolean", "true", "smallint", "1"),
    ("ch", "char(5)", "'ab'", "text", "ab"),
    ("vc", "varchar(20)", "'héllo'", "text", "héllo"),
    ("tx", "text", "'txt'", "text", "txt"),
    ("bn", "binary(4)", "x'0102'", "bytea", "\\x01020000"),
    ("vb", "varbinary(10)", "x'ff00'", "bytea", "\\xff00"),
    ("bl", "blob", "x'deadbeef'", "bytea", "\\xdeadbeef"),
    ("da", "date", "'2024-02-29'", "date", "2024-02-29"),
    ("tm", "time", "'13:14:15'", "time(6) without time zone", "13:14:15"),
    ("tm_dur", "time", "'-838:59:59'", "interval", "-838:59:59"),
    ("tm6_dur", "time(6)", "'25:00:00.000001'", "interval", "25:00:00.000001"),
    ("tm3_dur", "time(3)", "'-733:00:00.001'", "interval", "-733:00:00.001"),
    (
        "dt",
        "datetime",
        "'2024-01-02 03:04:05'",
        "timestamp(3) without time zone",
        "2024-01-02 03:04:05",
    ),
    (
        "dt3",
        "datetime(3)",
        "'2024-01-02 03:04:05.123'",
        "timestamp(3) without time zone",
        "2024-01-02 03:04:05.123",
    ),
    (
        "dt6",
        "datetime(6)",
        "'2024-01-02 03:04:05.123456'",
        "timestamp(6) without time zone",
        "2024-01-02 03:04:05.123456",
    ),
    (
        "ts",
        "timestamp NULL",
        "'2024-01-02 03:04:05'",
        "timestamp with time zone",
        "2024-01-02 03:04:05+00",
    ),
    (
        "ts6",
        "timestamp(6) NULL",
        "'2024-01-02 03:04:05.5'",
        "timestamp with time zone",
        "2024-01-02 03:04:05.5+00",
    ),
    ("yr", "year", "2024", "integer", "2024"),
    ("js", "json", """'{"a": [1, 2.5, null]}'""", "jsonb", '{"a": [1, 2.5, null]}'),
    ("en", "enum('a','b')", "'b'", "text", "b"),
    ("en2", "enum('a,b','c')", "'a,b'", "text", "a,b"),
    ("st", "set('x','y','z')", "'z,x'", "text", "x,z"),
    (
        "geo",
        "geometry",
        "ST_GeomFromText('POINT(1 2)')",
        "bytea",
        "\\x000000000101000000000000000000f03f0000000000000040",
    ),
]


@pytest.mark.parametrize("copy_min_rows", [1, 1_000_000], ids=["copy", "statements"])
def test_every_mysql_type_arrives_in_postgres(
    mariadb_server: Any,
    mysql_db: str,
    pg_db: str,
    tmp_path: Path,
    run_pipeline: Any,
    copy_min_rows: int,
) -> None:
    db = mysql_db
    cols = ", ".join(f"{c} {t}" for c, t, *_ in TYPES)
    mariadb_server.sql(f"CREATE TABLE alltypes (id INT PRIMARY KEY, {cols})", db)
    literals = ", ".join(lit for _, _, lit, *_ in TYPES)
    names = ", ".join(c for c, *_ in TYPES)
    insert = f"INSERT INTO alltypes (id, {names}) VALUES (%s, {literals})"
    my_exec(mariadb_server, db, "SET time_zone = '+00:00'", insert % 1)  # snapshot
    overrides = {f"{db}.alltypes.{c}": "interval" for c, *_ in TYPES if c.endswith("_dur")}
    cfg = target_config(
        tmp_path / "c.yaml",
        mariadb_source(mariadb_server, [f"{db}.alltypes"]),
        pg_sink(
            pg_db,
            schema=f"migrated{copy_min_rows}",
            column_types=overrides,
            copy_min_rows=copy_min_rows,
        ),
    )
    p = run_pipeline(cfg)
    # stream: row 2 inserted empty, then every column updated (an upsert of every type)
    sets = ", ".join(f"{c} = {lit}" for c, _, lit, *_ in TYPES)
    my_exec(mariadb_server, db, "INSERT INTO alltypes (id) VALUES (2)")
    my_exec(
        mariadb_server, db, "SET time_zone = '+00:00'", f"UPDATE alltypes SET {sets} WHERE id = 2"
    )
    my_exec(mariadb_server, db, "INSERT INTO alltypes (id) VALUES (3)")  # every column NULL

    select = ", ".join(f"{c}::text" for c, *_ in TYPES)
    sql = f"SELECT id, {select} FROM migrated{copy_min_rows}.alltypes ORDER BY id"
    expected_row = tuple(text for *_, text in TYPES)

    def arrived() -> list[tuple[Any, ...]] | None:
        try:
            rows = pg_query(pg_db, sql)
        except Exception:  # the table is created with the first batch
            return None
        return rows if len(rows) == 3 else None

    rows = wait_until(arrived, 60, f"3 rows in migrated{copy_min_rows}.alltypes")
    for row, id_ in zip(rows, (1, 2), strict=False):
        assert row[0] == id_
        diff = [
            (c, got, want)
            for (c, *_), got, want in zip(TYPES, row[1:], expected_row, strict=True)
            if got != want
        ]
        assert not diff, f"row {id_}: (column, got, expected): {diff}"
    assert rows[2] == (3,) + (None,) * len(TYPES)
    types = dict(
        pg_query(
            pg_db,
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            f"WHERE a.attrelid = 'migrated{copy_min_rows}.alltypes'::regclass AND a.attnum > 0",
        )
    )
    assert types.pop("id") == "integer"
    assert types == {c: t for c, _, _, t, _ in TYPES}
    p.stop()


def _items(server: Any, db: str) -> list[tuple[Any, ...]]:
    return my_query(server, db, "SELECT id, name, price, qty FROM items ORDER BY id")


def test_inserts_updates_deletes_pk_change_truncate_and_columns_added_and_dropped(
    mariadb_server: Any, mysql_db: str, pg_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    src = mariadb_server
    src.sql("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40), price DECIMAL(8,2))", db)
    src.sql("CREATE TABLE gone (id INT PRIMARY KEY)", db)
    src.sql("INSERT INTO items VALUES (1, 'one', 1.50), (2, 'two', 2.50), (3, 'three', 3)", db)
    src.sql("INSERT INTO gone VALUES (1), (2)", db)
    cfg = target_config(
        tmp_path / "c.yaml",
        mariadb_source(src, [f"{db}.items", f"{db}.gone"]),
        pg_sink(pg_db, tables={f"{db}.gone": "archive.gone_rows"}, table_prefix="m_"),
    )
    p = run_pipeline(cfg)
    # The snapshot first: a table altered while a consistent snapshot reads it is refused by
    # the server (1412, "table definition has changed"), which the daemon answers by
    # restarting the pipeline; this test is about the changes streamed after it.
    wait_equal(
        lambda: [(1, "one"), (2, "two"), (3, "three")],
        lambda: pg_query(pg_db, f"SELECT id, name FROM {db}.m_items ORDER BY id"),
        "the snapshot in the target",
    )
    my_exec(
        src,
        db,
        "INSERT INTO items VALUES (4, 'four', 4)",
        "UPDATE items SET price = 9.99 WHERE id = 1",
        "DELETE FROM items WHERE id = 2",
        "UPDATE items SET id = 30 WHERE id = 3",  # a primary-key change
        "INSERT INTO items VALUES (2, 'two again', 2)",
    )
    my_exec(src, db, "TRUNCATE gone")
    src.sql("ALTER TABLE items ADD COLUMN qty INT NOT NULL DEFAULT 7", db)
    my_exec(src, db, "INSERT INTO items VALUES (5, 'five', 5, 50)", "INSERT INTO gone VALUES (3)")
    wait_equal(
        lambda: [(i, n, pr, q) for i, n, pr, q in _items(src, db)],
        lambda: pg_query(pg_db, f"SELECT id, name, price, qty FROM {db}.m_items ORDER BY id"),
        "items in the target after ADD COLUMN",
    )
    assert pg_query(pg_db, "SELECT id FROM archive.gone_rows") == [(3,)]
    src.sql("ALTER TABLE items DROP COLUMN name", db)
    my_exec(src, db, "UPDATE items SET qty = 8 WHERE id = 5")
    wait_until(
        lambda: pg_query(pg_db, f"SELECT qty FROM {db}.m_items WHERE id = 5") == [(8,)],
        30,
        "the update after DROP COLUMN",
    )
    columns = pg_query(
        pg_db,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'm_items' ORDER BY ordinal_position",
        (db,),
    )
    assert columns == [("id",), ("price",), ("qty",)]
    p.stop()
    # The applied position sits in the target, in the same transaction as the rows.
    (position,) = pg_query(pg_db, "SELECT position FROM cdc.cdc_positions WHERE pipeline = 'apply'")
    assert position[0]


def test_widening_is_applied_and_another_type_change_stops_naming_it(
    mariadb_server: Any, mysql_db: str, pg_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    from cdc.errors import SinkError
    from tests.integration.targets.conftest import pg_rows, stopped_with

    db = mysql_db
    src = mariadb_server
    src.sql("CREATE TABLE w (id INT PRIMARY KEY, n INT, d DECIMAL(6,2), s VARCHAR(5))", db)
    src.sql("INSERT INTO w VALUES (1, 1, 1.25, 'a')", db)
    cfg = target_config(
        tmp_path / "c.yaml", mariadb_source(src, [f"{db}.w"]), pg_sink(pg_db, schema="m")
    )
    p = run_pipeline(cfg)
    src.sql("ALTER TABLE w MODIFY n BIGINT, MODIFY d DECIMAL(10,3)", db)
    src.sql("INSERT INTO w VALUES (2, 9000000000, 1234567.125, 'b')", db)
    wait_until(
        lambda: (
            pg_rows(pg_db, "SELECT id, n, d::text FROM m.w ORDER BY id")
            == [(1, 1, "1.250"), (2, 9000000000, "1234567.125")]
        ),
        60,
        "the widened columns",
    )
    types = pg_query(
        pg_db,
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'm.w'::regclass AND attname IN ('n', 'd') ORDER BY attname",
    )
    assert types == [("d", "numeric(10,3)"), ("n", "bigint")]
    src.sql("UPDATE w SET s = '7'", db)
    src.sql("ALTER TABLE w MODIFY s INT", db)  # a change of kind: text to integer
    src.sql("INSERT INTO w VALUES (3, 3, 3, 3)", db)
    err = stopped_with(p)
    assert isinstance(err, SinkError) and not err.retryable
    assert "postgres target table m.w, column s: text -> integer" in str(err)
    assert pg_query(pg_db, "SELECT count(*) FROM m.w") == [(2,)]
