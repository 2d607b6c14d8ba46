"""PostgreSQL type -> Avro type and converter from the text form of a value.

The mapping follows Debezium's defaults (decimal.handling.mode=precise, time.precision.mode=
adaptive, binary.handling.mode=bytes, interval.handling.mode=numeric, hstore.handling.mode=json);
TYPES.md lists it with examples and the choices made where Debezium's behaviour was not certain.
A type not known here is emitted as its text form (a string; Debezium drops such columns, or
writes their bytes with ``include.unknown.datatypes``).

Values arrive as text, from pgoutput while streaming and as ``col::text`` in the snapshot, both in
sessions with DateStyle=ISO, TimeZone=UTC, extra_float_digits=3 and IntervalStyle=iso_8601 (see
SESSION_OPTIONS): the converters rely on these formats. Converters run once per value on the hot
path: everything that depends on the column only (scale, element converter, ...) is decided once
in ``mapping_for``.

One file past 500 lines on purpose: the mapping tables at the end and the converters they name
are read together, as TYPES.md mirrors them.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Context, Decimal
from typing import Any

from cdc import avro

Converter = Callable[[str], Any]

EPOCH = datetime(1970, 1, 1)
EPOCH_DATE = date(1970, 1, 1)
EPOCH_ORDINAL = EPOCH_DATE.toordinal()
UNAVAILABLE = "__debezium_unavailable_value"
"""Debezium's placeholder for an unchanged TOASTed value that the server did not send."""

INT32_MAX = 2**31 - 1
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
# Debezium's infinities (TYPES.md says where each comes from). Timestamps: pgjdbc's
# PGStatement.DATE_POSITIVE/NEGATIVE_INFINITY read as microseconds since 1970, whatever the
# column's precision (in milliseconds for timestamp(0..3): the same instant).
TS_INFINITY_US = 9_223_372_036_825_200_000
TS_MINUS_INFINITY_US = -9_223_372_036_832_400_000
# Dates: PostgresValueConverter.POSITIVE_INFINITY_LOCAL_DATE is -5877611-06-21 (sic: before the
# date of -infinity, -5877611-06-22), in days since 1970-01-01.
DATE_INFINITY = -2_147_472_692
DATE_MINUS_INFINITY = -2_147_472_691
DAY_US = 86_400_000_000
MONTH_US = 2_629_800_000_000  # 30.4375 days (365.25 / 12), Debezium's average month


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


_INT_ARRAY_PLACEHOLDER = list(UNAVAILABLE.encode())


def placeholder(avro_type: Any) -> Any:
    """Debezium's unchanged-TOAST placeholder in ``avro_type``, or None where it has none.

    Strings take the placeholder, bytes its UTF-8 bytes, arrays of strings or bytes a one-element
    list of it, arrays of integers the placeholder's bytes as numbers (as Debezium). Other types
    (decimals, records, arrays of other types) have none: None, and the column then carries null
    (or its fallback when it is required).
    """
    base = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    if base == "string":
        return UNAVAILABLE
    if base == "bytes" and not (isinstance(avro_type, dict) and "logicalType" in avro_type):
        return UNAVAILABLE.encode()
    if base == "array":
        items = avro_type["items"]
        item = items[1] if isinstance(items, list) else items
        if item in ("int", "long", avro.INT16):
            return _INT_ARRAY_PLACEHOLDER
        inner = placeholder(item)
        return None if inner is None or isinstance(inner, list) else [inner]
    return None


_AUTO: Any = object()


@dataclass(frozen=True, slots=True)
class Mapping:
    """How one column type is written: decided once per column, applied to every value."""

    name: str
    avro: Any
    convert: Converter | None  # None: the text form is the value
    fallback: Any  # value of a required column the server did not send
    unavailable: Any = _AUTO  # unchanged TOASTed value; default: placeholder(avro)

    def __post_init__(self) -> None:
        if self.unavailable is _AUTO:
            object.__setattr__(self, "unavailable", placeholder(self.avro))


# --- calendar -------------------------------------------------------------------------------------


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date, any year (0 = 1 BC)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def _time_us(s: str) -> int:
    """Microseconds of "HH:MM:SS[.ffffff]"."""
    hh, mm, rest = s.split(":")
    sec, _, frac = rest.partition(".")
    return ((int(hh) * 60 + int(mm)) * 60 + int(sec)) * 1_000_000 + int((frac + "000000")[:6])


def _offset_s(s: str) -> int:
    """Seconds east of UTC of "+HH[:MM[:SS]]" or "-HH[:MM[:SS]]"."""
    parts = s[1:].split(":")
    secs = int(parts[0]) * 3600
    if len(parts) > 1:
        secs += int(parts[1]) * 60
    if len(parts) > 2:
        secs += int(parts[2])
    return -secs if s[0] == "-" else secs


def _iso_year(y: int) -> str:
    # java.time's ISO formatters: 4 digits, a sign past 9999 and before year 0 (1 BC is year 0).
    if 0 <= y <= 9999:
        return f"{y:04d}"
    return f"+{y}" if y > 0 else f"-{-y:04d}"


def _fraction(us: int) -> str:
    return f".{us:06d}".rstrip("0") if us else ""


# --- converters -----------------------------------------------------------------------------------


def _bool(s: str) -> bool:
    return s == "t"


_BYTEA_ESCAPE = re.compile(r"\\(\\|[0-7]{3})")


def _bytea(s: str) -> bytes:
    if s[:2] == "\\x":
        return bytes.fromhex(s[2:])
    # bytea_output = escape: printable ASCII as itself, a backslash doubled, other bytes \ooo
    return _BYTEA_ESCAPE.sub(
        lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(1), 8)), s
    ).encode("latin-1")


def _date(s: str) -> int:
    if len(s) == 10:
        return date.fromisoformat(s).toordinal() - EPOCH_ORDINAL
    if s == "infinity":
        return DATE_INFINITY
    if s == "-infinity":
        return DATE_MINUS_INFINITY
    bc = s.endswith(" BC")
    y, m, d = (int(p) for p in (s[:-3] if bc else s).split("-"))
    return _days_from_civil(1 - y if bc else y, m, d)


def _ts_exact(s: str) -> int:
    """Microseconds since 1970 of a finite timestamp text, any year (BC, past 9999), exactly.

    Text may end with a UTC offset (timestamptz)."""
    bc = s.endswith(" BC")
    if bc:
        s = s[:-3]
    d, _, t = s.partition(" ")
    off = 0
    for i in range(8, len(t)):
        if t[i] in "+-":
            off = _offset_s(t[i:])
            t = t[:i]
            break
    y, m, dd = (int(p) for p in d.split("-"))
    return _days_from_civil(1 - y if bc else y, m, dd) * DAY_US + _time_us(t) - off * 1_000_000


def _ts_micros(s: str) -> int:
    if s[4] == "-" and s[-1] != "C":  # years 1..9999, not BC, not an infinity
        d = datetime.fromisoformat(s) - EPOCH
        return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
    if s == "infinity":
        return TS_INFINITY_US
    if s == "-infinity":
        return TS_MINUS_INFINITY_US
    # The last ~30 years before Postgres' maximum (294276 AD) do not fit in an int64: saturate
    # one short of int64's limits (Debezium's arithmetic wraps around there).
    return min(max(_ts_exact(s), INT64_MIN + 1), INT64_MAX - 1)


def _ts_millis(s: str) -> int:
    if s[4] == "-" and s[-1] != "C":
        return _ts_micros(s) // 1000
    if s == "infinity":
        return TS_INFINITY_US // 1000
    if s == "-infinity":
        return TS_MINUS_INFINITY_US // 1000
    return _ts_exact(s) // 1000  # milliseconds of any timestamp fit in an int64


def _timestamptz(s: str) -> str:
    # The session's TimeZone is UTC: "2024-01-02 03:04:05.123456+00" -> "...T03:04:05.123456Z"
    if s.endswith("+00") and s[10] == " " and s[4] == "-":
        return s[:10] + "T" + s[11:-3] + "Z"
    if s == "infinity" or s == "-infinity":
        return s
    us = _ts_exact(s)
    days, rem = divmod(us, DAY_US)
    y, m, d = _civil_from_days(days)
    secs, frac = divmod(rem, 1_000_000)
    return (
        f"{_iso_year(y)}-{m:02d}-{d:02d}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"
        f"{_fraction(frac)}Z"
    )


@functools.cache  # one function per precision: _tuples recognises them by identity
def _timestamptz_padded(digits: int) -> Converter:
    """The fraction padded to the column's precision, as Debezium's ZonedTimestamp does."""

    def conv(s: str) -> str:
        out = _timestamptz(s)
        if out[-1] != "Z":
            return out  # an infinity
        dot = out.find(".", 17)
        if dot < 0:
            return out[:-1] + "." + "0" * digits + "Z"
        return out[:-1] + "0" * (digits - (len(out) - dot - 2)) + "Z"

    return conv


def _timestamptz_typmod(typmod: int) -> Mapping:
    if typmod == 0:
        return _TIMESTAMPTZ  # whole seconds: no fraction
    digits = typmod if 1 <= typmod <= 6 else 6  # no precision declared: 6
    name = "timestamptz" if typmod < 0 else f"timestamptz({typmod})"
    return Mapping(name, avro.ZONED_TIMESTAMP, _timestamptz_padded(digits), _ZONED_ZERO)


def _time_millis(s: str) -> int:
    return _time_us(s) // 1000


def _timetz(s: str) -> str:
    """The same instant of the day in UTC, as ZonedTime: "13:14:15.25+02" -> "11:14:15.25Z"."""
    i = max(s.rfind("+"), s.rfind("-"))
    t = s[:i]
    off = _offset_s(s[i:])
    hh, mm, rest = t.split(":")
    sec, dot, frac = rest.partition(".")
    secs = (int(hh) * 60 + int(mm)) * 60 + int(sec)
    if secs == 86400 and not frac.strip("0"):
        return "24:00:00Z"  # the end of the day stays the end of the day, whatever the offset
    secs = (secs - off) % 86400
    f = ("." + frac.rstrip("0")) if dot and frac.rstrip("0") else ""
    return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}{f}Z"


_INTERVAL = re.compile(
    r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?)(\d+)(?:\.(\d+))?S)?)?"
)


def _interval(s: str) -> int:
    """ISO 8601 interval ("P1Y2M3DT4H5M6.5S") -> microseconds, a month being 30.4375 days."""
    m = _INTERVAL.fullmatch(s)
    if m is None:
        if s == "infinity":
            return INT64_MAX
        if s == "-infinity":
            return INT64_MIN
        raise ValueError(f"not an ISO 8601 interval: {s!r}")
    y, mo, d, h, mi, neg, sec, frac = m.groups()
    us = (int(y or 0) * 12 + int(mo or 0)) * MONTH_US + int(d or 0) * DAY_US
    us += (int(h or 0) * 60 + int(mi or 0)) * 60_000_000
    if sec is not None:
        t = int(sec) * 1_000_000 + (int((frac + "000000")[:6]) if frac else 0)
        us += -t if neg else t
    # Beyond ~292,000 years an interval has no int64 form: saturated, as Debezium's cast of its
    # double to a long saturates (Postgres allows 178,000,000 years)
    return min(max(us, INT64_MIN), INT64_MAX)


def _float(s: str) -> float:
    return float(s)


_NON_DIGITS = re.compile(r"[^0-9]")


def _money(s: str) -> Decimal:
    # Locale formatted ("$1,234.56", "-$1,234.56", "1.234,56 €"): the digits are the amount in
    # cents (Postgres money has 2 fraction digits in the locales that give it any).
    cents = int(_NON_DIGITS.sub("", s))
    if "-" in s or "(" in s:
        cents = -cents
    return Decimal(cents).scaleb(-2)


_WIDE = Context(prec=1100)  # numeric(p,s) has p <= 1000 digits; the default context has 28


@functools.cache  # one function per scale: _tuples recognises them by identity
def _fixed_decimal(scale: int) -> Converter:
    q = Decimal(1).scaleb(-scale)

    def conv(s: str) -> Decimal | None:
        if s[-1] in "Ny":  # NaN, Infinity, -Infinity: no Decimal can carry them
            return None
        return Decimal(s).quantize(q, context=_WIDE)

    return conv


def _variable_decimal(s: str) -> dict[str, Any] | None:
    # Postgres prints numeric in plain notation ("-123.4500"): the digits are the unscaled value.
    if s[-1] in "Ny":  # NaN, Infinity, -Infinity
        return None
    dot = s.find(".")
    if dot < 0:
        return {"scale": 0, "value": avro.unscaled_bytes(_integer(s))}
    s = s.rstrip("0")  # Debezium strips trailing zeros of a variable-scale value: 1.50 -> 1.5
    scale = len(s) - dot - 1
    return {"scale": scale, "value": avro.unscaled_bytes(_integer(s[:dot] + s[dot + 1 :]))}


def _integer(digits: str) -> int:
    # int() refuses texts of more than 4300 digits (sys.int_info.str_digits_check_threshold);
    # numeric has up to 147455: through Decimal, which has no such limit
    return int(digits) if len(digits) <= 4000 else int(Decimal(digits))


def _bits(s: str) -> bytes:
    # As Debezium: the bits as an unsigned number (first bit most significant), little-endian,
    # in as few bytes as the number needs (none for zero).
    n = int(s, 2) if s else 0
    return n.to_bytes((n.bit_length() + 7) // 8, "little")


def _bit1(s: str) -> bool:
    return s == "1"


_POINT = struct.Struct("<BIdd")


def _point(s: str) -> dict[str, Any]:
    x, y = s[1:-1].split(",")
    fx, fy = float(x), float(y)
    return {"x": fx, "y": fy, "wkb": _POINT.pack(1, 1, fx, fy), "srid": None}


def _enum_array(s: str) -> list[str]:
    """An enum array's labels; a NULL element is an error: Debezium's elements are required."""
    out = parse_array(s)
    if None in out:
        raise ValueError(
            "a NULL element in an enum array: Debezium's enum arrays have non-null elements (its "
            "connector stops on this value too); keep NULL out of the column, e.g. with CHECK "
            "(array_position(col, NULL) IS NULL), after correcting the row; a change already in "
            "the slot cannot be written: take a new snapshot (drop the slot, or snapshot: "
            "when_needed) to get past it"
        )
    return out  # type: ignore[return-value]


def enum_schema(labels: list[str]) -> dict[str, Any]:
    """Debezium's Postgres ``Enum``: ``allowed`` is the labels joined by commas, as they are.

    Built here rather than by ``avro.enum`` on purpose: Debezium's Postgres connector does not
    escape a comma inside a label (its MySQL connector's rules are its own)."""
    return {
        "type": "string",
        "connect.version": 1,
        "connect.name": "io.debezium.data.Enum",
        "connect.parameters": {"allowed": ",".join(labels)},
    }


_HSTORE_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"=>(?:"((?:[^"\\]|\\.)*)"|NULL)', re.S)
_ESCAPED = re.compile(r"\\(.)", re.S)


def _unescape(s: str) -> str:
    return _ESCAPED.sub(r"\1", s) if "\\" in s else s


def _hstore(s: str) -> str:
    """'"a"=>"1", "b"=>NULL' -> '{"a":"1","b":null}' (compact JSON, the server's key order)."""
    out = {}
    for m in _HSTORE_PAIR.finditer(s):
        v = m.group(2)  # None: NULL (findall would say "")
        out[_unescape(m.group(1))] = None if v is None else _unescape(v)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def parse_array(s: str) -> list[str | None]:
    """A Postgres array literal in its output form -> its elements' texts (None for NULL).

    Quoted elements are unescaped; a multi-dimensional array is flattened in row-major order;
    explicit bounds ("[0:1]={a,b}") are dropped.
    """
    if s[0] == "[":
        s = s[s.index("=") + 1 :]
    body = s[1:-1]
    if not body:
        return []
    if '"' not in body and "{" not in body:
        return [None if x == "NULL" else x for x in body.split(",")]
    out: list[str | None] = []
    i, n = 0, len(s)
    find = s.find
    while i < n:
        c = s[i]
        if c == "{" or c == "}" or c == ",":
            i += 1
        elif c == '"':
            parts: list[str] = []
            i += 1
            while True:
                q = find('"', i)
                if q < 0:  # (the server never sends one; without this check: an endless loop)
                    raise ValueError("unterminated quoted element in array literal")
                b = find("\\", i, q)
                if b < 0:
                    parts.append(s[i:q])
                    i = q + 1
                    break
                parts.append(s[i:b])
                parts.append(s[b + 1])
                i = b + 2
            out.append("".join(parts))
        else:
            j = i
            while s[j] != "," and s[j] != "}":
                j += 1
            tok = s[i:j]
            out.append(None if tok == "NULL" else tok)
            i = j
    return out


def _array(elem: Converter | None) -> Converter:
    if elem is None:
        return parse_array

    def conv(s: str) -> list[Any]:
        return [None if v is None else elem(v) for v in parse_array(s)]

    return conv


# --- mappings -------------------------------------------------------------------------------------


_VSD_ZERO = {"scale": 0, "value": b"\x00"}


def _numeric(typmod: int) -> Mapping:
    if typmod < 4:
        return Mapping("numeric", avro.VARIABLE_SCALE_DECIMAL, _variable_decimal, _VSD_ZERO)
    precision = ((typmod - 4) >> 16) & 0xFFFF
    scale = (((typmod - 4) & 0x7FF) ^ 1024) - 1024  # 11-bit signed since Postgres 15
    if scale < 0:  # numeric(p,-s) rounds left of the point: Avro's decimal has no such scale
        return Mapping(
            f"numeric({precision},{scale})",
            avro.VARIABLE_SCALE_DECIMAL,
            _variable_decimal,
            _VSD_ZERO,
        )
    return Mapping(
        f"numeric({precision},{scale})",
        avro.decimal(precision, scale),
        _fixed_decimal(scale),
        Decimal(0).scaleb(-scale),
    )


def _timestamp(typmod: int) -> Mapping:
    if 0 <= typmod <= 3:
        return Mapping(f"timestamp({typmod})", avro.TIMESTAMP_MILLIS, _ts_millis, 0)
    return Mapping("timestamp", avro.TIMESTAMP_MICROS, _ts_micros, 0)


def _time(typmod: int) -> Mapping:
    if 0 <= typmod <= 3:
        return Mapping(f"time({typmod})", avro.TIME_MILLIS, _time_millis, 0)
    return Mapping("time", avro.TIME_MICROS, _time_us, 0)


def _bit(typmod: int) -> Mapping:
    if typmod <= 1:  # bit without a length is bit(1)
        return Mapping("bit(1)", avro.BOOLEAN, _bit1, False)
    return Mapping(f"bit({typmod})", avro.bits(typmod), _bits, b"")


def _varbit(typmod: int) -> Mapping:
    if typmod == 1:
        return Mapping("bit varying(1)", avro.BOOLEAN, _bit1, False)
    if typmod < 1:
        return Mapping("bit varying", avro.bits(INT32_MAX), _bits, b"")
    return Mapping(f"bit varying({typmod})", avro.bits(typmod), _bits, b"")


def _text(name: str) -> Mapping:
    return Mapping(name, avro.STRING, None, "")


_FIXED: dict[int, Mapping] = {
    16: Mapping("boolean", avro.BOOLEAN, _bool, False),
    17: Mapping("bytea", avro.BYTES, _bytea, b""),
    18: _text('"char"'),
    19: _text("name"),
    20: Mapping("bigint", avro.INT64, int, 0),
    21: Mapping("smallint", avro.INT16, int, 0),
    23: Mapping("integer", avro.INT32, int, 0),
    25: _text("text"),
    26: Mapping("oid", avro.INT64, int, 0),
    114: Mapping("json", avro.JSON, None, ""),
    142: Mapping("xml", avro.XML, None, ""),
    600: Mapping("point", avro.POINT, _point, _point("(0,0)")),
    650: _text("cidr"),
    700: Mapping("real", avro.FLOAT32, _float, 0.0),
    701: Mapping("double precision", avro.FLOAT64, _float, 0.0),
    774: _text("macaddr8"),
    790: Mapping("money", avro.decimal(None, 2), _money, Decimal("0.00")),
    829: _text("macaddr"),
    869: _text("inet"),
    1042: _text("character"),
    1043: _text("character varying"),
    1082: Mapping("date", avro.DATE, _date, 0),
    1186: Mapping("interval", avro.MICRO_DURATION, _interval, 0),
    1266: Mapping("timetz", avro.ZONED_TIME, _timetz, "00:00:00Z"),
    2950: Mapping("uuid", avro.UUID, None, ""),
    3614: Mapping("tsvector", avro.TSVECTOR, None, ""),
    3802: Mapping("jsonb", avro.JSON, None, ""),
}

_ZONED_ZERO = "1970-01-01T00:00:00Z"  # Debezium's neutral ZonedTimestamp, whatever the precision
_TIMESTAMPTZ = Mapping("timestamptz(0)", avro.ZONED_TIMESTAMP, _timestamptz, _ZONED_ZERO)

_BY_TYPMOD: dict[int, Callable[[int], Mapping]] = {
    1184: _timestamptz_typmod,
    1700: _numeric,
    1114: _timestamp,
    1083: _time,
    1560: _bit,
    1562: _varbit,
}

# Extension types, known by name (their oids differ per database).
_BY_NAME: dict[str, Mapping] = {
    "hstore": Mapping(
        "hstore",
        avro.JSON,
        _hstore,
        "{}",
        json.dumps({UNAVAILABLE: UNAVAILABLE}, separators=(",", ":")),
    ),
    "ltree": Mapping("ltree", avro.LTREE, None, ""),
    "citext": _text("citext"),
}


def _array_of(elem: Mapping, enum: bool = False) -> Mapping:
    if enum:  # Debezium's enum arrays have required elements
        return Mapping(f"{elem.name}[]", avro.array(elem.avro), _enum_array, [])
    return Mapping(f"{elem.name}[]", avro.array(["null", elem.avro]), _array(elem.convert), [])


def mapping_for(
    type_oid: int, typmod: int, type_name: str | None = None, resolve: Resolver | None = None
) -> Mapping:
    """The mapping of a column type; unknown types map to their text form.

    ``typmod`` is the column's (for an array column, its elements'). ``resolve`` looks up types
    that are not fixed built-ins (enums, domains, arrays, extension types); without it they map
    to their text form.
    """
    m = _FIXED.get(type_oid)
    if m is not None:
        return m
    f = _BY_TYPMOD.get(type_oid)
    if f is not None:
        return f(typmod)
    info = resolve(type_oid) if resolve is not None else None
    if info is None:
        return _text(type_name or f"oid {type_oid}")
    if info.typtype == "d" and info.base:
        # A domain column's typmod is -1; the domain's own typmod (varchar(10), numeric(9,2))
        # belongs to its base type.
        base_typmod = info.base_typmod if info.base_typmod >= 0 else typmod
        return replace(mapping_for(info.base, base_typmod, None, resolve), name=info.name)
    if info.typtype == "e":
        return Mapping(info.name, enum_schema(list(info.enum_labels)), None, "")
    if info.category == "A" and info.element:
        elem = mapping_for(info.element, typmod, None, resolve)
        elem_info = resolve(info.element) if resolve is not None else None
        return _array_of(elem, elem_info is not None and elem_info.typtype == "e")
    ext = _BY_NAME.get(info.name.rsplit(".", 1)[-1].strip('"'))
    if ext is not None:
        return ext
    return _text(type_name or info.name)
