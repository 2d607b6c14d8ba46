"""The snapshot's compiled result reader (``cdc._native.SelectDecoder``, native/src/select.rs)
without a server: crafted text-protocol result sets read through buffered readers of every small
size (packets split across reads, rows continued over 0xffffff-byte packets, a read limit), then
truncated and corrupted: a clear ``ValueError`` or rows, never a crash or a hang, and never a
byte read past the result's last packet. Equality with the reference on real servers is
tests/integration/mysql/test_mysql_snapshot_native.py's."""

from __future__ import annotations

import io
import random
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pymysql.constants import FIELD_TYPE

from cdc.errors import SourceError
from cdc.sources.mysql import _snapshot_read as sr
from cdc.sources.mysql._schema import SchemaCache
from cdc.sources.mysql._types import ColumnType

pytestmark = pytest.mark.skipif(sr.PATH != sr.NATIVE, reason=sr.describe())

EOF = b"\xfe\x00\x00\x02\x00"  # warnings 0, status: autocommit
AFTER = b"\x01\x00\x00\x00Z"  # bytes of something else after the result: never read


def lenenc(v: bytes | None) -> bytes:
    """A length-coded string (0xfb: NULL)."""
    if v is None:
        return b"\xfb"
    n = len(v)
    if n < 251:
        return bytes([n]) + v
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little") + v
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little") + v
    return b"\xfe" + n.to_bytes(8, "little") + v


def framed(payloads: list[bytes], seq: int = 0) -> bytes:
    """Packets of ``payloads``: one over 0xfffffe bytes is split as the server splits it."""
    out = bytearray()
    for p in payloads:
        while True:
            part, p = p[:0xFFFFFF], p[0xFFFFFF:]
            out += len(part).to_bytes(3, "little") + bytes([seq % 256]) + part
            seq += 1
            if len(part) < 0xFFFFFF:
                break
    return bytes(out)


COLUMNS = [
    (sr.INT, 0, False, False, 0),
    (sr.TEXT, 0, False, False, ""),
    (sr.DATE, 0, True, False, 0),
    (sr.DECIMAL, 2, False, False, Decimal(0)),
    (sr.TIME, 6, False, False, 0),
    (sr.BYTES, 0, False, False, b""),
]


def decoder() -> Any:
    native = sr._native_avro._native
    assert native is not None
    return native.SelectDecoder(COLUMNS, 0, "s:x:t:", lambda fields: ("generic", *fields))


def random_row(
    rnd: random.Random, i: int, blobs: tuple[int, ...]
) -> tuple[list[bytes | None], tuple[Any, ...]]:
    """A row's fields and the values the reader gives for them (a blob of one of ``blobs``
    bytes: lengths coded in 1, 3 and 4 bytes)."""
    text = "".join(rnd.choice("ab é😀\t") for _ in range(rnd.randint(0, 30)))
    blob = rnd.randbytes(rnd.choice(blobs))
    cents = rnd.randint(-(10**8), 10**8)
    dec = f"{'-' if cents < 0 else ''}{abs(cents) // 100}.{abs(cents) % 100:02d}"
    fields: list[bytes | None] = [
        str(i).encode(),
        text.encode() if rnd.random() > 0.2 else None,
        b"0000-00-00" if rnd.random() < 0.2 else b"2024-02-29",
        dec.encode(),
        b"-838:59:59.000001",
        blob,
    ]
    value = (
        i,
        None if fields[1] is None else text,
        0 if fields[2] == b"0000-00-00" else 19782,
        Decimal(dec),
        -3020399000001,
        blob,
    )
    return fields, value


def stream(
    rnd: random.Random, n: int, blobs: tuple[int, ...] = (0, 3, 250, 251, 70000)
) -> tuple[bytes, list[tuple[Any, ...]]]:
    rows = [random_row(rnd, i, blobs) for i in range(n)]
    payloads = [b"".join(lenenc(f) for f in fields) for fields, _ in rows]
    return framed([*payloads, EOF], seq=5), [v for _, v in rows]


def test_crafted_results_read_whole_through_any_buffer_size() -> None:
    rnd = random.Random(15)
    dec = decoder()
    for size in (1, 2, 3, 4, 5, 7, 64, 8192):
        data, want = stream(rnd, 40)
        rfile = io.BufferedReader(io.BytesIO(data + AFTER), buffer_size=size)
        rows, ids, last, seq, end = dec.read(rfile, 5)
        assert rows == want
        assert ids == [f"s:x:t:{i}" for i in range(40)]
        assert last is not None and last[0] == b"39"
        assert end is None and seq == (5 + 41) % 256
        assert rfile.read() == AFTER, "read past the result"
        # in parts: the limit leaves the rest to read, from where it stopped
        rfile = io.BufferedReader(io.BytesIO(data + AFTER), buffer_size=size)
        got, s = [], 5
        while True:
            rows, _, _, s, end = dec.read(rfile, s, 7)
            got += rows
            if end is not True:
                break
        assert got == want and rfile.read() == AFTER


def test_a_row_over_16_mb_and_an_error_packet() -> None:
    dec = decoder()
    big = b"x" * (0xFFFFFF + 10)
    row = b"".join(lenenc(f) for f in [b"1", None, b"2024-02-29", b"1.00", b"00:00:00", big])
    err = b"\xff\x42\x04#HY000boom"
    data = framed([row, err])
    rows, _, _, seq, end = dec.read(io.BufferedReader(io.BytesIO(data)), 0)
    assert rows[0][5] == big and seq == 3 and end == err


def test_values_it_does_not_take_go_to_the_generic_path() -> None:
    dec = decoder()
    odd = [b"7", b"\xff\xfe", b"2024-02-29", b"1.5", b"00:00:00", b""]  # not UTF-8; a scale of 1
    rows, ids, *_ = dec.read(
        io.BufferedReader(io.BytesIO(framed([b"".join(map(lenenc, odd)), EOF]))), 0
    )
    assert rows == [("generic", *odd)] and ids == [None]


def test_truncated_and_corrupted_results_raise_value_error_never_crash() -> None:
    rnd = random.Random(1515)
    dec = decoder()
    outcomes = {"rows": 0, "error": 0}
    for _ in range(10000):
        data, _ = stream(rnd, rnd.randint(0, 6), (0, 3, 250, 251, 300))
        b = bytearray(data)
        how = rnd.random()
        if how < 0.3:
            b = b[: rnd.randrange(len(b))]
        elif how < 0.8:
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
        else:
            at = rnd.randrange(len(b))
            b[at:at] = rnd.randbytes(rnd.randint(1, 9))
        rfile = io.BufferedReader(io.BytesIO(bytes(b)), buffer_size=rnd.choice([1, 5, 300, 8192]))
        try:
            dec.read(rfile, 5, rnd.choice([0, 0, 2]))
            outcomes["rows"] += 1
        except ValueError:
            outcomes["error"] += 1
    assert outcomes["error"] > 3000 and outcomes["rows"] > 300, outcomes


def reader_of(kinds: list[tuple[str, ColumnType, int]]) -> tuple[sr.Reader, Any]:
    """A compiled reader of a table of ``kinds`` (name, type, result column type), planned
    from a result of those columns (PyMySQL's converters for them), and that result."""
    from pymysql.converters import decoders

    cols = [(name, t, False) for name, t, _ in kinds]
    version = SchemaCache("p").version("db", "t", cols, (0,))
    fields = [SimpleNamespace(type_code=code, charsetnr=33) for _, _, code in kinds]
    result = SimpleNamespace(
        fields=fields,
        converters=[("ascii", decoders.get(code)) for _, _, code in kinds],
        unbuffered_active=True,
        connection=None,
    )
    reader = sr.Reader(version, "s", "f:1", True)
    reader._pymysql = list(result.converters)
    reader._plan(result, 0)
    assert reader.decoder is not None
    reader._result = result
    return reader, result


def test_a_result_cut_short_is_a_source_error_and_the_connection_is_closed() -> None:
    reader, result = reader_of([("id", ColumnType("int"), FIELD_TYPE.LONG)])
    closed: list[bool] = []
    data = framed([lenenc(b"1"), lenenc(b"2")])  # no EOF: the connection ended
    conn = SimpleNamespace(
        _rfile=io.BufferedReader(io.BytesIO(data)),
        _next_seq_id=0,
        _force_close=lambda: closed.append(True),
    )
    with pytest.raises(SourceError, match=r"db\.t: cannot read the result of its query") as e:
        reader.more(conn)
    assert e.value.retryable and closed == [True] and not result.unbuffered_active


def test_a_value_the_reference_cannot_convert_fails_as_in_the_reference() -> None:
    """A TIME text PyMySQL leaves as a string: the row goes to the reference's conversion, whose
    located error (fatal) is the read's."""
    reader, _ = reader_of(
        [("id", ColumnType("int"), FIELD_TYPE.LONG), ("t", ColumnType("time"), FIELD_TYPE.TIME)]
    )
    data = framed([lenenc(b"7") + lenenc(b"12:00:00"), lenenc(b"8") + lenenc(b"noon"), EOF])
    conn = SimpleNamespace(
        _rfile=io.BufferedReader(io.BytesIO(data)), _next_seq_id=0, _force_close=lambda: None
    )
    with pytest.raises(SourceError) as e:
        reader.more(conn)
    assert not e.value.retryable
    assert "db.t.t (time(0)) value 'noon'" in str(e.value) and "key [8]" in str(e.value)


def test_a_connection_whose_results_end_with_ok_packets_is_read_by_the_reference() -> None:
    """CLIENT_DEPRECATE_EOF (which PyMySQL does not ask for today) changes how a result ends:
    the plan is refused, counted, and the reference reads."""
    from pymysql.constants import CLIENT

    reader, result = reader_of([("id", ColumnType("int"), FIELD_TYPE.LONG)])
    other = sr.Reader(reader.version, "s", "f:1", True)
    before = sr.native_fallbacks()
    other._plan(result, CLIENT.DEPRECATE_EOF)
    assert other.decoder is None and not other.native
    assert sr.native_fallbacks() == before + 1
