"""What each pipeline is doing, as the daemon publishes it for `cdc status` and ``/ready``.

One ``Board`` per process holds a ``PipelineStatus`` per pipeline. Pipelines and the daemon update
it; the daemon rewrites the status file from it (atomically: temp file + rename) about every
second, and `cdc status` reads that file from another process.

Plugins report through the ``BoardReporter`` of their pipeline (``PipelineContext.reporter``),
never through the board itself, and do not import this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from cdc import metrics
from cdc.model import PipelineState, Position

STATES: tuple[str, ...] = get_args(PipelineState)
FORMAT_VERSION = 1

_local = threading.local()


def current_pipeline() -> str | None:
    """The pipeline whose thread this is (set by ``Pipeline.run``), or None: for log lines."""
    return getattr(_local, "pipeline", None)


def set_current_pipeline(name: str | None) -> None:
    _local.pipeline = name


@dataclass
class PipelineStatus:
    name: str
    state: str = "starting"
    since: float = field(default_factory=time.time)
    position: Position | None = None
    lag_ms: int | None = None
    events: int = 0
    last_durable_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    restarts: int = 0
    snapshot: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "since": self.since,
            "position": self.position,
            "lag_ms": self.lag_ms,
            "events": self.events,
            "last_durable_at": self.last_durable_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "restarts": self.restarts,
            "snapshot": {t: dict(v) for t, v in self.snapshot.items()},
        }


class Board:
    """Thread-safe per-pipeline status; the single writer of the state metric."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards the table and each status's snapshot dict
        self._pipelines: dict[str, PipelineStatus] = {}

    def reset(self, names: list[str]) -> None:
        with self.lock:
            self._pipelines = {n: PipelineStatus(n) for n in names}
        for n in names:
            self._state_metric(n, "starting")

    def get(self, name: str) -> PipelineStatus:
        with self.lock:
            st = self._pipelines.get(name)
            if st is None:
                st = self._pipelines[name] = PipelineStatus(name)
            return st

    def set_state(self, name: str, state: PipelineState) -> None:
        assert state in STATES, state
        st = self.get(name)
        if st.state != state:
            st.state = state
            st.since = time.time()
            self._state_metric(name, state)

    @staticmethod
    def _state_metric(name: str, state: str) -> None:
        for s in STATES:
            metrics.PIPELINE_STATE.labels(name, s).set(1 if s == state else 0)

    def set_error(self, name: str, message: str) -> None:
        st = self.get(name)
        st.last_error = message
        st.last_error_at = time.time()

    def not_ready(self) -> dict[str, str]:
        """Pipelines that are not streaming, with their state."""
        with self.lock:
            return {n: s.state for n, s in self._pipelines.items() if s.state != "streaming"}

    def as_json(self) -> list[dict[str, Any]]:
        with self.lock:
            return [s.as_json() for s in self._pipelines.values()]


BOARD = Board()


class BoardReporter:
    """The ``cdc.model.Reporter`` of one pipeline: its state and snapshot progress on ``BOARD``
    and in the metrics."""

    def __init__(self, name: str, board: Board = BOARD) -> None:
        self.name = name
        self.board = board

    def set_state(self, state: PipelineState) -> None:
        self.board.set_state(self.name, state)

    def snapshot_progress(self, table: str, done: int, total: int | None) -> None:
        """Rows of ``table`` snapshotted so far (``total``: estimate, None when unknown): sets
        the snapshot gauges and moves a ``starting`` pipeline to ``snapshot``."""
        name = self.name
        metrics.SNAPSHOT_ROWS_DONE.labels(name, table).set(done)
        if total is not None and total >= 0:
            metrics.SNAPSHOT_ROWS_TOTAL.labels(name, table).set(total)
        st = self.board.get(name)
        with self.board.lock:  # as_json copies it under this lock from another thread
            entry = st.snapshot.setdefault(table, {"done": 0, "total": -1})
            entry["done"] = done
            if total is not None and total >= 0:
                entry["total"] = total
        if st.state == "starting":
            self.board.set_state(name, "snapshot")


# --- the status file ------------------------------------------------------------------------------


FILE_MODE = 0o600  # positions, errors and snapshot progress: for the daemon's user only


def write_file(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` atomically: a reader sees the old or the new document, never a part.
    The file is created with mode 0600 whatever the umask (and whatever mode the one it
    replaces had)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with open(fd, "w") as f:
            os.fchmod(fd, FILE_MODE)  # the umask narrowed open's mode; a stale tmp kept its own
            f.write(json.dumps(doc, indent=1, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_file(path: Path) -> dict[str, Any] | None:
    """The published document, or None when there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    doc: dict[str, Any] = json.loads(text)
    return doc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
