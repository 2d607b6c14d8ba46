"""The MySQL/MariaDB target: pymysql, one connection, ``executemany`` (pymysql folds an
``INSERT ... VALUES`` into multi-row statements of up to 1 MB).

The session is strict (``STRICT_ALL_TABLES``: a value that does not fit is an error, never
silently cut) and in UTC (the ZonedTimestamp converters give UTC ``DATETIME`` literals).
MySQL commits implicitly before any DDL: a new table version met inside a source transaction
that spans several batches commits the part of it applied so far (the apply is idempotent, so a
crash there repeats it harmlessly; other sessions may see that part alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pymysql

from cdc.sinks._sql._sink import POSITIONS_TABLE, SqlTarget, TablePlan, TargetTable
from cdc.sinks._sql._types import normalize
from cdc.sinks.mysql.config import MySqlSinkConfig

# Client and server error codes that mean the server is unreachable or the session is gone
# (a retry on a new connection may succeed): can't connect, gone away, lost connection,
# server shutdown, connection killed, lock wait timeout, deadlock, inactivity disconnect.
_DOWN = {2002, 2003, 2006, 2013, 2055, 1053, 1927, 1205, 1213, 4031}
_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO"
_MAX_ROWS = 1000


class MySqlTarget(SqlTarget):
    dialect = "mysql"
    label = "mysql target"

    def __init__(self, config: MySqlSinkConfig, pipeline: str) -> None:
        super().__init__(config, pipeline, config.database)
        self.config = config
        self._conn: Any = None

    # --- connection -------------------------------------------------------------------------

    def _connect(self) -> None:
        c = self.config
        self._conn = pymysql.connect(
            host=c.host,
            port=c.port,
            user=c.user,
            password=c.password,
            autocommit=False,
            charset="utf8mb4",
            connect_timeout=10,
            init_command=f"SET SESSION sql_mode = '{_SQL_MODE}', time_zone = '+00:00'",
        )

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _is_down(self, exc: BaseException) -> bool:
        if isinstance(exc, pymysql.err.InterfaceError):
            return True
        if isinstance(exc, pymysql.err.MySQLError) and exc.args:
            return exc.args[0] in _DOWN
        return isinstance(exc, OSError | ConnectionError)

    def _cursor(self) -> Any:
        if self._conn is None:
            raise pymysql.err.InterfaceError(0, "the connection is closed")
        return self._conn.cursor()

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self._cursor() as cur:
            cur.execute(sql, params)

    def _query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def _commit(self) -> None:
        self._conn.commit()

    def _rollback(self) -> None:
        if self._conn is not None:
            self._conn.rollback()

    def _describe(self, exc: BaseException) -> tuple[str, str | None]:
        if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2:
            text = f"{exc.args[1]} (error {exc.args[0]})"
            column = None
            marker = "column '"
            if marker in text:
                column = text.split(marker, 1)[1].split("'", 1)[0]
            return text, column
        return super()._describe(exc)

    # --- names, catalog, state ----------------------------------------------------------------

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def _literal(self, value: Any) -> str:
        return str(self._conn.escape(value))

    def _catalog(self, target: TargetTable) -> dict[str, str] | None:
        rows = self._query(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (target.schema, target.table),
        )
        if not rows:
            return None
        return {str(name): normalize(str(t)) for name, t in rows}

    def same_type(self, have: str, want: str) -> bool:
        return _normalize(have) == _normalize(want)

    def _create_schema(self, schema: str) -> None:
        self._execute(f"CREATE DATABASE IF NOT EXISTS {self.quote(schema)} CHARACTER SET utf8mb4")

    def _state_table(self) -> str:
        return f"{self.quote(self.options.state_schema)}.{POSITIONS_TABLE}"

    def _ensure_state(self) -> None:
        self._create_schema(self.options.state_schema)
        self._execute(
            f"CREATE TABLE IF NOT EXISTS {self._state_table()} (pipeline varchar(255) NOT NULL "
            "PRIMARY KEY, position longtext NOT NULL, updated_at datetime(6) NOT NULL) "
            "ENGINE=InnoDB"
        )
        self._commit()

    def _save_position(self, text: str) -> None:
        self._execute(
            f"INSERT INTO {self._state_table()} (pipeline, position, updated_at) "
            "VALUES (%s, %s, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE "
            "position = VALUES(position), updated_at = VALUES(updated_at)",
            (self.pipeline, text),
        )

    def _load_position(self) -> str | None:
        rows = self._query(
            f"SELECT position FROM {self._state_table()} WHERE pipeline = %s", (self.pipeline,)
        )
        return str(rows[0][0]) if rows else None

    # --- statements ---------------------------------------------------------------------------

    def _upsert(self, plan: TablePlan, rows: list[list[Any]], mask: tuple[int, ...]) -> None:
        which = [i for i in range(len(plan.names)) if i not in mask]
        key = ("upsert", mask)
        statement = plan.sql.get(key)
        if statement is None:
            names = [plan.names[i] for i in which]
            keys = set(plan.key_names)
            update = ", ".join(
                f"{self.quote(c)} = VALUES({self.quote(c)})" for c in names if c not in keys
            )
            if not update:  # every column is in the key: a duplicate changes nothing
                k = self.quote(plan.key_names[0])
                update = f"{k} = {k}"
            statement = plan.sql[key] = (
                f"INSERT INTO {self.qualified(plan.target)} ({self.key_list(names)}) VALUES ("
                + ", ".join(["%s"] * len(names))
                + f") ON DUPLICATE KEY UPDATE {update}"
            )
        params = rows if not mask else [[row[i] for i in which] for row in rows]
        with self._cursor() as cur:
            cur.executemany(statement, params)

    def _delete(self, plan: TablePlan, keys: list[list[Any]]) -> None:
        width = len(plan.key_pos)
        one = "(" + ", ".join(["%s"] * width) + ")"
        for start in range(0, len(keys), _MAX_ROWS):
            chunk = keys[start : start + _MAX_ROWS]
            self._execute(
                f"DELETE FROM {self.qualified(plan.target)} WHERE "
                f"({self.key_list(plan.key_names)}) IN ({', '.join([one] * len(chunk))})",
                [v for k in chunk for v in k],
            )

    def _update_row(
        self, plan: TablePlan, key: list[Any], row: list[Any], mask: tuple[int, ...]
    ) -> bool:
        which = [i for i in range(len(plan.names)) if i not in mask]
        sets = ", ".join(f"{self.quote(plan.names[i])} = %s" for i in which)
        where = " AND ".join(f"{self.quote(plan.names[i])} = %s" for i in plan.key_pos)
        with self._cursor() as cur:
            # the key changes, so a row found is a row changed (MySQL counts only those)
            n = cur.execute(
                f"UPDATE {self.qualified(plan.target)} SET {sets} WHERE {where}",
                [*(row[i] for i in which), *key],
            )
            return bool(n)

    def _truncate(self, target: TargetTable) -> None:
        # TRUNCATE would commit the transaction (it is DDL in MySQL): DELETE keeps it atomic.
        self._execute(f"DELETE FROM {self.qualified(target)}")

    def _alter_type(self, target: TargetTable, column: str, sql_type: str) -> str:
        c = self.quote(column)
        return f"ALTER TABLE {self.qualified(target)} MODIFY COLUMN {c} {sql_type}"


def _normalize(column_type: str) -> str:
    t = normalize(column_type)
    return "json" if t == "longtext" else t  # MariaDB's json is a longtext (with a check)
