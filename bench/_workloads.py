"""The standard workloads (issue 6), for PostgreSQL and MariaDB (or Oracle MySQL), at a scale.

W1 bulk: transactions of 1,000 inserts, then of 1,000 updates, then of 1,000 deletes (at scale 1:
1,000 + 100 + 100 transactions, 1.2M row changes). W2: single-row insert transactions (100,000 at
scale 1). W3: existing rows read by the initial snapshot (2M at scale 1). W4: W3's rows in a table
added to a running pipeline, backfilled by an incremental snapshot while W1 streams (Postgres).
The server generates the rows itself (generate_series, MariaDB's sequence engine or MySQL's
recursive CTE, a loop committing each row) so that loading is quick and the client's speed does
not matter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TX_ROWS = 1000


@dataclass(frozen=True)
class Sizes:
    w1_inserts: int  # transactions of TX_ROWS inserts
    w1_updates: int
    w1_deletes: int
    w2_txns: int
    w3_rows: int

    @classmethod
    def at(cls, scale: float) -> Sizes:
        def n(full: int) -> int:
            return max(1, round(full * scale))

        return cls(n(1000), n(100), n(100), n(100_000), n(2_000_000))

    @property
    def w1_changes(self) -> int:
        return (self.w1_inserts + self.w1_updates + self.w1_deletes) * TX_ROWS

    @property
    def w1_deletes_rows(self) -> int:
        return self.w1_deletes * TX_ROWS


PG_TABLES = """
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int, amount numeric(12,2),
  status text, note varchar(64), created_at timestamptz);
CREATE TABLE bench_marker (id serial PRIMARY KEY, at timestamptz DEFAULT now());
CREATE PUBLICATION bench_ceiling FOR TABLE orders;
"""

MYSQL_TABLES = [
    "CREATE TABLE orders (id bigint AUTO_INCREMENT PRIMARY KEY, customer_id int,"
    " amount decimal(12,2), status text, note varchar(64), created_at timestamp(6) NULL)",
    "CREATE TABLE bench_marker (id int AUTO_INCREMENT PRIMARY KEY,"
    " at timestamp(6) DEFAULT CURRENT_TIMESTAMP(6))",
]


def pg_w1(sizes: Sizes, base: int) -> str:
    """A psql script: one autocommitted statement (transaction) per 1,000 changes."""
    out = []
    for t in range(sizes.w1_inserts):
        lo = base + t * TX_ROWS
        out.append(
            "INSERT INTO orders (id, customer_id, amount, status, note, created_at) "
            f"SELECT {lo} + g, g % 1000, (g % 100000) / 100.0, 'new', 'note ' || g, now() "
            f"FROM generate_series(1, {TX_ROWS}) g;"
        )
    for t in range(sizes.w1_updates):
        lo = base + t * TX_ROWS
        out.append(
            "UPDATE orders SET status = 'paid', amount = amount + 1 "
            f"WHERE id > {lo} AND id <= {lo + TX_ROWS};"
        )
    for t in range(sizes.w1_deletes):
        lo = base + (sizes.w1_inserts - 1 - t) * TX_ROWS  # from the end: not the updated rows
        out.append(f"DELETE FROM orders WHERE id > {lo} AND id <= {lo + TX_ROWS};")
    return "\n".join(out)


def pg_w2(n: int, base: int) -> str:
    return (
        f"DO $$ BEGIN FOR i IN 1..{n} LOOP "
        "INSERT INTO orders (id, customer_id, amount, status, note, created_at) "
        f"VALUES ({base} + i, i % 1000, (i % 100000) / 100.0, 'new', 'note ' || i, now()); "
        "COMMIT; END LOOP; END $$;"
    )


def pg_w3(n: int, table: str = "orders") -> str:
    out = []
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out.append(
            f"INSERT INTO {table} (id, customer_id, amount, status, note, created_at) "
            "SELECT g, g % 1000, (g % 100000) / 100.0, 'new', 'note ' || g, now() "
            f"FROM generate_series({lo + 1}, {hi}) g;"
        )
    return "\n".join(out)


Seq = Callable[[int, int], str]


def mariadb_seq(lo: int, hi: int) -> str:
    """A FROM item of the integers ``lo..hi`` as column ``seq``: MariaDB's sequence engine."""
    return f"seq_{lo}_to_{hi}"


def mysql_seq(lo: int, hi: int) -> str:
    """The same on Oracle MySQL (no sequence engine): a recursive CTE, which needs the session's
    cte_max_recursion_depth above ``hi - lo``."""
    return (
        f"(WITH RECURSIVE s (seq) AS (SELECT {lo} UNION ALL SELECT seq + 1 FROM s "
        f"WHERE seq < {hi}) SELECT seq FROM s) AS s"
    )


def my_run(conn: Any, statements: list[str]) -> None:
    with conn.cursor() as cur:
        for s in statements:
            cur.execute(s)


def my_w1(sizes: Sizes, base: int, seq: Seq = mariadb_seq) -> list[str]:
    out = []
    for t in range(sizes.w1_inserts):
        lo = base + t * TX_ROWS
        out.append(
            "INSERT INTO orders (id, customer_id, amount, status, note, created_at) "
            f"SELECT {lo} + seq, seq % 1000, (seq % 100000) / 100, 'new', CONCAT('note ', seq),"
            f" NOW(6) FROM {seq(1, TX_ROWS)}"
        )
    for t in range(sizes.w1_updates):
        lo = base + t * TX_ROWS
        out.append(
            "UPDATE orders SET status = 'paid', amount = amount + 1 "
            f"WHERE id > {lo} AND id <= {lo + TX_ROWS}"
        )
    for t in range(sizes.w1_deletes):
        lo = base + (sizes.w1_inserts - 1 - t) * TX_ROWS
        out.append(f"DELETE FROM orders WHERE id > {lo} AND id <= {lo + TX_ROWS}")
    return out


MY_W2_PROC = """
CREATE PROCEDURE bench_w2(n INT, base BIGINT)
BEGIN
  DECLARE i INT DEFAULT 1;
  WHILE i <= n DO
    INSERT INTO orders (id, customer_id, amount, status, note, created_at)
      VALUES (base + i, i % 1000, (i % 100000) / 100, 'new', CONCAT('note ', i), NOW(6));
    SET i = i + 1;
  END WHILE;
END
"""


def my_w2(n: int, base: int) -> list[str]:
    # autocommit is on: each INSERT inside the procedure is its own transaction in the binlog.
    return [f"CALL bench_w2({n}, {base})"]


def my_w3(n: int, seq: Seq = mariadb_seq) -> list[str]:
    out = []
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        out.append(
            "INSERT INTO orders (id, customer_id, amount, status, note, created_at) "
            "SELECT seq, seq % 1000, (seq % 100000) / 100, 'new', CONCAT('note ', seq), NOW(6) "
            f"FROM {seq(lo + 1, hi)}"
        )
    return out
