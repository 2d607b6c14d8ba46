"""MariaDB -> NATS JetStream: decoded with the published schemas, the events equal the log's."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.integration.mysql.conftest import (
    MIXED_EVENTS,
    MIXED_OPS,
    mixed_tables,
    mysql_source,
    run_mixed_workload,
    wait_started,
)
from tests.integration.nats.conftest import decode_all, read_stream, stream_count
from tests.logtools import comparable, read_log

pytestmark = pytest.mark.integration


def test_events_match_the_builtin_log(
    mariadb_server: Any,
    mysql_db: str,
    nats_server: Any,
    daemon: Callable[[Path], Any],
    tmp_path: Path,
    unique: str,
) -> None:
    db = mysql_db
    tables = mixed_tables(mariadb_server, db)
    log_dir, state = tmp_path / "log", tmp_path / "nats"
    nats_sink = {
        "type": "nats",
        "servers": [nats_server.url],
        "stream": unique,
        "path": str(state),
        "tombstones": True,
    }
    pipelines = [
        {
            "name": f"{unique}_nats",
            "topic_prefix": unique,
            "source": mysql_source(mariadb_server, tables, 1003),
            "sink": nats_sink,
        },
        {
            "name": f"{unique}_log",
            "topic_prefix": unique,
            "source": mysql_source(mariadb_server, tables, 1004),
            "sink": {"type": "log", "path": str(log_dir), "tombstones": True},
        },
    ]
    config = tmp_path / "cdc.yaml"
    config.write_text(json.dumps({"pipelines": pipelines}))  # JSON is YAML
    d = daemon(config).start()

    wait_started(d, log_dir, state / "checkpoint.json")
    run_mixed_workload(mariadb_server, db)
    wait_until(lambda: len(read_log(log_dir)) >= MIXED_EVENTS, 60, "the log to hold every event")
    wait_until(lambda: stream_count(nats_server.url, unique) >= MIXED_EVENTS, 60, "nats")
    assert d.terminate() == 0, d.output()

    from_log = [(r["topic"], r["key"], comparable(r["value"])) for r in read_log(log_dir)]
    msgs = read_stream(nats_server.url, unique)
    from_nats = [(t, k, comparable(v)) for t, k, v in decode_all(nats_server.url, unique, msgs)]
    assert len(from_nats) == MIXED_EVENTS
    # One stream: the log's global commit order, not only each table's.
    assert from_nats == from_log

    assert {m.subject for m in msgs} == {
        f"{unique}.{db}.items",
        f"{unique}.{db}.tags",
        f"{unique}.transaction",
    }
    assert Counter(v["op"] for _, _, v in from_nats if v and "op" in v) == MIXED_OPS
    _, key, first = from_nats[1]  # after the first BEGIN
    assert key == {"id": 1}
    assert first["after"]["name"] == "item 1" and first["after"]["price"] == Decimal("1.25")
    assert first["after"]["data"] == b"\x00\x01" and first["after"]["note"] == "é"
    assert first["source"]["connector"] == "mysql" and first["source"]["db"] == db
    assert [k for _, k, v in from_nats if v is None] == [{"id": i} for i in range(46, 51)] + [
        {"item": 1, "tag": "t1"},
        {"item": 2, "tag": "t2"},
    ]
    assert len({m.headers["Nats-Msg-Id"] for m in msgs}) == len(msgs)
