"""The Postgres target: psycopg 3, one connection, statements over many rows.

Rows go as one array per column, unnested in the statement (``INSERT ... SELECT * FROM
unnest(%s::bigint[], %s::numeric(12,2)[], ...) ON CONFLICT ...``): the statement text is the same
for any number of rows (prepared once by psycopg), and each array is one parameter, which
psycopg's C adapters dump fast (a VALUES list of one placeholder per value cost more to build
than the server took to apply it). Every array is cast to its column's type: the converters send
temporal values as text in Postgres' own syntax. Tables with an array column, which ``unnest``
would flatten, get one row per statement, pipelined by ``executemany``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql as pgsql

from cdc.sinks._sql._sink import POSITIONS_TABLE, SqlTarget, TablePlan, TargetTable
from cdc.sinks._sql._types import normalize
from cdc.sinks.postgres.config import PostgresSinkConfig

# Rows per statement: each column is one array parameter, so a statement's size does not depend
# on its row count; this bounds the memory of one statement.
_MAX_ROWS = 5000


class PostgresTarget(SqlTarget):
    dialect = "postgres"
    label = "postgres target"

    def __init__(self, config: PostgresSinkConfig, pipeline: str) -> None:
        super().__init__(config, pipeline, config.schema_)
        self.config = config
        self._conn: psycopg.Connection[Any] | None = None

    # --- connection -------------------------------------------------------------------------

    def _connect(self) -> None:
        self._conn = psycopg.connect(
            self.config.dsn,
            autocommit=False,
            connect_timeout=10,
            application_name=f"cdc target {self.pipeline}"[:63],
            options="-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres",
        )

    def _disconnect(self) -> None:
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
        if self._conn is None:
            raise psycopg.InterfaceError("the connection is closed")
        return self._conn.cursor()

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self._cursor() as cur:
            cur.execute(sql.encode(), params)  # type: ignore[arg-type]

    def _query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._cursor() as cur:
            cur.execute(sql.encode(), params)  # type: ignore[arg-type]
            return list(cur.fetchall())

    def _commit(self) -> None:
        assert self._conn is not None
        self._conn.commit()

    def _rollback(self) -> None:
        if self._conn is not None:
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
        if any(plan.types[i].endswith("[]") for i in which):
            # unnest would flatten array values: one row per statement, pipelined.
            statement = plan.sql.get(("upsert1", mask))
            if statement is None:
                statement = plan.sql[("upsert1", mask)] = self._upsert_sql(plan, which, False)
            with self._cursor() as cur:
                cur.executemany(statement.encode(), [[r[i] for i in which] for r in rows])
            return
        statement = plan.sql.get(("upsert", mask))
        if statement is None:
            statement = plan.sql[("upsert", mask)] = self._upsert_sql(plan, which, True)
        for start in range(0, len(rows), _MAX_ROWS):
            chunk = rows[start : start + _MAX_ROWS]
            self._execute(statement, [[r[i] for r in chunk] for i in which])

    def _upsert_sql(self, plan: TablePlan, which: list[int], columnar: bool) -> str:
        """One statement for many rows (``columnar``: one array parameter per column, unnested),
        or for one row."""
        names = [plan.names[i] for i in which]
        if columnar:
            arrays = ", ".join(f"%s::{plan.types[i]}[]" for i in which)
            rows = f"SELECT * FROM unnest({arrays})"
        else:
            rows = "VALUES (" + ", ".join(f"%s::{plan.types[i]}" for i in which) + ")"
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

    def _truncate(self, target: TargetTable) -> None:
        self._execute(f"TRUNCATE {self.qualified(target)}")

    def _alter_type(self, target: TargetTable, column: str, sql_type: str) -> str:
        c = self.quote(column)
        return f"ALTER TABLE {self.qualified(target)} ALTER COLUMN {c} TYPE {sql_type}"
