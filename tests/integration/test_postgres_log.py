"""Postgres -> built-in log, end to end, with `cdc run` as a real process."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.logtools import read_log, row_events, write_config

pytestmark = pytest.mark.integration


def config(
    tmp_path: Path, dsn: str, tables: list[str], name: str = "shop", extra: str = ""
) -> Path:
    slot = "s_" + dsn.rsplit("dbname=", 1)[1]  # slots are per server: one per test database
    return write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: {name}
    source:
      type: postgres
      dsn: "{dsn}"
      tables: {tables!r}
      slot: {slot}
    sink:
      type: log
      path: {tmp_path / "log"}
{extra}
""",
    )


def count_rows(path: Path) -> int:
    return len(row_events(read_log(path)))


def test_mixed_transactions_in_commit_order(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, amount numeric(12,2) NOT NULL, "
            "status text, created timestamptz, d date, u uuid, j jsonb, b bytea, f float8, "
            "r real, s smallint, big bigint, ok boolean, ts timestamp, js json, v varchar(20))"
        )
        c.execute("CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text)")
        c.execute("ALTER TABLE customers REPLICA IDENTITY FULL")
    d = daemon(config(tmp_path, pg_db, ["public.orders", "public.customers"])).start()
    # the slot exists once the daemon is streaming; changes before that are not captured
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    with psycopg.connect(pg_db) as c:
        with c.transaction():
            c.execute(
                "INSERT INTO orders VALUES (1, 12.50, 'new', '2024-05-06 07:08:09.123456+02', "
                "'2024-02-29', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', "
                "'\\x00ff', 1.5, 2.25, -32768, 9223372036854775807, true, "
                "'2001-02-03 04:05:06.789', '{\"x\": 1}', 'héllo')"
            )
            c.execute("INSERT INTO customers VALUES (10, 'ann', 'ann@example.com')")
        with c.transaction():
            c.execute("UPDATE orders SET status = 'paid', amount = 13.00 WHERE id = 1")
            c.execute("UPDATE customers SET email = NULL WHERE id = 10")
        with c.transaction():
            c.execute("INSERT INTO orders (id, amount) VALUES (2, -0.01)")
            c.execute("DELETE FROM orders WHERE id = 1")
            c.execute("DELETE FROM customers WHERE id = 10")
        with c.transaction():
            c.execute("UPDATE orders SET id = 3 WHERE id = 2")  # primary key change
        with c.transaction():
            c.execute("TRUNCATE customers")
    log = tmp_path / "log"
    wait_until(lambda: count_rows(log) >= 10, 30, "10 row events")
    assert d.terminate() == 0
    records = read_log(log)
    rows = row_events(records)
    ops = [(r["topic"], r["value"]["op"]) for r in rows]
    assert ops == [
        ("shop.public.orders", "c"),
        ("shop.public.customers", "c"),
        ("shop.public.orders", "u"),
        ("shop.public.customers", "u"),
        ("shop.public.orders", "c"),
        ("shop.public.orders", "d"),
        ("shop.public.customers", "d"),
        ("shop.public.orders", "d"),  # pk change: delete of the old key ...
        ("shop.public.orders", "c"),  # ... and create of the new one
        ("shop.public.customers", "t"),
    ]
    assert len(rows) == 10

    ins = rows[0]["value"]
    assert rows[0]["key"] == {"id": 1}
    assert ins["before"] is None
    after = ins["after"]
    assert after["amount"] == __import__("decimal").Decimal("12.50")
    assert after["created"] == "2024-05-06T05:08:09.123456Z"
    assert after["d"] == 19782  # days since 1970-01-01 of 2024-02-29
    assert after["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert after["j"] == '{"a": [1, 2]}'
    assert after["b"] == b"\x00\xff"
    assert (after["f"], after["r"], after["s"], after["big"]) == (1.5, 2.25, -32768, 2**63 - 1)
    assert after["ok"] is True
    assert after["ts"] == 981173106789000  # microseconds since the epoch
    assert after["js"] == '{"x": 1}'
    assert after["v"] == "héllo"
    src = ins["source"]
    assert src["connector"] == "postgresql" and src["db"] and src["schema"] == "public"
    assert src["table"] == "orders" and src["snapshot"] == "false"
    assert isinstance(src["txId"], int) and isinstance(src["lsn"], int) and src["lsn"] > 0

    # REPLICA IDENTITY DEFAULT: no before image for an update; FULL: the whole old row
    assert rows[2]["value"]["before"] is None
    assert rows[2]["value"]["after"]["status"] == "paid"
    assert rows[3]["value"]["before"] == {"id": 10, "name": "ann", "email": "ann@example.com"}
    assert rows[3]["value"]["after"] == {"id": 10, "name": "ann", "email": None}
    # deletes: DEFAULT carries the key (other required columns take Debezium's fallback), FULL all
    assert rows[5]["key"] == {"id": 1} and rows[5]["value"]["before"]["id"] == 1
    assert rows[5]["value"]["before"]["status"] is None
    assert rows[6]["value"]["before"] == {"id": 10, "name": "ann", "email": None}
    # primary-key change
    assert rows[7]["key"] == {"id": 2} and rows[8]["key"] == {"id": 3}
    # truncate: no key, no row images
    assert rows[9]["key"] is None
    assert rows[9]["value"]["before"] is None and rows[9]["value"]["after"] is None

    # transactions: boundaries around each transaction, ids and orders consistent
    tx = [r for r in records if r["topic"] == "shop.transaction"]
    assert [t["value"]["status"] for t in tx] == ["BEGIN", "END"] * 5
    first_end = tx[1]["value"]
    assert first_end["event_count"] == 2
    assert sorted(
        (c["data_collection"], c["event_count"]) for c in first_end["data_collections"]
    ) == [
        ("public.customers", 1),
        ("public.orders", 1),
    ]
    assert ins["transaction"]["id"] == tx[0]["value"]["id"]
    assert [r["value"]["transaction"]["total_order"] for r in rows[:2]] == [1, 2]
    # commit order: LSNs and txIds never go backwards across transactions
    tx_ids = [r["value"]["source"]["txId"] for r in rows]
    assert tx_ids == sorted(tx_ids)
    offsets = [r["offset"] for r in records]
    assert offsets == list(range(len(records)))


def test_decoded_with_stored_schema_round_trips(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    """The log's schema store holds the exact writer schemas; fastavro reads every record."""
    import fastavro

    from cdc.avro import unframe
    from cdc.sinks.log import LogReader

    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id bigint PRIMARY KEY, n numeric, x text)")
    d = daemon(config(tmp_path, pg_db, ["public.t"])).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO t VALUES (1, 3.14159, 'a'), (2, -12345678901234567890.5, NULL)")
        c.execute("ALTER TABLE t ADD COLUMN y int")
        c.execute("INSERT INTO t VALUES (3, 0, 'c', 7)")
    wait_until(lambda: count_rows(tmp_path / "log") >= 3, 30, "3 row events")
    d.terminate()
    reader = LogReader(tmp_path / "log")
    seen_ids = set()
    values = []
    for r in reader.records(0, "shop.public.t"):
        sid, body = unframe(r.value or b"")
        seen_ids.add(sid)
        schema = fastavro.parse_schema(reader.schemas.get(sid))
        values.append(fastavro.schemaless_reader(__import__("io").BytesIO(body), schema, None))
    assert len(seen_ids) == 2, "ALTER TABLE yields a new schema version"
    assert [v["after"]["id"] for v in values] == [1, 2, 3]
    n = values[1]["after"]["n"]
    assert n["scale"] == 1  # numeric without scale: io.debezium.data.VariableScaleDecimal
    assert "y" not in values[0]["after"] and values[2]["after"]["y"] == 7


def _writer(dsn: str, total: int, stop: threading.Event, committed: list[int]) -> None:
    rnd = random.Random(7)
    with psycopg.connect(dsn, autocommit=False) as c:
        i = 0
        while i < total and not stop.is_set():
            n = min(rnd.randint(1, 5), total - i)
            with c.cursor() as cur:
                cur.executemany(
                    "INSERT INTO load (id, payload) VALUES (%s, %s)",
                    [(i + k, f"row {i + k}") for k in range(n)],
                )
            c.commit()
            i += n
            committed.append(i)


def test_kill_9_loses_and_duplicates_nothing(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    total = 50_000
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE load (id int PRIMARY KEY, payload text)")
    cfg = config(
        tmp_path, pg_db, ["public.load"], extra="    batch: {max_events: 500, max_wait_ms: 20}"
    )
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    stop = threading.Event()
    committed: list[int] = []
    w = threading.Thread(target=_writer, args=(pg_db, total, stop, committed))
    w.start()
    log = tmp_path / "log"
    try:
        kills = 0
        for threshold in (5_000, 20_000, 35_000):
            wait_until(
                lambda t=threshold: count_rows(log) >= t, 120, f"{threshold} rows in the log"
            )
            d.kill()
            kills += 1
            d = daemon(cfg).start()
    finally:
        w.join()
    assert committed[-1] == total
    wait_until(lambda: count_rows(log) >= total, 180, "all rows in the log")
    d.terminate()
    rows = row_events(read_log(log))
    ids = [r["value"]["after"]["id"] for r in rows]
    assert len(ids) == total, f"{len(ids) - len(set(ids))} duplicates"
    assert ids == list(range(total)), "every committed row exactly once, in commit order"
    tx = [r for r in read_log(log, "shop.transaction")]
    begins = sum(1 for t in tx if t["value"]["status"] == "BEGIN")
    ends = sum(1 for t in tx if t["value"]["status"] == "END")
    assert begins == ends == len(committed)
    assert kills == 3


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_corrupt_tail_is_dropped_and_refetched(
    tmp_path: Path, pg_db: str, daemon: Any, damage: str
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, x text)")
    cfg = config(
        tmp_path, pg_db, ["public.t"], extra="    batch: {max_events: 100, max_wait_ms: 5}"
    )
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    log = tmp_path / "log"
    with psycopg.connect(pg_db, autocommit=True) as c:
        for i in range(1, 6):  # five transactions, each its own frame
            c.execute("INSERT INTO t VALUES (%s, %s)", (i, "x" * 50))
            wait_until(lambda n=i: count_rows(log) >= n, 30, f"row {i}")
    d.kill()  # the worst case: no clean shutdown
    seg = sorted(log.glob("*.seg"))[-1]
    data = bytearray(seg.read_bytes())
    if damage == "cut":
        data = data[:-7]
    else:
        data[-20] ^= 0x40
    seg.write_bytes(bytes(data))
    assert count_rows(log) == 4, "a reader stops before the damaged frame"
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO t VALUES (6, 'after the crash')")
    d = daemon(cfg).start()
    wait_until(lambda: count_rows(log) >= 6, 30, "all six rows")
    d.terminate()
    assert "dropping the last" in d.output()
    ids = [r["value"]["after"]["id"] for r in row_events(read_log(log))]
    assert ids == [1, 2, 3, 4, 5, 6]


def test_sigterm_stops_an_idle_pipeline_promptly(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    """An idle stream waits on the socket for up to status_interval_s; SIGTERM must not wait."""
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
        c.execute("INSERT INTO t VALUES (1)")
    slot = "s_" + pg_db.rsplit("dbname=", 1)[1]
    path = write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: idle
    source:
      type: postgres
      dsn: "{pg_db}"
      tables: [public.t]
      slot: {slot}
      status_interval_s: 60
      heartbeat_interval_s: 0
      slot_check_interval_s: 600
    sink:
      type: log
      path: {tmp_path / "log"}
""",
    )
    d = daemon(path).start()
    wait_until(lambda: count_rows(tmp_path / "log") == 1, 60, "the snapshot row")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO t VALUES (2)")
    wait_until(lambda: count_rows(tmp_path / "log") == 2, 30, "the streamed row")
    # Before the stop woke the wait, this took until the server's next keepalive (~10 s here).
    assert d.terminate(timeout=5) == 0, d.output()
