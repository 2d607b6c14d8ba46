"""The contracts the pipeline calls (cdc.model: Source, Sink, RowSink, BatchEncoder, Reporter;
cdc.plugins: SourcePlugin, SinkPlugin), exercised with fakes injected through ``Parts``, and
docs/architecture.md kept true to them."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from cdc import cli, metrics, model, plugins, status
from cdc.config import PipelineConfig, parse
from cdc.model import (
    ChangeBatch,
    Column,
    EncodedBatch,
    PipelineContext,
    Problem,
    RowChange,
    RowSink,
    Sink,
    TableSchema,
    TxBoundary,
)
from cdc.pipeline import Parts, Pipeline
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
TABLE = TableSchema("p.public.t", "public", "t", (Column("id", "int", False, "int4"),), (0,))


def pipeline_config(name: str, extra: str = "") -> PipelineConfig:
    cfg = parse(
        f"""
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "host=h", tables: [public.t]}}
    sink: {{type: log, path: /nonexistent/{name}}}
{extra}"""
    )
    return cfg.pipelines[0]


class ListSource:
    """Yields the given batches, then stops; records the context it was opened with."""

    source_schema: dict[str, Any] = {}

    def __init__(self, batches: list[ChangeBatch], context: PipelineContext) -> None:
        self._batches = batches
        self.context = context
        self.streaming = False
        self.acknowledged: list[Any] = []

    def check(self) -> list[Problem]:
        return []

    def batches(self, start: Any) -> Any:
        yield from self._batches

    def acknowledge(self, upto: Any) -> None:
        self.acknowledged.append(upto)

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


class Keeping:
    """What both fake sinks share: they keep what they get; the last position is committed."""

    def __init__(self) -> None:
        self.written: list[Any] = []

    def committed(self) -> Any:
        return self.written[-1].position if self.written else None

    def acknowledgeable(self) -> Any:
        return self.committed()

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


class RowsSink(Keeping):
    """A sink that wants decoded rows (as a database target would)."""

    event_details = True

    def write_rows(self, batch: ChangeBatch) -> None:
        self.written.append(batch)


class EncodedSink(Keeping):
    """A sink of encoded batches."""

    registry: Any = None
    tombstones = False

    def write(self, batch: EncodedBatch) -> None:
        self.written.append(batch)


def no_encoder(*args: Any) -> Any:
    raise AssertionError("an encoder was made for a sink that takes rows")


def change(n: int, op: str = "c") -> RowChange:
    return RowChange(TABLE, op, None, (n,), {}, 0, f"{n}")


def run(pipeline: Pipeline) -> None:
    t = threading.Thread(target=pipeline.run)
    t.start()
    t.join(30)
    assert not t.is_alive()


def test_a_rows_sink_gets_transformed_batches_and_no_encoder_is_made() -> None:
    sink = RowsSink()
    assert isinstance(sink, RowSink)
    batches = [
        ChangeBatch([TxBoundary("BEGIN", "1", 0, "b"), change(1), change(2, "u")], {"n": 1}),
        ChangeBatch([], {"n": 2}),  # a heartbeat: its position becomes committed all the same
    ]
    sources: list[ListSource] = []

    def open_source(cfg: PipelineConfig, ctx: PipelineContext) -> ListSource:
        sources.append(ListSource(batches, ctx))
        return sources[0]

    cfg = pipeline_config(
        "rows-1",
        "    transforms: [{type: skip_operations, operations: [u]}]",
    )
    p = Pipeline(
        cfg, Parts(open_source=open_source, open_sink=lambda c, x: sink, encoder=no_encoder)
    )
    run(p)
    assert [b.position for b in sink.written] == [{"n": 1}, {"n": 2}]
    rows = [e for e in sink.written[0].events if isinstance(e, RowChange)]
    assert [e.op for e in rows] == ["c"]  # the transform dropped the update
    assert sink.committed() == {"n": 2}
    assert sources[0].acknowledged[-1] == {"n": 2}
    assert p.events_written == 1
    assert status.BOARD.get("rows-1").state == "streaming"


@pytest.mark.parametrize(
    ("declared", "transforms", "details"),
    [(False, False, False), (False, True, True), (True, False, True)],
)
def test_a_rows_sink_that_reads_no_event_details_has_its_source_spare_them(
    declared: bool, transforms: bool, details: bool
) -> None:
    """``event_details = False`` on the sink, and no transforms (which may read them): the
    source is opened with ``PipelineContext.event_details`` False; otherwise True."""
    sink = RowsSink()
    sink.event_details = declared
    sources: list[ListSource] = []

    def open_source(cfg: PipelineConfig, ctx: PipelineContext) -> ListSource:
        sources.append(ListSource([ChangeBatch([change(1)], {"n": 1})], ctx))
        return sources[0]

    name = f"details-{declared}-{transforms}"
    extra = "    transforms: [{type: skip_operations, operations: [u]}]" if transforms else ""
    p = Pipeline(
        pipeline_config(name, extra),
        Parts(open_source=open_source, open_sink=lambda c, x: sink, encoder=no_encoder),
    )
    run(p)
    assert sources[0].context.event_details is details
    assert len(sink.written) == 1


def test_an_encoded_sink_gets_what_the_encoder_made_of_each_batch() -> None:
    sink = EncodedSink()
    assert not isinstance(sink, RowSink)
    made: list[Any] = []

    class Encoder:
        fallbacks = 0

        def encode(self, batch: ChangeBatch) -> EncodedBatch:
            self.fallbacks += 1
            return EncodedBatch([], batch.position, {"events": len(batch.events)})

    def encoder(source: Any, s: Any, ctx: PipelineContext) -> Encoder:
        made.append((s, ctx.name))
        return Encoder()

    before = metrics.REGISTRY.get_sample_value(
        "cdc_encoder_fallback_records_total", {"pipeline": "enc-1"}
    )
    p = Pipeline(
        pipeline_config("enc-1"),
        Parts(
            open_source=lambda c, x: ListSource([ChangeBatch([change(1)], {"n": 1})] * 3, x),
            open_sink=lambda c, x: sink,
            encoder=encoder,
        ),
    )
    run(p)
    assert made == [(sink, "enc-1")]  # one encoder, for this sink
    assert [type(b) for b in sink.written] == [EncodedBatch] * 3
    assert [b.stats for b in sink.written] == [{"events": 1}] * 3
    assert before is None
    assert (
        metrics.REGISTRY.get_sample_value(
            "cdc_encoder_fallback_records_total", {"pipeline": "enc-1"}
        )
        == 3
    )


def test_a_batch_flagged_as_snapshot_puts_the_pipeline_in_the_snapshot_state() -> None:
    """The flag alone, with a position that has no ``snapshot`` key (the old code looked only
    at the key)."""
    states: list[str] = []
    sink = RowsSink()
    real_write = sink.write_rows

    def write_rows(batch: ChangeBatch) -> None:
        states.append(status.BOARD.get("snapflag-1").state)
        real_write(batch)

    sink.write_rows = write_rows
    batches = [
        ChangeBatch([change(1, "r")], {"lsn": 5, "table": 0}, snapshot=True),
        ChangeBatch([change(2, "r")], {"lsn": 5, "table": 1}, snapshot=True),
        ChangeBatch([], {"lsn": 5}),
    ]
    p = Pipeline(
        pipeline_config("snapflag-1"),
        Parts(open_source=lambda c, x: ListSource(batches, x), open_sink=lambda c, x: sink),
    )
    run(p)
    # before each write: what the durable batches before it made the state
    assert states == ["starting", "snapshot", "snapshot"]
    assert status.BOARD.get("snapflag-1").state == "streaming"


def test_the_state_and_the_position_label_go_by_the_flag_not_the_position() -> None:
    """A position is opaque to the pipeline: a ``snapshot`` key in one does not make a batch a
    snapshot batch (the old code looked for it), and a snapshot batch's label shows none of
    the progress its position holds (primary-key values, here 4711), wherever it holds it."""
    sink = RowsSink()
    labels: list[str] = []
    real_write = sink.write_rows

    def write_rows(batch: ChangeBatch) -> None:
        labels.extend(
            s.labels["position"]
            for m in metrics.REGISTRY.collect()
            for s in m.samples
            if s.name == "cdc_last_durable_position_info" and s.labels["pipeline"] == "flag-2"
        )
        real_write(batch)

    sink.write_rows = write_rows
    batches = [
        ChangeBatch(
            [change(1, "r")],
            {"file": "b.1", "pos": 4, "after": {"db.t": [4711]}, "done": ["db.a"]},
            snapshot=True,
        ),
        ChangeBatch([change(2, "r")], {"lsn": 5, "snapshot": {"after": {"t": ["4711"]}}}, True),
        ChangeBatch([change(3, "c")], {"snapshot": "a key of the source's own", "lsn": 6}),
    ]
    p = Pipeline(
        pipeline_config("flag-2"),
        Parts(open_source=lambda c, x: ListSource(batches, x), open_sink=lambda c, x: sink),
    )
    run(p)
    assert status.BOARD.get("flag-2").state == "streaming"
    assert labels == [
        '{"file":"b.1","pos":4,"snapshot":"running"}',
        '{"lsn":5,"snapshot":"running"}',
    ]


def test_the_source_streaming_flag_is_followed() -> None:
    gate = threading.Event()

    class Waiting(ListSource):
        def batches(self, start: Any) -> Any:
            self.streaming = True
            gate.wait(30)
            yield from ()

    source: list[Waiting] = []

    def open_source(c: Any, x: PipelineContext) -> Waiting:
        source.append(Waiting([], x))
        return source[0]

    p = Pipeline(
        pipeline_config("flag-1"), Parts(open_source=open_source, open_sink=lambda c, x: RowsSink())
    )
    t = threading.Thread(target=p.run)
    t.start()
    try:
        wait_until(lambda: source and source[0].streaming, 10, "the source streams")
        assert status.BOARD.get("flag-1").state == "starting"
        p.poll_state()
        assert status.BOARD.get("flag-1").state == "streaming"
    finally:
        gate.set()
        t.join(30)


def test_plugins_are_opened_with_the_pipeline_context_and_its_reporter() -> None:
    seen: dict[str, PipelineContext] = {}

    def open_source(cfg: PipelineConfig, ctx: PipelineContext) -> ListSource:
        seen["source"] = ctx
        ctx.reporter.snapshot_progress("public.t", 7, 10)
        return ListSource([], ctx)

    def open_sink(cfg: PipelineConfig, ctx: PipelineContext) -> RowsSink:
        seen["sink"] = ctx
        return RowsSink()

    cfg = pipeline_config(
        "ctx-1",
        "    topic_prefix: shop\n    transaction_metadata: false\n"
        "    batch: {max_events: 7, max_wait_ms: 9}",
    )
    run(Pipeline(cfg, Parts(open_source=open_source, open_sink=open_sink)))
    ctx = seen["source"]
    assert seen["sink"] is ctx
    assert (ctx.name, ctx.prefix, ctx.max_events, ctx.max_wait_ms, ctx.transaction_metadata) == (
        "ctx-1",
        "shop",
        7,
        9,
        False,
    )
    assert isinstance(ctx.reporter, status.BoardReporter) and ctx.reporter.name == "ctx-1"
    assert status.BOARD.get("ctx-1").snapshot == {"public.t": {"done": 7, "total": 10}}
    assert (
        metrics.REGISTRY.get_sample_value(
            "cdc_snapshot_rows_done", {"pipeline": "ctx-1", "table": "public.t"}
        )
        == 7
    )


def test_the_context_defaults_are_the_config_defaults() -> None:
    cfg = pipeline_config("defaults-1")
    ctx = PipelineContext("defaults-1", "defaults-1")
    assert (ctx.max_events, ctx.max_wait_ms, ctx.transaction_metadata) == (
        cfg.batch.max_events,
        cfg.batch.max_wait_ms,
        cfg.transaction_metadata,
    )


# --- preflight problems -------------------------------------------------------------------------


def test_a_problem_prints_what_why_and_the_fix() -> None:
    p = Problem("wal_level is 'replica'", "logical decoding needs it", "ALTER SYSTEM ...")
    assert str(p) == "wal_level is 'replica' (logical decoding needs it): ALTER SYSTEM ..."
    assert str(Problem("x", fix="do y")) == "x: do y"
    assert str(Problem("x")) == "x"
    assert not p.blocking and Problem("x", blocking=True).blocking  # not printed


def test_cdc_check_prints_problem_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(plugins.SOURCES, "postgres", "tests.unit.problem_plugin")
    cfg = tmp_path / "cdc.yaml"
    cfg.write_text(
        "pipelines:\n  - name: chk\n    source: {type: postgres, dsn: h, tables: [public.t]}\n"
        f"    sink: {{type: log, path: {tmp_path / 'log'}}}\n"
    )
    assert cli.main(["check", "-c", str(cfg)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "pipeline chk (postgres source): 2 problem(s)",
        "  - wal_level is 'replica' (logical decoding needs 'logical'): ALTER SYSTEM SET "
        "wal_level = logical; then restart the server",
        "  - user 'app' lacks the REPLICATION attribute: ALTER ROLE \"app\" REPLICATION",
    ]


# --- the contracts are declared, and kept -------------------------------------------------------


def own_members(proto: type) -> set[str]:
    """The public names a Protocol declares itself."""
    names = set(vars(proto)) | set(vars(proto).get("__annotations__", {}))
    return {n for n in names if not n.startswith("_")}


def members(proto: type) -> set[str]:
    """The public names a Protocol declares, its bases' included."""
    out: set[str] = set()
    for c in proto.__mro__:
        if c is not object and c.__module__ != "typing" and getattr(c, "_is_protocol", False):
            out |= own_members(c)
    return out


PROTOCOLS: dict[str, type] = {
    "Source": model.Source,
    "SinkBase": model.SinkBase,
    "Sink": model.Sink,
    "FormatSink": model.FormatSink,
    "RowSink": model.RowSink,
    "BatchEncoder": model.BatchEncoder,
    "Reporter": model.Reporter,
    "SourcePlugin": plugins.SourcePlugin,
    "SinkPlugin": plugins.SinkPlugin,
}


def test_every_contract_member_has_a_docstring() -> None:
    for name, proto in PROTOCOLS.items():
        for m in members(proto):
            assert inspect.getdoc(getattr(proto, m)), f"{name}.{m} says nothing of its contract"


@pytest.mark.parametrize(
    ("module", "cls"),
    [
        ("cdc.sinks.log._sink", "LogSink"),
        ("cdc.sinks.kafka._sink", "KafkaSink"),
        ("cdc.sinks.nats._sink", "NatsSink"),
    ],
)
def test_each_sink_has_every_method_of_the_sink_contract(module: str, cls: str) -> None:
    """mypy checks each plugin against its contract (open_source returns a ``Source``,
    open_sink a ``Sink``); this is the same check for the methods at run time, for a checkout
    linted with other settings (``registry`` and ``tombstones`` are set when a sink opens)."""
    klass = getattr(importlib.import_module(module), cls)
    for m in members(Sink):
        if m in ("registry", "tombstones"):
            continue
        assert callable(getattr(klass, m, None)), f"{cls} has no {m}()"


def test_the_pipeline_finds_nothing_by_getattr() -> None:
    tree = ast.parse((ROOT / "cdc" / "pipeline.py").read_text())
    calls = [
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    ]
    assert not {"getattr", "hasattr"} & set(calls)


def documented() -> dict[str, set[str]]:
    """The members docs/architecture.md lists under each contract: a line ``#### `Name` ...``,
    then one bullet per member it declares itself (not its bases'), ``- `member` ...``."""
    out: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        head = re.match(r"#### `(\w+)`", line)
        if head:
            current = out.setdefault(head.group(1), set())
            continue
        if line.startswith("#"):
            current = None
        item = re.match(r"- `(\w+)", line)
        if item and current is not None:
            current.add(item.group(1))
    return out


def test_no_plugin_reports_through_the_daemons_status_module() -> None:
    """Plugins report through ``PipelineContext.reporter``: none imports cdc.status (the
    sources did, for a snapshot progress function that found the pipeline by thread)."""
    importers = []
    for top in ("sources", "sinks"):
        for path in (ROOT / top).rglob("*.py"):
            for n in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(n, ast.ImportFrom) and n.module:
                    names = [n.module] + [f"{n.module}.{a.name}" for a in n.names]
                elif isinstance(n, ast.Import):
                    names = [a.name for a in n.names]
                if "cdc.status" in names:
                    importers.append(str(path.relative_to(ROOT)))
    assert importers == []


def test_the_architecture_page_lists_every_contract_and_member_and_no_other() -> None:
    doc = documented()
    assert set(doc) == set(PROTOCOLS)
    for name, proto in PROTOCOLS.items():
        assert doc[name] == own_members(proto), name


def test_the_architecture_page_names_paths_and_plugins_that_exist() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    for path in re.findall(r"`((?:cdc|sources|sinks|tests|docs)/[\w/.]*)`", text):
        assert (ROOT / path).exists(), path
    for kind in ("postgres", "mysql"):
        assert f"`{kind}`" in text and plugins.SOURCES[kind]
    for kind in plugins.SINKS:
        assert f"`{kind}`" in text
    readme = (ROOT / "README.md").read_text()
    assert "docs/architecture.md" in readme


def test_acknowledge_comes_from_another_thread_than_batches_as_the_contract_says() -> None:
    """With ``batch.read_ahead`` (``ReadAhead``): ``batches`` on a reader thread,
    ``acknowledge`` from the writing one; the Source contract and docs/architecture.md say so."""
    seen: dict[str, set[int]] = {"batches": set(), "acknowledge": set()}

    class Recording(ListSource):
        def batches(self, start: Any) -> Any:
            for b in self._batches:
                seen["batches"].add(threading.get_ident())
                yield b

        def acknowledge(self, upto: Any) -> None:
            seen["acknowledge"].add(threading.get_ident())
            super().acknowledge(upto)

    batches = [ChangeBatch([change(n)], {"n": n}) for n in (1, 2, 3)]
    run(
        Pipeline(
            pipeline_config("ack-thread", "    batch: {read_ahead: 1}"),
            Parts(
                open_source=lambda c, x: Recording(batches, x), open_sink=lambda c, x: RowsSink()
            ),
        )
    )
    assert seen["batches"] and seen["acknowledge"]
    assert not seen["batches"] & seen["acknowledge"]
    doc = inspect.getdoc(model.Source.acknowledge) or ""
    assert "another thread than ``batches``" in doc
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert "may be called\n  from the writing thread while `batches` runs on the reader's" in page
