"""Postgres -> `cdc run` -> built-in log -> `cdc serve`: a reader over HTTP follows the changes
of a real database as they are committed (SSE), and a pull consumer gets the same."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.config import ServeConfig, load
from cdc.serve import LogServer, served_logs
from tests.conftest import Daemon, wait_until
from tests.logtools import postgres_items_config
from tests.servetools import Client

pytestmark = pytest.mark.integration


def test_sse_and_pull_follow_a_live_postgres_pipeline(
    tmp_path: Path, pg_db: str, daemon: Callable[[Path], Daemon]
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO items VALUES (-1, 'seed')")  # its snapshot read: streaming
    cfg = postgres_items_config(tmp_path / "cfg" / "cdc.yaml", "shop", pg_db)
    d = daemon(cfg).start()
    logs = served_logs(load(cfg))
    wait_until(lambda: logs["shop"].is_dir(), 60, "the daemon to create the log")
    server = LogServer(ServeConfig(port=0), logs)  # loopback: no token needed
    client = Client(server.port, None)
    try:
        stream = client.sse("/logs/shop/events?topic=shop.public.items")
        assert stream.status == 200
        events = stream.events()
        seed = json.loads(next(events)["data"])
        assert (seed["value"]["op"], seed["key"]) == ("r", {"id": -1})
        with psycopg.connect(pg_db, autocommit=True) as conn:
            for t in range(5):  # five transactions of ten rows, committed while it follows
                with conn.transaction():
                    for i in range(t * 10, t * 10 + 10):
                        conn.execute("INSERT INTO items VALUES (%s, %s)", (i, f"item {i}"))
        got: list[dict[str, Any]] = []
        for ev in events:
            got.append(json.loads(ev["data"]))
            if len(got) == 50:
                break
        stream.close()
        assert [e["value"]["op"] for e in got] == ["c"] * 50
        assert [e["value"]["after"] for e in got] == [
            {"id": i, "name": f"item {i}"} for i in range(50)
        ]
        assert [e["key"] for e in got] == [{"id": i} for i in range(50)]
        offsets = [e["offset"] for e in got]
        assert offsets == sorted(offsets)

        status, body = client.get("/logs/shop/consumers/app/fetch?topic=shop.public.items&max=100")
        assert status == 200 and body["events"] == [seed, *got]  # the stream's JSON
        assert (
            client.post("/logs/shop/consumers/app/commit", {"offset": body["next_offset"]})[0]
            == 200
        )
        assert client.get("/logs/shop")[1]["consumers"][0]["committed"] == body["next_offset"]
    finally:
        server.close()
        assert d.terminate() == 0
