"""The pipeline reads ahead on a thread with ``batch.read_ahead`` (cdc.pipeline.ReadAhead), or
inline with 0 (the default): order kept, an error on either
side stops both and is raised, stop() makes what was written durable and acknowledges nothing
past it, and the queue between the threads is bounded. Fakes go in through ``Parts``."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from cdc.model import ChangeBatch, EncodedBatch, PipelineContext
from cdc.pipeline import Parts, Pipeline
from tests.conftest import wait_until
from tests.unit.test_contracts import EncodedSink, ListSource, RowsSink, change, pipeline_config

AHEAD = "    batch: {read_ahead: 1}"


class Endless(ListSource):
    """Yields batch n = 1, 2, ... until stopped; records the thread, what it yielded and
    whether ``close`` came while ``batches`` still ran."""

    def __init__(self, context: PipelineContext) -> None:
        super().__init__([], context)
        self.yielded = 0
        self.running = False
        self.closed_while_running = False
        self.thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def batches(self, start: Any) -> Any:
        self.running = True
        self.thread = threading.current_thread()
        try:
            while not self._stopping.is_set():
                self.yielded += 1
                yield ChangeBatch([change(self.yielded)], {"n": self.yielded})
        finally:
            self.running = False

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        self.closed_while_running = self.running


class Gated(EncodedSink):
    """An encoded-batch sink whose writes wait for ``gate`` (so batches pile up behind it), and
    that raises ``error`` at write number ``fail_at``."""

    def __init__(self, fail_at: int = 0, error: Exception | None = None) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.writes = 0
        self.fail_at = fail_at
        self.error = error

    def write(self, batch: EncodedBatch) -> None:
        self.writes += 1
        self.gate.wait(30)
        if self.writes == self.fail_at and self.error is not None:
            raise self.error
        super().write(batch)


def passthrough(*args: Any) -> Any:
    """An encoder that hands the batch over as it is (positions and events kept)."""

    class Same:
        fallbacks = 0

        def encode(self, batch: ChangeBatch) -> Any:
            return batch

    return Same()


def open_once(make: Any) -> tuple[list[Any], Any]:
    made: list[Any] = []

    def open_source(cfg: Any, ctx: PipelineContext) -> Any:
        made.append(make(ctx))
        return made[-1]

    return made, open_source


def start(p: Pipeline) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            p.run()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=target)
    t.start()
    return t, errors


def test_batches_arrive_in_order_and_the_source_runs_on_another_thread() -> None:
    batches = [ChangeBatch([change(n)], {"n": n}) for n in range(1, 201)]
    sink = RowsSink()
    threads: list[threading.Thread] = []

    class Recording(ListSource):
        def batches(self, start: Any) -> Any:
            threads.append(threading.current_thread())
            yield from super().batches(start)

    made, open_source = open_once(lambda ctx: Recording(batches, ctx))
    p = Pipeline(
        pipeline_config("ahead-order", AHEAD),
        Parts(open_source=open_source, open_sink=lambda c, x: sink),
    )
    t, errors = start(p)
    t.join(30)
    assert not t.is_alive() and errors == []
    assert [b.position["n"] for b in sink.written] == list(range(1, 201))
    assert threads and threads[0] is not t  # the reader thread, not the pipeline's
    assert made[0].acknowledged[-1] == {"n": 200}


@pytest.mark.parametrize("depth", [0, 1])
def test_a_sink_error_stops_the_source_and_is_raised(depth: int) -> None:
    boom = RuntimeError("the sink failed")
    sink = Gated(fail_at=3, error=boom)
    made, open_source = open_once(Endless)
    p = Pipeline(
        pipeline_config("ahead-sink-error", f"    batch: {{read_ahead: {depth}}}"),
        Parts(open_source=open_source, open_sink=lambda c, x: sink, encoder=passthrough),
    )
    t, errors = start(p)
    t.join(30)
    assert not t.is_alive()
    assert errors == [boom]  # the same exception object: classified as before
    source = made[0]
    assert not source.running and not source.closed_while_running
    assert [b.position["n"] for b in sink.written] == [1, 2]
    assert all(a["n"] <= 2 for a in source.acknowledged)


@pytest.mark.parametrize("depth", [0, 1])
def test_a_source_error_is_raised_after_the_batches_before_it(depth: int) -> None:
    boom = ValueError("the source failed")

    class Failing(ListSource):
        def batches(self, start: Any) -> Any:
            yield from super().batches(start)
            raise boom

    sink = RowsSink()
    batches = [ChangeBatch([change(n)], {"n": n}) for n in (1, 2)]
    p = Pipeline(
        pipeline_config("ahead-source-error", f"    batch: {{read_ahead: {depth}}}"),
        Parts(open_source=lambda c, x: Failing(batches, x), open_sink=lambda c, x: sink),
    )
    t, errors = start(p)
    t.join(30)
    assert not t.is_alive()
    assert errors == [boom]
    assert [b.position["n"] for b in sink.written] == [1, 2]


def test_stop_with_batches_queued_writes_them_and_acknowledges_nothing_past_them() -> None:
    sink = Gated()
    sink.gate.clear()  # the first write waits: the reader fills the queue behind it
    made, open_source = open_once(Endless)
    p = Pipeline(
        pipeline_config("ahead-stop", AHEAD),
        Parts(open_source=open_source, open_sink=lambda c, x: sink, encoder=passthrough),
    )
    t, errors = start(p)
    wait_until(lambda: made and made[0].yielded >= 2 and sink.writes == 1, 10, "a queued batch")
    p.stop()
    sink.gate.set()
    t.join(30)
    assert not t.is_alive() and errors == []
    source = made[0]
    written = [b.position["n"] for b in sink.written]
    assert written == list(range(1, len(written) + 1))  # in order, none lost in between
    assert len(written) >= 2  # the batch that was queued at stop() was made durable
    assert sink.committed() == {"n": written[-1]}
    assert source.acknowledged and max(a["n"] for a in source.acknowledged) == written[-1]
    assert not source.closed_while_running


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_the_queue_between_the_threads_is_bounded(depth: int) -> None:
    sink = Gated()
    sink.gate.clear()
    made, open_source = open_once(Endless)
    p = Pipeline(
        pipeline_config("ahead-bounded", f"    batch: {{read_ahead: {depth}}}"),
        Parts(open_source=open_source, open_sink=lambda c, x: sink, encoder=passthrough),
    )
    t, errors = start(p)
    try:
        # one being written, `depth` queued, one the reader holds while it waits to put it;
        # without read-ahead only the one being written
        most = depth + 2 if depth else 1
        wait_until(lambda: made and made[0].yielded >= most, 10, "the queue fills")
        assert not threading.Event().wait(0.3)  # give the reader time it does not use
        assert made[0].yielded == most
    finally:
        p.stop()
        sink.gate.set()
        t.join(30)
    assert not t.is_alive() and errors == []
