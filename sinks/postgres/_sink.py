"""The Postgres target: psycopg 3, one connection, statements over many rows.

Groups of at least ``copy_min_rows`` rows (the sink's option) go by ``COPY``, whose rows psycopg
formats in C (``write_row``): an upsert copies them into a temporary staging table of the
written columns (made once per connection and column set, emptied after each use) and runs
``INSERT ... SELECT ... FROM stage ON CONFLICT ... DO UPDATE``; rows whose keys are new in the
source (the apply's ``_insert``) are copied straight into the target table inside a savepoint,
which costs the server a third of an upsert, and when a key is there after all (a target that
does not mirror the source: rows inserted by hand, a snapshot read again) the savepoint is
rolled back and the rows are upserted instead, and the plain copy is not tried again on that
table for the next ``FRESH_PAUSE`` groups (never again when the table is under row-level
security, where ``COPY FROM`` is refused). Measured on the bench's ``orders`` rows: psycopg's
array dumping, the way before, cost 3.5 us of client CPU per row, COPY 0.5.

While the apply defers (a batch of at least half ``max_events``, ``SqlTarget``), statements
that read a staging table, which need no parameters, are queued (``_tail``) rather than run,
and go to the server in one round trip (a simple query of several statements) before any other
statement. At the end of the batch the queue, the position and the COMMIT go in one query
headed by the COPY of the batch's first group of new keys (``_head``; ``_NoWaitWriter`` ends
that COPY without reading its answer), without waiting for the answer (``_commit_later``), so
that the target applies them while the daemon decodes the next batch; the answer is read
(``_settle``) before anything else is sent. A batch that does not commit (inside a large source
transaction) sends what it queued the same way (``_send_later``). New keys go without a
savepoint, ahead of the queued statements of their batch: those concern other keys (a key is
new, deleted or updated in a batch, one of the three), so only a unique index besides the
primary key could tell the order apart; a copy the target refuses (such an index, a key there
after all) makes the apply replay the batch statement by statement, in order, the savepoint way
above. Deletes of a one-column key go through a staging table too. Each staging table is read by
at most one queued statement: a second group of the same columns takes another (``_slots``).
Measured on W1 into a Postgres target (in-process, py-spy ``--idle``): the daemon waited for the
target a quarter of its time before (the COPY's end, the upserts, the savepoints, the commit), a
tenth after.

Smaller groups go as one array per column, unnested in the statement (``INSERT ... SELECT *
FROM unnest(%s::bigint[], %s::numeric(12,2)[], ...) ON CONFLICT ...``): one round trip, the
statement text the same for any number of rows (prepared once by psycopg). Every array is cast
to its column's type: the converters send temporal values as text in Postgres' own syntax (COPY
parses the same text by the staging table's column types). Tables with an array column, which
``unnest`` would flatten, get one row per statement there, pipelined by ``executemany``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import generators, pq
from psycopg import sql as pgsql
from psycopg.copy import LibpqWriter

from cdc.sinks._sql._sink import (
    POSITIONS_TABLE,
    DeferredRefusal,
    SqlTarget,
    TablePlan,
    TargetTable,
)
from cdc.sinks._sql._types import normalize
from cdc.sinks.postgres.config import PostgresSinkConfig

log = logging.getLogger(__name__)

# Rows per statement: each column is one array parameter, so a statement's size does not depend
# on its row count; this bounds the memory of one statement.
_MAX_ROWS = 5000
# Groups of a table upserted without trying a plain copy after a plain copy met a present key.
FRESH_PAUSE = 50

# A COPY into a table: the table, the column names, which items of each row (None: all), rows
_Copy = tuple[str, list[str], list[int] | None, list[list[Any]]]


def _write_rows(copy: psycopg.Copy, rows: list[list[Any]], which: list[int] | None) -> None:
    """``rows`` (their ``which`` items, all when None) into an open COPY."""
    write = copy.write_row
    if which is None:
        for r in rows:
            write(r)
    else:
        for r in rows:
            write([r[i] for i in which])


class _NoWaitWriter(LibpqWriter):
    """Ends a COPY without reading the server's answer: the query it starts goes on with more
    statements, whose answers ``PostgresTarget._settle`` reads with the COPY's."""

    def finish(self, exc: BaseException | None = None) -> None:
        if exc is not None:
            super().finish(exc)
            return
        pgconn, wait = self._pgconn, self.connection.wait
        while pgconn.put_copy_end() == 0:  # the output buffer is full: flush it, try again
            wait(generators.send(pgconn))
        wait(generators.send(pgconn))


class PostgresTarget(SqlTarget):
    dialect = "postgres"
    label = "postgres target"

    def __init__(
        self, config: PostgresSinkConfig, pipeline: str, *, max_events: int = 5000
    ) -> None:
        super().__init__(config, pipeline, config.schema_, max_events=max_events)
        self.config = config
        self._conn: psycopg.Connection[Any] | None = None
        # staging tables by (columns, types): made in this connection; those made in the open
        # transaction are forgotten if it rolls back
        self._stages: dict[tuple[tuple[str, ...], tuple[str, ...], int], str] = {}
        self._stages_new: list[tuple[tuple[str, ...], tuple[str, ...], int]] = []
        # statements queued to go in one round trip (no parameters), and per staging shape how
        # many of its tables they read (the next group of that shape takes the next one)
        self._tail: list[str] = []
        self._slots: dict[tuple[tuple[str, ...], tuple[str, ...]], int] = {}
        self._head: _Copy | None = None  # new keys, to be copied at the head of the commit
        self._flight = False  # a query was sent whose answer is not read yet
        self._flight_commits = False  # ... and it ends with COMMIT
        self._answers: list[pq.abc.PGresult] = []  # of the query in flight, read so far
        self._refusal: DeferredRefusal | None = None  # repeated by _settle until a rollback
        self._stage_seq = 0  # names the next staging table: never one made before
        self._fresh_pause: dict[TargetTable, int] = {}
        self._can_stage = True  # set by _connect
        self._told_no_stage = False

    # --- connection -------------------------------------------------------------------------

    def _connect(self) -> None:
        self._conn = psycopg.connect(
            self.config.dsn,
            autocommit=False,
            connect_timeout=10,
            application_name=f"cdc target {self.pipeline}"[:63],
            options="-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres",
        )
        # Staging tables are temporary tables: a user without TEMPORARY on the database (it is
        # PUBLIC's by default, but may be revoked) upserts by statements instead.
        with self._conn.cursor() as cur:
            cur.execute("SELECT has_database_privilege(current_database(), 'TEMPORARY')")
            row = cur.fetchone()
        self._conn.commit()
        self._can_stage = bool(row and row[0])
        if not self._can_stage and not self._told_no_stage:
            self._told_no_stage = True
            log.warning(
                "%s: the user may not create temporary tables in the target database, so "
                "updates are applied by statements rather than through a staging table by COPY "
                "(slower); GRANT TEMPORARY ON DATABASE to the user to speed them up",
                self.label,
            )

    def _disconnect(self) -> None:
        self._stages.clear()
        self._stages_new.clear()
        self._forget_deferred()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _is_down(self, exc: BaseException) -> bool:
        # Connection errors, shutdowns, deadlocks, lock timeouts: a new attempt may succeed. A
        # statement cancelled (statement_timeout, pg_cancel_backend) would be again: refused.
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return False
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)

    def _cursor(self) -> psycopg.Cursor[Any]:
        """A cursor for a statement of its own: what was deferred or queued goes first."""
        self._ready()
        return self._live().cursor()

    def _live(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise psycopg.InterfaceError("the connection is closed")
        return self._conn

    # --- deferred statements (see the module's docstring) ---------------------------------------

    def _forget_deferred(self) -> None:
        self._head = None
        self._tail.clear()
        self._slots.clear()
        self._flight = self._flight_commits = False
        self._answers.clear()
        self._refusal = None

    def _refuse(self, exc: psycopg.Error) -> DeferredRefusal:
        self._refusal = DeferredRefusal(exc)
        return self._refusal

    def _later(self, statement: str) -> None:
        """Run a statement without parameters now, or queue it when deferring."""
        if self._deferring and self._can_stage:
            self._tail.append(statement)
        else:
            self._execute(statement)

    @contextlib.contextmanager
    def _deferred(self) -> Iterator[None]:
        """What runs inside is deferred work: the target's refusal of it is a
        ``DeferredRefusal`` (the batch goes again in order); a lost connection stays the
        driver's error."""
        try:
            yield
        except psycopg.Error as e:
            if self._is_down(e):
                raise
            raise self._refuse(e) from e

    def _copy_ahead(self, copy: _Copy) -> None:
        """New keys straight into the target, ahead of the queued statements."""
        with self._deferred():
            self._copy(*copy, ahead=True)

    def _ready(self) -> None:
        """Before a statement of its own: the answer to what was sent without waiting is read,
        then the postponed copy and the queued statements go, in that order."""
        self._settle()
        if self._head is not None:
            head, self._head = self._head, None
            self._copy_ahead(head)
        if self._tail:
            self._send_tail(wait=True)

    def _send_later(self) -> None:
        if self._head is not None or self._tail:
            self._settle()
            self._send_tail(wait=False)

    def _send_tail(self, wait: bool) -> None:
        """Send the queued statements in one query (after the postponed copy, whose rows it
        carries when there is one): waiting for the answer, or not (``_settle`` reads it)."""
        statements = "; ".join(self._tail)
        commits = bool(self._tail) and self._tail[-1] == "COMMIT"
        self._tail.clear()
        self._slots.clear()
        conn = self._live()
        if wait:
            with self._deferred(), conn.cursor() as cur:
                cur.execute(statements.encode())
            return
        head, self._head = self._head, None
        if head is not None:
            # One query: the COPY, then the statements; the server runs them after the COPY's
            # end, while the daemon goes on (the COPY's own end is not waited for either).
            table, names, which, rows = head
            statement = "; ".join(
                [f"COPY {table} ({self.key_list(names)}) FROM STDIN"]
                + ([statements] if statements else [])
            )
            with (
                self._deferred(),
                conn.cursor() as cur,
                cur.copy(statement.encode(), writer=_NoWaitWriter(cur)) as copy,
            ):
                self._flight, self._flight_commits = True, commits
                _write_rows(copy, rows, which)
            return
        pgconn = conn.pgconn
        if pgconn.transaction_status == pq.TransactionStatus.IDLE:
            statements = "BEGIN; " + statements
        pgconn.send_query(statements.encode())
        self._flight, self._flight_commits = True, commits
        conn.wait(generators.send(pgconn))

    def _settle(self, block: bool = True) -> bool:
        if self._refusal is not None:
            raise self._refusal
        if not self._flight:
            return True
        conn = self._live()
        pgconn = conn.pgconn
        answers = self._answers
        if block:
            answers.extend(conn.wait(generators.fetch_many(pgconn)))
        else:
            while True:  # what has come, without waiting
                pgconn.consume_input()
                if pgconn.is_busy():
                    return False
                res = pgconn.get_result()
                if res is None:
                    break
                answers.append(res)
        self._flight = False
        try:
            for res in answers:
                if res.status == pq.ExecStatus.FATAL_ERROR:
                    e = psycopg.errors.error_from_result(res, encoding=conn.info.encoding)
                    if self._is_down(e):
                        raise e
                    raise self._refuse(e)
        finally:
            answers.clear()
        if self._flight_commits:
            self._flight_commits = False
            self._stages_new.clear()
        return True

    def _commit_later(self) -> bool:
        if not (self._deferring and self._can_stage):
            self._commit()
            return False
        self._settle()
        self._tail.append("COMMIT")
        self._send_tail(wait=False)
        return True

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self._cursor() as cur:
            cur.execute(sql.encode(), params)  # type: ignore[arg-type]

    def _query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._cursor() as cur:
            cur.execute(sql.encode(), params)  # type: ignore[arg-type]
            return list(cur.fetchall())

    def _commit(self) -> None:
        self._ready()
        self._live().commit()
        self._stages_new.clear()

    def _rollback(self) -> None:
        for made in self._stages_new:  # rolled back with the transaction that made them
            self._stages.pop(made, None)
        self._stages_new.clear()
        flight = self._flight
        self._forget_deferred()
        if self._conn is not None:
            if flight:  # its answer must be read before anything else is sent
                self._conn.wait(generators.fetch_many(self._conn.pgconn))
            self._conn.rollback()

    def _describe(self, exc: BaseException) -> tuple[str, str | None]:
        if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
            d = exc.diag
            text = d.message_primary or ""
            if d.message_detail:
                text += f" ({d.message_detail})"
            return text, d.column_name
        return super()._describe(exc)

    # --- names, catalog, state ----------------------------------------------------------------

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def _literal(self, value: Any) -> str:
        assert self._conn is not None
        return pgsql.Literal(value).as_string(self._conn)

    def _catalog(self, target: TargetTable) -> dict[str, str] | None:
        rows = self._query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') "
            "AND a.attnum > 0 AND NOT a.attisdropped",
            (target.schema, target.table),
        )
        if not rows:
            exists = self._query(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (target.schema, target.table),
            )
            if not exists:
                return None
        return {str(name): normalize(str(t)) for name, t in rows}

    def _create_schema(self, schema: str) -> None:
        self._execute(f"CREATE SCHEMA IF NOT EXISTS {self.quote(schema)}")

    def _state_table(self) -> str:
        return f"{self.quote(self.options.state_schema)}.{POSITIONS_TABLE}"

    def _ensure_state(self) -> None:
        exists = self._query("SELECT to_regclass(%s)", (self._state_table(),))
        if exists and exists[0][0] is not None:
            return
        self._create_schema(self.options.state_schema)
        self._execute(
            f"CREATE TABLE IF NOT EXISTS {self._state_table()} (pipeline text PRIMARY KEY, "
            "position json NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
        )
        self._commit()

    def _save_position(self, text: str) -> None:
        if self._deferring and self._can_stage:
            conn = self._live()
            self._tail.append(
                f"INSERT INTO {self._state_table()} (pipeline, position, updated_at) VALUES "
                f"({pgsql.Literal(self.pipeline).as_string(conn)}, "
                f"{pgsql.Literal(text).as_string(conn)}, now()) ON CONFLICT (pipeline) DO UPDATE "
                "SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at"
            )
            return
        self._execute(
            f"INSERT INTO {self._state_table()} (pipeline, position, updated_at) "
            "VALUES (%s, %s, now()) ON CONFLICT (pipeline) DO UPDATE "
            "SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
            (self.pipeline, text),
        )

    def _load_position(self) -> str | None:
        rows = self._query(
            f"SELECT position::text FROM {self._state_table()} WHERE pipeline = %s",
            (self.pipeline,),
        )
        return str(rows[0][0]) if rows else None

    # --- statements ---------------------------------------------------------------------------

    def _upsert(self, plan: TablePlan, rows: list[list[Any]], mask: tuple[int, ...]) -> None:
        which = [i for i in range(len(plan.names)) if i not in mask]
        if len(rows) >= self.config.copy_min_rows and self._can_stage:
            stage = self._stage([plan.names[i] for i in which], [plan.types[i] for i in which])
            statement = plan.sql.get(("upsert_stage", mask, stage))
            if statement is None:
                statement = plan.sql[("upsert_stage", mask, stage)] = (
                    self._upsert_sql(plan, which, stage) + f"; TRUNCATE {stage}"
                )
            self._copy(stage, *self._columns(plan, which), rows, ahead=True)
            self._later(statement)
            return
        if any(plan.types[i].endswith("[]") for i in which):
            # unnest would flatten array values: one row per statement, pipelined.
            statement = plan.sql.get(("upsert1", mask))
            if statement is None:
                statement = plan.sql[("upsert1", mask)] = self._upsert_sql(plan, which, "row")
            with self._cursor() as cur:
                cur.executemany(statement.encode(), [[r[i] for i in which] for r in rows])
            return
        statement = plan.sql.get(("upsert", mask))
        if statement is None:
            statement = plan.sql[("upsert", mask)] = self._upsert_sql(plan, which, "arrays")
        for start in range(0, len(rows), _MAX_ROWS):
            chunk = rows[start : start + _MAX_ROWS]
            self._execute(statement, [[r[i] for r in chunk] for i in which])

    def _insert(self, plan: TablePlan, rows: list[list[Any]], mask: tuple[int, ...]) -> None:
        which = [i for i in range(len(plan.names)) if i not in mask]
        pause = self._fresh_pause.get(plan.target, 0)
        if len(rows) < self.config.copy_min_rows or pause:
            if pause:
                self._fresh_pause[plan.target] = pause - 1
            self._upsert(plan, rows, mask)
            return
        if self._deferring and self._can_stage:
            # Without a savepoint and ahead of the queued statements (see the module's
            # docstring): the first group heads the commit's query, any other goes now.
            copy = (self.qualified(plan.target), *self._columns(plan, which), rows)
            if self._head is None:
                self._head = copy
            else:
                self._copy_ahead(copy)
            return
        self._execute("SAVEPOINT cdc_insert")
        try:
            self._copy(self.qualified(plan.target), *self._columns(plan, which), rows)
        except psycopg.errors.UniqueViolation:
            # A key the source calls new is in the target: upsert them all instead.
            self._execute("ROLLBACK TO SAVEPOINT cdc_insert")
            self._fresh_pause[plan.target] = FRESH_PAUSE
            self._upsert(plan, rows, mask)
            return
        except psycopg.errors.FeatureNotSupported:
            # COPY FROM into a table under row-level security: never again for this table
            self._execute("ROLLBACK TO SAVEPOINT cdc_insert")
            self._fresh_pause[plan.target] = 2**62
            self._upsert(plan, rows, mask)
            return
        self._execute("RELEASE SAVEPOINT cdc_insert")

    def _stage(self, names: list[str], types: list[str]) -> str:
        """A staging table of these columns (made on first use) that no queued statement reads:
        while deferring, each call gives the next one of the shape."""
        shape = (tuple(names), tuple(types))
        slot = self._slots.get(shape, 0)
        name = self._stages.get((*shape, slot))
        if name is None:
            name = self.quote(f"cdc_stage_{self._stage_seq}")
            self._stage_seq += 1
            cols = ", ".join(f"{self.quote(n)} {t}" for n, t in zip(*shape, strict=True))
            # (sends what is queued first, which frees the slots taken so far)
            self._execute(f"CREATE TEMPORARY TABLE {name} ({cols})")
            # pg_temp: the session's own schema, never a user's table of the same name
            name = f"pg_temp.{name}"
            self._stages[(*shape, slot)] = name
            self._stages_new.append((*shape, slot))
        if self._deferring:  # taken until the queue is sent
            self._slots[shape] = max(self._slots.get(shape, 0), slot + 1)
        return name

    def _copy(
        self,
        table: str,
        names: list[str],
        which: list[int] | None,
        rows: list[list[Any]],
        ahead: bool = False,
    ) -> None:
        """``rows`` (their ``which`` items, all when None) into the columns ``names`` of
        ``table`` by COPY, formatted by psycopg. ``ahead``: before the queued statements, which
        must not be concerned (a staging table none of them reads, new keys none of them
        writes; see the module's docstring)."""
        statement = f"COPY {table} ({self.key_list(names)}) FROM STDIN"
        if ahead:
            self._settle()
            cursor = self._live().cursor()
        else:
            cursor = self._cursor()
        with cursor as cur, cur.copy(statement.encode()) as copy:
            _write_rows(copy, rows, which)

    @staticmethod
    def _columns(plan: TablePlan, which: list[int]) -> tuple[list[str], list[int] | None]:
        """The names of ``which`` columns, and ``which`` itself unless it is all of them."""
        whole = len(which) == len(plan.names)
        return [plan.names[i] for i in which], None if whole else which

    def _upsert_sql(self, plan: TablePlan, which: list[int], source: str) -> str:
        """One statement for many rows (``source`` ``"arrays"``: one array parameter per
        column, unnested; a staging table's name: its rows), or for one row (``"row"``)."""
        names = [plan.names[i] for i in which]
        if source == "arrays":
            arrays = ", ".join(f"%s::{plan.types[i]}[]" for i in which)
            rows = f"SELECT * FROM unnest({arrays})"
        elif source == "row":
            rows = "VALUES (" + ", ".join(f"%s::{plan.types[i]}" for i in which) + ")"
        else:
            rows = f"SELECT {self.key_list(names)} FROM {source}"
        keys = set(plan.key_names)
        update = ", ".join(
            f"{self.quote(c)} = EXCLUDED.{self.quote(c)}" for c in names if c not in keys
        )
        action = f"DO UPDATE SET {update}" if update else "DO NOTHING"
        return (
            f"INSERT INTO {self.qualified(plan.target)} ({self.key_list(names)}) {rows}"
            f" ON CONFLICT ({self.key_list(plan.key_names)}) {action}"
        )

    def _delete(self, plan: TablePlan, keys: list[list[Any]]) -> None:
        if (
            len(keys) >= self.config.copy_min_rows
            and len(plan.key_pos) == 1
            and self._can_stage
            and self._deferring
        ):
            # = ANY of an array made from the staging table: an index scan of the key, whatever
            # the planner guesses of the (never analyzed) staging table, which a join of the two
            # gets wrong (it read the whole target table: twice the target's CPU on W1)
            name = plan.key_names[0]
            stage = self._stage([name], [plan.types[plan.key_pos[0]]])
            statement = plan.sql.get(("delete_stage", stage))
            if statement is None:
                key = self.quote(name)
                statement = plan.sql[("delete_stage", stage)] = (
                    f"DELETE FROM {self.qualified(plan.target)} WHERE {key} = "
                    f"ANY (ARRAY(SELECT {key} FROM {stage})); TRUNCATE {stage}"
                )
            self._copy(stage, [name], None, keys, ahead=True)
            self._later(statement)
            return
        statement = plan.sql.get("delete")
        if statement is None:
            arrays = ", ".join(f"%s::{plan.types[i]}[]" for i in plan.key_pos)
            statement = plan.sql["delete"] = (
                f"DELETE FROM {self.qualified(plan.target)} WHERE "
                f"({self.key_list(plan.key_names)}) IN (SELECT * FROM unnest({arrays}))"
            )
        for start in range(0, len(keys), _MAX_ROWS):
            chunk = keys[start : start + _MAX_ROWS]
            self._execute(statement, [[k[j] for k in chunk] for j in range(len(plan.key_pos))])

    def _update_row(
        self, plan: TablePlan, key: list[Any], row: list[Any], mask: tuple[int, ...]
    ) -> bool:
        which = [i for i in range(len(plan.names)) if i not in mask]
        sets = ", ".join(f"{self.quote(plan.names[i])} = %s::{plan.types[i]}" for i in which)
        where = " AND ".join(
            f"{self.quote(plan.names[i])} = %s::{plan.types[i]}" for i in plan.key_pos
        )
        with self._cursor() as cur:
            cur.execute(
                f"UPDATE {self.qualified(plan.target)} SET {sets} WHERE {where}".encode(),
                [*(row[i] for i in which), *key],
            )
            return cur.rowcount > 0

    def _truncate(self, target: TargetTable) -> None:
        self._execute(f"TRUNCATE {self.qualified(target)}")

    def _alter_type(self, target: TargetTable, column: str, sql_type: str) -> str:
        c = self.quote(column)
        return f"ALTER TABLE {self.qualified(target)} ALTER COLUMN {c} TYPE {sql_type}"
