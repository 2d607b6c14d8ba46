from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cdc.errors import LogCorrupt, SinkError
from cdc.model import EncodedRecord
from cdc.sinks.log import LogReader, LogWriter
from cdc.sinks.log._schemas import SchemaStore


def rec(i: int, topic: str = "p.s.t", value: bytes | None = b"v") -> EncodedRecord:
    return EncodedRecord(topic, f"k{i}".encode(), value, 1000 + i, f"e{i}", (("h", b"x"),))


def write_frames(path: Path, n: int, per_frame: int = 3, **kw: int) -> None:
    w = LogWriter(path, **kw)
    for f in range(n):
        w.append([rec(f * per_frame + i) for i in range(per_frame)], {"lsn": f + 1})
    w.close()


def test_round_trip_and_offsets(tmp_path: Path) -> None:
    write_frames(tmp_path, 4)
    recs = list(LogReader(tmp_path).records())
    assert [r.offset for r in recs] == list(range(12))
    assert recs[5].key == b"k5" and recs[5].value == b"v" and recs[5].timestamp_ms == 1005
    assert recs[5].event_id == "e5" and recs[5].headers == (("h", b"x"),)
    assert [r.offset for r in LogReader(tmp_path).records(from_offset=7)] == list(range(7, 12))


def test_reopen_continues_offsets_and_positions(tmp_path: Path) -> None:
    write_frames(tmp_path, 2)
    w = LogWriter(tmp_path)
    assert w.position == {"lsn": 2} and w.prev == {"lsn": 1} and w.next_offset == 6
    w.append([rec(99)], {"lsn": 3})
    w.close()
    assert [r.offset for r in LogReader(tmp_path).records()][-1] == 6


def test_tombstones_and_topic_filter(tmp_path: Path) -> None:
    w = LogWriter(tmp_path)
    w.append([rec(1, "a"), rec(2, "b", None), rec(3, "a")], {"lsn": 1})
    w.close()
    recs = list(LogReader(tmp_path).records(topic="b"))
    assert len(recs) == 1 and recs[0].value is None and recs[0].offset == 1


def test_segments_roll_and_read_across(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, segment_bytes=1 << 20)
    big = b"x" * 300_000
    for f in range(8):
        w.append([EncodedRecord("t", None, big, 0, str(f))], {"lsn": f})
    w.close()
    segs = sorted(tmp_path.glob("*.seg"))
    assert len(segs) >= 2
    assert [r.offset for r in LogReader(tmp_path).records(from_offset=5)] == [5, 6, 7]
    assert LogReader(tmp_path).info()["records"] == 8


@pytest.mark.parametrize("damage", ["cut", "flip", "garbage"])
def test_damaged_tail_dropped_on_open(tmp_path: Path, damage: str) -> None:
    write_frames(tmp_path, 3)
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    if damage == "cut":
        data = data[:-5]
    elif damage == "flip":
        data[-3] ^= 1
    else:
        data += b"\x00" * 17
    seg.write_bytes(bytes(data))
    # readers stop before the damage without modifying anything
    assert len(list(LogReader(tmp_path).records())) == (9 if damage == "garbage" else 6)
    w = LogWriter(tmp_path)
    expected = {"lsn": 3} if damage == "garbage" else {"lsn": 2}
    assert w.position == expected
    assert w.truncated is not None
    w.append([rec(50)], {"lsn": 9})
    w.close()
    offsets = [r.offset for r in LogReader(tmp_path).records()]
    assert offsets == list(range(len(offsets)))


def test_corruption_before_the_tail_is_an_error(tmp_path: Path) -> None:
    w = LogWriter(tmp_path, segment_bytes=1 << 20)
    for f in range(6):
        w.append([EncodedRecord("t", None, b"y" * 400_000, 0, str(f))], {"lsn": f})
    w.close()
    first = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[100] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt, match="checksum mismatch"):
        list(LogReader(tmp_path).records())


def test_one_writer_per_directory(tmp_path: Path) -> None:
    w = LogWriter(tmp_path)
    with pytest.raises(SinkError, match="in use by another writer"):
        LogWriter(tmp_path)
    w.close()
    LogWriter(tmp_path).close()


def test_follow_sees_new_frames(tmp_path: Path) -> None:
    w = LogWriter(tmp_path)
    w.append([rec(0)], {"lsn": 0})
    got: list[int] = []

    def follow() -> None:
        for r in LogReader(tmp_path).records(follow=True):
            got.append(r.offset)
            if r.offset == 4:
                return

    t = threading.Thread(target=follow)
    t.start()
    for i in range(1, 5):
        w.append([rec(i)], {"lsn": i})
    t.join(timeout=10)
    w.close()
    assert not t.is_alive() and got == [0, 1, 2, 3, 4]


def test_schema_store_ids_and_torn_line(tmp_path: Path) -> None:
    s = SchemaStore(tmp_path, writable=True)
    a = s.register("t-value", {"type": "string"})
    b = s.register("t-key", {"type": "string"})
    c = s.register("u-value", {"type": "long"})
    assert a == b == 1 and c == 2
    assert s.register("t-value", {"type": "string"}) == 1
    with open(tmp_path / "schemas.jsonl", "ab") as f:
        f.write(b'{"id": 3, "subj')
    s2 = SchemaStore(tmp_path, writable=True)
    assert s2.get(2) == {"type": "long"}
    assert s2.register("v-value", {"type": "int"}) == 3
    assert SchemaStore(tmp_path, writable=False).get(3) == {"type": "int"}
