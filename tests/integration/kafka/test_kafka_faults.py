"""The Kafka sink under faults: kill -9 of the daemon, the broker away for 30 seconds."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.integration.kafka.conftest import (
    Event,
    KafkaCase,
    Reader,
    dbname,
    postgres_source,
    start_streaming,
)

pytestmark = pytest.mark.integration

MAX_EVENTS = 2000


def _start_load_pipeline(pg_server: Any, dsn: str, case: KafkaCase, **sink: Any) -> Any:
    """Create table ``load`` and stream it into 3-partition topics, ``MAX_EVENTS`` per batch;
    ``sink`` overrides Kafka sink fields. Returns the daemon once it streams."""
    pg_server.psql("CREATE TABLE load (id int PRIMARY KEY, v int NOT NULL)", dbname(dsn))
    pipeline = case.pipeline(
        postgres_source(dsn, "public.load"),
        case.sink(topics={"partitions": 3}, **sink),
        batch={"max_events": MAX_EVENTS},
    )
    return start_streaming(pg_server, case, [pipeline])


def _count(reader: Reader, topic: str) -> int:
    """Records in ``topic`` now (sum of its partitions' high watermarks)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    try:
        meta = reader.admin.list_topics(topic, timeout=5)
    except KafkaException:
        return 0
    if topic not in meta.topics or meta.topics[topic].error is not None:
        return 0
    c = Consumer({"bootstrap.servers": reader.bootstrap, "group.id": "count"})
    try:
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in meta.topics[topic].partitions
        )
    except KafkaException:
        return 0
    finally:
        c.close()


def _commit_lsn(e: Event) -> int:
    """The commit LSN of the event's transaction (its id is ``xid:commit LSN``)."""
    return int(e.value["transaction"]["id"].split(":")[1])


def _identity(e: Event) -> tuple[Any, ...]:
    return (e.value["source"]["lsn"], e.value["op"], e.key["id"])


def _check_per_key_order(events: list[Event]) -> None:
    """Each key's changes sit in one partition and, first occurrences taken, in commit order."""
    per_key: dict[int, list[Event]] = defaultdict(list)
    for e in events:
        per_key[e.key["id"]].append(e)
    for key, evs in per_key.items():
        assert len({e.partition for e in evs}) == 1, f"key {key} spread over partitions"
        firsts: list[Event] = []
        seen: set[tuple[Any, ...]] = set()
        for e in evs:
            if _identity(e) not in seen:
                seen.add(_identity(e))
                firsts.append(e)
        lsns = [e.value["source"]["lsn"] for e in firsts]
        assert lsns == sorted(lsns), f"key {key}: changes out of commit order: {lsns}"
        assert [(e.value["op"], e.value["after"]["v"]) for e in firsts] == [("c", 0), ("u", 1)]


def test_kill9_during_load_loses_nothing(pg_server: Any, pg_db: str, case: KafkaCase) -> None:
    db, reader = dbname(pg_db), case.reader
    d = _start_load_pipeline(pg_server, pg_db, case)
    # 25,000 inserts then 25,000 updates, 1,000 rows per transaction: 50,000 changes,
    # 0.1 s apart so the kill always lands mid-load however fast the pipeline is.
    pause = "SELECT pg_sleep(0.1);\n"
    script = "".join(
        f"INSERT INTO load SELECT g, 0 FROM generate_series({k * 1000 + 1}, {k * 1000 + 1000}) g;\n"
        + pause
        for k in range(25)
    ) + "".join(
        f"UPDATE load SET v = 1 WHERE id BETWEEN {k * 1000 + 1} AND {k * 1000 + 1000};\n" + pause
        for k in range(25)
    )
    load = threading.Thread(target=pg_server.psql, args=(script, db))
    load.start()
    topic = f"{case.prefix}.public.load"
    wait_until(lambda: _count(reader, topic) >= 10_000, 120, "10,000 records in kafka")
    d.kill()
    load.join()
    checkpoint = json.loads((case.state / "checkpoint.json").read_text())["position"]
    assert _count(reader, topic) < 50_000, "the load finished before the kill: nothing tested"

    d2 = case.daemon(case.config).start()
    events = reader.read([topic], at_least=50_000, timeout=180)
    distinct = {_identity(e) for e in events}
    assert len(distinct) == 50_000
    rows = {(e.key["id"], e.value["after"]["v"]) for e in events}
    assert rows == {(i, v) for i in range(1, 25_001) for v in (0, 1)}
    _check_per_key_order(events)
    # Duplicates come only from the window after the last checkpoint, at most one batch.
    seen: set[tuple[Any, ...]] = set()
    duplicates = []
    for e in sorted(events, key=lambda e: e.offset):
        if _identity(e) in seen:
            duplicates.append(e)
        seen.add(_identity(e))
    assert len(duplicates) <= MAX_EVENTS
    # ... from transactions that committed after it. Not "changes after its LSN": a heartbeat
    # position is the walsender's WAL end, which may lie among the changes of a transaction
    # still open then (it is decoded as it is written, sent at its commit); resuming there
    # streams that transaction whole, and those of its changes already sent come again with
    # LSNs below the checkpoint's.
    assert all(_commit_lsn(e) >= checkpoint["lsn"] for e in duplicates), [
        (e.value["source"]["lsn"], e.value["transaction"]) for e in duplicates[:3]
    ]
    # Nothing more arrives once the daemon caught up (no replay loop).
    assert len(reader.read([topic])) == len(events)
    assert d2.terminate() == 0


def _lsn(text: str) -> int:
    hi, lo = text.strip().split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def test_broker_away_30s_mid_load_daemon_recovers_unaided(
    pg_server: Any, pg_db: str, case: KafkaCase
) -> None:
    db, kafka, reader, state = dbname(pg_db), case.kafka, case.reader, case.state
    d = _start_load_pipeline(pg_server, pg_db, case)
    stop_load = threading.Event()

    def load() -> None:
        # 500-row transactions, about one a second, until told to stop: the load spans the
        # outage.
        k = 0
        while not stop_load.is_set() or k < 10:
            pg_server.psql(
                f"INSERT INTO load SELECT g, 0 FROM generate_series({k * 500 + 1}, "
                f"{k * 500 + 500}) g",
                db,
            )
            k += 1
            time.sleep(1)
        nonlocal total
        total = k * 500

    total = 0
    loader = threading.Thread(target=load)
    loader.start()
    topic = f"{case.prefix}.public.load"
    slot = f"cdc_{case.prefix}"
    try:
        wait_until(lambda: _count(reader, topic) >= 3000, 120, "3,000 records in kafka")
        kafka.stop()
        outage_ends = time.monotonic() + 30
        wait_until(lambda: "unreachable" in d.output(), 30, "the daemon to notice the outage")
        held = json.loads((state / "checkpoint.json").read_text())["position"]
        while time.monotonic() < outage_ends:
            assert d.proc.poll() is None, d.output()
            # Neither the checkpoint nor the source's acknowledgement moves past delivered data.
            now = json.loads((state / "checkpoint.json").read_text())["position"]
            assert now == held
            flushed = pg_server.psql(
                f"SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
            )
            assert _lsn(flushed) <= int(held["lsn"])
            time.sleep(1)
    finally:
        kafka.start()
        stop_load.set()
        loader.join()

    events = reader.read([topic], at_least=total, timeout=180)
    assert {e.key["id"] for e in events} == set(range(1, total + 1))
    assert d.proc.poll() is None, "the daemon exited"
    out = d.output()
    assert out.count("unreachable") == 1, out
    assert out.count("answer again") == 1, out
    assert "restarting in" not in out, out
    assert d.terminate() == 0


def test_sigterm_while_brokers_are_unreachable_stops_the_daemon(
    pg_server: Any, pg_db: str, case: KafkaCase
) -> None:
    from scratch._common import free_port

    db = dbname(pg_db)
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    d = _start_load_pipeline(pg_server, pg_db, case, bootstrap_servers=nobody)
    before_insert = _lsn(pg_server.psql("SELECT pg_current_wal_lsn()", db))
    pg_server.psql("INSERT INTO load VALUES (1, 0)", db)
    wait_until(lambda: "unreachable" in d.output(), 60, "the daemon to report the brokers")
    # A few seconds, not the admin client's 15 s request timeout: this wait's deadline checks it.
    assert d.terminate(timeout=10) == 0
    out = d.output()
    assert out.count("unreachable") == 1, out
    # The row was not delivered, so not checkpointed: it is read again next time.
    checkpoint = case.state / "checkpoint.json"
    if checkpoint.exists():  # the (empty) snapshot's batch needs no broker
        assert json.loads(checkpoint.read_text())["position"]["lsn"] <= before_insert


def test_sigterm_during_an_outage_stops_promptly_and_the_next_start_resumes(
    pg_server: Any, pg_db: str, case: KafkaCase
) -> None:
    db, kafka, reader, state = dbname(pg_db), case.kafka, case.reader, case.state
    topic = f"{case.prefix}.public.load"
    d = _start_load_pipeline(pg_server, pg_db, case)
    pg_server.psql("INSERT INTO load SELECT g, 0 FROM generate_series(1, 100) g", db)
    wait_until(lambda: _count(reader, topic) >= 100, 60, "the first 100 rows in kafka")
    try:
        kafka.stop()
        pg_server.psql("INSERT INTO load SELECT g, 0 FROM generate_series(101, 200) g", db)
        wait_until(lambda: "unreachable" in d.output(), 60, "the daemon to notice the outage")
        held = (state / "checkpoint.json").read_text()
        # A few seconds: the deadline of this wait is the check (the write would wait forever).
        assert d.terminate(timeout=10) == 0, d.output()
        # What was durable stays; what was not delivered is not checkpointed.
        assert (state / "checkpoint.json").read_text() == held
    finally:
        kafka.start()

    d2 = case.daemon(case.config).start()
    events = reader.read([topic], at_least=200, timeout=120)
    assert {e.key["id"] for e in events} == set(range(1, 201))
    assert d2.terminate() == 0, d2.output()
