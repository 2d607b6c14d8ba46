"""Rows events -> converted rows: python-mysql-replication's parsing, or the compiled decoder.

Each row of a write, update or delete event becomes a ``(before, after)`` pair of row tuples
(None for the image the event has not), converted by the table version's ``from_binlog``
converters: what the change events carry.

- **python** (``python_rows``), the reference: the library parses the row images (``ev.rows``,
  with the source's own TIME/DATE/DATETIME and JSON decoders patched in), then each value goes
  through its column's converter.
- **native** (``RowsDecoder``, ``cdc._native.RowsDecoder``, native/src/binlog.rs): the row images
  are taken as bytes before the library parses them and decoded in one compiled pass, straight to
  the converted values, by a plan made once per table map (the column types and metadata of the
  table map, the table version's types). Contract: the very rows ``python_rows`` returns for the
  same event (equal values of the same types), or it hands the event to ``python_rows``, which
  returns the rows or raises its error: so malformed bytes end in the reference's error. A table
  with a column the compiled decoder does not cover (pre-5.6 temporal types, character sets other
  than utf8/ascii/latin1, partial JSON updates) is decoded by the library; each event handed over
  is counted (``native_fallbacks``) and the first one logged.

The path is chosen once per process, as the Avro writers' is (``cdc._native_avro``): native when
the extension is built with a ``RowsDecoder``, unless ``CDC_NATIVE=0``. ``describe()`` says which
and why (logged once when a stream starts); ``explain`` prints a table map's plan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pymysqlreplication.constants import BINLOG
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc import _native_avro
from cdc.errors import SourceError
from cdc.sources.mysql import _json
from cdc.sources.mysql._decoders import encoding
from cdc.sources.mysql._schema import TableVersion
from cdc.sources.mysql._types import ColumnType, mapping

log = logging.getLogger(__name__)

Pair = tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]

# Operations of the compiled decoder, numbered as in native/src/binlog.rs.
(INT8, UINT8, INT16, UINT16, INT24, UINT24, INT32, UINT32, INT64, UINT64_DECIMAL) = range(10)
(FLOAT, FLOAT_ROUNDED, DOUBLE, DECIMAL, BIT1, BITS, TEXT, BYTES, BINARY, JSON_BINARY) = range(
    10, 20
)
(DATE, DATETIME_MILLIS, DATETIME_MICROS, TIME, TIMESTAMP, YEAR, ENUM, SET) = range(20, 28)
OP_NAMES = {
    v: k
    for k, v in dict(globals()).items()
    if k.isupper() and isinstance(v, int) and k not in ("UTF8", "ASCII", "LATIN1")
}
# TEXT's character sets (its second parameter): the Python codecs the library would decode with
UTF8, ASCII, LATIN1 = 0, 1, 2
_CHARSETS = {"utf8": UTF8, "utf-8": UTF8, "ascii": ASCII, "cdc-mysql-latin1": LATIN1}

# binlog column type codes (MySQL's enum_field_types) the plan reads
_TINY, _SHORT, _LONG, _FLOAT, _DOUBLE, _LONGLONG, _INT24 = 1, 2, 3, 4, 5, 8, 9
_DATE, _YEAR, _VARCHAR, _BIT, _TIMESTAMP2, _DATETIME2, _TIME2 = 10, 13, 15, 16, 17, 18, 19
_JSON, _NEWDECIMAL, _ENUM, _SET, _BLOB, _VAR_STRING, _STRING, _GEOMETRY = (
    245,
    246,
    247,
    248,
    252,
    253,
    254,
    255,
)
_INTS = {
    ("tinyint", _TINY): (INT8, UINT8),
    ("smallint", _SHORT): (INT16, UINT16),
    ("mediumint", _INT24): (INT24, UINT24),
    ("int", _LONG): (INT32, UINT32),
    ("bigint", _LONGLONG): (INT64, UINT64_DECIMAL),
}

NATIVE, PYTHON = "native", "python"


PATH, REASON = _native_avro.choose("RowsDecoder")


def describe() -> str:
    """One line for the log: the binlog rows decoders' path and why."""
    return f"binlog rows decoders: {PATH} ({REASON})"


class _Fallbacks:
    """Events the native path handed to the library (a column it does not cover, bad bytes)."""

    count = 0
    logged = False
    logged_choice = False


def native_fallbacks() -> int:
    """How many rows events were decoded by the library while the native path was on."""
    return _Fallbacks.count


_native_avro.count_fallbacks("binlog_rows_decoder", native_fallbacks)  # the metric's


def _fell_back(why: str, *, count: bool = True) -> None:
    _Fallbacks.count += count
    if not _Fallbacks.logged:
        _Fallbacks.logged = True
        log.info("a binlog rows event went to the python decoder (%s); later ones are counted", why)


# --- the reference ------------------------------------------------------------------------------


def convert_row(
    values: dict[str, Any], none_sources: dict[str, str], v: TableVersion, where: str
) -> tuple[Any, ...]:
    """One row image as the library parsed it -> the converted row; a value a converter rejects
    is a fatal ``SourceError`` naming it (``TableVersion.conversion_failure``)."""
    try:
        row = [
            None if x is None else (x if conv is None else conv(x))
            for x, conv in zip(values.values(), v.from_binlog, strict=True)
        ]
    except Exception as e:
        failure = v.conversion_failure(list(values.values()), True, where)
        raise SourceError(failure, retryable=False) from e
    for i in v.sets:
        # the library gives an empty SET as None, telling it from NULL only here
        if row[i] is None and none_sources.get(v.schema.columns[i].name) == "empty set":
            row[i] = ""
    return tuple(row)


def python_rows(ev: Any, v: TableVersion, where: str) -> list[Pair]:
    """The reference: the library's rows of ``ev`` (read at ``where``), converted. The library's
    errors on bytes it cannot decode propagate (the caller names the event)."""
    rows = ev.rows  # the library decodes the row images here, on first access
    if isinstance(ev, WriteRowsEvent):
        return [(None, convert_row(r["values"], r["none_sources"], v, where)) for r in rows]
    if isinstance(ev, DeleteRowsEvent):
        return [(convert_row(r["values"], r["none_sources"], v, where), None) for r in rows]
    return [
        (
            convert_row(r["before_values"], r["before_none_sources"], v, where),
            convert_row(r["after_values"], r["after_none_sources"], v, where),
        )
        for r in rows
    ]


# --- the compiled path --------------------------------------------------------------------------


def _text_length_size(c: Any) -> int:
    if c.type == _BLOB:
        return int(c.length_size)
    return 2 if c.max_length > 255 else 1


def column_plan(c: Any, t: ColumnType, required: bool, adjust: bool) -> tuple[Any, ...] | str:
    """The compiled decoder's ``(op, a, b, required, adjust, fallback, labels)`` for the table-map
    column ``c`` (python-mysql-replication's ``Column``) of type ``t``, or why it has none."""
    code, k = c.type, t.kind
    fallback = mapping(t).fallback
    op: int
    a = b = 0
    labels: list[str] = []
    ints = _INTS.get((k, code))
    if ints is not None:
        op = ints[1] if t.unsigned else ints[0]
    elif k == "float" and code == _FLOAT:
        op, a = (FLOAT_ROUNDED, t.scale) if t.precision else (FLOAT, 0)
    elif k == "double" and code == _DOUBLE:
        op = DOUBLE
    elif k == "decimal" and code == _NEWDECIMAL:
        op, a, b = DECIMAL, c.precision, c.decimals
    elif k == "bit" and code == _BIT:
        op, a, b = (BIT1 if t.length == 1 else BITS), c.bytes, c.bits
    elif k in ("char", "varchar", "text", "json") and code in (
        _VARCHAR,
        _VAR_STRING,
        _STRING,
        _BLOB,
    ):
        name = c.character_set_name
        charset = _CHARSETS.get("utf8" if name is None else (encoding(name) or name))
        if charset is None:
            return f"text in character set {name}"
        op, a, b = TEXT, _text_length_size(c), charset
    elif k == "binary" and code == _STRING:
        op, a, b = BINARY, _text_length_size(c), t.length
    elif k in ("varbinary", "blob") and code in (_VARCHAR, _VAR_STRING, _BLOB):
        op, a = BYTES, _text_length_size(c)
    elif k == "geometry" and code == _GEOMETRY:
        op, a = BYTES, c.length_size
    elif k == "json" and code == _JSON:
        op, a = JSON_BINARY, c.length_size
    elif k == "date" and code == _DATE:
        op = DATE
    elif k == "datetime" and code == _DATETIME2:
        op, a = (DATETIME_MILLIS if t.fsp <= 3 else DATETIME_MICROS), c.fsp
    elif k == "time" and code == _TIME2:
        op, a = TIME, c.fsp
    elif k == "timestamp" and code == _TIMESTAMP2:
        op, a = TIMESTAMP, c.fsp
    elif k == "year" and code == _YEAR:
        op = YEAR
    elif k == "enum" and code == _ENUM and c.enum_values:
        op, a, labels = ENUM, c.size, list(c.enum_values)
    elif k == "set" and code == _SET:
        op, a, labels = SET, c.size, list(c.set_values or ())
    else:
        return f"{k} (binlog type {code})"
    return (op, int(a or 0), int(b or 0), required, adjust, fallback, labels)


class RowsDecoder:
    """The compiled decoder of one table map's rows events (see the module's contract)."""

    def __init__(self, v: TableVersion, plan: Sequence[tuple[Any, ...]]) -> None:
        native = _native_avro._native
        if native is None or not hasattr(native, "RowsDecoder"):
            raise RuntimeError(describe())
        self.version = v
        self.plan = plan
        self._decode = native.RowsDecoder(list(plan), _json.to_text).decode

    def rows(self, ev: Any, where: str) -> list[Pair]:
        """The rows of ``ev`` (a rows event of this table map), as ``python_rows`` gives them."""
        try:
            pairs = self._native_rows(ev)
        except Exception as e:  # bytes it does not take exactly: the reference decides
            _fell_back(f"{type(e).__name__}: {e}")
            return python_rows(ev, self.version, where)
        if pairs is None:
            _fell_back("partial JSON update")
            return python_rows(ev, self.version, where)
        return pairs

    def _native_rows(self, ev: Any) -> list[Pair] | None:
        if ev.event_type == BINLOG.PARTIAL_UPDATE_ROWS_EVENT or not ev.complete:
            return None
        b = body(ev)
        return None if b is None else self.decode(ev, b)

    def decode(self, ev: Any, rows_body: bytes) -> list[Pair]:
        """The compiled decoder's rows of ``rows_body``, the row images of the rows event ``ev``
        (its kind, column count and columns-present bitmaps); ``ValueError`` on bytes it does
        not take exactly as the reference."""
        if isinstance(ev, UpdateRowsEvent):
            return self._decode(  # type: ignore[no-any-return]
                rows_body,
                ev.number_of_columns,
                ev.columns_present_bitmap,
                ev.columns_present_bitmap2,
            )
        rows = self._decode(rows_body, ev.number_of_columns, ev.columns_present_bitmap)
        if isinstance(ev, WriteRowsEvent):
            return [(None, r) for r in rows]
        return [(r, None) for r in rows]


def body(ev: Any) -> bytes | None:
    """The row images of the rows event ``ev`` before the library parses them: from the packet's
    position to the end of the event without its checksum (None: the library has moved on)."""
    p = ev.packet  # the library's BinLogPacketWrapper over pymysql's packet
    if p._BinLogPacketWrapper__data_buffer:  # bytes it pushed back: not at the rows
        return None
    raw = p.packet
    start = raw._position
    return raw._data[start : start + ev.event_size - p.read_bytes]  # type: ignore[no-any-return]


class RowsDecoders:
    """The decoders of one stream: a compiled one per distinct table map (made once), or None
    where the rows go to the library (``PATH`` python, or a column the plan does not cover)."""

    def __init__(self, native: bool | None = None) -> None:
        self.native = PATH == NATIVE if native is None else native
        if not _Fallbacks.logged_choice:
            _Fallbacks.logged_choice = True
            log.info("%s", describe())
        self._made: dict[tuple[Any, ...], RowsDecoder | None] = {}

    def for_table_map(self, ev: Any, v: TableVersion) -> RowsDecoder | None:
        """The decoder of the rows events that follow the table map ``ev`` of version ``v``:
        planned once per distinct table map (a table map precedes every transaction)."""
        if not self.native:
            return None
        # The table map's bytes after the event header and its table id (which the server
        # changes whenever it reopens the table), without the checksum: the same bytes describe
        # the same columns, so a long-running stream keeps one decoder per table shape.
        try:
            key = (id(v), ev.packet.packet._data[26 : 20 + ev.event_size])
        except Exception as e:  # the library's packet changed shape: its parser decodes
            _fell_back(f"{type(e).__name__}: {e}", count=False)  # its events are counted
            return None
        if key not in self._made:
            self._made[key] = self._make(ev, v)
        return self._made[key]

    def _make(self, ev: Any, v: TableVersion) -> RowsDecoder | None:
        if len(v.types) != len(ev.columns):
            return None
        plan = []
        for c, (t, required) in zip(ev.columns, v.types, strict=True):
            col = column_plan(c, t, required, v.adjust_years)
            if isinstance(col, str):
                log.info(
                    "binlog rows of %s.%s go to the python decoder: column %s is %s",
                    v.schema.namespace,
                    v.schema.table,
                    c.name,
                    col,
                )
                return None
            plan.append(col)
        return RowsDecoder(v, plan)

    def rows(self, ev: Any, v: TableVersion, decoder: RowsDecoder | None, where: str) -> list[Pair]:
        """The rows of ``ev``: by ``decoder`` when there is one, else by the library (counted
        when the native path is on). ``ValueError`` for an event whose columns-present bitmaps
        name no column: its row images have no bytes, and the library would read them forever."""
        present = [ev.columns_present_bitmap]
        if isinstance(ev, UpdateRowsEvent):
            present.append(ev.columns_present_bitmap2)
        if not any(b for p in present for b in p) and ev.event_size > ev.packet.read_bytes:
            raise ValueError("a rows event whose columns-present bitmaps name no column")
        if decoder is not None:
            return decoder.rows(ev, where)
        if self.native:
            _fell_back("a table the compiled decoder does not cover")
        return python_rows(ev, v, where)


def explain(plan: Sequence[tuple[Any, ...]]) -> str:
    """A plan, one column a line: the operation, its parameters, NOT NULL, the labels."""
    lines = []
    for i, (op, a, b, required, adjust, fallback, labels) in enumerate(plan):
        extra = f" labels={labels!r}" if labels else ""
        lines.append(
            f"{i}: {OP_NAMES.get(op, op)}({a}, {b}){' not null' if required else ''}"
            f"{' adjusted' if adjust else ''} fallback={fallback!r}{extra}"
        )
    return "\n".join(lines)
