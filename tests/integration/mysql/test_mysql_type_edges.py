"""Type edges: for every row of sources/mysql/TYPES.md, the extreme and odd values the server
accepts (zero and invalid dates, negative and fractional times, empty and maximal binary, enum
labels with commas and quotes, NULLs), read by the snapshot AND streamed from the binlog, checked
against the value SELECT returns (through Debezium's rules, written out here independently of the
code) and against the column schema Debezium documents; on MariaDB and on MySQL 9.7.

The rows are written in a session with sql_mode='ALLOW_INVALID_DATES' (no strict mode, no
NO_ZERO_DATE / NO_ZERO_IN_DATE): the loosest mode both servers accept, so that every odd value
they can hold is held.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cdc.daemon import is_fatal
from cdc.errors import SourceError
from cdc.sinks.log import LogReader
from tests.conftest import wait_until
from tests.integration.mysql.conftest import connect, read_log, write_config
from tests.integration.mysql.test_mysql_types import types_table
from tests.logtools import row_events

pytestmark = pytest.mark.integration

LOOSE_MODE = "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'"
EPOCH = datetime(1970, 1, 1)


# --- Debezium's rules, from its documentation (adaptive_time_microseconds, precise decimals) ----


def _days(v: Any, required: bool) -> Any:
    if isinstance(v, str):  # pymysql's form of a date that is not a calendar date
        return 0 if required else None
    return (v - date(1970, 1, 1)).days


def _epoch(unit: timedelta) -> Callable[[Any, bool], Any]:
    def conv(v: Any, required: bool) -> Any:
        if isinstance(v, str):
            return 0 if required else None
        return (v - EPOCH) // unit

    return conv


def _zoned(fsp: int) -> Callable[[Any, bool], Any]:
    def conv(v: Any, required: bool) -> Any:
        if isinstance(v, str):
            return "1970-01-01T00:00:00Z" if required else None
        text = v.strftime("%Y-%m-%dT%H:%M:%S")
        return text + (f".{v.microsecond:06d}"[: fsp + 1] if fsp else "") + "Z"

    return conv


def _micros(v: timedelta, required: bool) -> int:
    return v // timedelta(microseconds=1)


def _same(v: Any, required: bool) -> Any:
    return v


def _bits_le(v: bytes, required: bool) -> bytes:
    return int.from_bytes(v, "big").to_bytes(len(v), "little")


def _bit1(v: bytes, required: bool) -> bool:
    return v != b"\x00"


def _float32(v: float, required: bool) -> float:
    return float(struct.unpack("<f", struct.pack("<f", v))[0])


@dataclass
class Edge:
    ddl: str  # the column type
    literals: list[str]  # SQL literals, one per row
    avro: tuple[str, str | None, dict[str, str] | None]  # Avro type, connect.name, parameters
    expect: Callable[[Any, bool], Any]  # SELECT's value -> the event's value


INT16 = ("int", None, None)
DATE = ("int", "io.debezium.time.Date", None)
MICROTIME = ("long", "io.debezium.time.MicroTime", None)
MILLIS = ("long", "io.debezium.time.Timestamp", None)
MICROS = ("long", "io.debezium.time.MicroTimestamp", None)
ZONED = ("string", "io.debezium.time.ZonedTimestamp", None)
DECIMAL = "org.apache.kafka.connect.data.Decimal"

# One per row of TYPES.md (in its order, keyed by its first column), then the odd ones.
EDGES: dict[str, Edge] = {
    "tinyint": Edge("tinyint", ["-128", "127", "0"], INT16, _same),
    "tinyint unsigned": Edge("tinyint unsigned", ["0", "255"], INT16, _same),
    "smallint": Edge("smallint", ["-32768", "32767"], INT16, _same),
    "smallint unsigned": Edge("smallint unsigned", ["0", "65535"], ("int", None, None), _same),
    "mediumint": Edge("mediumint", ["-8388608", "8388607"], ("int", None, None), _same),
    "mediumint unsigned": Edge("mediumint unsigned", ["0", "16777215"], ("int", None, None), _same),
    "int": Edge("int", ["-2147483648", "2147483647"], ("int", None, None), _same),
    "int unsigned": Edge("int unsigned", ["0", "4294967295"], ("long", None, None), _same),
    "bigint": Edge(
        "bigint", ["-9223372036854775808", "9223372036854775807"], ("long", None, None), _same
    ),
    "bigint unsigned": Edge(
        "bigint unsigned",
        ["0", "18446744073709551615"],
        ("bytes", DECIMAL, {"scale": "0", "connect.decimal.precision": "20"}),
        _same,
    ),
    "decimal(10,3)": Edge(
        "decimal(10,3)",
        ["-9999999.999", "9999999.999", "0", "0.001", "-0.001"],
        ("bytes", DECIMAL, {"scale": "3", "connect.decimal.precision": "10"}),
        _same,
    ),
    "float": Edge(
        "float",
        ["3.40282e38", "-3.40282e38", "1.17549e-38", "0", "-1.5", "0.1"],
        ("float", None, None),
        _float32,
    ),
    "double": Edge(
        "double",
        ["1.7976931348623157e308", "-2.2250738585072014e-308", "0", "0.1", "-2.25e100"],
        ("double", None, None),
        _same,
    ),
    "bit(1)": Edge("bit(1)", ["b'0'", "b'1'"], ("boolean", None, None), _bit1),
    "bit(12)": Edge(
        "bit(12)",
        ["b'0'", "b'111111111111'", "b'100000000001'"],
        ("bytes", "io.debezium.data.Bits", {"length": "12"}),
        _bits_le,
    ),
    "boolean": Edge("boolean", ["true", "false", "-128"], INT16, _same),
    "char(5)": Edge("char(5)", ["''", "'abcde'", "'é€😀'", "'a'"], ("string", None, None), _same),
    "varchar(20)": Edge(
        "varchar(20)",
        ["''", "'it''s \"q\" \\\\ ,'", "'😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀'", "' '"],
        ("string", None, None),
        _same,
    ),
    "text": Edge("text", ["''", "REPEAT('x', 65535)", "'\\n\\t'"], ("string", None, None), _same),
    "binary(4)": Edge(
        "binary(4)",
        ["x''", "x'00000000'", "x'ffffffff'", "x'00'", "x'01'"],
        ("bytes", None, None),
        _same,
    ),
    "varbinary(10)": Edge(
        "varbinary(10)",
        ["x''", "x'00'", "x'ff00ff00ff00ff00ff00'", "x'00000000000000000000'"],
        ("bytes", None, None),
        _same,
    ),
    "blob": Edge("blob", ["x''", "x'00'", "REPEAT(x'ff', 65535)"], ("bytes", None, None), _same),
    "date": Edge(
        "date",
        [
            "'0000-00-00'",
            "'2020-00-15'",
            "'2020-05-00'",
            "'2020-02-30'",  # ALLOW_INVALID_DATES
            "'1000-01-01'",
            "'9999-12-31'",
            "'0001-01-01'",
            "'0018-05-01'",  # a year of the two-digit era, kept as it is (TYPES.md)
            "'1969-12-31'",
        ],
        DATE,
        _days,
    ),
    "time": Edge(
        "time",
        ["'-838:59:59'", "'838:59:59'", "'00:00:00'", "'-00:00:01'"],
        MICROTIME,
        _micros,
    ),
    "time(6)": Edge(
        "time(6)",
        [
            "'-838:59:58.999999'",
            "'-733:00:00.001'",
            "'-00:00:00.000001'",
            "'25:00:00.000001'",
            "'838:59:58.999999'",
        ],
        MICROTIME,
        _micros,
    ),
    "time(3)": Edge(
        "time(3)",
        ["'-733:00:00.001'", "'-00:00:00.999'", "'838:59:58.999'", "'-838:59:58.999'"],
        MICROTIME,
        _micros,
    ),
    "datetime": Edge(
        "datetime",
        [
            "'0000-00-00 00:00:00'",
            "'2020-00-15 10:00:00'",
            "'1000-01-01 00:00:00'",
            "'9999-12-31 23:59:59'",
            "'0018-05-01 12:00:00'",
        ],
        MILLIS,
        _epoch(timedelta(milliseconds=1)),
    ),
    "datetime(3)": Edge(
        "datetime(3)",
        ["'0000-00-00 00:00:00.000'", "'9999-12-31 23:59:59.999'", "'1969-12-31 23:59:59.999'"],
        MILLIS,
        _epoch(timedelta(milliseconds=1)),
    ),
    "datetime(6)": Edge(
        "datetime(6)",
        [
            "'9999-12-31 23:59:59.999999'",
            "'1000-01-01 00:00:00.000001'",
            "'0000-00-00 00:00:00'",
            "'2020-00-15 00:00:00.5'",
            "'1969-12-31 23:59:59.999999'",
        ],
        MICROS,
        _epoch(timedelta(microseconds=1)),
    ),
    "timestamp": Edge(
        "timestamp",
        ["'0000-00-00 00:00:00'", "'1970-01-01 00:00:01'", "'2038-01-19 03:14:07'"],
        ZONED,
        _zoned(0),
    ),
    "timestamp(6)": Edge(
        "timestamp(6)",
        [
            "'1970-01-01 00:00:01.000001'",
            "'2038-01-19 03:14:07.999999'",
            "'0000-00-00 00:00:00'",
        ],
        ZONED,
        _zoned(6),
    ),
    "year": Edge(
        "year", ["0", "1901", "2155", "'0000'"], ("int", "io.debezium.time.Year", None), _same
    ),
    "json": Edge(
        "json",
        ["'null'", "'{}'", "'[]'", "'\"é\"'", "'{\"a,b\": [1, \"it''s\"]}'"],
        ("string", "io.debezium.data.Json", None),
        _same,
    ),
    "enum('a','b')": Edge(
        "enum('a','b')",
        ["'a'", "'b'", "'nope'"],  # not a label: stored as the error value ''
        ("string", "io.debezium.data.Enum", {"allowed": "a,b"}),
        _same,
    ),
    "enum('a,b','c')": Edge(
        "enum('a,b','c')",
        ["'a,b'", "'c'", "''"],
        ("string", "io.debezium.data.Enum", {"allowed": "a\\,b,c"}),
        _same,
    ),
    "set('x','y','z')": Edge(
        "set('x','y','z')",
        ["''", "'x,y,z'", "'z,x'"],
        ("string", "io.debezium.data.EnumSet", {"allowed": "x,y,z"}),
        _same,
    ),
    "geometry": Edge(
        "geometry",
        ["ST_GeomFromText('POINT(1 2)')", "ST_GeomFromText('LINESTRING(0 0, -1.5 1e10)')"],
        ("bytes", None, None),
        _same,
    ),
    "float(7,2)": Edge(
        "float(7,2)",
        ["99999.99", "-99999.99", "1.1", "0.01", "0"],
        ("double", None, None),
        _same,
    ),
    # labels with commas, quotes, backslashes and the empty label: Debezium escapes \ and ,
    "enum, odd labels": Edge(
        "enum('a,b','it''s','dq\"x','back\\\\slash','')",
        ["'a,b'", "'it''s'", "'dq\"x'", "'back\\\\slash'", "''"],
        (
            "string",
            "io.debezium.data.Enum",
            {"allowed": "a\\,b,it's,dq\"x,back\\\\slash,"},
        ),
        _same,
    ),
    "set, odd labels": Edge(
        "set('it''s','dq\"','b\\\\s')",
        ["'it''s,b\\\\s'", "'dq\"'", "''"],
        ("string", "io.debezium.data.EnumSet", {"allowed": "it's,dq\",b\\\\s"}),
        _same,
    ),
    "decimal(65,30)": Edge(  # the widest DECIMAL: more digits than Python's default context
        "decimal(65,30)",
        ["-" + "9" * 35 + "." + "9" * 30, "9" * 35 + "." + "9" * 30, "0." + "0" * 29 + "1"],
        ("bytes", DECIMAL, {"scale": "30", "connect.decimal.precision": "65"}),
        _same,
    ),
    "decimal(65,0)": Edge(
        "decimal(65,0)",
        ["9" * 65, "-" + "9" * 65],
        ("bytes", DECIMAL, {"scale": "0", "connect.decimal.precision": "65"}),
        _same,
    ),
    "bit(64)": Edge(
        "bit(64)",
        ["b'" + "1" * 64 + "'", "b'1'", "b'0'"],
        ("bytes", "io.debezium.data.Bits", {"length": "64"}),
        _bits_le,
    ),
    "binary(16)": Edge(
        "binary(16)",
        ["unhex('00')", "x''", "unhex(repeat('ff', 16))", "x'0000000000000000000000000000ff'"],
        ("bytes", None, None),
        _same,
    ),
}


def _schema_fields(log_dir: Path, topic: str) -> dict[str, Any]:
    """The value schema's fields of the last record of ``topic``, by name."""
    reader = LogReader(log_dir)
    last = list(reader.records(0, topic))[-1]
    envelope = reader.schemas.get(int.from_bytes(bytes(last.value)[1:5], "big"))
    after = next(f for f in envelope["fields"] if f["name"] == "after")
    value = next(t for t in after["type"] if t != "null")
    if isinstance(value, str):  # "after" names the record "before" defined
        before = next(f for f in envelope["fields"] if f["name"] == "before")
        value = next(t for t in before["type"] if t != "null")
    return {f["name"]: f["type"] for f in value["fields"]}


def _describe(t: Any) -> tuple[bool, tuple[str, str | None, dict[str, str] | None]]:
    """(optional, (Avro type, connect.name, connect.parameters)) of a field's type."""
    optional = isinstance(t, list) and "null" in t
    if optional:
        t = next(x for x in t if x != "null")
    if isinstance(t, str):
        return optional, (t, None, None)
    return optional, (t["type"], t.get("connect.name"), t.get("connect.parameters"))


def _run(
    server: Any,
    db: str,
    tmp_path: Path,
    run_pipeline: Any,
    ddl: list[str],
    rows: dict[str, list[str]],
    stream_rows: dict[str, list[str]],
    **source: Any,
) -> tuple[Path, Any]:
    """Create ``ddl``, insert ``rows`` (table -> VALUES tuples) for the snapshot, start a
    pipeline on ``db.*``, insert ``stream_rows`` once it streams; returns (log dir, cursor)."""
    cur = connect(server, db).cursor()
    cur.execute(LOOSE_MODE)
    cur.execute("SET time_zone = '+00:00'")
    for statement in ddl:
        cur.execute(statement)
    for table, values in rows.items():
        for v in values:
            cur.execute(f"INSERT INTO {table} VALUES {v}")
    log_dir = tmp_path / "log"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.*"], log_dir, **source)
    p = run_pipeline(cfg)
    n_snapshot = sum(len(v) for v in rows.values())

    def count() -> int:
        if not p.thread.is_alive():
            p.stop()  # raises the pipeline's error
        return len(row_events(read_log(log_dir)))

    wait_until(lambda: count() >= n_snapshot, 90, "the snapshot")
    for table, values in stream_rows.items():
        for v in values:
            cur.execute(f"INSERT INTO {table} VALUES {v}")
    n_all = n_snapshot + sum(len(v) for v in stream_rows.values())
    wait_until(lambda: count() >= n_all, 90, "the streamed rows")
    p.stop()
    return log_dir, cur


def test_every_types_md_row_at_its_edges_in_snapshot_and_stream(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any, rows_path: str
) -> None:
    # every row of TYPES.md has its edges here
    documented = [row[0] for row in types_table()]
    assert [k for k in documented if k not in EDGES] == []
    edges = list(EDGES.values())
    cols = [f"c{i}" for i in range(len(edges))]
    n = max(len(e.literals) for e in edges)

    def row(i: int, k: int) -> str:
        values = [e.literals[k] if k < len(e.literals) else "NULL" for e in edges]
        return f"({i}, {', '.join(values)})"

    nulls = f"({{}}, {', '.join('NULL' for _ in edges)})"
    ddl = ", ".join(f"{c} {e.ddl} NULL" for c, e in zip(cols, edges, strict=True))
    log_dir, cur = _run(
        server,
        mysql_db,
        tmp_path,
        run_pipeline,
        [f"CREATE TABLE t (id INT PRIMARY KEY, {ddl}) DEFAULT CHARSET=utf8mb4"],
        {"t": [row(k, k) for k in range(n)] + [nulls.format(n)]},
        {"t": [row(100 + k, k) for k in range(n)] + [nulls.format(100 + n)]},
    )
    topic = f"mysqltest.{mysql_db}.t"
    got = {r["value"]["after"]["id"]: r["value"] for r in read_log(log_dir, topic)}
    cur.execute("SELECT * FROM t WHERE id < 100 ORDER BY id")
    selected = {r[0]: r[1:] for r in cur.fetchall()}
    fields = _schema_fields(log_dir, topic)
    failures = []
    for j, (name, e) in enumerate(EDGES.items()):
        optional, avro_type = _describe(fields[cols[j]])
        if not optional or avro_type != e.avro:
            failures.append(f"{name}: schema {avro_type} (optional {optional}), want {e.avro}")
        for k in range(n + 1):
            snap, streamed = got[k], got[100 + k]
            assert (snap["op"], streamed["op"]) == ("r", "c")
            s, c = snap["after"][cols[j]], streamed["after"][cols[j]]
            v = selected[k][j]
            want = None if v is None else e.expect(v, False)
            literal = e.literals[k] if k < len(e.literals) else "NULL"
            if not (s == want and c == want):
                failures.append(
                    f"{name} {literal}: SELECT {v!r:.80} -> want {want!r:.80}, "
                    f"snapshot {s!r:.80}, stream {c!r:.80}"
                )
    assert not failures, "\n".join(failures)


def test_zero_dates_are_null_or_epoch_on_not_null_columns(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any, rows_path: str
) -> None:
    """Issue 13.1: zero and zero-in-part dates crashed the snapshot (str.toordinal); Debezium
    gives null on a nullable column and the epoch on a NOT NULL one, in snapshot and stream."""
    zeros = (
        "'0000-00-00', '2020-00-15', '0000-00-00 00:00:00', '2020-00-15 10:00:00.5', "
        "'0000-00-00 00:00:00'"
    )
    types = ["DATE", "DATE", "DATETIME", "DATETIME(6)", "TIMESTAMP(3)"]
    nullable = ", ".join(f"n{i} {t} NULL" for i, t in enumerate(types))
    required = ", ".join(f"r{i} {t} NOT NULL" for i, t in enumerate(types))
    log_dir, _ = _run(
        server,
        mysql_db,
        tmp_path,
        run_pipeline,
        [f"CREATE TABLE z (id INT PRIMARY KEY, {nullable}, {required})"],
        {"z": [f"(1, {zeros}, {zeros})"]},
        {"z": [f"(2, {zeros}, {zeros})"]},
    )
    topic = f"mysqltest.{mysql_db}.z"
    events = {r["value"]["after"]["id"]: r["value"]["after"] for r in read_log(log_dir, topic)}
    epoch = [0, 0, 0, 0, "1970-01-01T00:00:00Z"]
    want = {f"n{i}": None for i in range(5)} | {f"r{i}": epoch[i] for i in range(5)}
    assert events[1] == {"id": 1, **want}
    assert events[2] == {"id": 2, **want}
    fields = _schema_fields(log_dir, topic)
    assert [_describe(fields[f"r{i}"])[0] for i in range(5)] == [False] * 5


def test_binary_of_zero_bytes_streams_as_the_snapshot_reads_it(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """Issue 13.2: a BINARY(16) of zero bytes crashed the stream in _pad (TypeError)."""
    values = ["(1, unhex('00'), x'', x'')", "(2, x'00000000000000000000000000000001', x'00', x'')"]
    log_dir, cur = _run(
        server,
        mysql_db,
        tmp_path,
        run_pipeline,
        ["CREATE TABLE b (id INT PRIMARY KEY, b BINARY(16), vb VARBINARY(4), bl BLOB)"],
        {"b": values},
        {"b": [v.replace("(1,", "(11,").replace("(2,", "(12,") for v in values]},
    )
    got = {
        r["value"]["after"]["id"]: r["value"]["after"]
        for r in read_log(log_dir, f"mysqltest.{mysql_db}.b")
    }
    cur.execute("SELECT id, b, vb, bl FROM b WHERE id < 10 ORDER BY id")
    for id_, b, vb, bl in cur.fetchall():
        want = {"id": id_, "b": b, "vb": vb, "bl": bl}
        assert got[id_] == want
        assert got[id_ + 10] == {**want, "id": id_ + 10}
    assert got[1]["b"] == bytes(16)


def test_negative_fractional_time_streams_as_the_snapshot_reads_it(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """Issue 13.3: -733:00:00.001 streamed as -733:00:00.999 (the stored complement)."""
    literals = [
        "'-733:00:00.001'",
        "'-00:00:00.5'",
        "'-838:59:58.999999'",
        "'-00:00:01.01'",
        "'-12:00:00.0001'",
    ]
    fsps = [3, 1, 6, 2, 4]
    cols = ", ".join(f"t{i} TIME({f})" for i, f in enumerate(fsps))
    values = ", ".join(literals)
    log_dir, cur = _run(
        server,
        mysql_db,
        tmp_path,
        run_pipeline,
        [f"CREATE TABLE tm (id INT PRIMARY KEY, {cols})"],
        {"tm": [f"(1, {values})"]},
        {"tm": [f"(2, {values})"]},
    )
    got = {
        r["value"]["after"]["id"]: r["value"]["after"]
        for r in read_log(log_dir, f"mysqltest.{mysql_db}.tm")
    }
    cur.execute("SELECT * FROM tm WHERE id = 1")
    selected = cur.fetchone()[1:]
    want = {f"t{i}": v // timedelta(microseconds=1) for i, v in enumerate(selected)}
    assert want["t0"] == -(733 * 3600 * 1_000_000 + 1000)
    assert got[1] == {"id": 1, **want}
    assert got[2] == {"id": 2, **want}


def test_float_m_d_is_a_double_equal_to_select(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """Issue 13.6: Debezium maps FLOAT(M,D) to a double (FLOAT and FLOAT(p<=24) to float)."""
    values = "1.1, 12345.6, 0.3, 3.4e38, 0.3"
    log_dir, cur = _run(
        server,
        mysql_db,
        tmp_path,
        run_pipeline,
        [
            "CREATE TABLE f (id INT PRIMARY KEY, a FLOAT(7,2), b FLOAT(7,0), c FLOAT, "
            "d FLOAT(30), e FLOAT(10))"
        ],
        {"f": [f"(1, {values})"]},
        {"f": [f"(2, {values})"]},
    )
    topic = f"mysqltest.{mysql_db}.f"
    fields = _schema_fields(log_dir, topic)
    types = {name: _describe(fields[name])[1][0] for name in "abcde"}
    assert types == {"a": "double", "b": "double", "c": "float", "d": "double", "e": "float"}
    got = {r["value"]["after"]["id"]: r["value"]["after"] for r in read_log(log_dir, topic)}
    cur.execute("SELECT a, b, d FROM f WHERE id = 1")
    a, b, d = cur.fetchone()
    assert (a, b) == (1.1, 12346.0)
    for id_ in (1, 2):
        assert (got[id_]["a"], got[id_]["b"], got[id_]["d"]) == (a, b, d)


def test_enum_and_set_labels_with_commas_are_escaped_as_debezium_does(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """Issue 13.7: labels holding commas could not be told apart in ``allowed``; Debezium's
    EnumeratedValues escapes a backslash as ``\\\\`` and a comma as ``\\,``."""
    log_dir, _ = _run(
        server,
        mysql_db,
        tmp_path,
        run_pipeline,
        [
            "CREATE TABLE e (id INT PRIMARY KEY, "
            "e ENUM('a,b', 'c', 'it''s', 'back\\\\slash', 'nl\\nx'), s SET('x', 'y''z'))"
        ],
        {"e": ["(1, 'a,b', 'y''z')", "(2, 'back\\\\slash', 'x,y''z')"]},
        {"e": ["(3, 'a,b', 'y''z')", "(4, 'nl\\nx', '')"]},
    )
    topic = f"mysqltest.{mysql_db}.e"
    fields = _schema_fields(log_dir, topic)
    enum_type, set_type = _describe(fields["e"])[1], _describe(fields["s"])[1]
    assert enum_type[2] == {"allowed": "a\\,b,c,it's,back\\\\slash,nl\nx"}
    assert set_type[2] == {"allowed": "x,y'z"}
    got = {r["value"]["after"]["id"]: r["value"]["after"] for r in read_log(log_dir, topic)}
    assert [(got[i]["e"], got[i]["s"]) for i in (1, 2, 3, 4)] == [
        ("a,b", "y'z"),
        ("back\\slash", "x,y'z"),
        ("a,b", "y'z"),
        ("nl\nx", ""),
    ]


def test_time_adjuster_and_connector_name_as_configured(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """source.time_adjuster: Debezium's two-digit-era years; source.connector_name: Debezium's
    MariaDB connector's name and Source schema."""
    values = "'0018-05-01', '0078-01-01 10:00:00', '1999-01-01'"
    log_dir, _ = _run(
        server,
        mysql_db,
        tmp_path,
        run_pipeline,
        ["CREATE TABLE y (id INT PRIMARY KEY, d DATE, dt DATETIME, keep DATE)"],
        {"y": [f"(1, {values})"]},
        {"y": [f"(2, {values})"]},
        time_adjuster=True,
        connector_name="mariadb",
    )
    topic = f"mysqltest.{mysql_db}.y"
    records = read_log(log_dir, topic)
    want = {
        "d": (date(2018, 5, 1) - date(1970, 1, 1)).days,
        "dt": (datetime(1978, 1, 1, 10) - EPOCH) // timedelta(milliseconds=1),
        "keep": (date(1999, 1, 1) - date(1970, 1, 1)).days,
    }
    assert [r["value"]["after"] for r in records] == [{"id": 1, **want}, {"id": 2, **want}]
    assert {r["value"]["source"]["connector"] for r in records} == {"mariadb"}
    reader = LogReader(log_dir)
    last = list(reader.records(0, topic))[-1]
    envelope = reader.schemas.get(int.from_bytes(bytes(last.value)[1:5], "big"))
    source = next(f for f in envelope["fields"] if f["name"] == "source")["type"]
    assert source["connect.name"] == "io.debezium.connector.mariadb.Source"


# --- conversion errors: the pipeline stops, naming what and where ------------------------------


def _broken_days(d: date) -> int:
    raise OverflowError(f"crafted failure for {d}")


def test_a_value_that_cannot_be_converted_stops_the_snapshot_naming_it(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr("cdc.sources.mysql._types._days", _broken_days)
    # the broken converter is the python reader's: the compiled reader converts dates itself
    monkeypatch.setattr("cdc.sources.mysql._snapshot_read.PATH", "python")
    cur = connect(server, mysql_db).cursor()
    cur.execute("CREATE TABLE c (id INT PRIMARY KEY, d DATE)")
    cur.execute("INSERT INTO c VALUES (7, '2024-02-29')")
    cfg = write_config(tmp_path / "c.yaml", server, [f"{mysql_db}.c"], tmp_path / "log")
    p = run_pipeline(cfg)
    p.thread.join(60)
    assert not p.thread.is_alive()
    with pytest.raises(SourceError) as e:
        p.stop()
    assert is_fatal(e.value)
    text = str(e.value)
    for part in (f"{mysql_db}.c.d", "(date)", "datetime.date(2024, 2, 29)", "the snapshot", "[7]"):
        assert part in text, text


def test_a_value_that_cannot_be_converted_stops_the_stream_naming_it(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr("cdc.sources.mysql._types._days", _broken_days)
    # the broken converter is the python path's: the compiled decoder converts dates itself
    monkeypatch.setattr("cdc.sources.mysql._rows.PATH", "python")
    cur = connect(server, mysql_db).cursor()
    cur.execute("CREATE TABLE c (id INT PRIMARY KEY, d DATE)")
    log_dir = tmp_path / "log"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{mysql_db}.c"], log_dir)
    p = run_pipeline(cfg)
    wait_until(lambda: LogReader(log_dir).info()["last_position"] if log_dir.exists() else None)
    cur.execute("INSERT INTO c VALUES (8, '2024-02-29')")
    p.thread.join(60)
    assert not p.thread.is_alive()
    with pytest.raises(SourceError) as e:
        p.stop()
    assert is_fatal(e.value)
    text = str(e.value)
    for part in (f"{mysql_db}.c.d", "(date)", "datetime.date(2024, 2, 29)", "the binlog event at"):
        assert part in text, text


def test_text_in_a_charset_python_cannot_decode_is_refused_naming_the_column(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """The binlog library gives swe7 (keybcs2, armscii8...) text as bytes, which the encoder then
    rejected at every restart: refuse the table up front, fatally, naming the column."""
    cur = connect(server, mysql_db).cursor()
    cur.execute("CREATE TABLE s (id INT PRIMARY KEY, ok VARCHAR(5), old VARCHAR(5) CHARSET swe7)")
    cur.execute("INSERT INTO s VALUES (1, 'a', 'b')")
    cfg = write_config(tmp_path / "c.yaml", server, [f"{mysql_db}.s"], tmp_path / "log")
    p = run_pipeline(cfg)
    p.thread.join(60)
    assert not p.thread.is_alive()
    with pytest.raises(
        SourceError,
        match=rf"column {mysql_db}\.s\.old \(varchar\) has character "
        r"set swe7, which the binlog reader cannot decode",
    ) as e:
        p.stop()
    assert is_fatal(e.value)


def test_text_in_utf16_utf32_ucs2_and_latin_charsets_streams_as_select_returns_it(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """pymysql knows none of utf16/utf32/ucs2/utf16le: the binlog library garbled utf16 (read as
    little-endian), failed on utf32 and gave ucs2 as bytes; and it failed on latin1 text holding
    a byte Python's cp1252 leaves unassigned."""
    charsets = ["utf16", "utf32", "utf16le", "ucs2", "latin1", "cp1250", "utf8mb3"]
    # latin1 0x81: cp1252 leaves it unassigned, MySQL's latin1 has it as U+0081
    latin1 = "CONCAT('é€', CONVERT(x'81' USING latin1), CONVERT(x'9d' USING latin1))"
    texts = ["'abcé😀'", "'abcé😀'", "'abcé😀'", "'ščé'", latin1, "'ščé'", "'日本'"]
    cols = ", ".join(f"c{i} VARCHAR(8) CHARACTER SET {cs}" for i, cs in enumerate(charsets))
    values = ", ".join(texts)
    log_dir, cur = _run(
        server,
        mysql_db,
        tmp_path,
        run_pipeline,
        [f"CREATE TABLE u (id INT PRIMARY KEY, {cols})"],
        {"u": [f"(1, {values})"]},
        {"u": [f"(2, {values})"]},
    )
    got = {
        r["value"]["after"]["id"]: r["value"]["after"]
        for r in read_log(log_dir, f"mysqltest.{mysql_db}.u")
    }
    cur.execute("SELECT * FROM u WHERE id = 1")
    want = dict(zip([f"c{i}" for i in range(len(charsets))], cur.fetchone()[1:], strict=True))
    assert want["c0"] == "abcé😀" and want["c4"] == "é€\x81\x9d"
    assert got[1] == {"id": 1, **want}
    assert got[2] == {"id": 2, **want}


def test_the_daemon_marks_a_conversion_failure_failed_without_restarting(
    server: Any, mysql_db: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """The daemon's view: no restart loop, the pipeline failed, `cdc status` shows why."""
    import threading

    from cdc import status
    from cdc.config import load
    from cdc.daemon import Daemon

    monkeypatch.setattr("cdc.sources.mysql._types._days", _broken_days)
    monkeypatch.setattr("cdc.sources.mysql._snapshot_read.PATH", "python")  # (as above)
    cur = connect(server, mysql_db).cursor()
    cur.execute("CREATE TABLE c (id INT PRIMARY KEY, d DATE)")
    cur.execute("INSERT INTO c VALUES (9, '2024-02-29')")
    cfg = write_config(
        tmp_path / "c.yaml", server, [f"{mysql_db}.c"], tmp_path / "log", name="conv"
    )
    d = Daemon(load(cfg), max_backoff=1)
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(d.run(install_signals=False)))
    t.start()
    try:
        wait_until(lambda: status.BOARD.get("conv").state == "failed", 60, "the pipeline failed")
        board = status.BOARD.get("conv")
        assert board.restarts == 0
        assert f"{mysql_db}.c.d (date)" in (board.last_error or "")
    finally:
        d.stop()
        t.join(60)
    assert rc == [1]


@pytest.mark.parametrize("server", ["mysql"], indirect=True)
def test_a_column_or_event_the_source_cannot_read_is_fatal_not_a_restart_loop(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """MySQL 9's VECTOR: refused in the snapshot, undecodable in the binlog (even in a table not
    captured); both would fail again at every restart, so both are fatal."""
    cur = connect(server, mysql_db).cursor()
    cur.execute("CREATE TABLE v (id INT PRIMARY KEY, emb VECTOR(3))")
    cur.execute("CREATE TABLE ok (id INT PRIMARY KEY)")
    cur.execute("INSERT INTO v VALUES (1, STRING_TO_VECTOR('[1, 2, 3]'))")
    p = run_pipeline(write_config(tmp_path / "a.yaml", server, [f"{mysql_db}.v"], tmp_path / "a"))
    p.thread.join(60)
    with pytest.raises(SourceError, match=f"column {mysql_db}.v.emb has type vector") as e:
        p.stop()
    assert is_fatal(e.value)
    log_dir = tmp_path / "b"
    p = run_pipeline(write_config(tmp_path / "b.yaml", server, [f"{mysql_db}.ok"], log_dir))
    wait_until(lambda: LogReader(log_dir).info()["last_position"] if log_dir.exists() else None)
    cur.execute("INSERT INTO v VALUES (2, STRING_TO_VECTOR('[4, 5, 6]'))")
    p.thread.join(60)
    with pytest.raises(SourceError, match=r"cannot decode the event after mysql-bin\.\d+:\d+") as e:
        p.stop()
    assert is_fatal(e.value)


def test_a_row_the_binlog_reader_cannot_decode_stops_the_stream_naming_it(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    """cp1250 byte 0x81 is unassigned (the server itself prints '?'): the library's decoding of
    the row raised UnicodeDecodeError outside any handler, and the pipeline restarted forever."""
    cur = connect(server, mysql_db).cursor()
    cur.execute("CREATE TABLE w (id INT PRIMARY KEY, t VARCHAR(5) CHARACTER SET cp1250)")
    log_dir = tmp_path / "log"
    p = run_pipeline(write_config(tmp_path / "c.yaml", server, [f"{mysql_db}.w"], log_dir))
    wait_until(lambda: LogReader(log_dir).info()["last_position"] if log_dir.exists() else None)
    cur.execute("INSERT INTO w VALUES (1, CONVERT(x'81' USING cp1250))")
    p.thread.join(60)
    assert not p.thread.is_alive()
    with pytest.raises(SourceError) as e:
        p.stop()
    assert is_fatal(e.value)
    text = str(e.value)
    assert f"cannot decode the rows of {mysql_db}.w in the event at " in text, text
    assert "UnicodeDecodeError" in text, text
