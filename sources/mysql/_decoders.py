"""Temporal values of the binlog decoded as the server stores them, replacing the binlog library's.

python-mysql-replication gets three kinds of temporal value wrong, and each made the stream
disagree with the snapshot (which reads the same row with SELECT):

- a negative ``TIME`` with a fraction: MySQL stores the fraction of a negative time as its
  complement (for binary sort order) and the library adds it instead, so ``-733:00:00.001`` came
  out as ``-733:00:00.999``;
- zero and zero-in-part dates (``0000-00-00``, ``2020-00-15``) came out as None, so a NOT NULL
  column could not be told from a NULL one, and an invalid date allowed by ``ALLOW_INVALID_DATES``
  (``2020-02-30``) raised ``ValueError`` and stopped the stream at that event;
- the pre-5.6 ``TIME`` type was read unsigned (negative times wrapped);
- text in ``utf16``/``utf32``/``ucs2``/``utf16le``: pymysql knows none of them, so the library
  decoded with Python's codec of the same name (``utf16`` guesses little-endian: garbled text;
  ``utf32`` fails) or gave bytes; MySQL's are big-endian (``utf16le`` little-endian) without a BOM;
- ``latin1`` text: MySQL's latin1 is cp1252 with its five unassigned bytes (0x81, 0x8D, 0x8F,
  0x90, 0x9D) as the C1 controls U+0081..., which Python's cp1252 refuses (UnicodeDecodeError).

``install()`` replaces those decoders. A date or datetime that is not a calendar date arrives as
the string the server prints (``"0000-00-00"``, ``"2020-00-15 00:00:00.500000"``), the same form
pymysql gives for it in the snapshot, so ``cdc.sources.mysql._types`` maps both paths the same way.
Format: MySQL's sql-common/my_time.cc (``my_time_packed_from_binary``, ``TIME_to_longlong_*``).
"""

from __future__ import annotations

import codecs
from datetime import date, datetime, timedelta
from typing import Any

_TIMEF_INT_OFS = 0x800000
_TIMEF_OFS = 0x800000000000
# fractional seconds: bytes stored and the factor to microseconds, by fsp
_FRAC_BYTES = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3}
_FRAC_SCALE = {0: 0, 1: 10000, 2: 10000, 3: 100, 4: 100, 5: 1, 6: 1}


def time2_micros(data: bytes, fsp: int) -> int:
    """A ``TIME(fsp)`` value in the binlog's binary form -> signed microseconds."""
    if fsp >= 5:
        packed = int.from_bytes(data[:6], "big") - _TIMEF_OFS
    else:
        intpart = int.from_bytes(data[:3], "big") - _TIMEF_INT_OFS
        nfrac = _FRAC_BYTES[fsp]
        frac = int.from_bytes(data[3 : 3 + nfrac], "big") if nfrac else 0
        if intpart < 0 and frac:
            # a negative value's fraction is stored as its complement, the integer part one lower
            intpart += 1
            frac -= 1 << (8 * nfrac)
        packed = (intpart << 24) + frac * _FRAC_SCALE[fsp]
    negative = packed < 0
    packed = -packed if negative else packed
    hms, micros = packed >> 24, packed % (1 << 24)
    hours, minutes, seconds = (hms >> 12) % (1 << 10), (hms >> 6) % (1 << 6), hms % (1 << 6)
    total = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + micros
    return -total if negative else total


def _date_text(year: int, month: int, day: int) -> str:
    return f"{year:04d}-{month:02d}-{day:02d}"


def date_value(value: int) -> date | str:
    """A ``DATE`` (3 bytes, little-endian: day 5 bits, month 4 bits, year) -> a date, or the text
    the server prints when it is not a calendar date."""
    day, month, year = value & 31, (value >> 5) & 15, value >> 9
    try:
        return date(year, month, day)
    except ValueError:
        return _date_text(year, month, day)


def _datetime_value(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micros: int, fsp: int
) -> datetime | str:
    try:
        return datetime(year, month, day, hour, minute, second, micros)
    except ValueError:
        text = f"{_date_text(year, month, day)} {hour:02d}:{minute:02d}:{second:02d}"
        return text + (f".{micros:06d}" if fsp else "")


def datetime2_value(data: bytes, fsp: int) -> datetime | str:
    """A ``DATETIME(fsp)`` in the binlog's binary form (5 bytes big-endian: sign, year*13+month,
    day, hour, minute, second; then the fraction) -> a datetime, or the server's text of it."""
    v = int.from_bytes(data[:5], "big")
    year_month = (v >> 22) & ((1 << 17) - 1)
    nfrac = _FRAC_BYTES[fsp]
    micros = int.from_bytes(data[5 : 5 + nfrac], "big") * _FRAC_SCALE[fsp] if nfrac else 0
    return _datetime_value(
        year_month // 13,
        year_month % 13,
        (v >> 17) & 31,
        (v >> 12) & 31,
        (v >> 6) & 63,
        v & 63,
        micros,
        fsp,
    )


def datetime_value(v: int) -> datetime | str:
    """A pre-5.6 ``DATETIME`` (YYYYMMDDhhmmss as an integer) -> a datetime, or its text."""
    d, t = divmod(v, 1_000_000)
    return _datetime_value(
        d // 10000, d // 100 % 100, d % 100, t // 10000, t // 100 % 100, t % 100, 0, 0
    )


_LATIN1 = "cdc-mysql-latin1"
# MySQL character sets pymysql does not know, or decodes differently -> the codec that decodes them
_CODECS = {
    "utf16": "utf-16-be",
    "utf32": "utf-32-be",
    "ucs2": "utf-16-be",
    "utf16le": "utf-16-le",
    "latin1": _LATIN1,
    "cp1252": _LATIN1,  # the library names a column's charset by pymysql's codec: latin1's
}


def _latin1_decode(data: Any, errors: str = "strict") -> tuple[str, int]:
    # cp1252, and each byte cp1252 leaves unassigned as the code point of the same number
    return bytes(data).decode("cp1252", "cdc-c1-controls"), len(data)


def _c1_controls(e: UnicodeError) -> tuple[str, int]:
    if not isinstance(e, UnicodeDecodeError):
        raise e
    return "".join(chr(b) for b in e.object[e.start : e.end]), e.end


def _search(name: str) -> codecs.CodecInfo | None:
    if name.replace("_", "-") != _LATIN1:
        return None
    latin1 = codecs.lookup("cp1252")
    return codecs.CodecInfo(latin1.encode, _latin1_decode, name=_LATIN1)


codecs.register_error("cdc-c1-controls", _c1_controls)
codecs.register(_search)


def encoding(charset: str) -> str | None:
    """The Python codec of a MySQL character set (or of the codec name pymysql gives it), or None
    when Python has none (swe7, keybcs2, armscii8, ...): the binlog library would give that text
    as bytes."""
    from pymysql.charset import charset_by_name

    known = charset_by_name(charset)
    name = _CODECS.get(charset) or (known.encoding if known else charset)
    try:
        codecs.lookup(name)
    except LookupError:
        return None
    return name


_installed = False


def install() -> None:
    """Make python-mysql-replication decode TIME, DATE and DATETIME as described above."""
    global _installed
    if _installed:
        return
    from pymysqlreplication.row_event import RowsEvent

    def read_time2(self: Any, column: Any) -> timedelta:
        fsp = column.fsp or 0
        data = bytes(self.packet.read(3 + _FRAC_BYTES[fsp]))
        return timedelta(microseconds=time2_micros(data, fsp))

    def read_time(self: Any) -> timedelta:
        v = self.packet.read_int24()  # signed: -HHMMSS for a negative time
        a = abs(v)
        t = timedelta(hours=a // 10000, minutes=a // 100 % 100, seconds=a % 100)
        return -t if v < 0 else t

    def read_date(self: Any) -> date | str:
        return date_value(self.packet.read_uint24())

    def read_datetime2(self: Any, column: Any) -> datetime | str:
        fsp = column.fsp or 0
        return datetime2_value(bytes(self.packet.read(5 + _FRAC_BYTES[fsp])), fsp)

    def read_datetime(self: Any) -> datetime | str:
        return datetime_value(self.packet.read_uint64())

    def charset_to_encoding(name: str) -> str:
        return encoding(name) or name

    # the library's private (name-mangled) per-type readers
    RowsEvent._RowsEvent__read_time2 = read_time2  # type: ignore[attr-defined]
    RowsEvent._RowsEvent__read_time = read_time  # type: ignore[attr-defined]
    RowsEvent._RowsEvent__read_date = read_date  # type: ignore[attr-defined]
    RowsEvent._RowsEvent__read_datetime2 = read_datetime2  # type: ignore[attr-defined]
    RowsEvent._RowsEvent__read_datetime = read_datetime  # type: ignore[attr-defined]
    RowsEvent.charset_to_encoding = staticmethod(charset_to_encoding)  # type: ignore[method-assign,assignment]
    _installed = True
