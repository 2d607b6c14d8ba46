"""The snapshot's two readers give the same events: COPY rows converted by the compiled path
(``cdc._native.CopyDecoder``) and the reference (a cursor's text rows converted by
``snapshot_row``), for every type of sources/postgres/TYPES.md with its edge values, text that
needs COPY's escapes, tables without a key and keys that need digests; in one range and in key
ranges read by two connections."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any
from unittest import mock

import psycopg
import pytest

from cdc.model import RowChange
from cdc.sources.postgres import _snapshot, _snapshot_read
from cdc.sources.postgres._connections import SESSION_OPTIONS, Catalog
from cdc.sources.postgres._faults import Faults
from cdc.sources.postgres._relations import Relations
from tests.conftest import RecordingReporter
from tests.integration import test_postgres_type_edges as edges
from tests.integration import test_postgres_types as types

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not _snapshot_read.COPY, reason="the compiled extension is not built (CDC_NATIVE=0?)"
    ),
]

# every byte a text can hold but NUL, the characters COPY escapes, and text that looks like them
_NASTY = ["\t", "\n", "\r", "\\", "\\N", "\\\\N", "\b\f\v", "a\tb\nc\\d", "é\u2028", "N", ""]


def _odd_text(rnd: random.Random) -> str:
    chars = [chr(i) for i in range(1, 128)] + ["é", "€", "\U0001f600"]
    return "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 40)))


def _extra_tables(c: psycopg.Connection[Any]) -> None:
    """Text COPY escapes, a table without a key, a composite key of texts (digest ids)."""
    rnd = random.Random(15)
    texts = _NASTY + [_odd_text(rnd) for _ in range(300)]
    c.execute("CREATE TABLE esc (id int PRIMARY KEY, t text, a text[], j jsonb)")
    with c.cursor() as cur:
        cur.executemany(
            "INSERT INTO esc VALUES (%s, %s, %s, %s)",
            [
                (i, t, [t, None, t[:3]], psycopg.types.json.Jsonb({"t": t}))
                for i, t in enumerate(texts)
            ],
        )
        c.execute("CREATE TABLE nokey (a text, b int)")
        cur.executemany("INSERT INTO nokey VALUES (%s, %s)", [(t, i) for i, t in enumerate(texts)])
        c.execute("CREATE TABLE ck (k text, n int, v numeric, PRIMARY KEY (k, n))")
        cur.executemany(
            "INSERT INTO ck VALUES (%s, %s, %s)",
            [(t, i, f"{i}.{i}") for i, t in enumerate(texts)] + [("a:b", -1, "1e-20")],
        )


def _read(
    dsn: str, names: list[tuple[str, str]], copy: bool, parts: int, fetch: int
) -> list[RowChange]:
    cat = Catalog(dsn)
    relations = Relations(cat, Faults(cat, "p", "s", "pub", "x"), "x", names)
    tables = _snapshot.tables(cat, relations, names, [], {}, None, parts)
    if copy:  # each table has its compiled plan: the COPY reader is the one under test
        assert all(_snapshot_read.copy_decoder(t, "7") is not None for t in tables)
    if parts > 1:
        assert all(len(t.ranges) == parts for t in tables)
    conns = _snapshot.open_connections(dsn, SESSION_OPTIONS, parts, None)
    events: list[RowChange] = []
    for batch in _snapshot.run(
        conns,
        tables,
        [],
        {},
        7,
        fetch,
        {"lsn": 7},
        prefix="x",
        db="d",
        stopping=lambda: False,
        reporter=RecordingReporter(),
        copy=copy,
    ):
        events += [e for e in batch.events if isinstance(e, RowChange)]
    cat.close()
    return events


def _comparable(ev: RowChange) -> tuple[Any, ...]:
    """Everything but the read time, values by repr (types count, NaN equals NaN)."""
    src = {k: v for k, v in ev.source.items() if k not in ("ts_ms", "ts_us", "ts_ns")}
    return (ev.table.qualified, ev.op, ev.event_id, repr(ev.after), repr(sorted(src.items())))


def _both(dsn: str, names: list[tuple[str, str]], parts: int = 1, fetch: int = 100) -> None:
    ref = _read(dsn, names, False, parts, fetch)
    before = _snapshot_read.native_fallbacks()
    fast = _read(dsn, names, True, parts, fetch)
    # every row of these tables (every type, its edges) converted by the compiled path
    assert _snapshot_read.native_fallbacks() == before
    assert ref, "no rows read"
    if parts == 1:  # one connection: the same order too
        assert [_comparable(e) for e in fast] == [_comparable(e) for e in ref]
    else:  # ranges interleave as they are read; each row the same, markers aside

        def row(e: RowChange) -> tuple[Any, ...]:
            return _comparable(e)[:4]

        assert sorted(map(row, fast)) == sorted(map(row, ref))
    encoded = [_encode(evs) for evs in (ref, fast)]
    assert sorted(encoded[0]) == sorted(encoded[1])


def _encode(events: list[RowChange]) -> list[tuple[Any, ...]]:
    """Key and value bytes as the native writers give them, the envelope's time fixed and the
    snapshot marker set aside (it depends on the order rows were read in)."""
    from cdc import avro
    from cdc.model import ChangeBatch
    from cdc.sources.postgres._sourceinfo import SOURCE_SCHEMA

    class Registry:
        def register(self, subject: str, schema: Any) -> int:
            return 1

    enc = avro.Encoder(Registry(), SOURCE_SCHEMA, None, False)
    for e in events:
        e.source = dict(e.source, snapshot="true", ts_ms=0, ts_us=0, ts_ns=0)
    with mock.patch.object(avro.time, "time_ns", return_value=0):  # the envelope's ts_*
        out = enc.encode(ChangeBatch(events, {}))
    assert enc.fallbacks == 0
    return [(r.topic, r.key, r.value) for r in out.records]


SETUPS: dict[str, tuple[Callable[[psycopg.Connection[Any]], None], list[str]]] = {
    "types": (lambda c: (types.create_table(c), types.insert_rows(c)), ["all_types"]),
    "edges": (lambda c: (edges.create_table(c), edges.insert_rows(c)), ["edges"]),
    "escapes": (_extra_tables, ["esc", "nokey", "ck"]),
}


@pytest.mark.parametrize("case", sorted(SETUPS))
def test_copy_and_reference_readers_give_the_same_events(pg_db: str, case: str) -> None:
    setup, tables = SETUPS[case]
    with psycopg.connect(pg_db, autocommit=True) as c:
        setup(c)
    _both(pg_db, [("public", t) for t in tables])


def test_key_ranges_read_by_two_connections_give_the_same_events(
    pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_snapshot_read, "SPLIT_MIN_ROWS", 100)
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE big (id bigint PRIMARY KEY, s text, n numeric(12,2))")
        c.execute(
            "INSERT INTO big SELECT g * 3, 'r' || g, g / 7.0 FROM generate_series(-500, 2500) g"
        )
        c.execute("ANALYZE big")
    _both(pg_db, [("public", "big")], parts=3, fetch=97)


def test_rows_the_compiled_path_leaves_are_counted_as_fallbacks(
    pg_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table version without a compiled plan is read by the reference reader in COPY's
    place: the same events, each row counted in ``cdc_native_fallbacks_total{path=
    "copy_decoder"}``."""
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE plain (id int PRIMARY KEY, s text)")
        c.execute("INSERT INTO plain SELECT g, 'r' || g FROM generate_series(1, 250) g")
    ref = _read(pg_db, [("public", "plain")], False, 1, 100)
    monkeypatch.setattr(_snapshot_read, "copy_decoder", lambda t, scope: None)
    before = _snapshot_read.native_fallbacks()
    events: list[RowChange] = []
    cat = Catalog(pg_db)
    relations = Relations(cat, Faults(cat, "p", "s", "pub", "x"), "x", [("public", "plain")])
    tables = _snapshot.tables(cat, relations, [("public", "plain")], [], {}, None, 1)
    conns = _snapshot.open_connections(pg_db, SESSION_OPTIONS, 1, None)
    reporter = RecordingReporter()
    for batch in _snapshot.run(
        conns, tables, [], {}, 7, 100, {"lsn": 7}, prefix="x", db="d",
        stopping=lambda: False, reporter=reporter, copy=True,
    ):  # fmt: skip
        events += [e for e in batch.events if isinstance(e, RowChange)]
    cat.close()
    assert [_comparable(e) for e in events] == [_comparable(e) for e in ref]
    assert _snapshot_read.native_fallbacks() == before + 250
    from prometheus_client import generate_latest

    from cdc import metrics

    exposed = generate_latest(metrics.REGISTRY).decode()
    assert f'cdc_native_fallbacks_total{{path="copy_decoder"}} {before + 250}.0' in exposed
