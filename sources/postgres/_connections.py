"""The two connections a Postgres source holds: the catalog (SQL) and the replication stream."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn

from cdc.errors import SourceError

SESSION_OPTIONS = (
    "-c DateStyle=ISO -c TimeZone=UTC -c extra_float_digits=3 -c IntervalStyle=iso_8601 "
    "-c bytea_output=hex -c lc_monetary=C -c client_encoding=UTF8"
)  # client_encoding: the server converts a LATIN1 (etc.) database's text to UTF-8 for us


class Catalog:
    """The catalog connection, opened on first use and again after it closed (autocommit,
    with the walsender's session settings). ``db``: the database's name once connected."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.db = ""
        self._conn: psycopg.Connection[Any] | None = None

    def connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.dsn, autocommit=True, options=SESSION_OPTIONS)
            except psycopg.OperationalError as e:
                raise SourceError(f"cannot connect to postgres: {str(e).strip()}") from None
            self.db = self._conn.info.dbname
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def connect_replication(dsn: str) -> PGconn:
    """A replication connection (``replication=database``) with the session settings."""
    params: dict[str, Any] = dict(psycopg.conninfo.conninfo_to_dict(dsn))
    params["replication"] = "database"
    params["options"] = SESSION_OPTIONS
    conn = pq.PGconn.connect(psycopg.conninfo.make_conninfo(**params).encode())
    if conn.status != pq.ConnStatus.OK:
        msg = conn.get_error_message().strip()
        conn.finish()
        hint = ""
        if "replication" in msg and ("permission" in msg or "must be" in msg):
            hint = "; grant it with ALTER ROLE <user> REPLICATION"
        raise SourceError(f"cannot open a replication connection to postgres: {msg}{hint}")
    return conn
