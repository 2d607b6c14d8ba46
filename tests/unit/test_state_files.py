"""The daemon's own state files are readable by its user only, whatever the umask (issue 14,
item 10: checkpoints and the status file; the built-in log's files are sinks/log's)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc.checkpoint import Checkpoint, make_dirs, replace_file
from cdc.status import write_file


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)  # everything a process may create would be 0666 / 0777
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_checkpoint_files_and_directories_are_private(
    tmp_path: Path, permissive_umask: None
) -> None:
    state = tmp_path / "state" / "kafka" / "orders"
    cp = Checkpoint(state, "kafka sink")
    cp.save({"lsn": 42})
    cp.close()
    assert mode(state / "checkpoint.json") == 0o600
    assert mode(state / ".writer.lock") == 0o600
    for d in (state, state.parent, state.parent.parent):
        assert mode(d) == 0o700, d


def test_replace_file_sets_the_mode_whatever_was_there(
    tmp_path: Path, permissive_umask: None
) -> None:
    f = tmp_path / "x.json"
    f.write_text("old")
    os.chmod(f, 0o666)
    (tmp_path / "x.json.tmp").write_text("a stale temp file")
    os.chmod(tmp_path / "x.json.tmp", 0o666)
    replace_file(f, b"new")
    assert f.read_bytes() == b"new" and mode(f) == 0o600
    replace_file(f, b"shared", mode=0o640)
    assert mode(f) == 0o640


def test_existing_directories_keep_their_mode(tmp_path: Path, permissive_umask: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    make_dirs(shared / "a" / "b")
    assert mode(shared) == 0o755
    assert mode(shared / "a") == 0o700 and mode(shared / "a" / "b") == 0o700


def test_status_file_is_private(tmp_path: Path, permissive_umask: None) -> None:
    f = tmp_path / "cdc.status.json"
    f.write_text("{}")
    os.chmod(f, 0o644)  # as the old daemon wrote it
    write_file(f, {"pipelines": [{"name": "x", "last_error": "boom"}]})
    assert mode(f) == 0o600
    assert "boom" in f.read_text()
