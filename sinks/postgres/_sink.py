"""The Postgres target: psycopg 3, one connection, multi-row statements with typed parameters.

Every parameter is cast to its column's type in the statement (``%s::numeric(10,2)``): the
converters send temporal values as text in Postgres' own syntax, and the casts make a multi-row
VALUES list take the column types rather than guess them from the first row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql as pgsql

from cdc.sinks._sql._sink import POSITIONS_TABLE, SqlTarget, TablePlan, TargetTable
from cdc.sinks._sql._types import normalize
from cdc.sinks.postgres.config import PostgresSinkConfig

# Postgres takes at most 65535 parameters per statement; rows per statement stay below that.
_MAX_PARAMS = 60000
_MAX_ROWS = 1000


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
        if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
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
        cols = [i for i in range(len(plan.names)) if i not in mask] if mask else None
        per = max(1, min(_MAX_ROWS, _MAX_PARAMS // max(1, len(plan.names))))
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            key = ("upsert", len(chunk), mask)
            statement = plan.sql.get(key)
            if statement is None:
                statement = plan.sql[key] = self._upsert_sql(plan, len(chunk), cols)
            if cols is None:
                params = [v for row in chunk for v in row]
            else:
                params = [row[i] for row in chunk for i in cols]
            self._execute(statement, params)

    def _upsert_sql(self, plan: TablePlan, n: int, cols: list[int] | None) -> str:
        which = list(range(len(plan.names))) if cols is None else cols
        one = "(" + ", ".join(f"%s::{plan.types[i]}" for i in which) + ")"
        names = [plan.names[i] for i in which]
        keys = set(plan.key_names)
        update = ", ".join(
            f"{self.quote(c)} = EXCLUDED.{self.quote(c)}" for c in names if c not in keys
        )
        action = f"DO UPDATE SET {update}" if update else "DO NOTHING"
        return (
            f"INSERT INTO {self.qualified(plan.target)} ({self.key_list(names)}) VALUES "
            + ", ".join([one] * n)
            + f" ON CONFLICT ({self.key_list(plan.key_names)}) {action}"
        )

    def _delete(self, plan: TablePlan, keys: list[list[Any]]) -> None:
        width = len(plan.key_pos)
        per = max(1, min(_MAX_ROWS, _MAX_PARAMS // width))
        types = [plan.types[i] for i in plan.key_pos]
        one = "(" + ", ".join(f"%s::{t}" for t in types) + ")"
        for start in range(0, len(keys), per):
            chunk = keys[start : start + per]
            key = ("delete", len(chunk))
            statement = plan.sql.get(key)
            if statement is None:
                statement = plan.sql[key] = (
                    f"DELETE FROM {self.qualified(plan.target)} WHERE "
                    f"({self.key_list(plan.key_names)}) IN ({', '.join([one] * len(chunk))})"
                )
            self._execute(statement, [v for k in chunk for v in k])

    def _truncate(self, target: TargetTable) -> None:
        self._execute(f"TRUNCATE {self.qualified(target)}")

    def _alter_type(self, target: TargetTable, column: str, sql_type: str) -> str:
        c = self.quote(column)
        return f"ALTER TABLE {self.qualified(target)} ALTER COLUMN {c} TYPE {sql_type}"
