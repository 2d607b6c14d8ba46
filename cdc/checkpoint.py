"""A sink's checkpoint file: the source position of the last batch the destination acknowledged.

Used by sinks whose destination cannot hold the position itself (Kafka, NATS); the built-in log
keeps positions inside its frames instead. One small JSON file, ``checkpoint.json``, replaced
atomically (temp file, fsync, rename, fsync of the directory), so after a crash it holds either
the previous or the new position, never a torn mix. A lock file (flock) keeps two processes from
sharing one state directory. Files are created 0600 and missing directories 0700, whatever the
umask: positions and snapshot progress (primary-key values) are nobody else's business.
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


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Files and directories of the daemon's state: readable by its own user only (they hold source
# positions, primary-key values of snapshot progress, row data), whatever the process's umask.
FILE_MODE = 0o600
DIR_MODE = 0o700


def make_dirs(directory: Path, mode: int = DIR_MODE) -> None:
    """Create ``directory`` and its missing parents, each with exactly ``mode`` (not subject to
    the umask, unlike ``mkdir -p``). Directories that exist already are left as they are: the
    operator chose their permissions."""
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode)
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # created meanwhile by someone else: theirs
        os.chmod(d, mode)


def replace_file(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Make ``data`` the content of ``path``, durably and atomically: a temp file beside it
    (``<name>.tmp``: callers hold a lock, so one writer at a time), fsync, rename, fsync of the
    directory. After a crash ``path`` holds the old or the new content, never a torn mix.

    The new file has exactly ``mode`` (default 0600, owner only), whatever the umask and
    whatever mode the file it replaces had."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask narrowed the mode given to open; a stale tmp kept its own
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def try_lock(path: Path) -> int | None:
    """An exclusive flock on ``path`` (created if missing, mode 0600), taken without waiting: the
    open file descriptor holding it (close it to release), or None when another process holds
    it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Checkpoint:
    """``position`` and the ``extra`` fields saved with it; ``owner`` names the sink in errors."""

    def __init__(self, directory: Path, owner: str) -> None:
        self.directory = directory
        self.path = directory / FILE
        self.position: Position | None = None
        self.extra: dict[str, Any] = {}
        try:
            make_dirs(directory)
            fd = try_lock(directory / LOCK)
        except OSError as e:
            raise SinkError(
                f"cannot create the {owner}'s state directory {str(directory)!r}: "
                f"{e.strerror}; check sink.path",
                retryable=False,
            ) from None
        self._lock_fd = -1 if fd is None else fd
        if fd is None:
            raise SinkError(
                f"the {owner}'s state directory {str(directory)!r} is in use by another "
                "pipeline or process: give each pipeline its own sink.path",
                retryable=True,
            ) from None
        self._read()

    def _read(self) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return
        try:
            data = json.loads(text)
            position = data.pop("position")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SinkError(
                f"checkpoint {str(self.path)!r} is not readable JSON with a 'position': "
                "restore it from a backup, or delete it to start from the beginning (a full "
                "re-read)",
                retryable=False,
            ) from None
        if position is not None and not isinstance(position, dict):
            raise SinkError(
                f"checkpoint {str(self.path)!r} holds a bad position {position!r}", retryable=False
            )
        self.position = position
        self.extra = data

    def save(self, position: Position, extra: dict[str, Any] | None = None) -> None:
        """Make ``position`` the durable checkpoint; it is when this returns."""
        data = {"position": position, "saved_at_ms": int(time.time() * 1000), **(extra or {})}
        replace_file(self.path, json.dumps(data, separators=(",", ":")).encode())
        self.position = position
        self.extra = {k: v for k, v in data.items() if k != "position"}

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
