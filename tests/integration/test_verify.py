"""`cdc verify`: Postgres -> Postgres and MariaDB -> Postgres, on real servers.

The target tables are made here as the database target would make them (the type mapping of
sinks/_sql), filled with the source's rows, then changed by hand: verify must name each key it
finds different and nothing else, and say equal when the tables are.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc import plugins
from cdc.cli import main
from cdc.verify import TableRef, Verifier, report
from cdc.verifycmd import state_table
from tests.conftest import wait_until
from tests.logtools import write_config

pytestmark = pytest.mark.integration
_counter = itertools.count()

PG_TABLE = (
    "CREATE TABLE accounts (id int PRIMARY KEY, name text, balance numeric(12,2), "
    "score float8, ok boolean, at timestamptz, d date, raw bytea, t time, tags text[], "
    "price money)"
)
PG_ROWS = (
    "INSERT INTO accounts SELECT n, 'name ' || n, n * 1.25, n / 7.0, n % 2 = 0, "
    "timestamptz '2024-01-01 00:00:00+02' + n * interval '1 minute 0.5 seconds', "
    "date '2020-02-29' + n, decode(lpad(to_hex(n), 8, '0'), 'hex'), "
    "time '00:00:00.25' + n * interval '1 second', ARRAY['a', n::text], n * 0.25 "
    "FROM generate_series(1, 3000) AS n"
)


def target_db(pg_server: Any) -> str:
    """Another database on the session server, as the migration target."""
    return str(pg_server.create_database(f"tgt{os.getpid()}_{next(_counter)}"))


def positions(dsn: str, position: dict[str, Any]) -> None:
    """The target's state table as the database target keeps it, with ``position``."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE SCHEMA IF NOT EXISTS cdc")
        c.execute(
            "CREATE TABLE IF NOT EXISTS cdc.cdc_positions (pipeline text PRIMARY KEY, "
            "position jsonb NOT NULL, updated_at timestamptz)"
        )
        c.execute(
            "INSERT INTO cdc.cdc_positions VALUES ('shop', %s, now()) ON CONFLICT (pipeline) "
            "DO UPDATE SET position = excluded.position",
            (json.dumps(position),),
        )


def wal_now(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT pg_current_wal_insert_lsn() - '0/0'").fetchone()
    assert row is not None
    return int(row[0])


def verify(
    source: Any, target: Any, kind: str, tables: list[str], timeout_s: float = 60
) -> tuple[int, list[str]]:
    """Run the comparison as `cdc verify` does (its sides made from the plugins), small
    chunks so that ranges and their bisection are exercised."""
    lines: list[str] = []
    v = Verifier(
        source,
        target,
        "shop",
        state_table(None),
        plugins.plugin("source", kind).verify_reached,
        chunk=500,
        timeout_s=timeout_s,
        say=lines.append,
    )
    pairs = [(TableRef(*t.split(".")), TableRef("public", t.split(".")[1])) for t in tables]
    results = v.run(pairs)
    return report(results, lines.append, 20, v.behind), lines


def pg_side(dsn: str, label: str) -> Any:
    return plugins.plugin("source", "postgres").verify_side(dsn, label)


def test_postgres_to_postgres_equal_then_each_hand_made_change_named(
    pg_db: str, pg_server: Any
) -> None:
    tgt = target_db(pg_server)
    for dsn in (pg_db, tgt):
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(PG_TABLE)
            c.execute(PG_ROWS)
    positions(tgt, {"lsn": 0})  # behind: verify waits until the target says it applied more
    source, target = pg_side(pg_db, "source"), pg_side(tgt, "target")
    try:
        out: list[Any] = []
        t = threading.Thread(
            target=lambda: out.append(verify(source, target, "postgres", ["public.accounts"]))
        )
        t.start()
        positions(tgt, {"lsn": wal_now(pg_db) + (1 << 30)})  # the pipeline applies through
        t.join(120)
        code, lines = out[0]
        assert lines == ["public.accounts -> public.accounts: equal (3000 rows)"]
        assert code == 0

        with psycopg.connect(tgt, autocommit=True) as c:
            c.execute("UPDATE accounts SET balance = balance + 0.01 WHERE id = 17")
            c.execute("UPDATE accounts SET at = at + interval '1 microsecond' WHERE id = 2500")
            c.execute("DELETE FROM accounts WHERE id = 1234")
            c.execute("INSERT INTO accounts (id, name) VALUES (99999, 'hand made')")
            # within the float tolerance (6 decimal places): not a difference
            c.execute("UPDATE accounts SET score = score + 1e-9 WHERE id = 5")
        code, lines = verify(source, target, "postgres", ["public.accounts"])
        assert lines == [
            "public.accounts -> public.accounts: 4 row(s) differ of 3000",
            "  id=1234: missing in the target",
            "  id=17: differs",
            "  id=2500: differs",
            "  id=99999: only in the target",
        ]
        assert code == 1
    finally:
        source.close()
        target.close()


MARIADB_TABLE = (
    "CREATE TABLE items (id int PRIMARY KEY, price decimal(10,2), ratio double, f float, "
    "d date, dt datetime(6), ts timestamp(6) NULL, t time(6), name varchar(50), "
    "raw varbinary(20), flag tinyint(1), color enum('red','green'), note text, bits bit(5))"
)
# the target's table as sinks/_sql maps the MariaDB columns' Avro types into Postgres
MAPPED_TABLE = (
    "CREATE TABLE items (id int PRIMARY KEY, price numeric(10,2), ratio double precision, "
    "f real, d date, dt timestamp(6), ts timestamptz, t time(6), name text, raw bytea, "
    "flag boolean, color text, note text, bits bit varying(5))"
)


@pytest.mark.parametrize("flavour", ["mariadb", "mysql"])
def test_mariadb_to_postgres_canonical_values_agree_and_differences_are_named(
    flavour: str, request: pytest.FixtureRequest, pg_db: str
) -> None:
    """MariaDB 10.11 and MySQL 9.7 (which has no MD5(): rows are hashed with SHA-256)."""
    server = request.getfixturevalue(f"{flavour}_server")
    mysql_db = f"v{os.getpid()}_{next(_counter)}"
    server.create_database(mysql_db)
    conn = server.connect(mysql_db)
    cur = conn.cursor()
    cur.execute("SET time_zone = '+00:00'")
    cur.execute(MARIADB_TABLE)
    rows = []
    for n in range(1, 1201):
        rows.append(
            (
                n,
                f"{n * 1.25:.2f}",
                n / 7,
                n / 4,
                f"2020-{1 + n % 12:02d}-{1 + n % 28:02d}",
                f"2021-03-04 05:06:{n % 60:02d}.{n:06d}",
                None if n % 10 == 0 else f"2022-07-08 09:10:{n % 60:02d}.5",
                f"{n % 24:02d}:{n % 60:02d}:07.{n % 1000:06d}",
                f"naïve {n}",
                bytes([n % 256, 0, 255]),
                n % 2,
                "red" if n % 3 else "green",
                None if n % 5 == 0 else f"note {n}",
            )
        )
    cur.executemany(f"INSERT INTO items VALUES ({', '.join(['%s'] * 13)}, b'00101')", rows)
    conn.commit()
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(MAPPED_TABLE)
        with c.cursor() as pc:
            pc.executemany(
                f"INSERT INTO items VALUES ({', '.join(['%s'] * 13)}, B'00101')",
                [
                    (*r[:6], None if r[6] is None else r[6] + "+00", *r[7:10], bool(r[10]), *r[11:])
                    for r in rows
                ],
            )
    cur.execute("SHOW MASTER STATUS" if flavour == "mariadb" else "SHOW BINARY LOG STATUS")
    file, pos = cur.fetchone()[:2]
    mysql = plugins.plugin("source", "mysql")
    kw = server.connect_kwargs()
    source = mysql.verify_side(kw["host"], kw["port"], kw["user"], kw.get("password", ""), "source")
    positions(pg_db, {"file": file, "pos": pos})
    target = pg_side(pg_db, "target")
    try:
        code, lines = verify(source, target, "mysql", [f"{mysql_db}.items"])
        assert lines == [f"{mysql_db}.items -> public.items: equal (1200 rows)"]
        assert code == 0
        with psycopg.connect(pg_db, autocommit=True) as c:
            c.execute("UPDATE items SET t = t + interval '1 microsecond' WHERE id = 3")
            c.execute("UPDATE items SET name = 'naive 44' WHERE id = 44")
            c.execute("DELETE FROM items WHERE id = 600")
            c.execute("INSERT INTO items (id) VALUES (5000)")
        code, lines = verify(source, target, "mysql", [f"{mysql_db}.items"])
        assert lines == [
            f"{mysql_db}.items -> public.items: 4 row(s) differ of 1200",
            "  id=3: differs",
            "  id=44: differs",
            "  id=5000: only in the target",
            "  id=600: missing in the target",
        ]
        assert code == 1
    finally:
        source.close()
        target.close()
        conn.close()


def test_usage_errors_exit_2(
    tmp_path: Path, pg_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: shop
    source: {{type: postgres, dsn: "{pg_db}", tables: [public.accounts]}}
    sink: {{type: log, path: log}}
  - name: apply
    source: {{type: log, path: elsewhere}}
    sink: {{type: postgres, dsn: "{pg_db}"}}
""",
    )
    assert main(["verify", "-c", str(conf), "apply"]) == 2
    assert "reads the log" in (err := capsys.readouterr().err) and "which no pipeline of" in err
    assert main(["verify", "-c", str(conf), "nosuch"]) == 2
    assert "no pipeline 'nosuch' in" in capsys.readouterr().err
    assert main(["verify", "-c", str(conf), "shop"]) == 2
    assert "writes to a log sink: verify compares a database source with a database target" in (
        capsys.readouterr().err
    )


def test_cdc_verify_of_a_running_mariadb_to_postgres_pipeline(
    tmp_path: Path,
    mariadb_server: Any,
    mysql_db: str,
    pg_db: str,
    daemon: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command end to end, on the database target applying a running MariaDB pipeline:
    it waits for the target to apply through the binlog point it read, finds the tables equal
    while rows keep arriving, then names a row deleted in the target by hand."""
    from tests.integration.targets.conftest import mariadb_source, pg_sink, target_config

    conn = mariadb_server.connect(mysql_db)
    cur = conn.cursor()
    cur.execute(MARIADB_TABLE)
    conf = target_config(
        tmp_path / "cdc.yaml", mariadb_source(mariadb_server, [f"{mysql_db}.*"]), pg_sink(pg_db)
    )
    d = daemon(conf).start()
    insert = (
        "INSERT INTO items VALUES (%s, 12.5, 1/3, 0.75, '2024-02-29', "
        "'2024-02-29 23:59:59.999999', '2024-03-01 00:00:00.5', '12:34:56.000007', 'x', "
        "X'00ff', 1, 'green', NULL, b'00011')"
    )
    for n in range(1, 201):
        cur.execute(insert, (n,))
    conn.commit()
    table = f"{mysql_db}.items"

    def applied() -> bool:
        try:
            with psycopg.connect(pg_db, autocommit=True) as c:
                row = c.execute(f'SELECT count(*) FROM "{mysql_db}".items').fetchone()
        except psycopg.errors.UndefinedTable:
            return False
        return row is not None and row[0] == 200

    wait_until(applied, 60, "the first rows applied")
    done = threading.Event()

    def writer() -> None:  # the pipeline keeps applying while verify runs
        w = mariadb_server.connect(mysql_db)
        n = 1000
        while not done.wait(0.01):  # paced: a writer faster than the apply is not the point
            w.cursor().execute(insert, (n,))
            w.commit()
            n += 1
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        capsys.readouterr()
        assert main(["verify", "-c", str(conf), "apply", table, "--chunk", "50"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{table} -> {mysql_db}.items: equal (")
    finally:
        done.set()
        t.join(30)
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(f'DELETE FROM "{mysql_db}".items WHERE id = 42')
    # A new binlog file: its end lies past the last commit the pipeline will ever see while
    # nothing is written, so the target is known to have caught up by the GTIDs it applied.
    cur.execute("FLUSH BINARY LOGS")
    assert main(["verify", "-c", str(conf), "apply", "--chunk", "50", "--timeout", "20"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["  id=42: missing in the target"]
    assert out[0].startswith(f"{table} -> {mysql_db}.items: 1 row(s) differ of ")
    assert d.terminate() == 0
    conn.close()


def test_cdc_verify_of_postgres_to_mariadb(
    tmp_path: Path,
    pg_db: str,
    mariadb_server: Any,
    daemon: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Postgres into a MariaDB target (the target branch's sink): the canonical texts agree
    across the two servers (booleans, numeric, timestamptz, time, bytea, uuid, jsonb, arrays),
    and a row changed in the target by hand is named."""
    from tests.integration.targets.conftest import mysql_sink, pg_source, target_config

    database = f"pgmy{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(PG_TABLE.replace("price money)", "price money, u uuid, doc jsonb)"))
    conf = target_config(
        tmp_path / "cdc.yaml",
        pg_source(pg_db, ["public.accounts"], heartbeat_interval_s=0.5),
        mysql_sink(mariadb_server, database=database),
        name="shop",
    )
    d = daemon(conf).start()
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(PG_ROWS.replace("FROM generate_series(1, 3000)", "FROM generate_series(1, 300)"))
        c.execute(
            "UPDATE accounts SET u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
            """doc = '{"b": [1, 2.5, "x"], "a": null}' WHERE id % 3 = 0"""
        )

    def applied() -> bool:
        try:
            rows = mariadb_server.sql("SELECT count(*), count(doc) FROM accounts", database)
        except Exception:  # created with the first batch
            return False
        return bool(rows[0] == (300, 100))

    wait_until(applied, 60, "the rows applied into MariaDB")
    capsys.readouterr()
    assert main(["verify", "-c", str(conf), "shop", "--chunk", "64"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"public.accounts -> {database}.accounts: equal (300 rows)"
    ]
    mariadb_server.sql("UPDATE accounts SET t = '00:00:01.250000' WHERE id = 9", database)
    assert main(["verify", "-c", str(conf), "shop"]) == 1
    assert capsys.readouterr().out.splitlines()[1:] == ["  id=9: differs"]
    assert d.terminate() == 0


def test_a_composite_key_and_a_text_key(pg_db: str, pg_server: Any) -> None:
    """Ranges and rows of a two-column key (tuple comparison in SQL), and keys that are text."""
    tgt = target_db(pg_server)
    for dsn in (pg_db, tgt):
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE TABLE lines (o int, n text, qty int, PRIMARY KEY (o, n))")
            c.execute(
                "INSERT INTO lines SELECT o, 'line ' || n, o * n FROM generate_series(1, 300) o, "
                "generate_series(1, 5) n"
            )
    positions(tgt, {"lsn": wal_now(pg_db) + (1 << 30)})
    with psycopg.connect(tgt, autocommit=True) as c:
        c.execute("UPDATE lines SET qty = 0 WHERE o = 150 AND n = 'line 3'")
        c.execute("DELETE FROM lines WHERE o = 7 AND n = 'line 5'")
    source, target = pg_side(pg_db, "source"), pg_side(tgt, "target")
    try:
        code, lines = verify(source, target, "postgres", ["public.lines"])
    finally:
        source.close()
        target.close()
    assert lines == [
        "public.lines -> public.lines: 2 row(s) differ of 1500",
        "  o=150, n=line 3: differs",
        "  o=7, n=line 5: missing in the target",
    ]
    assert code == 1
