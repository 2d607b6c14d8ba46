"""The log's own schema store, so a reader needs no registry.

``schemas.jsonl`` holds one JSON object per line: ``{"id", "subject", "schema"}``. Ids are global
and an identical schema gets the same id under every subject, as in Confluent's registry. A line is
fsynced before ``register`` returns, so no frame can reference an id that is not durable; a torn
last line (a crash mid-append: a line without its newline) is dropped on open. Any other line
that is not an entry, or a file that does not look like ours, raises LogCorrupt naming the file
and line, and nothing is cut.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from cdc.avro import canonical_schema
from cdc.checkpoint import fsync_dir
from cdc.errors import LogCorrupt, SinkError
from cdc.sinks.log import _files

log = logging.getLogger(__name__)

FILE = "schemas.jsonl"
# How every line the store writes starts (json.dumps with compact separators, "id" first).
_LINE_START = b'{"id":'


def _starts_like_ours(data: bytes) -> bool:
    """True if ``data`` starts as the store's lines do, or with zeros (a page not written)."""
    head = data[: len(_LINE_START)]
    return _LINE_START.startswith(head) or head.count(0) == len(head)


class SchemaNotFound(SinkError, KeyError):
    """A schema id the store does not hold (a KeyError too, as ``get`` raised before)."""

    def __str__(self) -> str:  # KeyError's would quote the message
        return str(self.args[0])


class SchemaStore:
    def __init__(
        self, directory: Path, *, writable: bool, file_mode: int = _files.DEFAULT_FILE_MODE
    ) -> None:
        self._path = directory / FILE
        self._writable = writable
        self._file_mode = file_mode
        self._lines = 0
        self._by_id: dict[int, dict[str, Any]] = {}
        self._ids: dict[str, int] = {}
        self._subjects: dict[str, list[int]] = {}
        self._size = 0
        self.reload()

    def reload(self) -> None:
        """Read lines not read yet (readers call this when they meet an unknown id)."""
        try:
            with open(self._path, "rb") as f:
                f.seek(self._size)
                data = f.read()
        except FileNotFoundError:
            return
        except OSError as e:
            raise LogCorrupt(
                f"schema store {self._path} cannot be read: {e.strerror}; it must be the file "
                "the log's writer keeps (move anything else out of the log directory)"
            ) from None
        good = 0
        lines = data.splitlines(keepends=True)
        for i, line in enumerate(lines):
            if not line.endswith(b"\n"):
                break  # the last line, not complete: torn by a crash, or being written
            try:
                self._add_line(line, self._lines + 1)
            except LogCorrupt:
                # A crash can also leave the whole last line with zeros where a page of it did
                # not reach the disk: torn too. A line without zeros was written like that.
                if i == len(lines) - 1 and b"\0" in line and _starts_like_ours(line):
                    break
                raise
            self._lines += 1
            good += len(line)
        torn = data[good:]
        if torn and self._writable:
            if not _starts_like_ours(torn):
                raise LogCorrupt(
                    f"schema store {self._path}: line {self._lines + 1} ({torn[:40]!r}) is not "
                    "a schema entry and not a torn one, so it was not cut; is this file ours? "
                    "see 'Recovering a damaged log' in docs/log.md"
                )
            log.warning(
                "schema store %s: dropping a torn last line (%d bytes)", self._path, len(torn)
            )
            with open(self._path, "r+b") as f:
                f.truncate(self._size + good)
                os.fsync(f.fileno())
        self._size += good

    def _add_line(self, line: bytes, number: int) -> None:
        try:
            entry = json.loads(line)
            sid, subject, schema = entry["id"], entry["subject"], entry["schema"]
            if not (isinstance(sid, int) and isinstance(subject, str)):
                raise TypeError("id must be a number and subject a string")
        except (ValueError, KeyError, TypeError) as e:
            why = f"no {e} field" if isinstance(e, KeyError) else str(e)
            raise LogCorrupt(
                f"schema store {self._path}: line {number} is not a schema entry "
                f'{{"id", "subject", "schema"}} ({why}): is this file ours? nothing was changed; '
                "see 'Recovering a damaged log' in docs/log.md"
            ) from None
        self._add(sid, subject, schema)

    def _add(self, sid: int, subject: str, schema: dict[str, Any]) -> None:
        self._by_id[sid] = schema
        self._ids.setdefault(canonical_schema(schema), sid)
        ids = self._subjects.setdefault(subject, [])
        if sid not in ids:
            ids.append(sid)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        canon = canonical_schema(schema)
        sid = self._ids.get(canon)
        if sid is not None and sid in self._subjects.get(subject, []):
            return sid
        if not self._writable:
            raise RuntimeError("schema store opened read-only")
        if sid is None:
            sid = max(self._by_id, default=0) + 1
        line = (
            json.dumps({"id": sid, "subject": subject, "schema": schema}, separators=(",", ":"))
            + "\n"
        ).encode()
        new = not self._path.exists()
        try:
            fd = _files.open_append(self._path, self._file_mode)
            try:
                _files.write_all(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:
                fsync_dir(self._path.parent)
        except OSError as e:
            # A half-written line is a torn last line: the next open drops it.
            raise _files.io_error("write to the schema store", self._path, e) from None
        self._size += len(line)
        self._add(sid, subject, schema)
        return sid

    def get(self, sid: int) -> dict[str, Any]:
        if sid not in self._by_id:
            self.reload()
        try:
            return self._by_id[sid]
        except KeyError:
            missing = "" if self._path.exists() else " (the file is missing)"
            raise SchemaNotFound(
                f"schema id {sid} is not in {self._path}{missing}: a record refers to a schema "
                "the log's schema store does not hold; restore schemas.jsonl from a backup of "
                "this log (it must be the file the writer of this log kept)"
            ) from None

    def subjects(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self._subjects.items()}
