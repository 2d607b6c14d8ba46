"""The compiled binlog rows decoder (sources/mysql/_rows.py, native/src/binlog.rs) against the
reference (python-mysql-replication's parsing + the converters), on real rows events written by
MariaDB and MySQL 9.7: every TYPES.md row at its edges (the values of test_mysql_type_edges),
nullable and NOT NULL, full and minimal row images, inserts, updates and deletes; seeded random
rows; and truncated or corrupted row images (a clear error or the reference's very rows, never a
crash or a hang).

Rows are compared as (type, repr) of every value: equal values of the same types, decimals with
the same exponent, so the Avro bytes written from them are the same.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.sources.mysql import _rows
from cdc.sources.mysql._schema import TableVersion
from scratch.binlog_rows import rows_events
from tests.integration.mysql.conftest import CLIENT_SERVER_ID, binlog_status, connect, is_mysql
from tests.integration.mysql.test_mysql_type_edges import EDGES, LOOSE_MODE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_rows.PATH != _rows.NATIVE, reason=_rows.describe()),
]


def typed(pairs: list[_rows.Pair]) -> list[Any]:
    """Rows as (type, repr) of each value: what decides the Avro bytes."""
    return [
        [None if row is None else [(type(x), repr(x)) for x in row] for row in pair]
        for pair in pairs
    ]


@dataclass
class Captured:
    """One rows event, as read, with what reparsing it with other bytes needs."""

    ev: Any
    version: TableVersion
    decoder: _rows.RowsDecoder
    body: bytes
    start: int  # the packet's position at the row images
    read_bytes: int  # the library's count there
    event_size: int

    def __post_init__(self) -> None:
        self.captured_body = self.body

    def reset(self, body: bytes) -> None:
        """Make the event as the stream meets it, at its row images, with ``body`` as them."""
        ev, p = self.ev, self.ev.packet
        raw = p.packet
        raw._data = raw._data[: self.start] + body + raw._data[self.start + len(self.body) :]
        self.body = body
        raw._position = self.start
        p.read_bytes = self.read_bytes
        p._BinLogPacketWrapper__data_buffer = b""
        ev.event_size = self.event_size - (len(self.captured_body) - len(body))
        ev._RowsEvent__rows = None
        ev._RowsEvent__none_sources = {}

    def library(self, body: bytes) -> list[_rows.Pair]:
        """The reference's rows of the event with ``body`` as its row images."""
        self.reset(body)
        return _rows.python_rows(self.ev, self.version, "the test")

    def native(self, body: bytes) -> list[_rows.Pair]:
        return self.decoder.decode(self.ev, body)


def capture(
    server: Any, db: str, start: tuple[str, int], *, adjust: bool = False
) -> list[Captured]:
    """Every rows event of ``db`` from ``start`` to the end of the binlog, each checked: the
    compiled decoder covers its table and gives the reference's rows."""
    out: list[Captured] = []
    events = rows_events(server, db, start, server_id=CLIENT_SERVER_ID, adjust_years=adjust)
    for ev, v, _, dec in events:
        assert dec is not None, f"no compiled plan for {ev.table}"
        body = _rows.body(ev)
        assert body is not None
        c = Captured(
            ev, v, dec, body, ev.packet.packet._position, ev.packet.read_bytes, ev.event_size
        )
        native = dec.decode(ev, body)
        assert typed(native) == typed(c.library(body)), f"{ev.table} at {ev.packet.log_pos}"
        assert native, "an event without rows"
        out.append(c)
    return out


def _types() -> Iterator[tuple[str, str, list[str]]]:
    """(column name, type, literals) of every edge; MariaDB's JSON is a checked LONGTEXT."""
    for i, e in enumerate(EDGES.values()):
        yield f"c{i}", e.ddl, e.literals


def _write_edges(server: Any, db: str) -> None:
    cols = list(_types())
    ddl = ", ".join(f"{n} {t}" for n, t, _ in cols)
    required = [(n, t, lits) for n, t, lits in cols if t.split("(")[0] in _ZERO_DATES]
    conn = connect(server, db)
    cur = conn.cursor()
    cur.execute(LOOSE_MODE)
    cur.execute("SET time_zone = '+00:00'")
    cur.execute(f"CREATE TABLE edges (id INT PRIMARY KEY, {ddl})")
    req_ddl = ", ".join(f"{n} {t} NOT NULL" for n, t, _ in required)
    cur.execute(f"CREATE TABLE required (id INT PRIMARY KEY, {req_ddl})")
    rows = max(len(lits) for _, _, lits in cols)
    cur.execute("BEGIN")
    for r in range(rows):
        values = ", ".join(lits[r] if r < len(lits) else "NULL" for _, _, lits in cols)
        cur.execute(f"INSERT INTO edges VALUES ({r}, {values})")
    for r in range(rows):
        values = ", ".join(lits[r % len(lits)] for _, _, lits in required)
        cur.execute(f"INSERT INTO required VALUES ({r}, {values})")
    cur.execute("COMMIT")
    # each row's values moved one row on (a full update of every column), some to NULL
    shifted = ", ".join(
        f"{n} = ELT(MOD(id + 1, {len(lits) + 1}) + 1, {', '.join(lits)}, NULL)"
        for n, _, lits in cols
    )
    cur.execute(f"UPDATE edges SET {shifted}")
    cur.execute("UPDATE required SET id = id + 100")
    cur.execute("SET SESSION binlog_row_image = 'MINIMAL'")  # partial images
    cur.execute("UPDATE edges SET c0 = 1, c20 = NULL WHERE id < 3")
    cur.execute("DELETE FROM edges WHERE id >= 5")
    cur.execute("SET SESSION binlog_row_image = 'FULL'")
    cur.execute("DELETE FROM edges")
    cur.execute("DELETE FROM required")
    conn.close()


_ZERO_DATES = {"date", "datetime", "timestamp"}


def test_native_rows_equal_the_reference_for_every_type_at_its_edges(
    server: Any, mysql_db: str
) -> None:
    conn = connect(server)
    start = binlog_status(conn.cursor(), server)
    conn.close()
    _write_edges(server, mysql_db)
    events = capture(server, mysql_db, start)
    kinds = {type(c.ev) for c in events}
    assert kinds == {WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent}
    # minimal images: some before images hold only the key
    assert any(
        isinstance(c.ev, UpdateRowsEvent)
        and c.ev.columns_present_bitmap != c.ev.columns_present_bitmap2
        for c in events
    )
    # the time adjuster moves two-digit years the same way on both paths
    capture(server, mysql_db, start, adjust=True)


# --- seeded random rows ---------------------------------------------------------------------------

RANDOM_COLUMNS = [
    "ti TINYINT",
    "tiu TINYINT UNSIGNED",
    "si SMALLINT",
    "mi MEDIUMINT",
    "miu MEDIUMINT UNSIGNED",
    "i INT",
    "iu INT UNSIGNED",
    "bi BIGINT",
    "biu BIGINT UNSIGNED",
    "d1 DECIMAL(5,5)",
    "d2 DECIMAL(30,12)",
    "d3 DECIMAL(18,0)",
    "f FLOAT",
    "fd FLOAT(9,3)",
    "dbl DOUBLE",
    "b1 BIT(1)",
    "b9 BIT(9)",
    "vc VARCHAR(300)",
    "ch CHAR(10)",
    "l1 VARCHAR(40) CHARACTER SET latin1",
    "tx TEXT",
    "bn BINARY(6)",
    "vb VARBINARY(50)",
    "bl MEDIUMBLOB",
    "dt DATE",
    "t0 TIME",
    "t3 TIME(3)",
    "t6 TIME(6)",
    "dt0 DATETIME",
    "dt2 DATETIME(2)",
    "dt5 DATETIME(5)",
    "ts0 TIMESTAMP NULL",
    "ts1 TIMESTAMP(1) NULL",
    "ts4 TIMESTAMP(4) NULL",
    "y YEAR",
    "e ENUM('x','y','z w')",
    "st SET('a','b','c','d')",
    "j JSON",
]


def _rand_value(rnd: random.Random, column: str) -> str:
    t = column.split(" ", 1)[1].upper()
    if rnd.random() < 0.15:
        return "NULL"

    def hms() -> str:
        return f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}"

    def digits(n: int) -> str:
        return "".join(rnd.choice(string.digits) for _ in range(n))

    if t.startswith("DECIMAL"):
        p, s = (int(x) for x in t[8:-1].split(","))
        sign = rnd.choice(["", "-"])
        whole = digits(rnd.randint(1, p - s)) if p > s else "0"
        return f"{sign}{whole}.{digits(s)}" if s else f"{sign}{whole}"
    if "INT" in t:
        bits = {"TINYINT": 8, "SMALLINT": 16, "MEDIUMINT": 24, "INT": 32, "BIGINT": 64}[
            t.split()[0]
        ]
        if "UNSIGNED" in t:
            return str(rnd.choice([0, 2**bits - 1, rnd.randrange(2**bits)]))
        return str(
            rnd.choice(
                [
                    -(2 ** (bits - 1)),
                    2 ** (bits - 1) - 1,
                    rnd.randrange(-(2 ** (bits - 1)), 2 ** (bits - 1)),
                ]
            )
        )
    if t.startswith("FLOAT(9"):
        return f"{rnd.uniform(-999999, 999999):.3f}"
    if t.startswith(("FLOAT", "DOUBLE")):
        return repr(rnd.choice([0.0, -1.5, rnd.uniform(-1e30, 1e30), rnd.uniform(-1, 1), 1e-30]))
    if t.startswith("BIT(1)"):
        return rnd.choice(["b'0'", "b'1'"])
    if t.startswith("BIT"):
        return f"b'{rnd.randrange(512):b}'"
    if "LATIN1" in t:
        text = "".join(
            chr(rnd.choice([*range(32, 127), *range(0xA0, 0x100), 0x20AC, 0x2122]))
            for _ in range(rnd.randint(0, 20))
        )
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    if t.startswith(("VARCHAR", "CHAR", "TEXT")):
        n = rnd.randint(0, 10 if t.startswith("CHAR") else 60)
        text = "".join(
            rnd.choice(["a", "Z", " ", "é", "€", "😀", "\\\\", "''", '"', ",", "\n"])
            for _ in range(n)
        ).rstrip(" ")
        return f"'{text}'"
    if t.startswith(("BINARY", "VARBINARY", "MEDIUMBLOB")):
        n = rnd.randint(0, 6 if t.startswith("BINARY") else 50)
        return "x'" + bytes(rnd.randrange(256) for _ in range(n)).hex() + "'"
    if t == "DATE":
        return rnd.choice(
            [
                "'0000-00-00'",
                f"'{rnd.randint(1, 9999):04d}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}'",
                "'2021-02-30'",
            ]
        )
    if t.startswith("TIME("):
        fsp = int(t[5])
        sign = rnd.choice(["", "-"])
        frac = "." + digits(fsp) if fsp else ""
        return f"'{sign}{rnd.randint(0, 838)}{hms()[2:]}{frac}'"
    if t == "TIME":
        return f"'{rnd.choice(['', '-'])}{rnd.randint(0, 838)}{hms()[2:]}'"
    if t.startswith("DATETIME"):
        fsp = int(t[9]) if "(" in t else 0
        frac = "." + digits(fsp) if fsp else ""
        y = rnd.choice([rnd.randint(1, 99), rnd.randint(1000, 9999)])
        return f"'{y:04d}-{rnd.randint(0, 12):02d}-{rnd.randint(0, 31):02d} {hms()}{frac}'"
    if t.startswith("TIMESTAMP"):
        fsp = int(t[10]) if "(" in t else 0
        frac = "." + digits(fsp) if fsp else ""
        return rnd.choice(
            [
                "'0000-00-00 00:00:00'",
                f"FROM_UNIXTIME({rnd.randint(1, 2**31 - 1)}{frac})",
                f"'2001-02-03 04:05:06{frac}'",
            ]
        )
    if t == "YEAR":
        return str(rnd.choice([0, 1901, 2155, rnd.randint(1901, 2155)]))
    if t.startswith("ENUM"):
        return rnd.choice(["'x'", "'y'", "'z w'", "''"])
    if t.startswith("SET"):
        return "'" + ",".join(x for x in "abcd" if rnd.random() < 0.5) + "'"
    if t == "JSON":
        return rnd.choice(
            ["'null'", '\'{"k": [1, 2.5, "é", true, null]}\'', f"'{rnd.randint(-9, 9)}'", "'[]'"]
        )
    raise AssertionError(column)


def test_native_rows_equal_the_reference_for_seeded_random_rows(server: Any, mysql_db: str) -> None:
    rnd = random.Random(15)
    conn = connect(server, mysql_db)
    cur = conn.cursor()
    cur.execute(LOOSE_MODE)
    cur.execute("SET time_zone = '+00:00'")
    cur.execute(f"CREATE TABLE r (id INT PRIMARY KEY, {', '.join(RANDOM_COLUMNS)})")
    start = binlog_status(cur, server)
    n = 150
    for lo in range(0, n, 50):
        rows = [
            f"({i}, {', '.join(_rand_value(rnd, c) for c in RANDOM_COLUMNS)})"
            for i in range(lo, lo + 50)
        ]
        cur.execute(f"INSERT INTO r VALUES {', '.join(rows)}")
    for _ in range(10):
        c = rnd.choice(RANDOM_COLUMNS)
        cur.execute(
            f"UPDATE r SET {c.split()[0]} = {_rand_value(rnd, c)} WHERE id % 7 = {rnd.randrange(7)}"
        )
    cur.execute("DELETE FROM r WHERE id % 3 = 0")
    conn.close()
    events = capture(server, mysql_db, start)
    assert sum(len(c.native(c.body)) for c in events) >= n


def test_truncated_and_corrupted_rows_give_an_error_or_the_references_rows(
    server: Any, mysql_db: str
) -> None:
    """Mutated row images: the compiled decoder raises ValueError (the stream then lets the
    library decide, which raises its own error) or returns exactly the library's rows for the
    same bytes; it never crashes and every call ends."""
    conn = connect(server)
    start = binlog_status(conn.cursor(), server)
    conn.close()
    _write_edges(server, mysql_db)
    events = capture(server, mysql_db, start)
    rnd = random.Random(1515)
    outcomes = {"error": 0, "same": 0}
    for c in events:
        original = c.body
        mutations = [
            original[:k] for k in sorted(rnd.sample(range(len(original)), min(20, len(original))))
        ]
        for _ in range(40):
            b = bytearray(original)
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            mutations.append(bytes(b))
        for m in mutations:
            try:
                native = c.native(m)
            except ValueError:
                outcomes["error"] += 1
                continue
            # bytes the compiled decoder took must be taken the same way by the reference
            assert typed(native) == typed(c.library(m)), m.hex()
            outcomes["same"] += 1
    assert outcomes["error"] and outcomes["same"], outcomes


def test_a_malformed_event_in_the_stream_raises_the_references_error(
    server: Any, mysql_db: str
) -> None:
    """``RowsDecoder.rows``: bytes the compiled decoder refuses go to the library, whose error
    (or rows) the stream gets, counted as a fallback."""
    conn = connect(server)
    start = binlog_status(conn.cursor(), server)
    conn.close()
    _write_edges(server, mysql_db)
    c = capture(server, mysql_db, start)[0]
    truncated = c.body[: len(c.body) // 2]
    with pytest.raises(ValueError):
        c.native(truncated)
    with pytest.raises(Exception) as reference:
        c.library(truncated)
    c.reset(truncated)
    before = _rows.native_fallbacks()
    with pytest.raises(reference.type) as streamed:
        c.decoder.rows(c.ev, "the test")
    assert str(streamed.value) == str(reference.value)
    assert _rows.native_fallbacks() == before + 1


def test_plans_cover_every_types_md_column(server: Any, mysql_db: str) -> None:
    """No TYPES.md type makes its table fall back to the library, and a plan prints."""
    conn = connect(server)
    start = binlog_status(conn.cursor(), server)
    conn.close()
    _write_edges(server, mysql_db)
    c = capture(server, mysql_db, start)[0]
    text = _rows.explain(c.decoder.plan)
    assert "DECIMAL(65, 30)" in text and ("JSON_BINARY" in text) == is_mysql(server)
