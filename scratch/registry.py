"""A scratch schema registry: Apicurio Registry 2.x with in-memory storage, Confluent-compatible.

Apicurio publishes a ready-to-run Quarkus distribution of its registry on Maven Central
(``io.apicurio:apicurio-registry-app:VERSION:tar.gz:all``: a ``-runner.jar`` and its ``lib/``).
It is fetched once with ``mvn dependency:unpack`` into ``$CDC_SCRATCH_CACHE/apicurio-registry-
VERSION/dist`` (default ``~/.cache/cdc-scratch``); CI does it ahead of time with
``python -m scratch.registry fetch``. The 2.x line runs on Java 17 (3.x needs Java 21).

The server listens on 127.0.0.1 at a free port. ``url`` is the base of its Confluent Schema
Registry compatible API (``/apis/ccompat/v7``): give it to Confluent-style clients as
``schema.registry.url``. Storage is an in-memory H2 database: a restart (stop()/start()) keeps
the port but forgets every schema. No authentication.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratch._common import find_binary, free_port, scratch_dir
from scratch._jars import fetch_unpacked
from scratch._jvm import JvmServer

REGISTRY_VERSION = "2.6.13.Final"
STARTUP_TIMEOUT = 90.0
SHUTDOWN_TIMEOUT = 30.0
HEAP = "256m"
CCOMPAT_PATH = "/apis/ccompat/v7"


def ensure_registry_dist(version: str = REGISTRY_VERSION) -> Path:
    """Fetch and unpack the registry distribution unless cached; return its directory."""
    return fetch_unpacked(
        f"apicurio-registry-{version}", f"io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
    )


def _runner(dist: Path) -> Path:
    jars = sorted(dist.glob("apicurio-registry-app-*-runner.jar"))
    if not jars:
        raise FileNotFoundError(f"no apicurio-registry-app-*-runner.jar in {dist}")
    return jars[0]


def _cds_archive(runner: Path) -> Path:
    return runner.parent.parent / "registry-classes.jsa"  # next to dist/


@dataclass
class SchemaRegistryServer(JvmServer):
    """A running Apicurio Registry; ``url`` is its Confluent-compatible API base URL.

    ``stop()`` (SIGTERM; SIGKILL after SHUTDOWN_TIMEOUT s) keeps the port but not the schemas:
    ``start()`` again gives an empty registry.
    """

    base_dir: Path
    port: int
    runner: Path
    java: str
    host: str = "127.0.0.1"
    heap: str = HEAP

    process_name = "registry"
    startup_timeout = STARTUP_TIMEOUT
    shutdown_timeout = SHUTDOWN_TIMEOUT

    @property
    def base_url(self) -> str:
        """The server's root (``/apis/registry/v2`` is Apicurio's own API, ``/health``...)."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The Confluent Schema Registry compatible API: use as ``schema.registry.url``."""
        return self.base_url + CCOMPAT_PATH

    @property
    def log_file(self) -> Path:
        return self.base_dir / "registry.log"

    @property
    def cds_archive(self) -> Path:
        return _cds_archive(self.runner)

    def get(self, path: str) -> Any:
        """GET ``url + path`` and decode its JSON (``get("/subjects")``)."""
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return json.loads(resp.read())

    @property
    def _output(self) -> Path:
        return self.log_file

    @property
    def _cwd(self) -> Path:
        return self.base_dir

    def _argv(self) -> list[str]:
        return [
            self.java,
            *self._cds_flags(),
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.util.logging.manager=org.jboss.logmanager.LogManager",
            f"-Dquarkus.http.host={self.host}",
            f"-Dquarkus.http.port={self.port}",
            "-Dquarkus.log.level=INFO",
            # one INFO line per request otherwise
            '-Dquarkus.log.category."io.apicurio.common.apps.logging.audit".level=WARN',
            "-jar",
            str(self.runner),
        ]

    def _ready(self) -> bool:
        with urllib.request.urlopen(self.base_url + "/health/ready", timeout=5) as resp:
            if resp.status != 200:
                return False
        return isinstance(self.get("/subjects"), list)

    def _waiting_for(self) -> str:
        return f"schema registry on port {self.port}"


def start_schema_registry(
    base_dir: Path | None = None, *, port: int | None = None, heap: str = HEAP
) -> SchemaRegistryServer:
    """Start Apicurio Registry (in-memory storage) on a free 127.0.0.1 port."""
    runner = _runner(ensure_registry_dist())
    java = find_binary("java", ["/usr/bin/java"])
    base_dir = scratch_dir(base_dir, "cdc-registry-")
    server = SchemaRegistryServer(
        base_dir=base_dir, port=port or free_port(), runner=runner, java=java, heap=heap
    )
    server.start()
    return server


def prepare_registry() -> Path:
    """Fetch the distribution and write its class-data-sharing archive (CI setup)."""
    dist = ensure_registry_dist()
    if not _cds_archive(_runner(dist)).is_file():
        with tempfile.TemporaryDirectory(prefix="cdc-registry-prepare-") as tmp:
            start_schema_registry(Path(tmp)).stop()
    return dist


def main(argv: list[str]) -> int:
    """``python -m scratch.registry fetch``: distribution and CDS archive; ``run``: a server."""
    if argv[:1] == ["fetch"]:
        print(prepare_registry())
        return 0
    if argv[:1] == ["run"]:
        with start_schema_registry() as server:
            print(f"schema registry at {server.url}; {server.base_dir}")
            server.wait()
        return 0
    print("usage: python -m scratch.registry fetch|run", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
