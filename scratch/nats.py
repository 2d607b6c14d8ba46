"""A scratch NATS server with JetStream: Debian's ``nats-server``, a store in a temporary directory.

The server reads a config file written next to its store, listens for clients on 127.0.0.1 at a
free port and serves its monitoring endpoint (``/healthz``, ``/jsz``) on another. ``stop()`` and
``start()`` keep the ports and the JetStream store, so a test can restart it under load. No
authentication: it is a throwaway server on loopback.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from scratch._common import find_binary, free_port, wait_for
from scratch._proc import REAPER, kill, log_tail, popen_as, terminate

STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 30.0


class _Exited(Exception):
    pass


@dataclass
class NatsServer:
    """A running scratch nats-server with JetStream enabled; connect to ``url``."""

    base_dir: Path
    port: int
    monitor_port: int
    binary: str
    host: str = "127.0.0.1"
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

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

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def monitor(self, endpoint: str = "jsz") -> Any:
        """GET a monitoring endpoint (``varz``, ``jsz``, ``healthz``, ...) and decode its JSON."""
        with urllib.request.urlopen(f"{self.monitor_url}/{endpoint}", timeout=5) as resp:
            return json.loads(resp.read())

    def _check_ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise _Exited(
                f"nats-server exited with {self._proc.returncode}; log {self.log_file}:\n"
                f"{log_tail(self.log_file)}"
            )
        # /healthz answers ok once the client port is up and JetStream has recovered its streams.
        return bool(self.monitor("healthz").get("status") == "ok")

    def start(self) -> None:
        """Start (or restart) the server on its ports and store; return when it is healthy."""
        if self.running:
            return
        self._proc = popen_as(None, [self.binary, "-c", str(self.config_file)], self.log_file)
        REAPER.add(self._proc)
        exited: list[_Exited] = []

        def check() -> bool:
            try:
                return self._check_ready()
            except _Exited as exc:
                exited.append(exc)
                return True

        try:
            wait_for(check, STARTUP_TIMEOUT, f"nats-server on port {self.port} ({self.log_file})")
            if exited:
                raise RuntimeError(str(exited[0]))
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM; SIGKILL after SHUTDOWN_TIMEOUT s). The store is kept."""
        terminate(self._proc, SHUTDOWN_TIMEOUT)
        REAPER.discard(self._proc)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        kill(self._proc)
        REAPER.discard(self._proc)
        self._proc = None

    def __enter__(self) -> NatsServer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


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
    if base_dir is None:
        base_dir = Path(tempfile.mkdtemp(prefix="cdc-nats-"))
    base_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    monitor_port = free_port()
    while monitor_port == port:
        monitor_port = free_port()
    server = NatsServer(base_dir=base_dir, port=port, monitor_port=monitor_port, binary=binary)
    server.config_file.write_text(_config(base_dir, port, monitor_port))
    server.start()
    return server
