"""Edge values of the Postgres type mapping, the names ``source.tables`` accepts, and the
conversion errors that stop a pipeline (issue 13 items 4, 8, 10 and issue 14 item 13).

Debezium's values are quoted from its PostgreSQL connector (PostgresValueConverter, its
JdbcValueConverters fallbacks and its tests); TYPES.md says where each comes from.
"""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from cdc.daemon import is_fatal
from cdc.model import Column, TableSchema
from cdc.sources.postgres import _tuples
from cdc.sources.postgres._relations import Relation, snapshot_row
from cdc.sources.postgres._source import PostgresSource
from cdc.sources.postgres._tuples import ValueConversionError
from cdc.sources.postgres._types import Mapping, TypeInfo, mapping_for
from cdc.sources.postgres.config import PostgresSourceConfig, parse_table
from tests.unit.test_pg_tuples import check, specialised_makers, tuple_data

NUMERIC_5_2 = ((5 << 16) | 2) + 4


def conv(oid: int, text: str, typmod: int = -1) -> Any:
    m = mapping_for(oid, typmod)
    return text if m.convert is None else m.convert(text)


# --- infinities (issue 13.4) ----------------------------------------------------------------------


def test_timestamp_infinities_are_debeziums() -> None:
    # PGStatement.DATE_POSITIVE_INFINITY / DATE_NEGATIVE_INFINITY, the values Debezium's
    # AbstractRecordsProducerTest asserts for ts_pinf / ts_ninf (MicroTimestamp)
    assert conv(1114, "infinity") == 9223372036825200000
    assert conv(1114, "-infinity") == -9223372036832400000
    # timestamp(0..3) is io.debezium.time.Timestamp: the same instant in milliseconds
    for typmod in (0, 1, 3):
        assert conv(1114, "infinity", typmod) == 9223372036825200
        assert conv(1114, "-infinity", typmod) == -9223372036832400
    for typmod in (4, 6, -1):
        assert conv(1114, "infinity", typmod) == 9223372036825200000


def test_timestamp_extremes() -> None:
    # the values Debezium's tests assert for ts_max / ts_min
    assert conv(1114, "294247-01-01 23:59:59.999999") == 9223371331200000000 - 1
    assert conv(1114, "4713-12-31 23:59:59.999999 BC") == -210831897600000001
    # past the int64 range (Postgres goes to 294276 AD): saturated short of int64's limits
    assert conv(1114, "294276-12-31 23:59:59.999999") == 2**63 - 2
    assert conv(1114, "4714-11-24 00:00:00 BC") == -210866803200000000
    # milliseconds never saturate
    assert conv(1114, "294276-12-31 23:59:59.999", 3) == 9224318015999999
    assert conv(1114, "1969-12-31 23:59:59.9995", 3) == -1  # floor, as Instant.toEpochMilli


def test_timestamptz_and_date_sentinels() -> None:
    for typmod in (-1, 0, 3, 6):
        assert conv(1184, "infinity", typmod) == "infinity"
        assert conv(1184, "-infinity", typmod) == "-infinity"
    assert conv(1184, "294247-01-01 23:59:59.999999+00") == "+294247-01-01T23:59:59.999999Z"
    assert conv(1184, "4714-12-31 23:59:59.999999+00 BC") == "-4713-12-31T23:59:59.999999Z"
    # Debezium: -5877611-06-21 for infinity (sic) and -5877611-06-22 for -infinity, as days
    assert conv(1082, "infinity") == -2147472692
    assert conv(1082, "-infinity") == -2147472691
    assert conv(1082, "5874897-12-31") == 2145042905  # the server: date - 1970-01-01
    assert conv(1082, "4714-11-24 BC") == -2440588


def test_sentinels_inside_arrays() -> None:
    m = mapping_for(
        1115, -1, None, _resolver({1115: TypeInfo(1115, "timestamp[]", "b", "A", 1114, 0, -1)})
    )
    assert m.convert is not None
    assert m.convert("{infinity,-infinity,NULL}") == [
        9223372036825200000,
        -9223372036832400000,
        None,
    ]
    m = mapping_for(
        1182, -1, None, _resolver({1182: TypeInfo(1182, "date[]", "b", "A", 1082, 0, -1)})
    )
    assert m.convert is not None
    assert m.convert("{infinity,-infinity}") == [-2147472692, -2147472691]


def test_float_and_numeric_specials() -> None:
    import math

    assert math.isnan(conv(700, "NaN")) and conv(700, "Infinity") == math.inf
    assert conv(701, "-Infinity") == -math.inf and str(conv(701, "-0")) == "-0.0"
    assert conv(701, "4.94065645841247e-324") == 5e-324
    # numeric NaN / ±Infinity: no Decimal can carry them: null in a nullable column
    for text in ("NaN", "Infinity", "-Infinity"):
        assert conv(1700, text) is None
        assert conv(1700, text, NUMERIC_5_2) is None


# --- enum arrays (issue 13.8) ---------------------------------------------------------------------


def _resolver(types: dict[int, TypeInfo]) -> Any:
    return types.get


ODD_LABELS = ("a,b", 'q"uote', "sp ace", "back\\slash", "ü", "{x}")
ENUM = TypeInfo(500, "odd", "e", "E", 0, 0, -1, ODD_LABELS)
ENUM_ARRAY = TypeInfo(501, "odd[]", "b", "A", 500, 0, -1)
DOMAIN = TypeInfo(502, "posint", "d", "N", 0, 23, -1)
DOMAIN_ARRAY = TypeInfo(503, "posint[]", "b", "A", 502, 0, -1)
RESOLVE = _resolver({t.oid: t for t in (ENUM, ENUM_ARRAY, DOMAIN, DOMAIN_ARRAY)})


def test_enum_array_elements_are_required() -> None:
    m = mapping_for(501, -1, None, RESOLVE)
    enum = {
        "type": "string",
        "connect.version": 1,
        "connect.name": "io.debezium.data.Enum",
        # Debezium's Postgres connector joins the labels as they are (no escaping)
        "connect.parameters": {"allowed": 'a,b,q"uote,sp ace,back\\slash,ü,{x}'},
    }
    assert m.avro == {"type": "array", "items": enum}
    assert mapping_for(500, -1, None, RESOLVE).avro == enum
    assert m.convert is not None
    assert m.convert('{"a,b","q\\"uote","sp ace","back\\\\slash",ü,"{x}"}') == list(ODD_LABELS)
    assert m.convert("{}") == []
    with pytest.raises(ValueError, match="NULL element in an enum array"):
        m.convert("{ü,NULL}")
    # other arrays keep nullable elements, as Debezium's
    other = mapping_for(503, -1, None, RESOLVE)
    assert other.avro == {"type": "array", "items": ["null", "int"]}
    assert other.convert is not None and other.convert("{1,NULL}") == [1, None]


def test_enum_array_null_element_stops_both_decoders_alike() -> None:
    m = mapping_for(501, -1, None, RESOLVE)
    for optional in (True, False):
        table = TableSchema(
            "p.public.t", "public", "t", (Column("e", m.avro, optional, m.name),), ()
        )
        assert check(table, [m], tuple_data(["{ü,NULL}"])) == "error"
        assert check(table, [m], tuple_data(['{"a,b"}'])) == "ok"
        for make in specialised_makers():
            with pytest.raises(ValueConversionError) as e:
                make(table, [m], True)(tuple_data(["{NULL}"]), 0)
            assert "column public.t.e (odd[])" in str(e.value)
            assert not e.value.retryable and is_fatal(e.value)


# --- neutral values of absent NOT NULL columns (delete before-images) -----------------------------


def test_neutral_values_are_debeziums_fallbacks() -> None:
    wkb00 = b"\x01" + struct.pack("<I", 1) + struct.pack("<dd", 0.0, 0.0)
    assert mapping_for(114, -1).fallback == ""  # json: convertString's ""
    assert mapping_for(3802, -1).fallback == ""  # jsonb
    assert mapping_for(2950, -1).fallback == ""  # uuid
    for typmod in (-1, 0, 3, 6):  # ZonedTimestamp of the epoch, ISO_OFFSET_DATE_TIME
        assert mapping_for(1184, typmod).fallback == "1970-01-01T00:00:00Z"
    assert mapping_for(600, -1).fallback == {"x": 0.0, "y": 0.0, "wkb": wkb00, "srid": None}
    assert mapping_for(1266, -1).fallback == "00:00:00Z"
    assert mapping_for(1700, NUMERIC_5_2).fallback == Decimal("0.00")
    assert mapping_for(1700, -1).fallback == {"scale": 0, "value": b"\x00"}
    assert mapping_for(500, -1, None, RESOLVE).fallback == ""
    assert mapping_for(501, -1, None, RESOLVE).fallback == []
    assert mapping_for(17, -1).fallback == b""
    assert mapping_for(790, -1).fallback == Decimal("0.00")


# --- conversion errors stop the pipeline, located ------------------------------------------------


def _table(m: Mapping, optional: bool, name: str = "c") -> TableSchema:
    return TableSchema(
        "p.public.t",
        "public",
        "t",
        (
            Column("id", "int", False, "integer", 0),
            Column(name, m.avro, optional, m.name, m.fallback),
        ),
        (0,),
    )


def test_nan_in_a_not_null_numeric_is_a_fatal_located_error() -> None:
    for typmod in (NUMERIC_5_2, -1):
        m = mapping_for(1700, typmod)
        ints = mapping_for(23, -1)
        required = _table(m, False)
        optional = _table(m, True)
        for text in ("NaN", "Infinity", "-Infinity"):
            buf = tuple_data(["1", text])
            assert check(optional, [ints, m], buf) == "ok"
            assert check(required, [ints, m], buf) == "error"
            with pytest.raises(ValueConversionError) as e:
                _tuples.generic_decoder(required, [ints, m], True)(buf, 0)
            msg = str(e.value)
            assert msg.startswith(f"cannot convert value {text!r} of column public.t.c ({m.name}):")
            assert "DROP NOT NULL" in msg
            assert is_fatal(e.value)


def test_any_converter_failure_is_a_located_error_not_a_traceback() -> None:
    # before: only ValueError and ArithmeticError were caught; an IndexError escaped as itself
    m = mapping_for(1114, -1)
    table = _table(m, True)
    ints = mapping_for(23, -1)
    for decode in (_tuples.generic_decoder, *specialised_makers()):
        with pytest.raises(ValueConversionError, match=r"column public\.t\.c \(timestamp\)"):
            decode(table, [ints, m], True)(tuple_data(["1", ""]), 0)


def test_snapshot_row_error_names_the_row() -> None:
    m = mapping_for(1700, NUMERIC_5_2)
    ints = mapping_for(23, -1)
    rel = Relation(1, _table(m, False, 'we"ird col'), [ints, m], ["id", 'we"ird col'], (0,))
    with pytest.raises(ValueConversionError) as e:
        snapshot_row(rel, ["7", "NaN"], True)
    msg = str(e.value)
    assert 'column public.t.we"ird col (numeric(5,2))' in msg
    assert "in the snapshot of public.t (row id='7')" in msg
    assert "The pipeline stopped" in msg and not e.value.retryable


def test_located_keeps_the_facts() -> None:
    e = ValueConversionError("cannot convert x", "public.t", "c", "numeric")
    loc = e.located("in the change at LSN 0/16B3748", "do this")
    assert (
        str(loc)
        == "cannot convert x; in the change at LSN 0/16B3748. The pipeline stopped: do this"
    )
    assert (loc.table, loc.column, loc.type_name, loc.retryable) == (
        "public.t",
        "c",
        "numeric",
        False,
    )


# --- table names (issue 13.10, issue 14.13) -------------------------------------------------------

NAMES = [
    ("t", ("public", "t")),
    ("public.t", ("public", "t")),
    ("MyTable", ("public", "MyTable")),  # as written, not folded
    ('"my.schema".t', ("my.schema", "t")),
    ('"public"."My.Table"', ("public", "My.Table")),  # Debezium's quoting of a dotted name
    ('public."q""uote"', ("public", 'q"uote')),
    ('"a""b"."c""""d"', ('a"b', 'c""d')),
    ("public.Spaced Table", ("public", "Spaced Table")),
    ('public." lead and trail "', ("public", " lead and trail ")),
    ("public.my-table$1", ("public", "my-table$1")),
    ("ü.日本", ("ü", "日本")),
    ('"sch ema"."."', ("sch ema", ".")),
]


@pytest.mark.parametrize(("written", "parsed"), NAMES)
def test_table_names_parse(written: str, parsed: tuple[str, str]) -> None:
    assert parse_table(written) == parsed
    cfg = PostgresSourceConfig(type="postgres", dsn="dbname=x", tables=[written])
    source = PostgresSource(cfg, "p", "p")
    assert source.tables == [parsed]
    source.close()


@pytest.mark.parametrize(
    "bad", ["a.b.c", '""', 'public."x', "s. t", " t", "public.", ".t", 'a"b', "x" * 64, "a\x00b"]
)
def test_bad_table_names_are_refused_with_the_way_to_write_them(bad: str) -> None:
    with pytest.raises(ValidationError) as e:
        PostgresSourceConfig(type="postgres", dsn="dbname=x", tables=[bad])
    msg = str(e.value)
    assert f"invalid table name {bad!r}" in msg


def test_a_table_listed_twice_in_two_spellings() -> None:
    with pytest.raises(ValidationError, match="listed twice"):
        PostgresSourceConfig(type="postgres", dsn="dbname=x", tables=["t", '"public"."t"'])
    PostgresSourceConfig(type="postgres", dsn="dbname=x", tables=['"my.schema".t', "my.schema"])


def test_sql_shown_to_the_operator_quotes_odd_names_only() -> None:
    from cdc.sources.postgres.config import sql_table

    assert sql_table("public", "audit") == "public.audit"
    assert sql_table("my.schema", 'q"uote') == '"my.schema"."q""uote"'
    assert sql_table("public", "Spaced Table") == 'public."Spaced Table"'
    assert parse_table(sql_table('Sch"ema', 'dot.and"quote')) == ('Sch"ema', 'dot.and"quote')
