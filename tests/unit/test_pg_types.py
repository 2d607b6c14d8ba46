from __future__ import annotations

from decimal import Decimal

from sources.postgres._lsn import format_lsn, parse_lsn
from sources.postgres._types import mapping_for


def conv(oid: int, text: str, typmod: int = -1) -> object:
    m = mapping_for(oid, typmod)
    return text if m.convert is None else m.convert(text)


def test_lsn_round_trip() -> None:
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert format_lsn(0x16B374D848) == "16/B374D848"


def test_text_conversions() -> None:
    assert conv(16, "t") is True and conv(16, "f") is False
    assert conv(21, "-32768") == -32768
    assert conv(20, "9223372036854775807") == 2**63 - 1
    assert conv(701, "NaN") != conv(701, "NaN")  # NaN
    assert conv(701, "-Infinity") == float("-inf")
    assert conv(17, "\\x00ff10") == b"\x00\xff\x10"
    assert conv(1082, "1970-01-02") == 1
    assert conv(1082, "1969-12-31") == -1
    assert conv(1114, "1970-01-01 00:00:01.5") == 1_500_000
    assert conv(1114, "1969-12-31 23:59:59.999999") == -1
    assert conv(1114, "2001-02-03 04:05:06.789", 3) == 981173106789
    assert conv(1184, "2024-05-06 05:08:09.123456+00") == "2024-05-06T05:08:09.123456Z"
    assert conv(1184, "2024-05-06 05:08:09+00") == "2024-05-06T05:08:09Z"
    assert conv(1083, "13:14:15.25") == (13 * 3600 + 14 * 60 + 15) * 1_000_000 + 250_000
    numeric_12_2 = ((12 << 16) | 2) + 4
    assert conv(1700, "12.5", numeric_12_2) == Decimal("12.50")
    assert conv(1700, "-0.001") == {"scale": 3, "value": b"\xff"}


def test_unknown_type_is_text() -> None:
    m = mapping_for(999999, -1, "geometry")
    assert m.avro == "string" and m.convert is None and m.name == "geometry"
