"""The scratch Kafka launcher: KRaft single node, a round trip with confluent-kafka, a restart."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from scratch._common import port_open
from scratch.kafka import KafkaServer, start_kafka

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[KafkaServer]:
    started = time.monotonic()
    srv = start_kafka()
    print(f"kafka started in {time.monotonic() - started:.1f}s")
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(srv.base_dir, ignore_errors=True)
    assert not srv.running


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[name].partitions) == partitions


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    delivered: list[Message] = []
    errors: list[KafkaError] = []

    def report(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append(msg)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": 30000,
        }
    )
    for key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=report)
    assert producer.flush(30) == 0, "messages still in flight after 30 s"
    assert errors == []
    assert len(delivered) == len(messages)


def consume(
    bootstrap: str, topic: str, count: int, timeout: float = 30
) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    out: list[tuple[bytes, bytes]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(out) < count:
            assert time.monotonic() < deadline, f"got {len(out)} of {count} messages"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            key, value = msg.key(), msg.value()
            assert isinstance(key, bytes) and isinstance(value, bytes)
            out.append((key, value))
    finally:
        consumer.close()
    return out


def test_topic_produce_consume(server: KafkaServer) -> None:
    assert server.bootstrap_servers == f"127.0.0.1:{server.port}"
    create_topic(server.bootstrap_servers, "items", partitions=1)
    messages = [(b"k1", b"anvil"), (b"k2", b"rope")]
    produce(server.bootstrap_servers, "items", messages)
    assert consume(server.bootstrap_servers, "items", 2) == messages


def test_restart_keeps_data_and_ports(server: KafkaServer) -> None:
    create_topic(server.bootstrap_servers, "durable")
    produce(server.bootstrap_servers, "durable", [(b"a", b"before")])
    port, controller_port = server.port, server.controller_port
    server.stop()
    assert not server.running and not port_open(port)
    started = time.monotonic()
    server.start()
    print(f"kafka restarted in {time.monotonic() - started:.1f}s")
    assert (server.port, server.controller_port) == (port, controller_port)
    produce(server.bootstrap_servers, "durable", [(b"b", b"after")])
    assert consume(server.bootstrap_servers, "durable", 2) == [(b"a", b"before"), (b"b", b"after")]


def test_kill_and_recover(server: KafkaServer) -> None:
    create_topic(server.bootstrap_servers, "crash")
    produce(server.bootstrap_servers, "crash", [(b"k", b"acked")])
    server.kill()
    assert not server.running
    server.start()
    assert consume(server.bootstrap_servers, "crash", 1) == [(b"k", b"acked")]
