"""Faults of the built-in log: damage that is not a torn tail, files that are not ours, the
writer's lock, permissions, bad input to `cdc log`, a full disk (issue 14, items 2, 3, 9, 10,
12 and 13)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc import cli
from cdc.avro import frame
from cdc.config import parse
from cdc.errors import ConfigError, LogCorrupt, SinkError
from cdc.model import EncodedBatch, EncodedRecord
from cdc.sinks.log import LogReader, LogSink, LogSinkConfig, LogWriter
from cdc.sinks.log._format import HEADER, HEADER_SIZE, MAGIC, encode_frame

SCHEMA = {"type": "record", "name": "V", "fields": [{"name": "n", "type": "long"}]}


def rec(i: int) -> EncodedRecord:
    # an Avro record {"n": long}: zigzag varint of a small int is one byte
    return EncodedRecord("p.s.t", None, frame(1, bytes([2 * (i % 60)])), 1000 + i, f"e{i}")


def write_log(path: Path, frames: int, per_frame: int = 3, **kw: int) -> list[int]:
    """A log of ``frames`` frames with the schema registered; the byte where each frame starts."""
    w = LogWriter(path, **kw)
    w.schemas.register("p.s.t-value", SCHEMA)
    starts = []
    for f in range(frames):
        starts.append(sum(p.stat().st_size for p in path.glob("*.seg")))
        w.append([rec(f * per_frame + i) for i in range(per_frame)], {"lsn": f + 1})
    w.close()
    return starts


def digest(path: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.iterdir())
        if p.is_file()
    }


def only_segment(path: Path) -> Path:
    (seg,) = path.glob("*.seg")
    return seg


# --- item 2: damage in the middle is corruption, never a torn tail ----------------------------


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(HEADER_SIZE + 10, id="payload"),
        pytest.param(0, id="magic"),
        pytest.param(5, id="crc"),
        pytest.param(9, id="length"),
    ],
)
def test_one_changed_byte_mid_segment_stops_and_cuts_nothing(tmp_path: Path, where: int) -> None:
    starts = write_log(tmp_path, 6)
    seg = only_segment(tmp_path)
    data = bytearray(seg.read_bytes())
    at = starts[2] + where
    data[at] ^= 0x40
    seg.write_bytes(bytes(data))
    before = digest(tmp_path)

    with pytest.raises(LogCorrupt) as e:
        LogWriter(tmp_path)
    msg = str(e.value)
    assert str(seg) in msg and f"at byte {starts[2]}" in msg
    assert "nothing was cut" in msg and "docs/log.md" in msg
    assert digest(tmp_path) == before, "an acknowledged frame was deleted"
    # the lock went with the failed open: a second try fails the same way, not "in use"
    with pytest.raises(LogCorrupt):
        LogWriter(tmp_path)

    # readers stop at the damage with the same error instead of ending quietly before it
    with pytest.raises(LogCorrupt, match=f"at byte {starts[2]}"):
        list(LogReader(tmp_path).records())
    with pytest.raises(LogCorrupt):
        LogReader(tmp_path).info()
    assert cli.main(["log", "read", str(tmp_path)]) == 1
    assert digest(tmp_path) == before


def test_a_torn_last_frame_is_still_cut(tmp_path: Path) -> None:
    """What a crash while appending leaves: a prefix of the last frame, then zeros where the
    file grew but the data never reached the disk."""
    starts = write_log(tmp_path, 4)
    seg = only_segment(tmp_path)
    data = seg.read_bytes()
    seg.write_bytes(data[: starts[3] + 20] + b"\0" * 50)
    w = LogWriter(tmp_path)
    assert w.truncated is not None and w.position == {"lsn": 3} and w.next_offset == 9
    assert seg.stat().st_size == starts[3]
    w.append([rec(9)], {"lsn": 4})
    w.close()
    assert [r.offset for r in LogReader(tmp_path).records()] == list(range(10))


def test_a_torn_first_frame_of_a_new_segment_is_cut(tmp_path: Path) -> None:
    w = LogWriter(tmp_path)
    w.append([rec(0)], {"lsn": 1})
    w.close()
    seg = only_segment(tmp_path)
    whole = encode_frame(1, [rec(1)], {"lsn": 2}, {"lsn": 1}, 0)
    nxt = tmp_path / "00000000000000000001.seg"
    nxt.write_bytes(whole[:2])  # even two bytes of the magic are ours
    w = LogWriter(tmp_path)
    assert w.position == {"lsn": 1} and nxt.stat().st_size == 0
    w.close()
    assert seg.stat().st_size > 0


def test_a_frame_inside_a_torn_frames_record_is_not_taken_for_a_later_frame(
    tmp_path: Path,
) -> None:
    starts = write_log(tmp_path, 3)
    other = encode_frame(0, [rec(0)], {"lsn": 1}, None, 0)  # a frame of another log, as data
    w = LogWriter(tmp_path)
    w.append([EncodedRecord("p.s.t", None, other, 0, "x")], {"lsn": 4})
    w.close()
    seg = only_segment(tmp_path)
    seg.write_bytes(seg.read_bytes()[:-5])  # torn: the embedded frame is whole, the outer is not
    w = LogWriter(tmp_path)
    assert w.truncated is not None and w.position == {"lsn": 3}
    w.close()
    assert seg.stat().st_size == starts[2] + (starts[2] - starts[1])


@pytest.mark.parametrize("content", [b"my notes, not a log\n", b"\x7fELF\x02\x01\x01" + b"x" * 300])
def test_a_foreign_segment_file_is_never_cut(tmp_path: Path, content: bytes) -> None:
    tmp_path.joinpath("00000000000000000000.seg").write_bytes(content)
    with pytest.raises(LogCorrupt, match=r"00000000000000000000\.seg does not start with a frame"):
        LogWriter(tmp_path)
    assert tmp_path.joinpath("00000000000000000000.seg").read_bytes() == content


def test_bytes_past_a_damaged_last_frame_are_not_a_torn_write(tmp_path: Path) -> None:
    starts = write_log(tmp_path, 3)
    seg = only_segment(tmp_path)
    data = bytearray(seg.read_bytes())
    data[starts[2] + HEADER_SIZE + 3] ^= 1
    data += b"trailing bytes nobody wrote"
    seg.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt, match="follow past the end that frame declares"):
        LogWriter(tmp_path)
    assert seg.read_bytes() == bytes(data)


# --- item 3: the lock cannot be deleted; a writer notices its segment changing ------------------


def test_deleting_lock_files_does_not_let_a_second_writer_in(tmp_path: Path) -> None:
    w = LogWriter(tmp_path)
    w.append([rec(0)], {"lsn": 1})
    for p in tmp_path.iterdir():
        if p.name.startswith(".") and p.is_file():
            p.unlink()
    with pytest.raises(SinkError, match="in use by another writer"):
        LogWriter(tmp_path)
    # ... and not from another process either
    code = "import sys; from pathlib import Path; from cdc.sinks.log import LogWriter; "
    code += "LogWriter(Path(sys.argv[1]))"
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
    )
    assert run.returncode != 0 and "in use by another writer" in run.stderr
    w.append([rec(1)], {"lsn": 2})
    w.close()
    assert [r.offset for r in LogReader(tmp_path).records()] == [0, 1]


@pytest.mark.parametrize("change", ["cut", "grown", "replaced", "deleted"])
def test_a_writer_stops_when_its_segment_changes_under_it(tmp_path: Path, change: str) -> None:
    w = LogWriter(tmp_path)
    for i in range(3):
        w.append([rec(i)], {"lsn": i + 1})
    seg = only_segment(tmp_path)
    data = seg.read_bytes()
    if change == "cut":  # what a second writer "cutting a torn tail" did
        os.truncate(seg, len(data) - 10)
    elif change == "grown":
        with open(seg, "ab") as f:
            f.write(encode_frame(3, [rec(3)], {"lsn": 9}, {"lsn": 3}, 0))
    elif change == "replaced":
        other = tmp_path / "other"
        other.write_bytes(data)
        other.replace(seg)
    else:
        seg.unlink()
    before = seg.read_bytes() if seg.exists() else None
    with pytest.raises(LogCorrupt, match=f"log segment {seg} .* while this daemon was writing"):
        w.append([rec(3)], {"lsn": 4})
    assert (seg.read_bytes() if seg.exists() else None) == before, "it wrote on"
    w.close()


# --- item 9: a failed open releases the lock ---------------------------------------------------


def test_a_failed_open_releases_the_lock(tmp_path: Path) -> None:
    write_log(tmp_path, 2)
    schemas = tmp_path / "schemas.jsonl"
    saved = schemas.read_bytes()
    schemas.unlink()
    schemas.mkdir()  # fails after the lock is taken: the schema store cannot be read
    config = LogSinkConfig(type="log", path=tmp_path)
    for _ in range(2):  # the daemon's next attempt must see the same cause, not "in use"
        with pytest.raises((LogCorrupt, OSError)) as e:
            LogSink(config)
        assert "schemas.jsonl" in str(e.value)
    assert isinstance(e.value, LogCorrupt) and "cannot be read" in str(e.value)
    schemas.rmdir()
    schemas.write_bytes(saved)
    sink = LogSink(config)  # the cause is gone: it opens
    sink.write(EncodedBatch([rec(6)], {"lsn": 3}))
    sink.close()
    assert [r.offset for r in LogReader(tmp_path).records()] == list(range(7))


def test_a_failed_open_on_a_corrupt_log_releases_the_lock(tmp_path: Path) -> None:
    starts = write_log(tmp_path, 3)
    seg = only_segment(tmp_path)
    good = seg.read_bytes()
    bad = bytearray(good)
    bad[starts[1] + HEADER_SIZE] ^= 1
    seg.write_bytes(bytes(bad))
    with pytest.raises(LogCorrupt):
        LogWriter(tmp_path)
    seg.write_bytes(good)  # restored from a backup
    LogWriter(tmp_path).close()


# --- item 10: private files, whatever the umask --------------------------------------------------


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize(
    ("config_mode", "umask_value", "files", "dirs"),
    [(None, 0o022, 0o600, 0o700), (None, 0o000, 0o600, 0o700), ("0640", 0o077, 0o640, 0o750)],
)
def test_the_log_is_private_whatever_the_umask(
    tmp_path: Path,
    umask: None,
    config_mode: str | None,
    umask_value: int,
    files: int,
    dirs: int,
) -> None:
    os.umask(umask_value)
    log = tmp_path / "log"
    extra = {} if config_mode is None else {"file_mode": config_mode}
    sink = LogSink(LogSinkConfig.model_validate({"type": "log", "path": str(log), **extra}))
    sink.registry.register("p.s.t-value", SCHEMA)
    sink.write(EncodedBatch([rec(0)], {"lsn": 1}))
    sink.close()
    with LogReader(log).consumer("billing") as c:
        c.commit(1)
    assert mode(log) == dirs
    assert mode(log / "consumers") == dirs
    for p in [only_segment(log), log / "schemas.jsonl", log / "consumers" / "billing.json"]:
        assert mode(p) == files, p.name
    for p in log.rglob("*"):
        if p.is_file():
            assert mode(p) & 0o007 == 0, f"{p} is readable by everyone"


def test_file_mode_config() -> None:
    def make(v: object) -> int:
        return LogSinkConfig.model_validate({"type": "log", "path": "/x", "file_mode": v}).file_mode

    assert LogSinkConfig(type="log", path=Path("/x")).file_mode == 0o600
    assert make("0640") == make("0o640") == make(0o640) == 0o640
    for bad in ["rw", "0400", 0o1777, True]:
        with pytest.raises(ValueError, match="file mode"):
            make(bad)
    from cdc.sinks.log import _files

    assert _files.dir_mode(0o600) == 0o700 and _files.dir_mode(0o644) == 0o755


# --- item 12: clear errors from `cdc log` on bad input -----------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli.main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def crafted_frame(payload_tail: bytes, count: int, base: int = 0) -> bytes:
    """A frame with a good checksum whose records do not match ``count``."""
    pos = b'{"lsn":1}'
    payload = struct.pack(">I", len(pos)) + pos + struct.pack(">I", 4) + b"null" + payload_tail
    rest = struct.pack(">IQIQ", len(payload), base, count, 0)
    return MAGIC + struct.pack(">I", zlib.crc32(payload, zlib.crc32(rest))) + rest + payload


BAD_INPUT = (
    "no-schemas",
    "foreign-schemas",
    "bad-schema-line",
    "dir-segment",
    "lone-garbage",
    "count",
    "impossible-header",
)


@pytest.mark.parametrize(
    ("cmd", "case"),
    [
        (cmd, case)
        for cmd in ("read", "info")
        for case in BAD_INPUT
        # info verifies checksums, not records (that would cost it a parse of every record),
        # and decodes nothing: a missing store shows as no subjects (a log written through
        # the Python API may hold values that are not Avro, without schemas)
        if not (cmd == "info" and case in ("count", "no-schemas"))
    ],
)
def test_cli_bad_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cmd: str, case: str
) -> None:
    log = tmp_path / "log"
    write_log(log, 2)
    named = "schemas.jsonl"
    if case == "no-schemas":
        (log / "schemas.jsonl").unlink()
    elif case == "foreign-schemas":
        (log / "schemas.jsonl").write_text("these are my notes\nnot schemas\n")
    elif case == "bad-schema-line":
        (log / "schemas.jsonl").write_text('{"id": 1}\n')
    elif case == "dir-segment":
        (log / "00000000000000000099.seg").mkdir()
        named = "00000000000000000099.seg"
    elif case == "lone-garbage":
        for p in log.glob("*.seg"):
            p.unlink()
        (log / "00000000000000000000.seg").write_bytes(b"garbage, not a segment\n" * 3)
        named = "00000000000000000000.seg"
    elif case == "impossible-header":
        for p in log.glob("*.seg"):
            p.unlink()
        # a million records in 64 bytes: no checksum needed to see that no writer made this
        head = HEADER.pack(MAGIC, 0, 64, 0, 1_000_000, 0)
        (log / "00000000000000000000.seg").write_bytes(head + b"\x01" * 64)
        named = "00000000000000000000.seg"
    else:
        seg = only_segment(log)
        with open(seg, "ab") as f:  # claims 5 records, holds none
            f.write(crafted_frame(b"", count=5, base=6))
        named = seg.name
    rc, err = run_cli(["log", cmd, str(log)], capsys)
    assert rc == 1 and err.startswith("error: ") and named in err, err


def test_cli_bad_record_count_either_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log"
    write_log(log, 1)
    seg = only_segment(log)
    one = encode_frame(3, [rec(3)], {"lsn": 2}, {"lsn": 1}, 0)
    plen = HEADER.unpack_from(one)[2]
    tail = one[HEADER_SIZE + 4 + 9 + 4 + 9 : HEADER_SIZE + plen]  # the record, after positions
    with open(seg, "ab") as f:
        f.write(crafted_frame(tail + tail, count=1, base=3))  # two records, count says one
    rc, err = run_cli(["log", "read", str(log)], capsys)
    assert rc == 1 and "bytes left after its 1 records" in err and seg.name in err


def test_cli_missing_log_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("read", "info"):
        rc, err = run_cli(["log", cmd, str(tmp_path / "nope")], capsys)
        assert rc == 1 and "does not exist" in err


# --- item 13: an empty sink.path, a full disk ----------------------------------------------------


def test_an_empty_sink_path_is_refused_at_validation() -> None:
    text = """
pipelines:
  - name: shop
    source: {type: postgres, dsn: "host=x", tables: [orders]}
    sink: {type: log, path: ''}
"""
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert e.value.problems == [
        "pipelines[0].sink.path: empty path: give the log its own directory, such as "
        "/var/lib/cdc/shop (an empty path would put the log in the config file's folder)"
    ]


def test_a_full_disk_names_the_segment_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cdc.sinks.log import _files  # the injection point: every write of the log goes through it

    sink = LogSink(LogSinkConfig(type="log", path=tmp_path))
    sink.write(EncodedBatch([rec(0), rec(1)], {"lsn": 1}))
    real = _files.write_all

    def full(fd: int, data: bytes) -> None:
        real(fd, data[:7])  # half a frame reaches the file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_files, "write_all", full)
    with pytest.raises(SinkError) as e:
        sink.write(EncodedBatch([rec(2)], {"lsn": 2}))
    monkeypatch.undo()
    seg = only_segment(tmp_path)
    assert e.value.retryable
    assert str(seg) in str(e.value) and "No space left on device" in str(e.value)
    assert "free space" in str(e.value)
    sink.close()
    # the pipeline's restart: the half frame is a torn tail, the source resends from lsn 1
    sink = LogSink(LogSinkConfig(type="log", path=tmp_path))
    assert sink.committed() == {"lsn": 1}
    sink.write(EncodedBatch([rec(2)], {"lsn": 2}))
    sink.close()
    assert [r.offset for r in LogReader(tmp_path).records()] == [0, 1, 2]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (test_a_full_disk_... covers it with a fake)")
    run = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {run.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)  # -l: a file left open


def test_a_really_full_disk(tiny_disk: Path) -> None:
    log = tiny_disk / "log"
    sink = LogSink(LogSinkConfig(type="log", path=log))
    big = b"x" * 100_000
    with pytest.raises(SinkError) as e:
        for i in range(20):  # 2 MB into a 1 MB file system
            sink.write(EncodedBatch([EncodedRecord("t", None, big, 0, f"e{i}")], {"lsn": i + 1}))
    sink.close()
    seg = only_segment(log)
    assert str(seg) in str(e.value) and "free space" in str(e.value) and e.value.retryable
    written = i  # frames made durable before the one that did not fit
    sink = LogSink(LogSinkConfig(type="log", path=log))  # cuts the half frame
    assert sink.committed() == {"lsn": written}
    sink.close()
    assert len(list(LogReader(log).records())) == written


def test_cli_a_value_that_is_not_avro(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = LogWriter(tmp_path)
    w.schemas.register("p.s.t-value", SCHEMA)
    w.append([rec(0), EncodedRecord("p.s.t", None, b"plain text", 0, "e1")], {"lsn": 1})
    w.close()
    rc, err = run_cli(["log", "read", str(tmp_path)], capsys)
    assert rc == 1 and "record 1 (p.s.t)" in err and only_segment(tmp_path).name in err, err


def test_a_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "log"
    f.write_text("not a directory")
    with pytest.raises(SinkError, match="exists and is not a directory"):
        LogWriter(f)
    assert f.read_text() == "not a directory"


def test_schema_store_cuts_only_a_torn_last_line(tmp_path: Path) -> None:
    from cdc.sinks.log._schemas import SchemaStore

    s = SchemaStore(tmp_path, writable=True)
    s.register("a-value", SCHEMA)
    path = tmp_path / "schemas.jsonl"
    good = path.read_bytes()
    line = b'{"id":2,"subject":"b-value","schema":"long"}\n'
    # the whole line's length reached the disk, a page of it did not: zeros inside
    path.write_bytes(good + line[:10] + b"\0" * (len(line) - 11) + b"\n")
    assert SchemaStore(tmp_path, writable=True).subjects() == {"a-value": [1]}
    assert path.read_bytes() == good
    for foreign in [b"hello, no newline", b"not ours\n"]:
        path.write_bytes(good + foreign)
        with pytest.raises(LogCorrupt, match=r"schemas\.jsonl: line 2"):
            SchemaStore(tmp_path, writable=True)
        assert path.read_bytes() == good + foreign, "a line that is not ours was cut"
