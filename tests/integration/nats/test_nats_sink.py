"""The NATS JetStream sink against a real nats-server and a real Postgres, through ``cdc run``."""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cdc._jsonout import AvroDecoder
from cdc.avro import unframe
from cdc.sinks.log import LogReader
from tests.conftest import wait_until
from tests.integration.nats.conftest import (
    decode_all,
    read_stream,
    schemas,
    stream_count,
    stream_exists,
)
from tests.logtools import comparable

pytestmark = pytest.mark.integration


def _dbname(dsn: str) -> str:
    m = re.search(r"dbname=(\S+)", dsn)
    assert m is not None
    return m.group(1)


def _slots_exist(pg_server: Any, names: list[str]) -> bool:
    listed = ",".join(f"'{n}'" for n in names)
    out = pg_server.psql(f"SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ({listed})")
    return int(out.strip()) == len(names)


def _nats_sink(url: str, stream: str, path: Path, **extra: Any) -> str:
    lines = [
        "type: nats",
        f"servers: ['{url}']",
        f"stream: {stream}",
        f"path: {path}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    return "\n      ".join(lines)


def test_events_match_the_builtin_log(
    pg_server: Any,
    pg_db: str,
    nats_server: Any,
    daemon: Callable[[Path], Any],
    tmp_path: Path,
    unique: str,
) -> None:
    db = _dbname(pg_db)
    pg_server.psql(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), "
        "updated timestamptz);"
        'CREATE TABLE "Order Lines" (id serial PRIMARY KEY, item int, qty int);',
        db,
    )
    tables = "['public.items', 'public.\"Order Lines\"']"
    config = tmp_path / "cdc.yaml"
    config.write_text(
        f"""
pipelines:
  - name: {unique}_log
    topic_prefix: {unique}
    source: {{type: postgres, dsn: "{pg_db}", tables: {tables}}}
    sink: {{type: log, path: {tmp_path / "log"}, tombstones: true}}
  - name: {unique}_nats
    topic_prefix: {unique}
    source: {{type: postgres, dsn: "{pg_db}", tables: {tables}}}
    sink:
      {_nats_sink(nats_server.url, unique, tmp_path / "nats", tombstones="true")}
"""
    )
    d = daemon(config).start()
    wait_until(
        lambda: _slots_exist(pg_server, [f"cdc_{unique}_log", f"cdc_{unique}_nats"]),
        60,
        "both pipelines' replication slots",
    )
    pg_server.psql(
        "INSERT INTO items SELECT g, 'item ' || g, g * 1.25, '2024-01-02 03:04:05+00' "
        "FROM generate_series(1, 100) g;"
        "UPDATE items SET price = price + 1 WHERE id <= 10;"
        "DELETE FROM items WHERE id > 95;"
        'BEGIN; INSERT INTO "Order Lines" (item, qty) VALUES (1, 2), (2, 3), (3, 4);'
        "UPDATE items SET name = 'renamed' WHERE id = 1; COMMIT;",
        db,
    )
    # 4 transactions: 100 + 10 + 5 + 4 row changes, each transaction with BEGIN and END, and a
    # tombstone after each of the 5 deletes.
    expected = 100 + 10 + 5 + 4 + 2 * 4 + 5
    log_path = tmp_path / "log"
    wait_until(
        lambda: log_path.exists() and sum(1 for _ in LogReader(log_path).records()) >= expected,
        60,
        "the log to hold every event",
    )
    wait_until(lambda: stream_count(nats_server.url, unique) >= expected, 60, "every event in nats")
    assert d.terminate() == 0, d.output()

    reader = LogReader(log_path)
    log_dec = AvroDecoder(reader.schemas.get)
    from_log = [
        (r.topic, log_dec.decode(r.key), comparable(log_dec.decode(r.value)))
        for r in reader.records()
    ]

    msgs = read_stream(nats_server.url, unique)
    from_nats = [
        (topic, key, comparable(value))
        for topic, key, value in decode_all(nats_server.url, unique, msgs)
    ]
    assert len(from_nats) == expected
    assert from_nats == from_log

    assert {m.subject for m in msgs} == {
        f"{unique}.public.items",
        f"{unique}.public.Order_Lines",
        f"{unique}.transaction",
    }
    assert Counter(v["op"] for _, _, v in from_nats if v and "op" in v) == {
        "c": 103,
        "u": 11,
        "d": 5,
    }
    tombstones = [m for m in msgs if m.value is None]
    assert [k for _, k, v in from_nats if v is None] == [{"id": i} for i in range(96, 101)]
    assert all(m.data == b"" and "Cdc-Schema-Id" not in m.headers for m in tombstones)
    for m in msgs:
        if m.value is not None:
            assert m.headers["Cdc-Schema-Id"] == str(unframe(m.data)[0])
        assert m.key is not None and m.headers["Cdc-Key-Schema-Id"] == str(unframe(m.key)[0])
    assert len({m.headers["Nats-Msg-Id"] for m in msgs}) == len(msgs)


def _load_sql(first: int, rows: int, per_tx: int, pause_s: float = 0.0) -> str:
    """Insert ids first..first+rows-1 in transactions of ``per_tx`` rows, pausing after each."""
    pause = f"PERFORM pg_sleep({pause_s}); " if pause_s else ""
    return (
        f"DO $$ BEGIN FOR i IN 0..{rows // per_tx - 1} LOOP "
        f"INSERT INTO load SELECT g, md5(g::text) FROM generate_series("
        f"{first} + i * {per_tx}, {first - 1} + (i + 1) * {per_tx}) g; "
        f"COMMIT; {pause}END LOOP; END $$;"
    )


def _load(
    pg_server: Any, db: str, rows: int, per_tx: int, pause_s: float = 0.0
) -> threading.Thread:
    """Insert ids 1..rows in transactions of ``per_tx`` rows, in a background thread."""
    sql = _load_sql(1, rows, per_tx, pause_s)
    t = threading.Thread(target=pg_server.psql, args=(sql, db), daemon=True)
    t.start()
    return t


def _row_ids(msgs: list[Any], decoder: AvroDecoder, topic: str) -> list[int]:
    return [decoder.decode(m.key)["id"] for m in msgs if m.headers["Cdc-Topic"] == topic]


def _single_pipeline(pg_dsn: str, url: str, unique: str, tmp_path: Path, **sink_extra: Any) -> Path:
    config = tmp_path / "cdc.yaml"
    config.write_text(
        f"""
pipelines:
  - name: {unique}
    batch: {{max_events: 2000}}
    source: {{type: postgres, dsn: "{pg_dsn}", tables: [public.load]}}
    sink:
      {_nats_sink(url, unique, tmp_path / "state", **sink_extra)}
"""
    )
    return config


def test_kill_during_load_stores_each_change_once(
    pg_server: Any,
    pg_db: str,
    nats_server: Any,
    daemon: Callable[[Path], Any],
    tmp_path: Path,
    unique: str,
) -> None:
    db = _dbname(pg_db)
    pg_server.psql("CREATE TABLE load (id int PRIMARY KEY, body text)", db)
    config = _single_pipeline(pg_db, nats_server.url, unique, tmp_path)
    rows, per_tx = 50_000, 10
    total = rows + 2 * (rows // per_tx)  # rows plus BEGIN and END of each transaction

    first = daemon(config).start()
    wait_until(lambda: _slots_exist(pg_server, [f"cdc_{unique}"]), 60, "the replication slot")
    # paced (5,000 transactions, 1 ms apart) so the kill always lands mid-load
    load = _load(pg_server, db, rows, per_tx, pause_s=0.001)
    wait_until(lambda: stream_count(nats_server.url, unique) >= 10_000, 120, "10,000 messages")
    first.kill()
    at_kill = stream_count(nats_server.url, unique)
    assert at_kill < total, "the load finished before the kill: nothing was tested"

    second = daemon(config).start()
    load.join(300)
    wait_until(lambda: stream_count(nats_server.url, unique) >= total, 300, f"{total} messages")
    assert second.terminate() == 0, second.output()

    msgs = read_stream(nats_server.url, unique)
    decoder = AvroDecoder(schemas(nats_server.url, f"{unique}_schemas").__getitem__)
    ids = _row_ids(msgs, decoder, f"{unique}.public.load")
    assert len(msgs) == total
    assert ids == list(range(1, rows + 1))  # each once, in commit order
    assert len({m.headers["Nats-Msg-Id"] for m in msgs}) == total


def test_nats_restart_mid_load_loses_nothing(
    pg_server: Any,
    pg_db: str,
    own_nats_server: Any,
    daemon: Callable[[Path], Any],
    tmp_path: Path,
    unique: str,
) -> None:
    db = _dbname(pg_db)
    pg_server.psql("CREATE TABLE load (id int PRIMARY KEY, body text)", db)
    server = own_nats_server
    config = _single_pipeline(pg_db, server.url, unique, tmp_path, ack_timeout=2)
    before, during, per_tx = 20_000, 5_000, 10
    rows = before + during
    total = rows + 2 * (rows // per_tx)

    d = daemon(config).start()
    wait_until(lambda: _slots_exist(pg_server, [f"cdc_{unique}"]), 60, "the replication slot")
    load = _load(pg_server, db, before, per_tx)
    wait_until(lambda: stream_count(server.url, unique) >= 3_000, 120, "3,000 messages")
    server.stop()
    wait_until(lambda: "unavailable" in d.output(), 60, "the daemon to notice the outage")
    load.join(300)
    pg_server.psql(_load_sql(before + 1, during, per_tx), db)  # committed while nats is down
    server.start()
    wait_until(lambda: stream_count(server.url, unique) >= total, 300, f"{total} messages")
    assert d.proc.poll() is None, "the daemon exited instead of waiting for nats"
    assert d.terminate() == 0, d.output()

    msgs = read_stream(server.url, unique)
    decoder = AvroDecoder(schemas(server.url, f"{unique}_schemas").__getitem__)
    assert len(msgs) == total
    assert _row_ids(msgs, decoder, f"{unique}.public.load") == list(range(1, rows + 1))
    out = d.output()
    assert out.count("unavailable") == 1, out
    assert out.count("available again") == 1, out


def test_existing_stream_without_our_subjects_is_refused(
    pg_server: Any,
    pg_db: str,
    nats_server: Any,
    daemon: Callable[[Path], Any],
    tmp_path: Path,
    unique: str,
) -> None:
    import nats

    async def make_stream() -> None:
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().add_stream(name=unique, subjects=[f"elsewhere_{unique}.>"])
        finally:
            await nc.close()

    asyncio.run(make_stream())
    pg_server.psql("CREATE TABLE load (id int PRIMARY KEY, body text)", _dbname(pg_db))
    d = daemon(_single_pipeline(pg_db, nats_server.url, unique, tmp_path)).start()
    assert d.proc.wait(60) == 1
    out = d.output()
    assert (
        f"stream '{unique}' exists but its subjects ['elsewhere_{unique}.>'] do not cover "
        f"'{unique}.>'"
    ) in out, out
    assert "Traceback" not in out, out


def test_missing_stream_without_create_is_refused(
    nats_server: Any, tmp_path: Path, unique: str
) -> None:
    from cdc.config import parse
    from cdc.errors import SinkError
    from cdc.sinks.nats import open_sink

    cfg = parse(
        f"""
pipelines:
  - name: {unique}
    source: {{type: postgres, dsn: "host=unused", tables: [public.t]}}
    sink:
      {_nats_sink(nats_server.url, unique, tmp_path / "state", create="false")}
"""
    ).pipelines[0]
    with pytest.raises(SinkError) as e:
        open_sink(cfg.sink, cfg)
    assert str(e.value) == (
        f"stream '{unique}' does not exist: create it with subjects '{unique}.>', "
        "or set create: true"
    )
    assert not e.value.retryable
    assert not stream_exists(nats_server.url, unique)


def test_sigterm_while_nats_is_down_stops_promptly_and_the_next_start_resumes(
    pg_server: Any,
    pg_db: str,
    own_nats_server: Any,
    daemon: Callable[[Path], Any],
    tmp_path: Path,
    unique: str,
) -> None:
    db = _dbname(pg_db)
    pg_server.psql("CREATE TABLE load (id int PRIMARY KEY, body text)", db)
    server = own_nats_server
    config = _single_pipeline(pg_db, server.url, unique, tmp_path)
    checkpoint = tmp_path / "state" / "checkpoint.json"
    d = daemon(config).start()
    wait_until(lambda: _slots_exist(pg_server, [f"cdc_{unique}"]), 60, "the replication slot")
    pg_server.psql(_load_sql(1, 100, 100), db)
    wait_until(lambda: stream_count(server.url, unique) >= 102, 60, "the first transaction")
    wait_until(lambda: checkpoint.exists(), 30, "the checkpoint")

    server.stop()
    pg_server.psql(_load_sql(101, 100, 100), db)  # committed while nats is down
    wait_until(lambda: "unavailable" in d.output(), 60, "the daemon to notice the outage")
    held = checkpoint.read_text()
    # A few seconds, not the sink's retry_for (300 s): the deadline of this wait is the check.
    assert d.terminate(timeout=15) == 0, d.output()
    assert checkpoint.read_text() == held  # nothing undelivered was checkpointed

    # Started while nats is still down, it stops as promptly.
    d2 = daemon(config).start()
    wait_until(lambda: "unavailable" in d2.output(), 60, "the second daemon to notice the outage")
    assert d2.terminate(timeout=15) == 0, d2.output()
    assert checkpoint.read_text() == held

    server.start()
    d3 = daemon(config).start()
    wait_until(lambda: stream_count(server.url, unique) >= 204, 60, "the second transaction")
    assert d3.terminate() == 0, d3.output()
    msgs = read_stream(server.url, unique)
    decoder = AvroDecoder(schemas(server.url, f"{unique}_schemas").__getitem__)
    assert len(msgs) == 204
    assert _row_ids(msgs, decoder, f"{unique}.public.load") == list(range(1, 201))
