"""MySQL/MariaDB column type -> Avro type, and converters from the binlog and from SELECT.

A column is first described as a ``ColumnType`` (from the binlog's table map with
binlog_row_metadata=FULL, or from information_schema for the snapshot); one ``mapping`` function
turns that into the Avro type and two converters, so a snapshot row and a streamed row of the same
table give the same schema and the same values. The mapping follows Debezium's MySQL defaults
(decimal.handling.mode=precise, time.precision.mode=adaptive_time_microseconds,
binary.handling.mode=bytes) with bigint unsigned as decimal(20,0) (bigint.unsigned.handling.mode=
precise); TYPES.md lists it with examples.

The snapshot session runs with time_zone='+00:00', which the TIMESTAMP converter relies on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Context, Decimal
from typing import Any

from cdc import avro

Converter = Callable[[Any], Any]

EPOCH = datetime(1970, 1, 1)
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# binlog column type codes (MySQL's enum_field_types)
_TINY, _SHORT, _LONG, _FLOAT, _DOUBLE, _TIMESTAMP, _LONGLONG, _INT24 = 1, 2, 3, 4, 5, 7, 8, 9
_DATE, _TIME, _DATETIME, _YEAR, _VARCHAR, _BIT = 10, 11, 12, 13, 15, 16
_TIMESTAMP2, _DATETIME2, _TIME2, _JSON, _NEWDECIMAL = 17, 18, 19, 245, 246
_ENUM, _SET, _BLOB, _VAR_STRING, _STRING, _GEOMETRY = 247, 248, 252, 253, 254, 255
_VECTOR = 242  # MySQL 9
UNREADABLE = frozenset({"vector"})  # kinds the source refuses, naming the column
TEXT_KINDS = frozenset({"char", "varchar", "text"})

_BY_CODE = {
    _TINY: "tinyint",
    _SHORT: "smallint",
    _INT24: "mediumint",
    _LONG: "int",
    _LONGLONG: "bigint",
    _FLOAT: "float",
    _DOUBLE: "double",
    _NEWDECIMAL: "decimal",
    _BIT: "bit",
    _YEAR: "year",
    _DATE: "date",
    _TIME: "time",
    _TIME2: "time",
    _DATETIME: "datetime",
    _DATETIME2: "datetime",
    _TIMESTAMP: "timestamp",
    _TIMESTAMP2: "timestamp",
    _ENUM: "enum",
    _SET: "set",
    _JSON: "json",
    _GEOMETRY: "geometry",
    _VECTOR: "vector",
}


@dataclass(frozen=True, slots=True)
class ColumnType:
    """What decides a column's mapping, whichever way it was learnt."""

    kind: str
    unsigned: bool = False
    precision: int = 0
    scale: int = 0
    fsp: int = 0
    length: int = 0  # bits of BIT(n); bytes of BINARY(n)
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Mapping:
    name: str  # the source type as TYPES.md shows it
    avro: Any
    from_binlog: Converter | None  # None: the decoded value is the Avro value
    from_select: Converter | None
    fallback: Any
    # The converters may return None for a value (a zero date): a NOT NULL column then takes
    # ``fallback`` instead, as Debezium does (``converters`` arranges it).
    zero_is_null: bool = False
    # (from_binlog, from_select) after Debezium's time adjuster, for DATE and DATETIME
    adjusted: tuple[Converter, Converter] | None = None

    def converters(self, required: bool, adjust_years: bool) -> tuple[Converter | None, ...]:
        """(from_binlog, from_select) for a column that is ``required`` (NOT NULL), with the
        time adjuster when ``adjust_years`` (source.time_adjuster)."""
        pair = (
            self.adjusted
            if adjust_years and self.adjusted
            else (self.from_binlog, self.from_select)
        )
        if not (required and self.zero_is_null):
            return pair
        return tuple(_or_fallback(conv, self.fallback) for conv in pair)


def _or_fallback(conv: Converter | None, fallback: Any) -> Converter | None:
    """``conv`` for a NOT NULL column: where it gives None (a zero date), ``fallback``, as
    Debezium emits (epoch day 0, epoch millis 0, 1970-01-01T00:00:00Z)."""
    if conv is None:
        return None

    def required(v: Any) -> Any:
        r = conv(v)
        return fallback if r is None else r

    return required


# --- converters -----------------------------------------------------------------------------------


def _days(d: date) -> int:
    return d.toordinal() - EPOCH_ORDINAL


def _unless_zero(conv: Converter) -> Converter:
    """``conv``, except that a date that is not a calendar date (``0000-00-00``, ``2020-00-15``,
    ``2020-02-30`` under ALLOW_INVALID_DATES) is None. pymysql gives such values as the text the
    server prints, and so does the binlog decoder (sources/mysql/_decoders.py)."""

    def unless_zero(v: Any) -> Any:
        return None if isinstance(v, str) else conv(v)

    return unless_zero


def _adjusted(conv: Converter) -> Converter:
    """``conv`` after Debezium's time adjuster (enable.time.adjuster): a year 0-69 is taken as
    2000-2069 and 70-99 as 1970-1999. A year under 100 has the same leap years as its adjusted
    one, so the day of the month always exists."""

    def adjusted(v: Any) -> Any:
        if isinstance(v, date) and v.year < 100:
            v = v.replace(year=v.year + (2000 if v.year < 70 else 1900))
        return conv(v)

    return adjusted


def _zoned_binlog(conv: Converter) -> Converter:
    """A TIMESTAMP from the binlog: seconds since the epoch, where 0 is the zero value (the type's
    range starts at 1970-01-01 00:00:01 UTC), which SELECT prints as 0000-00-00 00:00:00."""

    def zoned(dt: datetime) -> Any:
        return None if dt == EPOCH else conv(dt)

    return zoned


def _year_binlog(v: int) -> int:
    # The binlog stores YEAR as an offset from 1900, and the zero year 0000 as 0: the library
    # reads that as 1900, a year the type cannot hold (its range is 1901..2155 and 0000).
    return 0 if v == 1900 else v


def _rounded(scale: int) -> Converter:
    """FLOAT(M,D) from the binlog: the single-precision value the server stores, rounded to the
    D decimals it was rounded to on the way in, so the double equals what SELECT prints."""

    def conv(v: float) -> float:
        return round(v, scale)

    return conv


def _micros_of(td: timedelta) -> int:
    return (td.days * 86400 + td.seconds) * 1_000_000 + td.microseconds


def _ts_micros(dt: datetime) -> int:
    return _micros_of(dt - EPOCH)


def _ts_millis(dt: datetime) -> int:
    return _micros_of(dt - EPOCH) // 1000


def _zoned(fsp: int) -> Converter:
    def conv(dt: datetime) -> str:
        s = dt.strftime("%Y-%m-%dT%H:%M:%S")
        if fsp:
            s += "." + f"{dt.microsecond:06d}"[:fsp]
        return s + "Z"

    return conv


# DECIMAL holds up to 65 digits; the default context's 28 made quantize() fail on wider values
_WIDE = Context(prec=100)


def _decimal(scale: int) -> Converter:
    q = Decimal(1).scaleb(-scale)

    def conv(v: Decimal) -> Decimal:
        return Decimal(v).quantize(q, context=_WIDE)

    return conv


def _bits_from_string(nbytes: int) -> Converter:
    def conv(v: str) -> bytes:
        return int(v or "0", 2).to_bytes(nbytes, "little")

    return conv


def _bits_from_bytes(nbytes: int) -> Converter:
    def conv(v: bytes) -> bytes:
        return int.from_bytes(v, "big").to_bytes(nbytes, "little")

    return conv


def _bit1_binlog(v: str) -> bool:
    return v == "1"


def _bit1_select(v: bytes) -> bool:
    return v != b"\x00"


def _pad(length: int) -> Converter:
    # The binlog drops a BINARY(n) value's trailing zero bytes; the library gives an empty value
    # (all zero bytes) as the empty *string*.
    def conv(v: bytes | str) -> bytes:
        return (v if isinstance(v, bytes) else v.encode()).ljust(length, b"\x00")

    return conv


def _set_binlog(values: tuple[str, ...]) -> Converter:
    def conv(v: set[str] | str) -> str:
        if isinstance(v, str):
            return v
        return ",".join(x for x in values if x in v)

    return conv


def _json_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, dict):
        return {_json_value(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return v


def _json_binlog(v: Any) -> str:
    # MariaDB logs JSON as text; MySQL's binary JSON arrives decoded to Python values.
    if isinstance(v, str):
        return v
    return json.dumps(_json_value(v), separators=(", ", ": "), default=str)


def _to_bytes(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def _escape_label(label: str) -> str:
    """An ENUM/SET label as Debezium writes it into the ``allowed`` parameter (its
    EnumeratedValues): ``\\`` -> ``\\\\`` and ``,`` -> ``\\,``, so that a label holding a comma
    stays one label. Quotes are not escaped."""
    return label.replace("\\", "\\\\").replace(",", "\\,")


_INT16: dict[str, Any] = avro.INT16


def mapping(t: ColumnType) -> Mapping:
    """The Avro type and converters of a column; unknown kinds map to strings."""
    k = t.kind
    u = " unsigned" if t.unsigned else ""
    if k in ("tinyint", "smallint", "mediumint", "int"):
        if k == "tinyint" and not t.unsigned:
            a: Any = _INT16
        elif k == "int" and t.unsigned:
            a = avro.INT64
        elif k in ("tinyint", "smallint") and not (k == "smallint" and t.unsigned):
            a = _INT16
        else:
            a = avro.INT32
        return Mapping(k + u, a, None, None, 0)
    if k == "bigint":
        if t.unsigned:
            dec = avro.decimal(20, 0)
            return Mapping("bigint unsigned", dec, Decimal, Decimal, Decimal(0))
        return Mapping("bigint", avro.INT64, None, None, 0)
    if k == "decimal":
        conv = _decimal(t.scale)
        return Mapping(
            f"decimal({t.precision},{t.scale})",
            avro.decimal(t.precision, t.scale),
            conv,
            conv,
            Decimal(0),
        )
    if k == "float":
        if t.precision:
            # FLOAT(M,D): a double in Debezium (only FLOAT and FLOAT(p<=24) are float32)
            return Mapping(
                f"float({t.precision},{t.scale})", avro.FLOAT64, _rounded(t.scale), float, 0.0
            )
        return Mapping("float", avro.FLOAT32, None, float, 0.0)
    if k == "double":
        return Mapping("double", avro.FLOAT64, None, float, 0.0)
    if k == "bit":
        if t.length == 1:
            return Mapping("bit(1)", avro.BOOLEAN, _bit1_binlog, _bit1_select, False)
        nbytes = (t.length + 7) // 8
        return Mapping(
            f"bit({t.length})",
            avro.bits(t.length),
            _bits_from_string(nbytes),
            _bits_from_bytes(nbytes),
            b"",
        )
    if k in ("char", "varchar", "text"):
        return Mapping(k, avro.STRING, None, None, "")
    if k == "binary":
        return Mapping(f"binary({t.length})", avro.BYTES, _pad(t.length), None, b"")
    if k in ("varbinary", "blob", "geometry"):
        return Mapping(k, avro.BYTES, _to_bytes, None, b"")
    if k == "date":
        days, adjusted = _unless_zero(_days), _unless_zero(_adjusted(_days))
        return Mapping(
            "date", avro.DATE, days, days, 0, zero_is_null=True, adjusted=(adjusted, adjusted)
        )
    if k == "time":
        return Mapping(f"time({t.fsp})", avro.TIME_MICROS, _micros_of, _micros_of, 0)
    if k == "datetime":
        a, epoch = (
            (avro.TIMESTAMP_MILLIS, _ts_millis)
            if t.fsp <= 3
            else (avro.TIMESTAMP_MICROS, _ts_micros)
        )
        conv, adjusted = _unless_zero(epoch), _unless_zero(_adjusted(epoch))
        return Mapping(
            f"datetime({t.fsp})", a, conv, conv, 0, zero_is_null=True, adjusted=(adjusted, adjusted)
        )
    if k == "timestamp":
        z = _unless_zero(_zoned(t.fsp))
        return Mapping(
            f"timestamp({t.fsp})",
            avro.ZONED_TIMESTAMP,
            _zoned_binlog(z),
            z,
            "1970-01-01T00:00:00Z",
            zero_is_null=True,
        )
    if k == "year":
        return Mapping("year", avro.YEAR, _year_binlog, None, 0)
    if k == "enum":
        allowed = [_escape_label(v) for v in t.values]
        return Mapping("enum", avro.enum(allowed), None, None, t.values[0] if t.values else "")
    if k == "set":
        allowed = [_escape_label(v) for v in t.values]
        return Mapping("set", avro.enum_set(allowed), _set_binlog(t.values), None, "")
    if k == "json":
        return Mapping("json", avro.JSON, _json_binlog, None, "{}")
    return Mapping(k, avro.STRING, str, str, "")


# --- describing columns ---------------------------------------------------------------------------


def undecodable_charset(name: str) -> bool:
    """True for a MySQL character set Python has no codec for (swe7, keybcs2, armscii8...):
    the binlog library then gives that column's text as bytes."""
    from cdc.sources.mysql._decoders import encoding

    return encoding(name) is None


def from_binlog(
    col: Any, is_json: bool = False, float_digits: tuple[int, int] | None = None
) -> ColumnType:
    """Describe a column of a binlog table map (python-mysql-replication's ``Column``).

    The table map cannot tell a JSON column on MariaDB (``is_json``) nor the (M, D) of a
    ``FLOAT(M,D)`` (``float_digits``): the caller learns those from the catalog."""
    code = col.type
    if code == _FLOAT and float_digits is not None:
        return ColumnType("float", precision=float_digits[0], scale=float_digits[1])
    binary = getattr(col, "character_set_name", None) == "binary"
    if code in (_VARCHAR, _VAR_STRING):
        return ColumnType("varbinary" if binary else "varchar")
    if code == _STRING:
        return ColumnType("binary", length=col.max_length) if binary else ColumnType("char")
    if code == _BLOB:
        if is_json:
            return ColumnType("json")
        return ColumnType("blob" if binary else "text")
    kind = _BY_CODE.get(code, f"type {code}")
    if kind == "decimal":
        return ColumnType(kind, precision=col.precision, scale=col.decimals)
    if kind in ("time", "datetime", "timestamp"):
        return ColumnType(kind, fsp=getattr(col, "fsp", 0))
    if kind == "bit":
        return ColumnType(kind, length=col.bits)
    if kind == "enum":
        return ColumnType(kind, values=tuple((col.enum_values or [""])[1:]))
    if kind == "set":
        return ColumnType(kind, values=tuple(col.set_values or ()))
    if kind in ("tinyint", "smallint", "mediumint", "int", "bigint"):
        return ColumnType(kind, unsigned=bool(col.unsigned))
    return ColumnType(kind)


_TEXT = {"tinytext", "text", "mediumtext", "longtext"}
_BLOBS = {"tinyblob", "blob", "mediumblob", "longblob"}
_GEOMETRY_TYPES = {
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
}
_QUOTED = re.compile(r"'((?:[^'\\]|''|\\.)*)'", re.DOTALL)
_ESCAPE = re.compile(r"''|\\(.)", re.DOTALL)
# how information_schema.COLUMNS.COLUMN_TYPE escapes a label (the server's append_unescaped)
_UNESCAPED = {"n": "\n", "r": "\r", "0": "\0", "Z": "\x1a", "t": "\t", "b": "\b"}


def _unescape(m: re.Match[str]) -> str:
    c = m.group(1)
    return "'" if c is None else _UNESCAPED.get(c, c)


def _values(column_type: str) -> tuple[str, ...]:
    """The labels of ``enum(...)``/``set(...)`` as the catalog prints them, unescaped: the same
    strings the binlog's table map carries."""
    inner = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
    return tuple(_ESCAPE.sub(_unescape, m.group(1)) for m in _QUOTED.finditer(inner))


def from_catalog(
    data_type: str,
    column_type: str,
    precision: int | None,
    scale: int | None,
    fsp: int | None,
    octet_length: int | None,
    is_json: bool = False,
) -> ColumnType:
    """Describe a column from information_schema.COLUMNS, the same way ``from_binlog`` does."""
    dt = data_type.lower()
    ct = column_type.lower()
    unsigned = "unsigned" in ct
    if dt in ("tinyint", "smallint", "mediumint", "int", "bigint"):
        return ColumnType(dt, unsigned=unsigned)
    if dt in ("decimal", "numeric"):
        return ColumnType("decimal", precision=precision or 10, scale=scale or 0)
    if dt in ("double", "real"):
        return ColumnType("double")
    if dt == "float":
        if scale is not None:  # FLOAT(M,D); FLOAT and FLOAT(p) have no scale
            return ColumnType("float", precision=precision or 0, scale=scale)
        return ColumnType("float")
    if dt == "bit":
        return ColumnType("bit", length=precision or 1)
    if dt in ("char", "varchar", "binary", "varbinary", "date", "year", "json"):
        if dt == "binary":
            return ColumnType("binary", length=octet_length or 0)
        return ColumnType(dt)
    if dt in _TEXT:
        return ColumnType("json" if is_json else "text")
    if dt in _BLOBS:
        return ColumnType("blob")
    if dt in ("time", "datetime", "timestamp"):
        return ColumnType(dt, fsp=fsp or 0)
    if dt in ("enum", "set"):
        return ColumnType(dt, values=_values(column_type))
    if dt in _GEOMETRY_TYPES:
        return ColumnType("geometry")
    return ColumnType(dt)
