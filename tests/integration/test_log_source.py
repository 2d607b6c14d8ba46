"""The built-in log as a source: Postgres -> log, then log -> log and log -> a row sink, against
the same changes fed directly (a real Postgres, `cdc run` as real processes)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.cli import main
from cdc.config import parse
from cdc.model import ChangeBatch, RowChange, TableSchema, TxBoundary
from cdc.pipeline import Parts, Pipeline, registered_source
from tests.conftest import wait_until
from tests.logtools import (
    assert_same_per_topic,
    comparable,
    log_by_topic,
    read_log,
    row_events,
    write_config,
)

pytestmark = pytest.mark.integration

TABLES = (
    "CREATE TABLE orders (id int PRIMARY KEY, amount numeric(12,2) NOT NULL DEFAULT 1.50, "
    "loose numeric, status text DEFAULT 'new', created timestamptz, d date, u uuid, j jsonb, "
    "b bytea DEFAULT '\\x01ff', f float8, r real, s smallint, big bigint, ok boolean, "
    "ts timestamp, tags text[], t time, iv interval, p point, v varchar(20))",
    "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text)",
    "ALTER TABLE customers REPLICA IDENTITY FULL",
)
ORDER = (
    "INSERT INTO orders VALUES ({n}, 12.5, 3.14159265358979323846, 'new', "
    "'2024-05-06 07:08:09.123456+02', '2024-02-29', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
    "'{{\"a\": [1, 2]}}', '\\x00ff', 1.5, 2.25, -32768, 9223372036854775807, true, "
    "'2001-02-03 04:05:06.789', '{{x,\"y z\"}}', '13:14:15.5', '1 day 2 hours', '(1.5,-2)', "
    "'héllo')"
)


class RowsSink:
    """A sink that takes decoded rows (as a database target does) and keeps every batch: each
    change complete (event_details), to compare them whole."""

    event_details = True

    def __init__(self) -> None:
        self.written: list[ChangeBatch] = []
        self.lock = threading.Lock()

    def write_rows(self, batch: ChangeBatch) -> None:
        with self.lock:
            self.written.append(batch)

    def committed(self) -> Any:
        return None  # each run starts afresh: the test reads one run

    def acknowledgeable(self) -> Any:
        with self.lock:
            return self.written[-1].position if self.written else None

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass

    def events(self) -> list[RowChange | TxBoundary]:
        with self.lock:
            return [e for b in self.written for e in b.events]

    def rows(self) -> list[RowChange]:
        return [e for e in self.events() if isinstance(e, RowChange)]

    def complete(self, rows: int) -> bool:
        """At least ``rows`` row changes, and the last transaction's END (a batch may end
        just before it)."""
        events = self.events()
        last = events[-1] if events else None
        done = isinstance(last, TxBoundary) and last.status == "END"
        return done and sum(isinstance(e, RowChange) for e in events) >= rows


def slot(dsn: str, name: str) -> str:
    return f"s_{name}_" + dsn.rsplit("dbname=", 1)[1]  # slots are per server


def pg_pipeline(
    dsn: str, name: str, log: Path | None, tables: str, extra: str = "", sink_extra: str = ""
) -> str:
    """One pipeline (YAML) capturing ``tables`` of ``dsn`` under the topic prefix shop, in
    batches of at most 7 events (so a larger transaction spans frames), into ``log``; a
    heartbeat every half second (what `cdc verify` waits for when nothing else is written)."""
    sink = f"{{type: log, path: {log}{sink_extra}}}" if log else "{type: log, path: unused}"
    return f"""
  - name: {name}
    topic_prefix: shop
    batch: {{max_events: 7, max_wait_ms: 20}}
    source: {{type: postgres, dsn: "{dsn}", tables: [{tables}], slot: {slot(dsn, name)},
              heartbeat_interval_s: 0.5}}
    sink: {sink}
{extra}"""


def log_pipeline(name: str, source: Path, log: Path, extra: str = "", sink_extra: str = "") -> str:
    return f"""
  - name: {name}
    topic_prefix: shop
    batch: {{max_wait_ms: 20}}
    source: {{type: log, path: {source}{extra}}}
    sink: {{type: log, path: {log}{sink_extra}}}
"""


def in_process(yaml: str, sink: RowsSink) -> tuple[Pipeline, threading.Thread]:
    """A pipeline of this process whose sink is ``sink``, started."""
    cfg = parse("pipelines:" + yaml).pipelines[0]
    p = Pipeline(cfg, Parts(open_source=registered_source, open_sink=lambda c, x: sink))
    t = threading.Thread(target=p.run, daemon=True)
    t.start()
    return p, t


@pytest.fixture
def stopping() -> Iterator[list[tuple[Pipeline, threading.Thread]]]:
    started: list[tuple[Pipeline, threading.Thread]] = []
    yield started
    for p, _ in started:
        p.stop()
    for _, t in started:
        t.join(30)


def slot_exists(dsn: str, name: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot(dsn, name),)
        ).fetchone()
    return bool(row and row[0])


def write_changes(dsn: str) -> None:
    """Every kind of change, a transaction larger than a batch, and an ADD COLUMN between."""
    with psycopg.connect(dsn) as c:
        with c.transaction():
            c.execute(ORDER.format(n=1))
            c.execute("INSERT INTO orders (id) VALUES (2)")  # the defaults
            c.execute("INSERT INTO customers VALUES (10, 'ann', 'ann@example.com')")
        with c.transaction():
            for n in range(100, 120):  # 20 rows + BEGIN + END: three batches of 7 and one more
                c.execute(ORDER.format(n=n))
        with c.transaction():
            c.execute("UPDATE orders SET status = 'paid', amount = 13.00 WHERE id = 1")
            c.execute("UPDATE customers SET email = NULL WHERE id = 10")
        c.execute("ALTER TABLE orders ADD COLUMN note text DEFAULT 'n/a'")
        c.commit()
        with c.transaction():
            c.execute("INSERT INTO orders (id, note) VALUES (3, 'after the alter')")
            c.execute("DELETE FROM orders WHERE id = 2")
            c.execute("UPDATE orders SET id = 4 WHERE id = 3")  # a primary key change
            c.execute("DELETE FROM customers WHERE id = 10")
        with c.transaction():
            c.execute("TRUNCATE customers")


def comparable_row(ev: RowChange) -> tuple[Any, ...]:
    """What a row sink gets of a change, without the one field that depends on when the
    pipeline's slot was made (``source.sequence``: its first element is the last commit seen)."""
    source = {k: v for k, v in ev.source.items() if k != "sequence"}
    return (ev.table.topic, ev.op, ev.before, ev.after, source, ev.ts_ms, ev.event_id, ev.tx)


def columns(t: TableSchema) -> list[tuple[Any, ...]]:
    """A version's columns as a log carries them (the log keeps no database column types)."""
    return [(c.name, c.avro, c.optional, c.default) for c in t.columns]


def test_a_row_sink_fed_through_the_log_gets_what_it_gets_directly_and_a_relay_log_the_same_avro(
    tmp_path: Path, pg_db: str, daemon: Any, stopping: list[Any]
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        for sql in TABLES:
            c.execute(sql)
    first, relay, orders_only = tmp_path / "log1", tmp_path / "log2", tmp_path / "log3"
    by_topic = tmp_path / "log4"
    tables = "public.orders, public.customers"
    conf = write_config(
        tmp_path / "cdc.yaml",
        "pipelines:"
        + pg_pipeline(pg_db, "cap", first, tables)
        + log_pipeline("relay", first, relay)
        + log_pipeline("orders_only", first, orders_only, ", tables: [public.orders]")
        + log_pipeline("by_topic", first, by_topic, ", topics: [shop.public.orders]"),
    )
    d = daemon(conf).start()
    direct, through_log = RowsSink(), RowsSink()
    stopping.append(in_process(pg_pipeline(pg_db, "direct", None, tables), direct))
    wait_until(lambda: slot_exists(pg_db, "direct") and slot_exists(pg_db, "cap"), 30, "slots")
    # The log is read while it grows: this one starts before the first change is written.
    stopping.append(in_process(log_pipeline("fromlog", first, relay), through_log))
    write_changes(pg_db)
    expected = 20 + 2 + 1 + 2 + 4 + 1 + 1  # rows of write_changes (a truncate is one)
    wait_until(lambda: direct.complete(expected), 60, f"{expected} direct rows")
    wait_until(lambda: through_log.complete(expected), 60, f"{expected} rows via the log")
    # Every record relayed, the transaction events after the last row too (the first log is
    # complete: its last transaction, the truncate, is one frame).
    wait_until(lambda: len(row_events(read_log(first))) >= expected, 60, "the first log")
    total = len(read_log(first))
    ends = sum(1 for r in read_log(first) if r["value"] and r["value"].get("status") == "END")
    wait_until(lambda: len(read_log(relay)) >= total, 60, f"the relay's {total} records")
    for one_table in (orders_only, by_topic):
        wait_until(
            lambda p=one_table: (
                sum(1 for r in read_log(p) if r["value"] and r["value"].get("status") == "END")
                >= ends
            ),
            60,
            f"{ends} transactions in {one_table.name}",
        )
    assert d.terminate() == 0

    # Value for value, the same row changes and the same transaction events, in one order.
    got, want = through_log.events(), direct.events()
    assert [comparable_row(e) for e in got if isinstance(e, RowChange)] == [
        comparable_row(e) for e in want if isinstance(e, RowChange)
    ]
    assert [e for e in got if isinstance(e, TxBoundary)] == [
        e for e in want if isinstance(e, TxBoundary)
    ]
    # One table version object per schema version, matching the direct ones one to one.
    rows = [
        (a.table, b.table)
        for a, b in zip(got, want, strict=True)
        if isinstance(a, RowChange) and isinstance(b, RowChange)
    ]
    pairs = {(id(a), id(b)) for a, b in rows}
    assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(pairs) == 3
    for a, b in rows:
        assert columns(a) == columns(b)
        assert (a.namespace, a.table, a.key) == (b.namespace, b.table, b.key)
    # A batch ends inside a transaction exactly when the log's frame did: the 20-row one.
    is_open = False
    for batch in through_log.written:
        for e in batch.events:
            if isinstance(e, TxBoundary):
                is_open = e.status == "BEGIN"
        assert batch.open_txn == is_open
    assert sum(b.open_txn for b in through_log.written) >= 3

    # The relay's log decodes to the first log's values, record for record (keys, the
    # transaction topic and all), apart from when each pipeline processed an event.
    assert_same_per_topic(log_by_topic(relay), log_by_topic(first), "relay")
    # A relay of one table: its rows, and END events counting only them.
    kept = read_log(orders_only)
    assert {r["topic"] for r in kept} == {"shop.public.orders", "shop.transaction"}
    ends_kept = [r["value"] for r in kept if r["topic"] == "shop.transaction"]
    ends_kept = [v for v in ends_kept if v["status"] == "END"]
    assert ends_kept and all(
        v["event_count"] == sum(dc["event_count"] for dc in v["data_collections"])
        and all(dc["data_collection"] == "public.orders" for dc in v["data_collections"])
        for v in ends_kept
    )
    assert sum(v["event_count"] for v in ends_kept) == len(row_events(kept))
    # ... and the same when the one table is chosen by its topic
    assert_same_per_topic(log_by_topic(by_topic), log_by_topic(orders_only), "by topic")


def records(path: Path) -> list[tuple[Any, ...]]:
    """A log's records as what a consumer compares: topic, event id, key, value (without when
    the pipeline processed it)."""
    return [(r["topic"], r["event_id"], r["key"], comparable(r["value"])) for r in read_log(path)]


def test_the_relay_follows_a_growing_log_and_resumes_exactly_once_after_kill_9(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text)")
    first, second = tmp_path / "log1", tmp_path / "log2"
    capture = daemon(
        write_config(
            tmp_path / "capture.yaml",
            # tombstones in both logs: the relay reads none and its sink writes its own
            "pipelines:"
            + pg_pipeline(pg_db, "cap", first, "public.items", sink_extra=", tombstones: true"),
        )
    ).start()
    relay_conf = write_config(
        tmp_path / "relay.yaml",
        "pipelines:" + log_pipeline("relay", first, second, sink_extra=", tombstones: true"),
    )
    relay = daemon(relay_conf).start()
    wait_until(lambda: slot_exists(pg_db, "cap"), 30, "the capture's slot")
    done = threading.Event()

    def writer() -> None:
        with psycopg.connect(pg_db) as c:
            for n in range(600):
                with c.transaction():
                    c.execute("INSERT INTO items VALUES (%s, %s, 'x')", (n, n % 7))
                    if n % 3 == 0:
                        c.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (n // 2,))
                    if n % 5 == 0:
                        c.execute("DELETE FROM items WHERE id = %s", (n // 3,))
                time.sleep(0.005)  # paced, so that both kills land while the log grows
        done.set()

    w = threading.Thread(target=writer)
    w.start()
    killed_while_writing = []
    try:
        for at in (150, 500):  # two kill -9s of the relay while the first log keeps growing
            wait_until(lambda at=at: len(read_log(second)) >= at, 60, f"{at} relayed records")
            relay.kill()
            killed_while_writing.append(not done.is_set())
            relay = daemon(relay_conf).start()
    finally:
        w.join(120)
    assert done.is_set()
    assert killed_while_writing[0]
    assert capture.terminate() == 0  # the first log is complete now: the relay catches up
    total = len(read_log(first))
    wait_until(lambda: len(read_log(second)) >= total, 60, f"the relay's {total} records")
    assert relay.terminate() == 0
    got, want = records(second), records(first)
    assert [r[1] for r in got] == [r[1] for r in want]  # every event once, in the log's order
    assert got == want
    deletes = sum(isinstance(r[3], dict) and r[3].get("op") == "d" for r in got)
    assert deletes > 0 and sum(r[3] is None for r in got) == deletes  # a tombstone after each


def table_rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as c:
        return list(c.execute(f"SELECT * FROM {table} ORDER BY id").fetchall())


def test_postgres_to_log_to_postgres_gives_what_postgres_to_postgres_gives_and_verify_agrees(
    tmp_path: Path, pg_db: str, pg_server: Any, daemon: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log as the hub of a migration: captured once into a log, applied from it into a
    Postgres target; the same tables as a pipeline applying the source directly makes, and
    `cdc verify` finds the direct target equal to the source (then names a row changed by
    hand)."""
    with psycopg.connect(pg_db, autocommit=True) as c:
        for sql in TABLES:
            c.execute(sql)
    via_log, direct = (str(pg_server.create_database(f"{n}{os.getpid()}")) for n in ("vl", "dt"))
    first = tmp_path / "log1"
    tables = "public.orders, public.customers"
    conf = write_config(
        tmp_path / "cdc.yaml",
        "pipelines:"
        + pg_pipeline(pg_db, "cap", first, tables)
        + f"""
  - name: apply
    batch: {{max_wait_ms: 20}}
    source: {{type: log, path: {first}}}
    sink: {{type: postgres, dsn: "{via_log}"}}
  - name: direct
    batch: {{max_events: 7, max_wait_ms: 20}}
    source: {{type: postgres, dsn: "{pg_db}", tables: [{tables}], slot: {slot(pg_db, "direct")},
              heartbeat_interval_s: 0.5}}
    sink: {{type: postgres, dsn: "{direct}"}}
""",
    )
    d = daemon(conf).start()
    wait_until(lambda: slot_exists(pg_db, "direct") and slot_exists(pg_db, "cap"), 30, "slots")
    write_changes(pg_db)
    with psycopg.connect(pg_db, autocommit=True) as c:  # rows left in both tables at the end
        c.execute(ORDER.format(n=7))
        c.execute("INSERT INTO customers VALUES (11, 'bo', NULL)")

    def applied(table: str) -> bool:
        """Both targets hold as many rows as the source, and the same ones."""
        try:
            want, got = table_rows(direct, table), table_rows(via_log, table)
        except psycopg.errors.UndefinedTable:  # not created yet: no row applied
            return False
        return len(want) == len(table_rows(pg_db, table)) and got == want

    for table in ("orders", "customers"):
        wait_until(lambda t=table: applied(t), 60, f"{table} through the log as directly")
    capsys.readouterr()
    assert main(["verify", "-c", str(conf), "direct"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "public.orders -> public.orders: equal (23 rows)",
        "public.customers -> public.customers: equal (1 row)",
    ]
    with psycopg.connect(direct, autocommit=True) as c:
        c.execute("UPDATE orders SET status = 'by hand' WHERE id = 7")
    assert main(["verify", "-c", str(conf), "direct", "public.orders"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "public.orders -> public.orders: 1 row(s) differ of 23",
        "  id=7: differs",
    ]
    # Through the hub: the database the log's writer captures against the target the log
    # feeds; the target's position (a log offset) waited for through the log's frames.
    assert main(["verify", "-c", str(conf), "apply"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "public.orders -> public.orders: equal (23 rows)",
        "public.customers -> public.customers: equal (1 row)",
    ]
    with psycopg.connect(via_log, autocommit=True) as c:
        c.execute("DELETE FROM customers WHERE id = 11")
    assert main(["verify", "-c", str(conf), "apply"]) == 1
    assert capsys.readouterr().out.splitlines()[1:] == [
        "public.customers -> public.customers: 1 row(s) differ of 1",
        "  id=11: missing in the target",
    ]
    assert d.terminate() == 0


def test_a_mariadb_capture_through_the_log_gives_a_row_sink_the_direct_row_changes(
    tmp_path: Path, mariadb_server: Any, mysql_db: str, stopping: list[Any]
) -> None:
    """The MySQL source's values (its own decoders: dates as days, TIME as micros, YEAR, SET,
    BIT, unsigned BIGINT, FLOAT(M,D), JSON, ...) survive the log value for value."""
    from cdc.status import BOARD
    from tests.integration.targets.conftest import mariadb_source

    server = mariadb_server
    server.sql(
        "CREATE TABLE kinds (id INT PRIMARY KEY, y YEAR, t TIME(6), f FLOAT, f2 FLOAT(7,3), "
        "dd DOUBLE, dec1 DECIMAL(30,10), e ENUM('a','b,c'), s SET('x','y','z'), bits BIT(5), "
        "bin BINARY(4), d DATE, dt DATETIME(6), ts TIMESTAMP(6) NULL, u BIGINT UNSIGNED, "
        "m MEDIUMINT, j JSON, txt TEXT, blb BLOB, p POINT)",
        mysql_db,
    )
    log = tmp_path / "log1"
    source = mariadb_source(server, [f"{mysql_db}.*"])

    def pipeline(name: str, server_id: int, sink: str) -> str:
        src = {**source, "server_id": server_id}
        return f"""
  - name: {name}
    topic_prefix: shop
    batch: {{max_events: 7, max_wait_ms: 20}}
    source: {json.dumps(src)}
    sink: {sink}
"""

    cap_cfg = parse("pipelines:" + pipeline("mcap", 4101, f"{{type: log, path: {log}}}"))
    cap = Pipeline(cap_cfg.pipelines[0])
    t = threading.Thread(target=cap.run, daemon=True)
    t.start()
    stopping.append((cap, t))
    direct, through_log = RowsSink(), RowsSink()
    stopping.append(in_process(pipeline("mdirect", 4102, "{type: log, path: unused}"), direct))
    wait_until(
        lambda: (
            BOARD.get("mcap").state == "streaming" and BOARD.get("mdirect").state == "streaming"
        ),
        60,
        "both MariaDB pipelines streaming",
    )
    stopping.append(in_process(log_pipeline("mfromlog", log, tmp_path / "unused"), through_log))
    conn = server.connect(mysql_db)
    cur = conn.cursor()
    for n in range(1, 13):
        cur.execute(
            "INSERT INTO kinds VALUES (%s, 1901 + %s, '-838:59:58.999999', 1.5e-3, 1234.5678, "
            "1e300, '12345678901234567890.0123456789', 'b,c', 'x,z', b'10101', X'00ff', "
            "'0000-00-00', '1000-01-01 00:00:00.000001', '2038-01-19 03:14:07.999999', "
            "18446744073709551615, -8388608, '{\"k\": [1, null]}', 'é', X'00', POINT(1, 2))",
            (n, n),
        )
        if n % 4 == 0:
            cur.execute("UPDATE kinds SET t = '00:00:00', s = '' WHERE id = %s", (n - 1,))
            cur.execute("DELETE FROM kinds WHERE id = %s", (n - 2,))
        conn.commit()
    conn.close()
    expected = 12 + 3 + 3
    wait_until(lambda: direct.complete(expected), 60, f"{expected} direct rows")
    wait_until(lambda: through_log.complete(expected), 60, f"{expected} rows via the log")
    got, want = through_log.events(), direct.events()
    assert [comparable_row(e) for e in got if isinstance(e, RowChange)] == [
        comparable_row(e) for e in want if isinstance(e, RowChange)
    ]
    assert [e for e in got if isinstance(e, TxBoundary)] == [
        e for e in want if isinstance(e, TxBoundary)
    ]


def test_a_frame_ending_inside_a_transaction_after_another_ends_gives_a_batch_per_part(
    tmp_path: Path, pg_db: str, daemon: Any, stopping: list[Any]
) -> None:
    """A frame holding a whole small transaction and the start of a large one (written while
    the capture catches up: the small one is too small for the batch to end at its END) is read
    as two batches: the small transaction, resuming after its END, then the large one's start
    with ``open_txn``. A database target commits at the first instead of holding its
    transaction open until some frame happens to end on a boundary."""
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text)")
    log = tmp_path / "log1"
    conf = write_config(
        tmp_path / "capture.yaml", "pipelines:" + pg_pipeline(pg_db, "cap", log, "public.items")
    )
    d = daemon(conf).start()
    wait_until(lambda: slot_exists(pg_db, "cap"), 30, "the capture's slot")
    with psycopg.connect(pg_db, autocommit=True) as c:  # streaming: a first durable position
        c.execute("INSERT INTO items VALUES (0, 0, 'first')")
    wait_until(lambda: log.is_dir() and len(row_events(read_log(log))) >= 1, 60, "a first row")
    assert d.terminate() == 0
    with psycopg.connect(pg_db) as c:
        with c.transaction():  # BEGIN, a row, END: 3 events, below half a batch of 7
            c.execute("INSERT INTO items VALUES (1, 1, 'small')")
        with c.transaction():
            for n in range(100, 120):
                c.execute("INSERT INTO items VALUES (%s, 1, 'large')", (n,))
    d = daemon(conf).start()
    wait_until(lambda: len(row_events(read_log(log))) >= 22, 60, "the capture")
    assert d.terminate() == 0
    sink = RowsSink()
    stopping.append(in_process(log_pipeline("fromlog", log, tmp_path / "unused"), sink))
    wait_until(lambda: sink.complete(22), 60, "22 rows via the log")
    ended = False
    with sink.lock:
        for batch in sink.written:
            ends = [e for e in batch.events if isinstance(e, TxBoundary) and e.status == "END"]
            # a batch that ends inside a transaction holds no END: it would have ended there
            assert not (batch.open_txn and ends), batch
            ids = [e.after[0] for e in batch.events if isinstance(e, RowChange) and e.after]
            ended |= ids == [1] and bool(ends) and not batch.open_txn
    assert ended, "the small transaction came as a batch of its own"
