"""Avro writers specialised once per schema: the encoder's hot path.

``compile_writer`` turns a parsed Avro schema into a function ``datum -> bytes`` whose output is
byte-identical to ``fastavro.schemaless_writer`` for every datum fastavro accepts. The function is
Python source generated from the schema and compiled once per schema version: it walks no schema
at run time, writes constant bytes (union branch indexes, enum symbols) as precomputed literals and
encodes only the values.

Contract: the writer either returns fastavro's bytes or raises (any ``Exception``); it never
returns other bytes. Every value is checked against the exact Python type a source produces
(``int`` for int/long, ``float`` for float/double, ``str``, ``bytes``, ``Decimal`` or ``bytes`` for
decimals, ``list``, ``dict``, ``True``/``False``) and anything else raises, so the caller falls
back to fastavro for that datum and gets fastavro's result, or its error. The checks are at least
as strict as fastavro's union validation (ints in the 32-bit range for ``int``, ``-type`` keys in
records), so a datum fastavro rejects is never written here either.

Records are read from ``dict`` datums by field name, except the record names the caller declares
positional: those are read from tuples by index (a row, the transaction block), which spares
building a dict per row. Schema features not handled here (unions other than ``[null, T]`` or
``[T, null]``, logical types other than bytes decimal, recursive types) make ``compile_writer``
raise ``Unsupported``; the caller then uses fastavro for that schema.

The generated source contains only local variable names, field indexes and ``bytes`` literals;
field names, enum symbols and schemas are passed in as bound constants, never as source text.

These are the "python" writers: the reference that the compiled "native" writers
(``cdc._native.Writer``, ``native/src/lib.rs``) follow check for check and are tested against
byte for byte (``tests/unit/test_native_avro.py``), and the fallback where the extension is not
built. ``cdc._native_avro`` chooses between them; a change to the contract or the supported
subset here must be made there too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any

from fastavro.logical_writers import LOGICAL_WRITERS

Writer = Callable[[Any], bytes]

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")


class Unsupported(Exception):
    """The schema uses a feature the specialised writer does not handle: use fastavro."""


# Varint pieces by 14-bit chunk (about 1.4 MB, built at import): _MORE[c] is a chunk with more to
# follow (continuation bits set on both bytes), _LAST[c] the final chunk (one byte below 128).
_MORE = tuple(bytes(((c & 127) | 128, (c >> 7) | 128)) for c in range(16384))
_LAST = tuple(bytes(((c & 127) | 128, c >> 7)) if c >= 128 else bytes((c,)) for c in range(16384))


def _zigzag_slow(z: int) -> bytes:
    """Varint of a zigzag-encoded long (any, but called for 128 and more); raises past 64 bits.

    Unrolled by chunks of 14 bits: two to three times faster than a loop over 7-bit groups for
    the large values every event carries (timestamps in micro- and nanoseconds, LSNs)."""
    if z < 16384:
        return _LAST[z]
    if z < 268435456:  # 28 bits
        return _MORE[z & 16383] + _LAST[z >> 14]
    if z >> 64:
        raise OverflowError("value out of the avro long range")
    if z < 4398046511104:  # 42 bits
        return _MORE[z & 16383] + _MORE[(z >> 14) & 16383] + _LAST[z >> 28]
    low = _MORE[z & 16383] + _MORE[(z >> 14) & 16383] + _MORE[(z >> 28) & 16383]
    if z < 72057594037927936:  # 56 bits
        return low + _LAST[z >> 42]
    return low + _MORE[(z >> 42) & 16383] + _LAST[z >> 56]


_WIDE = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _decimal_writer(schema: dict[str, Any]) -> Callable[[Decimal], bytes]:
    """fastavro's conversion of a Decimal for a bytes decimal, by a shorter path when the value
    has exactly the schema's scale (as the sources quantize them); fastavro's own otherwise."""
    precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
    quantum = Decimal(1).scaleb(-scale)
    slow = LOGICAL_WRITERS["bytes-decimal"]

    def write(d: Decimal) -> bytes:
        # same_quantum: exponent == -scale (false for NaN and infinities); then the digit count
        # is adjusted() + scale + 1, and the unscaled value is exact in a context this wide.
        if d.same_quantum(quantum) and d.adjusted() + scale < precision:
            u = int(d.scaleb(scale, _WIDE))
            return u.to_bytes((abs(u).bit_length() + 8) // 8, "big", signed=True)
        out: bytes = slow(d, schema)
        return out

    return write


# _ONE[z]: the one-byte varint of a zigzag value z < 128 (longs -64..63, lengths 0..63).
_ONE = tuple(bytes((i,)) for i in range(128))


def varint_long(n: int) -> bytes:
    """Avro's encoding of the long ``n`` (zigzag varint)."""
    z = (n << 1) ^ (n >> 63)
    return _ONE[z] if z < 128 else _zigzag_slow(z)


class _Gen:
    """Accumulates the generated source and the constants it refers to."""

    def __init__(
        self, positional: Mapping[str, Sequence[int] | None], memo: Collection[str]
    ) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {
            "_ONE": _ONE,
            "_zz": _zigzag_slow,
            "_pf": struct.Struct("<f").pack,
            "_pd": struct.Struct("<d").pack,
            "_Decimal": Decimal,
            "_float": float,
            "_int": int,
            "_str": str,
            "_bytes": bytes,
            "_list": list,
            "_dict": dict,
            "_tuple": tuple,
            "_len": len,
            "_fail": _fail,
        }
        self.positional = positional
        self.memo = memo
        self.named: dict[str, Any] = {}
        self.tables: dict[bytes, str] = {}
        self.uses: dict[str, int] = {}
        self.functions: dict[str, str] = {}
        self.defs: list[str] = []
        self.active: set[str] = set()
        self.nvar = 0

    def var(self) -> str:
        self.nvar += 1
        return f"v{self.nvar}"

    def const(self, value: Any) -> str:
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    # -- one value ---------------------------------------------------------------------------------

    def value(self, schema: Any, x: str, ind: int, memo: bool = False, pfx: bytes = b"") -> None:
        """Lines appending the encoding of variable ``x`` (of type ``schema``) to ``out``.

        ``memo``: keep the last value of a string or int/long and its bytes, reused while equal.
        ``pfx``: constant bytes to write first (a union's branch index), joined to the value's
        first bytes where that saves an append.
        """
        if isinstance(schema, list):
            if pfx:  # pragma: no cover - Avro has no union directly in a union
                raise Unsupported("union in a union")
            self.union(schema, x, ind, memo)
            return
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                self.primitive(schema, x, ind, memo, pfx)
                return
            if schema not in self.named:
                raise Unsupported(f"unknown named type {schema!r}")
            schema = self.named[schema]
            if schema["name"] in self.active:
                raise Unsupported(f"recursive type {schema['name']!r}")
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        t = schema.get("type")
        if isinstance(t, (dict, list)):  # {"type": {...}}: a wrapped schema
            self.value(t, x, ind, memo, pfx)
            return
        logical = schema.get("logicalType")
        if logical is not None:
            if t == "bytes" and logical == "decimal":
                self.decimal(schema, x, ind, pfx)
                return
            # fastavro converts only the logical types it knows; others are written as the base
            # type, but which are known depends on its version: leave them all to fastavro.
            raise Unsupported(f"logical type {logical!r} on {t!r}")
        if t in _PRIMITIVES:
            self.primitive(t, x, ind, memo, pfx)
            return
        if t == "enum":
            self.named[schema["name"]] = schema
            symbols = {s: pfx + varint_long(i) for i, s in enumerate(schema["symbols"])}
            self.emit(ind, f"a({self.const(symbols)}[{x}])")
            return
        if pfx:
            self.emit(ind, f"a({pfx!r})")
        if t == "record":
            self.record(schema, x, ind)
        elif t == "fixed":
            self.named[schema["name"]] = schema
            self.emit(ind, f"if {x}.__class__ is not _bytes or _len({x}) != {int(schema['size'])}:")
            self.emit(ind + 1, "_fail()")
            self.emit(ind, f"a({x})")
        elif t == "array":
            self.array(schema["items"], x, ind)
        elif t == "map":
            self.map(schema["values"], x, ind)
        else:
            raise Unsupported(f"type {t!r}")

    def length(self, n: str, ind: int) -> None:
        self.emit(ind, f"a(_ONE[{n} << 1] if {n} < 64 else _zz({n} << 1))")

    def varint(self, z: str, pfx: bytes) -> str:
        """An expression: ``pfx`` then the varint of the zigzag value ``z``."""
        if not pfx:
            return f"(_ONE[{z}] if {z} < 128 else _zz({z}))"
        table = self.tables.get(pfx)
        if table is None:
            table = self.tables[pfx] = self.const(tuple(pfx + b for b in _ONE))
        return f"({table}[{z}] if {z} < 128 else {pfx!r} + _zz({z}))"

    def memoised(self, x: str, ind: int, encode: list[str]) -> None:
        """``encode`` are lines setting ``e`` to the bytes of ``x``; run only when ``x`` differs
        from the last value seen here. The pair is one tuple, replaced whole (thread-safe)."""
        m = self.const([(None, b"")])
        self.emit(ind, f"m = {m}[0]")
        self.emit(ind, f"if {x} == m[0]:")
        self.emit(ind + 1, "a(m[1])")
        self.emit(ind, "else:")
        for line in encode:
            self.emit(ind + 1, line)
        self.emit(ind + 1, f"{m}[0] = ({x}, e)")
        self.emit(ind + 1, "a(e)")

    def primitive(self, t: str, x: str, ind: int, memo: bool = False, pfx: bytes = b"") -> None:
        if t == "null":
            self.emit(ind, f"if {x} is not None:")
            self.emit(ind + 1, "_fail()")
            if pfx:
                self.emit(ind, f"a({pfx!r})")
        elif t == "boolean":
            self.emit(ind, f"if {x} is True:")
            true, false = pfx + b"\x01", pfx + b"\x00"
            self.emit(ind + 1, f"a({true!r})")
            self.emit(ind, f"elif {x} is False:")
            self.emit(ind + 1, f"a({false!r})")
            self.emit(ind, "else:")
            self.emit(ind + 1, "_fail()")
        elif t in ("int", "long"):
            if t == "int":
                check = f"{x}.__class__ is not _int or not {_INT_MIN} <= {x} <= {_INT_MAX}"
            else:
                check = f"{x}.__class__ is not _int"
            self.emit(ind, f"if {check}:")
            self.emit(ind + 1, "_fail()")
            if memo:
                encode = [f"z = ({x} << 1) ^ ({x} >> 63)", f"e = {self.varint('z', pfx)}"]
                self.memoised(x, ind, encode)
                return
            self.emit(ind, f"z = ({x} << 1) ^ ({x} >> 63)")
            self.emit(ind, f"a({self.varint('z', pfx)})")
        elif t in ("float", "double"):
            self.emit(ind, f"if {x}.__class__ is not _float:")
            self.emit(ind + 1, "_fail()")
            pack = f"{'_pf' if t == 'float' else '_pd'}({x})"
            self.emit(ind, f"a({pfx!r} + {pack})" if pfx else f"a({pack})")
        elif t == "string":
            self.emit(ind, f"if {x}.__class__ is not _str:")
            self.emit(ind + 1, "_fail()")
            # Lengths: the zigzag of n is n << 1, one byte below 64.
            if memo:
                encode = [
                    f"b = {x}.encode()",
                    "z = _len(b) << 1",
                    f"e = {self.varint('z', pfx)} + b",
                ]
                self.memoised(x, ind, encode)
                return
            self.emit(ind, f"b = {x}.encode()")
            self.emit(ind, "z = _len(b) << 1")
            self.emit(ind, f"a({self.varint('z', pfx)})")
            self.emit(ind, "a(b)")
        elif t == "bytes":
            self.emit(ind, f"if {x}.__class__ is not _bytes:")
            self.emit(ind + 1, "_fail()")
            self.emit(ind, f"z = _len({x}) << 1")
            self.emit(ind, f"a({self.varint('z', pfx)})")
            self.emit(ind, f"a({x})")
        else:  # pragma: no cover - _PRIMITIVES is exhaustive
            raise Unsupported(t)

    def decimal(self, schema: dict[str, Any], x: str, ind: int, pfx: bytes) -> None:
        if "precision" not in schema:
            raise Unsupported("decimal without a precision")
        prep = self.const(_decimal_writer(schema))
        self.emit(ind, f"if {x}.__class__ is _Decimal:")
        self.emit(ind + 1, f"{x} = {prep}({x})")
        self.primitive("bytes", x, ind, pfx=pfx)

    def union(self, branches: list[Any], x: str, ind: int, memo: bool = False) -> None:
        kinds = [b == "null" or (isinstance(b, dict) and b.get("type") == "null") for b in branches]
        if len(branches) == 1 and not kinds[0]:
            self.value(branches[0], x, ind, memo, b"\x00")
            return
        if len(branches) != 2 or kinds.count(True) != 1:
            raise Unsupported(f"union {branches!r}")
        null_at = kinds.index(True)
        other = branches[1 - null_at]
        self.emit(ind, f"if {x} is None:")
        self.emit(ind + 1, f"a({varint_long(null_at)!r})")
        self.emit(ind, "else:")
        self.value(other, x, ind + 1, memo, varint_long(1 - null_at))

    def count_uses(self, t: Any) -> None:
        """Count definitions and references of each named type in ``t`` (into ``uses``)."""
        if isinstance(t, list):
            for b in t:
                self.count_uses(b)
        elif isinstance(t, str):
            if t not in _PRIMITIVES:
                self.uses[t] = self.uses.get(t, 0) + 1
        elif isinstance(t, dict):
            kind = t.get("type")
            if isinstance(kind, (dict, list)):
                self.count_uses(kind)
                return
            if kind in ("record", "enum", "fixed"):
                self.uses[t["name"]] = self.uses.get(t["name"], 0) + 1
            for f in t.get("fields", ()):
                self.count_uses(f["type"])
            for k in ("items", "values"):
                if k in t:
                    self.count_uses(t[k])

    def record(self, schema: dict[str, Any], x: str, ind: int) -> None:
        """A record used once is written inline; one used more often (the row, in before and
        after) by a function of its own, generated once: half the code to compile for a row."""
        name = schema["name"]
        self.named[name] = schema
        if self.uses.get(name, 0) < 2:
            self.record_body(schema, x, ind)
            return
        fn = self.functions.get(name)
        if fn is None:
            fn = self.functions[name] = f"r{len(self.functions)}"
            caller = self.lines
            self.lines = []
            self.emit(0, f"def {fn}(x, a):")
            self.record_body(schema, "x", 1)
            self.defs += self.lines
            self.lines = caller
        self.emit(ind, f"{fn}({x}, a)")

    def record_body(self, schema: dict[str, Any], x: str, ind: int) -> None:
        name = schema["name"]
        self.active.add(name)
        fields = schema["fields"]
        memo = name in self.memo
        if name in self.positional:
            indexes = self.positional[name]
            if indexes is None:
                indexes = range(len(fields))
                self.emit(ind, f"if {x}.__class__ is not _tuple or _len({x}) != {len(fields)}:")
            else:
                if len(indexes) != len(fields):
                    raise Unsupported(f"{len(indexes)} indexes for {len(fields)} fields of {name}")
                self.emit(ind, f"if {x}.__class__ is not _tuple:")
            self.emit(ind + 1, "_fail()")
            for f, i in zip(fields, indexes, strict=True):
                v = self.var()
                self.emit(ind, f"{v} = {x}[{int(i)}]")
                self.value(f["type"], v, ind, memo)
        else:
            # As fastavro's union validation: a dict whose "-type" names another record is
            # rejected; without a union fastavro ignores it, and so does the fallback.
            self.emit(ind, f"if {x}.__class__ is not _dict or '-type' in {x}:")
            self.emit(ind + 1, "_fail()")
            for f in fields:
                v = self.var()
                self.emit(ind, f"{v} = {x}[{self.const(f['name'])}]")
                self.value(f["type"], v, ind, memo)
        self.active.discard(name)

    def array(self, items: Any, x: str, ind: int) -> None:
        self.emit(ind, f"if {x}.__class__ is not _list:")
        self.emit(ind + 1, "_fail()")
        self.emit(ind, f"if {x}:")
        self.emit(ind + 1, f"n = _len({x})")
        self.length("n", ind + 1)
        item = self.var()
        self.emit(ind + 1, f"for {item} in {x}:")
        self.value(items, item, ind + 2)
        self.emit(ind, "a(b'\\x00')")

    def map(self, values: Any, x: str, ind: int) -> None:
        self.emit(ind, f"if {x}.__class__ is not _dict:")
        self.emit(ind + 1, "_fail()")
        self.emit(ind, f"if {x}:")
        self.emit(ind + 1, f"n = _len({x})")
        self.length("n", ind + 1)
        k, v = self.var(), self.var()
        self.emit(ind + 1, f"for {k}, {v} in {x}.items():")
        self.primitive("string", k, ind + 2)
        self.value(values, v, ind + 2)
        self.emit(ind, "a(b'\\x00')")


def _fail() -> None:
    raise TypeError("value does not match the specialised writer: use fastavro")


def generate(
    schema: Any,
    positional: Mapping[str, Sequence[int] | None] | None = None,
    memo: Collection[str] = (),
) -> tuple[str, dict[str, Any]]:
    """The source of ``write(d)`` for ``schema`` (as ``fastavro.parse_schema`` returns it), and
    the constants it refers to. ``positional`` maps record full names to the tuple index of each
    field (None: field i at index i); other records are read from dicts. In the records named in
    ``memo``, string and int/long fields reuse the bytes of the last value while it repeats (for
    fields that change rarely: the source block, the envelope's timestamps)."""
    gen = _Gen(positional or {}, memo)
    gen.count_uses(schema)
    gen.emit(0, "def write(d):")
    gen.emit(1, "out = []")
    gen.emit(1, "a = out.append")
    gen.value(schema, "d", 1)
    gen.emit(1, "return b''.join(out)")
    return "\n".join(gen.defs + gen.lines) + "\n", gen.consts


def compile_writer(
    schema: Any,
    positional: Mapping[str, Sequence[int] | None] | None = None,
    memo: Collection[str] = (),
) -> Writer:
    """A writer for ``schema``: bytes identical to fastavro's, or an exception (see module doc).

    Raises ``Unsupported`` when the schema uses a feature this module does not specialise.
    """
    try:
        source, consts = generate(schema, positional, memo)
        code = compile(source, "<cdc._avrofast>", "exec")
    except (RecursionError, SyntaxError, MemoryError) as e:
        # Nesting past what Python's compiler takes (e.g. arrays of arrays 20 deep).
        raise Unsupported(f"schema too deeply nested for a generated writer: {e}") from e
    namespace: dict[str, Any] = dict(consts)
    exec(code, namespace)
    write: Writer = namespace["write"]
    return write
