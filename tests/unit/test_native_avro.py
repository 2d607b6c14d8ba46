"""The compiled writers (cdc._native, "native") against the Python ones (cdc._avrofast, "python",
the reference) and fastavro: byte for byte, and the same raise-or-not for every datum.

The extension is built by ``pip install`` (``.ci/setup``). Where it is missing these tests skip,
unless ``CDC_REQUIRE_NATIVE=1`` (set by ``.ci/run``): then they fail, so CI cannot pass without
testing the compiled path.
"""

from __future__ import annotations

import decimal
import logging
import os
import random
import string
import subprocess
import sys
import types
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from cdc import _avrofast, _native_avro, avro
from cdc.avro import Encoder, _TableCodec, envelope_schema
from cdc.model import ChangeBatch, Column, RowChange, TableSchema
from cdc.sources.postgres._source import SOURCE_SCHEMA as PG_SOURCE
from tests.unit import test_avro_fast as fast
from tests.unit.test_avro_fast import (
    EDGES,
    Registry,
    fastavro_bytes,
    named_types,
    pg_source,
    random_datum,
    random_record,
)

REQUIRED = os.environ.get("CDC_REQUIRE_NATIVE", "") == "1"
if _native_avro.available():
    from cdc import _native  # type: ignore[attr-defined,unused-ignore]


@pytest.fixture(autouse=True)
def _needs_the_extension() -> None:
    if _native_avro.available():
        return
    why = f"cdc._native is not built ({_native_avro.IMPORT_ERROR})"
    if REQUIRED:
        pytest.fail(f"{why}, and CDC_REQUIRE_NATIVE=1: run `pip install -e .` with cargo on PATH")
    pytest.skip(why)


def test_the_extension_is_built_and_chosen() -> None:
    assert _native_avro.available()
    if os.environ.get("CDC_NATIVE", "") != "0":
        assert _native_avro.PATH == "native"
        assert "native" in _native_avro.describe()


def writers(parsed: Any, positional: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """(native, python) writers of one schema; the native one must take every schema the Python
    one takes."""
    py = _avrofast.compile_writer(parsed, positional)
    nat = _native.Writer(parsed, positional).write
    return nat, py


def outcome(write: Any, datum: Any) -> bytes | None:
    """The bytes, or None when the writer raised (any Exception: the encoder then falls back)."""
    try:
        out: bytes = write(datum)
    except Exception:
        return None
    assert type(out) is bytes
    return out


def agree(parsed: Any, nat: Any, py: Any, fa_datum: Any, datum: Any) -> str:
    """Native and Python raise on the same datums and otherwise write fastavro's bytes.

    Returns "fast" (both wrote), "fallback" (both raised, fastavro writes it) or "error"
    (fastavro raised too)."""
    got_nat, got_py = outcome(nat, datum), outcome(py, datum)
    assert (got_nat is None) == (got_py is None), (datum, got_nat, got_py)
    try:
        want = fastavro_bytes(parsed, fa_datum)
    except Exception:
        assert got_nat is None, datum
        return "error"
    if got_nat is None:
        return "fallback"
    assert got_nat == got_py == want, (datum, got_nat, got_py, want)
    return "fast"


def single(avro_type: Any) -> Any:
    return fast.single(avro_type)[0]


@pytest.mark.parametrize(("avro_type", "values"), EDGES, ids=[str(i) for i in range(len(EDGES))])
def test_edge_values(avro_type: Any, values: list[Any]) -> None:
    parsed = single(avro_type)
    by_name = writers(parsed)
    by_index = writers(parsed, {"t.R": None})
    for v in [*values, None]:
        for o in (v, None):
            d = {"v": v, "o": o}
            want = ("error", "fallback") if v is None else ("fast",)
            assert agree(parsed, *by_name, d, d) in want, d
            assert agree(parsed, *by_index, d, (v, o)) in want, d


def test_values_only_fastavro_takes_are_refused_alike() -> None:
    cases: list[tuple[str, list[Any]]] = [
        ("float", [1e39, -1e39, 3, True, Decimal(1)]),
        ("double", [3, True, "1.0"]),
        ("long", [True, False, 1.0, 2**63, -(2**63) - 1, 2**100]),
        ("int", [2**31, -(2**31) - 1, True]),
        ("string", [b"a", "\ud800", 1]),
        ("bytes", ["a", bytearray(b"a"), memoryview(b"a")]),
        ("boolean", [0, 1, None]),
    ]
    for t, values in cases:
        parsed = single(t)
        nat, py = writers(parsed)
        for v in values:
            d = {"v": v, "o": None}
            assert agree(parsed, nat, py, d, d) in ("fallback", "error"), (t, v)


def test_float_rounding_at_the_float32_edge() -> None:
    """Doubles that round to the largest float32 are written; those that round past it raise."""
    parsed = single("float")
    nat, py = writers(parsed)
    biggest = 3.4028234663852886e38
    for v in (biggest, biggest * (1 + 2**-25), biggest * (1 + 2**-23), -biggest, 1e-46, 2e-45):
        d = {"v": v, "o": v}
        agree(parsed, nat, py, d, d)


DECIMAL_TYPES = [
    avro.decimal(12, 2),
    avro.decimal(None, 2),
    avro.decimal(1, 0),
    avro.decimal(3, 3),
    avro.decimal(38, 0),
    avro.decimal(38, 10),
    avro.decimal(39, 0),
    avro.decimal(65, 30),
    avro.decimal(1000, 7),
]


def random_decimal(rnd: random.Random, precision: int, scale: int) -> Decimal:
    r = rnd.random()
    if r < 0.05:
        return Decimal(rnd.choice(["NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "-0", "0E+3"]))
    digits = rnd.randint(1, min(precision + 2, 60))
    unscaled = rnd.randint(-(10**digits) + 1, 10**digits - 1)
    exponent = -scale if r < 0.7 else rnd.randint(-scale - 3, 3)
    return Decimal(unscaled).scaleb(exponent, decimal.Context(prec=100))


def test_decimals_random_and_edges() -> None:
    """The native writer's own fast path (from ``str(Decimal)``) against fastavro's conversion,
    on every exponent and digit count around the schema's scale and precision."""
    rnd = random.Random(15)
    for t in DECIMAL_TYPES:
        parsed = single(t)
        nat, py = writers(parsed)
        p, s = t["precision"], t["scale"]
        edges = [
            Decimal(0).scaleb(-s),
            Decimal("-0").scaleb(-s),
            Decimal(10**p - 1).scaleb(-s),
            Decimal(-(10**p) + 1).scaleb(-s),
            Decimal(10**p).scaleb(-s),
            Decimal(1).scaleb(-s),
            Decimal(-128).scaleb(-s),
            Decimal(127).scaleb(-s),
            Decimal(2**127).scaleb(-s),
            Decimal(-(2**127)).scaleb(-s),
            Decimal(10**38 - 1).scaleb(-s),
        ]
        values = edges + [random_decimal(rnd, p, s) for _ in range(300)]
        for v in values:
            d = {"v": v, "o": v}
            agree(parsed, nat, py, d, d)
    # str() with a lower-case exponent (the context's capitals) changes nothing.
    parsed = single(avro.decimal(40, 12))
    nat, py = writers(parsed)
    with decimal.localcontext(decimal.Context(capitals=0, prec=3)):
        for v in (Decimal("1E-12"), Decimal("-5E-12"), Decimal("12345678E-12")):
            d = {"v": v, "o": None}
            assert agree(parsed, nat, py, d, d) == "fast"
        assert str(Decimal("1E-12")) == "1e-12"


def test_random_schemas_and_datums() -> None:
    """fastavro's bytes from both writers for random schemas and datums; for a datum with one
    wrong field, both raise or both write fastavro's bytes."""
    rnd = random.Random(20261206)
    kinds: dict[str, int] = {}
    for n in range(300):
        names: list[str] = []
        schema = random_record(rnd, 0, names, "Top")
        parsed = fastavro.parse_schema(schema, _write_hint=False)
        by_name = writers(parsed)
        by_index = writers(parsed, {"r.Top": None})
        for _ in range(8):
            d = random_datum(schema, rnd, named_types(schema, {}))
            t = tuple(d[f["name"]] for f in schema["fields"])
            assert agree(parsed, *by_name, d, d) == "fast", (n, schema, d)
            assert agree(parsed, *by_index, d, t) == "fast", (n, schema, d)
            if schema["fields"]:
                f = rnd.choice(schema["fields"])["name"]
                wrong = rnd.choice([None, 1.5, "s", b"b", 2**40, True, [1], {"a": 1}, ()])
                bad = {**d, f: wrong}
                k = agree(parsed, *by_name, bad, bad)
                kinds[k] = kinds.get(k, 0) + 1
                bt = tuple(bad[f["name"]] for f in schema["fields"])
                assert agree(parsed, *by_index, bad, bt) == k
    assert kinds.get("error", 0) > 100 and kinds.get("fallback", 0) > 10


def test_positional_records_with_indexes() -> None:
    """The key record reads the key columns from the row tuple at their indexes."""
    parsed = fastavro.parse_schema(
        {
            "type": "record",
            "name": "K",
            "namespace": "n",
            "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": ["null", "string"]}],
        },
        _write_hint=False,
    )
    nat, py = writers(parsed, {"n.K": (3, 1)})
    for row in [(0, "x", 0, 5), (0, None, 0, -1), (0, 1, 0, 5), (5,), [0, "x", 0, 5], (0, "x", 0)]:
        assert (outcome(nat, row) is None) == (outcome(py, row) is None), row
        if outcome(py, row) is not None:
            assert (
                outcome(nat, row)
                == outcome(py, row)
                == fastavro_bytes(parsed, {"a": row[3], "b": row[1]})
            )
    with pytest.raises(_native.Unsupported):
        _native.Writer(parsed, {"n.K": (1,)})


def test_records_read_from_dicts_refuse_a_type_hint() -> None:
    parsed = single("long")
    nat, py = writers(parsed)
    d = {"v": 1, "o": 2, "-type": "t.R"}
    assert outcome(nat, d) is None and outcome(py, d) is None
    assert outcome(nat, {"v": 1}) is None  # a missing field


@pytest.mark.parametrize(
    "schema",
    [
        ["null", "int", "string"],
        ["int", "string"],
        ["null", "null"],
        {"type": "long", "logicalType": "timestamp-micros"},
        {"type": "fixed", "name": "D", "size": 8, "logicalType": "decimal", "precision": 5},
        {"type": "record", "name": "L", "fields": [{"name": "n", "type": ["null", "L"]}]},
        {"type": "bytes", "logicalType": "decimal", "scale": 2},
    ],
)
def test_unsupported_schemas_alike(schema: Any) -> None:
    parsed = fastavro.parse_schema(
        {"type": "record", "name": "W", "fields": [{"name": "f", "type": schema}]},
        _write_hint=False,
    )
    with pytest.raises(_avrofast.Unsupported):
        _avrofast.compile_writer(parsed)
    with pytest.raises(_native.Unsupported):
        _native.Writer(parsed)
    with pytest.raises(_avrofast.Unsupported):  # the loader: neither takes it
        _native_avro.compile_writer(parsed, native=True)


def test_nesting_past_the_limit_is_refused_not_overflowed() -> None:
    """Deep schemas are refused at compile time (the writer's recursion is bounded by them)."""
    t: Any = "long"
    for _ in range(200):
        t = {"type": "array", "items": t}
    parsed = fastavro.parse_schema(t)
    with pytest.raises(_native.Unsupported):
        _native.Writer(parsed)
    t = "long"
    for _ in range(30):  # past Python's nested-blocks limit, within the native one
        t = {"type": "array", "items": t}
    parsed = fastavro.parse_schema(t)
    datum: Any = [5]
    for _ in range(29):
        datum = [datum, []]
    assert _native.Writer(parsed).write(datum) == fastavro_bytes(parsed, datum)
    write = _native_avro.compile_writer(parsed, native=True)
    assert write(datum) == fastavro_bytes(parsed, datum)


def test_named_records_are_compiled_once() -> None:
    """Each record referenced twice by the next: 2**40 paths, compiled in linear time."""
    fields: list[Any] = [{"name": "a", "type": "long"}]
    schema: Any = {"type": "record", "name": "R0", "fields": fields}
    for i in range(1, 41):
        inner = schema if i == 1 else f"R{i - 1}"
        first = {"name": "x", "type": schema} if i > 1 else {"name": "x", "type": inner}
        schema = {
            "type": "record",
            "name": f"R{i}",
            "fields": [first, {"name": "y", "type": ["null", f"R{i - 1}"]}],
        }
    parsed = fastavro.parse_schema(schema, _write_hint=False)
    w = _native.Writer(parsed)
    datum: Any = {"a": 7}
    for _ in range(40):
        datum = {"x": datum, "y": None}
    assert w.write(datum) == fastavro_bytes(parsed, datum)


def test_height_through_shared_records_is_bounded() -> None:
    """Records referenced at the bottom of deep arrays add up; past the limit the schema is
    refused rather than written by a deeper recursion."""

    def arrays(t: Any, n: int) -> Any:
        for _ in range(n):
            t = {"type": "array", "items": t}
        return t

    fields = [{"name": "f0", "type": {"type": "record", "name": "R0", "fields": [
        {"name": "v", "type": arrays("long", 60)}]}}]  # fmt: skip
    for i in range(1, 6):
        inner = {"name": "v", "type": arrays(f"R{i - 1}", 60)}
        fields.append(
            {"name": f"f{i}", "type": {"type": "record", "name": f"R{i}", "fields": [inner]}}
        )
    parsed = fastavro.parse_schema({"type": "record", "name": "Top", "fields": fields})
    with pytest.raises(_native.Unsupported, match="deeper than 256"):
        _native.Writer(parsed)
    fewer = fastavro.parse_schema({"type": "record", "name": "Top", "fields": fields[:3]})
    datum = {"f0": {"v": []}, "f1": {"v": [[]]}, "f2": {"v": []}}
    assert _native.Writer(fewer).write(datum) == fastavro_bytes(fewer, datum)


def test_write_many() -> None:
    parsed = single("long")
    w = _native.Writer(parsed)
    datums: list[Any] = [{"v": 1, "o": None}, {"v": "x", "o": None}, {"v": -(2**63), "o": 3}]
    got = w.write_many(datums)
    assert got[0] == w.write(datums[0]) and got[2] == w.write(datums[2])
    assert isinstance(got[1], TypeError)
    assert w.write_many([]) == [] and w.write_many(iter(datums[:1])) == got[:1]


# --- the encoder, both paths ----------------------------------------------------------------------


@pytest.fixture(params=["native", "python"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(_native_avro, "PATH", request.param)
    return str(request.param)


def test_every_postgres_type_in_types_md(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    fast.test_every_postgres_type_in_types_md(monkeypatch)


def test_every_mysql_type(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    fast.test_every_mysql_type(monkeypatch)


def test_edge_values_through_the_encoder(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    fast.test_edge_values_through_the_encoder(monkeypatch)
    fast.test_decimals_of_another_exponent_or_as_bytes(monkeypatch)
    fast.test_columns_with_defaults(monkeypatch)
    fast.test_encoder_falls_back_record_by_record(monkeypatch)
    fast.test_values_fastavro_rejects_are_rejected(monkeypatch)
    fast.test_tables_and_table_versions_interleaved(monkeypatch)


def test_the_encoder_uses_the_chosen_path() -> None:
    table = fast.orders()
    nat = _TableCodec(table, PG_SOURCE, Registry(), True, native=True)
    py = _TableCodec(table, PG_SOURCE, Registry(), True, native=False)
    assert isinstance(getattr(nat.fast_value, "__self__", None), _native.Writer)
    assert isinstance(getattr(nat.fast_key, "__self__", None), _native.Writer)
    assert getattr(py.fast_value, "__name__", None) == "write"  # the generated function
    assert not isinstance(getattr(py.fast_value, "__self__", None), _native.Writer)
    # Key and value in one native call per row change on the native path only.
    assert isinstance(getattr(nat.fast_row, "__self__", None), _native.RowEncoder)
    assert py.fast_row is None
    # The transaction topic's writers too.
    enc = Encoder(Registry(), PG_SOURCE, "p.transaction", True, native=True)
    assert isinstance(getattr(enc._tx_codec().fast_value, "__self__", None), _native.Writer)


def test_types_md_tables_compile_natively() -> None:
    """No TYPES.md column (nor a default) makes the native compiler refuse a key or an envelope:
    a silent fall back to the Python writers would pass the byte comparisons above."""
    seen: list[tuple[TableSchema, dict[str, Any]]] = []

    def grab(mp: Any, table: TableSchema, source_schema: dict[str, Any], *a: Any, **k: Any) -> int:
        seen.append((table, source_schema))
        return 0

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fast, "assert_encoders_agree", grab)
        fast.test_every_postgres_type_in_types_md(mp)
        fast.test_every_mysql_type(mp)
        fast.test_columns_with_defaults(mp)
    assert len(seen) == 4
    for table, source_schema in seen:
        codec = _TableCodec(table, source_schema, Registry(), True, native=True)
        assert isinstance(getattr(codec.fast_value, "__self__", None), _native.Writer), table
        assert isinstance(getattr(codec.fast_key, "__self__", None), _native.Writer), table


# --- fuzz -----------------------------------------------------------------------------------------


class Weird:
    """Raises from every protocol method a writer could touch."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __str__(self) -> str:
        raise RuntimeError("str")

    def __len__(self) -> int:
        raise RuntimeError("len")

    def __index__(self) -> int:
        raise RuntimeError("index")

    def __float__(self) -> float:
        raise RuntimeError("float")


class SubInt(int):
    pass


class SubStr(str):
    pass


class SubDecimal(Decimal):
    def __str__(self) -> str:
        return "1.00"


def garbage(rnd: random.Random, depth: int = 0) -> Any:
    choices: list[Any] = [
        None,
        True,
        False,
        0,
        -1,
        2**31,
        2**63,
        -(2**64),
        10**40,
        SubInt(3),
        1.5,
        float("nan"),
        float("inf"),
        1e300,
        "",
        "x",
        "\ud800",
        SubStr("S1"),
        "S0",
        b"",
        b"\xff" * 3,
        bytearray(b"ab"),
        memoryview(b"ab"),
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("-Infinity"),
        Decimal("1.00"),
        Decimal("1E+400"),
        Decimal("-0E-1000"),
        SubDecimal("2"),
        Weird(),
        object(),
        {1, 2},
        range(3),
    ]
    r = rnd.random()
    if depth < 4 and r < 0.15:
        return [garbage(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    if depth < 4 and r < 0.3:
        return tuple(garbage(rnd, depth + 1) for _ in range(rnd.randint(0, 9)))
    if depth < 4 and r < 0.45:
        keys = [rnd.choice([*string.ascii_lowercase[:3], "f0", "f1", "f2", 1, None, "-type"])]
        return {k: garbage(rnd, depth + 1) for k in keys * rnd.randint(0, 3)}
    return rnd.choice(choices)


def mutate(rnd: random.Random, d: Any, depth: int = 0) -> Any:
    """``d`` with one random part replaced by garbage."""
    if depth < 6 and isinstance(d, dict) and d and rnd.random() < 0.7:
        k = rnd.choice(list(d))
        return {**d, k: mutate(rnd, d[k], depth + 1)}
    if depth < 6 and isinstance(d, (list, tuple)) and d and rnd.random() < 0.7:
        i = rnd.randrange(len(d))
        items = list(d)
        items[i] = mutate(rnd, items[i], depth + 1)
        return type(d)(items)
    return garbage(rnd)


def test_fuzz_garbage_datums_raise_cleanly() -> None:
    """Random and mutated datums of every shape: the native writer returns fastavro's bytes or
    raises an Exception, exactly when the Python writer does; never a crash, never other bytes."""
    rnd = random.Random(4242)
    counts = {"fast": 0, "fallback": 0, "error": 0}
    for _ in range(150):
        schema = random_record(rnd, 0, [], "Top")
        parsed = fastavro.parse_schema(schema, _write_hint=False)
        by_name = writers(parsed)
        by_index = writers(parsed, {"r.Top": None})
        good = random_datum(schema, rnd, named_types(schema, {}))
        for _ in range(20):
            d = mutate(rnd, good) if rnd.random() < 0.8 else garbage(rnd)
            for nat, py in (by_name, by_index):
                got_nat, got_py = outcome(nat, d), outcome(py, d)
                assert (got_nat is None) == (got_py is None), (schema, d)
                if got_nat is not None:
                    assert got_nat == got_py
                    counts["fast"] += 1
                else:
                    counts["fallback"] += 1
            if outcome(by_name[0], d) is not None:
                assert outcome(by_name[0], d) == fastavro_bytes(parsed, d)
    assert counts["fast"] > 100 and counts["fallback"] > 1000


def test_fuzz_the_envelope() -> None:
    """Mutated envelope tuples (as the encoder passes them) for W1's orders table."""
    rnd = random.Random(99)
    table = fast.orders()
    parsed = fastavro.parse_schema(envelope_schema(table, PG_SOURCE), _write_hint=False)
    ns = parsed["name"].rsplit(".", 1)[0]
    positional = {parsed["name"]: None, f"{ns}.Value": None, "event.block": None}
    nat, py = writers(parsed, positional)
    row = (7, 8, Decimal("1.00"), "new", "n", "2024-05-06T05:08:09Z")
    good = (row, row, pg_source(1), ("7:1", 1, 0), "u", 1, 1000, 1000000)
    assert outcome(nat, good) == outcome(py, good) is not None
    for _ in range(3000):
        d = mutate(rnd, good)
        got_nat, got_py = outcome(nat, d), outcome(py, d)
        assert (got_nat is None) == (got_py is None), d
        assert got_nat == got_py, d


def test_the_encoder_falls_back_to_fastavro_on_native_refusals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A datum the native writer raises on is written by fastavro, as with the Python writers."""
    monkeypatch.setattr(avro.time, "time_ns", lambda: fast.NOW_NS)
    table = TableSchema(
        "p.public.f",
        "public",
        "f",
        (Column("id", "long", False, "bigint"), Column("x", "double", True, "float8")),
        (0,),
    )
    events = [RowChange(table, "c", None, (1, 3), pg_source(), 1, "a")]  # an int for a double
    batch = ChangeBatch(events, {})
    want = Encoder(Registry(), PG_SOURCE, None, False, specialise=False).encode(batch)
    enc = Encoder(Registry(), PG_SOURCE, None, False, native=True)
    assert [r.value for r in enc.encode(batch).records] == [r.value for r in want.records]
    assert enc.fallbacks == 1


# --- the choice, shown ----------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cdc(code: list[str], native_env: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "CDC_NATIVE"}
    env["PYTHONPATH"] = ROOT
    if native_env is not None:
        env["CDC_NATIVE"] = native_env
    done = subprocess.run(
        [sys.executable, *code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


@pytest.mark.parametrize(("env", "path"), [(None, "native"), ("1", "native"), ("0", "python")])
def test_version_and_metric_name_the_path(env: str | None, path: str) -> None:
    out = run_cdc(["-m", "cdc", "--version"], env)
    assert out.startswith("cdc ") and f"avro writers: {path} (" in out, out
    if env == "0":
        assert "CDC_NATIVE=0" in out
    code = (
        "from prometheus_client import generate_latest\n"
        "from cdc import metrics, _native_avro\n"
        "from cdc.avro import _TableCodec\n"
        "print(_native_avro.PATH)\n"
        "print(generate_latest(metrics.REGISTRY).decode())\n"
    )
    out = run_cdc(["-c", code], env)
    assert out.splitlines()[0] == path
    assert f'cdc_encoder_info{{path="{path}"}} 1.0' in out


def test_the_choice_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_native_avro, "_logged", False)
    with caplog.at_level(logging.INFO, logger="cdc._native_avro"):
        Encoder(Registry(), PG_SOURCE, None, False)
        Encoder(Registry(), PG_SOURCE, None, False)
    lines = [r.getMessage() for r in caplog.records if r.name == "cdc._native_avro"]
    assert lines == [_native_avro.describe()]


def test_native_true_without_the_extension_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native_avro, "_native", None)
    monkeypatch.setattr(_native_avro, "PATH", "python")
    with pytest.raises(RuntimeError, match=r"cdc\._native is not built"):
        _native_avro.compile_writer(single("long"), native=True)
    assert _native_avro.compile_writer(single("long"), native=None)({"v": 1, "o": None})


def test_odd_positional_arguments_are_unsupported_not_errors() -> None:
    parsed = single("long")
    for positional in ({"t.R": (-1, 0)}, {"t.R": "ab"}, {1: None}, ["t.R"]):
        with pytest.raises(_native.Unsupported):
            _native.Writer(parsed, positional)
    # Any mapping; a logicalType of None is no logical type (as in _avrofast).
    nat = _native.Writer(parsed, types.MappingProxyType({"t.R": [1, 0]})).write
    assert nat((None, 5)) == fastavro_bytes(parsed, {"v": 5, "o": None})
    t = {"type": "long", "logicalType": None}
    parsed = fastavro.parse_schema(
        {"type": "record", "name": "R", "fields": [{"name": "v", "type": t}]}
    )
    assert _native.Writer(parsed).write({"v": 3}) == _avrofast.compile_writer(parsed)({"v": 3})


def test_row_encoder_takes_only_an_envelope_writer() -> None:
    parsed = single("long")
    w = _native.Writer(parsed, {"t.R": None})
    with pytest.raises(_native.Unsupported):
        _native.RowEncoder(None, w, b"", b"\x00")
    with pytest.raises(TypeError):
        _native.RowEncoder(None, object(), b"", b"")


def encode_or_error(enc: Encoder, batch: ChangeBatch) -> Any:
    try:
        return [(r.topic, r.key, r.value, r.event_id) for r in enc.encode(batch).records]
    except Exception:
        return "error"


def test_fuzz_row_changes_through_the_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row changes with garbage in any attribute the native row encoder reads: the native
    encoder's records (or its error) are the Python path's and fastavro's alone."""
    monkeypatch.setattr(avro.time, "time_ns", lambda: fast.NOW_NS)
    rnd = random.Random(7)
    table = fast.orders()
    row = (7, 8, Decimal("1.00"), "new", "n", "2024-05-06T05:08:09Z")
    attrs = ["op", "before", "after", "source", "tx", "key_override"]
    counts = {"same": 0, "error": 0}
    for i in range(400):
        good = {
            "op": rnd.choice(["c", "u", "d", "t", "r"]),
            "before": row,
            "after": row,
            "source": pg_source(i),
            "tx": ("7:1", 1, 0),
            "key_override": None,
        }
        bad = dict(good)
        # Valid variations (no image, no transaction, an old key), then garbage half the time.
        for name in ("before", "after", "tx", "key_override"):
            if rnd.random() < 0.25:
                bad[name] = (9, *row[1:]) if name == "key_override" else None
        if rnd.random() < 0.5:
            name = rnd.choice(attrs)
            bad[name] = mutate(rnd, good[name]) if good[name] is not None else garbage(rnd)
        ev = RowChange(
            table, bad["op"], bad["before"], bad["after"], bad["source"], 1, f"e{i}",
            bad["tx"], key_override=bad["key_override"],
        )  # fmt: skip
        batch = ChangeBatch([ev], {})
        want = encode_or_error(Encoder(Registry(), PG_SOURCE, None, True, specialise=False), batch)
        py = encode_or_error(Encoder(Registry(), PG_SOURCE, None, True, native=False), batch)
        nat = encode_or_error(Encoder(Registry(), PG_SOURCE, None, True, native=True), batch)
        assert nat == py == want, bad
        counts["error" if nat == "error" else "same"] += 1
    assert counts["error"] > 50 and counts["same"] > 100


@pytest.mark.parametrize(("env", "path"), [(None, "native"), ("0", "python")])
def test_version_and_metrics_name_every_compiled_path(env: str | None, path: str) -> None:
    """Issue 15 item 2: which compiled paths run (Avro writers, pgoutput tuple decoder, COPY
    decoder, binlog rows decoder, MySQL snapshot rows decoder) in ``cdc --version`` and
    ``cdc_native_paths{path}``, and a decoder's fallbacks in
    ``cdc_native_fallbacks_total{path}``."""
    out = run_cdc(["-m", "cdc", "--version"], env)
    for label in (
        "pgoutput tuple decoder",
        "copy decoder",
        "binlog rows decoder",
        "mysql select decoder",
    ):
        assert f"\n{label}: {path} (" in out, out
    code = (
        "from prometheus_client import generate_latest\n"
        "from cdc import metrics\n"
        "from cdc.sources.postgres import _tuples\n"
        "from cdc.sources.mysql import _rows\n"
        "_tuples._Fallbacks.count += 3\n"
        "print(generate_latest(metrics.REGISTRY).decode())\n"
    )
    out = run_cdc(["-c", code], env)
    on = "1.0" if path == "native" else "0.0"
    for part in _native_avro.PARTS:
        assert f'cdc_native_paths{{path="{part}"}} {on}' in out, out
    assert 'cdc_native_fallbacks_total{path="pgoutput_tuple_decoder"} 3.0' in out, out
    assert 'cdc_native_fallbacks_total{path="binlog_rows_decoder"} 0.0' in out, out
