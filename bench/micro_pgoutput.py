"""Microbenchmark of pgoutput tuple decoding: us/row, generic path vs specialised decoders
(generated Python, and compiled ``cdc._native.TupleDecoder`` when the extension is built).

The step measured is what the Postgres source does per I/U/D message between receiving it and
building the event: read the TupleData (text format) and convert every column by its mapping
(``sources/postgres/_tuples.py``). Two tables:

- W1's ``orders`` (id bigint, customer_id int, amount numeric(12,2), status text,
  note varchar(64), created_at timestamptz), as the end-to-end benchmark writes it;
- ``wide``: 24 columns of many types (integers, numerics, floats, boolean, texts, bytea, dates,
  times, timestamps, interval, uuid, jsonb, arrays), some null.

Messages: inserts (a new tuple), updates under REPLICA IDENTITY FULL (old and new tuples: the
heaviest case) and deletes under REPLICA IDENTITY DEFAULT (a key tuple, the other columns null
taking their fallbacks).

    PYTHONPATH=. python bench/micro_pgoutput.py [--rows 20000] [--repeat 5]

Prints the best of ``--repeat`` runs per decoder and message kind, in CPU time of this thread
(less disturbed than wall time on a shared machine, though still moved by its load: compare the
columns of one run), after checking that the decoders give the same rows. The native column is
left out when ``cdc._native`` has no ``TupleDecoder``. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import struct
import time
from collections.abc import Callable
from typing import Any

from cdc.model import Column, TableSchema
from cdc.sources.postgres import _tuples
from cdc.sources.postgres._tuples import Decoder, decoders
from cdc.sources.postgres._types import Mapping, TypeInfo, mapping_for

_ARRAYS = {
    90001: TypeInfo(90001, "integer[]", "b", "A", 23, 0, -1),
    90002: TypeInfo(90002, "text[]", "b", "A", 25, 0, -1),
}

# (name, type oid, typmod, required, key)
ORDERS = [
    ("id", 20, -1, True, True),
    ("customer_id", 23, -1, False, False),
    ("amount", 1700, ((12 << 16) | 2) + 4, False, False),
    ("status", 25, -1, False, False),
    ("note", 1043, 64 + 4, False, False),
    ("created_at", 1184, -1, False, False),
]
WIDE = [
    ("id", 20, -1, True, True),
    ("c_int2", 21, -1, False, False),
    ("c_int4", 23, -1, True, False),
    ("c_int8", 20, -1, False, False),
    ("c_num", 1700, ((12 << 16) | 2) + 4, False, False),
    ("c_numv", 1700, -1, False, False),
    ("c_real", 700, -1, False, False),
    ("c_double", 701, -1, False, False),
    ("c_bool", 16, -1, True, False),
    ("c_text", 25, -1, False, False),
    ("c_varchar", 1043, 36, True, False),
    ("c_char", 1042, 8, False, False),
    ("c_bytea", 17, -1, False, False),
    ("c_date", 1082, -1, False, False),
    ("c_time", 1083, -1, False, False),
    ("c_ts", 1114, -1, False, False),
    ("c_ts3", 1114, 3, False, False),
    ("c_tstz", 1184, -1, True, False),
    ("c_interval", 1186, -1, False, False),
    ("c_uuid", 2950, -1, False, False),
    ("c_jsonb", 3802, -1, False, False),
    ("c_ints", 90001, -1, False, False),
    ("c_texts", 90002, -1, False, False),
    ("c_money", 790, -1, False, False),
]


def table(
    name: str, spec: list[tuple[str, int, int, bool, bool]]
) -> tuple[TableSchema, list[Mapping]]:
    maps = [mapping_for(oid, typmod, None, _ARRAYS.get) for _, oid, typmod, _, _ in spec]
    cols = tuple(
        Column(n, m.avro, not req, m.name, m.fallback)
        for (n, _, _, req, _), m in zip(spec, maps, strict=True)
    )
    key = tuple(i for i, s in enumerate(spec) if s[4])
    return TableSchema(f"w1.public.{name}", "public", name, cols, key), maps


def tuple_data(values: list[str | None]) -> bytes:
    out = [struct.pack(">H", len(values))]
    for v in values:
        if v is None:
            out.append(b"n")
        else:
            b = v.encode()
            out.append(b"t" + struct.pack(">I", len(b)) + b)
    return b"".join(out)


def orders_row(i: int) -> list[str | None]:
    return [
        str(1_000_000 + i),
        str(10_000 + i % 5000),
        f"{i % 100000}.{i % 100:02d}",
        ("new", "paid", "shipped")[i % 3],
        f"order note {i}" if i % 4 else None,
        f"2026-11-26 22:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000000:06d}+00",
    ]


def wide_row(i: int) -> list[str | None]:
    return [
        str(1_000_000 + i),
        str(i % 32000 - 16000),
        str(i * 7),
        str(i * 1_000_003) if i % 2 else None,
        f"{i % 100000}.{i % 100:02d}",
        f"{i % 1000}.{i % 997:03d}",
        f"{i / 7:.6g}",
        f"{i / 3:.17g}",
        "t" if i % 2 else "f",
        f"some text for row {i} " * 3,
        f"v{i}",
        "ab ",
        "\\x00ff10" + f"{i % 256:02x}",
        f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
        f"{i % 24:02d}:{i % 60:02d}:{i % 60:02d}.25",
        f"2001-02-03 04:{i % 60:02d}:06.789",
        f"2001-02-03 04:05:{i % 60:02d}.789",
        f"2024-05-06 05:08:{i % 60:02d}.12+00",
        f"P1Y2M{i % 28}DT4H5M6.789S",
        f"a0eebc99-9c0b-4ef8-bb6d-6bb9bd3{i % 100000:05d}",
        '{"a": [1, 2], "n": ' + str(i) + "}",
        f"{{1,NULL,-3,{i}}}",
        '{plain,"with space",NULL,"' + str(i) + '"}',
        f"${i % 1000},{i % 1000:03d}.50" if i % 3 else None,
    ]


def messages(
    op: str, rows: int, spec: list[Any], row: Callable[[int], list[str | None]]
) -> list[bytes]:
    relid = struct.pack(">I", 16385)
    out = []
    for i in range(rows):
        new = row(i)
        if op == "insert":
            out.append(b"I" + relid + b"N" + tuple_data(new))
        elif op == "update":
            old = list(new)
            old[3 if spec is ORDERS else 9] = "old"  # status / c_text
            out.append(b"U" + relid + b"O" + tuple_data(old) + b"N" + tuple_data(new))
        else:
            key = [v if s[4] else None for v, s in zip(new, spec, strict=True)]
            out.append(b"D" + relid + b"K" + tuple_data(key))
    return out


def run(new: Decoder, old: Decoder, msgs: list[bytes]) -> list[Any]:
    """What the stream does per message (as in ``PostgresSource._stream``)."""
    rows = []
    append = rows.append
    for buf in msgs:
        tag = buf[0]
        if tag == 73:  # 'I'
            append(new(buf, 6)[0])
        elif tag == 85:  # 'U'
            before = None
            i = 5
            if buf[i] in (75, 79):
                before, i = (new if buf[i] == 79 else old)(buf, i + 1)
            append((before, new(buf, i + 1)[0]))
        else:  # 'D'
            append((new if buf[5] == 79 else old)(buf, 6)[0])
    return rows


def measure(decs: list[tuple[Decoder, Decoder]], msgs: list[bytes], repeat: int) -> list[float]:
    """Best us/row of each, timed in turn (a load that comes and goes hits them all)."""
    best = [float("inf")] * len(decs)
    for _ in range(repeat):
        for k, pair in enumerate(decs):
            t0 = time.thread_time()
            run(*pair, msgs)
            best[k] = min(best[k], time.thread_time() - t0)
    return [b / len(msgs) * 1e6 for b in best]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    native = hasattr(_tuples._native_avro._native, "TupleDecoder")
    head = f"{'table':<8}{'message':<9}{'generic us/row':>16}{'specialised us/row':>21}"
    head += f"{'speed-up':>10}"
    if native:
        head += f"{'native us/row':>15}{'vs generic':>12}{'vs specialised':>16}"
    print(head)
    for name, spec, row in (("orders", ORDERS, orders_row), ("wide", WIDE, wide_row)):
        schema, maps = table(name, spec)
        decs = [decoders(schema, maps, False), decoders(schema, maps, True, native=False)]
        if native:
            decs.append(decoders(schema, maps, True, native=True))
        for op in ("insert", "update", "delete"):
            msgs = messages(op, args.rows, spec, row)
            want = run(*decs[0], msgs[:2000])
            if any(run(*d, msgs[:2000]) != want for d in decs[1:]):
                raise SystemExit(f"{name} {op}: the decoders' rows differ")
            t = measure(decs, msgs, args.repeat)
            line = f"{name:<8}{op:<9}{t[0]:>16.2f}{t[1]:>21.2f}{t[0] / t[1]:>9.1f}x"
            if native:
                line += f"{t[2]:>15.2f}{t[0] / t[2]:>11.1f}x{t[1] / t[2]:>15.1f}x"
            print(line)
    if native and _tuples.native_fallbacks():
        print(f"(native decoders handed {_tuples.native_fallbacks()} tuples to the generic path)")


if __name__ == "__main__":
    main()
