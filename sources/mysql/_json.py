"""MySQL's binary JSON (the binlog's form of a JSON column) -> the text MySQL itself prints.

python-mysql-replication decodes MySQL's binary JSON into Python values, and that loses what the
text form says: a JSON ``null`` document becomes SQL NULL, a date inside JSON becomes a datetime,
decimals and times change form, binary opaque values are mangled. So the source replaces that one
decoder (``install()``) with this one, which writes what ``SELECT json_column`` returns: the
snapshot and the stream then give the same string for the same document. MariaDB's JSON is text in
the binlog and never comes here.

Format: MySQL's sql-common/json_binary.h (type byte, then small/large objects and arrays with
offset tables, inlined small scalars, length-prefixed strings, "opaque" values of other SQL types).
"""

from __future__ import annotations

import base64
import json
import struct
from decimal import Decimal
from typing import Any

_SMALL_OBJECT, _LARGE_OBJECT, _SMALL_ARRAY, _LARGE_ARRAY = 0x0, 0x1, 0x2, 0x3
_LITERAL, _INT16, _UINT16, _INT32, _UINT32, _INT64, _UINT64 = 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xA
_DOUBLE, _STRING, _OPAQUE = 0xB, 0xC, 0xF

# SQL field types an opaque value can carry
_F_TIMESTAMP, _F_DATE, _F_TIME, _F_DATETIME = 7, 10, 11, 12
_F_TIMESTAMP2, _F_DATETIME2, _F_TIME2, _F_DECIMAL, _F_NEWDECIMAL = 17, 18, 19, 0, 246

_FMT = {_INT16: "<h", _UINT16: "<H", _INT32: "<i", _UINT32: "<I", _INT64: "<q", _UINT64: "<Q"}


def to_text(data: bytes) -> str:
    """The text form of one binary JSON document (an empty one is JSON null)."""
    if not data:
        return "null"
    return _value(data[0], data, 1)


def _varlen(data: bytes, pos: int) -> tuple[int, int]:
    """A variable-length unsigned integer (7 bits a byte) at ``pos``: (value, next position)."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _double(v: float) -> str:
    """A double as MySQL prints it in JSON: the shortest round-trip digits, in fixed notation
    for decimal exponents -14..15 (and whenever the digits reach past the point), else
    d.ddde<exp>; ".0" added when fixed notation shows no point. Verified against MySQL 9.7."""
    if v == 0:
        return "-0.0" if str(v).startswith("-") else "0.0"
    sign = "-" if v < 0 else ""
    t = Decimal(repr(abs(v))).as_tuple()
    digits = "".join(map(str, t.digits)).rstrip("0")
    decpt = len(t.digits) + int(t.exponent)  # value = 0.<digits> * 10**decpt
    n = len(digits)
    if -14 <= decpt <= 15 or n > decpt > 0:
        if decpt <= 0:
            return f"{sign}0.{'0' * -decpt}{digits}"
        if decpt < n:
            return f"{sign}{digits[:decpt]}.{digits[decpt:]}"
        return f"{sign}{digits}{'0' * (decpt - n)}.0"
    mantissa = digits[0] + (f".{digits[1:]}" if n > 1 else "")
    return f"{sign}{mantissa}e{decpt - 1}"


def _value(kind: int, data: bytes, pos: int) -> str:
    if kind in (_SMALL_OBJECT, _LARGE_OBJECT, _SMALL_ARRAY, _LARGE_ARRAY):
        return _container(kind, data, pos)
    if kind == _LITERAL:
        return {0: "null", 1: "true", 2: "false"}[data[pos]]
    fmt = _FMT.get(kind)
    if fmt is not None:
        return str(struct.unpack_from(fmt, data, pos)[0])
    if kind == _DOUBLE:
        return _double(struct.unpack_from("<d", data, pos)[0])
    if kind == _STRING:
        length, pos = _varlen(data, pos)
        return _string(data[pos : pos + length].decode("utf-8"))
    if kind == _OPAQUE:
        field_type = data[pos]
        length, pos = _varlen(data, pos + 1)
        return _opaque(field_type, data[pos : pos + length])
    raise ValueError(f"unknown binary JSON value type {kind}")


def _container(kind: int, data: bytes, start: int) -> str:
    large = kind in (_LARGE_OBJECT, _LARGE_ARRAY)
    is_object = kind in (_SMALL_OBJECT, _LARGE_OBJECT)
    osize = 4 if large else 2
    ofmt = "<I" if large else "<H"
    count = struct.unpack_from(ofmt, data, start)[0]
    entries = start + 2 * osize
    keys: list[str] = []
    if is_object:
        for i in range(count):
            at = entries + i * (osize + 2)
            offset = struct.unpack_from(ofmt, data, at)[0]
            length = struct.unpack_from("<H", data, at + osize)[0]
            keys.append(data[start + offset : start + offset + length].decode("utf-8"))
        entries += count * (osize + 2)
    values: list[str] = []
    for i in range(count):
        at = entries + i * (1 + osize)
        vkind = data[at]
        inline = vkind in (_LITERAL, _INT16, _UINT16) or (large and vkind in (_INT32, _UINT32))
        if inline:
            values.append(_value(vkind, data, at + 1))
        else:
            offset = struct.unpack_from(ofmt, data, at + 1)[0]
            values.append(_value(vkind, data, start + offset))
    if is_object:
        pairs = zip(keys, values, strict=True)
        return "{" + ", ".join(f"{_string(k)}: {v}" for k, v in pairs) + "}"
    return "[" + ", ".join(values) + "]"


def _packed(data: bytes) -> tuple[bool, int, int]:
    """MySQL's packed temporal int64: (negative, integer part, microseconds)."""
    v = struct.unpack_from("<q", data.ljust(8, b"\x00"), 0)[0]
    negative = v < 0
    v = -v if negative else v
    return negative, v >> 24, v % (1 << 24)


def _opaque(field_type: int, raw: bytes) -> str:
    if field_type in (_F_NEWDECIMAL, _F_DECIMAL):
        from pymysqlreplication.util.bytes import decode_decimal

        return format(Decimal(decode_decimal(raw)), "f")
    if field_type in (_F_TIME, _F_TIME2):
        negative, hms, micros = _packed(raw)
        hour, minute, second = (hms >> 12) % (1 << 10), (hms >> 6) % 64, hms % 64
        sign = "-" if negative else ""
        return f'"{sign}{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}"'
    if field_type in (_F_DATE, _F_DATETIME, _F_DATETIME2, _F_TIMESTAMP, _F_TIMESTAMP2):
        _, ymdhms, micros = _packed(raw)
        ymd, hms = ymdhms >> 17, ymdhms % (1 << 17)
        year, month, day = (ymd >> 5) // 13, (ymd >> 5) % 13, ymd % 32
        date = f"{year:04d}-{month:02d}-{day:02d}"
        if field_type == _F_DATE:
            return f'"{date}"'
        hour, minute, second = hms >> 12, (hms >> 6) % 64, hms % 64
        return f'"{date} {hour:02d}:{minute:02d}:{second:02d}.{micros:06d}"'
    encoded = base64.b64encode(raw).decode()
    return f'"base64:type{field_type}:{encoded}"'


_installed = False


def install() -> None:
    """Make python-mysql-replication return MySQL JSON columns as text (``to_text``); partial
    JSON updates (binlog_row_value_options=PARTIAL_JSON) keep the library's own decoding."""
    global _installed
    if _installed:
        return
    from pymysqlreplication.packet import BinLogPacketWrapper

    original = BinLogPacketWrapper.read_binary_json

    def read_binary_json(self: Any, size: int, is_partial: bool) -> Any:
        if is_partial:
            return original(self, size, is_partial)
        length = self.read_uint_by_size(size)
        return to_text(bytes(self.read(length)))

    BinLogPacketWrapper.read_binary_json = read_binary_json
    _installed = True
