"""``cdc._native.CopyDecoder``: COPY text rows -> the snapshot's row tuples and event ids.

The reference is written here: COPY's text format undone by ``copy_fields`` (PostgreSQL's
rules: tab-separated, ``\\N`` null, backslash escapes), then ``_tuples.convert_row``; the
compiled decoder must give the same rows (same values of the same types) or raise the same
error, for every type of TYPES.md, random texts and corrupted input (never a crash or a hang).
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from cdc import _native_avro
from cdc.model import TableSchema, snapshot_event_id
from cdc.sources.postgres import _tuples
from tests.unit.test_pg_tuples import (
    NOT_UTF8,
    POOLS,
    corrupted,
    needs_native,
    same,
    table_of,
)

_ESCAPES = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def copy_fields(line: bytes) -> list[bytes | None]:
    """The fields of one COPY text row, escapes undone (the reference)."""

    def unescape(m: re.Match[bytes]) -> bytes:
        e = m.group(1)
        if e[:1] in _ESCAPES:
            return _ESCAPES[e[:1]]
        if e[:1] == b"x" and len(e) > 1:
            return bytes([int(e[1:], 16)])
        if e[:1].isdigit() and e[:1] < b"8":
            return bytes([int(e, 8) & 0xFF])
        return e

    pattern = re.compile(rb"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.S)
    return [None if f == b"\\N" else pattern.sub(unescape, f) for f in line.split(b"\t")]


def copy_line(values: list[Any]) -> bytes:
    """A row as COPY TO prints it."""
    out = []
    for v in values:
        if v is None:
            out.append(b"\\N")
            continue
        b = v if isinstance(v, bytes) else v.encode()
        b = b.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
        out.append(b.replace(b"\r", b"\\r"))
    return b"\t".join(out) + b"\n"


def reference(table: TableSchema, maps: list[Any], data: bytes) -> Any:
    """What the snapshot's reference path makes of ``data``: the rows, or the error."""
    rows = []
    try:
        for line in data.removesuffix(b"\n").split(b"\n") if data else []:
            fields = copy_fields(line)
            if len(fields) != len(table.columns):
                raise ValueError(f"{len(fields)} fields")
            raw = [None if f is None else _text(f) for f in fields]
            rows.append(_tuples.convert_row(table, maps, raw, True))
    except Exception as e:
        return "error", type(e), str(e)
    return "ok", rows


def _text(b: bytes) -> Any:
    try:
        return b.decode()
    except UnicodeDecodeError:
        return _tuples._NotUtf8(b)


def decoder(table: TableSchema, maps: list[Any]) -> Any:
    plan = _tuples.native_decoder(table, maps, True).__self__  # type: ignore[attr-defined]

    def generic(fields: list[Any]) -> tuple[Any, ...]:
        if len(fields) != len(table.columns):
            raise ValueError(f"{len(fields)} fields")
        raw = [_tuples._NotUtf8(v) if isinstance(v, bytes) else v for v in fields]
        return _tuples.convert_row(table, maps, raw, True)

    assert _native_avro._native is not None
    return _native_avro._native.CopyDecoder(plan, len(maps), 0, [0], "s:1:t:", False, generic)


def outcome(dec: Any, data: bytes) -> Any:
    try:
        rows, _, _ = dec.decode(data)
    except Exception as e:
        return "error", type(e), str(e)
    return "ok", list(rows)


def test_every_type_and_text_through_copy() -> None:
    """Each text of each type, alone and beside a text that needs escapes: the same rows."""
    needs_native()
    checked = 0
    for spec, (m, texts) in POOLS.items():
        for required in (True, False):
            table = table_of([spec, "text"], [required, False])
            maps = [m, POOLS["text"][0]]
            dec = decoder(table, maps)
            for text in [*texts, None, *NOT_UTF8]:
                data = copy_line([text, "a\tb\\c\nd\re"])
                want = reference(table, maps, data)
                assert same(outcome(dec, data), want), (spec, text, want)
                checked += 1
    assert checked > 400


def test_random_rows_and_ids() -> None:
    """Random rows of random types in one call; event ids as ``snapshot_event_id`` gives them,
    plain ones written by the decoder, others left as key texts for it."""
    needs_native()
    rnd = random.Random(15)
    specs = sorted(POOLS)
    chars = [chr(i) for i in range(1, 128)] + ["é", "€"]
    for _ in range(60):
        cols = ["text", *(rnd.choice(specs) for _ in range(rnd.randint(0, 5)))]
        table = table_of(cols, [True] + [rnd.random() < 0.5 for _ in cols[1:]])
        maps = [POOLS[c][0] for c in cols]
        dec = decoder(table, maps)
        rows = []
        for _ in range(rnd.randint(1, 20)):
            key = "".join(rnd.choice(chars) for _ in range(rnd.randint(1, 45)))
            rows.append([key, *(rnd.choice([None, *POOLS[c][1]]) for c in cols[1:])])
        data = b"".join(copy_line(r) for r in rows)
        want = reference(table, maps, data)
        if want[0] != "ok":
            assert same(outcome(dec, data), want)
            continue
        got, ids, last = dec.decode(data)
        assert same(list(got), want[1])
        for row, i in zip(rows, ids, strict=True):
            assert snapshot_event_id("1", "t", [row[0]]) == (
                i if isinstance(i, str) else snapshot_event_id("1", "t", list(i))
            )
        assert list(last) == [rows[-1][0]]


def test_truncated_and_corrupted_copy_data() -> None:
    """Fuzz: cut, flipped and inserted bytes (tabs, newlines, backslashes among them): the rows
    the reference makes of the same bytes, or an exception, never a crash or a hang."""
    needs_native()
    rnd = random.Random(16)
    specs = sorted(POOLS)
    for _ in range(120):
        cols = [rnd.choice(specs) for _ in range(rnd.randint(1, 5))]
        table = table_of(cols, [rnd.random() < 0.5 for _ in cols])
        maps = [POOLS[c][0] for c in cols]
        dec = decoder(table, maps)
        good = b"".join(
            copy_line([rnd.choice([None, *POOLS[c][1][:6]]) for c in cols])
            for _ in range(rnd.randint(1, 4))
        )
        for _ in range(15):
            bad = corrupted(rnd, bytes(good), b"\t\n\\", b"\t\n\\Nx07\xff")
            want = reference(table, maps, bad)
            got = outcome(dec, bad)
            assert got[0] == want[0], (bad, want, got)
            if want[0] == "ok":
                assert same(got[1], want[1]), (bad, want, got)


def test_a_plan_for_other_fields_is_refused() -> None:
    needs_native()
    table = table_of(["bigint"], [True])
    plan = _tuples.native_decoder(table, [POOLS["bigint"][0]], True).__self__  # type: ignore[attr-defined]
    assert _native_avro._native is not None
    with pytest.raises(Exception, match="key fields"):
        _native_avro._native.CopyDecoder(plan, 1, 0, [3], "s:", False, print)
