from __future__ import annotations

import os
import resource
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
        "pipelines[0].sink.segment_bytes: bad size 'lots': use a number of bytes or a size "
        "such as 500MB, 10GiB (KB/MB/GB/TB: powers of 1000; KiB/MiB/GiB/TiB: of 1024)",
        "pipelines[1].source: unknown type 'oracle': use one of postgres, mysql, log",
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


# --- secrets never echoed (issue 14, item 11) -----------------------------------------------------


def _limit_memory() -> None:
    # An alias bomb that is not refused grows without limit: keep it off the shared machine.
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def validate(f: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc", "validate", "-c", str(f)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=timeout,
        preexec_fn=_limit_memory,
    )


def test_validate_never_echoes_a_password(tmp_path: Path) -> None:
    f = tmp_path / "leaky.yaml"
    f.write_text(
        """
pipelines:
  - "postgresql://cdc:pipeline-pw-1@db/shop"
  - "host=db user=cdc password=pipeline-pw-2 dbname=shop"
  - name: n
    source: {type: postgres, dsn: "host=h", tables: [a.b]}
    sink: {type: nats, path: ./n, servers: ["http://u:nats-pw-3@h:4222"]}
  - name: k
    source: {type: postgres, dsn: "host=h", tables: [a.b]}
    sink:
      type: kafka
      path: ./k
      bootstrap_servers: "h:9092"
      schema_registry: {url: "ftp://u:registry-pw-4@h"}
      producer:
        sasl.password: [kafka-pw-5]
        ssl.key.password: {kafka-pw-6: x}
        ssl.key.pem: [kafka-pem-7]
        sasl.oauthbearer.config: [clientSecret=kafka-oauth-8]
        sasl.oauthbearer.client.secret: [kafka-secret-9]
"""
    )
    proc = validate(f)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in range(1, 10):
        assert f"-{n}" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == (
        "error: pipelines[0]: expected a mapping of fields (name: value lines), got a string"
    )
    assert "invalid server URL 'http://u:***@h:4222'" in proc.stderr  # still says which one
    assert "error: pipelines[3].sink.producer.ssl.key.pem: bad value: " in proc.stderr
    # one message per wrong setting, not one per type it could have had
    assert proc.stderr.count("producer.sasl.password:") == 1


def test_every_secret_of_a_kafka_producer_is_masked_in_logs() -> None:
    from cdc import logs

    cfg = parse(
        """
pipelines:
  - name: k
    source: {type: postgres, dsn: "host=h", tables: [a.b]}
    sink:
      type: kafka
      path: ./k
      bootstrap_servers: "h:9092"
      schema_registry: {url: "http://r:8081"}
      producer:
        compression.type: lz4
        sasl.mechanism: OAUTHBEARER
        sasl.oauthbearer.config: "clientId=me clientSecret=oauth-s3cret"
        sasl.oauthbearer.token.endpoint.url: "https://idp.example/token"
        sasl.password: sasl-s3cret
        ssl.key.password: key-s3cret
        ssl.keystore.password: store-s3cret
        ssl.key.pem: "-----BEGIN PRIVATE KEY-----abc"
    transforms:
      - {type: hash_columns, columns: ['a\\.b\\.c'], salt: salt-s3cret}
"""
    )
    found = set(logs.secrets_in(cfg))
    assert found == {
        "clientId=me clientSecret=oauth-s3cret",
        "sasl-s3cret",
        "key-s3cret",
        "store-s3cret",
        "-----BEGIN PRIVATE KEY-----abc",
        "salt-s3cret",
    }


def test_one_rule_decides_what_is_secret() -> None:
    from cdc.secrets import is_secret_name, mask, mask_connection_string

    for name in ("password", "sasl.password", "ssl.key.pem", "sasl.oauthbearer.config", "token"):
        assert is_secret_name(name), name
    for name in ("user", "dsn", "sasl.oauthbearer.token.endpoint.url", "ssl.ca.pem", "servers"):
        assert not is_secret_name(name), name
    assert mask_connection_string("nats://u:p%40ss@h:4222") == "nats://u:***@h:4222"
    assert mask("a=secret-long b=secret", ["secret", "secret-long"]) == "a=*** b=***"


# --- hostile or broken files: a located error and exit 2, never a traceback or a hang (item 12) ---


def test_a_file_that_is_not_utf8_is_a_located_error(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes(GOOD.encode().replace(b"shop\n    source", b"sh\xf6p\n    source"))
    with pytest.raises(ConfigError) as e:
        load(f)
    assert e.value.problems == [
        f"{f}: not UTF-8 at line 3, column 13 (byte 24: 0xf6): save the file as UTF-8"
    ]


def test_deeply_nested_brackets_are_a_located_error(tmp_path: Path) -> None:
    f = tmp_path / "deep.yaml"
    f.write_text("pipelines: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as e:
        load(f)
    [problem] = e.value.problems
    assert problem.startswith(f"{f}: line 1, column ")
    assert "nested more than 64 levels deep" in problem


BILLION_LAUGHS = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
pipelines: *i
"""


def test_alias_bombs_are_refused_before_they_expand(tmp_path: Path) -> None:
    # Six levels (531,441 strings) rather than nine: small enough to run in-process even where
    # it is not refused. The nine-level one is run in a memory-limited subprocess below.
    small = BILLION_LAUGHS.split("g: ")[0] + "pipelines: *f\n"
    with pytest.raises(ConfigError) as e:
        parse(small, "bomb.yaml")
    [problem] = e.value.problems
    assert problem.startswith("bomb.yaml: line ")
    assert "aliases expand this value to more than 100,000 values" in problem
    # Each anchor 30 levels deep holding the one before: few values, but 600 levels once expanded
    # (past the stack of everything that walks the data after loading).
    chain = "".join(
        f"x{i}: &a{i} " + "[" * 30 + (f"*a{i - 1}" if i else "1") + "]" * 30 + "\n"
        for i in range(20)
    )
    with pytest.raises(ConfigError) as e:
        parse(chain + "pipelines: *a19\n", "chain.yaml")
    [problem] = e.value.problems
    assert problem.startswith("chain.yaml: line ")
    assert problem.endswith("aliases expand this value to more than 64 levels of nesting")
    with pytest.raises(ConfigError) as e:
        parse("pipelines: &p [*p]\n", "loop.yaml")
    assert e.value.problems == [
        "loop.yaml: line 1, column 12: an alias refers to the value that contains it"
    ]


def test_aliases_within_bounds_still_work() -> None:
    text = "pipelines:\n" + "".join(
        f"  - {{name: p{i}, source: {'&src ' if i == 0 else ''}"
        + ('{type: postgres, dsn: "host=h", tables: [public.t]}' if i == 0 else "*src")
        + f", sink: {{type: log, path: ./p{i}}}}}\n"
        for i in range(50)
    )
    cfg = parse(text)
    assert [p.source.tables for p in cfg.pipelines] == [["public.t"]] * 50


def test_hostile_files_exit_2_without_traceback_or_hang(tmp_path: Path) -> None:
    files = {
        "latin1.yaml": b"pipelines: \xff\xfe\n",
        "deep.yaml": ("pipelines: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
        "bomb.yaml": BILLION_LAUGHS.encode(),
        "huge.yaml": b"# " + b"x" * (2 << 20) + b"\n",
    }
    for name, content in files.items():
        f = tmp_path / name
        f.write_bytes(content)
        # The timeout is a deadline against a hang (the bomb took minutes), not a timing claim.
        proc = validate(f, timeout=120)
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, name
        assert proc.stderr.startswith(f"error: {f}"), (name, proc.stderr)


def test_a_character_yaml_forbids_is_located() -> None:
    with pytest.raises(ConfigError) as e:
        parse("pipelines:\n  - name: a\x07b\n", "bell.yaml")
    assert e.value.problems == [
        "bell.yaml: not valid YAML at line 2, column 12: the character U+0007 is not allowed in "
        "YAML; remove it"
    ]


def test_a_short_secret_does_not_garble_messages() -> None:
    from cdc.secrets import mask

    assert mask("set token; url nats://u:t@h; password=t", ["t"]) == (
        "set token; url nats://u:***@h; password=***"
    )


def test_one_duration_and_one_size_type_everywhere() -> None:
    """`2w` was valid for the log's retention.max_age and refused by NATS's max_age (two
    parsers); every duration and size field now takes the same forms (cdc/units.py)."""
    from cdc.sinks.log.config import LogSinkConfig
    from cdc.sinks.nats.config import NatsSinkConfig

    log = LogSinkConfig.model_validate(
        {"type": "log", "path": "/x", "segment_bytes": "64MiB", "retention": {"max_age": "2w"}}
    )
    nats = NatsSinkConfig.model_validate(
        {
            "type": "nats",
            "servers": ["nats://127.0.0.1:4222"],
            "path": "/x",
            "max_age": "2w",
            "duplicate_window": "1h30m",
            "ack_timeout": "1500ms",
        }
    )
    assert log.retention.max_age == nats.max_age == 14 * 86400
    assert log.segment_bytes == 64 << 20
    assert nats.duplicate_window == 5400 and nats.ack_timeout == 1.5


def test_unwrap_or_outbox_into_a_database_target_is_refused() -> None:
    text = """
pipelines:
  - name: x
    source: {type: postgres, dsn: "host=a", tables: [public.t]}
    transforms: [{type: filter, condition: "id > 1"}, {type: outbox, tables: [public.t]}]
    sink: {type: postgres, dsn: "host=b"}
"""
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert "pipelines[0]: transforms[1]: outbox reshapes change events" in str(e.value)
    parse(text.replace(", {type: outbox, tables: [public.t]}", ""))  # filter is fine with a target
