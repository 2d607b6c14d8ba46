"""Fixtures for the NATS JetStream sink tests: scratch nats-server processes and stream readers."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _traversable_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    # As root, the scratch Postgres runs as user postgres, which must reach its data directory
    # through pytest's temporary directories (mode 0700); let other users pass through them
    # (execute only: they still cannot list them). pytest tightens them again on its next run.
    if os.geteuid() != 0:
        return
    base = tmp_path_factory.getbasetemp()
    for p in (base, base.parent) if base.parent.name.startswith("pytest-of-") else (base,):
        p.chmod(p.stat().st_mode | 0o011)


def _start(base: Path) -> Any:
    from scratch.nats import start_nats

    return start_nats(base)


# The session server (nats_server) is a fixture of tests/servers.py.


@pytest.fixture
def own_nats_server(tmp_path: Path) -> Iterator[Any]:
    """A JetStream server of this test alone (for tests that stop and restart it)."""
    server = _start(tmp_path / "nats")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unique() -> str:
    """A name no other test of this session uses (for pipelines, streams, subject prefixes)."""
    return f"n{next(_counter)}"


@dataclass
class StreamMessage:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]

    @property
    def key(self) -> bytes | None:
        k = self.headers.get("Cdc-Key")
        return None if k is None else base64.b64decode(k)

    @property
    def value(self) -> bytes | None:
        return None if self.headers.get("Cdc-Tombstone") == "true" else self.data


async def _read_stream(url: str, stream: str) -> list[StreamMessage]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        out: list[StreamMessage] = []
        if total == 0:
            return out
        sub = await js.pull_subscribe(
            ">",
            stream=stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE,
                deliver_policy=DeliverPolicy.ALL,
                inactive_threshold=30.0,
            ),
        )
        while len(out) < total:
            for m in await sub.fetch(min(5000, total - len(out)), timeout=10):
                out.append(
                    StreamMessage(
                        m.metadata.sequence.stream, m.subject, m.data, dict(m.headers or {})
                    )
                )
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def read_stream(url: str, stream: str) -> list[StreamMessage]:
    """Every message of ``stream`` in stream order, read by an ephemeral consumer."""
    return asyncio.run(_read_stream(url, stream))


async def _stream_count(url: str, stream: str) -> int:
    import nats
    import nats.js.errors

    nc = await nats.connect(url, allow_reconnect=False)
    try:
        try:
            return int((await nc.jetstream().stream_info(stream)).state.messages)
        except nats.js.errors.NotFoundError:
            return 0
    finally:
        await nc.close()


def stream_count(url: str, stream: str) -> int:
    """Messages in ``stream`` now (0 while it does not exist)."""
    return asyncio.run(_stream_count(url, stream))


def stream_exists(url: str, stream: str) -> bool:
    async def check() -> bool:
        import nats
        import nats.js.errors

        nc = await nats.connect(url, allow_reconnect=False)
        try:
            await nc.jetstream().stream_info(stream)
            return True
        except nats.js.errors.NotFoundError:
            return False
        finally:
            await nc.close()

    return asyncio.run(check())


async def _schemas(url: str, bucket: str) -> dict[int, Any]:
    import nats

    nc = await nats.connect(url, allow_reconnect=False)
    try:
        kv = await nc.jetstream().key_value(bucket)
        out: dict[int, Any] = {}
        for k in await kv.keys():
            entry = await kv.get(k)
            assert entry.value is not None
            out[int(k)] = json.loads(entry.value)["schema"]
        return out
    finally:
        await nc.close()


def schemas(url: str, bucket: str) -> dict[int, Any]:
    """The schema bucket as a consumer reads it: schema id -> Avro schema."""
    return asyncio.run(_schemas(url, bucket))


def decode_all(url: str, stream: str, msgs: list[StreamMessage]) -> list[tuple[str, Any, Any]]:
    """(topic, key, value) of each message, decoded with the schemas the sink published."""
    from cdc._jsonout import AvroDecoder

    dec = AvroDecoder(schemas(url, f"{stream}_schemas").__getitem__)
    return [(m.headers["Cdc-Topic"], dec.decode(m.key), dec.decode(m.value)) for m in msgs]
