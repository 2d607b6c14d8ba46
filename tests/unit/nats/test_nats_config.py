"""The NATS sink's configuration and subject naming, without a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cdc.config import parse
from cdc.errors import ConfigError, SinkError
from cdc.sinks.nats._subjects import SubjectMap, covers, sanitise
from cdc.sinks.nats.config import NatsSinkConfig


def _config(sink: str) -> str:
    return f"""
pipelines:
  - name: shop.eu
    source: {{type: postgres, dsn: "host=x", tables: [public.t]}}
    sink: {{type: nats, path: /tmp/x, {sink}}}
"""


def test_defaults_and_durations() -> None:
    cfg = parse(_config("servers: ['nats://a:4222'], max_age: 7d, duplicate_window: 5m"))
    sink = cfg.pipelines[0].sink
    assert isinstance(sink, NatsSinkConfig)
    assert sink.max_age == 7 * 86400
    assert sink.duplicate_window == 300
    assert (sink.create, sink.storage, sink.retention, sink.replicas) == (True, "file", "limits", 1)
    assert sink.path == Path("/tmp/x")


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ("stream: 'a.b'", "pipelines[0].sink.stream: invalid stream name 'a.b'"),
        ("subject_prefix: 'cdc.*'", "pipelines[0].sink.subject_prefix: invalid subject prefix"),
        ("max_age: 1m", "duplicate_window 120s is longer than max_age 60s"),
        ("max_age: soon", "bad duration 'soon'"),
        ("servers: ['http://x']", "invalid server URL 'http://x'"),
        ("password: hunter2", "password is set without user"),
        ("user: u, token: t", "set only one of credentials, user/password and token"),
        ("tls: {cert_file: /c.pem}", "cert_file and key_file go together"),
        ("replicas: 7", "pipelines[0].sink.replicas: bad value: 7"),
        ("colour: blue", "pipelines[0].sink.colour: unknown field"),
    ],
)
def test_mistakes_are_reported_with_their_path(sink: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(_config(sink))
    assert message in str(e.value)


def test_secrets_are_not_shown() -> None:
    with pytest.raises(ConfigError) as e:
        parse(_config("token: [not-a-string]"))
    assert "not-a-string" not in str(e.value)


def test_subjects() -> None:
    m = SubjectMap("shop.eu", "shop_eu")
    assert m.subject("shop.eu.public.orders") == "shop_eu.public.orders"
    assert m.subject("shop.eu.public.Order Lines") == "shop_eu.public.Order_Lines"
    assert m.subject("shop.eu.transaction") == "shop_eu.transaction"
    assert m.subject("shop.eu.sales.caf\u00e9*>") == "shop_eu.sales.caf___"
    with pytest.raises(
        SinkError, match=re.escape("both map to nats subject 'shop_eu.public.Order_Lines'")
    ):
        m.subject("shop.eu.public.Order_Lines")
    assert sanitise("shop.eu") == "shop.eu"
    assert sanitise("my app") == "my_app"


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("cdc.>", "cdc.>", True),
        (">", "cdc.>", True),
        ("*.>", "cdc.>", True),
        ("cdc.*", "cdc.>", False),
        ("cdc.public.>", "cdc.>", False),
        ("other.>", "cdc.>", False),
        ("cdc", "cdc.>", False),
        ("cdc.>", "cdc.public.t", True),
        ("cdc.*.t", "cdc.public.t", True),
        ("a.b.>", "a.b.>", True),
        ("a.>", "a.b.>", True),
        ("a.b.>", "a.>", False),
    ],
)
def test_covers(pattern: str, subject: str, expected: bool) -> None:
    assert covers(pattern, subject) is expected
