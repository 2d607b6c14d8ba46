"""The snapshot's compiled row reader (sources/mysql/_snapshot_read.py, native/src/select.rs)
against the reference (PyMySQL's row parsing + the table version's ``from_select`` converters),
on real result sets of MariaDB and MySQL 9.7: every TYPES.md row at its edges (the values of
test_mysql_type_edges, nullable and NOT NULL, with and without the time adjuster), odd columns
(zerofill, utf8mb4, latin1, keys of strings and unsigned bigints, no key), seeded random rows
over many buffer refills, a row of more than 16 MB (a packet continued), an error the server
sends in the middle of a result; then whole snapshots read both ways: the same events, markers,
event ids and resume positions.

Rows are compared as (type, repr) of every value: equal values of the same types, decimals with
the same exponent, so the Avro bytes written from them are the same.
"""

from __future__ import annotations

import random
from typing import Any

import pymysql
import pytest

from cdc import _native_avro
from cdc.model import NullReporter, RowChange
from cdc.sources.mysql import _snapshot_read
from cdc.sources.mysql._schema import SchemaCache
from cdc.sources.mysql._server import Server, quote
from cdc.sources.mysql._snapshot import Snapshot
from cdc.sources.mysql._tables import Tables
from cdc.sources.mysql.config import MySqlSourceConfig
from tests.integration.mysql.conftest import CLIENT_SERVER_ID, connect, mysql_source
from tests.integration.mysql.test_mysql_type_edges import EDGES, LOOSE_MODE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        _snapshot_read.PATH != _snapshot_read.NATIVE, reason=_snapshot_read.describe()
    ),
]

_ZERO_DATES = {"date", "datetime", "timestamp"}


def typed(rows: list[tuple[Any, ...]]) -> list[Any]:
    """Rows as (type, repr) of each value: what decides the Avro bytes."""
    return [[(type(x), repr(x)) for x in row] for row in rows]


def source_parts(server: Any, db: str, *, adjust: bool = False, **extra: Any) -> Tables:
    """The captured tables of ``db`` as a source sees them (its server facts read)."""
    src = mysql_source(server, [f"{db}.*"], CLIENT_SERVER_ID, time_adjuster=adjust, **extra)
    config = MySqlSourceConfig.model_validate(src)
    srv = Server(config)
    srv.catalog()
    return Tables(srv, config.tables, SchemaCache("p", adjust_years=adjust))


def read_both(
    server: Any, db: str, table: str, *, adjust: bool = False, sql: str | None = None
) -> list[Any]:
    """The rows of ``db.table`` (or of ``sql``) read by each reader in one session, checked equal
    (values, event ids, the last row PyMySQL gives); the compiled reader must have a plan."""
    tables = source_parts(server, db, adjust=adjust)
    conn = tables.server.connect()
    try:
        cur = conn.cursor()
        cur.execute("SET SESSION time_zone = '+00:00'")
        version = tables.catalog_version(cur, db, table)
        schema = version.schema
        cols = ", ".join(quote(c.name) for c in schema.columns)
        order = ", ".join(quote(schema.columns[k].name) for k in schema.key)
        query = sql or f"SELECT {cols} FROM {quote(db)}.{quote(table)}" + (
            f" ORDER BY {order}" if order else ""
        )
        out = []
        for native in (True, False):
            reader = _snapshot_read.Reader(version, "s1", "f:4", native)
            rows, ids, last, more = reader.chunk(conn, query)
            assert not more
            if native:
                assert reader.decoder is not None, "no compiled plan"
                assert reader.generic_rows == 0  # every value converted by the plan
            out.append((typed(rows), reader.ids(rows, ids, 1), last))
        assert out[0] == out[1]
        cur.execute("SELECT 1")  # the connection is right after each result
        assert cur.fetchall() == ((1,),)
        return out[0][0]
    finally:
        conn.close()


def write_edges(server: Any, db: str) -> None:
    """``edges``: a column per edge, a row per literal (NULL past a column's literals);
    ``required``: the date and time edges NOT NULL (zero dates take the epoch)."""
    cols = [(f"c{i}", e.ddl, e.literals) for i, e in enumerate(EDGES.values())]
    required = [(n, t, lits) for n, t, lits in cols if t.split("(")[0] in _ZERO_DATES]
    conn = connect(server, db)
    cur = conn.cursor()
    cur.execute(LOOSE_MODE)
    cur.execute("SET time_zone = '+00:00'")
    ddl = ", ".join(f"{n} {t}" for n, t, _ in cols)
    cur.execute(f"CREATE TABLE edges (id INT PRIMARY KEY, {ddl})")
    req_ddl = ", ".join(f"{n} {t} NOT NULL" for n, t, _ in required)
    cur.execute(f"CREATE TABLE required (id INT PRIMARY KEY, {req_ddl})")
    for r in range(max(len(lits) for _, _, lits in cols) + 1):
        values = ", ".join(lits[r] if r < len(lits) else "NULL" for _, _, lits in cols)
        cur.execute(f"INSERT INTO edges VALUES ({r}, {values})")
        values = ", ".join(lits[r % len(lits)] for _, _, lits in required)
        cur.execute(f"INSERT INTO required VALUES ({r}, {values})")
    conn.close()


def test_every_types_md_row_at_its_edges_reads_as_the_reference(server: Any, mysql_db: str) -> None:
    write_edges(server, mysql_db)
    rows = read_both(server, mysql_db, "edges")
    assert len(rows) > 5 and all(len(r) == len(EDGES) + 1 for r in rows)
    # the plan, printed: one line a column, the decimal's scale, NOT NULL
    tables = source_parts(server, mysql_db)
    conn = tables.server.connect()
    version = tables.catalog_version(conn.cursor(), mysql_db, "edges")
    reader = _snapshot_read.Reader(version, "s1", "f:4", True)
    reader.chunk(conn, f"SELECT * FROM {quote(mysql_db)}.edges ORDER BY id")
    conn.close()
    text = _snapshot_read.explain(reader.plan).splitlines()
    assert len(text) == len(EDGES) + 1
    assert text[0] == "0: INT(0) not null fallback=0"
    assert text[1 + list(EDGES).index("decimal(10,3)")].startswith("11: DECIMAL(3) fallback=")
    read_both(server, mysql_db, "required")
    # the time adjuster moves two-digit years the same way on both paths
    read_both(server, mysql_db, "edges", adjust=True)
    read_both(server, mysql_db, "required", adjust=True)


def test_odd_columns_and_keys_read_as_the_reference(server: Any, mysql_db: str) -> None:
    server.sql(
        "CREATE TABLE odd (k VARCHAR(20) CHARACTER SET utf8mb4, n BIGINT UNSIGNED, "
        "z INT(6) UNSIGNED ZEROFILL, d DECIMAL(8,2) ZEROFILL, f FLOAT(7,2) ZEROFILL, "
        "e VARCHAR(20) CHARACTER SET utf8mb4, l TEXT CHARACTER SET latin1, "
        "b VARBINARY(8), PRIMARY KEY (k, n))",
        mysql_db,
    )
    server.sql(
        "INSERT INTO odd VALUES ('a', 18446744073709551615, 42, 3.5, 1.25, "
        "'\U0001f600 \u00e9\u4e2d', 'caf\u00e9 \u20ac', x'00ff'), "
        "('a b', 0, 0, 0, 0, '', '', x''), ('\u00e9', 7, NULL, NULL, NULL, NULL, NULL, NULL)",
        mysql_db,
    )
    rows = read_both(server, mysql_db, "odd")
    assert rows[0][2] == (int, "42")  # zerofill's leading zeros are not the value
    server.sql("CREATE TABLE big (id BIGINT UNSIGNED PRIMARY KEY, v INT)", mysql_db)
    server.sql("INSERT INTO big VALUES (1, 1), (18446744073709551615, 2)", mysql_db)
    read_both(server, mysql_db, "big")
    server.sql("CREATE TABLE keyless (v INT, t VARCHAR(5))", mysql_db)
    server.sql("INSERT INTO keyless VALUES (1, 'x'), (1, 'x'), (NULL, NULL)", mysql_db)
    read_both(server, mysql_db, "keyless")


@pytest.mark.parametrize("server", ["mariadb"], indirect=True)
def test_a_table_the_plan_does_not_cover_is_read_by_the_reference_counted(
    server: Any, mysql_db: str
) -> None:
    """MariaDB's UUID (a type TYPES.md leaves unmapped): the table goes to the reference,
    counted in ``cdc_native_fallbacks_total{path="mysql_select_decoder"}``."""
    server.sql("CREATE TABLE u (id INT PRIMARY KEY, u UUID)", mysql_db)
    server.sql("INSERT INTO u VALUES (1, '123e4567-e89b-12d3-a456-426655440000')", mysql_db)
    tables = source_parts(server, mysql_db)
    conn = tables.server.connect()
    version = tables.catalog_version(conn.cursor(), mysql_db, "u")
    before = _snapshot_read.native_fallbacks()
    rows = {}
    for native in (True, False):
        reader = _snapshot_read.Reader(version, "s1", "f:4", native)
        got, *_ = reader.chunk(conn, f"SELECT id, u FROM {quote(mysql_db)}.u")
        assert reader.decoder is None
        rows[native] = typed(got)
    conn.close()
    uuid = "'123e4567-e89b-12d3-a456-426655440000'"
    assert rows[True] == rows[False] == [[(int, "1"), (str, uuid)]]
    assert _snapshot_read.native_fallbacks() == before + 1
    assert _native_avro.fallbacks()["mysql_select_decoder"] == before + 1


RANDOM_COLUMNS = [
    "ti TINYINT",
    "u BIGINT UNSIGNED",
    "dc DECIMAL(20,6)",
    "fl FLOAT",
    "db DOUBLE",
    "bt BIT(13)",
    "vc VARCHAR(300)",
    "tx MEDIUMTEXT",
    "bl BLOB",
    "dt DATE",
    "dtm DATETIME(3)",
    "dtu DATETIME(6)",
    "ts TIMESTAMP(4) NULL",
    "tm TIME(5)",
    "yr YEAR",
    "en ENUM('x','y,z','')",
    "st SET('p','q','r')",
]


def _random_value(rnd: random.Random, col: str) -> str:
    """A SQL literal for a column of ``RANDOM_COLUMNS``, NULL one time in eight."""
    if rnd.random() < 0.125:
        return "NULL"
    kind = col.split()[1].split("(")[0]
    r = rnd.random
    day = f"{rnd.randint(1, 9999):04d}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
    clock = f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}"
    text = "".join(rnd.choice("ab é€😀'\\\n\t,") for _ in range(rnd.randint(0, 40)))
    text = text.replace("\\", "\\\\").replace("'", "''")
    return {
        "TINYINT": lambda: str(rnd.randint(-128, 127)),
        "BIGINT": lambda: str(rnd.randint(0, 2**64 - 1)),
        "DECIMAL": lambda: f"{rnd.randint(-(10**14), 10**14)}.{rnd.randint(0, 999999):06d}",
        "FLOAT": lambda: repr(rnd.uniform(-1e30, 1e30)),
        "DOUBLE": lambda: repr((r() - 0.5) * 10 ** rnd.randint(-300, 300)),
        "BIT": lambda: f"b'{rnd.getrandbits(13):b}'",
        "VARCHAR": lambda: f"'{text}'",
        "MEDIUMTEXT": lambda: f"'{text * rnd.randint(1, 400)}'",
        "BLOB": lambda: f"x'{rnd.randbytes(rnd.randint(0, 3000)).hex()}'",
        "DATE": lambda: f"'{day}'",
        "DATETIME": lambda: f"'{day} {clock}.{rnd.randint(0, 999999):06d}'",
        "TIMESTAMP": lambda: f"'{rnd.randint(1971, 2037)}{day[4:]} {clock}.{rnd.randint(0, 9999)}'",
        "TIME": lambda: (
            f"'{rnd.choice(['-', ''])}{rnd.randint(0, 838)}:{clock[3:]}.{rnd.randint(0, 99999)}'"
        ),
        "YEAR": lambda: str(rnd.choice([0, rnd.randint(1901, 2155)])),
        "ENUM": lambda: rnd.choice(["'x'", "'y,z'", "''"]),
        "SET": lambda: rnd.choice(["''", "'p'", "'r,p'", "'p,q,r'"]),
    }[kind.upper()]()


def test_seeded_random_rows_over_many_reads_read_as_the_reference(
    server: Any, mysql_db: str
) -> None:
    rnd = random.Random(15)
    server.sql(f"CREATE TABLE rnd (id INT PRIMARY KEY, {', '.join(RANDOM_COLUMNS)})", mysql_db)
    conn = connect(server, mysql_db)
    cur = conn.cursor()
    cur.execute("SET time_zone = '+00:00'")
    for base in range(0, 600, 50):
        values = ", ".join(
            f"({base + i}, {', '.join(_random_value(rnd, c) for c in RANDOM_COLUMNS)})"
            for i in range(50)
        )
        cur.execute(f"INSERT INTO rnd VALUES {values}")
    conn.close()
    assert len(read_both(server, mysql_db, "rnd")) == 600


def test_a_row_of_more_than_16_mb_reads_as_the_reference(server: Any, mysql_db: str) -> None:
    """A row over 16 MB comes in packets of 0xffffff bytes and a last shorter one."""
    server.sql("SET GLOBAL max_allowed_packet = 67108864", None)
    server.sql("CREATE TABLE huge (id INT PRIMARY KEY, b LONGBLOB, t LONGTEXT)", mysql_db)
    conn = connect(server, mysql_db)
    cur = conn.cursor()
    cur.execute("INSERT INTO huge VALUES (1, REPEAT('ab', 9000000), 'x'), (2, '', REPEAT('é', 9))")
    cur.execute("INSERT INTO huge VALUES (3, REPEAT('c', 16777210), NULL)")  # at the boundary
    conn.close()
    rows = read_both(server, mysql_db, "huge")
    assert rows[0][1] == (bytes, repr(b"ab" * 9000000))


def test_an_error_in_the_middle_of_a_result_raises_as_the_reference(
    server: Any, mysql_db: str
) -> None:
    """The server ends a result with an error packet after some rows: both readers raise the
    same error, and the connection goes on (the packet sequence kept)."""
    server.sql("CREATE TABLE t (id INT PRIMARY KEY, v BIGINT)", mysql_db)
    server.sql("INSERT INTO t VALUES (1, 1), (2, 2), (3, 3)", mysql_db)
    sql = f"SELECT id, (SELECT 1 UNION SELECT id) AS v FROM {quote(mysql_db)}.t AS o ORDER BY id"
    tables = source_parts(server, mysql_db)
    conn = tables.server.connect()
    cur = conn.cursor()
    version = tables.catalog_version(cur, mysql_db, "t")
    errors = []
    for native in (True, False):
        reader = _snapshot_read.Reader(version, "s1", "f:4", native)
        with pytest.raises(pymysql.err.MySQLError) as e:
            reader.chunk(conn, sql)
        if native:
            assert reader.decoder is not None
        errors.append((type(e.value), e.value.args[0]))
        cur.execute("SELECT 2")
        assert cur.fetchall() == ((2,),)
    assert errors[0] == errors[1] and errors[0][1] == 1242, errors  # more than one row
    conn.close()


# --- whole snapshots ---------------------------------------------------------------------------


def snapshot_events(tables: Tables, native: bool, max_events: int) -> list[Any]:
    """Each batch of a whole snapshot: its position, its flag, and per event the table, the
    row (typed), the event id and the marker."""
    snap = Snapshot(
        tables.server,
        tables,
        prefix="p",
        connector="mysql",
        max_events=max_events,
        stopping=lambda: False,
        reporter=NullReporter(),
    )
    snap.native = native
    out = []
    for batch in snap.run(None):
        evs = []
        for ev in batch.events:
            assert isinstance(ev, RowChange)
            assert ev.after is not None
            evs.append((ev.table.qualified, typed([ev.after]), ev.event_id, ev.source["snapshot"]))
        out.append((batch.position, batch.snapshot, evs))
    return out


def test_whole_snapshots_give_the_same_events_markers_ids_and_positions(
    server: Any, mysql_db: str
) -> None:
    """Tables of 0, 1, 2 and 13 rows, one without a key, one with a composite string key, in
    chunks of 5 and batches of 4: events, Debezium's markers, ids and resume positions are the
    same from both readers, and the markers are where Debezium puts them."""
    db = mysql_db
    server.sql("CREATE TABLE a0 (id INT PRIMARY KEY)", db)
    server.sql("CREATE TABLE a1 (id INT PRIMARY KEY, v DATE)", db)
    server.sql("INSERT INTO a1 VALUES (7, '2024-02-29')", db)
    server.sql("CREATE TABLE a2 (k VARCHAR(9), n INT, PRIMARY KEY (k, n))", db)
    server.sql("INSERT INTO a2 VALUES ('x y', 1), ('x', 2)", db)
    server.sql("CREATE TABLE a3 (id BIGINT PRIMARY KEY, t TEXT)", db)
    server.sql("INSERT INTO a3 VALUES " + ", ".join(f"({i * 3}, 'r{i}')" for i in range(13)), db)
    server.sql("CREATE TABLE a4 (v INT)", db)
    server.sql("INSERT INTO a4 VALUES (1), (1), (2), (3), (5), (8)", db)
    for max_events in (3, 4, 5000):
        tables = source_parts(server, db, snapshot_chunk_rows=5)
        native = snapshot_events(tables, True, max_events)
        python = snapshot_events(tables, False, max_events)
        assert native == python
        events = [e for _, _, evs in native for e in evs]
        assert len(events) == 1 + 2 + 13 + 6
        assert [flag for _, flag, _ in native] == [True] * (len(native) - 1) + [False]
        if max_events == 3:  # the first batch ends with a2: done, nothing to resume after
            assert native[0][0]["after"] == {}
            assert native[0][0]["done"] == [f"{db}.a1", f"{db}.a2"]
        if max_events == 4:  # batches ending inside a3 resume after their last key
            assert [len(evs) for _, _, evs in native] == [4] * 5 + [2]
            assert native[0][0]["after"] == {f"{db}.a3": [0]}
            assert native[0][0]["done"] == [f"{db}.a1", f"{db}.a2"]
            assert native[1][0]["after"] == {f"{db}.a3": [12]}
        markers = {}
        for table, _, _, marker in events:
            markers.setdefault(table, []).append(marker)
        assert markers[f"{db}.a1"] == ["first"]
        assert markers[f"{db}.a2"] == ["first_in_data_collection", "last_in_data_collection"]
        assert markers[f"{db}.a3"] == (
            ["first_in_data_collection"] + ["true"] * 11 + ["last_in_data_collection"]
        )
        assert markers[f"{db}.a4"] == ["first_in_data_collection"] + ["true"] * 4 + ["last"]
        scope = f"s:{native[-1][0]['file']}:{native[-1][0]['pos']}"
        assert events[0][2] == f"{scope}:{db}.a1:7"
        assert events[1][2].startswith(f"{scope}:{db}.a2:#")  # a composite key's digest
        assert events[3][2] == f"{scope}:{db}.a3:0"
        assert len({e[2] for e in events}) == len(events)
