"""Column defaults as Debezium's MySQL connector carries them in its schemas, for a subset of types.

The default comes from ``information_schema.COLUMNS.COLUMN_DEFAULT`` (Debezium parses the DDL;
both give the declared default). MySQL prints a literal bare (``abc``, ``0``) and flags an
expression with ``DEFAULT_GENERATED`` in ``EXTRA``; MariaDB quotes string literals (``'abc'``),
prints ``NULL`` for a null default and functions with parentheses (``current_timestamp()``).

Carried, as Debezium's BinlogDefaultValueConverter converts them: integers (``true``/``false``
as 1/0), decimals, float and double, char/varchar/text/enum/set strings, date, datetime, time and
year literals (a zero date: the epoch when NOT NULL, none when nullable), and
``CURRENT_TIMESTAMP`` on a NOT NULL datetime or timestamp column (the epoch, Debezium's value for
it). Not carried yet: timestamp literals (Debezium reads them in the JVM's time zone), bit, binary
and json defaults; expression defaults get none, in Debezium too.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cdc.model import NO_DEFAULT
from cdc.sources.mysql._types import ColumnType, Mapping

_INTEGERS = ("tinyint", "smallint", "mediumint", "int", "bigint")
_STRINGS = ("char", "varchar", "text", "enum", "set")
_NOW = ("current_timestamp", "now", "localtime", "localtimestamp")


def _unquote(raw: str) -> str | None:
    """A MariaDB string literal's value, or None when ``raw`` is not one."""
    if len(raw) >= 2 and raw[0] == "'" and raw[-1] == "'":
        return raw[1:-1].replace("''", "'").replace("\\\\", "\\")
    return None


def column_default(
    raw: Any, extra: Any, t: ColumnType, m: Mapping, optional: bool, mariadb: bool
) -> Any:
    """The default of a column of type ``t`` (mapped by ``m``; ``optional``: nullable) whose
    COLUMN_DEFAULT is ``raw`` and EXTRA ``extra``, as a row value; ``NO_DEFAULT`` when none is
    carried."""
    if raw is None:
        return NO_DEFAULT
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    expression = "DEFAULT_GENERATED" in str(extra or "").upper()
    if mariadb:
        literal = _unquote(text)
        if literal is not None:
            text = literal
        elif text.upper() == "NULL":
            return NO_DEFAULT
        elif t.kind in _STRINGS or (not text[:1].isdigit() and text[:1] not in "-+."):
            expression = True  # a function or an expression, not a number
    if expression:
        now = text.lower().split("(", 1)[0] in _NOW  # CURRENT_TIMESTAMP(3), current_timestamp()
        if now and t.kind in ("datetime", "timestamp") and not optional:
            return m.fallback  # the epoch, in the column's form
        return NO_DEFAULT
    k = t.kind
    try:
        if k in _INTEGERS:
            if text.lower() in ("true", "false"):
                text = "1" if text.lower() == "true" else "0"
            if k == "bigint" and t.unsigned:
                return Decimal(int(text))
            return int(text)
        if k == "decimal":
            return Decimal(text)
        if k in ("float", "double"):
            return float(text)
    except (ValueError, InvalidOperation):
        return NO_DEFAULT
    if k in _STRINGS:
        return text
    if k in ("date", "datetime", "time", "year"):
        return _temporal(text, t, m, optional)
    return NO_DEFAULT


_TIME = re.compile(r"(-)?(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?")


def _temporal(text: str, t: ColumnType, m: Mapping, optional: bool) -> Any:
    """Date, datetime, time and year literals, as BinlogDefaultValueConverter reads them: a zero
    date (``0000-00-00``) is no default on a nullable column and the epoch on a NOT NULL one."""
    if t.kind == "year":
        return int(text) if text.isdigit() else NO_DEFAULT
    if t.kind == "time":
        mt = _TIME.fullmatch(text)
        if mt is None:
            return NO_DEFAULT
        neg, h, mi, sec, frac = mt.groups()
        us = ((int(h) * 60 + int(mi)) * 60 + int(sec)) * 1_000_000 + int((frac or "").ljust(6, "0"))
        return -us if neg else us
    if text.startswith("0000-00-00") or text == "0":
        return NO_DEFAULT if optional else m.fallback
    try:
        if t.kind == "date":
            value: Any = date.fromisoformat(text[:10])
        else:
            value = datetime.fromisoformat(text)
    except ValueError:
        return NO_DEFAULT  # a zero-in-part date ('2020-00-15') and the like
    assert m.from_select is not None
    return m.from_select(value)
