"""Column defaults as Debezium's Postgres connector carries them in its schemas.

Debezium reads each column's default expression (``pg_get_expr`` of ``pg_attrdef``, what JDBC's
COLUMN_DEF gives) and converts it without evaluating anything, by type:

- a literal (``'abc'::text``, ``42``, ``'-1.5'::numeric``) becomes the column's value for it;
- a function call or ``CURRENT_DATE``/``CURRENT_TIMESTAMP``/... becomes a placeholder of the type:
  0 for numbers (so a ``serial`` column's ``nextval(...)`` gives ``"default": 0``), false,
  ``""``, ``"{}"`` for json, the nil uuid, the epoch for dates and times;
- ``NULL::type``, anything it cannot parse, and types it has no rule for (bytea, arrays, money,
  geometric and network types, domains, intervals from functions) give no default.

``column_default`` follows those rules; the value is then converted by the column's own converter
(the one rows go through), so it has the row values' form and the schema's type. The catalog
session's settings (DateStyle ISO, TimeZone UTC, IntervalStyle iso_8601) make ``pg_get_expr``
print constants in the form those converters read.
"""

from __future__ import annotations

import math
import re
from typing import Any

from cdc.model import NO_DEFAULT
from cdc.sources.postgres._types import Mapping, Resolver

ENUM = "io.debezium.data.Enum"
_LITERAL = re.compile(r"'([^']*(?:''[^']*)*)'")
_FUNCTION = re.compile(r"[(]?[A-Za-z0-9_.]+\((?:.+(?:, ?.+)*)?\)")
_CURRENT = frozenset(
    ("current_timestamp", "current_time", "current_date", "localtime", "localtimestamp")
)

# Type oid -> the text a generated default (a function call) stands for, in the form the server
# sends values (what the column's converter reads); None: Debezium gives such defaults up.
_PLACEHOLDER: dict[int, str | None] = {
    16: "false",  # bool
    1042: "",  # bpchar
    1043: "",  # varchar
    25: "",  # text
    1700: "0.0",  # numeric
    700: "0.0",  # float4
    701: "0.0",  # float8
    21: "0",  # int2
    23: "0",  # int4 (serial)
    20: "0",  # int8 (bigserial)
    114: "{}",  # json
    3802: "{}",  # jsonb
    142: "",  # xml
    2950: "00000000-0000-0000-0000-000000000000",  # uuid
    1082: "1970-01-01",  # date
    1083: "00:00:00",  # time
    1114: "1970-01-01 00:00:00",  # timestamp
    1184: "1970-01-01 00:00:00+00",  # timestamptz
    1186: None,  # interval
    1560: None,  # bit
    1562: None,  # varbit
}


def _is_enum(type_oid: int, mapping: Mapping, resolve: Resolver) -> bool:
    if not isinstance(mapping.avro, dict) or mapping.avro.get("connect.name") != ENUM:
        return False
    info = resolve(type_oid)
    return info is not None and info.typtype == "e"


def _literal(expr: str) -> str | None:
    """Debezium's extractDefault: the first quoted literal, or the raw text; None for NULL::."""
    if "'" not in expr:
        return None if expr.startswith("NULL::") else expr
    m = _LITERAL.search(expr)
    return None if m is None else m.group(1).replace("''", "'")


def column_default(expr: str | None, type_oid: int, mapping: Mapping, resolve: Resolver) -> Any:
    """The default of a column of type ``type_oid`` (mapped by ``mapping``) whose default
    expression is ``expr`` (None: no default), as a row value; ``NO_DEFAULT`` when Debezium's
    schema carries none for it. ``resolve`` tells enums from other types (a domain over an enum
    has no default in Debezium's schema: it knows no rule for the domain's name)."""
    if expr is None:
        return NO_DEFAULT
    expr = expr.strip()
    if type_oid not in _PLACEHOLDER and _is_enum(type_oid, mapping, resolve):
        # 'label'::mood: the label, when the cast is to the column's type (it always is).
        value, sep, _ = expr.rpartition("::")
        if not sep or len(value) < 2 or value[0] != "'" or value[-1] != "'":
            return NO_DEFAULT
        text: str | None = value[1:-1]
    elif type_oid not in _PLACEHOLDER:
        return NO_DEFAULT
    elif _FUNCTION.match(expr) or expr.lower() in _CURRENT:
        text = _PLACEHOLDER[type_oid]
    else:
        text = _literal(expr)
    if text is None:
        return NO_DEFAULT
    if type_oid == 16:
        return text.lower() == "true"  # Java's Boolean.parseBoolean
    try:
        value = text if mapping.convert is None else mapping.convert(text)
    except (ValueError, IndexError, TypeError, ArithmeticError):
        return NO_DEFAULT  # as Debezium: a default it cannot parse is left out
    # A struct (numeric without a scale: VariableScaleDecimal) cannot be a Connect default;
    # Debezium leaves it out. Nor can JSON hold NaN or an infinity (and NaN, unequal to itself,
    # would make every announcement of the table look like a new version).
    if value is None or isinstance(value, dict):
        return NO_DEFAULT
    if isinstance(value, float) and not math.isfinite(value):
        return NO_DEFAULT
    return value
