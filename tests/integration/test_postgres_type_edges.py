"""Type edges on the real server: for every row family of sources/postgres/TYPES.md, the extreme
and odd values Postgres 15 accepts, snapshot and stream, against what SELECT returns and the
schema Debezium documents; odd table and column names; the neutral values of a delete's
before-image; and the conversion errors that stop a pipeline (located, fatal, no restart loop).

Expectations are computed by the server (SQL expressions) or from psycopg's values, and from
Debezium's documented constants where Debezium maps a value to a sentinel (the infinities), never
with the converters under test.

One file past 500 lines: most of it is the column table (one entry per TYPES.md row family),
which the snapshot and stream tests share.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from collections.abc import Callable
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import wait_until
from tests.integration.test_postgres_types import (
    DATE_INF,
    DATE_NINF,
    as_int,
    bit_list,
    bits_le,
    each,
    epoch_us,
    f32,
    finite_decimal,
    flat,
    interval,
    same,
    same_value,
    tz_parts,
)
from tests.logtools import read_log, row_events, write_config

pytestmark = pytest.mark.integration

I64_MAX, I64_MIN = 2**63 - 1, -(2**63)
WIDE = Context(prec=200_000)  # numeric has up to 131072 + 16383 digits


def variable_decimal(v: Decimal | None) -> Any:
    """numeric without scale: trailing fraction zeros dropped, no negative scale."""
    if v is None or not v.is_finite():
        return None
    v = WIDE.normalize(v)
    return v.quantize(Decimal(1), context=WIDE) if v.as_tuple().exponent > 0 else v  # type: ignore[operator]


LABELS = ["a,b", 'q"uote', "sp ace", "back\\slash", "ü", "{x}"]
SETUP = """
CREATE EXTENSION hstore;
CREATE EXTENSION ltree;
CREATE EXTENSION citext;
CREATE TYPE odd AS ENUM ($$a,b$$, $$q"uote$$, $$sp ace$$, $$back\\slash$$, $$ü$$, $${x}$$);
CREATE DOMAIN amount AS numeric(9,2);
CREATE DOMAIN short_text AS varchar(5);
"""
ALL_BYTES = (
    "(SELECT decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex') "
    "FROM generate_series(0, 255) i)"
)
BIG_BYTEA = "decode(repeat('a5', 1000000), 'hex')"  # 1 MB


def stamp_n(digits: int) -> Callable[[Any], Any]:
    """[year (negative BC), month, day, hour, minute, microseconds] -> ZonedTimestamp text with
    the column's fraction digits (java.time's expanded years: 1 BC is year 0)."""

    def f(parts: list[Decimal] | None) -> Any:
        if parts is None:
            return None
        y, mo, d, h, mi, us = (int(p) for p in parts)
        y = y + 1 if y < 0 else y
        ys = f"{y:04d}" if 0 <= y <= 9999 else (f"+{y}" if y > 0 else f"-{-y:04d}")
        frac = f".{us % 1_000_000:06d}"[: digits + 1] if digits else ""
        return f"{ys}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{us // 1_000_000:02d}{frac}Z"

    return f


def saturated(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if f(v) is None else min(max(f(v), I64_MIN), I64_MAX)


def wkb_point(xy: list[float] | None) -> Any:
    if xy is None:
        return None
    x, y = xy
    return {"x": x, "y": y, "wkb": b"\x01" + struct.pack("<Idd", 1, x, y), "srid": None}


def json_value(v: Any) -> Any:
    return None if v is None else json.loads(v)


def inet_text(col: str) -> str:
    # the output function's text: the mask only when it is not the whole address
    return (
        f"CASE WHEN masklen({col}) = CASE family({col}) WHEN 4 THEN 32 ELSE 128 END "
        f"THEN host({col}) ELSE host({col}) || '/' || masklen({col}) END"
    )


def date_days(col: str) -> str:
    return (
        f"CASE WHEN {col} = 'infinity' THEN {DATE_INF} WHEN {col} = '-infinity' THEN {-DATE_NINF}"
        f" ELSE {col} - DATE '1970-01-01' END"
    )


def elements(col: str, expr: str) -> str:
    """An array of ``expr`` over ``x``, each element of ``col`` in order (NULL stays NULL)."""
    return (
        f"CASE WHEN {col} IS NOT NULL THEN array(SELECT CASE WHEN x IS NOT NULL THEN {expr} END "
        f"FROM unnest({col}) WITH ORDINALITY u(x, i) ORDER BY i) END"
    )


INTERVAL_PARTS = (
    "CASE WHEN c_interval IS NOT NULL THEN ARRAY[extract(year FROM c_interval), "
    "extract(month FROM c_interval), extract(day FROM c_interval), "
    "extract(hour FROM c_interval), extract(minute FROM c_interval), "
    "extract(microseconds FROM c_interval)] END"
)
TSTZ_TEXT = (
    "CASE WHEN isfinite(x) THEN to_char(x AT TIME ZONE 'UTC', "
    '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\') ELSE x::text END'
)

DEC = "org.apache.kafka.connect.data.Decimal"
VSD = "io.debezium.data.VariableScaleDecimal"
ZTS = "io.debezium.time.ZonedTimestamp"

Col = tuple[str, str, tuple[str, str, str, str], str | None, Callable[[Any], Any], str | None]
# (name, SQL type, four literals, expectation SQL (None: the column), expected value of the
# SELECT result, connect.name)
COLUMNS: list[Col] = [
    ("c_int2", "smallint", ("-32768", "32767", "0", "-1"), None, same, None),
    ("c_int4", "integer", ("-2147483648", "2147483647", "0", "-1"), None, same, None),
    (
        "c_int8",
        "bigint",
        ("-9223372036854775808", "9223372036854775807", "0", "-1"),
        None,
        same,
        None,
    ),
    ("c_oid", "oid", ("0", "4294967295", "1", "2147483648"), "c_oid::bigint", same, None),
    (
        "c_num_s",
        "numeric(12,2)",
        ("-9999999999.99", "9999999999.99", "0", "-0.005"),
        None,
        finite_decimal,
        DEC,
    ),
    (
        "c_num",
        "numeric",
        ("'NaN'", "'Infinity'", "'-Infinity'", "repeat('9', 1000)::numeric / 1e500"),
        None,
        variable_decimal,
        VSD,
    ),
    (
        "c_num2",
        "numeric",
        ("'-0.000'", "('0.' || repeat('0', 300) || '1')::numeric", "1e-16383", "-1e131071"),
        None,
        variable_decimal,
        VSD,
    ),
    ("c_num_neg", "numeric(3,-2)", ("99900", "-99900", "49", "-50"), None, variable_decimal, VSD),
    ("c_real", "real", ("'NaN'", "'-Infinity'", "'1.4e-45'", "'3.4028235e38'"), None, f32, None),
    (
        "c_double",
        "double precision",
        ("'Infinity'", "'-0'", "'4.9e-324'", "'1.7976931348623157e308'"),
        None,
        same,
        None,
    ),
    (
        "c_money",
        "money",
        ("'-92233720368547758.08'", "'92233720368547758.07'", "0", "'-0.01'"),
        "c_money::numeric",
        same,
        DEC,
    ),
    ("c_bool", "boolean", ("true", "false", "false", "true"), None, same, None),
    (
        "c_char",
        "char(3)",
        ("''", "'ü'", "'abc'", "' '"),
        "c_char::text || repeat(' ', 3 - length(c_char))",
        same,
        None,
    ),
    (
        "c_varchar",
        "varchar(10)",
        ("''", "repeat('ü', 10)", "' '", "'a' || chr(9) || 'b'"),
        None,
        same,
        None,
    ),
    (
        "c_text",
        "text",
        ("''", "'NULL'", "E'\\\\'", "'a' || chr(1) || chr(13) || chr(10) || '🎉\"'"),
        None,
        same,
        None,
    ),
    ("c_qchar", '"char"', ("'x'", "''", "' '", "'\"'"), "c_qchar::text", same, None),
    (
        "c_name",
        "name",
        ("''", "repeat('x', 63)", "'with space'", "'ü'"),
        "c_name::text",
        same,
        None,
    ),
    ("c_bytea", "bytea", ("'\\x'", ALL_BYTES, BIG_BYTEA, "'\\x00'"), None, same, None),
    (
        "c_date",
        "date",
        ("'infinity'", "'-infinity'", "'5874897-12-31'", "'4714-11-24 BC'"),
        date_days("c_date"),
        same,
        "io.debezium.time.Date",
    ),
    (
        "c_time",
        "time",
        ("'00:00:00'", "'24:00:00'", "'23:59:59.999999'", "'00:00:00.000001'"),
        "extract(epoch FROM c_time) * 1000000",
        as_int,
        "io.debezium.time.MicroTime",
    ),
    (
        "c_time3",
        "time(3)",
        ("'23:59:59.999'", "'24:00:00'", "'00:00:00.001'", "'00:00:00'"),
        "extract(epoch FROM c_time3) * 1000",
        as_int,
        "io.debezium.time.Time",
    ),
    (
        "c_timetz",
        "timetz",
        (
            "'00:00:00+15:59'",
            "'23:59:59.999999-15:59'",
            "'00:00:00.000001+00'",
            "'12:34:56.5+05:30'",
        ),
        "(c_timetz AT TIME ZONE 'UTC')::time::text",
        lambda v: None if v is None else v + "Z",
        "io.debezium.time.ZonedTime",
    ),
    (
        "c_ts",
        "timestamp",
        ("'infinity'", "'-infinity'", "'294247-01-01 23:59:59.999999'", "'4714-11-24 00:00:00 BC'"),
        epoch_us("c_ts"),
        as_int,
        "io.debezium.time.MicroTimestamp",
    ),
    (
        "c_ts_max",
        "timestamp",
        (
            "'294276-12-31 23:59:59.999999'",
            "'294276-12-31 23:59:59.999999'",
            "'1970-01-01'",
            "'0001-01-01 BC'",
        ),
        epoch_us("c_ts_max"),
        lambda v: None if v is None else min(max(int(v), I64_MIN + 1), I64_MAX - 1),
        "io.debezium.time.MicroTimestamp",
    ),
    (
        "c_ts3",
        "timestamp(3)",
        ("'infinity'", "'-infinity'", "'294276-12-31 23:59:59.999'", "'4714-11-24 00:00:00 BC'"),
        epoch_us("c_ts3", 1000),
        as_int,
        "io.debezium.time.Timestamp",
    ),
    (
        "c_tstz_inf",
        "timestamptz",
        ("'infinity'", "'-infinity'", "'-infinity'", "'infinity'"),
        "c_tstz_inf::text",
        same,
        ZTS,
    ),
    (
        "c_tstz",
        "timestamptz",
        (
            "'294276-12-31 23:59:59.999999+00'",
            "'4714-11-24 00:00:00+00 BC'",
            "'2024-02-29 23:59:59.999999+14'",
            "'1999-12-31 19:00:00-05'",
        ),
        tz_parts("c_tstz"),
        stamp_n(6),
        ZTS,
    ),
    (
        "c_tstz0",
        "timestamptz(0)",
        (
            "'294276-12-31 23:59:59+00'",
            "'4714-11-24 00:00:00+00 BC'",
            "'infinity'",
            "'2000-01-01 00:00:00.4+00'",
        ),
        f"CASE WHEN isfinite(c_tstz0) THEN {tz_parts('c_tstz0')} END",
        lambda v: "infinity" if v is None else stamp_n(0)(v),  # (row 5's NULL: see below)
        ZTS,
    ),
    (
        "c_tstz3",
        "timestamptz(3)",
        (
            "'-infinity'",
            "'294276-12-31 23:59:59.999+00'",
            "'1970-01-01 00:00:00+00'",
            "'0044-03-15 12:00:00.5+01 BC'",
        ),
        f"CASE WHEN isfinite(c_tstz3) THEN {tz_parts('c_tstz3')} END",
        lambda v: "-infinity" if v is None else stamp_n(3)(v),
        ZTS,
    ),
    (
        "c_interval",
        "interval",
        ("'178000000 years'", "'-178000000 years'", "'1 day -1 microsecond'", "'-2147483648 days'"),
        INTERVAL_PARTS,
        saturated(interval),
        "io.debezium.time.MicroDuration",
    ),
    (
        "c_uuid",
        "uuid",
        (
            "'00000000-0000-0000-0000-000000000000'",
            "'{FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF}'",
            "'a0eebc999c0b4ef8bb6d6bb9bd380a11'",
            "gen_random_uuid()",
        ),
        "c_uuid::text",
        same,
        "io.debezium.data.Uuid",
    ),
    (
        "c_json",
        "json",
        ("'\"\\u0000\"'", '\'{"a":1,"a":2}\'', "' [ ] '", "'null'"),
        "c_json::text",
        same,
        "io.debezium.data.Json",
    ),
    (
        "c_jsonb",
        "jsonb",
        (
            "(repeat('[', 100) || repeat(']', 100))::jsonb",
            '\'{"b":1,"a":2}\'',
            "'\"\\ud83c\\udf89\"'",
            "'null'",
        ),
        "c_jsonb::text",
        same,
        "io.debezium.data.Json",
    ),
    (
        "c_xml",
        "xml",
        ("'<a b=\"&amp;\"/>'", "''", "'text only'", "'<ü>日本</ü>'"),
        "c_xml::text",
        same,
        "io.debezium.data.Xml",
    ),
    (
        "c_inet",
        "inet",
        ("'::ffff:1.2.3.4'", "'255.255.255.255/32'", "'::/0'", "'10.0.0.1/8'"),
        inet_text("c_inet"),
        same,
        None,
    ),
    (
        "c_cidr",
        "cidr",
        ("'0.0.0.0/0'", "'255.255.255.255/32'", "'::/0'", "'ffff::/16'"),
        "c_cidr::text",
        same,
        None,
    ),
    (
        "c_mac",
        "macaddr",
        ("'ff:ff:ff:ff:ff:ff'", "'00-00-00-00-00-00'", "'0800.2b01.0203'", "'08002b010203'"),
        "c_mac::text",
        same,
        None,
    ),
    (
        "c_mac8",
        "macaddr8",
        (
            "'ff:ff:ff:ff:ff:ff:ff:ff'",
            "'00:00:00:00:00:00'",
            "'0800.2b01.0203.0405'",
            "'08002b0102030405'",
        ),
        "c_mac8::text",
        same,
        None,
    ),
    ("c_bit1", "bit(1)", ("B'0'", "B'1'", "B'0'", "B'1'"), "c_bit1 = B'1'", same, None),
    (
        "c_bit",
        "bit(12)",
        ("B'111111111111'", "B'000000000000'", "B'100000000000'", "B'000000000001'"),
        bit_list("c_bit"),
        bits_le,
        "io.debezium.data.Bits",
    ),
    (
        "c_varbit",
        "varbit(20)",
        ("B''", "B'11111111111111111111'", "B'0'", "B'1'"),
        bit_list("c_varbit"),
        bits_le,
        "io.debezium.data.Bits",
    ),
    # an empty varbit(1) has no bit: false (Debezium's converter would fail on it)
    ("c_varbit1", "varbit(1)", ("B'0'", "B'1'", "B''", "B'1'"), "c_varbit1 = B'1'", same, None),
    (
        "c_varbit_u",
        "varbit",
        ("B''", "repeat('1', 1000)::varbit", "B'0'", "repeat('01', 500)::varbit"),
        bit_list("c_varbit_u"),
        bits_le,
        "io.debezium.data.Bits",
    ),
    (
        "c_point",
        "point",
        ("'(Infinity,-Infinity)'", "'(1e308,-1e-308)'", "'(0,-0)'", "'(1.5,2.5)'"),
        "CASE WHEN c_point IS NOT NULL THEN ARRAY[c_point[0], c_point[1]] END",
        wkb_point,
        "io.debezium.data.geometry.Point",
    ),
    (
        "c_odd",
        "odd",
        ("$$a,b$$", '$$q"uote$$', "$$back\\slash$$", "$${x}$$"),
        "c_odd::text",
        same,
        "io.debezium.data.Enum",
    ),
    ("c_amount", "amount", ("-9999999.99", "9999999.99", "0", "0.005"), None, same, DEC),
    ("c_short", "short_text", ("'üüüüü'", "''", "' '", "'a'"), None, same, None),
    (
        "c_int_arr",
        "int[]",
        ("'{NULL,NULL}'", "'{}'", "'{{1,2},{3,NULL}}'", "'[5:6]={-2147483648,2147483647}'"),
        None,
        flat,
        None,
    ),
    (
        "c_text_arr",
        "text[]",
        (
            "'{NULL}'",
            "ARRAY['', 'NULL', '\"', E'\\\\', ',', '{', '}', ' sp ', 'ü']",
            "'{}'",
            "'{{a,b},{c,NULL}}'",
        ),
        None,
        flat,
        None,
    ),
    (
        "c_num_arr",
        "numeric(6,2)[]",
        ("'{NaN,NULL,-9999.99}'", "'{}'", "'{0}'", "'{NULL}'"),
        None,
        each(finite_decimal),
        None,
    ),
    (
        "c_tstz_arr",
        "timestamptz[]",
        (
            "'{infinity,-infinity,NULL}'",
            "'{}'",
            "'{\"1970-01-01 00:00:00.000001+00\"}'",
            "'{\"2024-01-01 00:00:00+14\"}'",
        ),
        elements("c_tstz_arr", TSTZ_TEXT),
        same,
        None,
    ),
    (
        "c_date_arr",
        "date[]",
        ("'{infinity,-infinity,NULL}'", "'{}'", "'{1970-01-01}'", "'{4714-11-24 BC}'"),
        elements("c_date_arr", date_days("x")),
        same,
        None,
    ),
    (
        "c_bytea_arr",
        "bytea[]",
        ("ARRAY['\\x'::bytea, NULL]", "'{}'", f"ARRAY[{ALL_BYTES}]", "'{NULL}'"),
        None,
        same,
        None,
    ),
    (
        "c_odd_arr",
        "odd[]",
        (
            'ARRAY[$$a,b$$, $$q"uote$$]::odd[]',
            "'{}'",
            "ARRAY[$${x}$$, $$ü$$]::odd[]",
            "ARRAY[$$sp ace$$, $$back\\slash$$]::odd[]",
        ),
        "c_odd_arr::text[]",
        same,
        None,
    ),
    (
        "c_hstore",
        "hstore",
        ('\'""=>""\'', "'\"k\"=>NULL'", '$$"a\\"b"=>"c\\\\d", "ü"=>"=>"$$', "''"),
        "hstore_to_json(c_hstore)::text",
        json_value,
        "io.debezium.data.Json",
    ),
    (
        "c_ltree",
        "ltree",
        ("''", "'A_1.b_2'", "repeat('a', 255)::ltree", "'x'"),
        "c_ltree::text",
        same,
        "io.debezium.data.Ltree",
    ),
    ("c_citext", "citext", ("'ÄÖ'", "''", "'NULL'", "' '"), "c_citext::text", same, None),
    (
        "c_tsvector",
        "tsvector",
        ("$$'a':1A 'b':2B,3C$$", "''", "$$'\\'q'$$", "$$'ü'$$"),
        "c_tsvector::text",
        same,
        "io.debezium.data.TsVector",
    ),
    (
        "c_range",
        "int4range",
        ("'empty'", "'(,)'", "'[-2147483648,2147483647)'", "'[1,1]'"),
        "c_range::text",
        same,
        None,
    ),
]
ROWS = 4


def create_table(c: psycopg.Connection[Any]) -> None:
    c.execute(SETUP)
    cols = ", ".join(f"{name} {sqltype}" for name, sqltype, *_ in COLUMNS)
    c.execute(f"CREATE TABLE edges (id int PRIMARY KEY, {cols})")
    # out of line, uncompressed: an update that leaves the 1 MB value alone does not send it
    c.execute("ALTER TABLE edges ALTER c_bytea SET STORAGE EXTERNAL")


def insert_rows(c: psycopg.Connection[Any]) -> None:
    names = ", ".join(name for name, *_ in COLUMNS)
    for row in range(ROWS):
        values = ", ".join(col[2][row] for col in COLUMNS)
        c.execute(f"INSERT INTO edges (id, {names}) VALUES ({row + 1}, {values})")
    c.execute("INSERT INTO edges (id) VALUES (5)")  # every column NULL


def expected_rows(c: psycopg.Connection[Any]) -> dict[int, dict[str, Any]]:
    exprs = ", ".join(expr or name for name, _, _, expr, _, _ in COLUMNS)
    rows = c.execute(f"SELECT id, {exprs} FROM edges ORDER BY id").fetchall()
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        out[row[0]] = {col[0]: col[4](v) for col, v in zip(COLUMNS, row[1:], strict=True)}
    # the two columns whose infinities the expectation above fills in are NULL in row 5
    out[5]["c_tstz0"] = out[5]["c_tstz3"] = None
    return out


def config(tmp_path: Path, dsn: str, tables: list[str], name: str = "edges") -> Path:
    slot = "s_" + dsn.rsplit("dbname=", 1)[1]
    listed = "".join(f"\n        - {json.dumps(t)}" for t in tables)
    return write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: {name}
    source:
      type: postgres
      dsn: "{dsn}"
      slot: {slot}
      tables:{listed}
    sink:
      type: log
      path: {tmp_path / "log"}
""",
    )


def decoded(name: str, v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, dict) and "scale" in v and "value" in v:  # VariableScaleDecimal
        unscaled = int.from_bytes(v["value"], "big", signed=True)
        return Decimal(unscaled).scaleb(-v["scale"], context=WIDE)
    if name == "c_hstore":
        return json.loads(v)
    return v


def value_schema(log: Path, topic: str) -> dict[str, Any]:
    from cdc.sinks.log import LogReader

    reader = LogReader(log)
    first = next(iter(reader.records(0, topic)))
    schema: dict[str, Any] = reader.schemas.get(int.from_bytes((first.value or b"")[1:5], "big"))
    return schema


PHASES = ["stream", "snapshot"]


@pytest.mark.parametrize("phase", PHASES)
def test_extreme_values_decode_to_what_select_returns(
    tmp_path: Path, pg_db: str, daemon: Any, phase: str
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        create_table(c)
        if phase == "snapshot":
            insert_rows(c)
    d = daemon(config(tmp_path, pg_db, ["public.edges"])).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        if phase == "stream":
            insert_rows(c)
        want = expected_rows(c)
        c.execute("UPDATE edges SET c_int2 = 7 WHERE id = 3")  # the row of the 1 MB bytea
    log = tmp_path / "log"
    wait_until(lambda: len(row_events(read_log(log))) >= ROWS + 2, 60, "6 row events")
    assert d.terminate() == 0, d.output()
    rows = row_events(read_log(log))
    assert [r["value"]["op"] for r in rows] == ["r" if phase == "snapshot" else "c"] * (
        ROWS + 1
    ) + ["u"]
    update = rows.pop()["value"]["after"]
    assert (update["id"], update["c_int2"]) == (3, 7)
    assert update["c_bytea"] == b"__debezium_unavailable_value"  # Debezium's placeholder

    problems = []
    for r in rows:
        after = r["value"]["after"]
        rid = after["id"]
        for name, *_ in COLUMNS:
            got, exp = decoded(name, after[name]), want[rid][name]
            if not same_value(got, exp) and not (_nan(got) and _nan(exp)):
                problems.append(f"row {rid} {name}: log {got!r:.200} != select {exp!r:.200}")
    assert not problems, "\n".join(problems)

    schema = value_schema(log, "edges.public.edges")
    fields = {f["name"]: f["type"] for f in schema["fields"][0]["type"][1]["fields"]}
    wrong = {}
    for name, _, _, _, _, cname in COLUMNS:
        t = fields[name][1]  # every column but the key is nullable: ["null", type]
        got = t.get("connect.name") if isinstance(t, dict) else (t if "." in t else None)
        if got != cname:
            wrong[name] = got
    assert not wrong, wrong
    # Debezium's Postgres Enum: the labels joined by commas as they are; enum array elements
    # required (issue 13.8), other arrays' elements nullable
    enum = fields["c_odd"][1]
    assert enum["connect.parameters"] == {"allowed": ",".join(LABELS)}
    assert fields["c_odd_arr"][1]["items"] == enum
    assert isinstance(fields["c_int_arr"][1]["items"], list)


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


# --- odd names (issue 13.10, issue 14.13) ---------------------------------------------------------

ODD_TABLES = [
    # (as created, as written in source.tables, (schema, table) as Postgres names them)
    ('"my.schema"."my.table"', '"my.schema"."my.table"', ("my.schema", "my.table")),
    ('"my.schema".t', '"my.schema".t', ("my.schema", "t")),
    ('public."q""uote"', 'public."q""uote"', ("public", 'q"uote')),
    ('public."Spaced Table"', "public.Spaced Table", ("public", "Spaced Table")),
    ('public."ü-日本$1"', "ü-日本$1", ("public", "ü-日本$1")),
    ('"Sch""ema"."dot.and""quote"', '"Sch""ema"."dot.and""quote"', ('Sch"ema', 'dot.and"quote')),
]
ODD_COLUMNS = '"the id" int PRIMARY KEY, "a.b" text, "q""c" int, "sp ace" date'


@pytest.mark.parametrize("phase", PHASES)
def test_tables_with_odd_names_are_captured(
    tmp_path: Path, pg_db: str, daemon: Any, phase: str
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute('CREATE SCHEMA "my.schema"; CREATE SCHEMA "Sch""ema"')
        for created, _, _ in ODD_TABLES:
            c.execute(f"CREATE TABLE {created} ({ODD_COLUMNS})")
            if phase == "snapshot":
                c.execute(f"INSERT INTO {created} VALUES (1, 'x.y', 7, '2024-01-01')")
    cfg = config(tmp_path, pg_db, [w for _, w, _ in ODD_TABLES], name="odd")
    # `cdc validate` and `cdc check` find every table (check reads the same names the source does)
    for command in ("validate", "check"):
        out = subprocess.run(
            [sys.executable, "-m", "cdc", command, "-c", str(cfg)],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        said = out.stdout + out.stderr
        assert "invalid table name" not in said and "does not exist" not in said, said
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        for created, _, _ in ODD_TABLES:
            if phase == "stream":
                c.execute(f"INSERT INTO {created} VALUES (1, 'x.y', 7, '2024-01-01')")
            c.execute(f'UPDATE {created} SET "q""c" = 8')
            c.execute(f"DELETE FROM {created}")
    log = tmp_path / "log"
    n = 3 * len(ODD_TABLES)
    wait_until(lambda: len(row_events(read_log(log))) >= n, 60, f"{n} row events")
    assert d.terminate() == 0, d.output()
    rows = row_events(read_log(log))
    first_op = "r" if phase == "snapshot" else "c"
    for _, _, (schema, table) in ODD_TABLES:
        mine = [
            r
            for r in rows
            if (r["value"]["source"]["schema"], r["value"]["source"]["table"]) == (schema, table)
        ]
        assert [r["value"]["op"] for r in mine] == [first_op, "u", "d"], (schema, table)
        # fields in column order (their Avro names are the sanitiser's business)
        after = list(mine[0]["value"]["after"].values())
        assert after == [1, "x.y", 7, 19723], (schema, table)
        assert list(mine[1]["value"]["after"].values())[2] == 8
        assert next(iter(mine[2]["value"]["before"].values())) == 1
        assert list(mine[2]["key"].values()) == [1]


# --- delete before-images under REPLICA IDENTITY DEFAULT ------------------------------------------


def test_delete_before_image_holds_debeziums_neutral_values(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    cols = {
        "j": ("json", "'{\"a\":1}'", ""),
        "jb": ("jsonb", "'[1]'", ""),
        "u": ("uuid", "gen_random_uuid()", ""),
        "tz": ("timestamptz", "now()", "1970-01-01T00:00:00Z"),
        "tz3": ("timestamptz(3)", "now()", "1970-01-01T00:00:00Z"),
        "tz0": ("timestamptz(0)", "now()", "1970-01-01T00:00:00Z"),
        "p": (
            "point",
            "'(1,2)'",
            {"x": 0.0, "y": 0.0, "wkb": b"\x01" + struct.pack("<Idd", 1, 0.0, 0.0), "srid": None},
        ),
        "ttz": ("timetz", "'12:00+02'", "00:00:00Z"),
        "n": ("numeric(5,2)", "1.5", Decimal("0.00")),
        "nv": ("numeric", "1.5", Decimal(0)),
        "m": ("money", "1", Decimal("0.00")),
        "e": ("odd", "$$a,b$$", ""),
        "ea": ("odd[]", "ARRAY[$$ü$$]::odd[]", []),
        "ia": ("int[]", "'{1}'", []),
        "t": ("text", "'x'", ""),
        "b": ("bytea", "'\\x01'", b""),
        "d": ("date", "'2024-01-01'", 0),
        "ts": ("timestamp", "'2024-01-01'", 0),
        "iv": ("interval", "'1 day'", 0),
        "h": ("hstore", "'a=>b'", {}),
        "bo": ("boolean", "true", False),
        "bits": ("bit(3)", "B'101'", b""),
    }
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(SETUP)
        defs = ", ".join(f"{k} {t} NOT NULL" for k, (t, _, _) in cols.items())
        c.execute(f"CREATE TABLE t (id int PRIMARY KEY, {defs})")
    d = daemon(config(tmp_path, pg_db, ["t"])).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        names = ", ".join(cols)
        c.execute(
            f"INSERT INTO t (id, {names}) VALUES (1, {', '.join(v for _, v, _ in cols.values())})"
        )
        c.execute("DELETE FROM t")
    log = tmp_path / "log"
    wait_until(lambda: len(row_events(read_log(log))) >= 2, 60, "2 row events")
    assert d.terminate() == 0, d.output()
    before = row_events(read_log(log))[1]["value"]["before"]
    got = {k: decoded(k, v) for k, v in before.items()}
    got["h"] = json.loads(before["h"])
    assert got == {"id": 1, **{k: want for k, (_, _, want) in cols.items()}}


# --- values that cannot be written stop the pipeline, located -------------------------------------

ERROR_CASES = {
    # what: (column type, the value, the message's column part)
    "nan_not_null": ("numeric(5,2) NOT NULL", "'NaN'", "public.t.v (numeric(5,2))"),
    "enum_null_element": ("odd[]", "ARRAY[$$ü$$, NULL]::odd[]", "public.t.v (odd[])"),
}


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_a_value_that_cannot_be_written_stops_the_pipeline_located(
    tmp_path: Path, pg_db: str, daemon: Any, phase: str, case: str
) -> None:
    sqltype, value, where = ERROR_CASES[case]
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(SETUP)
        c.execute(f"CREATE TABLE t (id int PRIMARY KEY, v {sqltype})")
        if phase == "snapshot":
            c.execute(f"INSERT INTO t VALUES (1, {value})")
    d = daemon(config(tmp_path, pg_db, ["public.t"], name="bad")).start()
    if phase == "stream":
        wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
        with psycopg.connect(pg_db, autocommit=True) as c:
            c.execute(f"INSERT INTO t VALUES (1, {value})")
    assert d.proc is not None
    rc = wait_until(
        lambda: d.proc.poll() is not None and [d.proc.returncode], 60, "the daemon to exit"
    )
    out = d.output()
    assert rc == [1], out  # a pipeline stopped on a fatal error
    assert "failed (attempt" not in out and "restarting in" not in out, out  # no restart loop
    assert "cannot convert value" in out and where in out, out
    if phase == "snapshot":
        assert "in the snapshot of public.t (row id='1')" in out, out
    else:
        assert "in the change at LSN " in out, out
    assert "The pipeline stopped" in out, out


def test_nan_in_a_not_null_column_after_drop_not_null_resumes_as_null(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    """The stop message's advice works: the same change, read again, is written as null."""
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v numeric(5,2) NOT NULL)")
    cfg = config(tmp_path, pg_db, ["public.t"], name="bad")
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO t VALUES (1, 2.5)")
        c.execute("INSERT INTO t VALUES (2, 'NaN')")
        c.execute("INSERT INTO t VALUES (3, 3.5)")
    assert d.proc is not None
    wait_until(lambda: d.proc.poll() is not None, 60, "the daemon to stop")
    assert "DROP NOT NULL" in d.output()
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("ALTER TABLE t ALTER COLUMN v DROP NOT NULL")
    d2 = daemon(cfg).start()
    log = tmp_path / "log"
    wait_until(lambda: len(row_events(read_log(log))) >= 3, 60, "3 row events")
    assert d2.terminate() == 0, d2.output()
    values = [
        (r["value"]["after"]["id"], r["value"]["after"]["v"]) for r in row_events(read_log(log))
    ]
    assert values == [(1, Decimal("2.50")), (2, None), (3, Decimal("3.50"))]


# --- database encodings ---------------------------------------------------------------------------


@pytest.fixture
def encoded_db(pg_server: Any) -> Any:
    """make(encoding) -> the DSN of a new database in that encoding; its slots dropped after."""
    names: list[str] = []

    def make(encoding: str) -> str:
        name = f"enc_{encoding.lower()}_{len(names)}_{id(names) % 100000}"
        names.append(name)
        pg_server.psql(
            f"CREATE DATABASE {name} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0"
        )
        return str(pg_server.dsn(name))

    yield make
    for name in names:
        pg_server.psql(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            f"WHERE database = '{name}' AND active_pid IS NOT NULL;"
            "SELECT pg_sleep(0.3);"
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE database = '{name}' AND NOT active;"
        )


@pytest.mark.parametrize("phase", PHASES)
def test_text_of_a_latin1_database_arrives_as_utf8(
    tmp_path: Path, encoded_db: Any, daemon: Any, phase: str
) -> None:
    """Before: the snapshot decoded LATIN1 right, the stream failed on it for ever."""
    dsn = encoded_db("LATIN1")
    text = "café ÿ ¤"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text, a varchar(5)[])")
        if phase == "snapshot":
            c.execute("INSERT INTO t VALUES (1, %s, ARRAY['é', NULL])", (text,))
    d = daemon(config(tmp_path, dsn, ["public.t"], name="latin")).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
    with psycopg.connect(dsn, autocommit=True) as c:
        if phase == "stream":
            c.execute("INSERT INTO t VALUES (1, %s, ARRAY['é', NULL])", (text,))
        c.execute("UPDATE t SET v = v || 'ü'")
    log = tmp_path / "log"
    wait_until(lambda: len(row_events(read_log(log))) >= 2, 60, "2 row events")
    assert d.terminate() == 0, d.output()
    rows = row_events(read_log(log))
    assert rows[0]["value"]["after"] == {"id": 1, "v": text, "a": ["é", None]}
    assert rows[1]["value"]["after"]["v"] == text + "ü"


@pytest.mark.parametrize("phase", PHASES)
def test_text_that_is_not_utf8_stops_the_pipeline(
    tmp_path: Path, encoded_db: Any, daemon: Any, phase: str
) -> None:
    dsn = encoded_db("SQL_ASCII")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        if phase == "snapshot":
            c.execute("INSERT INTO t VALUES (1, E'caf\\xe9')")
    d = daemon(config(tmp_path, dsn, ["public.t"], name="ascii")).start()
    if phase == "stream":
        wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("INSERT INTO t VALUES (1, E'caf\\xe9')")
    assert d.proc is not None
    wait_until(lambda: d.proc.poll() is not None, 60, "the daemon to exit")
    out = d.output()
    assert d.proc.returncode == 1, out
    assert "failed (attempt" not in out, out
    assert "not valid UTF-8" in out and "0xe9" in out, out
    if phase == "snapshot":
        assert "snapshot of public.t failed" in out, out
