"""`cdc serve`: the built-in log over HTTP (SSE and the pull consumer API), against a real log
written by the log sink, with plain HTTP clients as another language's program would use."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cdc._jsonout import dumps
from cdc.config import ServeConfig, load, parse
from cdc.errors import ConfigError
from cdc.serve import LogServer, read_token, start
from cdc.serve import _routes as serve_module
from cdc.sinks.log import LogRetention, open_log
from tests.conftest import scaled, wait_until
from tests.servetools import TOKEN, Client, self_signed, write_log

ROOT = Path(__file__).resolve().parents[2]
Serve = Callable[..., tuple[LogServer, Client]]
# a config file's pipeline writing the log in ./log (relative to the file); serve: follows
PIPELINE = """pipelines:
  - name: shop
    source: {type: postgres, dsn: 'host=localhost dbname=shop', slot: s, tables: [public.orders]}
    sink: {type: log, path: log}
"""
TLS = "tls_cert: cert.pem, tls_key: key.pem"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start a server for the log in tmp_path/log (pipeline 'shop'); closed after the test."""
    servers: list[LogServer] = []

    def make(token: str | None = TOKEN, **settings: Any) -> tuple[LogServer, Client]:
        config = ServeConfig(port=0, **settings)
        logs = {"shop": tmp_path / "log", "empty": tmp_path / "never-written"}
        server = LogServer(config, logs, token=token)
        servers.append(server)
        return server, Client(server.port, token)

    yield make
    for s in servers:
        s.close()


def _expected(path: Path, topic: str | None = None) -> list[str]:
    """What `cdc log read` prints for each event, the body every `data:` must carry."""
    return [dumps(ev.as_json()) for ev in open_log(path).events(topic=topic)]


@pytest.mark.scale
def test_sse_and_pull_deliver_every_event_once_in_order_across_reconnects(
    tmp_path: Path, serve: Serve
) -> None:
    n = scaled(100_000, 10_000)
    write_log(tmp_path / "log", n)
    expected = _expected(tmp_path / "log")
    server, client = serve(keepalive=0.2)

    # SSE: a client that goes away twice and comes back with EventSource's Last-Event-ID
    got: list[tuple[int, str]] = []
    last: int | None = None
    for goes_away_at in (n // 3, 2 * (n // 3), n + 5):
        stream = client.sse("/logs/shop/events", last_event_id=last)
        assert stream.status == 200
        assert stream.resp.getheader("Content-Type", "").startswith("text/event-stream")
        for ev in stream.events():
            got.append((int(ev["id"]), ev["data"]))
            last = int(ev["id"])
            if len(got) == n:  # caught up: the stream follows what is written next
                write_log(tmp_path / "log", 5, first=n)
            if len(got) == goes_away_at:
                break
        stream.close()
    assert [o for o, _ in got] == list(range(n + 5))  # every event once, in order
    assert [d for _, d in got[:n]] == expected
    wait_until(lambda: server.active == 0, what="the SSE readers to be released")

    # pull: fetch, handle, commit; a client that fetched but died before committing loses
    # nothing: the next one gets that batch again from the committed offset
    handled: list[int] = []
    crashed_once = False
    while True:
        status, body = client.get("/logs/shop/consumers/billing/fetch?max=3000")
        assert status == 200, body
        if not body["events"]:
            break
        if not crashed_once and len(handled) > n // 2:
            crashed_once = True  # fetched, never handled nor committed
            continue
        handled += [ev["offset"] for ev in body["events"]]
        status, _ = client.post(
            "/logs/shop/consumers/billing/commit", {"offset": body["next_offset"]}
        )
        assert status == 200
    assert crashed_once
    assert handled == list(range(n + 5))
    assert open_log(tmp_path / "log").consumer("billing").committed == n + 5


def test_sse_from_an_offset_a_time_or_a_topic(tmp_path: Path, serve: Serve) -> None:
    write_log(tmp_path / "log", 40, per_batch=10)
    _, client = serve()
    path = tmp_path / "log"

    def first(url: str, count: int) -> list[tuple[int, str]]:
        stream = client.sse(url)
        assert stream.status == 200
        out = []
        for ev in stream.events():
            out.append((int(ev["id"]), ev["data"]))
            if len(out) == count:
                break
        stream.close()
        return out

    orders = _expected(path, "shop.public.orders")
    got = first("/logs/shop/events?topic=shop.public.orders", 20)
    assert [d for _, d in got] == orders and all(o % 2 == 0 for o, _ in got)
    assert [o for o, _ in first("/logs/shop/events?from=33", 7)] == list(range(33, 40))
    assert [o for o, _ in first("/logs/shop/events?from_time=2000-01-01T00:00:00Z", 3)] == [
        0,
        1,
        2,
    ]
    # latest: only what is written after connecting
    stream = client.sse("/logs/shop/events?from=latest")
    write_log(path, 1, first=40)
    assert int(next(stream.events())["id"]) == 40
    stream.close()


def test_a_wrong_or_missing_token_is_refused_and_nothing_is_read(
    tmp_path: Path, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    write_log(tmp_path / "log", 10)
    _, client = serve()
    for bad in (None, "wrong-token-0123456789abcdef", TOKEN + "x"):
        anon = Client(client.port, bad)
        status, body = anon.get("/logs/shop")
        assert status == 401 and "token" in body["error"]
        assert anon.get("/logs/nope/events")[0] == 401  # before anything else: nothing learned
        stream = anon.sse("/logs/shop/events")
        assert stream.status == 401
        stream.close()
        assert anon.post("/logs/shop/consumers/c/commit", {"offset": 3})[0] == 401
        assert anon.get("/logs/shop/consumers/c/fetch")[0] == 401
    assert open_log(tmp_path / "log").reader.consumers() == []  # nothing committed or created
    # a browser's EventSource cannot send headers: the token may come as access_token
    query = Client(client.port, None)
    assert query.get(f"/logs/shop?access_token={TOKEN}")[0] == 200
    assert query.get("/logs/shop?access_token=nope")[0] == 401
    assert client.get("/logs/shop")[0] == 200
    assert TOKEN not in caplog.text  # never logged, not even from the query string


def test_each_bad_request_gets_a_clear_status(tmp_path: Path, serve: Serve) -> None:
    write_log(tmp_path / "log", 10)
    _, client = serve()
    status, body = client.get("/logs/nope")
    assert status == 404 and "'nope'" in body["error"] and "shop" in body["error"]
    status, body = client.get("/logs/empty/events")
    assert status == 404 and "does not exist yet" in body["error"]
    assert client.get("/logs/..%2F..%2Fetc/events")[0] == 404  # never a path from the request
    assert client.get("/etc/passwd")[0] == 404
    status, body = client.get("/logs/shop/events?from=abc")
    assert status == 400 and "'abc'" in body["error"]
    status, body = client.get("/logs/shop/events?from=11")
    assert status == 400 and body["end_offset"] == 10 and "ends at offset 10" in body["error"]
    assert client.get("/logs/shop/events?from_time=yesterday")[0] == 400
    assert client.get("/logs/shop/consumers/c/fetch?max=0")[0] == 400
    assert client.get("/logs/shop/consumers/c/fetch?max=999999")[0] == 400
    assert client.get("/logs/shop/consumers/-bad/fetch")[0] == 400
    assert client.post("/logs/shop/consumers/c/commit", {"offset": -1})[0] == 400
    assert client.post("/logs/shop/consumers/c/commit", {"offset": "5"})[0] == 400
    status, body = client.post("/logs/shop/consumers/c/commit", {"offset": 11})
    assert status == 400 and "ends at offset 10" in body["error"]

    # a commit behind the committed offset: refused (a late retry must not rewind), unless asked
    assert client.post("/logs/shop/consumers/c/commit", {"offset": 8}) == (200, {"committed": 8})
    status, body = client.post("/logs/shop/consumers/c/commit", {"offset": 5})
    assert status == 409 and body["committed"] == 8 and "rewind" in body["error"]
    assert client.post("/logs/shop/consumers/c/commit", {"offset": 5, "rewind": True})[0] == 200
    status, body = client.get("/logs/shop/consumers/c/fetch?max=2")
    assert [e["offset"] for e in body["events"]] == [5, 6] and body["next_offset"] == 7
    assert body["committed"] == 5 and body["end_offset"] == 10

    # one reader per consumer name: another process holding it gets the HTTP client a 409
    with open_log(tmp_path / "log").consumer("held"):
        status, body = client.get("/logs/shop/consumers/held/fetch")
        assert status == 409 and "in use" in body["error"]

    status, body = client.get("/logs/shop")
    assert status == 200
    assert body["start_offset"] == 0 and body["end_offset"] == 10
    assert body["topics"] == ["shop.public.items", "shop.public.orders"]
    assert [c["name"] for c in body["consumers"]] == ["c"]
    assert client.get("/logs")[1] == {"pipelines": ["empty", "shop"]}


def test_fetch_by_topic_and_long_poll(
    tmp_path: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_log(tmp_path / "log", 10, per_batch=5)
    _, client = serve()
    # a rare topic: one fetch passes over at most MAX_SCAN records, then answers
    monkeypatch.setattr(serve_module, "MAX_SCAN", 5)
    status, body = client.get("/logs/shop/consumers/o/fetch?topic=shop.public.rare")
    assert (body["events"], body["next_offset"], body["end_offset"]) == ([], 5, 10)
    monkeypatch.undo()
    status, body = client.get("/logs/shop/consumers/o/fetch?topic=shop.public.items&max=100")
    assert [e["offset"] for e in body["events"]] == [1, 3, 5, 7, 9]
    assert body["next_offset"] == 10 and body["committed"] is None
    client.post("/logs/shop/consumers/o/commit", {"offset": 10})
    # nothing new: an immediate empty answer, or with wait= the first event written meanwhile
    assert client.get("/logs/shop/consumers/o/fetch")[1]["events"] == []
    writer = threading.Timer(0.3, write_log, (tmp_path / "log", 3), {"first": 10})
    writer.start()
    status, body = client.get("/logs/shop/consumers/o/fetch?wait=30")
    writer.join()
    assert status == 200 and [e["offset"] for e in body["events"]] == [10, 11, 12]


def test_a_client_that_goes_away_releases_its_reader_and_connections_are_capped(
    tmp_path: Path, serve: Serve
) -> None:
    write_log(tmp_path / "log", 5)
    server, client = serve(keepalive=0.1, max_connections=2)
    streams = [client.sse("/logs/shop/events") for _ in range(2)]
    for s in streams:
        assert s.status == 200
        events = s.events()
        assert [int(next(events)["id"]) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert server.active == 2
    assert streams[0].resp.readline() == b": keep-alive\n"  # idle: a comment, not an event
    conn = client.connect()
    conn.request("GET", "/logs/shop", headers=client.headers())
    assert conn.getresponse().status == 503  # past max_connections: refused, not queued
    conn.close()
    for s in streams:
        s.close()
    wait_until(lambda: server.active == 0, what="both SSE readers to be released")
    assert client.get("/logs/shop")[0] == 200


def test_tls_with_a_self_signed_pair(tmp_path: Path, serve: Serve) -> None:
    write_log(tmp_path / "log", 3)
    cert, _ = self_signed(tmp_path)
    (tmp_path / "token").write_text(TOKEN + "\n")
    cfg = tmp_path / "cdc.yaml"
    cfg.write_text(PIPELINE + "serve: {port: 0, token_file: token, " + TLS + "}\n")
    server = start(load(cfg), cfg)
    try:
        assert server.url.startswith("https://")
        tls = ssl.create_default_context(cafile=str(cert))
        client = Client(server.port, TOKEN, tls)
        status, body = client.get("/logs/shop")
        assert status == 200 and body["end_offset"] == 3
        stream = client.sse("/logs/shop/events")
        assert [int(next(stream.events())["id"])] == [0]
        stream.close()
        assert Client(server.port, "wrong-token-0123456789abcdef", tls).get("/logs/shop")[0] == 401
        # plain HTTP to the TLS port gets no answer from the logs
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
            plain.sendall(
                f"GET /logs/shop HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
            )
            try:
                answer = plain.recv(65536)
            except ConnectionResetError:  # the handshake failed: the server hung up
                answer = b""
            assert b"end_offset" not in answer
    finally:
        server.close()


def test_config_refuses_an_open_address_without_a_token(tmp_path: Path) -> None:
    base = PIPELINE
    with pytest.raises(ConfigError) as e:
        parse(base + "serve: {bind: 0.0.0.0}\n")
    assert "bind '0.0.0.0' is not a loopback address" in str(e.value.problems)
    assert "token_file" in e.value.problems[0] and e.value.problems[0].startswith("serve")
    with pytest.raises(ConfigError) as e:
        parse(base + "serve: {bind: 0.0.0.0, token: abc123}\n")
    assert "too short (6 characters)" in str(e.value.problems) and "abc123" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse(base + "serve: {tls_cert: c.pem}\n")
    assert "tls_cert and tls_key go together" in str(e.value.problems)
    assert parse(base + f"serve: {{bind: 0.0.0.0, token: {TOKEN}}}\n").serve.token == TOKEN
    assert parse(base + "serve: {bind: '::1'}\n").serve.token is None  # loopback: no token needed
    (tmp_path / "t").write_text("abc\n")
    with pytest.raises(ConfigError) as e:
        read_token(ServeConfig(bind="0.0.0.0", token_file=Path("t")), tmp_path)
    assert "too short (3 characters)" in e.value.problems[0]


def test_the_example_config_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cdc", "validate", "-c", str(ROOT / "config" / "serve.yaml")],
        capture_output=True,
        text=True,
        env={"CDC_SERVE_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("CDC_SERVE_TOKEN", TOKEN)
    config = load(ROOT / "config" / "serve.yaml")
    assert config.serve.bind == "0.0.0.0" and config.serve.tls_cert is not None


def _doc_section() -> str:
    doc = (ROOT / "docs" / "log.md").read_text()
    return doc.split("## Over HTTP (`cdc serve`)", 1)[1].split("\n## ", 1)[0]


def test_cdc_serve_runs_the_documented_curl_commands(tmp_path: Path) -> None:
    """`cdc serve -c FILE` as a process, and docs/log.md's curl lines against it, as written
    (the documented host swapped for the server's address); SIGTERM ends it with status 0."""
    write_log(tmp_path / "log", 2500)
    cert, _ = self_signed(tmp_path)
    (tmp_path / "token").write_text(TOKEN)
    cfg = tmp_path / "cdc.yaml"
    cfg.write_text(PIPELINE + "serve: {port: 0, token_file: token, " + TLS + "}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdc", "serve", "-c", str(cfg)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving the logs of shop on https://127.0.0.1:" in line, line
        url = line.split(" on ", 1)[1].split("/logs", 1)[0]
        blocks = re.findall(r"```sh\n(.*?)```", _doc_section(), re.S)
        commands = [
            c.replace("https://cdc.example.com:8081", url)
            for block in blocks
            for c in block.replace("\\\n", " ").splitlines()
        ]
        env = {"TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "CURL_CA_BUNDLE": str(cert)}

        def curl(command: str, seconds: float | None = None) -> str:
            args = ["--max-time", str(seconds)] if seconds else []
            done = subprocess.run(
                ["bash", "-c", command.replace("curl ", f"curl {' '.join(args)} ", 1)],
                env=env,
                capture_output=True,
                text=True,
            )
            return done.stdout

        sse = [c for c in commands if "/events" in c]
        resumed = curl(sse[1], 3)  # follows until --max-time
        ids = [int(x[4:]) for x in resumed.splitlines() if x.startswith("id: ")]
        assert ids == list(range(1235, 2500))
        first = next(x for x in resumed.splitlines() if x.startswith("data: "))
        assert first == "data: " + _expected(tmp_path / "log")[1235]
        fetch = next(c for c in commands if "/fetch" in c)
        body = json.loads(curl(fetch))
        assert [e["offset"] for e in body["events"]] == list(range(1000))
        assert body["next_offset"] == 1000 and body["committed"] is None
        commit = next(c for c in commands if "/commit" in c)
        assert json.loads(curl(commit)) == {"committed": 2000}
        assert json.loads(curl(fetch))["events"][0]["offset"] == 2000
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_a_client_that_stops_reading_is_dropped(tmp_path: Path, serve: Serve) -> None:
    """A stalled SSE client (it connected, then takes nothing) does not keep its thread: once
    the socket's buffers are full, the write waits idle_timeout and the connection is closed."""
    write_log(tmp_path / "log", 40_000, per_batch=5000)  # several MB: more than the buffers
    server, client = serve(idle_timeout=0.5)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", client.port))
    stalled.sendall(
        f"GET /logs/shop/events HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    try:
        wait_until(lambda: server.active == 1, what="the stalled stream to be served")
        wait_until(lambda: server.active == 0, 60, "the stalled client to be dropped")
    finally:
        stalled.close()


def test_an_offset_retention_deleted_is_410_naming_the_start(tmp_path: Path, serve: Serve) -> None:
    small = {"segment_bytes": 1 << 20, "per_batch": 2000}
    write_log(tmp_path / "log", 30_000, **small)  # a few segments of 1 MiB
    write_log(
        tmp_path / "log", 10, first=30_000, retention=LogRetention(max_bytes=1 << 20), **small
    )
    start = open_log(tmp_path / "log").start_offset()
    assert start > 0  # retention deleted the first segments
    _, client = serve()
    status, body = client.get("/logs/shop/events?from=0")
    assert status == 410 and body["start_offset"] == start and "retention" in body["error"]
    status, body = client.get("/logs/shop/consumers/late/fetch?from=0")
    assert status == 410 and body["start_offset"] == start
    # a consumer that never committed starts where the log starts now
    status, body = client.get("/logs/shop/consumers/new/fetch?max=1")
    assert status == 200 and body["events"][0]["offset"] == start
