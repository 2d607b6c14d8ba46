"""PostgreSQL type -> Avro type and converter from pgoutput's text format.

The mapping follows Debezium's defaults (decimal.handling.mode=precise, time.precision.mode=
adaptive, binary.handling.mode=bytes); TYPES.md lists it with examples. A type not known here is
emitted as its text form (a string), as Debezium does with ``include.unknown.datatypes``.

The walsender sessions run with DateStyle=ISO, TimeZone=UTC and extra_float_digits=3, which the
converters rely on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from cdc import avro

Converter = Callable[[str], Any]

EPOCH = datetime(1970, 1, 1)
EPOCH_DATE = date(1970, 1, 1)
EPOCH_ORDINAL = EPOCH_DATE.toordinal()
UNAVAILABLE = "__debezium_unavailable_value"
"""Debezium's placeholder for an unchanged TOASTed value that the server did not send."""


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """What the catalog says of a type that is not a fixed built-in (pg_type, pg_enum)."""

    oid: int
    name: str  # format_type(oid, NULL), e.g. "mood", "public.citext", "integer[]"
    typtype: str  # b base, d domain, e enum, c composite, r range, m multirange, p pseudo
    category: str  # typcategory: A array, ...
    element: int  # typelem of an array type, else 0
    base: int  # typbasetype of a domain, else 0
    base_typmod: int  # typtypmod of a domain
    enum_labels: tuple[str, ...] = ()


Resolver = Callable[[int], "TypeInfo | None"]
"""Looks a type oid up in the catalog (cached by the caller); None when it does not exist."""


@dataclass(frozen=True, slots=True)
class Mapping:
    name: str
    avro: Any
    convert: Converter | None  # None: the text form is the value
    fallback: Any  # value of a required column the server did not send


def _bool(s: str) -> bool:
    return s == "t"


def _bytea(s: str) -> bytes:
    return bytes.fromhex(s[2:])


def _date(s: str) -> int:
    return date.fromisoformat(s).toordinal() - EPOCH_ORDINAL


def _ts_micros(s: str) -> int:
    d = datetime.fromisoformat(s) - EPOCH
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def _ts_millis(s: str) -> int:
    return _ts_micros(s) // 1000


def _timestamptz(s: str) -> str:
    # Text in UTC: "2024-01-02 03:04:05.123456+00" -> "2024-01-02T03:04:05.123456Z"
    if s.endswith("+00") and len(s) >= 22 and s[10] == " ":
        return s[:10] + "T" + s[11:-3] + "Z"
    dt = datetime.fromisoformat(s).astimezone(UTC)
    return dt.isoformat().replace("+00:00", "Z")


def _time_micros(s: str) -> int:
    hh, mm, rest = s.split(":")
    sec, _, frac = rest.partition(".")
    return ((int(hh) * 60 + int(mm)) * 60 + int(sec)) * 1_000_000 + int((frac + "000000")[:6])


def _fixed_decimal(scale: int) -> Converter:
    q = Decimal(1).scaleb(-scale)

    def conv(s: str) -> Decimal:
        return Decimal(s).quantize(q)

    return conv


def _variable_decimal(s: str) -> dict[str, Any]:
    return avro.variable_scale(Decimal(s))


def _numeric(typmod: int) -> Mapping:
    if typmod < 4:
        return Mapping(
            "numeric",
            avro.VARIABLE_SCALE_DECIMAL,
            _variable_decimal,
            {"scale": 0, "value": b"\x00"},
        )
    precision = ((typmod - 4) >> 16) & 0xFFFF
    scale = (typmod - 4) & 0xFFFF
    return Mapping(
        f"numeric({precision},{scale})",
        avro.decimal(precision, scale),
        _fixed_decimal(scale),
        Decimal(0),
    )


def _timestamp(typmod: int) -> Mapping:
    if 0 <= typmod <= 3:
        return Mapping(f"timestamp({typmod})", avro.TIMESTAMP_MILLIS, _ts_millis, 0)
    return Mapping("timestamp", avro.TIMESTAMP_MICROS, _ts_micros, 0)


def _time(typmod: int) -> Mapping:
    if 0 <= typmod <= 3:
        return Mapping(f"time({typmod})", avro.TIME_MILLIS, lambda s: _time_micros(s) // 1000, 0)
    return Mapping("time", avro.TIME_MICROS, _time_micros, 0)


_FIXED: dict[int, Mapping] = {
    16: Mapping("boolean", avro.BOOLEAN, _bool, False),
    17: Mapping("bytea", avro.BYTES, _bytea, b""),
    18: Mapping('"char"', avro.STRING, None, ""),
    19: Mapping("name", avro.STRING, None, ""),
    20: Mapping("bigint", avro.INT64, int, 0),
    21: Mapping("smallint", avro.INT16, int, 0),
    23: Mapping("integer", avro.INT32, int, 0),
    25: Mapping("text", avro.STRING, None, ""),
    26: Mapping("oid", avro.INT64, int, 0),
    114: Mapping("json", avro.JSON, None, "{}"),
    142: Mapping("xml", avro.XML, None, ""),
    700: Mapping("real", avro.FLOAT32, float, 0.0),
    701: Mapping("double precision", avro.FLOAT64, float, 0.0),
    1042: Mapping("character", avro.STRING, None, ""),
    1043: Mapping("character varying", avro.STRING, None, ""),
    1082: Mapping("date", avro.DATE, _date, 0),
    1184: Mapping("timestamptz", avro.ZONED_TIMESTAMP, _timestamptz, "1970-01-01T00:00:00Z"),
    1266: Mapping("timetz", avro.ZONED_TIME, None, "00:00:00Z"),
    2950: Mapping("uuid", avro.UUID, None, "00000000-0000-0000-0000-000000000000"),
    3802: Mapping("jsonb", avro.JSON, None, "{}"),
}

_BY_TYPMOD: dict[int, Callable[[int], Mapping]] = {
    1700: _numeric,
    1114: _timestamp,
    1083: _time,
}


def mapping_for(
    type_oid: int, typmod: int, type_name: str | None = None, resolve: Resolver | None = None
) -> Mapping:
    """The mapping of a column type; unknown types map to their text form.

    ``resolve`` looks up types that are not fixed built-ins (enums, domains, arrays, extension
    types); without it they map to their text form.
    """
    m = _FIXED.get(type_oid)
    if m is not None:
        return m
    f = _BY_TYPMOD.get(type_oid)
    if f is not None:
        return f(typmod)
    return Mapping(type_name or f"oid {type_oid}", avro.STRING, None, "")
