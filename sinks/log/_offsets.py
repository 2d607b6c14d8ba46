"""Committed offsets of the built-in log's named consumers, as stored in the log directory.

``consumers/<name>.json`` holds ``{"offset": N, "committed_at_ms": T}``. ``offset`` is the offset
of the next record the consumer wants: every record before it is done (Kafka's convention). The
file is replaced atomically (temp file, fsync, rename, fsync of the directory), so after a crash
it holds the previous or the new offset, never a torn mix.

The reader (``_log``), retention (``_retention``) and ``Consumer`` (``_consumers``) all read
these files; this module imports none of them, so none of them imports another to get at it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdc.checkpoint import replace_file
from cdc.errors import SinkError
from cdc.sinks.log import _files

log = logging.getLogger(__name__)

DIR = "consumers"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise SinkError(
            f"bad consumer name {name!r}: use letters, digits, '_', '.' and '-' "
            "(starting with a letter or digit, at most 100 characters)"
        )
    return name


@dataclass(frozen=True, slots=True)
class ConsumerState:
    """A consumer as stored: ``offset`` is the next offset it wants (None: file unreadable)."""

    name: str
    offset: int | None
    committed_at_ms: int | None


def read_states(directory: Path) -> list[ConsumerState]:
    """Every consumer of the log in ``directory``, by name. Missing directory: none."""
    out = []
    try:
        paths = sorted((directory / DIR).glob("*.json"))
    except OSError:
        return []
    for p in paths:
        name = p.name[: -len(".json")]
        if not _NAME.fullmatch(name):
            continue
        try:
            doc: Any = json.loads(p.read_bytes())
            out.append(ConsumerState(name, int(doc["offset"]), int(doc["committed_at_ms"])))
        except FileNotFoundError:
            continue  # deleted since the listing
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("log consumer file %s is unreadable (%s)", p, e)
            out.append(ConsumerState(name, None, None))
    return out


def make_consumers_dir(directory: Path) -> int:
    """Create ``consumers/`` if missing; return the mode its files get (the log directory's)."""
    mode = _files.file_mode_of(directory)
    _files.make_dir(directory / DIR, mode)
    return mode


def write_offset(directory: Path, name: str, offset: int) -> None:
    path = directory / DIR / f"{name}.json"
    data = json.dumps({"offset": offset, "committed_at_ms": int(time.time() * 1000)}).encode()
    try:
        mode = make_consumers_dir(directory)
        replace_file(path, data)
        # replace_file creates with the umask's mode; consumers/ is private already, this makes
        # the file match too (a mode argument to replace_file would do it in one step).
        os.chmod(path, mode)
    except OSError as e:
        if e.errno in _files.FULL:  # the message of a failed os.write names no file
            raise _files.io_error("commit the consumer offset to", path, e) from None
        raise
