"""The built-in log under the daemon's supervision, with an in-memory source (issue 14, item 9):
an open that fails after the writer's lock is taken must not leave the lock behind, or the
restart reports "in use by another writer" (a fatal error) and the pipeline is gone for good."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from cdc import status
from cdc.config import parse
from cdc.daemon import Daemon
from cdc.errors import SinkError
from cdc.model import ChangeBatch, EncodedBatch, EncodedRecord
from cdc.pipeline import Parts
from cdc.sinks.log import LogReader
from cdc.sinks.log._schemas import SchemaStore
from tests.conftest import wait_until


class Source:
    """A position-only batch every 10 ms."""

    source_schema: dict[str, Any] = {}

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self.streaming = True

    def check(self) -> list[str]:
        return []

    def batches(self, start: Any) -> Any:
        n = int(start["n"]) if start else 0
        while not self._stopping.is_set():
            n += 1
            yield ChangeBatch([], {"n": n})
            self._stopping.wait(0.01)

    def acknowledge(self, upto: Any) -> None:
        pass

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        pass


class Encoder:
    """One record per batch, its position as the value."""

    fallbacks = 0

    def __init__(self, *args: Any) -> None:
        pass

    def encode(self, batch: ChangeBatch) -> EncodedBatch:
        n = batch.position["n"]
        return EncodedBatch([EncodedRecord("t", None, str(n).encode(), 0, f"e{n}")], batch.position)


def test_a_failed_open_is_retried_not_taken_for_another_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = Parts(  # the real log (the registered sink), an in-memory source and encoder
        open_source=lambda cfg, ctx: Source(), encoder=lambda source, sink, ctx: Encoder()
    )
    real_init = SchemaStore.__init__
    calls: list[int] = []

    def flaky(self: SchemaStore, *args: Any, **kw: Any) -> None:
        # the writer's first open fails after it took its lock (the test's own readers, which
        # may open the log's store first, are left alone)
        if kw.get("writable") and not calls:
            calls.append(1)
            raise SinkError("a transient failure while opening the log", retryable=True)
        real_init(self, *args, **kw)

    monkeypatch.setattr(SchemaStore, "__init__", flaky)
    log = tmp_path / "log"
    cfg = parse(
        f"""
pipelines:
  - name: flaky-open
    source: {{type: postgres, dsn: "host=h", tables: [public.t]}}
    sink: {{type: log, path: {log}}}
status_file: {tmp_path / "status.json"}
"""
    )
    d = Daemon(cfg, parts=parts, max_backoff=1)
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(d.run(install_signals=False)))
    t.start()
    try:
        wait_until(
            lambda: log.exists() and (len(list(LogReader(log).records())) >= 5 or bool(d.failed)),
            30,
            "records written after the restart",
        )
    finally:
        d.stop()
        t.join(30)
    assert not d.failed, d.failed
    assert rc == [0]
    assert status.BOARD.get("flaky-open").restarts >= 1
    offsets = [r.offset for r in LogReader(log).records()]
    assert offsets == list(range(len(offsets))) and len(offsets) >= 5
