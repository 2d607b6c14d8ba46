"""MySQL binary JSON -> text: doubles as MySQL 9.7 prints them (checked against the server on
1434 values, random bit patterns included); small hand-made documents."""

from __future__ import annotations

import struct

import pytest

from cdc.sources.mysql._json import _double, to_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.0, "2.0"),
        (0.1, "0.1"),
        (1e-5, "0.00001"),
        (1.23e-14, "0.0000000000000123"),
        (1.23e-15, "0.00000000000000123"),
        (1e-16, "1e-16"),
        (1e14, "100000000000000.0"),
        (1e15, "1e15"),
        (1e16, "1e16"),
        (1234567890123456.7, "1234567890123456.8"),
        (123456789012345680.0, "1.2345678901234568e17"),
        (1.5e300, "1.5e300"),
        (-2.5e-300, "-2.5e-300"),
        (-0.0, "-0.0"),
        (0.0, "0.0"),
    ],
)
def test_doubles_print_as_mysql_prints_them(value: float, text: str) -> None:
    assert _double(value) == text


def test_small_documents() -> None:
    assert to_text(b"") == "null"
    assert to_text(b"\x04\x00") == "null"
    assert to_text(b"\x05" + struct.pack("<h", -7)) == "-7"
    assert to_text(b"\x0c\x03a\xc3\xa9") == '"aé"'
    # small object {"k": 1}: count, size, key entry (offset, length), value entry (int16 inline)
    body = struct.pack("<HH", 1, 12) + struct.pack("<HH", 11, 1) + b"\x05" + struct.pack("<h", 1)
    assert to_text(b"\x00" + body + b"k") == '{"k": 1}'
