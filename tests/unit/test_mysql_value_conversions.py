"""MySQL type edges without a server: the binlog's temporal formats decoded from crafted bytes,
zero dates, enum label escaping, FLOAT(M,D), and the located error of a failing conversion."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cdc.sources.mysql._decoders import date_value, datetime2_value, datetime_value, time2_micros
from cdc.sources.mysql._schema import SchemaCache
from cdc.sources.mysql._types import ColumnType, from_catalog, mapping

# --- TIME2, as MySQL's my_time_packed_to_binary writes it ---------------------------------------


def _time2(micros: int, fsp: int) -> bytes:
    """The binary form of a TIME(fsp) of ``micros``, written the way the server writes it."""
    neg = micros < 0
    a = abs(micros)
    seconds, frac = divmod(a, 1_000_000)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    packed = (((h << 12) | (m << 6) | s) << 24) + frac
    packed = -packed if neg else packed
    intpart = packed >> 24  # arithmetic shift, as the server's MY_PACKED_TIME_GET_INT_PART
    fracpart = abs(packed) % (1 << 24) * (-1 if neg else 1)  # C's % keeps the sign
    if fsp >= 5:
        return (packed + 0x800000000000).to_bytes(6, "big")
    head = (intpart + 0x800000).to_bytes(3, "big")
    if fsp in (1, 2):
        return head + (int(fracpart / 10000) & 0xFF).to_bytes(1, "big")
    if fsp in (3, 4):
        return head + (int(fracpart / 100) & 0xFFFF).to_bytes(2, "big")
    return head


@pytest.mark.parametrize(
    ("text_micros", "fsp"),
    [
        (-(733 * 3600 * 1_000_000 + 1000), 3),  # issue 13.3: came out as -733:00:00.999
        (-1, 6),
        (-500_000, 1),
        (-1_010_000, 2),
        (-(12 * 3600 * 1_000_000 + 100), 4),
        (-(838 * 3600 + 59 * 60 + 58) * 1_000_000 - 999_999, 6),
        ((838 * 3600 + 59 * 60 + 59) * 1_000_000, 0),
        (-(838 * 3600 + 59 * 60 + 59) * 1_000_000, 0),
        (25 * 3600 * 1_000_000 + 1, 6),
        (0, 3),
        (-1_000_000, 3),  # negative, zero fraction: the integer part is not shifted
        (-10_000, 2),
        (-990_000, 2),
    ],
)
def test_time2_decodes_negative_fractions(text_micros: int, fsp: int) -> None:
    assert time2_micros(_time2(text_micros, fsp), fsp) == text_micros


def test_time2_matches_the_servers_own_sort_order_table() -> None:
    # the table in MySQL's my_time_packed_from_binary comment (TIME(2), disk -> value)
    cases = {
        b"\x80\x00\x00\x00": 0,
        b"\x7f\xff\xff\xff": -10_000,  # -00:00:00.01
        b"\x7f\xff\xff\x9d": -990_000,  # -00:00:00.99
        b"\x7f\xff\xff\x00": -1_000_000,  # -00:00:01.00
        b"\x7f\xff\xfe\xff": -1_010_000,  # -00:00:01.01
        b"\x7f\xff\xfe\xf6": -1_100_000,  # -00:00:01.10
    }
    for data, micros in cases.items():
        assert time2_micros(data, 2) == micros, data.hex()


# --- dates ----------------------------------------------------------------------------------------


def _date_int(y: int, m: int, d: int) -> int:
    return (y << 9) | (m << 5) | d


def test_dates_that_are_not_calendar_dates_come_out_as_the_servers_text() -> None:
    assert date_value(_date_int(2024, 2, 29)) == date(2024, 2, 29)
    assert date_value(0) == "0000-00-00"
    assert date_value(_date_int(2020, 0, 15)) == "2020-00-15"
    assert date_value(_date_int(2020, 2, 30)) == "2020-02-30"
    assert datetime_value(20240102030405) == datetime(2024, 1, 2, 3, 4, 5)
    assert datetime_value(0) == "0000-00-00 00:00:00"


def _datetime2(y: int, mo: int, d: int, h: int, mi: int, s: int, frac: bytes = b"") -> bytes:
    v = (1 << 39) | ((y * 13 + mo) << 22) | (d << 17) | (h << 12) | (mi << 6) | s
    return v.to_bytes(5, "big") + frac


def test_datetime2_with_zero_parts_keeps_its_fraction_in_the_text() -> None:
    assert datetime2_value(_datetime2(2024, 1, 2, 3, 4, 5, b"\x07\xa1\x20"), 6) == datetime(
        2024, 1, 2, 3, 4, 5, 500000
    )
    assert datetime2_value(_datetime2(0, 0, 0, 0, 0, 0), 0) == "0000-00-00 00:00:00"
    zero_in_part = datetime2_value(_datetime2(2020, 0, 15, 0, 0, 0, b"\x32"), 1)
    assert zero_in_part == "2020-00-15 00:00:00.500000"


def _version(t: ColumnType, optional: bool, adjust: bool = False) -> Any:
    cols = [("id", ColumnType("int"), False), ("v", t, optional)]
    return SchemaCache("p", adjust_years=adjust).version("db", "t", cols, (0,))


@pytest.mark.parametrize(
    ("t", "zero", "epoch"),
    [
        (ColumnType("date"), "0000-00-00", 0),
        (ColumnType("datetime"), "0000-00-00 00:00:00", 0),
        (ColumnType("datetime", fsp=6), "2020-00-15 00:00:00.500000", 0),
        (ColumnType("timestamp", fsp=3), "0000-00-00 00:00:00.000", "1970-01-01T00:00:00Z"),
    ],
)
def test_zero_dates_are_null_or_the_epoch_when_not_null(
    t: ColumnType, zero: str, epoch: Any
) -> None:
    for binlog in (True, False):
        nullable = _version(t, True)
        required = _version(t, False)
        conv = (nullable.from_binlog if binlog else nullable.from_select)[1]
        assert conv(zero) is None
        conv = (required.from_binlog if binlog else required.from_select)[1]
        assert conv(zero) == epoch
    # the binlog's TIMESTAMP zero is the epoch second 0, which the type cannot otherwise hold
    if t.kind == "timestamp":
        assert _version(t, True).from_binlog[1](datetime(1970, 1, 1)) is None
        assert _version(t, False).from_binlog[1](datetime(1970, 1, 1)) == epoch


def test_year_zero_streams_as_zero() -> None:
    conv = mapping(ColumnType("year")).from_binlog
    assert conv is not None and conv(1900) == 0 and conv(2024) == 2024


def test_empty_binary_from_the_binlog_is_padded_bytes() -> None:
    conv = mapping(ColumnType("binary", length=16)).from_binlog
    assert conv is not None
    assert conv("") == bytes(16)  # the library gives an all-zero value as the empty str
    assert conv(b"\x01") == b"\x01" + bytes(15)


def test_two_digit_era_years_kept_unless_the_time_adjuster_is_on() -> None:
    d = date(18, 5, 1)
    assert _version(ColumnType("date"), True).from_select[1](d) == (d - date(1970, 1, 1)).days
    adjusted = _version(ColumnType("date"), True, adjust=True).from_select[1]
    assert adjusted(d) == (date(2018, 5, 1) - date(1970, 1, 1)).days
    assert adjusted(date(78, 1, 1)) == (date(1978, 1, 1) - date(1970, 1, 1)).days
    assert adjusted(date(1999, 1, 1)) == (date(1999, 1, 1) - date(1970, 1, 1)).days
    dt = _version(ColumnType("datetime"), True, adjust=True).from_binlog[1]
    assert dt(datetime(69, 12, 31, 23, 59, 59)) == int(
        (datetime(2069, 12, 31, 23, 59, 59) - datetime(1970, 1, 1)).total_seconds() * 1000
    )
    assert dt("0000-00-00 00:00:00") is None


# --- FLOAT(M,D), enum labels ------------------------------------------------------------------


def test_float_with_a_scale_is_a_double_rounded_to_its_scale() -> None:
    t = from_catalog("float", "float(7,2)", 7, 2, None, None)
    m = mapping(t)
    assert m.avro == "double" and m.name == "float(7,2)"
    assert m.from_binlog is not None and m.from_binlog(1.100000023841858) == 1.1
    assert mapping(from_catalog("float", "float", 12, None, None, None)).avro == "float"
    assert mapping(from_catalog("float", "float(7,0)", 7, 0, None, None)).avro == "double"


def test_enum_labels_are_unescaped_from_the_catalog_and_escaped_in_allowed() -> None:
    # COLUMN_TYPE as both servers print it
    t = from_catalog(
        "enum", "enum('a,b','it''s','back\\\\slash','nl\\nx','dq\"','')", None, None, None, None
    )
    assert t.values == ("a,b", "it's", "back\\slash", "nl\nx", 'dq"', "")
    allowed = mapping(t).avro["connect.parameters"]["allowed"]
    assert allowed == "a\\,b,it's,back\\\\slash,nl\nx,dq\","
    s = from_catalog("set", "set('x''y','z\\\\w')", None, None, None, None)
    assert mapping(s).avro["connect.parameters"]["allowed"] == "x'y,z\\\\w"


# --- conversion errors ------------------------------------------------------------------------


def test_a_failing_conversion_names_table_column_type_value_and_place() -> None:
    v = _version(ColumnType("date"), True)
    text = v.conversion_failure([1, timedelta(days=3)], True, "the binlog event at bin.000003:4711")
    for part in (
        "db.t.v",
        "(date)",
        "datetime.timedelta(days=3)",
        "bin.000003:4711",
        "AttributeError",
    ):
        assert part in text, text
    # a row no converter fails on still gives a located message
    text = v.conversion_failure([1, date(2024, 1, 1)], False, "the snapshot (row with key [1])")
    assert "db.t" in text and "the snapshot" in text


def test_charsets_without_a_python_codec_are_known() -> None:
    from cdc.sources.mysql._types import undecodable_charset

    assert undecodable_charset("swe7") and undecodable_charset("keybcs2")
    assert not undecodable_charset("utf8mb4") and not undecodable_charset("latin1")
    assert not undecodable_charset("ucs2") and not undecodable_charset("gbk")
    assert not undecodable_charset("utf16") and not undecodable_charset("utf32")


def test_the_widest_decimal_converts() -> None:
    conv = mapping(ColumnType("decimal", precision=65, scale=30)).from_select
    assert conv is not None
    wide = Decimal("-" + "9" * 35 + "." + "9" * 30)
    assert conv(wide) == wide


def test_latin1_decodes_as_mysql_does_and_known_codecs_are_named() -> None:
    from cdc.sources.mysql._decoders import encoding

    # the binlog library names latin1 by pymysql's codec for it, cp1252
    for name in ("latin1", "cp1252"):
        codec = encoding(name)
        assert codec is not None
        assert bytes([0x61, 0x80, 0x81, 0x8D, 0x8F, 0x90, 0x9D, 0xE9]).decode(codec) == (
            "a€\x81\x8d\x8f\x90\x9dé"
        )
    assert encoding("utf16") == "utf-16-be" and encoding("utf32") == "utf-32-be"
    assert encoding("swe7") is None
