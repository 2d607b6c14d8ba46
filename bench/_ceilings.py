"""What the pipeline is measured against, over the same changes in the same run.

Each function returns the wall time in seconds of one pass; the caller divides the rows by it.
The tools write to /dev/null: the ceiling is reading and decoding, with nothing stored.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from scratch._common import find_binary


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return took


def pg_recvlogical(pg: Any, db: str, slot: str, publication: str, end_lsn: str) -> float:
    """pgoutput (protocol 1) from ``slot`` up to ``end_lsn``, as a Postgres client receives it."""
    return _timed(
        [
            str(pg.bindir / "pg_recvlogical"),
            "-d",
            pg.dsn(db),
            "-S",
            slot,
            "--start",
            "-E",
            end_lsn,
            "--no-loop",
            "-o",
            "proto_version=1",
            "-o",
            f"publication_names={publication}",
            "-f",
            "/dev/null",
        ]
    )


def pg_copy(pg: Any, db: str, table: str) -> float:
    """COPY TO STDOUT of the table (what a snapshot must at least read and transfer)."""
    return _timed(
        [str(pg.bindir / "psql"), "-X", "-q", "-d", pg.dsn(db), "-c", f"COPY {table} TO STDOUT"]
    )


def mariadb_binlog(my: Any, file: str, pos: int, tool: list[str] | None = None) -> float:
    """mariadb-binlog (or ``tool``, the server's own mysqlbinlog) reading the binlog from the
    server from file:pos to its end, rows decoded to text (--verbose)."""
    if tool is None:
        tool = [find_binary("mariadb-binlog", ["/usr/bin/mariadb-binlog", "/usr/bin/mysqlbinlog"])]
    return _timed(
        [
            *tool,
            "--no-defaults",
            "--read-from-remote-server",
            f"--host={my.host}",
            f"--port={my.port}",
            f"--user={my.user}",
            f"--start-position={pos}",
            "--to-last-log",
            "--verbose",
            "--base64-output=DECODE-ROWS",
            file,
        ]
    )


def mariadb_select(my: Any, db: str, table: str) -> float:
    """SELECT * streamed to /dev/null by the mariadb client (--quick: no buffering)."""
    tool = find_binary("mariadb", ["/usr/bin/mariadb", "/usr/bin/mysql"])
    return _timed(
        [
            tool,
            "--no-defaults",
            f"--host={my.host}",
            f"--port={my.port}",
            f"--user={my.user}",
            "--quick",
            "--batch",
            "-e",
            f"SELECT * FROM {table}",
            db,
        ]
    )


def python_mysql_replication(my: Any, file: str, pos: int, server_id: int) -> tuple[float, int]:
    """BinLogStreamReader parsing the row events from file:pos to the end, no encoding.

    Returns the time and the rows it parsed (a check that it saw the same changes)."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    t0 = time.perf_counter()
    reader = BinLogStreamReader(
        connection_settings={
            "host": my.host,
            "port": my.port,
            "user": my.user,
            "passwd": my.password,
        },
        server_id=server_id,
        log_file=file,
        log_pos=pos,
        resume_stream=True,
        blocking=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
    )
    rows = 0
    try:
        for event in reader:
            rows += len(event.rows)
    finally:
        reader.close()
    return time.perf_counter() - t0, rows
