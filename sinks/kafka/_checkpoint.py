"""The sink's checkpoint: the source position of the last batch the broker acknowledged.

One small JSON file replaced atomically (temp file, fsync, rename, fsync of the directory), so
after a crash it holds either the previous or the new position, never a torn mix. A lock file
(flock) keeps two processes from sharing one state directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO, Any

from cdc.errors import SinkError
from cdc.model import Position

FILE = "checkpoint.json"
LOCK = "lock"


class Checkpoint:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock: IO[str] | None = open(directory / LOCK, "w")  # held open: the lock
        except OSError as e:
            raise SinkError(
                f"cannot create the kafka sink's state directory {str(directory)!r}: "
                f"{e.strerror}; check sink.path",
                retryable=False,
            ) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise SinkError(
                f"the kafka sink's state directory {str(directory)!r} is in use by another "
                "pipeline or process: give each pipeline its own sink.path",
                retryable=True,
            ) from None
        self.position = self._read()

    def _read(self) -> Position | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            position = data["position"]
        except (ValueError, KeyError, TypeError):
            raise SinkError(
                f"checkpoint {str(self.path)!r} is not readable JSON with a 'position': "
                "restore it from a backup, or delete it to start from the beginning (a full "
                "re-read)",
                retryable=False,
            ) from None
        if position is not None and not isinstance(position, dict):
            raise SinkError(f"checkpoint {str(self.path)!r} holds a bad position {position!r}")
        return position

    def save(self, position: Position, extra: dict[str, Any] | None = None) -> None:
        """Make ``position`` the durable checkpoint; it is when this returns."""
        data = {"position": position, "saved_at_ms": int(time.time() * 1000), **(extra or {})}
        tmp = self.directory / (FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.position = position

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
