"""The Kafka sink's parts that need no broker: config, registry REST calls, checkpoint file."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cdc.checkpoint import Checkpoint
from cdc.config import parse
from cdc.errors import ConfigError, SinkError
from cdc.sinks.kafka._registry import RegistryClient
from cdc.sinks.kafka.config import SchemaRegistryConfig
from tests.unit.kafka_registry_standin import RegistryServer

SCHEMA = {"type": "record", "name": "Key", "fields": [{"name": "id", "type": "int"}]}


def _yaml(sink: str) -> str:
    return (
        "pipelines:\n- name: p\n  source: {type: postgres, dsn: 'host=x', tables: [t]}\n"
        f"  sink: {sink}\n"
    )


def test_config_defaults_and_guarded_settings() -> None:
    cfg = parse(
        _yaml(
            "{type: kafka, bootstrap_servers: 'localhost:9092', path: st, "
            "schema_registry: {url: 'http://localhost:8081/'}}"
        )
    )
    sink = cfg.pipelines[0].sink
    assert sink.tombstones is True
    assert sink.topics.create is True and sink.topics.partitions == 1
    assert sink.schema_registry.url == "http://localhost:8081"
    with pytest.raises(ConfigError) as e:
        parse(
            _yaml(
                "{type: kafka, bootstrap_servers: 'localhost', path: st, "
                "schema_registry: {url: 'localhost:8081'}, producer: {acks: '1'}}"
            )
        )
    text = str(e.value)
    assert "pipelines[0].sink.bootstrap_servers: invalid bootstrap_servers 'localhost'" in text
    assert "pipelines[0].sink.schema_registry.url: invalid registry url" in text
    assert "producer setting 'acks' cannot be overridden" in text


def test_config_hides_the_registry_password() -> None:
    with pytest.raises(ConfigError) as e:
        parse(
            _yaml(
                "{type: kafka, bootstrap_servers: 'h:1', path: st, schema_registry: "
                "{url: 'http://h:1', basic_auth: {user: u, password: [hunter2]}}}"
            )
        )
    assert "basic_auth.password" in str(e.value)
    assert "hunter2" not in str(e.value)


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    server = RegistryServer()
    yield server
    server.stop()


def test_register_returns_ids_and_caches(registry: RegistryServer) -> None:
    client = RegistryClient(SchemaRegistryConfig(url=registry.url))
    a = client.register("p.public.t-key", SCHEMA)
    assert client.register("p.public.t-key", SCHEMA) == a
    assert client.register("p.public.u-key", SCHEMA) == a  # same schema, same global id
    other = {**SCHEMA, "name": "Other"}
    b = client.register("p.public.t-key", other)
    assert b != a
    assert registry.versions("p.public.t-key") == [a, b]
    # The registry holds what was sent, as a deserializer will fetch it.
    assert json.loads(registry.state.schemas[a - 1]) == SCHEMA


def test_incompatible_schema_is_a_fatal_error_naming_the_table(registry: RegistryServer) -> None:
    client = RegistryClient(SchemaRegistryConfig(url=registry.url))
    client.register("p.public.orders-value", SCHEMA)
    registry.state.compat["p.public.orders-value"] = "READ_ONLY"
    with pytest.raises(SinkError) as e:
        client.register("p.public.orders-value", {**SCHEMA, "name": "V2"})
    assert not e.value.retryable
    msg = str(e.value)
    assert "topic 'p.public.orders'" in msg and "subject 'p.public.orders-value'" in msg
    assert "incompatible with an earlier schema" in msg  # what the registry said


def test_unreachable_registry_is_retryable() -> None:
    client = RegistryClient(SchemaRegistryConfig(url="http://127.0.0.1:9", timeout_s=2))
    with pytest.raises(SinkError) as e:
        client.register("x-value", SCHEMA)
    assert e.value.retryable
    assert "unreachable" in str(e.value) and "http://127.0.0.1:9" in str(e.value)


def test_basic_auth_is_sent_and_refusal_is_reported() -> None:
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"error_code": 40101, "message": "Unauthorized"}).encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        cfg = SchemaRegistryConfig.model_validate(
            {
                "url": f"http://127.0.0.1:{server.server_address[1]}",
                "basic_auth": {"user": "key", "password": "s3cret"},
            }
        )
        with pytest.raises(SinkError) as e:
            RegistryClient(cfg).register("x-value", SCHEMA)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Basic " + base64.b64encode(b"key:s3cret").decode()]
    assert not e.value.retryable
    assert "basic_auth" in str(e.value) and "s3cret" not in str(e.value)


def test_checkpoint_round_trip_atomic_and_locked(tmp_path: Path) -> None:
    cp = Checkpoint(tmp_path / "state", "kafka sink")
    assert cp.position is None
    cp.save({"lsn": 42, "n": 3})
    assert not (tmp_path / "state" / "checkpoint.json.tmp").exists()
    with pytest.raises(SinkError) as e:
        Checkpoint(tmp_path / "state", "kafka sink")
    assert "in use" in str(e.value)
    cp.close()
    again = Checkpoint(tmp_path / "state", "kafka sink")
    assert again.position == {"lsn": 42, "n": 3}
    again.close()


def test_checkpoint_corrupt_is_reported(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(SinkError) as e:
        Checkpoint(tmp_path, "kafka sink")
    assert "checkpoint.json" in str(e.value) and not e.value.retryable


def test_example_config_loads() -> None:
    from cdc.config import load

    root = Path(__file__).resolve().parents[2]
    config = load(root / "config" / "postgres-kafka.yaml")
    sink = config.pipelines[0].sink
    assert sink.type == "kafka"
    assert sink.path == (root / "config" / "state" / "shop").resolve()
    assert sink.producer == {"compression.type": "zstd"}


@pytest.mark.parametrize("create", [True, False])
def test_delivery_timeout_gives_up_on_unreachable_brokers(tmp_path: Path, create: bool) -> None:
    from cdc.model import EncodedBatch, EncodedRecord, PipelineContext
    from cdc.sinks.kafka import Config, open_sink
    from scratch._common import free_port

    cfg = Config.model_validate(
        {
            "type": "kafka",
            "bootstrap_servers": f"127.0.0.1:{free_port()}",  # nothing listens there
            "path": str(tmp_path / "state"),
            "schema_registry": {"url": "http://127.0.0.1:9"},
            "delivery_timeout_s": 1,
            "topics": {"create": create},
        }
    )
    sink = open_sink(cfg, PipelineContext("t", "t"))
    try:
        with pytest.raises(SinkError) as e:
            sink.write(EncodedBatch([EncodedRecord("t.public.x", b"k", b"v", 0, "1")], {"lsn": 1}))
        assert e.value.retryable
        assert "unreachable" in str(e.value)
        assert sink.committed() is None
    finally:
        sink.close()
    assert not (tmp_path / "state" / "checkpoint.json").exists()
