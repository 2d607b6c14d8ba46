"""The type mapping of the database targets: a column's Avro type -> a target SQL type and the
converter of its values.

Keyed by the Avro type (its ``connect.name`` and ``connect.parameters``), never by the source's
own type name, so that rows from any source (a database, or the built-in log, which keeps only the
Avro schemas) map alike. docs/targets.md shows the tables; tests/integration/targets check them.

Target types are spelled as the target's catalog prints them (Postgres' ``format_type``, MySQL's
``information_schema.COLUMNS.COLUMN_TYPE`` without integer display widths), so that a table's
columns can be compared with the mapping of a new table version (see ``widens``).

A converter turns an Avro-ready value (what the Avro encoder takes: ``Decimal``, days since the
epoch, microseconds, ISO strings...) into a parameter the target's driver sends; None means the
value goes as it is. Temporal values become text in the target's literal syntax, computed in
integers, so that dates before year 1 or after 9999 (which ``datetime`` cannot hold) still reach
Postgres.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

Dialect = Literal["postgres", "mysql"]
Converter = Callable[[Any], Any]

# Debezium's value for an unchanged TOASTed column (Postgres, REPLICA IDENTITY DEFAULT): not the
# row's value, so an upsert must leave the column as it is in the target.
UNAVAILABLE = "__debezium_unavailable_value"
UNAVAILABLE_BYTES = UNAVAILABLE.encode()
UNAVAILABLE_VALUES: tuple[Any, ...] = (UNAVAILABLE, UNAVAILABLE_BYTES, [UNAVAILABLE])

# Debezium's infinity timestamps (pgjdbc's DATE_POSITIVE/NEGATIVE_INFINITY), per unit.
_INFINITY_TS = {
    9223372036825200000: "infinity",
    -9223372036832400000: "-infinity",
    9223372036825200: "infinity",
    -9223372036832400: "-infinity",
}
_INFINITY_DATE = {-2147472692: "infinity", -2147472691: "-infinity"}

_MYSQL_MAX_PRECISION = 65
_MYSQL_MAX_SCALE = 30
# A key column must have a bounded length in MySQL (an index holds at most 3072 bytes).
MYSQL_KEY_CHARS = 255


@dataclass(frozen=True, slots=True)
class Mapping:
    """How one column lands in a target: its SQL type and the converter of its values."""

    sql_type: str
    convert: Converter | None
    kind: str  # the Avro/connect type it was chosen by, for the docs and error messages


def civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of ``days`` since 1970-01-01 in the proleptic Gregorian calendar, for
    any integer (year 0 = 1 BC): Howard Hinnant's days_from_civil inverse."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def _date_text(days: int, bc: bool) -> str:
    y, m, d = civil(days)
    if y <= 0 and bc:
        return f"{1 - y:04d}-{m:02d}-{d:02d} BC"
    return f"{y:04d}-{m:02d}-{d:02d}"


def _pg_date(days: int) -> str:
    return _INFINITY_DATE.get(days) or _date_text(days, True)


def _mysql_date(days: int) -> str:
    return _date_text(days, False)


def _clock(micros: int) -> str:
    """``[-]H:MM:SS.ffffff`` of a duration in microseconds: hours may pass 24 (a MySQL TIME, a
    Postgres ``time`` of 24:00:00, or an ``interval`` override take it)."""
    sign = "-" if micros < 0 else ""
    s, us = divmod(abs(micros), 1_000_000)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{sign}{h:02d}:{m:02d}:{s:02d}.{us:06d}"


def _timestamp_text(micros: int, bc: bool) -> str:
    days, us = divmod(micros, 86_400_000_000)
    y, mo, d = civil(days)
    clock = _clock(us)
    if y <= 0 and bc:
        return f"{1 - y:04d}-{mo:02d}-{d:02d} {clock} BC"
    return f"{y:04d}-{mo:02d}-{d:02d} {clock}"


def _pg_micro_ts(v: int) -> str:
    return _INFINITY_TS.get(v) or _timestamp_text(v, True)


def _pg_milli_ts(v: int) -> str:
    return _INFINITY_TS.get(v) or _timestamp_text(v * 1000, True)


def _mysql_micro_ts(v: int) -> str:
    return _timestamp_text(v, False)


def _mysql_milli_ts(v: int) -> str:
    return _timestamp_text(v * 1000, False)


def _milli_clock(v: int) -> str:
    return _clock(v * 1000)


def _pg_zoned(v: str) -> str:
    # java.time's years outside 1..9999 (+12345-..., -0043-... = 44 BC, 0000-... = 1 BC) are
    # not Postgres input as such: spelled with BC, or without the sign.
    if v in ("infinity", "-infinity"):
        return v
    if v[0] == "+":
        return v[1:]
    if v[0] == "-" or v.startswith("0000-"):
        year, rest = v.lstrip("-").split("-", 1)
        bc = 1 + int(year) if v[0] == "-" else 1
        return f"{bc:04d}-{rest.replace('T', ' ')} BC"
    return v


def _mysql_zoned(v: str) -> str:
    # UTC ISO 8601 -> the DATETIME literal of the same instant in UTC (the session's zone).
    return v.replace("T", " ").removesuffix("Z")


def _pg_zoned_time(v: str) -> str:
    return v[:-1] + "+00" if v.endswith("Z") else v


def _variable_decimal(v: dict[str, Any]) -> Decimal:
    return Decimal(int.from_bytes(v["value"], "big", signed=True)).scaleb(-int(v["scale"]))


def _bits_text(length: int) -> Converter:
    """Debezium's Bits (the bit string as an unsigned little-endian integer) -> '0101...'."""
    width = 0 if length >= 2147483647 else length

    def convert(v: bytes) -> str:
        return format(int.from_bytes(v, "little"), "b").zfill(width) if v else "0" * width

    return convert


def _bits_int(v: bytes) -> int:
    return int.from_bytes(v, "little")


def _point_text(v: dict[str, Any]) -> str:
    return f"({v['x']!r},{v['y']!r})"


def _point_wkb(v: dict[str, Any]) -> bytes | None:
    wkb: bytes | None = v.get("wkb")
    return wkb


def _duration(v: int) -> timedelta:
    return timedelta(microseconds=v)


def _json_default(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def _json_array(convert: Converter | None) -> Converter:
    def to_json(v: list[Any]) -> str:
        items = v if convert is None else [None if x is None else convert(x) for x in v]
        return json.dumps(items, default=_json_default)

    return to_json


def _array_of(convert: Converter) -> Converter:
    def each(v: list[Any]) -> list[Any]:
        return [None if x is None else convert(x) for x in v]

    return each


def _params(avro: dict[str, Any]) -> dict[str, str]:
    params: dict[str, str] = avro.get("connect.parameters") or {}
    return params


def allowed(avro: dict[str, Any]) -> list[str]:
    """The labels of an Enum/EnumSet, split as Debezium's EnumeratedValues escapes them
    (``\\,`` a comma inside a label, ``\\\\`` a backslash)."""
    text = _params(avro).get("allowed", "")
    out, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            i += 2
            continue
        if c == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def _mysql_labels(kind: str, labels: list[str]) -> str:
    quoted = ",".join("'" + x.replace("\\", "\\\\").replace("'", "''") + "'" for x in labels)
    return f"{kind}({quoted})"


def kind_of(avro: Any) -> str:
    """The name a column's Avro type is mapped by: its ``connect.name``, else ``int16`` for a
    Connect INT16, else the Avro type (``array`` for an array)."""
    if isinstance(avro, str):
        return avro
    if avro.get("type") == "array":
        return "array"
    name = avro.get("connect.name")
    if name:
        return str(name).rsplit(".", 1)[-1]
    if avro.get("connect.type") == "int16":
        return "int16"
    return str(avro.get("type"))


# Plain kinds: (Postgres type, MySQL type), values as they are.
_PLAIN: dict[str, tuple[str, str]] = {
    "int16": ("smallint", "smallint"),
    "int": ("integer", "int"),
    "long": ("bigint", "bigint"),
    "float": ("real", "float"),
    "double": ("double precision", "double"),
    "boolean": ("boolean", "tinyint(1)"),
    "string": ("text", "longtext"),
    "bytes": ("bytea", "longblob"),
    "Year": ("integer", "year"),
    "Json": ("jsonb", "json"),
    "Uuid": ("uuid", "char(36)"),
    "Xml": ("xml", "longtext"),
    "Ltree": ("text", "longtext"),
    "TsVector": ("tsvector", "longtext"),
    "Enum": ("text", ""),
    "EnumSet": ("text", ""),
}
# Temporal kinds: (Postgres type, its converter, MySQL type, its converter).
_TEMPORAL: dict[str, tuple[str, Converter, str, Converter]] = {
    "Date": ("date", _pg_date, "date", _mysql_date),
    "Time": ("time(3) without time zone", _milli_clock, "time(3)", _milli_clock),
    "MicroTime": ("time(6) without time zone", _clock, "time(6)", _clock),
    "Timestamp": ("timestamp(3) without time zone", _pg_milli_ts, "datetime(3)", _mysql_milli_ts),
    "MicroTimestamp": (
        "timestamp(6) without time zone",
        _pg_micro_ts,
        "datetime(6)",
        _mysql_micro_ts,
    ),
    "ZonedTimestamp": ("timestamp with time zone", _pg_zoned, "datetime(6)", _mysql_zoned),
    "ZonedTime": ("time with time zone", _pg_zoned_time, "time(6)", _mysql_zoned),
    "MicroDuration": ("interval", _duration, "bigint", None),  # type: ignore[dict-item]
}


def map_column(avro: Any, dialect: Dialect, key: bool = False) -> Mapping:
    """The target type and converter of a column of Avro type ``avro`` (a non-null value's type);
    ``key``: the column is in the primary key (MySQL needs a bounded length there)."""
    kind = kind_of(avro)
    pg = dialect == "postgres"
    if kind in ("string", "Json", "Xml", "Ltree", "TsVector") and key and not pg:
        return Mapping(f"varchar({MYSQL_KEY_CHARS})", None, kind)
    if kind == "bytes" and key and not pg:
        return Mapping(f"varbinary({MYSQL_KEY_CHARS})", None, kind)
    if kind in ("Enum", "EnumSet") and not pg:
        labels = allowed(avro)
        if labels == [""]:
            return Mapping(f"varchar({MYSQL_KEY_CHARS})", None, kind)
        return Mapping(_mysql_labels("enum" if kind == "Enum" else "set", labels), None, kind)
    if kind in _PLAIN:
        return Mapping(_PLAIN[kind][0 if pg else 1], None, kind)
    if kind in _TEMPORAL:
        pg_type, pg_conv, my_type, my_conv = _TEMPORAL[kind]
        return Mapping(pg_type, pg_conv, kind) if pg else Mapping(my_type, my_conv, kind)
    if kind == "Decimal":
        params = _params(avro)
        scale = int(params.get("scale", avro.get("scale", 0)))
        precision = params.get("connect.decimal.precision")
        if pg:
            sql = f"numeric({precision},{scale})" if precision else "numeric"
        else:
            p = min(int(precision) if precision else _MYSQL_MAX_PRECISION, _MYSQL_MAX_PRECISION)
            sql = f"decimal({p},{min(scale, _MYSQL_MAX_SCALE)})"
        return Mapping(sql, None, kind)
    if kind == "VariableScaleDecimal":
        sql = "numeric" if pg else f"decimal({_MYSQL_MAX_PRECISION},{_MYSQL_MAX_SCALE})"
        return Mapping(sql, _variable_decimal, kind)
    if kind == "Bits":
        length = int(_params(avro).get("length", "2147483647"))
        if pg:
            sql = "bit varying" if length >= 2147483647 else f"bit varying({length})"
            return Mapping(sql, _bits_text(length), kind)
        if length <= 64:
            return Mapping(f"bit({length})", _bits_int, kind)
        return Mapping("longblob", None, kind)
    if kind == "Point":
        if pg:
            return Mapping("point", _point_text, kind)
        return Mapping("longblob", _point_wkb, kind)
    if kind == "array":
        item = avro["items"]
        item = next((t for t in item if t != "null"), "string") if isinstance(item, list) else item
        inner = map_column(item, dialect)
        if pg and kind_of(item) != "array":
            conv = None if inner.convert is None else _array_of(inner.convert)
            return Mapping(inner.sql_type + "[]", conv, kind)
        return Mapping("json" if not pg else "jsonb", _json_array(inner.convert), kind)
    # A record or type this mapping does not know: its JSON text, so nothing is dropped.
    return Mapping("jsonb" if pg else "json", _as_json, kind)


def _as_json(v: Any) -> str:
    return json.dumps(v, default=_json_default)


# --- comparing a target column's type with a new table version's ------------------------------

_INT_RANKS = {
    "tinyint(1)": 0,
    "tinyint": 0,
    "smallint": 1,
    "mediumint": 2,
    "integer": 3,
    "int": 3,
    "bigint": 4,
}
_FLOAT_RANKS = {"real": 0, "float": 0, "double precision": 1, "double": 1}
_DISPLAY_WIDTH = re.compile(r"^(tinyint|smallint|mediumint|int|bigint|year)\(\d+\)(.*)$")
_SIZED = re.compile(r"^([a-z ]+?)\((\d+)(?:,(\d+))?\)(.*)$")


def normalize(sql_type: str) -> str:
    """A catalog type in the spelling ``map_column`` uses: lower case, MariaDB's integer display
    widths dropped (``int(11)`` -> ``int``; ``tinyint(1)`` stays: it is MySQL's boolean)."""
    t = sql_type.strip().lower()
    if t == "tinyint(1)":
        return t
    m = _DISPLAY_WIDTH.match(t)
    if m:
        return m.group(1) + m.group(2)
    return t


def _sized(t: str) -> tuple[str, int, int | None] | None:
    m = _SIZED.match(t)
    if m is None or m.group(4):
        return None
    return m.group(1), int(m.group(2)), None if m.group(3) is None else int(m.group(3))


def widens(old: str, new: str) -> bool:
    """True when a column of type ``old`` can become ``new`` without losing any value it holds:
    a wider integer or float, an integer to a decimal, a decimal with at least as many digits
    on each side of the point, a longer string or time precision, a string to text, an
    enum/set with labels added at the end."""
    old, new = normalize(old), normalize(new)
    if old == new:
        return True
    if old in _INT_RANKS and new in _INT_RANKS:
        return _INT_RANKS[new] >= _INT_RANKS[old]
    if old in _FLOAT_RANKS and new in _FLOAT_RANKS:
        return _FLOAT_RANKS[new] >= _FLOAT_RANKS[old]
    if old in _INT_RANKS and new == "numeric":
        return True
    if new in ("text", "longtext") and (old.startswith(("varchar", "char", "character"))):
        return True
    if new == "numeric" and old.startswith("numeric"):
        return True
    if (old.startswith(("enum(", "set(")) and new.startswith(old.split("(")[0] + "(")) and (
        new[:-1].startswith(old[:-1] + ",")
    ):
        return True
    a, b = _sized(old), _sized(new)
    if a is None or b is None or a[0] != b[0]:
        if old in _INT_RANKS and b is not None and b[0] in ("numeric", "decimal"):
            digits = {0: 3, 1: 5, 2: 8, 3: 10, 4: 20}[_INT_RANKS[old]]
            return b[1] - (b[2] or 0) >= digits
        return False
    if a[2] is None and b[2] is None:
        return b[1] >= a[1]
    sa, sb = a[2] or 0, b[2] or 0
    return sb >= sa and b[1] - sb >= a[1] - sa
