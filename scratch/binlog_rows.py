"""A scratch server's rows events read as the MySQL source decodes them (sources/mysql/_rows.py):
for the rows decoders' benchmark (bench/micro_binlog.py) and their differential tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import (
    DeleteRowsEvent,
    TableMapEvent,
    UpdateRowsEvent,
    WriteRowsEvent,
)

from cdc.sources.mysql import _binlog, _rows
from cdc.sources.mysql._schema import SchemaCache, TableVersion
from cdc.sources.mysql._server import Server
from cdc.sources.mysql._tables import Tables
from cdc.sources.mysql.config import MySqlSourceConfig

assert _binlog  # imported for the source's own decoders (TIME, DATE, DATETIME, JSON)


def _connect(**kw: Any) -> Any:
    if "db" in kw:  # the library still uses pymysql's deprecated name
        kw["database"] = kw.pop("db")
    return pymysql.connect(**kw)


def rows_events(
    my: Any,
    db: str,
    start: tuple[str, int],
    *,
    server_id: int,
    native: bool = True,
    adjust_years: bool = False,
) -> Iterator[tuple[Any, TableVersion, _rows.RowsDecoders, _rows.RowsDecoder | None]]:
    """``(rows event, its table version, the decoders, the event's decoder)`` for every rows
    event of ``db`` on the server ``my`` from the binlog position ``start`` to the end of the
    binlog, as the source reads them (``server_id``: this reader's, unique on the server); the
    decoder is None where the rows go to the library. The events are not decoded yet."""
    cfg = MySqlSourceConfig(
        type="mysql",
        host=my.host,
        port=my.port,
        user=my.user,
        password=my.password,
        server_id=server_id,
        tables=[f"{db}.*"],
    )
    server = Server(cfg)
    tables = Tables(server, cfg.tables, SchemaCache("scratch", adjust_years=adjust_years))
    decoders = _rows.RowsDecoders(native=native)
    reader = BinLogStreamReader(
        server.settings(),
        server_id=server_id,
        resume_stream=True,
        blocking=False,
        log_file=start[0],
        log_pos=start[1],
        only_events=[TableMapEvent, WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        only_schemas=[db],
        pymysql_wrapper=_connect,
    )
    versions: dict[int, tuple[TableVersion, _rows.RowsDecoder | None]] = {}
    try:
        for ev in reader:
            if isinstance(ev, TableMapEvent):
                v = tables.binlog_version(ev, "scratch")
                versions[ev.table_id] = (v, decoders.for_table_map(ev, v))
                continue
            v, dec = versions[ev.table_id]
            yield ev, v, decoders, dec
    finally:
        reader.close()
        server.close()
