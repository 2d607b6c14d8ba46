"""Files of the built-in log: their permissions, the writer's lock, and writes that name the file.

Permissions: the log holds every captured row, so it is private by default. A file the log
creates gets ``file_mode`` (0600 unless configured) and a directory it creates the matching
directory mode (0700: read bits of the file mode also give the execute bit). The modes are set
with chmod after creating, so the umask cannot widen or narrow them. Existing files keep theirs.
Readers that create files (a named consumer's offsets) take the mode from the log directory's.

The writer's lock is an flock on the log directory itself (an fd opened on the directory), not
on a file inside it: a file can be deleted while locked, and the next writer then locks a new
file of the same name while the first one still writes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from cdc.errors import SinkError

DEFAULT_FILE_MODE = 0o600
# A disk or quota that is full: free space and the daemon's retry goes on where it stopped.
FULL = (errno.ENOSPC, errno.EDQUOT)


def dir_mode(file_mode: int) -> int:
    """The mode of a directory whose files get ``file_mode``: who may read may also list."""
    read = file_mode & 0o044
    return 0o700 | read | (read >> 2)


def file_mode_of(directory: Path) -> int:
    """The file mode matching an existing directory's mode (0700 -> 0600, 0750 -> 0640)."""
    return stat.S_IMODE(directory.stat().st_mode) & 0o666 | 0o600


def make_dir(directory: Path, file_mode: int, parents: bool = False) -> None:
    """Create ``directory`` (and missing parents if asked) with ``dir_mode(file_mode)``; an
    existing directory is left as it is."""
    try:
        directory.mkdir(parents=parents)
    except FileExistsError:
        if not directory.is_dir():
            raise SinkError(
                f"log path {str(directory)!r} exists and is not a directory; "
                "point sink.path at a directory (or at a path that does not exist yet)"
            ) from None
        return
    os.chmod(directory, dir_mode(file_mode))


def open_append(path: Path, file_mode: int) -> int:
    """An fd appending to ``path``; a file created here gets exactly ``file_mode``."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, file_mode)
    except FileExistsError:
        return os.open(path, flags)
    try:
        os.fchmod(fd, file_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (``os.write`` may write fewer)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def lock_dir(directory: Path) -> int:
    """An exclusive flock on the directory itself, taken without waiting: the fd holding it
    (close it to release). Raises SinkError when another writer holds it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SinkError(
            f"log {directory} is in use by another writer; "
            "stop the other daemon or point this pipeline at another path"
        ) from None
    except OSError as e:
        os.close(fd)
        raise SinkError(
            f"cannot lock the log directory {directory}: {e.strerror}; its file system does "
            "not support flock on a directory (a network file system?): put the log on a local "
            "file system",
            retryable=False,
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def io_error(what: str, path: Path, e: OSError) -> SinkError:
    """The SinkError for an OSError while writing ``path``: a full disk is retried (nothing was
    acknowledged past the last durable frame), and so is any error but a refused permission."""
    if e.errno in FULL:
        return SinkError(
            f"cannot {what} {path}: {e.strerror or 'no space left on device'}; free space on "
            f"the file system of {path.parent} (or lower the log's retention limits, or move "
            "sink.path to a larger disk): the pipeline is restarted with backoff and goes on "
            "from the last durable frame, nothing is lost",
            retryable=True,
        )
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return SinkError(
            f"cannot {what} {path}: {e.strerror}; check the permissions of sink.path",
            retryable=False,
        )
    return SinkError(f"cannot {what} {path}: {e.strerror or e}", retryable=True)
