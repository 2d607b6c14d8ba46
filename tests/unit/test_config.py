from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdc.config import load, parse
from cdc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
pipelines:
  - name: shop
    source:
      type: postgres
      dsn: "host=127.0.0.1 port=5432 user=cdc dbname=shop"
      tables: ["public.orders", "public.customers"]
    sink:
      type: log
      path: ./data/shop
"""


def test_issue_example_is_valid() -> None:
    config = parse(GOOD)
    p = config.pipelines[0]
    assert p.prefix == "shop"
    assert p.source.tables == ["public.orders", "public.customers"]


def test_relative_log_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "cdc.yaml"
    f.write_text(GOOD)
    assert load(f).pipelines[0].sink.path == tmp_path / "data" / "shop"


def test_every_mistake_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as e:
        parse(
            """
pipelines:
  - name: shop
    source: {type: postgres, dsn: "host=x password=hunter2", tables: [orders], slot: My-Slot}
    sink: {type: log, path: ./x, segment_bytes: lots}
  - name: other
    source: {type: oracle}
    sink: {type: log, path: ./y, colour: red}
"""
        )
    assert e.value.problems == [
        "pipelines[0].source.slot: invalid slot name 'My-Slot': "
        "use a-z, 0-9 and _ (at most 63 characters)",
        "pipelines[0].sink.segment_bytes: bad value: 'lots': "
        "input should be a valid integer, unable to parse string as an integer",
        "pipelines[1].source: unknown type 'oracle': use one of postgres, mysql",
        "pipelines[1].sink.colour: unknown field; check its spelling against docs/configuration.md",
    ]


def test_secrets_never_shown() -> None:
    with pytest.raises(ConfigError) as e:
        parse(
            """
pipelines:
  - name: shop
    source: {type: postgres, dsn: [not, a, string], tables: [t]}
    sink: {type: log, path: ./x}
"""
        )
    assert e.value.problems == [
        "pipelines[0].source.dsn: bad value: input should be a valid string"
    ]


def test_environment_substitution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_TEST_DSN", "host=db user=cdc")
    config = parse(
        GOOD.replace('"host=127.0.0.1 port=5432 user=cdc dbname=shop"', "${CDC_TEST_DSN}")
    )
    assert config.pipelines[0].source.dsn == "host=db user=cdc"
    with pytest.raises(ConfigError) as e:
        parse(GOOD.replace("./data/shop", "${CDC_TEST_UNSET_VAR}/x"))
    assert e.value.problems == [
        "pipelines[0].sink.path: environment variable CDC_TEST_UNSET_VAR is not set; "
        "set it or write ${CDC_TEST_UNSET_VAR:-default}"
    ]
    assert parse(GOOD.replace("./data/shop", "${CDC_TEST_UNSET_VAR:-/tmp}/x")).pipelines[
        0
    ].sink.path == Path("/tmp/x")


def test_duplicate_pipeline_names() -> None:
    text = GOOD + GOOD.split("pipelines:")[1]
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert e.value.problems == ["pipelines[1].name: pipeline name 'shop' is used twice"]


def test_yaml_syntax_error_is_located() -> None:
    with pytest.raises(ConfigError) as e:
        parse("pipelines:\n  - name: [unclosed\n", "cdc.yaml")
    assert e.value.problems[0].startswith("cdc.yaml: not valid YAML at line")


def test_cli_three_mistakes_exit_2_no_traceback(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        """
pipelines:
  - name: shop
    source: {type: postgres, tables: [orders], slot: "Bad Slot"}
    sink: {type: log, path: ./x, fsync: maybe}
"""
    )
    proc = subprocess.run(
        [sys.executable, "-m", "cdc", "validate", "-c", str(f)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    assert lines[0] == "error: pipelines[0].source.dsn: required field is missing"
    assert lines[1].startswith("error: pipelines[0].source.slot: invalid slot name 'Bad Slot'")
    assert lines[2].startswith("error: pipelines[0].sink.fsync: bad value: 'maybe'")


def test_cli_validate_ok_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "good.yaml"
    f.write_text(GOOD)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ok = subprocess.run(
        [sys.executable, "-m", "cdc", "validate", "-c", str(f)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0 and "ok (1 pipeline(s): shop)" in ok.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "cdc", "validate", "-c", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode == 2 and "cannot read config file" in missing.stderr
