"""The compiled binlog rows decoder without a server: seeded random tables and rows (every column
kind the plan covers, random metadata, nulls, minimal images, values at and past their edges)
written as row images and decoded both by the compiled decoder and by python-mysql-replication's
own row parser with the converters (``_rows.python_rows``); random and truncated bytes (a
``ValueError`` or the reference's rows, never a crash or a hang); latin1 byte for byte.

The library's parser runs on the crafted bytes as it runs on a server's: its rows event and packet
wrapper are set up here as its constructors would from an event's header.
"""

from __future__ import annotations

import random
import string
from typing import Any

import pytest
from pymysql.protocol import MysqlPacket
from pymysqlreplication.column import Column
from pymysqlreplication.constants import BINLOG
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
from pymysqlreplication.table import Table

from cdc.sources.mysql import _binlog, _rows
from cdc.sources.mysql._schema import SchemaCache, TableVersion
from cdc.sources.mysql._types import from_binlog
from tests.unit.test_mysql_value_conversions import _date_int, _datetime2, _time2

pytestmark = pytest.mark.skipif(_rows.PATH != _rows.NATIVE, reason=_rows.describe())
assert _binlog  # installs the source's own TIME/DATE/DATETIME/JSON decoders in the library

_KINDS = {
    WriteRowsEvent: BINLOG.WRITE_ROWS_EVENT_V2,
    UpdateRowsEvent: BINLOG.UPDATE_ROWS_EVENT_V2,
    DeleteRowsEvent: BINLOG.DELETE_ROWS_EVENT_V2,
}


def _column(i: int, type_code: int, **meta: Any) -> Column:
    base = {
        "type": type_code,
        "name": f"c{i}",
        "unsigned": False,
        "is_primary": False,
        "charset_id": None,
        "character_set_name": None,
        "collation_name": None,
        "enum_values": None,
        "set_values": None,
        "visibility": False,
    }
    return Column(**{**base, **meta})


class Table_:
    """A table map's columns, its table version and the compiled decoder of its rows."""

    def __init__(self, cols: list[Column], nullable: list[bool], floats: dict[int, Any]) -> None:
        self.cols = cols
        types = [
            (c.name, from_binlog(c, False, floats.get(i)), nullable[i]) for i, c in enumerate(cols)
        ]
        adjust = bool(nullable) and nullable[0]  # the time adjuster on in half the tables
        self.version: TableVersion = SchemaCache("p", adjust_years=adjust).version(
            "db", "t", types, ()
        )
        plan = []
        for c, (t, required) in zip(cols, self.version.types, strict=True):
            p = _rows.column_plan(c, t, required, adjust)
            assert not isinstance(p, str), p
            plan.append(p)
        self.decoder = _rows.RowsDecoder(self.version, plan)

    def event(self, kind: type, body: bytes, present: bytes, present2: bytes | None) -> Any:
        """A rows event of ``kind`` at its row images ``body``, as the library leaves it after
        reading the event's header and bitmaps."""
        w = BinLogPacketWrapper.__new__(BinLogPacketWrapper)
        w.packet = MysqlPacket(body + b"\0\0\0\0", "utf8")  # and a checksum
        w.read_bytes = 0
        w._BinLogPacketWrapper__data_buffer = b""  # type: ignore[attr-defined]
        ev = kind.__new__(kind)
        ev.packet = w
        ev.event_size = len(body)
        ev.event_type = _KINDS[kind]
        ev.table_id = 1
        ev.table_map = {1: Table(1, "db", "t", self.cols)}
        ev.columns = self.cols
        ev.number_of_columns = len(self.cols)
        ev.complete = True
        ev._ignore_decode_errors = False
        ev._RowsEvent__rows = None
        ev._RowsEvent__none_sources = {}
        ev.columns_present_bitmap = present
        if present2 is not None:
            ev.columns_present_bitmap2 = present2
        return ev

    def both(self, kind: type, body: bytes, present: bytes, present2: bytes | None) -> Any:
        """("native", rows) or ("error", the ValueError), and the reference's rows or error."""
        ev = self.event(kind, body, present, present2)
        try:
            native: Any = ("native", typed(self.decoder.decode(ev, body)))
        except ValueError as e:
            native = ("error", e)
        try:
            reference: Any = ("native", typed(_rows.python_rows(ev, self.version, "test")))
        except Exception as e:
            reference = ("error", e)
        return native, reference


def typed(pairs: list[Any]) -> list[Any]:
    return [[None if r is None else [(type(x), repr(x)) for x in r] for r in p] for p in pairs]


# --- random columns and their values --------------------------------------------------------------

_CHARSETS = ["utf8", "ascii", "cp1252", "binary", None]


def _decimal_bytes(rnd: random.Random, precision: int, scale: int) -> bytes:
    """A DECIMAL(precision, scale) value in MySQL's binary form (strings/decimal.cc)."""
    comp = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4]
    integral = precision - scale
    whole = "".join(rnd.choice(string.digits) for _ in range(integral))
    frac = "".join(rnd.choice(string.digits) for _ in range(scale))
    out = b""
    lead = integral % 9
    if lead:
        out += int(whole[:lead]).to_bytes(comp[lead], "big")
    for k in range(lead, integral, 9):
        out += int(whole[k : k + 9]).to_bytes(4, "big")
    for k in range(0, scale - scale % 9, 9):
        out += int(frac[k : k + 9]).to_bytes(4, "big")
    if scale % 9:
        out += int(frac[scale - scale % 9 :]).to_bytes(comp[scale % 9], "big")
    b = bytearray(out)
    if rnd.random() < 0.5:  # negative: every byte inverted
        b = bytearray(x ^ 0xFF for x in b)
    b[0] ^= 0x80
    return bytes(b)


def _text(rnd: random.Random, charset: str | None, limit: int) -> bytes:
    n = rnd.randint(0, min(limit, 30))
    if charset == "ascii":
        return "".join(rnd.choice(string.printable) for _ in range(n)).encode()
    if charset in ("cp1252", "binary"):
        return bytes(rnd.randrange(256) for _ in range(n))
    return "".join(rnd.choice("aZ é€😀\\',\n\x00") for _ in range(n)).encode()[:limit]


def _length(value: bytes, size: int) -> bytes:
    return len(value).to_bytes(size, "little") + value


_RANDOM_KINDS = [
    *("tiny", "short", "int24", "long", "longlong", "float", "double", "decimal", "bit"),
    *("varchar", "string", "blob", "geometry"),
    *("date", "datetime2", "time2", "timestamp2", "year", "enum", "set"),
]


def random_column(rnd: random.Random, i: int) -> tuple[Column, Any, Any]:
    """(column, a value writer, FLOAT(M,D) digits or None)."""
    kind = rnd.choice(_RANDOM_KINDS)
    if kind in ("tiny", "short", "int24", "long", "longlong"):
        code, size = {"tiny": (1, 1), "short": (2, 2), "int24": (9, 3), "long": (3, 4)}.get(
            kind, (8, 8)
        )
        col = _column(i, code, unsigned=rnd.random() < 0.5)
        return col, lambda r: r.randbytes(size), None
    if kind == "float":
        digits = (rnd.randint(1, 24), rnd.randint(0, 6)) if rnd.random() < 0.5 else None
        return _column(i, 4, size=4), lambda r: r.randbytes(4), digits
    if kind == "double":
        return _column(i, 5, size=8), lambda r: r.randbytes(8), None
    if kind == "decimal":
        p = rnd.randint(1, 65)
        s = rnd.randint(0, min(p, 30))
        col = _column(i, 246, precision=p, decimals=s)
        return col, lambda r: _decimal_bytes(r, p, s), None
    if kind == "bit":
        bits = rnd.randint(1, 64)
        col = _column(i, 16, bits=bits, bytes=(bits + 7) // 8)
        return col, lambda r: r.randbytes((bits + 7) // 8), None
    if kind in ("varchar", "string", "blob"):
        cs = rnd.choice(_CHARSETS)
        if kind == "blob":
            ls = rnd.randint(1, 4)
            col = _column(i, 252, length_size=ls, character_set_name=cs)
            return col, lambda r: _length(_text(r, cs, 255), ls), None
        limit = rnd.choice([10, 255, 256, 1000]) if kind == "varchar" else rnd.randint(1, 255)
        code = 15 if kind == "varchar" else 254
        col = _column(i, code, max_length=limit, character_set_name=cs)
        ls = 2 if limit > 255 else 1
        return col, lambda r: _length(_text(r, cs, limit), ls), None
    if kind == "geometry":
        col = _column(i, 255, length_size=4)
        return col, lambda r: _length(r.randbytes(r.randint(0, 40)), 4), None
    if kind == "date":
        return (
            _column(i, 10),
            lambda r: _date_int(r.randint(0, 9999), r.randint(0, 13), r.randint(0, 31)).to_bytes(
                3, "little"
            ),
            None,
        )
    if kind == "datetime2":
        fsp = rnd.randint(0, 6)
        nfrac = [0, 1, 1, 2, 2, 3, 3][fsp]

        def dt(r: random.Random) -> bytes:
            y = r.choice([r.randint(0, 99), r.randint(1000, 9999), 0])
            frac = r.randrange(10 ** (2 * nfrac) if nfrac < 3 else 1_000_000).to_bytes(nfrac, "big")
            return _datetime2(
                y, r.randint(0, 12), r.randint(0, 31), r.randint(0, 23), r.randint(0, 59),
                r.randint(0, 59), frac,
            )  # fmt: skip

        return _column(i, 18, fsp=fsp), dt, None
    if kind == "time2":
        fsp = rnd.randint(0, 6)

        def tm(r: random.Random) -> bytes:
            micros = r.randint(-838 * 3600, 838 * 3600) * 1_000_000
            if fsp:
                step = 10 ** (6 - fsp)
                micros += r.randrange(0, 1_000_000, step) * (1 if micros >= 0 else -1)
            return _time2(micros, fsp)

        return _column(i, 19, fsp=fsp), tm, None
    if kind == "timestamp2":
        fsp = rnd.randint(0, 6)
        nfrac = [0, 1, 1, 2, 2, 3, 3][fsp]

        def ts(r: random.Random) -> bytes:
            secs = r.choice([0, 1, r.randint(0, 2**31 - 1)])
            frac = r.randrange(10**fsp) * (10 if fsp % 2 else 1) if fsp else 0
            return secs.to_bytes(4, "big") + frac.to_bytes(nfrac, "big")

        return _column(i, 17, fsp=fsp), ts, None
    if kind == "year":
        return _column(i, 13), lambda r: r.randbytes(1), None
    if kind == "enum":
        labels = [f"e{k}," for k in range(rnd.randint(1, 300))]
        size = 1 if len(labels) < 256 else 2
        col = _column(i, 247, size=size, enum_values=["", *labels])
        return col, lambda r: r.randrange(len(labels) + 1).to_bytes(size, "little"), None
    labels = [f"s{k}" for k in range(rnd.randint(1, 64))]
    size = [1, 1, 2, 3, 4, 5, 6, 7, 8][(len(labels) + 7) // 8]
    col = _column(i, 248, size=size, set_values=labels)
    return col, lambda r: r.randbytes(size), None


def _bitmap(bits: list[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _image(rnd: random.Random, writers: list[Any], present: list[bool]) -> bytes:
    nulls = [rnd.random() < 0.2 for p in present if p]
    out = _bitmap(nulls)
    k = 0
    for w, p in zip(writers, present, strict=True):
        if not p:
            continue
        if not nulls[k]:
            out += w(rnd)
        k += 1
    return out


def test_random_rows_decode_as_the_library_parses_and_converts_them() -> None:
    rnd = random.Random(1515)
    agreed = refused = 0
    for _ in range(150):
        cols, writers, floats = [], [], {}
        for i in range(rnd.randint(1, 12)):
            col, w, digits = random_column(rnd, i)
            cols.append(col)
            writers.append(w)
            if digits is not None:
                floats[i] = digits
        table = Table_(cols, [rnd.random() < 0.5 for _ in cols], floats)
        for kind in _KINDS:
            full = [True] * len(cols)
            minimal = [rnd.random() < 0.7 for _ in cols]
            present = minimal if kind is not WriteRowsEvent and rnd.random() < 0.3 else full
            present2 = (
                (minimal if rnd.random() < 0.3 else full) if kind is UpdateRowsEvent else None
            )
            body = b""
            for _ in range(rnd.randint(1, 5)):
                body += _image(rnd, writers, present)
                if present2 is not None:
                    body += _image(rnd, writers, present2)
            native, reference = table.both(
                kind, body, _bitmap(present), None if present2 is None else _bitmap(present2)
            )
            if native[0] == "error":
                refused += 1  # the stream lets the library decide: the reference's result
                continue
            assert native == reference, (kind, [c.data for c in cols], body.hex())
            agreed += 1
    # most random tables decode natively; some values (a float past FLOAT(M,D)'s digits, a
    # text that is not in its charset) are the library's to judge
    assert agreed > 5 * refused, (agreed, refused)


def test_random_and_truncated_bytes_raise_value_error_or_give_the_references_rows() -> None:
    rnd = random.Random(15)
    outcomes = {"error": 0, "same": 0}
    for _ in range(100):
        cols, writers, floats = [], [], {}
        for i in range(rnd.randint(1, 8)):
            col, w, digits = random_column(rnd, i)
            cols.append(col)
            writers.append(w)
            if digits is not None:
                floats[i] = digits
        table = Table_(cols, [True] * len(cols), floats)
        present = _bitmap([True] * len(cols))
        good = b"".join(_image(rnd, writers, [True] * len(cols)) for _ in range(3))
        bodies = [rnd.randbytes(rnd.randint(0, 60)), good[: rnd.randrange(len(good))]]
        corrupted = bytearray(good)
        corrupted[rnd.randrange(len(good))] ^= 1 << rnd.randrange(8)
        bodies.append(bytes(corrupted))
        for body in bodies:
            native, reference = table.both(WriteRowsEvent, body, present, None)
            if native[0] == "error":
                outcomes["error"] += 1
                continue
            assert native == reference, ([c.data for c in cols], body.hex())
            outcomes["same"] += 1
    assert outcomes["error"] and outcomes["same"], outcomes


def test_latin1_text_decodes_as_mysqls_latin1_byte_for_byte() -> None:
    every = bytes(range(256))
    table = Table_([_column(0, 252, length_size=2, character_set_name="cp1252")], [True], {})
    body = b"\x00" + _length(every, 2)
    native, reference = table.both(WriteRowsEvent, body, b"\x01", None)
    assert native == reference
    assert native[1][0][1][0] == (str, repr(every.decode("cdc-mysql-latin1")))


def test_a_plan_refuses_what_it_does_not_cover_and_prints() -> None:
    old_time = _column(0, 11)  # the pre-5.6 TIME
    from cdc.sources.mysql._types import ColumnType

    assert isinstance(_rows.column_plan(old_time, ColumnType("time"), False, False), str)
    utf16 = _column(0, 15, max_length=10, character_set_name="utf16")
    assert "utf16" in str(_rows.column_plan(utf16, ColumnType("varchar"), False, False))
    table = Table_([_column(0, 246, precision=10, decimals=3), _column(1, 10)], [False, True], {})
    text = _rows.explain(table.decoder.plan)
    assert text.splitlines()[0].startswith("0: DECIMAL(10, 3) not null")
    assert text.splitlines()[1].startswith("1: DATE(0, 0) fallback=0")


def test_one_decoder_per_table_shape_whatever_the_table_id() -> None:
    """A table map precedes every transaction and the server renumbers a table when it reopens
    it: the decoders are keyed by the columns' description, not by the table id, so a
    long-running stream does not make (and keep) one per table map."""
    from types import SimpleNamespace

    table = Table_(
        [_column(0, 3), _column(1, 15, max_length=20, character_set_name="utf8")], [False, True], {}
    )
    body = b"\x00\x02db\x00\x01t\x00\x02\x03\x0f\x02\x14\x00\x02"

    def table_map(table_id: int, described: bytes = body) -> Any:
        data = bytes(20) + table_id.to_bytes(6, "little") + described + b"crc!"
        packet = SimpleNamespace(packet=SimpleNamespace(_data=data))
        return SimpleNamespace(packet=packet, event_size=6 + len(described), columns=table.cols)

    decoders = _rows.RowsDecoders(native=True)
    first = decoders.for_table_map(table_map(7), table.version)
    assert first is not None
    assert decoders.for_table_map(table_map(8), table.version) is first
    assert decoders.for_table_map(table_map(9, body + b"\x01"), table.version) is not first


@pytest.mark.parametrize("native", [True, False])
def test_an_event_of_images_without_columns_is_an_error_not_a_hang(native: bool) -> None:
    """Row images of no column have no bytes: the library's loop would never end (nor would a
    decoder that trusted the bitmap); both paths raise."""
    table = Table_([_column(0, 3)], [True], {})
    ev = table.event(WriteRowsEvent, b"\x00\x01\x02", b"\x00", None)
    with pytest.raises(ValueError, match="name no column"):
        decoder = table.decoder if native else None
        _rows.RowsDecoders(native=native).rows(ev, table.version, decoder, "test")
    with pytest.raises(ValueError, match="no column"):
        table.decoder.decode(ev, b"\x00\x01\x02")
