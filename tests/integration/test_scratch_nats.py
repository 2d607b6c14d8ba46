"""The scratch NATS launcher: JetStream round trip with nats-py, and a restart keeping the store."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import nats
import pytest

from scratch._common import port_open
from scratch.nats import NatsServer, start_nats

pytestmark = pytest.mark.integration

T = TypeVar("T")


@pytest.fixture
def server() -> Iterator[NatsServer]:
    started = time.monotonic()
    srv = start_nats()
    print(f"nats-server started in {time.monotonic() - started:.2f}s")
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(srv.base_dir, ignore_errors=True)
    assert not srv.running


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` with a deadline, so a broken server fails the test instead of hanging it."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


async def _publish(url: str, payloads: list[bytes]) -> list[int]:
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=10)
        await js.add_stream(name="EVENTS", subjects=["events.>"])
        seqs = []
        for p in payloads:
            ack = await js.publish("events.shop", p)
            assert ack.stream == "EVENTS"
            seqs.append(ack.seq)
        return seqs
    finally:
        await nc.close()


async def _read_all(url: str) -> list[bytes]:
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info("EVENTS")
        out = []
        for seq in range(1, info.state.last_seq + 1):
            msg = await js.get_msg("EVENTS", seq)
            assert msg.data is not None
            out.append(msg.data)
        return out
    finally:
        await nc.close()


def test_jetstream_round_trip(server: NatsServer) -> None:
    assert server.url == f"nats://127.0.0.1:{server.port}"
    seqs = run(_publish(server.url, [b"one", b"two"]))
    assert seqs == [1, 2]
    assert run(_read_all(server.url)) == [b"one", b"two"]
    assert server.monitor("jsz")["messages"] == 2


def test_restart_keeps_store_and_port(server: NatsServer) -> None:
    run(_publish(server.url, [b"before"]))
    port = server.port
    server.stop()
    assert not server.running
    assert not port_open(port)
    server.start()
    assert server.port == port
    assert run(_read_all(server.url)) == [b"before"]
