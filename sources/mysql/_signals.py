"""The signal table (``source.signal_table``, Debezium's columns id, type, data): where the
watermarks of snapshots while streaming are written, and where Debezium's ``execute-snapshot`` /
``stop-snapshot`` rows come from (read in the binlog).

The binlog has no message records, so a watermark is a row: ``<window>-open``
(``snapshot-window-open``) before a chunk's SELECT and ``<window>-close``
(``snapshot-window-close``) after it, as Debezium's MySQL connector writes them. The rows stay in
the table (Debezium's default ``insert_insert`` strategy), so the daemon needs INSERT there and
nothing more; old rows can be deleted at any time.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import uuid
from collections.abc import Sequence
from typing import Any

import pymysql

from cdc.errors import SourceError
from cdc.incremental import EXECUTE_SNAPSHOT, WINDOW_CLOSE, WINDOW_OPEN, Signal, parse_signal
from cdc.model import Problem
from cdc.sources.mysql._server import Server, quote

_COLUMNS = ("id", "type", "data")
# Debezium's ids of a window's watermark rows: "<window id>-open", "<window id>-close"
_SUFFIXES = {WINDOW_OPEN: "-open", WINDOW_CLOSE: "-close"}


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


class SignalTable:
    """The signal table ``source.signal_table``: recognised in the binlog, written by the
    source (watermarks) and by ``cdc snapshot`` (execute-snapshot requests)."""

    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        self.name = name
        self.db, self.table = name.split(".", 1)
        self.sql_name = f"{quote(self.db)}.{quote(self.table)}"
        self._conn: pymysql.Connection[Any] | None = None

    def matches(self, db: str, table: str) -> bool:
        return db == self.db and table == self.table

    @staticmethod
    def signal(values: dict[str, Any]) -> Signal | None:
        """The snapshot signal of a row inserted into the table (``values``: column name ->
        value, as the binlog gives them); None for a row of another kind. Raises SignalError
        for a snapshot signal of a bad shape."""
        if not all(c in values for c in _COLUMNS):
            return None
        id, kind, data = (_text(values[c]) for c in _COLUMNS)
        suffix = _SUFFIXES.get(kind)
        if suffix is not None:
            id = id.removesuffix(suffix)  # the window, as parse_signal takes it
        return parse_signal(id, kind, data)

    # --- checks -------------------------------------------------------------------------------

    def problems(self) -> list[Problem]:
        """What keeps the source from writing watermarks (blocking): the table missing, without
        Debezium's columns, or not writable by the user, checked by inserting a row in a
        transaction that is rolled back (nothing reaches the binlog); and what makes the chunks
        unsafe (MySQL's binlog_order_commits OFF: a warning)."""
        cols = {
            str(r[0]).lower()
            for r in self.server.all(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (self.db, self.table),
            )
        }
        ddl = (
            f"CREATE TABLE {self.sql_name} (id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT "
            f"NULL, data TEXT); GRANT INSERT ON {self.sql_name} TO the source's user"
        )
        if not cols:
            return [
                Problem(
                    f"signal table {self.name} (source.signal_table) does not exist or the user "
                    f"{self.server.config.user!r} cannot see it",
                    "snapshots while streaming write their watermarks into it",
                    ddl,
                    blocking=True,
                )
            ]
        missing = [c for c in _COLUMNS if c not in cols]
        if missing:
            return [
                Problem(
                    f"signal table {self.name} has no column {', '.join(missing)}",
                    "it needs Debezium's columns id, type, data",
                    ddl,
                    blocking=True,
                )
            ]
        self.server.catalog()
        problems = []
        if not self.server.is_mariadb and str(
            self.server.one("SELECT @@GLOBAL.binlog_order_commits")
        ) in ("0", "OFF"):
            problems.append(
                Problem(
                    "binlog_order_commits is OFF",
                    "a snapshot chunk read while streaming may then miss a transaction written "
                    "to the binlog before its low watermark, and write an older row state",
                    "SET PERSIST binlog_order_commits = ON",
                )
            )
        conn = self.server.connect()
        try:
            cur = conn.cursor()
            cur.execute("START TRANSACTION")
            try:
                cur.execute(
                    f"INSERT INTO {self.sql_name} (id, type, data) VALUES (%s, %s, %s)",
                    (f"cdc-check-{uuid.uuid4().hex}"[:42], "cdc-check", "{}"),
                )
            except pymysql.err.MySQLError as e:
                return [
                    Problem(
                        f"the user {self.server.config.user!r} cannot insert into the signal "
                        f"table {self.name}: {e.args[-1] if e.args else e}",
                        "snapshots while streaming write their watermarks into it",
                        f"GRANT INSERT ON {self.sql_name} TO the source's user",
                        blocking=True,
                    )
                ]
            finally:
                with contextlib.suppress(pymysql.err.MySQLError):
                    cur.execute("ROLLBACK")
        finally:
            conn.close()
        return problems

    # --- writing ------------------------------------------------------------------------------

    def insert(self, id: str, type: str, data: dict[str, Any]) -> None:
        """Insert one signal row (its own transaction, so it reaches the binlog now)."""
        if self._conn is None or not self._conn.open:
            self._conn = self.server.connect()
        try:
            with self._conn.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {self.sql_name} (id, type, data) VALUES (%s, %s, %s)",
                    (id, type, json.dumps(data, separators=(",", ":"))),
                )
        except pymysql.err.MySQLError as e:
            raise SourceError(
                f"cannot write the {type} row into the signal table {self.name}: "
                f"{e.args[-1] if e.args else e}; check that it exists with the columns id, type, "
                f"data and that the user {self.server.config.user!r} has INSERT on it "
                "(docs/source-mysql.md)"
            ) from None

    def watermark(self, window: str, low: bool) -> None:
        """The low (``low``) or high watermark of ``window``: Debezium's ``<id>-open`` /
        ``<id>-close`` row, its data the time it was written."""
        kind = WINDOW_OPEN if low else WINDOW_CLOSE
        field = "openWindowTimestamp" if low else "closeWindowTimestamp"
        now = datetime.datetime.now(datetime.UTC).isoformat()
        self.insert(f"{window}{_SUFFIXES[kind]}", kind, {field: now})

    def request(self, tables: Sequence[str], condition: str | None) -> str:
        """Insert an ``execute-snapshot`` signal for ``tables`` (each restricted by
        ``condition`` when given), as Debezium's tooling writes it; returns its id."""
        data: dict[str, Any] = {"data-collections": list(tables), "type": "incremental"}
        if condition:
            data["additional-conditions"] = [
                {"data-collection": t, "filter": condition} for t in tables
            ]
        id = f"cdc-{uuid.uuid4().hex}"
        self.insert(id, EXECUTE_SNAPSHOT, data)
        return id

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
