"""A scratch NATS server with JetStream: Debian's ``nats-server``, a store in a temporary directory.

The server reads a config file written next to its store, listens for clients on 127.0.0.1 at a
free port and serves its monitoring endpoint (``/healthz``, ``/jsz``) on another. ``stop()`` and
``start()`` keep the ports and the JetStream store, so a test can restart it under load. No
authentication: it is a throwaway server on loopback.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratch._common import find_binary, free_port, scratch_dir
from scratch._proc import ServerProcess

STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 30.0


@dataclass
class NatsServer(ServerProcess):
    """A running scratch nats-server with JetStream enabled; connect to ``url``.

    ``stop()`` (SIGTERM; SIGKILL after SHUTDOWN_TIMEOUT s) keeps the store; ``kill()`` is a crash.
    """

    base_dir: Path
    port: int
    monitor_port: int
    binary: str
    host: str = "127.0.0.1"

    process_name = "nats-server"
    startup_timeout = STARTUP_TIMEOUT
    shutdown_timeout = SHUTDOWN_TIMEOUT

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def store_dir(self) -> Path:
        """JetStream's files (nats-server puts them in ``jetstream/`` under its store_dir)."""
        return self.base_dir / "jetstream"

    @property
    def config_file(self) -> Path:
        return self.base_dir / "nats.conf"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "nats.log"

    def monitor(self, endpoint: str = "jsz") -> Any:
        """GET a monitoring endpoint (``varz``, ``jsz``, ``healthz``, ...) and decode its JSON."""
        with urllib.request.urlopen(f"{self.monitor_url}/{endpoint}", timeout=5) as resp:
            return json.loads(resp.read())

    @property
    def _output(self) -> Path:
        return self.log_file

    def _argv(self) -> list[str]:
        return [self.binary, "-c", str(self.config_file)]

    def _ready(self) -> bool:
        # /healthz answers ok once the client port is up and JetStream has recovered its streams.
        return bool(self.monitor("healthz").get("status") == "ok")

    def _waiting_for(self) -> str:
        return f"nats-server on port {self.port} ({self.log_file})"


def _config(base_dir: Path, port: int, monitor_port: int) -> str:
    return (
        "server_name: cdc-scratch\n"
        f"listen: 127.0.0.1:{port}\n"
        f"http: 127.0.0.1:{monitor_port}\n"
        "max_payload: 8MB\n"
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(base_dir))}\n"
        "  max_memory_store: 256MB\n"
        "  max_file_store: 20GB\n"
        "}\n"
    )


def start_nats(base_dir: Path | None = None, *, port: int | None = None) -> NatsServer:
    """Start nats-server with JetStream on a free 127.0.0.1 port, its store under ``base_dir``."""
    binary = find_binary("nats-server", ["/usr/sbin/nats-server", "/usr/bin/nats-server"])
    base_dir = scratch_dir(base_dir, "cdc-nats-")
    port = port or free_port()
    monitor_port = free_port(other_than=port)
    server = NatsServer(base_dir=base_dir, port=port, monitor_port=monitor_port, binary=binary)
    server.config_file.write_text(_config(base_dir, port, monitor_port))
    server.start()
    return server
