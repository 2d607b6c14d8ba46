"""Transforms end to end: a real source -> transforms -> the built-in log, read back as a user
would.

Checks masked, hashed, dropped, truncated and routed values for snapshot rows and streamed rows,
skipped deletes (and the transaction counts of what was emitted), and that a table's new version
after ALTER TABLE ADD COLUMN is transformed as well.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.logtools import read_log, row_events, write_config

pytestmark = pytest.mark.integration

SALT = "pepper"


def v2(value: str) -> str:
    """Debezium's v2 hash (salt then the value's UTF-8 bytes, SHA-256, hex)."""
    return hashlib.sha256((SALT + value).encode()).hexdigest()


def transforms(ns: str, prefix: str) -> str:
    """The transforms under test, for tables in namespace ``ns`` (schema or database)."""
    return rf"""
    transforms:
      - type: drop_columns
        columns: ['{ns}\.users\.secret']
      - type: mask_columns
        columns: ['{ns}\.users\.(ssn|phone)']
        chars: 3
      - type: hash_columns
        columns: ['{ns}\.users\.email']
        salt: {SALT}
        version: v2
      - type: truncate_columns
        columns: ['{ns}\.users\.bio']
        chars: 5
      - type: skip_operations
        operations: [d]
      - type: route_topics
        regex: '{prefix}\.{ns}\.orders_\d+'
        replacement: '{prefix}.{ns}.orders'
"""


def ends(log: Path) -> int:
    return sum(1 for r in read_log(log) if r["value"] and r["value"].get("status") == "END")


def check_log(log: Path, prefix: str, ns: str) -> None:
    """What the workload of either source must leave in the log, transformed."""
    records = read_log(log)
    rows = row_events(records)
    users = [r for r in rows if r["topic"] == f"{prefix}.{ns}.users"]
    orders = [r for r in rows if r["topic"] == f"{prefix}.{ns}.orders"]
    assert {r["topic"] for r in rows} == {f"{prefix}.{ns}.users", f"{prefix}.{ns}.orders"}
    assert all(r["value"]["op"] != "d" for r in rows), "deletes are skipped"
    assert not any(r["value"] is None for r in records), "no tombstones of skipped deletes"

    # snapshot rows
    snap = [r["value"]["after"] for r in users if r["value"]["op"] == "r"]
    assert snap == [
        {"id": 1, "email": v2("ann@example.com"), "ssn": "***", "bio": "hello"},
        {"id": 2, "email": None, "ssn": None, "bio": None},
    ]
    assert [r["key"] for r in users[:2]] == [{"id": 1}, {"id": 2}]
    # streamed rows, before and after the ALTER TABLE ADD COLUMN
    streamed = [(r["value"]["op"], r["value"]["after"]) for r in users if r["value"]["op"] != "r"]
    assert streamed == [
        ("c", {"id": 3, "email": v2("bob@example.com"), "ssn": "***", "bio": "short"}),
        ("u", {"id": 1, "email": v2("ann@new.example"), "ssn": "***", "bio": "hello"}),
        (
            "c",
            {"id": 4, "email": v2("cy@example.com"), "ssn": None, "bio": "later", "phone": "***"},
        ),
    ]
    # the routed topic: both shards, their own keys, in commit order
    got = [(r["value"]["op"], r["key"], r["value"]["after"]["amount"]) for r in orders]
    assert got == [
        ("r", {"id": 1}, 10),
        ("r", {"id": 1}, 20),
        ("c", {"id": 2}, 11),
        ("c", {"id": 2}, 21),
    ]
    assert {r["value"]["source"]["table"] for r in orders} == {"orders_1", "orders_2"}

    # transaction metadata counts only what was emitted; all-skipped transactions leave none
    ends = [r["value"] for r in records if r["topic"] == f"{prefix}.transaction"]
    ends = [e for e in ends if e["status"] == "END"]
    counted = [
        (e["event_count"], sorted((c["data_collection"], c["event_count"]) for c in collections))
        for e in ends
        for collections in [e["data_collections"]]
    ]
    assert counted == [
        (3, [(f"{ns}.orders_1", 1), (f"{ns}.orders_2", 1), (f"{ns}.users", 1)]),
        (1, [(f"{ns}.users", 1)]),  # the update; its transaction's delete was skipped
        (1, [(f"{ns}.users", 1)]),  # after the ALTER TABLE
    ]
    in_tx = [r["value"]["transaction"] for r in rows if r["value"]["op"] != "r"]
    assert [t["total_order"] for t in in_tx] == [1, 2, 3, 1, 1]


def test_postgres_transforms_snapshot_and_stream(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE users (id int PRIMARY KEY, email text, ssn varchar(11), secret text, "
            "bio text)"
        )
        c.execute("CREATE TABLE orders_1 (id int PRIMARY KEY, amount int NOT NULL)")
        c.execute("CREATE TABLE orders_2 (id int PRIMARY KEY, amount int NOT NULL)")
        c.execute(
            "INSERT INTO users VALUES (1, 'ann@example.com', '123-45-6789', 'pw', "
            "'hello world'), (2, NULL, NULL, NULL, NULL)"
        )
        c.execute("INSERT INTO orders_1 VALUES (1, 10)")
        c.execute("INSERT INTO orders_2 VALUES (1, 20)")
    slot = "s_" + pg_db.rsplit("dbname=", 1)[1]
    cfg = write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: shop
    source:
      type: postgres
      dsn: "{pg_db}"
      tables: [public.users, public.orders_1, public.orders_2]
      slot: {slot}
    sink:
      type: log
      path: {tmp_path / "log"}
{transforms("public", "shop")}
""",
    )
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
    with psycopg.connect(pg_db) as c:
        with c.transaction():
            c.execute("INSERT INTO users VALUES (3, 'bob@example.com', '1', 'x', 'short')")
            c.execute("INSERT INTO orders_1 VALUES (2, 11)")
            c.execute("DELETE FROM users WHERE id = 2")
            c.execute("INSERT INTO orders_2 VALUES (2, 21)")
        with c.transaction():
            c.execute("UPDATE users SET email = 'ann@new.example' WHERE id = 1")
            c.execute("DELETE FROM orders_1 WHERE id = 1")
        with c.transaction():  # only deletes: nothing at all is emitted
            c.execute("DELETE FROM orders_2 WHERE id = 1")
            c.execute("DELETE FROM users WHERE id = 3")
        with c.transaction():
            c.execute("ALTER TABLE users ADD COLUMN phone text")
        with c.transaction():
            c.execute(
                "INSERT INTO users (id, email, bio, phone, secret) "
                "VALUES (4, 'cy@example.com', 'later', '555-0100', 'y')"
            )
    log = tmp_path / "log"
    wait_until(lambda: ends(log) >= 3, 60, "three transactions")
    assert d.terminate() == 0
    check_log(log, "shop", "public")


def test_mysql_transforms_snapshot_and_stream(
    tmp_path: Path, mariadb_server: Any, mysql_db: str, daemon: Any
) -> None:
    from cdc.sinks.log import LogReader
    from tests.servers import MYSQL_CLIENT_SERVER_ID

    db, server = mysql_db, mariadb_server
    for statement in [
        "CREATE TABLE users (id INT PRIMARY KEY, email TEXT, ssn VARCHAR(11), secret TEXT, "
        "bio TEXT)",
        "CREATE TABLE orders_1 (id INT PRIMARY KEY, amount INT NOT NULL)",
        "CREATE TABLE orders_2 (id INT PRIMARY KEY, amount INT NOT NULL)",
        "INSERT INTO users VALUES (1, 'ann@example.com', '123-45-6789', 'pw', 'hello world'), "
        "(2, NULL, NULL, NULL, NULL)",
        "INSERT INTO orders_1 VALUES (1, 10)",
        "INSERT INTO orders_2 VALUES (1, 20)",
    ]:
        server.sql(statement, db)
    log = tmp_path / "log"
    cfg = write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: shop
    source:
      type: mysql
      host: {server.host}
      port: {server.port}
      user: {server.user}
      password: "{server.password}"
      server_id: {MYSQL_CLIENT_SERVER_ID}
      tables: [{db}.users, {db}.orders_1, {db}.orders_2]
    sink:
      type: log
      path: {log}
{transforms(db, "shop")}
""",
    )
    d = daemon(cfg).start()

    def snapshot_done() -> bool:
        if not log.exists():
            return False
        last = LogReader(log).info()["last_position"]
        # the MySQL source's positions say "snapshot" while its snapshot is unfinished
        return last is not None and "snapshot" not in last

    wait_until(snapshot_done, 60, "the snapshot to complete")

    for statements in [
        [
            "INSERT INTO users VALUES (3, 'bob@example.com', '1', 'x', 'short')",
            "INSERT INTO orders_1 VALUES (2, 11)",
            "DELETE FROM users WHERE id = 2",
            "INSERT INTO orders_2 VALUES (2, 21)",
        ],
        [
            "UPDATE users SET email = 'ann@new.example' WHERE id = 1",
            "DELETE FROM orders_1 WHERE id = 1",
        ],
        ["DELETE FROM orders_2 WHERE id = 1", "DELETE FROM users WHERE id = 3"],
        ["ALTER TABLE users ADD COLUMN phone TEXT"],
        [
            "INSERT INTO users (id, email, bio, phone, secret) "
            "VALUES (4, 'cy@example.com', 'later', '555-0100', 'y')"
        ],
    ]:
        conn = server.connect(db)
        try:
            cur = conn.cursor()
            cur.execute("BEGIN")
            for s in statements:
                cur.execute(s)
            cur.execute("COMMIT")
        finally:
            conn.close()
    wait_until(lambda: ends(log) >= 3, 60, "three transactions")
    assert d.terminate() == 0
    check_log(log, "shop", db)


def assert_stops(tmp_path: Path, pg_db: str, daemon: Any, table: str, transforms: str) -> str:
    """Run a pipeline on ``public.<table>`` with the ``transforms`` YAML lines; assert that it
    stops and is not restarted (the daemon exits non-zero) having written no row; its output."""
    slot = "s_" + pg_db.rsplit("dbname=", 1)[1]
    cfg = write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: shop
    source: {{type: postgres, dsn: "{pg_db}", tables: [public.{table}], slot: {slot}}}
    sink: {{type: log, path: {tmp_path / "log"}}}
    transforms:
{transforms}""",
    )
    d = daemon(cfg).start()
    proc = d.proc
    assert proc is not None
    wait_until(lambda: proc.poll() is not None, 60, "the daemon to exit")  # not restarted
    assert proc.returncode != 0
    assert row_events(read_log(tmp_path / "log")) == []
    out: str = d.output()
    return out


def test_dropping_a_key_column_stops_the_pipeline_with_its_name(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE users (id int PRIMARY KEY, email text)")
        c.execute("INSERT INTO users VALUES (1, 'ann@example.com')")
    output = assert_stops(
        tmp_path,
        pg_db,
        daemon,
        "users",
        "      - {type: mask_columns, columns: ['public\\.users\\.email'], chars: 2}\n"
        "      - {type: drop_columns, columns: ['public\\.users\\.(id|email)']}\n",
    )
    assert (
        "pipeline 'shop': transforms[1].columns: column public.users.id is part of the primary "
        "key of public.users and cannot be dropped" in output
    )


def test_unwrap_flat_rows_equal_the_source_rows(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    """Snapshot and stream through ``unwrap`` into the log: the last flat row of each key is
    the table's row; deletes rewritten with ``__deleted``, so deleted keys are known too."""
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(8,2), "
            "active boolean, qty bigint)"
        )
        c.execute("ALTER TABLE items REPLICA IDENTITY FULL")
        c.execute(
            "INSERT INTO items SELECT g, 'item ' || g, g * 1.5, g % 2 = 0, g::bigint * 1000000000 "
            "FROM generate_series(1, 20) g"
        )
    slot = "s_" + pg_db.rsplit("dbname=", 1)[1]
    log = tmp_path / "log"
    cfg = write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: shop
    source: {{type: postgres, dsn: "{pg_db}", tables: [public.items], slot: {slot}}}
    sink: {{type: log, path: {log}}}
    transforms:
      - type: unwrap
        delete_handling_mode: rewrite
        add_fields: [op, source.lsn]
""",
    )
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("UPDATE items SET price = NULL, name = 'renamed' WHERE id <= 5")
        c.execute("DELETE FROM items WHERE id > 17")
        c.execute("INSERT INTO items VALUES (21, 'new', 0.01, NULL, NULL)")
        expected = c.execute("SELECT * FROM items ORDER BY id").fetchall()
    wait_until(
        lambda: any(r["key"] == {"id": 21} for r in read_log(log, "shop.public.items")),
        60,
        "the last insert",
    )
    assert d.terminate() == 0
    records = read_log(log, "shop.public.items")
    latest: dict[int, dict[str, Any]] = {}
    for r in records:
        assert r["value"] is not None  # rewrite mode: no tombstones
        latest[r["key"]["id"]] = r["value"]
    assert [r["value"]["__op"] for r in records].count("d") == 3
    assert all(r["value"]["__source_lsn"] for r in records if r["value"]["__op"] != "r")
    alive = {k: v for k, v in latest.items() if v["__deleted"] == "false"}
    columns = ["id", "name", "price", "active", "qty"]
    flat = [tuple(alive[k][c] for c in columns) for k in sorted(alive)]
    assert flat == expected
    assert sorted(latest) == [*range(1, 22)]
    assert [k for k, v in latest.items() if v["__deleted"] == "true"] == [18, 19, 20]
    assert flat[:5] == [(i, "renamed", None, i % 2 == 0, i * 1000000000) for i in range(1, 6)]
    assert flat[5:17] == [
        (i, f"item {i}", Decimal(i) * Decimal("1.5"), i % 2 == 0, i * 1000000000)
        for i in range(6, 18)
    ]
    assert flat[17] == (21, "new", Decimal("0.01"), None, None)
    assert set(latest[1]) == {*columns, "__op", "__source_lsn", "__deleted"}


def test_outbox_table_without_its_columns_stops_the_pipeline(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE outbox (id int PRIMARY KEY, kind text, body text)")
        c.execute("INSERT INTO outbox VALUES (1, 'a', 'b')")
    output = assert_stops(
        tmp_path,
        pg_db,
        daemon,
        "outbox",
        "      - {type: outbox, tables: ['public\\.outbox'], payload_column: body}\n",
    )
    assert (
        "pipeline 'shop': transforms[0]: outbox table public.outbox has no column "
        "aggregate_type_column 'aggregatetype', no column aggregate_id_column 'aggregateid' "
        "(its columns: id, kind, body)" in output
    )
