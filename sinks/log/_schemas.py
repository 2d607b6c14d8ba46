"""The log's own schema store, so a reader needs no registry.

``schemas.jsonl`` holds one JSON object per line: ``{"id", "subject", "schema"}``. Ids are global
and an identical schema gets the same id under every subject, as in Confluent's registry. A line is
fsynced before ``register`` returns, so no frame can reference an id that is not durable; a torn
last line (a crash mid-append) is dropped on open.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from cdc.checkpoint import fsync_dir

log = logging.getLogger(__name__)

FILE = "schemas.jsonl"


def _canonical(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


class SchemaStore:
    def __init__(self, directory: Path, *, writable: bool) -> None:
        self._path = directory / FILE
        self._writable = writable
        self._by_id: dict[int, dict[str, Any]] = {}
        self._ids: dict[str, int] = {}
        self._subjects: dict[str, list[int]] = {}
        self._size = 0
        self.reload()

    def reload(self) -> None:
        """Read lines not read yet (readers call this when they meet an unknown id)."""
        if not self._path.exists():
            return
        with open(self._path, "rb") as f:
            f.seek(self._size)
            data = f.read()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                entry = json.loads(line)
            except ValueError:
                break
            self._add(entry["id"], entry["subject"], entry["schema"])
            good += len(line)
        if good < len(data) and self._writable:
            log.warning(
                "schema store %s: dropping a torn last line (%d bytes)",
                self._path,
                len(data) - good,
            )
            with open(self._path, "r+b") as f:
                f.truncate(self._size + good)
                os.fsync(f.fileno())
        self._size += good

    def _add(self, sid: int, subject: str, schema: dict[str, Any]) -> None:
        self._by_id[sid] = schema
        self._ids.setdefault(_canonical(schema), sid)
        ids = self._subjects.setdefault(subject, [])
        if sid not in ids:
            ids.append(sid)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        canon = _canonical(schema)
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
        with open(self._path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if new:
            fsync_dir(self._path.parent)
        self._size += len(line)
        self._add(sid, subject, schema)
        return sid

    def get(self, sid: int) -> dict[str, Any]:
        if sid not in self._by_id:
            self.reload()
        try:
            return self._by_id[sid]
        except KeyError:
            raise KeyError(f"schema id {sid} not found in {self._path}") from None

    def subjects(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in self._subjects.items()}
