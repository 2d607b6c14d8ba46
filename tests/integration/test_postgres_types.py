"""Every mapped Postgres type, end to end: the value in the log equals what SELECT returns.

Expected values are computed here from what psycopg (or the server's own arithmetic) returns for
the same rows, never with the converters under test. Each column below is
(name, SQL type, literal per row, SQL expression fetched for the expectation, Python function
turning that result into the expected Avro value, expected connect.name or None).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from datetime import UTC, datetime, time
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.logtools import read_log, row_events, write_config

pytestmark = pytest.mark.integration

MONTH_US = 2_629_800_000_000  # 30.4375 days
DAY_US = 86_400_000_000
# Debezium's timestamp infinities: pgjdbc's DATE_POSITIVE/NEGATIVE_INFINITY as microseconds
TS_INF, TS_NINF = 9_223_372_036_825_200_000, -9_223_372_036_832_400_000
# days since 1970 of -5877611-06-21 and -5877611-06-22: Debezium's dates for +-infinity
DATE_INF, DATE_NINF = -2_147_472_692, 2_147_472_691

SETUP = """
CREATE EXTENSION hstore;
CREATE EXTENSION ltree;
CREATE EXTENSION citext;
CREATE TYPE mood AS ENUM ('happy', 'sad', 'ok');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN amount AS numeric(9,2);
CREATE DOMAIN short_text AS varchar(5);
"""


def same(v: Any) -> Any:
    return v


def as_int(v: Any) -> Any:
    return None if v is None else int(v)


def f32(v: float | None) -> Any:
    return None if v is None else struct.unpack("<f", struct.pack("<f", v))[0]


def finite_decimal(v: Decimal | None) -> Any:
    return None if v is None or not v.is_finite() else v


def variable_decimal(v: Decimal | None) -> Any:
    """numeric without scale: trailing fraction zeros dropped (1.50 -> 1.5, 0.000 -> 0)."""
    if v is None or not v.is_finite():
        return None
    v = Context(prec=1000).normalize(v)
    return v.quantize(Decimal(1)) if v.as_tuple().exponent > 0 else v  # type: ignore[operator]


def stamp(parts: list[Decimal] | None) -> Any:
    """[year (negative BC, no year 0), month, day, hour, minute, microseconds] -> ZonedTimestamp."""
    if parts is None:
        return None
    y, mo, d, h, mi, us = (int(p) for p in parts)
    y = y + 1 if y < 0 else y  # ISO years: 1 BC is year 0
    ys = f"{y:04d}" if 0 <= y <= 9999 else (f"+{y}" if y > 0 else f"-{-y:04d}")
    # a timestamptz column without a declared precision has 6 fraction digits
    return f"{ys}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{us // 1_000_000:02d}.{us % 1_000_000:06d}Z"


def zoned(v: datetime | None) -> Any:
    if v is None:
        return None
    return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def zoned_ms(v: datetime | None) -> Any:
    return None if v is None else v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def flat(v: Any) -> Any:
    """Nested lists flattened in row-major order."""
    if v is None:
        return None
    out: list[Any] = []
    for e in v:
        out.extend(flat(e) if isinstance(e, list) else [e])
    return out


def zoned_time(v: time | None) -> Any:
    if v is None:
        return None
    frac = f".{v.microsecond:06d}".rstrip("0") if v.microsecond else ""
    return v.strftime("%H:%M:%S") + frac + "Z"


def interval(parts: list[Decimal] | None) -> Any:
    if parts is None:
        return None
    y, mo, d, h, mi, us = (int(p) for p in parts)
    return (y * 12 + mo) * MONTH_US + d * DAY_US + (h * 60 + mi) * 60_000_000 + us


def bits_le(bits: list[int] | None) -> Any:
    """Bits, first most significant, as a number in the fewest little-endian bytes."""
    if bits is None:
        return None
    n = 0
    for b in bits:
        n = n * 2 + b
    return n.to_bytes((n.bit_length() + 7) // 8, "little")


def point(xy: list[float] | None) -> Any:
    if xy is None:
        return None
    x, y = xy
    wkb = b"\x01" + (1).to_bytes(4, "little") + struct.pack("<d", x) + struct.pack("<d", y)
    return {"x": x, "y": y, "wkb": wkb, "srid": None}


def inet(v: Any) -> Any:
    # psycopg gives an address for a full-length mask, an interface otherwise, as Postgres prints
    return None if v is None else str(v)


def each(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else [None if e is None else f(e) for e in v]


def bit_list(col: str) -> str:
    return (
        f"CASE WHEN {col} IS NOT NULL THEN array(SELECT get_bit({col}, i) "
        f"FROM generate_series(0, length({col}) - 1) i) END"
    )


def epoch_us(col: str, per: int = 1_000_000) -> str:
    inf, ninf = TS_INF // (1_000_000 // per), TS_NINF // (1_000_000 // per)
    return (
        f"CASE WHEN {col} = 'infinity' THEN {inf} WHEN {col} = '-infinity' THEN {ninf} "
        f"ELSE floor(extract(epoch FROM {col}) * {per})::numeric END"
    )


def parts(col: str) -> str:
    return (
        f"CASE WHEN isfinite({col}) THEN ARRAY[extract(year FROM {col}), extract(month FROM {col}),"
        f" extract(day FROM {col}), extract(hour FROM {col}), extract(minute FROM {col}), "
        f"extract(microseconds FROM {col})] END"
    )


def tz_parts(col: str) -> str:
    return parts(f"({col} AT TIME ZONE 'UTC')")


def tz_stamp(col: str) -> str:
    return f"CASE WHEN isfinite({col}) THEN NULL ELSE {col}::text END"


DEC = "org.apache.kafka.connect.data.Decimal"
VSD = "io.debezium.data.VariableScaleDecimal"

Col = tuple[str, str, tuple[str, str, str], str | None, Callable[[Any], Any], str | None]
# expectation SQL None: the column itself
COLUMNS: list[Col] = [
    ("c_int2", "smallint", ("42", "-32768", "32767"), None, same, None),
    ("c_int4", "integer", ("7", "-2147483648", "2147483647"), None, same, None),
    (
        "c_int8",
        "bigint",
        ("1234567890123", "-9223372036854775808", "9223372036854775807"),
        None,
        same,
        None,
    ),
    ("c_num", "numeric", ("3.14159", "'NaN'", "'-Infinity'"), None, variable_decimal, VSD),
    (
        "c_num2",
        "numeric",
        ("0.000", "-12345678901234567890.000100", "'Infinity'"),
        None,
        variable_decimal,
        VSD,
    ),
    ("c_num_s", "numeric(12,3)", ("12.5", "-999999999.999", "'NaN'"), None, finite_decimal, DEC),
    ("c_real", "real", ("1.1", "'NaN'", "'-Infinity'"), None, f32, None),
    (
        "c_double",
        "double precision",
        ("3.141592653589793", "'Infinity'", "'NaN'"),
        None,
        same,
        None,
    ),
    (
        "c_money",
        "money",
        ("1234.56", "'-92233720368547758.08'", "'92233720368547758.07'"),
        "c_money::numeric",
        same,
        DEC,
    ),
    ("c_bool", "boolean", ("true", "false", "true"), None, same, None),
    ("c_char", "char(3)", ("'ab'", "''", "'xyz'"), None, same, None),
    ("c_varchar", "varchar(10)", ("'héllo'", "''", "'日本語'"), None, same, None),
    (
        "c_text",
        "text",
        ("'plain'", "''", "'emoji 🎉, \"quotes\", back\\slash, {brace}'"),
        None,
        same,
        None,
    ),
    ("c_bytea", "bytea", ("'\\x00ff'", "'\\x'", "'\\xdeadbeef'"), None, same, None),
    (
        "c_date",
        "date",
        ("'2024-02-29'", "'-infinity'", "'infinity'"),
        f"CASE WHEN c_date = 'infinity' THEN {DATE_INF} "
        f"WHEN c_date = '-infinity' THEN {-DATE_NINF} ELSE c_date - DATE '1970-01-01' END",
        same,
        "io.debezium.time.Date",
    ),
    (
        "c_date2",
        "date",
        ("'1969-12-31'", "'0044-03-15 BC'", "'5874897-12-31'"),
        "c_date2 - DATE '1970-01-01'",
        same,
        "io.debezium.time.Date",
    ),
    (
        "c_time",
        "time",
        ("'13:14:15.25'", "'00:00:00'", "'24:00:00'"),
        "extract(epoch FROM c_time) * 1000000",
        as_int,
        "io.debezium.time.MicroTime",
    ),
    (
        "c_time3",
        "time(3)",
        ("'13:14:15.123'", "'00:00:00'", "'23:59:59.999'"),
        "extract(epoch FROM c_time3) * 1000",
        as_int,
        "io.debezium.time.Time",
    ),
    (
        "c_timetz",
        "timetz",
        ("'13:14:15.25+02'", "'00:30:00+05:30'", "'23:59:59.999999-12'"),
        "c_timetz AT TIME ZONE 'UTC'",
        zoned_time,
        "io.debezium.time.ZonedTime",
    ),
    (
        "c_ts",
        "timestamp",
        ("'2001-02-03 04:05:06.789'", "'-infinity'", "'infinity'"),
        epoch_us("c_ts"),
        as_int,
        "io.debezium.time.MicroTimestamp",
    ),
    (
        "c_ts2",
        "timestamp",
        ("'1969-12-31 23:59:59.999999'", "'0044-03-15 12:00:00 BC'", "'10000-01-01 00:00:00'"),
        epoch_us("c_ts2"),
        as_int,
        "io.debezium.time.MicroTimestamp",
    ),
    (
        "c_ts3",
        "timestamp(3)",
        ("'2001-02-03 04:05:06.789'", "'1900-01-01 00:00:00'", "'infinity'"),
        epoch_us("c_ts3", 1000),
        as_int,
        "io.debezium.time.Timestamp",
    ),
    (
        "c_tstz",
        "timestamptz",
        ("'2024-05-06 07:08:09.123456+02'", "'-infinity'", "'infinity'"),
        tz_stamp("c_tstz"),  # infinities; finite values: see expected_rows
        same,
        "io.debezium.time.ZonedTimestamp",
    ),
    (
        "c_tstz2",
        "timestamptz",
        (
            "'1970-01-01 00:00:00+00'",
            "'0044-03-15 10:00:00.5+00 BC'",
            "'12345-06-07 08:09:10.5+03'",
        ),
        tz_parts("c_tstz2"),
        stamp,
        "io.debezium.time.ZonedTimestamp",
    ),
    (
        "c_interval",
        "interval",
        (
            "'1 year 2 months 3 days 04:05:06.789'",
            "'-1 months -2 days -00:00:00.5'",
            "'0'",
        ),
        "CASE WHEN c_interval IS NOT NULL THEN ARRAY[extract(year FROM c_interval), "
        "extract(month FROM c_interval), extract(day FROM c_interval), "
        "extract(hour FROM c_interval), extract(minute FROM c_interval), "
        "extract(microseconds FROM c_interval)] END",
        interval,
        "io.debezium.time.MicroDuration",
    ),
    (
        "c_uuid",
        "uuid",
        (
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "'00000000-0000-0000-0000-000000000000'",
            "'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'",
        ),
        None,
        lambda v: None if v is None else str(v),
        "io.debezium.data.Uuid",
    ),
    (
        "c_json",
        "json",
        ("'{\"a\": [1, 2]}'", "'[]'", '\'{"ü": "\\u00e9", "n": null}\''),
        "c_json::text",
        same,
        "io.debezium.data.Json",
    ),
    (
        "c_jsonb",
        "jsonb",
        ('\'{"b":1,"a":[true]}\'', "'{}'", "'\"ü 🎉\"'"),
        "c_jsonb::text",
        same,
        "io.debezium.data.Json",
    ),
    ("c_xml", "xml", ("'<a>1</a>'", "'<r/>'", "'<ü x=\"1\"/>'"), "c_xml::text", same, None),
    ("c_inet", "inet", ("'192.168.1.5'", "'::1'", "'10.0.0.1/8'"), None, inet, None),
    ("c_cidr", "cidr", ("'10.0.0.0/8'", "'::/0'", "'2001:db8::/32'"), "c_cidr::text", same, None),
    (
        "c_mac",
        "macaddr",
        ("'08:00:2b:01:02:03'", "'00:00:00:00:00:00'", "'FF:FF:FF:FF:FF:FF'"),
        "c_mac::text",
        same,
        None,
    ),
    (
        "c_mac8",
        "macaddr8",
        ("'08:00:2b:01:02:03:04:05'", "'00:00:00:00:00:00:00:00'", "'08002bfffe010203'"),
        "c_mac8::text",
        same,
        None,
    ),
    ("c_bit1", "bit(1)", ("B'1'", "B'0'", "B'1'"), "c_bit1 = B'1'", same, None),
    (
        "c_bit",
        "bit(12)",
        ("B'101000000001'", "B'000000000000'", "B'111111111111'"),
        bit_list("c_bit"),
        bits_le,
        "io.debezium.data.Bits",
    ),
    (
        "c_varbit",
        "varbit(20)",
        ("B'101'", "B''", "B'11111111111111111111'"),
        bit_list("c_varbit"),
        bits_le,
        "io.debezium.data.Bits",
    ),
    (
        "c_varbit_u",
        "varbit",
        ("B'1'", "B''", "repeat('10', 50)::varbit"),
        bit_list("c_varbit_u"),
        bits_le,
        "io.debezium.data.Bits",
    ),
    ("c_mood", "mood", ("'happy'", "'sad'", "'ok'"), "c_mood::text", same, "io.debezium.data.Enum"),
    ("c_posint", "posint", ("1", "1", "2147483647"), None, same, None),
    ("c_amount", "amount", ("1.5", "-0.01", "9999999.99"), None, same, DEC),
    ("c_short", "short_text", ("'abc'", "''", "'ü'"), None, same, None),
    ("c_int_arr", "int[]", ("'{1,2,3}'", "'{}'", "'{NULL,-1,2147483647}'"), None, same, None),
    (
        "c_text_arr",
        "text[]",
        (
            "'{a,\"b c\"}'",
            "'{}'",
            "ARRAY['NULL', NULL, 'quo\"te', 'back\\slash', '{brace}', 'comma,', 'ü 🎉', '']",
        ),
        None,
        same,
        None,
    ),
    (
        "c_num_arr",
        "numeric(6,2)[]",
        ("'{1.5,-2.25}'", "'{}'", "'{NULL,NaN,9999.99}'"),
        None,
        each(finite_decimal),
        None,
    ),
    (
        "c_mood_arr",
        "mood[]",
        # no NULL element: Debezium's enum array elements are required (a NULL one stops the
        # pipeline, see test_postgres_type_edges.py)
        ("'{happy,sad}'", "'{}'", "'{ok,happy}'"),
        "c_mood_arr::text[]",
        same,
        None,
    ),
    (
        "c_tstz_arr",
        "timestamptz[]",
        ('\'{"2024-01-01 00:00:00+00","2024-06-01 12:30:00.5+02"}\'', "'{}'", "'{NULL}'"),
        None,
        each(zoned),
        None,
    ),
    (
        "c_bytea_arr",
        "bytea[]",
        ("ARRAY['\\x00'::bytea, '\\xff']", "'{}'", "ARRAY[NULL::bytea, '\\x']"),
        None,
        same,
        None,
    ),
    (
        "c_date_arr",
        "date[]",
        ("'{2024-02-29,1970-01-01}'", "'{}'", "'{1969-12-31,NULL}'"),
        "CASE WHEN c_date_arr IS NOT NULL THEN array(SELECT d - DATE '1970-01-01' "
        "FROM unnest(c_date_arr) WITH ORDINALITY u(d, i) ORDER BY i) END",
        same,
        None,
    ),
    (
        "c_hstore",
        "hstore",
        ("'a=>1, b=>NULL'", "''", '\'"k é"=>"v \\"q\\"", x=>y\''),
        "hstore_to_json(c_hstore)::text",
        lambda v: None if v is None else json.loads(v),
        "io.debezium.data.Json",
    ),
    (
        "c_point",
        "point",
        ("'(1.5,2.5)'", "'(0,0)'", "'(-1e300,1e-300)'"),
        "CASE WHEN c_point IS NOT NULL THEN ARRAY[c_point[0], c_point[1]] END",
        point,
        "io.debezium.data.geometry.Point",
    ),
    (
        "c_ltree",
        "ltree",
        ("'Top.Science.Astronomy'", "''", "'a'"),
        "c_ltree::text",
        same,
        "io.debezium.data.Ltree",
    ),
    ("c_citext", "citext", ("'MixedCase'", "''", "'Ünïcode'"), "c_citext::text", same, None),
    (
        "c_tstz3",
        "timestamptz(3)",
        ("'2024-05-06 07:08:09.12+02'", "'2024-05-06 07:08:09+02'", "'1999-12-31 23:59:59.999+00'"),
        None,
        zoned_ms,
        "io.debezium.time.ZonedTimestamp",
    ),
    ("c_num_neg", "numeric(3,-2)", ("12345", "-100", "0"), None, variable_decimal, VSD),
    ("c_int_2d", "int[]", ("'{{1,2},{3,NULL}}'", "'{{7},{8}}'", "'[0:1]={5,6}'"), None, flat, None),
    (
        "c_posint_arr",
        "posint[]",
        ("'{1,2}'", "'{}'", "'{NULL}'"),
        "c_posint_arr::int[]",
        same,
        None,
    ),
    ("c_vc_arr", "varchar(5)[]", ("'{ab,\"c,d\"}'", "'{\"\"}'", "'{NULL}'"), None, same, None),
    (
        "c_tsvector",
        "tsvector",
        ("'a fat cat'", "''", "'ü:1A'"),
        "c_tsvector::text",
        same,
        "io.debezium.data.TsVector",
    ),
    ("c_range", "int4range", ("'[1,5)'", "'empty'", "'(,3]'"), "c_range::text", same, None),
]


def create_table(c: psycopg.Connection[Any]) -> None:
    c.execute(SETUP)
    cols = ", ".join(f"{name} {sqltype}" for name, sqltype, *_ in COLUMNS)
    c.execute(f"CREATE TABLE all_types (id int PRIMARY KEY, {cols})")
    # stored out of line uncompressed, so that the 1 MB value is TOASTed (not compressed inline)
    c.execute("ALTER TABLE all_types ALTER c_text SET STORAGE EXTERNAL")


BIG_TEXT = "é" * 500_000 + "x"  # 1 MB of UTF-8


def insert_rows(c: psycopg.Connection[Any]) -> None:
    names = ", ".join(name for name, *_ in COLUMNS)
    for row in range(3):
        values = ", ".join(col[2][row] for col in COLUMNS)
        c.execute(f"INSERT INTO all_types (id, {names}) VALUES ({row + 1}, {values})")
    c.execute("INSERT INTO all_types (id) VALUES (4)")  # every column NULL
    c.execute("INSERT INTO all_types (id, c_text) VALUES (5, %s)", (BIG_TEXT,))


def expected_rows(c: psycopg.Connection[Any]) -> dict[int, dict[str, Any]]:
    exprs = ", ".join(expr or name for name, _, _, expr, _, _ in COLUMNS)
    rows = c.execute(f"SELECT id, {exprs} FROM all_types ORDER BY id").fetchall()
    out = {}
    for row in rows:
        out[row[0]] = {col[0]: col[4](v) for col, v in zip(COLUMNS, row[1:], strict=True)}
    # psycopg loads finite timestamptz values only
    finite = c.execute(
        "SELECT id, c_tstz FROM all_types WHERE isfinite(c_tstz) ORDER BY id"
    ).fetchall()
    for rid, v in finite:
        out[rid]["c_tstz"] = zoned(v)
    return out


def config(tmp_path: Path, dsn: str, tables: list[str]) -> Path:
    slot = "s_" + dsn.rsplit("dbname=", 1)[1]  # slots are per server: one per test database
    return write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: types
    source:
      type: postgres
      dsn: "{dsn}"
      tables: {tables!r}
      slot: {slot}
    sink:
      type: log
      path: {tmp_path / "log"}
""",
    )


def same_value(got: Any, want: Any) -> bool:
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, Decimal) and isinstance(got, Decimal):
        return got == want and got.as_tuple().exponent == want.as_tuple().exponent
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(map(same_value, got, want))
    return bool(got == want) and type(got) is type(want)


def decoded(name: str, v: Any) -> Any:
    """A decoded log value in the shape the expectation uses."""
    if v is None:
        return None
    if isinstance(v, dict) and "scale" in v and "value" in v:  # VariableScaleDecimal
        return Decimal(int.from_bytes(v["value"], "big", signed=True)).scaleb(-v["scale"])
    if name == "c_hstore":
        return json.loads(v)
    return v


def field_names(schema: dict[str, Any]) -> dict[str, str | None]:
    """connect.name of each field of the Value record of an envelope schema."""
    value = schema["fields"][0]["type"][1]
    out: dict[str, str | None] = {}
    for f in value["fields"]:
        t = f["type"]
        t = t[1] if isinstance(t, list) else t
        if isinstance(t, str) and "." in t:  # a reference to a named type defined before
            out[f["name"]] = t
        else:
            out[f["name"]] = t.get("connect.name") if isinstance(t, dict) else None
    return out


PHASES = ["stream", "snapshot"]  # snapshot: rows inserted before the daemon starts


@pytest.mark.parametrize("phase", PHASES)
def test_every_type_decodes_to_what_select_returns(
    tmp_path: Path, pg_db: str, daemon: Any, phase: str
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        create_table(c)
        if phase == "snapshot":
            insert_rows(c)
    d = daemon(config(tmp_path, pg_db, ["public.all_types"])).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        if phase == "stream":
            insert_rows(c)
        want = expected_rows(c)
        # the 1 MB value is TOASTed: an update that leaves it alone does not send it
        c.execute("UPDATE all_types SET c_int4 = 1 WHERE id = 5")
    log = tmp_path / "log"
    wait_until(lambda: len(row_events(read_log(log))) >= 6, 60, "6 row events")
    assert d.terminate() == 0, d.output()
    rows = row_events(read_log(log))
    assert [r["value"]["op"] for r in rows] == ["r" if phase == "snapshot" else "c"] * 5 + ["u"]

    problems = []
    for r in rows[:5]:
        after = r["value"]["after"]
        rid = after["id"]
        for name, *_ in COLUMNS:
            got, exp = decoded(name, after[name]), want[rid][name]
            if not same_value(got, exp):
                problems.append(f"row {rid} {name}: log {got!r:.200} != select {exp!r:.200}")
    assert not problems, "\n".join(problems)
    assert rows[4]["value"]["after"]["c_text"] == BIG_TEXT
    assert rows[5]["value"]["after"]["c_text"] == "__debezium_unavailable_value"
    assert rows[5]["value"]["after"]["c_int4"] == 1

    from cdc.sinks.log import LogReader

    reader = LogReader(log)
    first = next(iter(reader.records(0, "types.public.all_types")))
    schema = reader.schemas.get(int.from_bytes((first.value or b"")[1:5], "big"))
    names = field_names(schema)
    wrong = {
        name: names[name]
        for name, _, _, _, _, cname in COLUMNS
        if cname is not None and names[name] != cname
    }
    assert not wrong, wrong
    value_fields = {f["name"]: f["type"][1] for f in schema["fields"][0]["type"][1]["fields"][1:]}
    assert value_fields["c_mood"]["connect.parameters"] == {"allowed": "happy,sad,ok"}
    assert value_fields["c_bit"]["connect.parameters"] == {"length": "12"}
    assert value_fields["c_num_s"]["connect.parameters"]["connect.decimal.precision"] == "12"
    assert value_fields["c_amount"]["scale"] == 2  # the domain's numeric(9,2)
    assert value_fields["c_bit1"] == "boolean"


def test_enum_column_added_mid_stream(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, x text)")
    d = daemon(config(tmp_path, pg_db, ["public.t"])).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO t VALUES (1, 'before')")
        c.execute("CREATE TYPE color AS ENUM ('red', 'green')")
        c.execute("ALTER TABLE t ADD COLUMN c color, ADD COLUMN cs color[]")
        c.execute("INSERT INTO t VALUES (2, 'after', 'green', '{red,green}')")
        c.execute("UPDATE t SET x = 'old row, new shape' WHERE id = 1")
    log = tmp_path / "log"
    wait_until(lambda: len(row_events(read_log(log))) >= 3, 30, "3 row events")
    assert d.terminate() == 0, d.output()
    rows = row_events(read_log(log))
    assert rows[0]["value"]["after"] == {"id": 1, "x": "before"}
    # (a NULL element would stop the pipeline: Debezium's enum array elements are required)
    assert rows[1]["value"]["after"] == {
        "id": 2,
        "x": "after",
        "c": "green",
        "cs": ["red", "green"],
    }
    assert rows[2]["value"]["after"] == {"id": 1, "x": "old row, new shape", "c": None, "cs": None}
