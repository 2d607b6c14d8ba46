"""pgoutput TupleData -> a row of converted values: the generic path and specialised decoders.

A decoder reads the TupleData at offset ``i`` of a pgoutput message and returns the row (a tuple,
one value per column, converted by the column's ``Mapping``) and the offset after it.

``complete`` says whether the tuple holds every column (a new tuple) or may leave some out (an old
or key tuple, under REPLICA IDENTITY DEFAULT: columns outside the key are null there): in an
incomplete tuple a null in a required column takes the column's fallback. An unchanged TOASTed
value (kind 'u') takes the mapping's placeholder, or the fallback when it has none and the column
is required.

The generic path (``parse_tuple`` then ``convert_row``) is the reference. ``compile_decoder``
generates Python source once per relation version, with the column loop unrolled, the null and
unchanged values decided in advance and the cheapest exact conversion per type (``int`` and
``float`` straight from the bytes, booleans compared as bytes). Contract: a specialised decoder
returns exactly what the generic path returns for the same bytes (equal values of the same types,
the very same fallback and placeholder objects), or raises what it raises: whenever anything in
the specialised body raises (a value a converter rejects, bytes that are not UTF-8, a column count
that does not match, a truncated message), the message is decoded again by the generic path,
which raises its own error (a ``ValueConversionError`` naming table.column and type for a value
that does not convert, or that converts to None in a required column) or, for a value only the
shortcut rejected, returns the right row.

The generated source contains only local variable names, indexes and literals of numbers and
bytes; mappings, fallbacks and placeholders are bound constants, column names never appear in it.

``native_decoder`` makes the compiled equivalent (``cdc._native.TupleDecoder``, native/src/
pgtuple.rs) under the same contract: it converts integers, floats, booleans, text, dates, times,
timestamps, UTC timestamptz, intervals, hex bytea, money, text and integer arrays, variable-scale
numeric and numeric(p,s) texts at the column's scale itself, calls the column's converter for every
other value, and hands anything else to the generic decoder (counted by ``native_fallbacks``).
``decoders`` takes it ahead of the generated ones when the extension is built, unless
``CDC_NATIVE=0`` (``PATH``, chosen once per process as the Avro writers' path is).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from cdc import _native_avro
from cdc.errors import SourceError
from cdc.model import TableSchema
from cdc.sources.postgres import _types
from cdc.sources.postgres._types import Mapping

log = logging.getLogger(__name__)

Decoder = Callable[[bytes, int], tuple[tuple[Any, ...], int]]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class _Unchanged:
    """Marker for an unchanged TOASTed value (tuple kind 'u')."""


NOT_UTF8 = (
    "The pipeline stopped: the database holds text that is not valid UTF-8 (a SQL_ASCII "
    "database?), which cannot be written as an Avro string; correct the text, or convert the "
    "database to UTF8, and restart"
)


class ValueConversionError(SourceError):
    """A column value that cannot be written: fatal (a restart would read the same value).

    Raised by the decoders with the table, column, type and value; the source adds where the
    value was read (``located``): the change's LSN, or the snapshot and the row's key.
    """

    def __init__(self, message: str, table: str, column: str, type_name: str) -> None:
        super().__init__(message, retryable=False)
        self.table, self.column, self.type_name = table, column, type_name

    def located(self, where: str, fix: str) -> ValueConversionError:
        """The same error, saying where the value was read and what the operator can do."""
        e = ValueConversionError(
            f"{self}; {where}. The pipeline stopped: {fix}",
            self.table,
            self.column,
            self.type_name,
        )
        e.__cause__ = self.__cause__
        return e


UNCHANGED = _Unchanged()


class _NotUtf8(bytes):
    """A column's bytes that are not UTF-8 (the server converts to UTF-8: it should not send
    them); ``convert_row`` raises the located error for it."""


# --- the generic path (the reference) -------------------------------------------------------------


def parse_tuple(buf: bytes, i: int) -> tuple[list[Any], int]:
    """TupleData at ``i`` -> (texts: str, None for null, UNCHANGED, bytes that are not UTF-8 as
    a marker ``convert_row`` refuses; the offset after it)."""
    (n,) = _U16.unpack_from(buf, i)
    i += 2
    vals: list[Any] = []
    append = vals.append
    for _ in range(n):
        kind = buf[i]
        i += 1
        if kind == 116:  # 't'
            (length,) = _U32.unpack_from(buf, i)
            i += 4
            raw = buf[i : i + length]
            try:
                append(raw.decode())
            except UnicodeDecodeError:
                append(_NotUtf8(raw))
            i += length
        elif kind == 110:  # 'n'
            append(None)
        elif kind == 117:  # 'u'
            append(UNCHANGED)
        else:
            raise SourceError(f"unexpected tuple column kind {chr(kind)!r} in pgoutput data")
    return vals, i


def convert_row(
    table: TableSchema, mappings: Sequence[Mapping], raw: Sequence[Any], complete: bool
) -> tuple[Any, ...]:
    """Convert a text tuple; ``complete`` False: absent columns take their fallback."""
    out: list[Any] = []
    cols = table.columns
    for idx, (v, m) in enumerate(zip(raw, mappings, strict=True)):
        if v is None:
            out.append(None if (complete or cols[idx].optional) else cols[idx].fallback)
        elif v is UNCHANGED:
            ph = m.unavailable
            out.append(ph if ph is not None or cols[idx].optional else cols[idx].fallback)
        elif type(v) is _NotUtf8:
            raise _conversion_error(table, cols[idx].name, m.name, v, "not valid UTF-8")
        elif m.convert is None:
            out.append(v)
        else:
            try:
                value = m.convert(v)
            except Exception as e:  # any converter failure: a located error, never a traceback
                raise _conversion_error(table, cols[idx].name, m.name, v, str(e)) from e
            if value is None and not cols[idx].optional:
                raise _conversion_error(
                    table,
                    cols[idx].name,
                    m.name,
                    v,
                    "the value has no Avro form (Debezium's type cannot carry it) and the column "
                    "is NOT NULL: ALTER TABLE ... ALTER COLUMN ... DROP NOT NULL and restart to "
                    "have it written as null",
                )
            out.append(value)
    return tuple(out)


def _conversion_error(
    table: TableSchema, column: str, type_name: str, text: str | bytes, reason: str
) -> ValueConversionError:
    return ValueConversionError(
        f"cannot convert value {text[:80]!r} of column {table.qualified}.{column} "
        f"({type_name}): {reason}",
        table.qualified,
        column,
        type_name,
    )


def generic_decoder(table: TableSchema, mappings: Sequence[Mapping], complete: bool) -> Decoder:
    """The reference decoder: ``parse_tuple`` then ``convert_row``."""

    def decode(buf: bytes, i: int) -> tuple[tuple[Any, ...], int]:
        raw, i = parse_tuple(buf, i)
        return convert_row(table, mappings, raw, complete), i

    return decode


# --- specialised decoders -------------------------------------------------------------------------

# Conversions done on the bytes themselves, exactly as the converter does on the decoded text:
# int() and float() accept the same ASCII forms from bytes and str, and refuse any non-ASCII byte
# (the generic path then decides). Booleans: the usual texts compared as bytes, others converted.
_FROM_BYTES: dict[Any, str] = {int: "_int", _types._float: "_float"}
_BYTES_BOOL: dict[Any, tuple[bytes, bytes]] = {
    _types._bool: (b"t", b"f"),
    _types._bit1: (b"1", b"0"),
}
# timestamptz converters -> the fraction digits they pad to (0: no padding)
_TIMESTAMPTZ: dict[Any, int] = {_types._timestamptz_padded(d): d for d in range(1, 7)}
_TIMESTAMPTZ[_types._timestamptz] = 0


def _fixed_scale(m: Mapping) -> int | None:
    """The scale of a numeric(p,s) mapping's converter, None for any other converter."""
    scale = m.avro.get("scale") if isinstance(m.avro, dict) else None
    if isinstance(scale, int) and 0 <= scale <= 1000 and m.convert is _types._fixed_decimal(scale):
        return scale
    return None


class _Gen:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {
            "_u32": _U32.unpack_from,
            "_int": int,
            "_float": float,
            "_Decimal": Decimal,
        }

    def const(self, value: Any) -> str:
        if value is None:
            return "None"
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def convert(self, m: Mapping, v: str, ind: int) -> None:
        """Lines setting ``v`` to the value of the text at ``buf[i + 5 : j]``."""
        text = "buf[i + 5 : j]"
        conv = m.convert
        if conv is None:
            self.emit(ind, f"{v} = {text}.decode()")
            return
        if conv in _FROM_BYTES:
            self.emit(ind, f"{v} = {_FROM_BYTES[conv]}({text})")
            return
        c = self.const(conv)
        if conv in _BYTES_BOOL:
            true, false = _BYTES_BOOL[conv]
            self.emit(ind, f"{v} = {text}")
            self.emit(
                ind,
                f"{v} = True if {v} == {true!r} else False if {v} == {false!r} "
                f"else {c}({v}.decode())",
            )
            return
        scale = _fixed_scale(m)
        if conv in _TIMESTAMPTZ:
            # _timestamptz's shortcut for UTC text ("2024-01-02 03:04:05.12+00"), then the
            # fraction padded as _timestamptz_padded pads it; other texts by the converter.
            digits = _TIMESTAMPTZ[conv]
            self.emit(ind, f"t = {text}.decode()")
            self.emit(ind, 'if t[-3:] == "+00" and t[10] == " " and t[4] == "-":')
            if digits:
                dot = "." + "0" * digits
                self.emit(ind + 1, 'd = t.find(".", 17)')
                self.emit(ind + 1, f"if d == len(t) - {digits + 4}:  # no padding needed")
                self.emit(ind + 2, f'{v} = f"{{t[:10]}}T{{t[11:-3]}}Z"')
                self.emit(ind + 1, "else:")
                pad = f"{dot!r} if d < 0 else '0' * ({digits} - len(t) + d + 4)"
                self.emit(ind + 2, f'{v} = f"{{t[:10]}}T{{t[11:-3]}}{{{pad}}}Z"')
            else:
                self.emit(ind + 1, f'{v} = f"{{t[:10]}}T{{t[11:-3]}}Z"')
        elif scale is not None:
            # Text with exactly the column's scale (as the server prints numeric(p,s)) is a
            # Decimal of that exponent already: quantize would return it unchanged (it has fewer
            # digits than the context's precision). NaN and infinities end in a letter.
            self.emit(ind, f"t = {text}.decode()")
            if scale:
                check = f't[{-scale - 1}] == "." and t[{-scale}:].isdigit()'
            else:
                check = '(t.isdigit() or t[0] == "-" and t[1:].isdigit())'
            self.emit(ind, f"if {check} and len(t) < 1000:")
            self.emit(ind + 1, f"{v} = _Decimal(t)")
        else:
            self.emit(ind, f"{v} = {c}({text}.decode())")
            return
        self.emit(ind, "else:")
        self.emit(ind + 1, f"{v} = {c}(t)")

    def column(self, m: Mapping, null: Any, unchanged: Any, v: str, required: bool) -> None:
        """Lines reading one column at ``i`` into variable ``v`` and moving ``i`` past it."""
        self.emit(2, "k = buf[i]")
        self.emit(2, "if k == 116:")
        self.emit(3, "j = i + 5 + _u32(buf, i + 1)[0]")
        self.convert(m, v, 3)
        conv = m.convert
        if required and not (
            conv is None or conv in _FROM_BYTES or conv in _BYTES_BOOL or conv in _TIMESTAMPTZ
        ):
            # a converter's None (numeric NaN) in a NOT NULL column: the generic path's error
            self.emit(3, f"if {v} is None:")
            self.emit(4, "raise _Mismatch")
        self.emit(3, "i = j")
        self.emit(2, "elif k == 110:")
        self.emit(3, f"{v} = {self.const(null)}")
        self.emit(3, "i += 1")
        self.emit(2, "elif k == 117:")
        self.emit(3, f"{v} = {self.const(unchanged)}")
        self.emit(3, "i += 1")
        self.emit(2, "else:")
        self.emit(3, "raise _Mismatch")


class _Mismatch(Exception):
    """Something the specialised body does not handle: the generic path decides."""


def generate(
    table: TableSchema, mappings: Sequence[Mapping], complete: bool
) -> tuple[str, dict[str, Any]]:
    """The source of ``decode(buf, i)`` for this relation version, and its constants."""
    if len(mappings) != len(table.columns):
        raise ValueError(f"{len(mappings)} mappings for {len(table.columns)} columns")
    gen = _Gen()
    gen.consts["_Mismatch"] = _Mismatch
    n = len(mappings)
    gen.emit(0, "def decode(buf, i):")
    gen.emit(1, "i0 = i")
    gen.emit(1, "try:")
    gen.emit(2, f"if buf[i : i + 2] != {_U16.pack(n)!r}:")
    gen.emit(3, "raise _Mismatch")
    gen.emit(2, "i += 2")
    names = []
    for idx, (m, col) in enumerate(zip(mappings, table.columns, strict=True)):
        null = None if complete or col.optional else col.fallback
        ph = m.unavailable
        unchanged = ph if ph is not None or col.optional else col.fallback
        v = f"v{idx}"
        names.append(v)
        gen.column(m, null, unchanged, v, not col.optional)
    gen.emit(1, "except Exception:")
    gen.emit(2, "return _generic(buf, i0)")
    gen.emit(1, f"return ({', '.join(names)}{',' if n == 1 else ''}), i")
    gen.consts["_generic"] = generic_decoder(table, mappings, complete)
    return "\n".join(gen.lines) + "\n", gen.consts


def compile_decoder(table: TableSchema, mappings: Sequence[Mapping], complete: bool) -> Decoder:
    """A decoder giving exactly ``generic_decoder``'s rows and errors (see the module doc)."""
    source, consts = generate(table, mappings, complete)
    namespace: dict[str, Any] = dict(consts)
    exec(compile(source, "<pgoutput decoder>", "exec"), namespace)
    decode: Decoder = namespace["decode"]
    return decode


# --- native decoders (cdc._native.TupleDecoder) ------------------------------------------------

# Column kinds the compiled decoder converts itself (numbered as in native/src/pgtuple.rs); any
# other converter is called from there (CONVERT), as the generic path calls it.
_TEXT, _INT, _FLOAT, _BOOL, _BIT1, _DATE, _TS_MICROS, _TS_MILLIS, _TSTZ, _DECIMAL = range(10)
_CONVERT, _TIME_MICROS, _TIME_MILLIS, _BYTEA, _INTERVAL, _VARIABLE_DECIMAL, _MONEY = range(10, 17)
_TEXT_ARRAY, _INT_ARRAY = 17, 18
# Arrays of elements with a converter share one code object (a closure over the element's): an
# array of integers is recognised by it and its cell.
_ARRAY_CODE = _types._array(int).__code__
_NATIVE_KIND: dict[Any, int] = {
    int: _INT,
    _types._float: _FLOAT,
    _types._bool: _BOOL,
    _types._bit1: _BIT1,
    _types._date: _DATE,
    _types._ts_micros: _TS_MICROS,
    _types._ts_millis: _TS_MILLIS,
    _types._time_us: _TIME_MICROS,
    _types._time_millis: _TIME_MILLIS,
    _types._bytea: _BYTEA,
    _types._interval: _INTERVAL,
    _types._variable_decimal: _VARIABLE_DECIMAL,
    _types._money: _MONEY,
}

NATIVE, PYTHON = "native", "python"


PATH, REASON = _native_avro.choose("TupleDecoder")
"""How relation versions decode tuples when ``specialise`` is on: "native" (``cdc._native``) or
"python" (generated decoders), chosen once per process as the Avro writers are."""


class _Fallbacks:
    """Tuples a native decoder handed to the generic path (converter errors, malformed data)."""

    count = 0
    logged = False
    logged_choice = False


def native_fallbacks() -> int:
    """How many tuples native decoders handed to the generic path in this process."""
    return _Fallbacks.count


_native_avro.count_fallbacks("pgoutput_tuple_decoder", native_fallbacks)  # the metric's


def describe() -> str:
    """One line for the log: the tuple decoders' path and why."""
    return f"pgoutput tuple decoders: {PATH} ({REASON})"


def _counted(generic: Decoder) -> Decoder:
    def fallback(buf: bytes, i: int) -> tuple[tuple[Any, ...], int]:
        _Fallbacks.count += 1
        if not _Fallbacks.logged:
            _Fallbacks.logged = True
            log.debug("a native tuple decoder handed a tuple to the generic path (and later ones)")
        return generic(buf, i)

    return fallback


def native_decoder(table: TableSchema, mappings: Sequence[Mapping], complete: bool) -> Decoder:
    """A compiled decoder giving exactly ``generic_decoder``'s rows and errors: it converts the
    common kinds itself and calls the column's converter for the others; on anything it does not
    handle it calls the generic decoder (counted by ``native_fallbacks``). ``RuntimeError`` when
    the extension is not built."""
    native = _native_avro._native
    if native is None or not hasattr(native, "TupleDecoder"):
        raise RuntimeError(describe())
    if len(mappings) != len(table.columns):
        raise ValueError(f"{len(mappings)} mappings for {len(table.columns)} columns")
    cols = []
    for m, col in zip(mappings, table.columns, strict=True):
        null = None if complete or col.optional else col.fallback
        ph = m.unavailable
        unchanged = ph if ph is not None or col.optional else col.fallback
        conv, param = m.convert, 0
        if conv is None:
            kind = _TEXT
        elif conv is _types.parse_array:  # text-like elements: the array's texts
            kind = _TEXT_ARRAY
        elif (
            getattr(conv, "__code__", None) is _ARRAY_CODE
            and conv.__closure__ is not None  # type: ignore[attr-defined]
            and conv.__closure__[0].cell_contents is int  # type: ignore[attr-defined]
        ):
            kind = _INT_ARRAY
        elif conv in _NATIVE_KIND:
            kind = _NATIVE_KIND[conv]
        elif conv in _TIMESTAMPTZ:
            kind, param = _TSTZ, _TIMESTAMPTZ[conv]
        elif (scale := _fixed_scale(m)) is not None:
            kind, param = _DECIMAL, scale
        else:
            kind = _CONVERT
        cols.append((kind, param, null, unchanged, conv, not col.optional))
    decode: Decoder = native.TupleDecoder(
        cols, _counted(generic_decoder(table, mappings, complete))
    ).decode
    return decode


def decoders(
    table: TableSchema,
    mappings: Sequence[Mapping],
    specialise: bool = True,
    native: bool | None = None,
) -> tuple[Decoder, Decoder]:
    """(decoder of complete tuples, decoder of old/key tuples) for one relation version.

    ``specialise``: native or generated decoders (False: the generic path); ``native``: True for
    the compiled ones, False for the generated Python ones, None for the process's ``PATH``. A
    relation the compiled decoder refuses (it should take every one) gets the generated ones.
    """
    if not specialise:
        return generic_decoder(table, mappings, True), generic_decoder(table, mappings, False)
    if native is None:
        native = PATH == NATIVE
    if native:
        _log_choice()
        try:
            return native_decoder(table, mappings, True), native_decoder(table, mappings, False)
        except (
            Exception
        ) as e:  # a relation shape the compiled decoder did not expect: still correct
            log.warning(
                "native tuple decoder refused %s (%r): the generated python decoder takes it",
                table.qualified,
                e,
            )
    return compile_decoder(table, mappings, True), compile_decoder(table, mappings, False)


def _log_choice() -> None:
    if not _Fallbacks.logged_choice:
        _Fallbacks.logged_choice = True
        log.info("%s", describe())
