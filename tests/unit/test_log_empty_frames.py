"""Frames without records: the position-only batches a source yields to move its slot forward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdc import cli
from cdc.avro import frame
from cdc.model import EncodedBatch, EncodedRecord
from cdc.sinks.log import LogReader, LogSink, LogSinkConfig, LogWriter


def rec(i: int, schema_id: int = 1) -> EncodedRecord:
    # an Avro record {"n": long}: zigzag varint of a small int is one byte
    return EncodedRecord("p.s.t", None, frame(schema_id, bytes([2 * i])), 1000 + i, f"e{i}")


def test_empty_frames_carry_positions_and_no_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = LogSink(LogSinkConfig(type="log", path=tmp_path))
    sid = sink.registry.register(
        "p.s.t-value", {"type": "record", "name": "V", "fields": [{"name": "n", "type": "long"}]}
    )
    assert sid == 1
    sink.write(EncodedBatch([rec(0), rec(1)], {"lsn": 10}))
    sink.write(EncodedBatch([], {"lsn": 20}))
    assert sink.committed() == {"lsn": 20}
    sink.write(EncodedBatch([], {"lsn": 30}))
    # the source may discard up to the position before the last frame, empty or not
    assert sink.acknowledgeable() == {"lsn": 20}
    sink.write(EncodedBatch([rec(2)], {"lsn": 40}))
    sink.write(EncodedBatch([], {"lsn": 50}))
    sink.close()

    w = LogWriter(tmp_path)  # reopened: resumes after the last (empty) frame
    assert w.position == {"lsn": 50} and w.prev == {"lsn": 40} and w.next_offset == 3
    w.close()
    reader = LogReader(tmp_path)
    assert [r.offset for r in reader.records()] == [0, 1, 2]
    assert [r.offset for r in reader.records(from_offset=2)] == [2]
    assert list(reader.records(from_offset=3)) == []
    info = reader.info()
    assert info["records"] == 3 and info["last_offset"] == 2 and info["frames"] == 5
    assert info["last_position"] == {"lsn": 50}

    assert cli.main(["log", "read", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["offset"] for line in lines] == [0, 1, 2]
    assert [json.loads(line)["value"] for line in lines] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert cli.main(["log", "info", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 3


def test_a_segment_of_empty_frames_roll_and_reopen(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, segment_bytes=4096)
    w.append([rec(0)], {"lsn": 1})
    for i in range(200):  # far more than one segment's worth of empty frames
        w.append([], {"lsn": 2 + i})
    w.append([rec(1)], {"lsn": 500})
    w.append([rec(2)], {"lsn": 501})
    w.close()
    segs = sorted(tmp_path.glob("*.seg"))
    assert len(segs) >= 2
    assert [r.offset for r in LogReader(tmp_path).records()] == [0, 1, 2]
    w = LogWriter(tmp_path, segment_bytes=4096)
    assert w.position == {"lsn": 501} and w.next_offset == 3
    w.close()
