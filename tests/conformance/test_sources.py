"""The source conformance suite: every source (Postgres, MariaDB 10.11, Oracle MySQL 9.7) keeps
the same guarantees, checked end to end as a user runs them.

Each case is written once against a small per-source adapter (``Db``: the SQL dialect, the
source config block, the driver connection) and runs ``cdc run`` as a real process (the
``daemon`` fixture) into the built-in log, read back with tests/logtools.py as a consumer would.

Cases: the snapshot-to-stream hand-off has no gap and no duplicate; a kill -9 mid-stream and
mid-snapshot resumes with each change exactly once, in commit order; DDL mid-stream (ADD and DROP
COLUMN) changes the schema between the right events; snapshot and stream give identical values
and Avro schemas per type; a multi-table transaction is BEGIN, its changes, END with the right
per-table counts.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdc.sinks.log import LogReader
from tests.conftest import pg_versions, wait_until
from tests.integration.mysql.conftest import CLIENT_SERVER_ID, connect
from tests.logtools import read_log

pytestmark = pytest.mark.integration

_counter = itertools.count()
# one Postgres case per major in $CDC_PG_VERSIONS (tests/conftest.py), e.g. "postgres-pg18"
SOURCES = [*(f"postgres-pg{v}" for v in pg_versions()), "mariadb", "mysql"]


class Db:
    """One source's dialect, config block and connections, for a database of the test's own."""

    kind: str
    namespace: str  # the topic's middle part: Postgres schema or MySQL database
    # the types case: column definitions, and rows of SQL literals in the same order
    types_columns: list[str]
    types_rows: list[list[str]]

    def source(self, tables: list[str], **extra: Any) -> dict[str, Any]:
        raise NotImplementedError

    def execute(self, statements: list[str]) -> None:
        """Run ``statements`` as one transaction on a new connection."""
        raise NotImplementedError

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def writer(self) -> Callable[[list[str]], None]:
        """A function running statements as one transaction on a connection of its own (close
        with ``close_writers``)."""
        raise NotImplementedError

    def close_writers(self) -> None:
        raise NotImplementedError

    def qualified(self, table: str) -> str:
        return f"{self.namespace}.{table}"


class PostgresDb(Db):
    kind = "postgres"
    namespace = "public"
    types_columns = [
        "i int",
        "s smallint",
        "b bigint",
        "n numeric(12,3)",
        "f float8",
        "ok boolean",
        "t text",
        "vc varchar(30)",
        "by bytea",
        "d date",
        "tm time(6)",
        "ts timestamp(6)",
        "tz timestamptz(6)",
        "j json",
    ]
    types_rows = [
        [
            "2147483647",
            "-32768",
            "9223372036854775807",
            "-123456789.125",
            "1.5e300",
            "true",
            "'héllo wörld'",
            "'ünïcode ✓'",
            "'\\x00ff10'::bytea",
            "'2024-02-29'",
            "'23:59:59.999999'",
            "'2001-02-03 04:05:06.789012'",
            "'2024-05-06 07:08:09.123456+00'",
            '\'{"a": [1, 2.5, "x"], "b": null}\'',
        ],
        [
            "0",
            "0",
            "0",
            "0.000",
            "-0.25",
            "false",
            "''",
            "''",
            "''::bytea",
            "'1970-01-01'",
            "'00:00:00'",
            "'1970-01-01 00:00:00'",
            "'1970-01-01 00:00:00+00'",
            "'[]'",
        ],
        ["NULL"] * 14,
    ]

    def __init__(self, pg_server: Any) -> None:
        self.name = f"conf{os.getpid()}_{next(_counter)}"
        self.dsn = str(pg_server.create_database(self.name))
        self._server = pg_server
        self._writers: list[Any] = []

    def source(self, tables: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "type": "postgres",
            "dsn": self.dsn,
            "tables": [self.qualified(t) for t in tables],
            "slot": f"s_{self.name}",
            **({"snapshot_fetch_size": extra["chunk"]} if "chunk" in extra else {}),
        }

    def execute(self, statements: list[str]) -> None:
        import psycopg

        with psycopg.connect(self.dsn) as c, c.transaction():
            for s in statements:
                c.execute(s)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.dsn) as c:
            return list(c.execute(sql).fetchall())

    def writer(self) -> Callable[[list[str]], None]:
        import psycopg

        conn = psycopg.connect(self.dsn)
        self._writers.append(conn)

        def run(statements: list[str]) -> None:
            with conn.transaction():
                for s in statements:
                    conn.execute(s)

        return run

    def close_writers(self) -> None:
        for c in self._writers:
            c.close()

    def drop(self) -> None:
        self._server.psql(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            f"WHERE database = '{self.name}' AND active_pid IS NOT NULL;"
            "SELECT pg_sleep(0.3);"
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE database = '{self.name}' AND NOT active;"
        )


class MySqlDb(Db):
    """MariaDB and Oracle MySQL: one dialect, two servers."""

    types_columns = [
        "i INT",
        "s SMALLINT",
        "b BIGINT",
        "n DECIMAL(12,3)",
        "f DOUBLE",
        "ok BOOLEAN",
        "t TEXT",
        "vc VARCHAR(30)",
        "`by` BLOB",
        "d DATE",
        "tm TIME(6)",
        "ts DATETIME(6)",
        "tz TIMESTAMP(6) NULL",
        "j JSON",
    ]
    types_rows = [
        [
            "2147483647",
            "-32768",
            "9223372036854775807",
            "-123456789.125",
            "1.5e300",
            "TRUE",
            "'héllo wörld'",
            "'ünïcode ✓'",
            "X'00FF10'",
            "'2024-02-29'",
            "'23:59:59.999999'",
            "'2001-02-03 04:05:06.789012'",
            "'2024-05-06 07:08:09.123456'",
            '\'{"a": [1, 2.5, "x"], "b": null}\'',
        ],
        [
            "0",
            "0",
            "0",
            "0.000",
            "-0.25",
            "FALSE",
            "''",
            "''",
            "X''",
            "'1970-01-01'",
            "'00:00:00'",
            "'1970-01-01 00:00:00'",
            "'1970-01-02 00:00:00'",
            "'[]'",
        ],
        ["NULL"] * 14,
    ]

    def __init__(self, kind: str, server: Any) -> None:
        self.kind = kind
        self.server = server
        self.namespace = f"conf{os.getpid()}_{next(_counter)}"
        server.create_database(self.namespace)
        self._writers: list[Any] = []

    def source(self, tables: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "type": "mysql",
            "host": self.server.host,
            "port": self.server.port,
            "user": self.server.user,
            "password": self.server.password,
            "server_id": CLIENT_SERVER_ID + 100 + next(_counter),
            "tables": [self.qualified(t) for t in tables],
            **({"snapshot_chunk_rows": extra["chunk"]} if "chunk" in extra else {}),
        }

    def _connect(self) -> Any:
        conn = connect(self.server, self.namespace)
        conn.cursor().execute("SET SESSION time_zone = '+00:00'")
        return conn

    def execute(self, statements: list[str]) -> None:
        conn = self._connect()
        try:
            self._run(conn, statements)
        finally:
            conn.close()

    @staticmethod
    def _run(conn: Any, statements: list[str]) -> None:
        cur = conn.cursor()
        if any(s.upper().startswith(("ALTER", "CREATE")) for s in statements):
            for s in statements:  # DDL commits implicitly
                cur.execute(s)
            return
        cur.execute("BEGIN")
        for s in statements:
            cur.execute(s)
        cur.execute("COMMIT")

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return list(cur.fetchall())
        finally:
            conn.close()

    def writer(self) -> Callable[[list[str]], None]:
        conn = self._connect()
        self._writers.append(conn)
        return lambda statements: self._run(conn, statements)

    def close_writers(self) -> None:
        for c in self._writers:
            c.close()

    def drop(self) -> None:
        pass


@pytest.fixture(params=SOURCES)
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    d: PostgresDb | MySqlDb
    if request.param.startswith("postgres-pg"):
        version = request.param.removeprefix("postgres-pg")
        d = PostgresDb(request.getfixturevalue("pg_servers").get(version))
    else:
        d = MySqlDb(request.param, request.getfixturevalue(f"{request.param}_server"))
    try:
        yield d
    finally:
        d.close_writers()
        d.drop()


class Run:
    """A pipeline of ``db`` into the built-in log, run by ``cdc run`` processes in turn."""

    def __init__(
        self,
        tmp_path: Path,
        daemon: Any,
        db: Db,
        tables: list[str],
        max_events: int = 5000,
        **src: Any,
    ) -> None:
        self.db = db
        self.name = f"conf{next(_counter)}"
        self.log = tmp_path / "log"
        self.config = tmp_path / "cdc.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "pipelines": [
                        {
                            "name": self.name,
                            "batch": {"max_events": max_events, "max_wait_ms": 20},
                            "source": db.source(tables, **src),
                            "sink": {"type": "log", "path": str(self.log)},
                        }
                    ]
                }
            )
        )
        self._daemon = daemon
        self.proc: Any = None

    def start(self) -> Run:
        self.proc = self._daemon(self.config).start()
        return self

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        assert self.proc.terminate() == 0, self.proc.output()

    def topic(self, table: str) -> str:
        return f"{self.name}.{self.db.namespace}.{table}"

    def records(self) -> list[dict[str, Any]]:
        return read_log(self.log)

    def rows(self, table: str | None = None) -> list[dict[str, Any]]:
        """Row events (no tombstones, no transaction events), in log order."""
        prefix = f"{self.name}.{self.db.namespace}."
        return [
            r
            for r in self.records()
            if r["value"] is not None
            and r["topic"].startswith(prefix)
            and (table is None or r["topic"] == self.topic(table))
        ]

    def wait(self, check: Callable[[list[dict[str, Any]]], bool], what: str) -> list[Any]:
        """Poll the log's row events until ``check`` holds; fail early when the daemon exits."""

        def ready() -> list[dict[str, Any]] | None:
            if self.proc.proc.poll() is not None:
                pytest.fail(f"daemon exited early:\n{self.proc.output()}")
            rows = self.rows()
            return rows if check(rows) else None

        result: list[Any] = wait_until(ready, 60, what)
        return result


def ops(rows: list[dict[str, Any]], op: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["value"]["op"] == op]


def replay(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> dict[Any, tuple[Any, ...]]:
    """The table the row events replay to, keyed by id."""
    table: dict[Any, tuple[Any, ...]] = {}
    for r in rows:
        value = r["value"]
        if value["op"] == "d":
            table.pop(r["key"]["id"], None)
        else:
            table[r["key"]["id"]] = tuple(value["after"][c] for c in columns)
    return table


# --- 1. snapshot-to-stream hand-off -----------------------------------------------------------


def test_snapshot_to_stream_handoff_has_no_gap_and_no_duplicate(
    tmp_path: Path, daemon: Any, db: Db
) -> None:
    n = 2000
    db.execute(["CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)"])
    db.execute([f"INSERT INTO t VALUES {', '.join(f'({i}, 0)' for i in range(1, n + 1))}"])
    run = Run(tmp_path, daemon, db, ["t"], max_events=200, chunk=200)

    # A writer changes the table before, while and after the daemon snapshots it.
    stop = threading.Event()
    written = Counter[str]()
    write = db.writer()

    def writer() -> None:
        rng = random.Random(1)
        i = 0
        while not stop.is_set():
            i += 1
            kind = rng.choice("cud")
            if kind == "c":
                write([f"INSERT INTO t VALUES ({n + i}, {i})"])
            elif kind == "u":
                write([f"UPDATE t SET v = {i} WHERE id = {rng.randint(1, n + i)}"])
            else:
                write([f"DELETE FROM t WHERE id = {rng.randint(1, n + i)}"])
            written[kind] += 1
            time.sleep(0.002)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)
        run.start()
        # the writer keeps going until the stream has carried a good many of its changes
        run.wait(lambda rows: len(rows) - len(ops(rows, "r")) >= 300, "300 streamed changes")
    finally:
        stop.set()
        thread.join(30)
    db.execute(["INSERT INTO t VALUES (0, -1)"])  # the last change: everything before is in
    rows = run.wait(lambda rows: any(r["key"]["id"] == 0 for r in rows), "the last change")
    run.stop()

    reads = ops(rows, "r")
    first_stream = next(i for i, r in enumerate(rows) if r["value"]["op"] != "r")
    assert all(r["value"]["op"] == "r" for r in rows[:first_stream])
    assert all(r["value"]["op"] != "r" for r in rows[first_stream:]), "op=r after a stream event"
    read_twice = [k for k, c in Counter(r["key"]["id"] for r in reads).items() if c > 1]
    assert not read_twice, f"snapshot rows read twice: {read_twice[:10]}"
    assert reads, "no snapshot rows"
    table = dict((row[0], (row[1],)) for row in db.query("SELECT id, v FROM t"))
    replayed = replay(rows, ("v",))
    missing = {k: v for k, v in table.items() if replayed.get(k) != v}
    extra = {k: v for k, v in replayed.items() if k not in table}
    assert not missing and not extra, (
        f"events replay to a different table: {len(missing)} rows differ or are missing "
        f"(e.g. {list(missing.items())[:5]}), {len(extra)} rows too many "
        f"(e.g. {list(extra.items())[:5]})"
    )


# --- 2. resume after kill -9 ------------------------------------------------------------------


class Workload:
    """Single-row transactions from one thread, each with a unique ``v``: the log must hold each
    exactly once, in this order."""

    def __init__(self, db: Db, first_id: int) -> None:
        self.write = db.writer()
        self.next_id = first_id
        self.v = 0
        self.expected: list[tuple[str, int, int | None]] = []  # (op, id, v after)
        self.live: list[int] = []

    def step(self) -> None:
        self.v += 1
        if self.v % 7 == 0 and self.live:
            victim = self.live.pop(0)
            self.write([f"DELETE FROM t WHERE id = {victim}"])
            self.expected.append(("d", victim, None))
        elif self.v % 3 == 0 and self.live:
            target = self.live[-1]
            self.write([f"UPDATE t SET v = {self.v} WHERE id = {target}"])
            self.expected.append(("u", target, self.v))
        else:
            self.write([f"INSERT INTO t VALUES ({self.next_id}, {self.v})"])
            self.expected.append(("c", self.next_id, self.v))
            self.live.append(self.next_id)
            self.next_id += 1


def streamed(rows: list[dict[str, Any]]) -> list[tuple[str, int, int | None]]:
    return [
        (
            r["value"]["op"],
            r["key"]["id"],
            None if r["value"]["after"] is None else r["value"]["after"]["v"],
        )
        for r in rows
        if r["value"]["op"] != "r"
    ]


def test_resume_after_kill_mid_stream_exactly_once_in_order(
    tmp_path: Path, daemon: Any, db: Db
) -> None:
    db.execute(["CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)"])
    db.execute(["INSERT INTO t VALUES (1, 0)"])
    run = Run(tmp_path, daemon, db, ["t"], max_events=10).start()
    run.wait(lambda rows: len(rows) == 1, "the snapshot row")
    work = Workload(db, 100)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set() and work.v < 600:
            work.step()
            # paced (600 transactions over 3 s or more): now that a batch is written as soon as
            # the stream pauses, an unpaced writer could finish before the poll below saw 60
            time.sleep(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        run.wait(lambda rows: len(rows) > 60, "some streamed changes")
        run.kill()  # SIGKILL while the writer goes on
        in_log = len(run.rows()) - 1
        run.start()
        thread.join(60)
    finally:
        stop.set()
        thread.join(30)
    assert work.v == 600
    rows = run.wait(lambda rows: len(rows) - 1 >= len(work.expected), "every change")
    time.sleep(0.5)  # anything written twice would arrive now
    rows = run.rows()
    run.stop()
    assert in_log < len(work.expected), "the kill came after the last change: nothing resumed"
    got = streamed(rows)
    assert got == work.expected, _first_difference(got, work.expected)


def _first_difference(got: list[Any], expected: list[Any]) -> str:
    for i, (a, b) in enumerate(zip(got, expected, strict=False)):
        if a != b:
            return f"log differs at stream event {i}: got {a}, expected {b}"
    return f"log holds {len(got)} stream events, expected {len(expected)}"


def test_resume_after_kill_mid_snapshot_each_row_once(tmp_path: Path, daemon: Any, db: Db) -> None:
    n = 3000
    db.execute(["CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)"])
    db.execute([f"INSERT INTO t VALUES {', '.join(f'({i}, {-i})' for i in range(1, n + 1))}"])
    run = Run(tmp_path, daemon, db, ["t"], max_events=100, chunk=100).start()
    # kill as soon as part of the snapshot is durable
    deadline = time.monotonic() + 60
    while True:
        info = LogReader(run.log).info() if run.log.exists() else None
        if info and info.get("last_position") is not None:
            break
        assert time.monotonic() < deadline, f"no snapshot batch in 60s:\n{run.proc.output()}"
        time.sleep(0.005)
    run.kill()
    before = len(run.rows())
    assert 0 < before < n, f"the kill did not come mid-snapshot ({before} of {n} rows in the log)"

    run.start()
    rows = run.wait(lambda rows: len(ops(rows, "r")) >= n, f"{n} snapshot rows")
    work = Workload(db, n + 1)
    for _ in range(30):
        work.step()
    rows = run.wait(lambda rows: len(rows) - len(ops(rows, "r")) >= 30, "the streamed changes")
    time.sleep(0.5)
    rows = run.rows()
    run.stop()

    reads = Counter(r["key"]["id"] for r in ops(rows, "r"))
    twice = sorted(k for k, c in reads.items() if c > 1)
    assert not twice, (
        f"{len(twice)} snapshot rows written twice after resuming (e.g. ids {twice[:5]}); "
        f"{before} rows were in the log at the kill"
    )
    assert sorted(reads) == list(range(1, n + 1))
    assert all(r["value"]["after"]["v"] == -r["key"]["id"] for r in ops(rows, "r"))
    assert streamed(rows) == work.expected


# --- 3. DDL mid-stream ------------------------------------------------------------------------


def test_ddl_mid_stream_changes_the_schema_between_the_right_events(
    tmp_path: Path, daemon: Any, db: Db
) -> None:
    db.execute(["CREATE TABLE t (id INT PRIMARY KEY, v INT)"])
    db.execute(["INSERT INTO t VALUES (1, 1)"])
    run = Run(tmp_path, daemon, db, ["t"]).start()
    run.wait(lambda rows: len(rows) == 1, "the snapshot row")
    db.execute(["INSERT INTO t VALUES (2, 2)"])
    db.execute(["UPDATE t SET v = 20 WHERE id = 2"])
    db.execute(["ALTER TABLE t ADD COLUMN extra VARCHAR(20)"])
    db.execute(["INSERT INTO t VALUES (3, 3, 'x')"])
    db.execute(["UPDATE t SET extra = 'y' WHERE id = 2"])
    db.execute(["ALTER TABLE t DROP COLUMN v"])
    db.execute(["INSERT INTO t VALUES (4, 'z')"])
    db.execute(["UPDATE t SET extra = 'w' WHERE id = 3"])
    db.execute(["DELETE FROM t WHERE id = 1"])
    rows = run.wait(lambda rows: len(rows) >= 8, "8 row events")
    time.sleep(0.3)
    rows = run.rows()
    run.stop()
    got = [(r["value"]["op"], r["value"]["after"]) for r in rows]
    assert got == [
        ("r", {"id": 1, "v": 1}),
        ("c", {"id": 2, "v": 2}),
        ("u", {"id": 2, "v": 20}),
        ("c", {"id": 3, "v": 3, "extra": "x"}),
        ("u", {"id": 2, "v": 20, "extra": "y"}),
        ("c", {"id": 4, "extra": "z"}),
        ("u", {"id": 3, "extra": "w"}),
        ("d", None),
    ]
    assert rows[-1]["key"] == {"id": 1}


# --- 4. snapshot and stream give identical values per type ------------------------------------


def _after_schema(log: Path, value_id: int) -> Any:
    envelope = LogReader(log).schemas.get(value_id)
    (after,) = [f for f in envelope["fields"] if f["name"] == "after"]
    return after["type"]


def test_snapshot_and_stream_give_identical_values_per_type(
    tmp_path: Path, daemon: Any, db: Db
) -> None:
    db.execute([f"CREATE TABLE t (id INT PRIMARY KEY, {', '.join(db.types_columns)})"])
    inserts = [f"INSERT INTO t VALUES (ID, {', '.join(values)})" for values in db.types_rows]
    db.execute([s.replace("ID", str(i + 1), 1) for i, s in enumerate(inserts)])
    run = Run(tmp_path, daemon, db, ["t"]).start()
    run.wait(lambda rows: len(rows) == len(inserts), "the snapshot rows")
    db.execute([s.replace("ID", str(i + 101), 1) for i, s in enumerate(inserts)])
    rows = run.wait(lambda rows: len(rows) >= 2 * len(inserts), "the streamed rows")
    run.stop()

    reads = {r["key"]["id"]: r for r in ops(rows, "r")}
    creates = {r["key"]["id"] - 100: r for r in ops(rows, "c")}
    assert sorted(reads) == sorted(creates) == list(range(1, len(inserts) + 1))
    names = [c.split()[0].strip("`") for c in db.types_columns]
    for i in reads:
        snap, stream = reads[i]["value"]["after"], creates[i]["value"]["after"]
        assert list(snap) == list(stream) == ["id", *names]
        diff = {c: (snap[c], stream[c]) for c in names if snap[c] != stream[c]}
        assert not diff, f"row {i}: snapshot and stream differ (column: (snapshot, stream)): {diff}"
    assert all(v is None for c, v in reads[3]["value"]["after"].items() if c != "id")
    # the same Avro schema for the value's fields
    snap_ids = {int.from_bytes(_raw(run.log, r["offset"])[1:5], "big") for r in reads.values()}
    stream_ids = {int.from_bytes(_raw(run.log, r["offset"])[1:5], "big") for r in creates.values()}
    schemas = {json.dumps(_after_schema(run.log, i), sort_keys=True) for i in snap_ids | stream_ids}
    assert len(schemas) == 1, f"snapshot and stream 'after' schemas differ: {schemas}"


def _raw(log: Path, offset: int) -> bytes:
    (record,) = list(itertools.islice(LogReader(log).records(offset), 1))
    assert record.value is not None
    return bytes(record.value)


# --- 5. transaction boundaries ----------------------------------------------------------------


def test_multi_table_transaction_is_begin_changes_end(tmp_path: Path, daemon: Any, db: Db) -> None:
    db.execute(["CREATE TABLE a (id INT PRIMARY KEY, v INT)"])
    db.execute(["CREATE TABLE b (id INT PRIMARY KEY, v INT)"])
    db.execute(["INSERT INTO a VALUES (1, 1)", "INSERT INTO b VALUES (1, 1)"])
    run = Run(tmp_path, daemon, db, ["a", "b"]).start()
    run.wait(lambda rows: len(rows) == 2, "the snapshot rows")
    db.execute(["INSERT INTO a VALUES (2, 2)"])
    db.execute(
        [
            "INSERT INTO a VALUES (3, 3)",
            "INSERT INTO b VALUES (2, 2)",
            "UPDATE a SET v = 30 WHERE id = 3",
            "INSERT INTO b VALUES (3, 3)",
            "DELETE FROM a WHERE id = 1",
            "UPDATE b SET v = 10 WHERE id = 1",
            "INSERT INTO a VALUES (4, 4)",
        ]
    )
    db.execute(["INSERT INTO b VALUES (4, 4)"])
    run.wait(lambda rows: len(rows) >= 11, "11 row events")
    time.sleep(0.3)
    records = [r for r in run.records() if r["value"] is not None]  # tombstones aside
    run.stop()

    tx_topic = f"{run.name}.transaction"
    stream = [r for r in records if r["value"].get("op") != "r"]
    # (BEGIN/END, tx id) or (op, table, tx id) in log order
    seen = [
        (r["value"]["status"], r["value"]["id"])
        if r["topic"] == tx_topic
        else (r["value"]["op"], r["topic"].rsplit(".", 1)[1], r["value"]["transaction"]["id"])
        for r in stream
    ]
    shape = [s[:-1] for s in seen]
    assert shape == [
        ("BEGIN",),
        ("c", "a"),
        ("END",),
        ("BEGIN",),
        ("c", "a"),
        ("c", "b"),
        ("u", "a"),
        ("c", "b"),
        ("d", "a"),
        ("u", "b"),
        ("c", "a"),
        ("END",),
        ("BEGIN",),
        ("c", "b"),
        ("END",),
    ], seen
    ids = [s[-1] for s in seen]
    assert ids[0:3] == [ids[0]] * 3 and ids[3:12] == [ids[3]] * 9 and ids[12:] == [ids[12]] * 3
    assert len({ids[0], ids[3], ids[12]}) == 3
    end = stream[11]["value"]
    assert end["event_count"] == 7
    per_table = {c["data_collection"]: c["event_count"] for c in end["data_collections"]}
    assert per_table == {db.qualified("a"): 4, db.qualified("b"): 3}
    orders = [r["value"]["transaction"] for r in stream[4:11]]
    assert [o["total_order"] for o in orders] == list(range(1, 8))
    assert [o["data_collection_order"] for o in orders] == [1, 1, 2, 2, 3, 3, 4]
