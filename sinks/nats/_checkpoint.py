"""The sink's local state: the checkpoint file, replaced atomically, under a writer lock.

``checkpoint.json`` holds ``{"position": P, "stream": S, "written_ms": T}``: P is the source
position after the last batch JetStream acknowledged in full. It is written to a temporary file,
fsynced, renamed over the old one and the directory fsynced, so a crash leaves either the old or the
new checkpoint, never a torn one.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from cdc.errors import SinkError
from cdc.model import Position

FILE = "checkpoint.json"
LOCK = ".writer.lock"


class Checkpoint:
    """One pipeline's checkpoint directory; the lock keeps a second daemon from sharing it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(directory / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:
            raise SinkError(f"cannot use checkpoint directory {directory}: {e.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SinkError(
                f"checkpoint directory {directory} is in use by another sink; stop the other "
                "daemon or give this pipeline its own path"
            ) from None
        self.position: Position | None = None
        self.stream: str | None = None
        self._read()

    def _read(self) -> None:
        path = self.directory / FILE
        try:
            data: dict[str, Any] = json.loads(path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise SinkError(
                f"checkpoint {path} cannot be read ({e}); restore it, or move it aside to start "
                "the pipeline from the beginning"
            ) from None
        self.position = data.get("position")
        self.stream = data.get("stream")

    def save(self, position: Position, stream: str) -> None:
        """Make ``position`` the checkpoint; durable when this returns."""
        data = json.dumps(
            {"position": position, "stream": stream, "written_ms": int(time.time() * 1000)},
            separators=(",", ":"),
        ).encode()
        tmp = self.directory / (FILE + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / FILE)
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.position = position
        self.stream = stream

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
