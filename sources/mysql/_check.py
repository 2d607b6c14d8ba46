"""Preflight checks of a MySQL/MariaDB server for one pipeline (``cdc check``).

The binlog settings and privileges are the source's own preflight (``MySqlSource.check``, also
run before streaming); this adds what only matters before a first start: that the table patterns
match tables the user can read.
"""

from __future__ import annotations

import fnmatch

import pymysql

from cdc.errors import SourceError
from cdc.model import Problem
from cdc.sources.mysql._source import MySqlSource
from cdc.sources.mysql.config import MySqlSourceConfig


def check(config: MySqlSourceConfig, pipeline_name: str) -> list[Problem]:
    """Every problem that would keep this pipeline's source from working; [] when none."""
    source = MySqlSource(config, pipeline_name, pipeline_name)
    try:
        problems = source.check()
        tables = source.server.all(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE'"
        )
    except SourceError as e:
        return [Problem(str(e), fix="check the source's host, port, user and password")]
    except pymysql.err.MySQLError as e:
        return [Problem(f"cannot read the server's settings: {e.args[-1] if e.args else e}")]
    finally:
        source.close()
    for pattern in config.tables:
        db, table = pattern.split(".", 1)
        if not any(
            fnmatch.fnmatchcase(str(d), db) and fnmatch.fnmatchcase(str(t), table)
            for d, t in tables
        ):
            problems.append(
                Problem(
                    f"table pattern {pattern!r} matches no table the user {config.user!r} can see",
                    fix="create the table, fix the pattern or GRANT SELECT on it",
                )
            )
    return problems
