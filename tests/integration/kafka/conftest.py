"""Kafka sink test helpers: a consumer as a user writes one, configs, registry calls."""

from __future__ import annotations

import itertools
import json
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from cdc.sinks.log import LogReader
from tests.conftest import wait_until
from tests.logtools import assert_same_per_topic, by_topic, log_by_topic

_counter = itertools.count()


# The broker and the registry (kafka, registry) are session fixtures of tests/servers.py.


def subject_versions(registry: Any, subject: str) -> list[int]:
    """The versions the registry holds under ``subject``, as its REST API lists them."""
    return list(registry.get(f"/subjects/{subject}/versions"))


def set_compatibility(registry: Any, subject: str, level: str) -> None:
    """``PUT /config/<subject>``: the subject's compatibility level, as an operator sets it."""
    req = urllib.request.Request(
        f"{registry.url}/config/{subject}",
        json.dumps({"compatibility": level}).encode(),
        {"Content-Type": "application/vnd.schemaregistry.v1+json"},
        method="PUT",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["compatibility"] == level


@pytest.fixture
def prefix() -> str:
    """A topic prefix (and pipeline name) of this test's own."""
    return f"k{os.getpid()}_{next(_counter)}"


@dataclass
class Event:
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any  # None for a tombstone


def _raw(data: Any, ctx: Any) -> Any:
    return data


class Reader:
    """Reads topics from the beginning with confluent-kafka's AvroDeserializer, as a user would."""

    def __init__(self, bootstrap: str, registry_url: str | None) -> None:
        """Without ``registry_url`` keys and values are read as the raw bytes stored."""
        self.bootstrap = bootstrap
        self.keys: Callable[[Any, Any], Any] = _raw
        self.values: Callable[[Any, Any], Any] = _raw
        if registry_url is not None:
            client = SchemaRegistryClient({"url": registry_url})
            # TOPIC: the subjects are <topic>-key/-value (confluent-kafka 2.16 would otherwise
            # look them up through an associations API that only Confluent's registry serves).
            conf = {"subject.name.strategy.type": "TOPIC"}
            self.keys = AvroDeserializer(client, conf=conf)
            self.values = AvroDeserializer(client, conf=conf)
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def topics(self, prefix: str) -> list[str]:
        meta = self.admin.list_topics(timeout=10)
        return sorted(t for t in meta.topics if t.startswith(prefix + "."))

    def read(self, topics: list[str], *, at_least: int = 0, timeout: float = 60) -> list[Event]:
        """Every record of ``topics`` up to their current ends, once at least ``at_least`` are in.

        Per partition in offset order; partitions one after another.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                events = self._read_once(topics)
            except KafkaException:  # a topic just created may have no leader yet
                events = []
            if len(events) >= at_least:
                return events
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(events)} of at least {at_least} records in {topics}")
            time.sleep(0.5)

    def _read_once(self, topics: list[str]) -> list[Event]:
        meta = self.admin.list_topics(timeout=10)
        parts = [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in topics
            if t in meta.topics  # not created yet: nothing to read
            for p in meta.topics[t].partitions
        ]
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": "test", "enable.auto.commit": False}
        )
        try:
            ends = {}
            for tp in parts:
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
                if high > 0:
                    ends[(tp.topic, tp.partition)] = high
            consumer.assign([tp for tp in parts if (tp.topic, tp.partition) in ends])
            out: list[Event] = []
            done: set[tuple[str, int]] = set()
            deadline = time.monotonic() + 60
            while len(done) < len(ends):
                msg = consumer.poll(1.0)
                if time.monotonic() > deadline:
                    pytest.fail(f"could not read {topics} to their ends")
                if msg is None:
                    continue
                if msg.error():
                    pytest.fail(f"consumer error: {msg.error()}")
                tp = (msg.topic(), msg.partition())
                if tp in done:
                    continue
                key_ctx = SerializationContext(msg.topic(), MessageField.KEY)
                value_ctx = SerializationContext(msg.topic(), MessageField.VALUE)
                out.append(
                    Event(
                        msg.topic(),
                        msg.partition(),
                        msg.offset(),
                        self.keys(msg.key(), key_ctx),
                        self.values(msg.value(), value_ctx),
                    )
                )
                if msg.offset() + 1 >= ends[tp]:
                    done.add(tp)
        finally:
            consumer.close()
        out.sort(key=lambda e: (e.topic, e.partition, e.offset))
        return out


@pytest.fixture
def reader(kafka: Any, registry: Any) -> Reader:
    return Reader(kafka.bootstrap_servers, registry.url)


def kafka_sink(kafka: Any, registry: Any, state: Path, **extra: Any) -> dict[str, Any]:
    return {
        "type": "kafka",
        "bootstrap_servers": kafka.bootstrap_servers,
        "path": str(state),
        "schema_registry": {"url": registry.url},
        **extra,
    }


def dbname(dsn: str) -> str:
    return dict(part.split("=", 1) for part in dsn.split())["dbname"]


def write_config(path: Path, pipelines: list[dict[str, Any]]) -> Path:
    # JSON is YAML: the file is what a user would write, without quoting worries.
    path.write_text(json.dumps({"pipelines": pipelines}, indent=1))
    return path


def slot_active(pg_server: Any, slot: str) -> Callable[[], bool]:
    def check() -> bool:
        out = pg_server.psql(f"SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'")
        return out.strip() == "t"

    return check


def wait_streaming(pg_server: Any, daemon: Any, slot: str, timeout: float = 60) -> None:
    """Wait until the daemon's pipeline streams from ``slot`` (changes from now on are captured)."""

    def check() -> bool:
        if daemon.proc.poll() is not None:
            pytest.fail(f"daemon exited early:\n{daemon.output()}")
        return slot_active(pg_server, slot)()

    wait_until(check, timeout, f"replication slot {slot} to be active")


def postgres_source(dsn: str, *tables: str) -> dict[str, Any]:
    return {"type": "postgres", "dsn": dsn, "tables": list(tables)}


@dataclass
class KafkaCase:
    """One test's Kafka side: the session broker and registry, a reader, the daemon factory, the
    test's topic prefix (also its Kafka pipeline's name) and its files under ``tmp_path``."""

    kafka: Any
    registry: Any
    reader: Reader
    daemon: Callable[[Path], Any]
    prefix: str
    tmp_path: Path

    @property
    def state(self) -> Path:
        """The Kafka sink's ``path`` (its checkpoint is ``state/checkpoint.json``)."""
        return self.tmp_path / "state"

    @property
    def config(self) -> Path:
        return self.tmp_path / "cdc.yaml"

    @property
    def log_dir(self) -> Path:
        """The built-in log of ``beside_log``'s second pipeline."""
        return self.tmp_path / "log"

    def sink(self, **extra: Any) -> dict[str, Any]:
        """The Kafka sink config; ``extra`` adds or overrides fields (``bootstrap_servers``...)."""
        return kafka_sink(self.kafka, self.registry, self.state, **extra)

    def pipeline(
        self, source: dict[str, Any], sink: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """The pipeline named ``prefix`` from ``source`` to ``sink`` (default ``self.sink()``)."""
        return {"name": self.prefix, **extra, "source": source, "sink": sink or self.sink()}

    def beside_log(
        self, source: dict[str, Any], log_source: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """``source`` into Kafka, and ``log_source`` (the same tables) into the built-in log at
        ``log_dir`` under the same topic names, tombstones included: what a consumer reads from
        Kafka should equal the log."""
        return [
            self.pipeline(source),
            {
                "name": self.prefix + "_log",
                "topic_prefix": self.prefix,
                "source": log_source,
                "sink": {"type": "log", "path": str(self.log_dir), "tombstones": True},
            },
        ]

    def start(self, pipelines: list[dict[str, Any]]) -> Any:
        """Write ``pipelines`` to ``config`` and start a daemon on it."""
        return self.daemon(write_config(self.config, pipelines)).start()

    def read_as_the_log(
        self, topics: list[str], expected: int
    ) -> tuple[list[Event], dict[str, list[tuple[Any, Any]]]]:
        """Once the log at ``log_dir`` holds ``expected`` records and exactly ``topics`` exist in
        Kafka, read them; assert Kafka holds the same records as the log, topic by topic. Returns
        the events read and them by topic as (key, value)."""

        def in_log() -> int:
            if not self.log_dir.exists():
                return 0
            return sum(1 for _ in LogReader(self.log_dir).records())

        wait_until(lambda: in_log() >= expected, 60, "the log to hold every event")
        from_log = log_by_topic(self.log_dir)
        wait_until(lambda: set(self.reader.topics(self.prefix)) == set(topics), 60, "the topics")
        events = self.reader.read(topics, at_least=expected)
        from_kafka = by_topic((e.topic, e.key, e.value) for e in events)
        assert len(events) == expected
        assert sorted(from_log) == sorted(topics)
        assert_same_per_topic(from_kafka, from_log, "kafka")
        return events, from_kafka


@pytest.fixture
def case(
    kafka: Any,
    registry: Any,
    reader: Reader,
    daemon: Callable[[Path], Any],
    prefix: str,
    tmp_path: Path,
) -> KafkaCase:
    """This test's Kafka side (see KafkaCase)."""
    return KafkaCase(kafka, registry, reader, daemon, prefix, tmp_path)


def start_streaming(pg_server: Any, case: KafkaCase, pipelines: list[dict[str, Any]]) -> Any:
    """Start a daemon on ``pipelines`` (Postgres sources) and wait until each streams from its
    slot ``cdc_<name>``: changes committed from then on are captured."""
    d = case.start(pipelines)
    for p in pipelines:
        wait_streaming(pg_server, d, f"cdc_{p['name']}")
    return d
