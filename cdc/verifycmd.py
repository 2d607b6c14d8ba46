"""``cdc verify -c FILE PIPELINE [TABLE...]``: the command around ``cdc.verify``'s comparison.

From the config: which databases are compared (a pipeline's database source, or, for a pipeline
reading a log, the database the log's writing pipeline captures, and its database target), which
tables (the captured ones, named as the target sink names them) and when the target has applied
the source through a point (the source plugin's ``verify_reached``, through the log's frames for
a log source). The drivers stay in the source plugins (``verify_side``).
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from cdc import plugins
from cdc.verify import SqlSide, TableRef, Verifier, VerifyError, report

TARGETS = ("postgres", "mysql")  # sink types verify compares against
POSITIONS_TABLE = "cdc_positions"  # the database targets' state table (sinks/_sql)


def _side(kind: str, config: Any, label: str) -> SqlSide:
    """The verify side of a database a source or sink config names (the source plugin of that
    database kind holds the driver code); connects."""
    module: Any = plugins.plugin("source", kind)
    if kind == "postgres":
        side: SqlSide = module.verify_side(config.dsn, label)
    else:
        side = module.verify_side(config.host, config.port, config.user, config.password, label)
    return side


def target_table(sink: Any, namespace: str, table: str) -> TableRef:
    """Where a database target puts source table ``namespace.table``, by its ``tables`` map,
    ``table_prefix`` and ``schema``/``database`` (as the target sink's ``target_of`` does)."""
    mapped = (getattr(sink, "tables", None) or {}).get(f"{namespace}.{table}")
    schema = getattr(sink, "schema_", None) or getattr(sink, "database", None) or namespace
    if mapped is None:
        return TableRef(schema, (getattr(sink, "table_prefix", "") or "") + table)
    if "." in mapped:
        s, t = mapped.split(".", 1)
        return TableRef(s, t)
    return TableRef(schema, mapped)


def state_table(sink: Any) -> TableRef:
    """The target's table of applied positions (one row per pipeline)."""
    return TableRef(getattr(sink, "state_schema", None) or "cdc", POSITIONS_TABLE)


def captured(kind: str, source_config: Any, side: SqlSide) -> list[TableRef]:
    """The tables the pipeline captures (MySQL's patterns resolved on the server)."""
    if kind == "postgres":
        pg_side: Any = side
        return list(pg_side.selected(source_config))
    lister: Any = side
    out = []
    for t in lister.tables():
        if any(fnmatchcase(str(t), p) for p in source_config.tables):
            out.append(t)
    return sorted(out, key=str)


def _through_log(
    path: Path, reached: Callable[[dict[str, Any] | None, Any], bool]
) -> Callable[[dict[str, Any] | None, Any], bool]:
    """``reached`` for a target fed from the log at ``path``: its applied position is a log
    offset, which has passed the source point when a frame the target passed carries a source
    position at or past it."""
    log_source: Any = plugins.plugin("source", "log")

    def through(applied: dict[str, Any] | None, point: Any) -> bool:
        offset = None if applied is None else applied.get("offset")
        if not isinstance(offset, int):
            return False
        return bool(
            log_source.verify_applied_through(path, offset, lambda pos: reached(pos, point))
        )

    return through


def run(
    config_path: str,
    pipeline: str,
    tables: list[str],
    *,
    max_keys: int = 20,
    timeout_s: float = 120.0,
    chunk: int = 10000,
    say: Callable[[str], None] = print,
) -> int:
    """``cdc verify``: 0 when every table is equal, 1 when not; VerifyError (exit 2) for a
    usage or configuration problem."""
    from cdc.config import load

    config = load(config_path)
    found = [p for p in config.pipelines if p.name == pipeline]
    if not found:
        names = ", ".join(p.name for p in config.pipelines)
        raise VerifyError(f"no pipeline {pipeline!r} in {config_path} (it has: {names})")
    p = found[0]
    src: Any = p.source
    sink: Any = p.sink
    via_log: Path | None = None
    only: set[str] | None = None
    if src.type == "log":
        # Through the hub: the database is the one the pipeline writing this log captures.
        via_log, only = Path(src.path), (None if src.tables is None else set(src.tables))
        sinks: list[tuple[Any, Any]] = [(q, q.sink) for q in config.pipelines]
        writers = [q for q, k in sinks if k.type == "log" and Path(k.path) == via_log]
        if not writers:
            raise VerifyError(
                f"pipeline {pipeline!r} reads the log {via_log}, which no pipeline of "
                f"{config_path} writes: verify compares the database the writing pipeline "
                "captures, so give a config holding both pipelines"
            )
        src = writers[0].source
    if src.type not in TARGETS:
        raise VerifyError(
            f"pipeline {pipeline!r} reads a {src.type} source: verify compares a database "
            "source (postgres, mysql) with a database target"
        )
    if sink.type not in TARGETS:
        raise VerifyError(
            f"pipeline {pipeline!r} writes to a {sink.type} sink: verify compares a database "
            "source with a database target (sink type postgres or mysql)"
        )
    source = _side(src.type, src, "source")
    try:
        target = _side(sink.type, sink, "target")
        try:
            all_tables = [
                t for t in captured(src.type, src, source) if only is None or str(t) in only
            ]
            chosen = all_tables
            if tables:
                by_name = {str(t): t for t in all_tables}
                unknown = [t for t in tables if t not in by_name]
                if unknown:
                    raise VerifyError(
                        f"table {unknown[0]!r} is not captured by pipeline {pipeline!r}; "
                        f"its tables: {', '.join(by_name) or 'none'}"
                    )
                chosen = [by_name[t] for t in tables]
            reached = plugins.plugin("source", src.type).verify_reached
            if via_log is not None:
                reached = _through_log(via_log, reached)
            verifier = Verifier(
                source,
                target,
                pipeline,
                state_table(sink),
                reached,
                chunk=chunk,
                timeout_s=timeout_s,
                say=say,
            )
            pairs = [(t, target_table(sink, t.schema, t.table)) for t in chosen]
            results = verifier.run(pairs)
            return report(results, say, max_keys, verifier.behind)
        finally:
            target.close()
    finally:
        source.close()
