"""The sink conformance suite: every sink (log, kafka, nats) keeps the ``cdc.model.Sink`` contract.

Each test drives a sink directly through the protocol with synthetic ``EncodedBatch`` objects, as
the pipeline does (``committed()`` -> ``write`` -> ``acknowledgeable()``), and reads back what the
destination holds as its users would. No source database is needed; the brokers are the session's.

Guarantees checked per sink: records written before a reopen are present exactly once (log; nats
also drops a batch written again, within its duplicate window) or at least once (kafka).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cdc.model import EncodedBatch, EncodedRecord, Position, Sink

pytestmark = pytest.mark.integration

_counter = itertools.count()
Stored = tuple[str, bytes | None, bytes | None]  # topic, key, value as the destination holds them


class Harness:
    """Opens one kind of sink on a state directory of its own and reads back what it stored."""

    kind: str
    exactly_once: bool  # records stored once each, also when a batch is written again

    def __init__(self, tmp_path: Path, prefix: str) -> None:
        self.tmp_path = tmp_path
        self.prefix = prefix
        self.pipeline = SimpleNamespace(name=prefix, prefix=prefix)

    def open(self) -> Sink:
        raise NotImplementedError

    def stored(self, at_least: int) -> list[Stored]:
        """What the destination holds, per topic in write order, once ``at_least`` are in."""
        raise NotImplementedError


class LogHarness(Harness):
    kind = "log"
    exactly_once = False  # the source never resends what a frame holds; the log stores what it gets

    def open(self) -> Sink:
        from cdc.sinks.log import LogSinkConfig, open_sink

        return open_sink(LogSinkConfig(type="log", path=self.tmp_path / "log"), self.pipeline)

    def stored(self, at_least: int) -> list[Stored]:
        from cdc.sinks.log import LogReader

        records = list(LogReader(self.tmp_path / "log").records())
        assert len(records) >= at_least
        return _per_topic([(r.topic, r.key, r.value) for r in records])


class KafkaHarness(Harness):
    kind = "kafka"
    exactly_once = False

    def __init__(self, tmp_path: Path, prefix: str, kafka: Any) -> None:
        super().__init__(tmp_path, prefix)
        self.kafka = kafka

    def open(self) -> Sink:
        from cdc.sinks.kafka import KafkaSinkConfig, open_sink

        config = KafkaSinkConfig(
            type="kafka",
            bootstrap_servers=self.kafka.bootstrap_servers,
            # Synthetic records carry no schema ids: the registry is never asked.
            schema_registry={"url": "http://127.0.0.1:9"},  # type: ignore[arg-type]
            path=self.tmp_path / "kafka",
        )
        return open_sink(config, self.pipeline)

    def stored(self, at_least: int) -> list[Stored]:
        from tests.integration.kafka.conftest import Reader

        reader = Reader(self.kafka.bootstrap_servers, None)
        events = reader.read(reader.topics(self.prefix), at_least=at_least)
        return [(e.topic, e.key, e.value) for e in events]


class NatsHarness(Harness):
    kind = "nats"
    exactly_once = True

    def __init__(self, tmp_path: Path, prefix: str, nats_server: Any) -> None:
        super().__init__(tmp_path, prefix)
        self.server = nats_server

    def open(self) -> Sink:
        from cdc.sinks.nats import NatsSinkConfig, open_sink

        config = NatsSinkConfig(
            type="nats", servers=[self.server.url], stream=self.prefix, path=self.tmp_path / "nats"
        )
        return open_sink(config, self.pipeline)

    def stored(self, at_least: int) -> list[Stored]:
        from tests.integration.nats.conftest import read_stream

        msgs = read_stream(self.server.url, self.prefix)
        assert len(msgs) >= at_least
        return _per_topic([(m.headers["Cdc-Topic"], m.key, m.value) for m in msgs])


def _per_topic(stored: list[Stored]) -> list[Stored]:
    """Topics one after another, each in write order (how a Kafka reader sees them)."""
    return sorted(stored, key=lambda s: s[0])  # stable: keeps the order within a topic


@pytest.fixture(params=["log", "kafka", "nats"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    prefix = f"conf{os.getpid()}_{next(_counter)}"
    if request.param == "kafka":
        return KafkaHarness(tmp_path, prefix, request.getfixturevalue("kafka"))
    if request.param == "nats":
        return NatsHarness(tmp_path, prefix, request.getfixturevalue("nats_server"))
    return LogHarness(tmp_path, prefix)


class Batches:
    """Synthetic batches over two topics; batch n holds positions {"n": n}."""

    def __init__(self, prefix: str) -> None:
        self.topics = [f"{prefix}.public.a", f"{prefix}.public.b"]

    def batch(self, n: int, size: int = 3) -> EncodedBatch:
        records = [
            EncodedRecord(
                topic=self.topics[i % 2],
                key=f"k{n}.{i}".encode(),
                value=None if i == size - 1 else f"v{n}.{i}".encode(),  # a tombstone among them
                timestamp_ms=1_700_000_000_000 + n,
                event_id=f"{n}:{i}",
            )
            for i in range(size)
        ]
        return EncodedBatch(records, {"n": n})

    def expected(self, *ns: int) -> list[Stored]:
        return _per_topic([(r.topic, r.key, r.value) for n in ns for r in self.batch(n).records])


@pytest.fixture
def sink_of(harness: Harness) -> Iterator[Callable[[], Sink]]:
    """Opens the harness's sink; every sink opened is closed after the test."""
    opened: list[Sink] = []

    def open_() -> Sink:
        sink = harness.open()
        opened.append(sink)
        return sink

    yield open_
    for sink in opened:
        with contextlib.suppress(Exception):  # closed by the test already
            sink.close()


def _check_ack(sink: Sink, written: list[Position]) -> None:
    """acknowledgeable() is a position the sink made durable, never one after committed()."""
    ack, committed = sink.acknowledgeable(), sink.committed()
    assert committed == written[-1]
    if ack is not None:
        assert ack in written, f"acknowledgeable {ack} was never written"
        assert ack["n"] <= committed["n"], f"acknowledgeable {ack} is ahead of {committed}"


def test_write_makes_its_position_committed(harness: Harness, sink_of: Any) -> None:
    batches = Batches(harness.prefix)
    sink = sink_of()
    assert sink.committed() is None
    assert sink.acknowledgeable() is None
    written: list[Position] = []
    for n in (1, 2, 3):
        sink.write(batches.batch(n))
        written.append({"n": n})
        _check_ack(sink, written)
    assert harness.stored(9) == batches.expected(1, 2, 3)


def test_reopen_resumes_at_committed(harness: Harness, sink_of: Any) -> None:
    batches = Batches(harness.prefix)
    sink = sink_of()
    sink.write(batches.batch(1))
    sink.write(batches.batch(2))
    sink.close()

    sink = sink_of()
    assert sink.committed() == {"n": 2}
    _check_ack(sink, [{"n": 1}, {"n": 2}])
    sink.write(batches.batch(3))  # what the source sends after committed()
    _check_ack(sink, [{"n": 1}, {"n": 2}, {"n": 3}])
    sink.close()

    assert sink_of().committed() == {"n": 3}
    # Exactly once for every sink here: nothing was written twice.
    assert harness.stored(9) == batches.expected(1, 2, 3)


def test_heartbeat_without_records_becomes_committed(harness: Harness, sink_of: Any) -> None:
    """A position-only batch (an idle source moving on) is made durable like any other."""
    batches = Batches(harness.prefix)
    sink = sink_of()
    sink.write(batches.batch(1))
    sink.write(EncodedBatch([], {"n": 2}))
    _check_ack(sink, [{"n": 1}, {"n": 2}])
    sink.write(EncodedBatch([], {"n": 3}))
    _check_ack(sink, [{"n": 1}, {"n": 2}, {"n": 3}])
    sink.close()

    sink = sink_of()
    assert sink.committed() == {"n": 3}
    _check_ack(sink, [{"n": 1}, {"n": 2}, {"n": 3}])
    sink.write(batches.batch(4))
    assert sink.committed() == {"n": 4}
    assert harness.stored(6) == batches.expected(1, 4)


# Not the log: it keeps the position in the frame it covers, so no batch is ever resent to it.
@pytest.mark.parametrize("harness", ["kafka", "nats"], indirect=True)
def test_a_batch_written_again_after_reopen(harness: Harness, sink_of: Any) -> None:
    """A crash after the destination took a batch but before its checkpoint: the source sends
    the batch again. Stored once (nats, within its duplicate window) or at least once (kafka)."""
    batches = Batches(harness.prefix)
    sink = sink_of()
    sink.write(batches.batch(1))
    sink.write(batches.batch(2))
    sink.close()

    sink = sink_of()
    sink.write(batches.batch(2))
    sink.write(batches.batch(3))
    assert sink.committed() == {"n": 3}
    expected = batches.expected(1, 2, 3)
    if harness.exactly_once:
        assert harness.stored(len(expected)) == expected
    else:
        stored = harness.stored(len(expected) + 3)
        assert Counter(stored) == Counter(expected) + Counter(batches.expected(2))
