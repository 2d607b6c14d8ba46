"""Microbenchmark of binlog row decoding: rows/s of python-mysql-replication alone (the bench's
ceiling), of the source's python path (the library + the converters) and of its native path (the
compiled ``cdc._native.RowsDecoder``), over the same W1 changes on MariaDB or Oracle MySQL.

Each loop is what the source does from the socket to converted rows, without the assembler and
the encoder: a ``BinLogStreamReader`` reads the events from the start of the load to its end,
and the rows of every rows event are decoded (``sources/mysql/_rows.py``):

- ``python-mysql-replication``: ``len(ev.rows)``, the library's own parse (``bench._ceilings``);
- ``python``: ``_rows.python_rows``, the library's parse and then each column's converter;
- ``native``: ``RowsDecoders.rows`` with the compiled decoder of each table map.

    PYTHONPATH=. python bench/micro_binlog.py [--flavour mariadb|mysql] [--scale 0.1] [--repeat 3]

Prints the best of ``--repeat`` runs per loop: wall-clock rows/s (the server sends the binlog on
the other core) and rows per CPU second of this process, after checking that the python and the
native paths give the same rows. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from typing import Any

from bench import _ceilings as ceil
from bench import _workloads as wl
from cdc.sources.mysql import _rows
from cdc.sources.mysql._server import binlog_status_sql, parse_version
from scratch.binlog_rows import rows_events

SERVER_ID = 4242


def _decode_all(my: Any, db: str, start: tuple[str, int], native: bool) -> tuple[int, list[Any]]:
    """Read the binlog from ``start`` to its end as the source would; (rows, the rows)."""
    out = [
        decoders.rows(ev, v, dec, "bench")
        for ev, v, decoders, dec in rows_events(my, db, start, server_id=SERVER_ID, native=native)
    ]
    return sum(len(r) for r in out), out


def _best(run: Callable[[], int], repeat: int) -> tuple[float, float, int]:
    """(best wall s, best cpu s, rows) of ``repeat`` runs."""
    walls, cpus, rows = [], [], 0
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        rows = run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavour", choices=["mariadb", "mysql"], default="mariadb")
    ap.add_argument("--scale", type=float, default=0.1, help="W1's size (1: 1.2M changes)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    from scratch.mariadb import start_mariadb
    from scratch.mysql import start_mysql

    my = (start_mysql if a.flavour == "mysql" else start_mariadb)(
        settings={"innodb_buffer_pool_size": "256M"}
    )
    try:
        version = str(my.sql("SELECT VERSION()")[0][0])
        mariadb = "mariadb" in version.lower()
        status = binlog_status_sql(mariadb, parse_version(version))
        db = "micro"
        my.create_database(db)
        conn = my.connect(db)
        if not mariadb:
            with conn.cursor() as cur:
                cur.execute("SET SESSION cte_max_recursion_depth = 1000000")
        wl.my_run(conn, wl.MYSQL_TABLES)
        row = my.sql(status)[0]
        start = (str(row[0]), int(row[1]))
        sizes = wl.Sizes.at(a.scale)
        wl.my_run(conn, wl.my_w1(sizes, 0, wl.mariadb_seq if mariadb else wl.mysql_seq))
        conn.close()
        expected = sizes.w1_changes

        _, py_rows = _decode_all(my, db, start, native=False)
        _, native_rows = _decode_all(my, db, start, native=True)
        if py_rows != native_rows:
            raise SystemExit("the python and the native paths gave different rows")
        fallbacks = _rows.native_fallbacks()
        print(f"{version}: W1 at scale {a.scale}, {expected:,} row changes, best of {a.repeat}")
        print(f"{'loop':<26} {'rows/s (wall)':>14} {'rows/cpu s':>12}")
        loops: dict[str, Callable[[], int]] = {
            "python-mysql-replication": lambda: ceil.python_mysql_replication(
                my, start[0], start[1], SERVER_ID
            )[1],
            "cdc python path": lambda: _decode_all(my, db, start, native=False)[0],
            "cdc native path": lambda: _decode_all(my, db, start, native=True)[0],
        }
        for name, run in loops.items():
            wall, cpu, rows = _best(run, a.repeat)
            if rows != expected:
                raise SystemExit(f"{name} read {rows} rows, expected {expected}")
            print(f"{name:<26} {rows / wall:>14,.0f} {rows / cpu:>12,.0f}")
        if _rows.native_fallbacks() != fallbacks or fallbacks:
            print(f"(the native path handed {_rows.native_fallbacks()} events to the library)")
    finally:
        my.stop()
        shutil.rmtree(my.base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
