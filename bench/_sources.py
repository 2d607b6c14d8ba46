"""The source databases as the bench drives them (PostgreSQL; MariaDB or Oracle MySQL): set up,
load, mark positions, ceilings."""

from __future__ import annotations

import time
from typing import Any

from bench import _ceilings as ceil
from bench import _workloads as wl
from cdc.sources.mysql._server import binlog_status_sql, parse_version
from scratch.mysql import mysqlbinlog_argv

LATENCY_BASE = 50_000_000  # ids of the latency rows: apart from W1's and W2's
STATE_SQL = "SELECT count(*), coalesce(sum(amount), 0) FROM orders"
INSERT = "INSERT INTO orders (id, customer_id, amount, status, note, created_at) VALUES "


def paced(execute: Any, rate: float, n: int, tx_rows: int) -> list[float]:
    """Insert ``n`` rows at ``rate`` rows/s in transactions of ``tx_rows`` rows (one statement
    each); the commit wall time of every row, in insertion order."""
    times: list[float] = []
    t0 = time.perf_counter()
    for first in range(0, n, tx_rows):
        rows = min(tx_rows, n - first)
        wait = t0 + first / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        execute(LATENCY_BASE + first + 1, rows)
        times.extend([time.time()] * rows)
    return times


def _values(now: str, rows: int) -> str:
    return ", ".join(f"(%s, 1, 9.99, 'new', 'latency', {now})" for _ in range(rows))


class Postgres:
    kind = "postgres"
    streaming_text = "streaming from slot"
    ceiling_name = "pg_recvlogical"
    snapshot_ceiling_name = "COPY to /dev/null"

    def __init__(self, server: Any) -> None:
        self.server = server
        self.db = ""

    def setup(self, db: str) -> None:
        self.db = db
        self.server.create_database(db)
        self.server.psql(wl.PG_TABLES, db)

    def source_config(self, snapshot: str, server_id: int) -> dict[str, Any]:
        return {
            "type": "postgres",
            "dsn": self.server.dsn(self.db),
            "tables": ["public.orders", "public.bench_marker"],
            "snapshot": snapshot,
            # The source notices a stop only between waits of up to this long: the default (10 s)
            # would add 10 s to every stop between workloads.
            "status_interval_s": 1.0,
        }

    def topic(self, prefix: str, table: str) -> str:
        return f"{prefix}.public.{table}"

    def qualified(self, table: str) -> str:
        return f"public.{table}"

    def load_added(self, table: str, sizes: wl.Sizes) -> None:
        """W4's table: the shape of ``orders``, W3's rows."""
        self.server.psql(f"CREATE TABLE {table} (LIKE orders INCLUDING ALL)", self.db)
        self.server.psql(wl.pg_w3(sizes.w3_rows, table), self.db)

    def marker(self) -> None:
        self.server.psql("INSERT INTO bench_marker DEFAULT VALUES", self.db)

    def mark(self) -> Any:
        """Before a workload: a pgoutput slot for pg_recvlogical that starts here."""
        self.server.psql(
            "SELECT pg_create_logical_replication_slot('bench_ceiling', 'pgoutput')", self.db
        )
        return "bench_ceiling"

    def end(self) -> Any:
        return self.server.psql("SELECT pg_current_wal_lsn()", self.db).strip()

    def load(self, workload: str, sizes: wl.Sizes, base: int) -> None:
        if workload == "W1":
            self.server.psql(wl.pg_w1(sizes, base), self.db)
        elif workload == "W2":
            self.server.psql(wl.pg_w2(sizes.w2_txns, base), self.db)
        else:
            self.server.psql(wl.pg_w3(sizes.w3_rows), self.db)

    def ceilings(self, start: Any, end: Any, rows: int, server_id: int) -> dict[str, float]:
        took = ceil.pg_recvlogical(self.server, self.db, start, "bench_ceiling", end)
        self.server.psql(f"SELECT pg_drop_replication_slot('{start}')", self.db)
        return {self.ceiling_name: rows / took}

    def snapshot_ceiling(self, rows: int) -> dict[str, float]:
        return {self.snapshot_ceiling_name: rows / ceil.pg_copy(self.server, self.db, "orders")}

    def state(self) -> tuple[int, Any]:
        """(rows, sum of amount) of ``orders``: what a database target must end up holding."""
        import psycopg

        with psycopg.connect(self.server.dsn(self.db)) as conn:
            row = conn.execute(STATE_SQL).fetchone()
        assert row is not None
        return (int(row[0]), row[1])

    def paced(self, rate: float, n: int, tx_rows: int) -> list[float]:
        import psycopg

        def execute(first: int, rows: int) -> None:
            sql = INSERT + _values("now()", rows)
            conn.execute(sql, list(range(first, first + rows)))

        with psycopg.connect(self.server.dsn(self.db), autocommit=True) as conn:
            return paced(execute, rate, n, tx_rows)

    def cleanup(self) -> None:
        name = self.db
        self.server.psql(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            f"WHERE database = '{name}' AND active_pid IS NOT NULL;"
            "SELECT pg_sleep(0.3);"
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            f"WHERE database = '{name}' AND NOT active;"
        )
        self.server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class MySQL:
    """MariaDB or Oracle MySQL, told apart as the source does: by ``SELECT VERSION()``."""

    kind = "mysql"
    streaming_text = "streaming the binlog"
    snapshot_ceiling_name = "SELECT to /dev/null"

    def __init__(self, server: Any) -> None:
        self.server = server
        self.db = ""
        version = str(server.sql("SELECT VERSION()")[0][0])
        self.is_mariadb = "mariadb" in version.lower()
        self._status_sql = binlog_status_sql(self.is_mariadb, parse_version(version))
        # MariaDB's sequence engine generates the rows; MySQL has a recursive CTE instead
        self._seq = wl.mariadb_seq if self.is_mariadb else wl.mysql_seq
        # the binlog reader of the server's own kind: MySQL's binlog has events mariadb-binlog
        # does not know; scratch/mysql.py keeps the mysqlbinlog of the server's build
        self.ceiling_name = "mariadb-binlog" if self.is_mariadb else "mysqlbinlog"

    def _conn(self) -> Any:
        conn = self.server.connect(self.db or None)
        if not self.is_mariadb:  # mysql_seq's CTEs go as deep as a W3 chunk of rows
            with conn.cursor() as cur:
                cur.execute("SET SESSION cte_max_recursion_depth = 1000000")
        return conn

    def _run(self, statements: list[str]) -> None:
        conn = self._conn()
        try:
            wl.my_run(conn, statements)
        finally:
            conn.close()

    def setup(self, db: str) -> None:
        self.server.create_database(db)
        self.db = db
        self._run([*wl.MYSQL_TABLES, wl.MY_W2_PROC])

    def source_config(self, snapshot: str, server_id: int) -> dict[str, Any]:
        return {
            "type": "mysql",
            "host": self.server.host,
            "port": self.server.port,
            "user": self.server.user,
            "password": self.server.password,
            "server_id": server_id,
            "tables": [f"{self.db}.orders", f"{self.db}.bench_marker"],
            "snapshot": snapshot,
        }

    def topic(self, prefix: str, table: str) -> str:
        return f"{prefix}.{self.db}.{table}"

    def marker(self) -> None:
        self._run(["INSERT INTO bench_marker () VALUES ()"])

    def _status(self) -> tuple[str, int]:
        row = self.server.sql(self._status_sql)[0]
        return str(row[0]), int(row[1])

    def mark(self) -> Any:
        return self._status()

    def end(self) -> Any:
        return self._status()

    def load(self, workload: str, sizes: wl.Sizes, base: int) -> None:
        if workload == "W1":
            self._run(wl.my_w1(sizes, base, self._seq))
        elif workload == "W2":
            self._run(wl.my_w2(sizes.w2_txns, base))
        else:
            self._run(wl.my_w3(sizes.w3_rows, self._seq))

    def ceilings(self, start: Any, end: Any, rows: int, server_id: int) -> dict[str, float]:
        file, pos = start
        tool = None if self.is_mariadb else mysqlbinlog_argv(self.server.root)
        took = ceil.mariadb_binlog(self.server, file, pos, tool)
        pmr_took, parsed = ceil.python_mysql_replication(self.server, file, pos, server_id)
        if parsed != rows:
            raise RuntimeError(f"python-mysql-replication parsed {parsed} rows, expected {rows}")
        return {self.ceiling_name: rows / took, "python-mysql-replication": rows / pmr_took}

    def snapshot_ceiling(self, rows: int) -> dict[str, float]:
        took = ceil.mariadb_select(self.server, self.db, "orders")
        return {self.snapshot_ceiling_name: rows / took}

    def state(self) -> tuple[int, Any]:
        """(rows, sum of amount) of ``orders``: what a database target must end up holding."""
        row = self.server.sql(STATE_SQL, self.db)[0]
        return (int(row[0]), row[1])

    def paced(self, rate: float, n: int, tx_rows: int) -> list[float]:
        conn = self._conn()
        try:
            with conn.cursor() as cur:

                def execute(first: int, rows: int) -> None:
                    cur.execute(INSERT + _values("NOW(6)", rows), list(range(first, first + rows)))

                return paced(execute, rate, n, tx_rows)
        finally:
            conn.close()

    def cleanup(self) -> None:
        self.server.sql(f"DROP DATABASE IF EXISTS `{self.db}`")
