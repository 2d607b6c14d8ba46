"""The log source without servers: `cdc check` on its path, and where a relative path points."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cdc.cli import main
from cdc.config import load
from cdc.errors import PositionLost
from cdc.model import EncodedRecord
from cdc.sinks.log import LogReader, LogWriter, segments
from cdc.sources.log._source import LogSource
from cdc.sources.log.config import LogSourceConfig
from tests.conftest import wait_until


def relay_config(tmp_path: Path, source_path: str) -> Path:
    conf = tmp_path / "conf" / "cdc.yaml"
    conf.parent.mkdir()
    conf.write_text(
        f"""
pipelines:
  - name: relay
    source: {{type: log, path: "{source_path}"}}
    sink: {{type: log, path: out}}
"""
    )
    return conf


def test_a_relative_source_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load(relay_config(tmp_path, "../shop"))
    source = config.pipelines[0].source
    assert isinstance(source, LogSourceConfig)
    assert source.path == tmp_path / "shop"


def test_check_names_a_missing_log_and_a_directory_that_is_no_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = relay_config(tmp_path, str(tmp_path / "shop"))
    assert main(["check", "-c", str(conf)]) == 1
    out = capsys.readouterr().out
    assert f"log {tmp_path / 'shop'} does not exist" in out
    assert "sink.path of the pipeline that writes the log" in out

    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "notes.txt").write_text("not a log")
    assert main(["check", "-c", str(conf)]) == 1
    assert "is not a cdc log (no segment files, no schemas.jsonl)" in capsys.readouterr().out


def test_check_passes_on_a_log_and_a_stopped_source_returns_while_waiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = LogWriter(tmp_path / "shop")
    writer.append([EncodedRecord("t", None, b"\x00\x00\x00\x00\x01", 0, "e1")], {"lsn": 1})
    writer.close()
    conf = relay_config(tmp_path, str(tmp_path / "shop"))
    assert main(["check", "-c", str(conf)]) == 0
    assert "pipeline relay (log source): ok" in capsys.readouterr().out

    # Not created yet: the source waits for its writer, and stop() ends the wait.
    source = LogSource(LogSourceConfig(type="log", path=tmp_path / "later"), "relay")
    source.stop()
    assert list(source.batches(None)) == []
    source.close()

    # Following a log with nothing new: stop() wakes the wait and batches() returns.
    following = LogSource(
        LogSourceConfig(type="log", path=tmp_path / "shop", start="latest"), "relay"
    )
    got: list[object] = []
    t = threading.Thread(target=lambda: got.extend(following.batches(None)))
    t.start()
    wait_until(lambda: following.streaming, 10, "the source to follow")
    following.stop()
    t.join(10)
    assert not t.is_alive()
    following.close()
    # What it did: it registered its named consumer at the log's end (retention keeps from there).
    assert LogReader(tmp_path / "shop").consumers()[0]["name"] == "relay"
    assert LogReader(tmp_path / "shop").consumers()[0]["committed"] == 1


def test_records_deleted_before_the_relay_read_them_stop_it_with_position_lost(
    tmp_path: Path,
) -> None:
    writer = LogWriter(tmp_path / "shop", segment_bytes=1 << 20)
    big = b"\x00" * (700 << 10)
    for n in range(3):  # three frames of 700 KiB: the second and third each start a segment
        writer.append([EncodedRecord("t", None, big, 0, f"e{n}")], {"n": n})
    writer.close()
    first = segments(tmp_path / "shop")[0][1]
    first.unlink()  # as retention deletes a closed segment
    source = LogSource(LogSourceConfig(type="log", path=tmp_path / "shop"), "relay")
    with pytest.raises(PositionLost, match=r"offset 0 was deleted by the log's retention"):
        next(source.batches({"offset": 0}))
    source.close()


def test_a_position_past_the_log_s_end_is_waited_for_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a machine crash the log may end before the relay's position (a frame not yet
    fsynced is lost, and written again by its writer); a log started again from nothing looks
    the same: the relay waits and says both."""
    writer = LogWriter(tmp_path / "shop")
    writer.append([EncodedRecord("t", None, b"\x00\x00\x00\x00\x01", 0, "e1")], {"n": 1})
    writer.close()
    source = LogSource(LogSourceConfig(type="log", path=tmp_path / "shop"), "relay")
    got: list[object] = []
    t = threading.Thread(target=lambda: got.extend(source.batches({"offset": 500})))
    t.start()
    wait_until(lambda: source.streaming, 10, "the source to follow")
    source.stop()
    t.join(10)
    assert not t.is_alive() and got == []
    source.close()
    assert "position is offset 500 but the log ends at offset 1; waiting" in caplog.text
    assert "re-create this pipeline's sink" in caplog.text


def test_a_pipeline_reading_its_own_log_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "cdc.yaml"
    conf.write_text(
        "pipelines:\n  - name: loop\n    source: {type: log, path: shop}\n"
        "    sink: {type: log, path: shop}\n"
    )
    assert main(["validate", "-c", str(conf)]) == 2
    assert "pipelines[0].source.path: 'shop' is this pipeline's own sink.path" in (
        capsys.readouterr().err
    )
