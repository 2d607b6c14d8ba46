"""The specialised pgoutput tuple decoders (sources/postgres/_tuples.py) give exactly what the
generic path gives: the same values of the same types, the same exceptions with the same messages.

Every check runs both decoders on the same message bytes. Values come from every type TYPES.md
lists (its texts, plus edge cases of the shortcuts the generator takes: integers and floats read
from bytes, booleans compared as bytes, UTC timestamptz and numeric(p,s) texts), mixed with nulls,
unchanged TOASTed values, texts a converter rejects and bytes that are not UTF-8, in tables whose
columns are required or optional, decoded as complete (new) and incomplete (old/key) tuples.

The compiled decoders (``cdc._native.TupleDecoder``, "native") run in every check beside the
generated ones, under the same contract. Where the extension is not built they are left out,
unless ``CDC_REQUIRE_NATIVE=1`` (set by ``.ci/run``): then every differential test fails.
"""

from __future__ import annotations

import math
import os
import random
import struct
from decimal import Decimal
from typing import Any

import pytest

from cdc import _native_avro
from cdc.errors import SourceError
from cdc.model import Column, TableSchema
from cdc.sources.postgres import _tuples
from cdc.sources.postgres._relations import Relation
from cdc.sources.postgres._types import Mapping, mapping_for
from tests.unit.test_pg_types import Catalog, rows_of_types_md

Value = bytes | str | None  # None: null ('n'); UNCHANGED: 'u'

# Texts that exercise the generator's shortcuts, and texts the converters reject, by type.
EXTRA: dict[str, list[str]] = {
    "smallint": ["0", "-0", "+5", " 12 ", "1_000", "\u0661\u0662", "12a", "", "99999999"],
    "integer": ["2147483648", "-1", "007", "1e3", "0x10", "1.0", "\u0663"],
    "bigint": ["9223372036854775807", "-9223372036854775809", "1" * 5000, "- 1"],
    "oid": ["0", "4294967296"],
    "real": ["1_0.5", " nan ", "infinity", "-inf", "1e500", "1.5\u00a0", "x", "\u0661.5"],
    "double precision": ["-0", "1e-400", "4.9e-324", "1,5", "NaN", "+Infinity"],
    "boolean": ["f", "true", "", "T", "1", "tt"],
    "bit(1)": ["0", "", "x", "11", "10"],
    "varbit(1)": ["0", "", "2"],
    "numeric(12,2)": [
        "12.50",
        "-12.50",
        "12.5",
        "0.00",
        "-0.00",
        ".50",
        "-.50",
        "Infinity",
        " 1.50",
        "1.50 ",
        "1_0.50",
        "1.E5",
        "1.2E+50",
        "\u0661.\u0665\u0660",
        "1.5\u00b2\u00b2",
        "1..50",
        "-",
        "abc.12",
        "9" * 1200 + ".12",
        "9" * 990 + ".12",
        "12.345",
    ],
    "numeric(5,0)": ["123", "-123", "-0", "0", "+1", "1.0", "-", "", "1e3", "\u0661\u0662", "NaN"],
    "numeric(3,-2)": ["12300", "-100", "NaN"],
    "numeric": ["0", "-0.000", "1e5", "x", "NaN", "Infinity"],
    "money": ["$0.00", "($1,000.00)", "", "x"],
    "date": ["2024-13-01", "0001-01-01", "1-1-1 BC", "x", ""],
    "time": ["25:00:00", "1:2", "x"],
    "time(3)": ["13:14:15", "x"],
    "timetz": ["13:14:15+14:59:59", "x", "13:14:15"],
    "timestamp": ["2024-02-30 00:00:00", "x", "2024-01-01", "294277-01-01 00:00:00"],
    "timestamp(3)": ["infinity", "x"],
    "timestamptz": [
        "2024-05-06 05:08:09+00",
        "2024-05-06 05:08:09.1+00",
        "2024-05-06 05:08:09.123456+00",
        "2024-05-06 05:08:09.1234567+00",
        "2024-05-06 05:08:09.5+02",
        "2024-05-06 05:08:09.5-03:30",
        "2024-05-06 05.08.09+00",
        "2024-05-06 05:0.:09+00",
        "2024-05-06 05:08:.9+00",
        "2024-05-06T05:08:09+00",
        "2024/05/06 05:08:09+00",
        "1+00",
        "+00",
        "",
        "x",
        "0001-01-01 00:00:00+00 BC",
        "infinity",
    ],
    "timestamptz(3)": [
        "2024-05-06 05:08:09+00",
        "2024-05-06 05:08:09.1234+00",
        "2024-05-06 05:08:09.123+00",
        "-infinity",
        "2024-05-06 05:08:09.5+01",
    ],
    "timestamptz(0)": ["2024-05-06 05:08:09.5+00", "infinity", "2024-05-06 05:08:09+05"],
    "timestamptz(6)": ["2024-05-06 05:08:09+00", "2024-05-06 05:08:09.12345+00"],
    "interval": ["P", "PT", "x", "infinity", "P1.5Y"],
    "bytea": ["\\x0", "\\xzz", "\\"],
    "point": ["(1,2", "x", "(a,b)"],
    "integer[]": ["{1,x}", "{", "x"],
    "numeric(6,2)[]": ["{NaN,Infinity,1.5}", "{x}"],
    "text[]": ["{a,b}", '{"a\\"b"}', '{"a', '{"a\\'],
    "hstore": ['"a"=>"b"', "x"],
    "mood[]": ["{happy,NULL}", "{NULL}", "{}", '{"sad"}'],  # a NULL element: a located error
}

# Texts no type expects, tried anywhere now and then.
ODD = ["", "x", "NULL", "\u00e9", "-", "0", "1e999", "NaN"]
NOT_UTF8 = [b"\xff", b"\xc3", b"ab\x80", b"\xed\xa0\x80"]


def pools() -> dict[str, tuple[Mapping, list[str]]]:
    """Type spec -> (its mapping, the texts to try), for every type TYPES.md lists and more."""
    catalog = Catalog()
    out: dict[str, tuple[Mapping, list[str]]] = {}
    for spec, _, _, text, _ in rows_of_types_md():
        if spec not in out:
            oid, typmod = catalog.column(spec)
            out[spec] = (mapping_for(oid, typmod, None, catalog.resolve), [])
        out[spec][1].append(text[1:-1])
    for spec, texts in EXTRA.items():
        if spec not in out:
            oid, typmod = catalog.column(spec)
            out[spec] = (mapping_for(oid, typmod, None, catalog.resolve), [])
        out[spec][1].extend(texts)
    return out


POOLS = pools()


def table_of(specs: list[str], required: list[bool], name: str = "t") -> TableSchema:
    cols = []
    for i, (spec, req) in enumerate(zip(specs, required, strict=True)):
        m = POOLS[spec][0]
        cols.append(Column(f"c{i}", m.avro, not req, m.name, m.fallback))
    return TableSchema(f"p.public.{name}", "public", name, tuple(cols), ())


def tuple_data(values: list[Any], count: int | None = None) -> bytes:
    out = [struct.pack(">H", len(values) if count is None else count)]
    for v in values:
        if v is None:
            out.append(b"n")
        elif v is _tuples.UNCHANGED:
            out.append(b"u")
        elif isinstance(v, tuple):  # ("kind", b"raw"): a column kind pgoutput never sends
            out.append(v[0])
        else:
            b = v if isinstance(v, bytes) else v.encode()
            out.append(b"t" + struct.pack(">I", len(b)) + b)
    return b"".join(out)


def outcome(decode: _tuples.Decoder, buf: bytes, at: int) -> Any:
    try:
        return "ok", decode(buf, at)
    except Exception as e:  # whatever it is, both must raise it alike
        return "error", type(e), str(e)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (NaN equals NaN, zeros by sign, Decimals by
    digits and exponent: Decimal('1.5') == Decimal('1.50') is not good enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        # -0.0 == 0.0, but Avro writes their signs apart
        return (math.isnan(a) and math.isnan(b)) or (a == b and str(a) == str(b))
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


REQUIRE_NATIVE = os.environ.get("CDC_REQUIRE_NATIVE", "") == "1"


def native_built() -> bool:
    """Whether the compiled tuple decoder can be made; a test failure when it cannot and
    ``CDC_REQUIRE_NATIVE=1``."""
    if hasattr(_native_avro._native, "TupleDecoder"):
        return True
    if REQUIRE_NATIVE:
        pytest.fail(
            f"cdc._native has no TupleDecoder ({_native_avro.IMPORT_ERROR}), and "
            "CDC_REQUIRE_NATIVE=1: run `pip install -e .` with cargo on PATH"
        )
    return False


def needs_native() -> None:
    if not native_built():
        pytest.skip(f"cdc._native.TupleDecoder is not built ({_native_avro.IMPORT_ERROR})")


def specialised_makers() -> list[Any]:
    """``compile_decoder`` and, where it is built, ``native_decoder``."""
    return [_tuples.compile_decoder, *([_tuples.native_decoder] if native_built() else [])]


Pairs = list[tuple[_tuples.Decoder, ...]]


def pairs(table: TableSchema, maps: list[Mapping]) -> Pairs:
    """(generic, specialised[, native]) decoders of complete tuples, then of old/key tuples."""
    native = native_built()
    return [
        (
            _tuples.generic_decoder(table, maps, c),
            _tuples.compile_decoder(table, maps, c),
            *([_tuples.native_decoder(table, maps, c)] if native else []),
        )
        for c in (True, False)
    ]


def check(
    table: TableSchema, maps: list[Mapping], buf: bytes, at: int = 0, decs: Pairs | None = None
) -> str:
    """Every decoder, both modes, on ``buf``: the generic one's outcome. Returns "ok" or
    "error"."""
    kinds = set()
    for complete, (generic, *fast) in zip((True, False), decs or pairs(table, maps), strict=True):
        want = outcome(generic, buf, at)
        for decode in fast:
            got = outcome(decode, buf, at)
            assert got[0] == want[0] and same(got[1:], want[1:]), (complete, buf, want, got)
            if want[0] == "ok":  # the very same fallback and placeholder objects
                for g, w, col, m in zip(got[1][0], want[1][0], table.columns, maps, strict=True):
                    if isinstance(w, (list, dict)) and (w is col.fallback or w is m.unavailable):
                        assert g is w
        kinds.add(want[0])
    return "ok" if kinds == {"ok"} else "error"


def test_every_type_and_text_alone() -> None:
    """One column of each type, each of its texts, required and optional."""
    results = {"ok": 0, "error": 0}
    for spec, (m, texts) in POOLS.items():
        for required in (True, False):
            table = table_of([spec], [required])
            decs = pairs(table, [m])
            for text in [*texts, None, _tuples.UNCHANGED, *NOT_UTF8]:
                results[check(table, [m], tuple_data([text]), 0, decs)] += 1
    assert results["ok"] > 300 and results["error"] > 100, results


def test_random_tuples() -> None:
    rnd = random.Random(20261127)
    specs = sorted(POOLS)
    results = {"ok": 0, "error": 0}
    for _ in range(300):
        n = rnd.randint(1, 8)
        cols = [rnd.choice(specs) for _ in range(n)]
        required = [rnd.random() < 0.5 for _ in range(n)]
        table = table_of(cols, required)
        maps = [POOLS[c][0] for c in cols]
        decs = pairs(table, maps)
        for _ in range(15):
            values: list[Any] = []
            for c in cols:
                r = rnd.random()
                if r < 0.15:
                    values.append(None)
                elif r < 0.25:
                    values.append(_tuples.UNCHANGED)
                elif r < 0.27:
                    values.append(rnd.choice(ODD))
                elif r < 0.28:
                    values.append(rnd.choice(NOT_UTF8))
                else:
                    values.append(rnd.choice(POOLS[c][1]))
            pad = rnd.choice([b"", b"N\x00\x01n"])  # more data after the tuple (an update's)
            results[check(table, maps, b"xyz" + tuple_data(values) + pad, 3, decs)] += 1
    assert results["ok"] > 1500 and results["error"] > 300, results


def test_malformed_messages() -> None:
    specs = ["bigint", "text", "numeric(12,2)", "timestamptz", "boolean"]
    table = table_of(specs, [True, False, False, True, False])
    maps = [POOLS[s][0] for s in specs]
    good = ["1", "a", "1.50", "2024-05-06 05:08:09.12+00", "t"]
    assert check(table, maps, tuple_data(good)) == "ok"
    assert check(table, maps, tuple_data(good, count=4)) == "error"  # column count differs
    assert check(table, maps, tuple_data([*good, "x"])) == "error"
    assert check(table, maps, tuple_data(good[:4], count=5)) == "error"  # truncated
    full = tuple_data(good)
    for cut in range(len(full)):
        check(table, maps, full[:cut])
    bad_kind = [*good[:2], (b"x", b""), *good[3:]]
    assert check(table, maps, tuple_data(bad_kind)) == "error"
    for make in specialised_makers():
        with pytest.raises(SourceError, match="unexpected tuple column kind 'x'"):
            make(table, maps, True)(tuple_data(bad_kind), 0)
    # a length running past the end of the last column: sliced short, as the generic path does
    assert check(table, maps, full[:-1]) == "ok"


def test_conversion_error_names_table_column_and_type() -> None:
    specs = ["integer", "numeric(12,2)", "date"]
    m = [POOLS[s][0] for s in specs]
    table = TableSchema(
        "p.s.orders",
        "s",
        "orders",
        (
            Column("qty", m[0].avro, True, m[0].name),
            Column('we"ird\n col\\', m[1].avro, True, m[1].name),
            Column("day", m[2].avro, True, m[2].name),
        ),
        (),
    )
    decode = _tuples.compile_decoder(table, m, True)
    with pytest.raises(SourceError) as e:
        decode(tuple_data(["1", "1.2.3", "2024-01-01"]), 0)
    assert str(e.value) == (
        "cannot convert value '1.2.3' of column s.orders.we\"ird\n col\\ (numeric(12,2)): "
        "[<class 'decimal.ConversionSyntax'>]"
    )
    with pytest.raises(SourceError, match=r"column s\.orders\.day \(date\): month must be in"):
        decode(tuple_data(["1", "1.50", "2024-13-01"]), 0)
    assert decode(tuple_data(["+7", "-.50", "2024-01-01"]), 0) == (
        (7, Decimal("-0.50"), 19723),
        len(tuple_data(["+7", "-.50", "2024-01-01"])),
    )


def test_generated_source_holds_no_column_name_or_value() -> None:
    maps = [POOLS["text"][0], POOLS["numeric(12,2)"][0]]
    evil = "x'''\"; import os; os._exit(1) #"
    table = TableSchema(
        "p.public.t",
        "public",
        "t",
        tuple(
            Column(evil + str(i), m.avro, False, m.name, "FALLBACK" + evil)
            for i, m in enumerate(maps)
        ),
        (),
    )
    for complete in (True, False):
        source, _ = _tuples.generate(table, maps, complete)
        assert "import os" not in source and "FALLBACK" not in source
        assert "__debezium" not in source  # placeholders are constants too
        decode = _tuples.compile_decoder(table, maps, complete)
        assert decode(tuple_data([None, None]), 0)[0] == (
            (None, None) if complete else ("FALLBACK" + evil, "FALLBACK" + evil)
        )


def test_tables_of_no_and_many_columns() -> None:
    table = TableSchema("p.public.e", "public", "e", (), ())
    check(table, [], tuple_data([]))
    specs = ["bigint", "text", "timestamptz", "numeric(12,2)", "boolean"] * 300
    table = table_of(specs, [i % 2 == 0 for i in range(len(specs))])
    maps = [POOLS[s][0] for s in specs]
    values = ["1", "a", "2024-05-06 05:08:09+00", "1.00", "f"] * 300
    assert check(table, maps, tuple_data(values)) == "ok"
    values[1234] = None
    values[77] = _tuples.UNCHANGED
    assert check(table, maps, tuple_data(values)) == "ok"


def test_relation_versions_decode_specialised_unless_switched_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    specs = ["bigint", "text"]
    table = table_of(specs, [True, False])
    maps = [POOLS[s][0] for s in specs]
    monkeypatch.setattr(_tuples, "PATH", _tuples.PYTHON)
    fast = Relation(1, table, maps, ["c0", "c1"], (0,))
    slow = Relation(1, table, maps, ["c0", "c1"], (0,), False)
    assert fast.decode_new.__code__.co_filename == "<pgoutput decoder>"
    assert slow.decode_new.__code__.co_filename != "<pgoutput decoder>"
    rels = [fast, slow]
    if native_built():
        monkeypatch.setattr(_tuples, "PATH", _tuples.NATIVE)
        compiled = Relation(1, table, maps, ["c0", "c1"], (0,))
        assert type(compiled.decode_new.__self__).__name__ == "TupleDecoder"
        monkeypatch.setattr(_tuples, "PATH", _tuples.PYTHON)
        rels.append(compiled)
    buf = tuple_data(["5", None])
    for rel in rels:
        assert rel.decode_new(buf, 0) == ((5, None), len(buf))
        assert rel.decode_old(tuple_data([None, "a"]), 0)[0] == (0, "a")


# --- the compiled decoder (cdc._native.TupleDecoder) ---------------------------------------------

NATIVE_KINDS = [
    "smallint",
    "integer",
    "bigint",
    "real",
    "double precision",
    "boolean",
    "bit(1)",
    "text",
    "date",
    "timestamp",
    "timestamp(3)",
    "timestamptz",
    "timestamptz(0)",
    "timestamptz(3)",
    "numeric(12,2)",
    "numeric(5,0)",
    "time",
    "time(3)",
    "bytea",
    "interval",
    "numeric",
    "money",
    "integer[]",
    "text[]",
]


def test_native_decoder_converts_the_server_texts_itself() -> None:
    """The server's own texts of the kinds the compiled decoder converts never reach the generic
    path (else it would be right only by handing everything over); other texts of those kinds do
    only when the reference raises or a required column gets None."""
    needs_native()
    texts = [
        "-32768",
        "2147483647",
        "-9223372036854775808",
        "1.5e+300",
        "-Infinity",
        "t",
        "1",
        "plain \u00e9 text",
        "2024-02-29",
        "2001-02-03 04:05:06.789",
        "1969-12-31 23:59:59.9995",
        "2024-05-06 05:08:09+00",
        "2024-05-06 05:08:09.5+00",
        "2024-05-06 05:08:09.1234+00",
        "123.45",
        "-123",
        "24:00:00",
        "13:14:15.5",
        "\\x00ff10Ab",
        "P1Y-2M3DT-4H5M-6.1234567S",
        "-128.000",
        "-$1,234.50",
        "{1,NULL,-3}",
        "{a,NULL,b c}",
    ]
    table = table_of(NATIVE_KINDS, [True] * len(NATIVE_KINDS))
    maps = [POOLS[s][0] for s in NATIVE_KINDS]
    buf = tuple_data(texts)
    before = _tuples.native_fallbacks()
    for complete in (True, False):
        got = _tuples.native_decoder(table, maps, complete)(buf, 0)
        assert same(got, _tuples.generic_decoder(table, maps, complete)(buf, 0))
    assert _tuples.native_fallbacks() == before
    # other texts the converters take: converted by them, still no fallback
    odd = ["+5", "1_000", " 12 ", "1_0.5", " nan ", "true", "x", "x", "4714-11-24 BC"]
    odd += ["10000-01-01 00:00:00", "0001-01-01 00:00:00 BC", "2024-05-06 05:08:09.5+02"]
    odd += ["2024-05-06 05:08:09.5-03:30", "infinity", "1.2", "1e3", "1:2:3", "1:02:03.1234567"]
    odd += [
        "a\\\\b\\001",
        "P" + "9" * 30 + "Y",
        "1" * 40,
        "$1,000.00 \u20ac",
        "{{1,2},{3,4}}",
        '{"a,b",c}',
    ]
    assert len(odd) == len(NATIVE_KINDS)
    assert check(table, maps, tuple_data(odd)) == "ok"
    assert _tuples.native_fallbacks() == before
    # a value the reference rejects: handed to the generic path, which raises its located error
    assert check(table, maps, tuple_data(["x", *texts[1:]])) == "error"
    assert _tuples.native_fallbacks() > before


def test_native_calendar_and_numbers_match_the_converters() -> None:
    """Random values over the whole range of the conversions done natively, against the
    converters (through the generic path), in one wide table per kind."""
    needs_native()
    rnd = random.Random(20261206)

    def up_to(n: int) -> int:  # now and then one past the end: a text the reference rejects
        return rnd.randint(0, n + 1 if rnd.random() < 0.005 else n)

    def ts(frac: bool) -> str:
        day = up_to(30 if rnd.random() < 0.1 else 27) + 1
        s = (
            f"{up_to(9999) or 1:04d}-{up_to(11) + 1:02d}-{day:02d} "
            f"{up_to(23):02d}:{up_to(59):02d}:{up_to(59):02d}"
        )
        if frac and rnd.random() < 0.7:
            s += "." + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 7)))
        return s

    def interval() -> str:
        def n() -> str:
            return rnd.choice(["", "-"]) + str(rnd.randint(0, 10 ** rnd.randint(1, 20)))

        out = "P" + "".join(n() + u for u in "YMD" if rnd.random() < 0.5)
        if rnd.random() < 0.8:
            out += "T" + "".join(n() + u for u in "HM" if rnd.random() < 0.5)
            if rnd.random() < 0.7:
                out += n() + rnd.choice(["", "." + str(rnd.randint(0, 10**9))[:8]]) + "S"
        if rnd.random() < 0.03:  # a text the expression does not match
            out = out.replace(rnd.choice("PTYMDHS"), rnd.choice(["", "X", "1", "."]), 1)
        return out

    gens = {
        "bigint": lambda: str(rnd.randint(-(2**64), 2**64) >> rnd.randint(0, 64)),
        "double precision": lambda: rnd.choice(
            [
                repr(rnd.uniform(-1e6, 1e6)),
                f"{rnd.random():.17g}",
                f"{rnd.random()}e{rnd.randint(-330, 330)}",
            ]
        ),
        "real": lambda: f"{rnd.uniform(-1, 1) * 10 ** rnd.randint(-45, 39):.9g}",
        "date": lambda: ts(False)[:10],
        "timestamp": lambda: ts(True),
        "timestamp(3)": lambda: ts(True),
        "timestamptz": lambda: ts(True) + rnd.choice(["+00", "+00", "+02", "-03:30"]),
        "timestamptz(3)": lambda: ts(True) + "+00",
        "time": lambda: ts(True)[11:],
        "time(3)": lambda: ts(True)[11:],
        "bytea": lambda: "\\x" + rnd.randbytes(rnd.randint(0, 9)).hex(),
        "interval": interval,
        "integer[]": lambda: (
            "{"
            + ",".join(
                rnd.choice(["NULL", "-0", "+1", *[str(rnd.randint(-(2**70), 2**70))] * 4])
                if rnd.random() > 0.01
                else "x"
                for _ in range(rnd.randint(0, 4))
            )
            + ("}" if rnd.random() > 0.01 else "")
        ),
        "text[]": lambda: (
            "{"
            + ",".join(
                rnd.choice(["NULL", "a b", "", "\\", '"q"', "{x}", "\u00e9"])
                for _ in range(rnd.randint(0, 4))
            )
            + rnd.choice(["}", "}", "}", ""])
        ),
        "money": lambda: (
            rnd.choice(["", "-", "("])
            + rnd.choice(["$", "", "EUR "])
            + f"{rnd.randint(0, 10 ** rnd.randint(0, 20)):,}"
            + rnd.choice([".00", ".5", "", ",50", ".99)"])
        ),
        "numeric": lambda: (
            rnd.choice(["", "-"])
            + str(rnd.randint(0, 10 ** rnd.randint(0, 40)))
            + rnd.choice(
                [
                    "",
                    ".",
                    "." + str(rnd.randint(0, 10 ** rnd.randint(0, 20))) + "0" * rnd.randint(0, 3),
                ]
            )
        ),
        "numeric(12,2)": lambda: (
            f"{rnd.randint(-(10**10), 10**10) / 100:.{rnd.choice([1, 2, 2, 3])}f}"
        ),
    }
    for spec, gen in gens.items():
        table = table_of([spec] * 10, [True, False] * 5)
        maps = [POOLS[spec][0]] * 10
        decs = pairs(table, maps)
        results = {"ok": 0, "error": 0}
        for _ in range(60):
            results[check(table, maps, tuple_data([gen() for _ in range(10)]), 0, decs)] += 1
        assert results["ok"] > 30, (spec, results)


def corrupted(rnd: random.Random, good: bytes, overwrite: bytes, insert: bytes) -> bytes:
    """``good`` cut short, with bits flipped, a byte overwritten by one of ``overwrite`` or 1-4
    bytes of ``insert`` inserted (for fuzz tests of decoders)."""
    bad = bytearray(good)
    op = rnd.random()
    if op < 0.3:
        bad = bad[: rnd.randrange(len(bad) + 1)]
    elif op < 0.6:
        for _ in range(rnd.randint(1, 3)):
            bad[rnd.randrange(len(bad))] ^= 1 << rnd.randrange(8)
    elif op < 0.8:
        bad[rnd.randrange(len(bad))] = rnd.choice(overwrite)
    else:
        k = rnd.randrange(len(bad) + 1)
        bad[k:k] = bytes(rnd.choice(insert) for _ in range(rnd.randint(1, 4)))
    return bytes(bad)


def test_native_decoder_survives_truncated_and_corrupted_tuples() -> None:
    """Fuzz: cut, flipped, overwritten and inserted bytes in tuples of every type: the compiled
    decoder returns or raises exactly what the generic path does (an exception, never a crash
    or a hang), also at other offsets and on inputs that are not bytes."""
    needs_native()
    rnd = random.Random(15)
    specs = sorted(POOLS)
    for _ in range(150):
        n = rnd.randint(1, 6)
        cols = [rnd.choice(specs) for _ in range(n)]
        table = table_of(cols, [rnd.random() < 0.5 for _ in range(n)])
        maps = [POOLS[c][0] for c in cols]
        decs = pairs(table, maps)
        good = bytearray(
            tuple_data([rnd.choice([None, _tuples.UNCHANGED, *POOLS[c][1][:6]]) for c in cols])
        )
        for _ in range(20):
            bad = corrupted(rnd, bytes(good), b"\x00\xffntu\x80", bytes(range(256)))
            check(table, maps, bad, 0, decs)
        at = rnd.choice([-1, len(good), len(good) + 10, 2**40])
        check(table, maps, bytes(good), at, decs)
    table = table_of(["bigint"], [True])
    decode = _tuples.native_decoder(table, [POOLS["bigint"][0]], True)
    for buf, at in ((bytearray(tuple_data(["1"])), 0), (tuple_data(["1"]), "0"), (None, 0)):
        want = outcome(_tuples.generic_decoder(table, [POOLS["bigint"][0]], True), buf, at)  # type: ignore[arg-type]
        assert same(outcome(decode, buf, at), want)  # type: ignore[arg-type]


def test_native_decoder_is_built_where_required() -> None:
    if not native_built():
        pytest.skip(f"cdc._native.TupleDecoder is not built ({_native_avro.IMPORT_ERROR})")
    if os.environ.get("CDC_NATIVE", "") != "0":
        assert _tuples.PATH == _tuples.NATIVE and "native" in _tuples.describe()
