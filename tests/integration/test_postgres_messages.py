"""Postgres logical decoding messages (pg_logical_emit_message) as Debezium's message events,
Postgres -> built-in log with `cdc run` as a real process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.logtools import read_log, write_config

pytestmark = pytest.mark.integration

MESSAGES = "{prefixes: ['app\\..*', audit], exclude_prefixes: ['app\\.secret']}"


def config(tmp_path: Path, dsn: str, extra: str = "") -> Path:
    slot = "s_" + dsn.rsplit("dbname=", 1)[1]  # slots are per server: one per test database
    return write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: shop
    batch: {{max_wait_ms: 20{extra}}}
    source:
      type: postgres
      dsn: "{dsn}"
      tables: [public.items]
      slot: {slot}
      messages: {MESSAGES}
    sink:
      type: log
      path: {tmp_path / "log"}
""",
    )


def emit(c: psycopg.Connection[Any], transactional: bool, prefix: str, content: bytes) -> None:
    c.execute("SELECT pg_logical_emit_message(%s, %s, %s)", (transactional, prefix, content))


def stream(log: Path) -> list[tuple[str, Any]]:
    """The log as (what, detail) in its order: ("BEGIN"/"END", event count), ("c", id), or
    ("m", (prefix, content, in a transaction))."""
    out: list[tuple[str, Any]] = []
    for r in read_log(log):
        v = r["value"]
        if r["topic"] == "shop.transaction":
            out.append((v["status"], v["event_count"]))
        elif r["topic"] == "shop.message":
            m = v["message"]
            out.append(("m", (m["prefix"], m["content"], v["source"]["txId"] is not None)))
        elif v is not None:
            out.append((v["op"], v["after"]["id"]))
    return out


def test_messages_in_commit_order_with_their_transaction(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY)")
    d = daemon(config(tmp_path, pg_db)).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c, psycopg.connect(pg_db) as t:
        with t.transaction():
            t.execute("INSERT INTO items VALUES (1)")
            emit(t, True, "app.orders", b"in tx1")
            emit(c, False, "audit", b"\x00\xff during tx1")  # decoded now, before tx1 commits
            emit(t, True, "other", b"not included")
            emit(t, True, "app.secret", b"excluded")
            t.execute("INSERT INTO items VALUES (2)")
        emit(c, False, "audit", b"between")
        emit(c, False, "app.secret", b"excluded")
        emit(c, False, "cdc.incremental.x", b"never emitted")
        emit(c, True, "app.orders", b"alone")  # a transaction of one message
        with t.transaction(force_rollback=True):
            emit(t, True, "app.orders", b"rolled back")
        t.execute("INSERT INTO items VALUES (3)")
        t.commit()
    log = tmp_path / "log"
    wait_until(lambda: ("c", 3) in stream(log), 30, "the last row in the log")
    assert d.terminate() == 0
    assert stream(log) == [
        ("m", ("audit", b"\x00\xff during tx1", False)),
        ("BEGIN", None),
        ("c", 1),
        ("m", ("app.orders", b"in tx1", True)),
        ("c", 2),
        ("END", 3),
        ("m", ("audit", b"between", False)),
        ("BEGIN", None),
        ("m", ("app.orders", b"alone", True)),
        ("END", 1),
        ("BEGIN", None),
        ("c", 3),
        ("END", 1),
    ]
    records = read_log(log, "shop.message")
    first, in_tx = records[0], records[1]
    assert first["key"] == {"prefix": "audit"}
    v = first["value"]
    assert set(v) == {"op", "ts_ms", "source", "transaction", "message"}
    assert v["transaction"] is None
    assert v["op"] == "m" and isinstance(v["ts_ms"], int)
    assert v["message"] == {"prefix": "audit", "content": b"\x00\xff during tx1"}
    src = v["source"]
    assert (src["schema"], src["table"], src["txId"], src["snapshot"]) == ("", "", None, "false")
    assert in_tx["key"] == {"prefix": "app.orders"}
    tx = read_log(log, "shop.transaction")
    assert in_tx["value"]["source"]["txId"] == int(tx[0]["value"]["id"].split(":")[0])
    assert in_tx["value"]["transaction"] == {
        "id": tx[0]["value"]["id"],
        "total_order": 2,
        "data_collection_order": 1,
    }
    assert tx[1]["value"]["data_collections"] == [
        {"data_collection": "public.items", "event_count": 2},
        {"data_collection": "LOGICAL_DECODING_MESSAGE", "event_count": 1},
    ]


def _writer(dsn: str, total: int, committed: list[int]) -> None:
    """Transaction i: a row i and a transactional message i; after every 7th, a
    non-transactional one."""
    with psycopg.connect(dsn) as c:
        for i in range(total):
            c.execute("INSERT INTO items VALUES (%s)", (i,))
            emit(c, True, "app.n", str(i).encode())
            c.commit()
            if i % 7 == 0:
                emit(c, False, "audit", str(i).encode())
                c.commit()
            committed.append(i)


def test_kill_9_loses_and_repeats_no_message(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    total = 3000
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY)")
    cfg = config(tmp_path, pg_db, extra=", max_events: 50")
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    log = tmp_path / "log"

    def messages() -> list[tuple[str, bytes]]:
        return [
            (r["value"]["message"]["prefix"], r["value"]["message"]["content"])
            for r in read_log(log, "shop.message")
        ]

    committed: list[int] = []
    w = threading.Thread(target=_writer, args=(pg_db, total, committed))
    w.start()
    try:
        for threshold in (500, 1500):
            wait_until(lambda t=threshold: len(messages()) >= t, 120, f"{threshold} messages")
            d.kill()
            d = daemon(cfg).start()
    finally:
        w.join()
    expected = []
    for i in range(total):
        expected.append(("app.n", str(i).encode()))
        if i % 7 == 0:
            expected.append(("audit", str(i).encode()))
    wait_until(lambda: len(messages()) >= len(expected), 120, "every message in the log")
    d.terminate()
    got = messages()
    assert got == expected, "every message exactly once, in commit order"
    tx = read_log(log, "shop.transaction")
    assert [t["value"]["event_count"] for t in tx if t["value"]["status"] == "END"] == [2] * total
