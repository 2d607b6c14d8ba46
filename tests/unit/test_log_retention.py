"""The built-in log over months: retention, named consumers, reading from a time."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc import cli
from cdc.config import parse
from cdc.errors import ConfigError, LogCorrupt, SinkError
from cdc.model import EncodedRecord
from cdc.sinks.log import LogReader, LogRetention, LogWriter, OffsetOutOfRange, parse_since
from cdc.units import parse_duration, parse_size

MiB = 1 << 20
DAY_MS = 86_400_000


def big(i: int, size: int = 100_000) -> EncodedRecord:
    # key and value null (as a tombstone) so that `cdc log read` prints them; a header pads
    return EncodedRecord("p.s.t", None, None, 1000 + i, f"e{i}", (("pad", b"x" * size),))


class Clock:
    """Stands in for time.time() so that frames carry chosen timestamps."""

    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    c = Clock(1_700_000_000_000)
    monkeypatch.setattr(time, "time", c)
    yield c


def fill(w: LogWriter, frames: int, per_frame: int = 3) -> None:
    """Frames of ``per_frame`` 100 kB records: a 1 MiB segment holds four (12 records)."""
    for _ in range(frames):
        n = w.next_offset
        w.append([big(n + i) for i in range(per_frame)], {"lsn": n + per_frame})


def seg_bases(path: Path) -> list[int]:
    return sorted(int(p.name[:20]) for p in path.glob("*.seg"))


def seg_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.seg"))


# --- configuration -------------------------------------------------------------------------


def sink_yaml(sink: str) -> str:
    return f"""
pipelines:
  - name: p
    source: {{type: postgres, dsn: "host=x", tables: [public.t], slot: s}}
    sink: {{type: log, path: /tmp/x, {sink}}}
"""


def test_retention_config_parses_units_and_defaults_to_keeping_everything() -> None:
    cfg = parse(sink_yaml("segment_bytes: 16777216, retention: {max_age: 7d, max_bytes: 10GiB}"))
    sink = cfg.pipelines[0].sink
    assert sink.segment_bytes == 16 * MiB  # type: ignore[union-attr]
    r = sink.retention  # type: ignore[union-attr]
    assert r.max_age == 7 * 86400 and r.max_bytes == 10 << 30 and r.keep_unconsumed is True
    default = parse(sink_yaml("fsync: true")).pipelines[0].sink.retention  # type: ignore[union-attr]
    assert default.max_age is None and default.max_bytes is None
    assert parse_duration("1h30m") == 5400 and parse_duration(90) == 90
    assert parse_size("500MB") == 500_000_000 and parse_size("1.5 KiB") == 1536


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        (
            "retention: {max_age: 7 days}",
            "pipelines[0].sink.retention.max_age: bad duration '7 days': use a number of seconds",
        ),
        (
            "retention: {max_bytes: 10XB}",
            "pipelines[0].sink.retention.max_bytes: bad size '10XB': use a number of bytes",
        ),
        ("retention: {max_age: 0}", "pipelines[0].sink.retention.max_age: bad value: 0"),
        ("retention: {max_size: 1GB}", "pipelines[0].sink.retention.max_size: unknown field"),
        (
            "segment_bytes: 67108864, retention: {max_bytes: 10MB}",
            "pipelines[0].sink: retention.max_bytes (10000000) is smaller than segment_bytes",
        ),
    ],
)
def test_retention_config_errors_name_the_field_and_value(sink: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(sink_yaml(sink))
    assert any(p.startswith(message) for p in e.value.problems), e.value.problems


# --- retention -----------------------------------------------------------------------------


def test_size_retention_deletes_oldest_closed_segments(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, segment_bytes=MiB, retention=LogRetention(max_bytes=3 * MiB))
    fill(w, 30)
    position, nxt = w.position, w.next_offset
    bases = seg_bases(tmp_path)
    assert bases[0] > 0, "old segments deleted"
    assert seg_bytes(tmp_path) <= 3 * MiB
    w.close()
    # the writer resumes exactly where it was: the resume position lives in the last frame
    w = LogWriter(tmp_path, segment_bytes=MiB, retention=LogRetention(max_bytes=3 * MiB))
    assert (w.position, w.next_offset) == (position, nxt)
    w.close()
    reader = LogReader(tmp_path)
    info = reader.info()
    assert info["start_offset"] == bases[0] == info["first_offset"]
    assert info["end_offset"] == nxt and info["bytes"] == seg_bytes(tmp_path)
    assert [r.offset for r in reader.records()] == list(range(bases[0], nxt))
    assert next(reader.records("earliest")).offset == bases[0]
    with pytest.raises(OffsetOutOfRange, match=f"the log starts at offset {bases[0]} now") as e:
        list(reader.records(0))
    assert e.value.start_offset == bases[0] and e.value.offset == 0
    with pytest.raises(OffsetOutOfRange):
        list(reader.records(bases[0] - 1))
    assert next(reader.records(bases[0])).offset == bases[0]


def test_no_retention_keeps_everything(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, segment_bytes=MiB, retention=LogRetention())
    fill(w, 12)
    w.close()
    assert seg_bases(tmp_path)[0] == 0
    assert len(list(LogReader(tmp_path).records(0))) == 36


def test_age_retention_never_deletes_the_active_segment(tmp_path: Path, clock: Clock) -> None:
    ret = LogRetention(max_age="1d")
    w = LogWriter(tmp_path, segment_bytes=MiB, retention=ret)
    fill(w, 9)  # frames 0..8 "now": segment 0 (frames 0-3), 12 (4-7), 24 (8-)
    clock.ms += DAY_MS // 2
    fill(w, 6)  # frames 9..14 half a day later: 24 (-11), 36 (12-14)
    assert seg_bases(tmp_path) == [0, 12, 24, 36]
    clock.ms += DAY_MS // 2 + 1000
    fill(w, 1)  # the check is due: segments 0 and 12 are wholly older than a day now
    w.close()
    kept = seg_bases(tmp_path)
    assert kept == [24, 36], "segment 24 holds frames of both times: it stays"
    position, nxt = w.position, w.next_offset
    clock.ms += 30 * DAY_MS  # a month later everything is old: only the active segment stays
    w = LogWriter(tmp_path, segment_bytes=MiB, retention=ret)
    assert seg_bases(tmp_path) == [kept[-1]]
    assert (w.position, w.next_offset) == (position, nxt)
    fill(w, 1)
    w.close()
    assert [r.offset for r in LogReader(tmp_path).records()][-1] == nxt + 2


def test_age_retention_also_runs_between_rolls(tmp_path: Path, clock: Clock) -> None:
    ret = LogRetention(max_age="1h", check_interval="10m")
    w = LogWriter(tmp_path, segment_bytes=MiB, retention=ret)
    fill(w, 9)
    assert seg_bases(tmp_path) == [0, 12, 24]
    clock.ms += 2 * 3600_000
    w.append([], {"lsn": 999})  # an empty frame: no roll, but the check is due
    assert seg_bases(tmp_path) == [24]
    w.close()


def test_an_empty_active_segment_keeps_the_one_with_the_last_frame(
    tmp_path: Path, clock: Clock
) -> None:
    w = LogWriter(tmp_path, segment_bytes=MiB)
    fill(w, 8)  # segments 0 and 12, both full
    position, nxt = w.position, w.next_offset
    w.close()
    # a crash just after rolling: the new segment exists, its first frame was never written
    (tmp_path / f"{nxt:020d}.seg").touch()
    clock.ms += 30 * DAY_MS
    ret = LogRetention(max_age=60, max_bytes=MiB)  # both limits want segment 12 gone
    for _ in range(2):  # a second open must still find the position
        w = LogWriter(tmp_path, segment_bytes=MiB, retention=ret)
        assert (w.position, w.next_offset) == (position, nxt)
        w.close()
    assert seg_bases(tmp_path) == [12, nxt]


def test_deletion_interrupted_or_files_already_gone(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, segment_bytes=MiB)
    fill(w, 15)
    w.close()
    bases = seg_bases(tmp_path)
    # a kill after deleting the oldest segment: what is left is a readable log
    (tmp_path / f"{bases[0]:020d}.seg").unlink()
    reader = LogReader(tmp_path)
    assert [r.offset for r in reader.records()] == list(range(bases[1], 45))
    assert reader.info()["start_offset"] == bases[1]
    w = LogWriter(tmp_path, segment_bytes=MiB, retention=LogRetention(max_bytes=2 * MiB))
    assert w.next_offset == 45
    w.close()
    assert seg_bytes(tmp_path) <= 2 * MiB


def test_a_hole_in_the_middle_is_an_error(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, segment_bytes=MiB)
    fill(w, 13)
    w.close()
    (tmp_path / f"{12:020d}.seg").unlink()  # not retention: it deletes from the front only
    with pytest.raises(LogCorrupt, match=r"offsets 12\.\.23 are missing before 0+24\.seg"):
        list(LogReader(tmp_path).records())
    assert next(LogReader(tmp_path).records(24)).offset == 24


def test_a_reader_overtaken_by_retention_gets_an_error_not_a_gap(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, segment_bytes=MiB, retention=LogRetention(max_bytes=2 * MiB))
    fill(w, 5)  # segments 0 and 12
    frames = LogReader(tmp_path).frames(0)
    assert next(frames).base_offset == 0  # segment 0 is read, segment 12 is next
    fill(w, 12)  # retention deletes segment 12 before the reader gets there
    assert seg_bases(tmp_path)[0] > 12
    with pytest.raises(OffsetOutOfRange, match="offset 12 is no longer in the log"):
        list(frames)
    w.close()


# --- named consumers -----------------------------------------------------------------------


def test_consumer_commits_survive_reopen_and_are_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = LogWriter(tmp_path, segment_bytes=MiB)
    fill(w, 4)
    reader = LogReader(tmp_path)
    with reader.consumer("billing") as c:
        assert c.committed is None and c.position() == 0 and c.lag() == 12
        got = [r.offset for r in c.records()]
        assert got == list(range(12))
        c.commit(5)
        with pytest.raises(SinkError, match="in use by another reader"):
            reader.consumer("billing")
        with pytest.raises(SinkError, match="the log ends at offset 12"):
            c.commit(13)
    with LogReader(tmp_path).consumer("billing") as c:
        assert c.committed == 5 and c.lag() == 7
        assert [r.offset for r in c.records()] == list(range(5, 12))

        def crash(src: object, dst: object) -> None:
            raise OSError("killed before the rename")

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(OSError):
            c.commit(9)
        monkeypatch.undo()
        assert c.committed == 5, "a commit cut short leaves the previous offset"
        c.commit(12)
    doc = json.loads((tmp_path / "consumers" / "billing.json").read_text())
    assert doc["offset"] == 12
    states = LogReader(tmp_path).consumers()
    assert [(s["name"], s["committed"], s["lag"]) for s in states] == [("billing", 12, 0)]
    with pytest.raises(SinkError, match=r"bad consumer name '\.\./x'"):
        reader.consumer("../x")
    w.close()


def test_retention_keeps_what_a_consumer_has_not_committed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ret = LogRetention(max_bytes=2 * MiB)
    w = LogWriter(tmp_path, segment_bytes=MiB, retention=ret)
    fill(w, 5)  # segment 0 and the first frame of segment 12
    reader = LogReader(tmp_path)
    with reader.consumer("slow") as c:
        c.commit(14)  # inside segment 12
    with caplog.at_level(logging.WARNING):
        fill(w, 15)
    assert seg_bases(tmp_path)[0] == 12, "segment 0 went, the consumer's segment stayed"
    assert seg_bytes(tmp_path) > 2 * MiB
    assert "retention keeps" in caplog.text and "slow@14" in caplog.text
    res = w.apply_retention()
    assert res is not None and res.held_bytes > 0 and res.held_by == ["slow@14"]
    with reader.consumer("slow") as c:
        assert next(c.records()).offset == 14
        c.commit(w.next_offset)
    res = w.apply_retention()
    assert res is not None and res.held_bytes == 0 and res.deleted
    assert seg_bytes(tmp_path) <= 2 * MiB
    # a consumer that is gone no longer holds anything once deleted
    with reader.consumer("gone") as c:
        c.commit(w.next_offset - 3)
    fill(w, 9)
    with reader.consumer("slow") as c:
        c.commit(w.next_offset)
    held = w.apply_retention()
    assert held is not None and held.held_by == [f"gone@{w.next_offset - 30}"]
    assert cli.main(["log", "consumers", str(tmp_path), "--delete", "gone"]) == 0
    assert w.apply_retention().held_bytes == 0  # type: ignore[union-attr]
    w.close()


def test_without_keep_unconsumed_a_lagging_consumer_gets_an_error(tmp_path: Path) -> None:
    w = LogWriter(
        tmp_path,
        segment_bytes=MiB,
        retention=LogRetention(max_bytes=2 * MiB, keep_unconsumed=False),
    )
    with LogReader(tmp_path).consumer("slow") as c:
        c.commit(0)
    fill(w, 15)
    w.close()
    start = seg_bases(tmp_path)[0]
    assert start > 0
    with LogReader(tmp_path).consumer("slow") as c:
        with pytest.raises(OffsetOutOfRange, match=f"starts at offset {start}"):
            next(c.records())
        c.commit(LogReader(tmp_path).start_offset())  # the documented way to skip ahead
        assert next(c.records()).offset == start
    assert LogReader(tmp_path).consumers()[0]["lag"] == 45 - start


def test_cli_consumer_reads_each_record_once_and_lists_lag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log"
    w = LogWriter(log)
    for i in range(5):
        w.append([EncodedRecord("t", None, None, 0, str(i))], {"lsn": i})

    def read(*extra: str) -> list[int]:
        assert cli.main(["log", "read", str(log), "--consumer", "c1", *extra]) == 0
        return [json.loads(x)["offset"] for x in capsys.readouterr().out.splitlines()]

    assert read() == [0, 1, 2, 3, 4]
    assert read() == []
    w.append([EncodedRecord("t", None, None, 0, "5")], {"lsn": 5})
    assert read() == [5]
    assert read("--from", "2") == [2, 3, 4, 5]  # --from moves the consumer
    assert cli.main(["log", "consumers", str(log)]) == 0
    out = capsys.readouterr().out
    assert "records at offsets 0..5; the next record gets offset 6" in out
    assert [line.split()[:3] for line in out.splitlines()[2:]] == [["c1", "6", "0"]]
    w.append([EncodedRecord("t", None, None, 0, "6")], {"lsn": 6})
    assert cli.main(["log", "consumers", str(log), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["lag"] == 1
    assert cli.main(["log", "consumers", str(log), "--delete", "nope"]) == 1
    assert "has no consumer 'nope'" in capsys.readouterr().err
    w.close()


def test_cli_consumer_following_commits_on_sigterm(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, wait_until

    w = LogWriter(tmp_path)
    for i in range(3):
        w.append([EncodedRecord("t", None, None, 0, str(i))], {"lsn": i})
    out = tmp_path / "out.jsonl"
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdc", "log", "read", str(tmp_path), "-f", "--consumer", "c"],
            stdout=f,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
    try:
        wait_until(lambda: len(out.read_text().splitlines()) == 3, 30, "three records printed")
        w.append([EncodedRecord("t", None, None, 0, "3")], {"lsn": 3})
        wait_until(lambda: len(out.read_text().splitlines()) == 4, 30, "the new record")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    w.close()
    assert LogReader(tmp_path).consumers()[0]["committed"] == 4


# --- reading from a time -------------------------------------------------------------------


def test_since_starts_at_the_first_frame_at_or_after_the_time(
    tmp_path: Path,
    clock: Clock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = LogWriter(tmp_path, segment_bytes=MiB)
    t0 = clock.ms
    for i in range(12):  # one frame a minute, across several segments
        clock.ms = t0 + i * 60_000
        fill(w, 1)
    w.append([], {"lsn": 100})  # an empty frame (a heartbeat) at minute 11
    w.close()
    reader = LogReader(tmp_path)
    assert reader.offset_for_time(t0 + 5 * 60_000) == 15
    assert reader.offset_for_time(t0 + 5 * 60_000 - 1) == 15
    assert reader.offset_for_time(t0 + 5 * 60_000 + 1) == 18
    assert reader.offset_for_time(t0 - DAY_MS) == 0
    assert reader.offset_for_time(t0 + DAY_MS) == 36, "after the end: the end"
    assert [r.offset for r in reader.records(since=t0 + 11 * 60_000)] == [33, 34, 35]
    assert list(reader.records(since=t0 + DAY_MS)) == []
    # a time ahead: following prints what is written from then on, not what comes before it
    w = LogWriter(tmp_path, segment_bytes=MiB)
    clock.ms = t0 + 20 * 60_000
    fill(w, 1)  # offsets 36..38, before the time asked for
    clock.ms = t0 + 21 * 60_000
    fill(w, 1)  # offsets 39..41
    w.close()
    # as if the start was looked up before both frames were written (the end was then 36)
    with monkeypatch.context() as m:
        m.setattr(reader, "offset_for_time", lambda ms: 36)
        got = [r.offset for r in reader.records(since=t0 + 21 * 60_000 - 1)]
    assert got == [39, 40, 41]

    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((t0 + 10 * 60_000) / 1000))
    assert cli.main(["log", "read", str(tmp_path), "--since", iso]) == 0
    offsets = [json.loads(x)["offset"] for x in capsys.readouterr().out.splitlines()]
    assert offsets == list(range(30, 42))
    clock.ms = t0 + 12 * 60_000  # "now": two and a half minutes back is minute 9.5
    assert cli.main(["log", "read", str(tmp_path), "--since", "2m30s"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["offset"] == 30
    assert parse_since("2026-11-27T10:00:00+01:00") == parse_since("2026-11-27T09:00:00")

    assert LogReader(tmp_path).end_offset() == 42
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    seg.write_bytes(seg.read_bytes()[:-10])  # a torn last frame does not count
    assert LogReader(tmp_path).end_offset() == 39
    with pytest.raises(SystemExit) as e:
        cli.main(["log", "read", str(tmp_path), "--since", "yesterday"])
    assert e.value.code == 2
    assert "bad time 'yesterday': use an ISO-8601 time" in capsys.readouterr().err


def test_since_before_what_retention_deleted_is_an_error(tmp_path: Path, clock: Clock) -> None:
    w = LogWriter(tmp_path, segment_bytes=MiB, retention=LogRetention(max_bytes=2 * MiB))
    t0 = clock.ms
    for i in range(15):
        clock.ms = t0 + i * 60_000
        fill(w, 1)
    w.close()
    reader = LogReader(tmp_path)
    start = reader.start_offset()
    assert start > 0
    with pytest.raises(OffsetOutOfRange, match="were deleted by retention"):
        reader.offset_for_time(t0)
    assert reader.offset_for_time(t0 + 14 * 60_000) == 42


def test_sink_publishes_retention_metrics(tmp_path: Path) -> None:
    from cdc.metrics import REGISTRY
    from cdc.model import EncodedBatch
    from cdc.sinks.log import LogSink, LogSinkConfig

    cfg = LogSinkConfig(
        type="log", path=tmp_path, segment_bytes=MiB, retention=LogRetention(max_bytes="2MiB")
    )
    sink = LogSink(cfg, "metrics-test")
    for n in range(0, 45, 3):
        sink.write(EncodedBatch([big(n + i) for i in range(3)], {"lsn": n}))
    assert sink.committed() == {"lsn": 42}
    sink.close()

    def value(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"pipeline": "metrics-test"})

    assert value("cdc_log_start_offset") == seg_bases(tmp_path)[0] > 0
    assert value("cdc_log_segments_deleted_total") == 2
    assert value("cdc_log_retention_held_bytes") == 0
    assert 0 < (value("cdc_log_retained_bytes") or 0) <= 2 * MiB


def test_a_failing_deletion_does_not_fail_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    w = LogWriter(tmp_path, segment_bytes=MiB, retention=LogRetention(max_bytes=2 * MiB))
    with monkeypatch.context() as m, caplog.at_level(logging.WARNING):
        m.setattr(os, "unlink", refuse)
        fill(w, 15)
    assert "retention failed" in caplog.text and "Permission denied" in caplog.text
    assert seg_bases(tmp_path)[0] == 0 and w.next_offset == 45
    fill(w, 2)  # the next roll deletes what it can
    assert seg_bases(tmp_path)[0] > 0
    w.close()
