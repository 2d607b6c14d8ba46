"""docker-compose.yml cannot run here (no Docker engine); check that what it wires together exists.

The services the daemon's config points at must be in the compose file, listening on the ports
the config uses; every file it mounts or copies must exist; the config must load.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from cdc.config import load

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "cdc")
    monkeypatch.setenv("MYSQL_PASSWORD", "cdc")
    monkeypatch.setenv("CDC_SERVE_TOKEN", "0123456789abcdef0123")  # config/serve.yaml


def _container_config(compose: dict[str, Any]) -> Path:
    cdc = compose["services"]["cdc"]
    cmd = cdc["command"]
    inside = cmd[cmd.index("-c") + 1]
    for vol in cdc["volumes"]:
        src, _, rest = vol.partition(":")
        if rest.split(":")[0] == inside:
            return ROOT / src
    raise AssertionError(f"the daemon's config {inside} is not mounted from the project")


def test_services_and_source_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "mysql", "kafka", "registry", "cdc"} <= set(services)
    assert "wal_level=logical" in services["postgres"]["command"]
    mysql_flags = set(services["mysql"]["command"])
    assert services["mysql"]["image"].startswith("mysql:8")
    for flag in (
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
        "--gtid-mode=ON",
        "--enforce-gtid-consistency=ON",
    ):
        assert flag in mysql_flags
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    assert set(services["cdc"]["depends_on"]) == {"postgres", "mysql", "kafka", "registry"}


def test_mounted_and_copied_files_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name} mounts missing {src}"
    assert compose["services"]["cdc"]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    # COPY from the build context (a COPY --from=STAGE copies between stages)
    for src in re.findall(r"^COPY (?!--from=)(.+) \S+$", dockerfile, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"Dockerfile copies missing {part}"


def _listens(compose: dict[str, Any], host: str, port: int) -> bool:
    svc = compose["services"][host]
    image = svc.get("image", "")
    if image.startswith("postgres:"):
        return port == 5432
    if image.startswith("mysql:"):
        return port == 3306
    if image.startswith("apache/kafka:"):
        listeners = svc["environment"]["KAFKA_LISTENERS"]
        return f":{port}" in listeners
    if image.startswith("apicurio/"):
        return port == 8080
    return False


def test_daemon_config_points_at_the_services(compose: dict[str, Any], env: None) -> None:
    config = load(_container_config(compose))
    assert len(config.pipelines) == 2
    seen = set()
    for p in config.pipelines:
        src: Any = p.source
        if src.type == "postgres":
            dsn = dict(kv.split("=", 1) for kv in src.dsn.split())
            host, port = dsn["host"], int(dsn["port"])
        else:
            host, port = src.host, src.port
        assert _listens(compose, host, port), f"{p.name}: nothing listens on {host}:{port}"
        sink: Any = p.sink
        assert sink.type == "kafka"
        for server in sink.bootstrap_servers.split(","):
            h, _, prt = server.partition(":")
            assert _listens(compose, h, int(prt)), f"{p.name}: no broker on {server}"
        url = urlparse(sink.schema_registry.url)
        assert url.hostname and url.port
        assert _listens(compose, url.hostname, url.port)
        assert str(sink.path).startswith("/var/lib/cdc/"), "state must live in the cdc-state volume"
        seen.add(src.type)
    assert seen == {"postgres", "mysql"}
    # The checkpoint volume is the one mounted at /var/lib/cdc.
    assert any(v.endswith(":/var/lib/cdc") for v in compose["services"]["cdc"]["volumes"])


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path: Path, env: None) -> None:
    assert load(path).pipelines


def test_daemon_endpoint_published(compose: dict[str, Any], env: None) -> None:
    config = load(_container_config(compose))
    assert config.http.enabled and config.http.bind == "0.0.0.0"
    assert f"{config.http.port}:{config.http.port}" in compose["services"]["cdc"]["ports"]
    assert str(config.status_file).startswith("/var/lib/cdc/")
