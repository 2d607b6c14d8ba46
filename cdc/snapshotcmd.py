"""``cdc snapshot``: ask a running pipeline for an incremental snapshot of some of its tables.

The request goes through the source's own change stream (the source plugin's optional
``request_snapshot(config, pipeline, tables, condition) -> request id``), so only a running
daemon acts on it; it is checked before anything is sent. Exit codes: 0 once the request is
with the server, 1 when the daemon is not running or the server refuses (a table without a
primary key, a condition it rejects), 2 for a mistake in the command (unknown pipeline, a table
the pipeline does not capture).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cdc import logs, plugins
from cdc.config import load
from cdc.errors import ConfigError


def run(config_path: str, pipeline: str, tables: list[str], where: str | None) -> int:
    """Check and send the request; prints what happened (see the module for exit codes)."""
    from cdc.cli import _daemon_running

    config = load(config_path)
    logs.add_secrets(logs.secrets_in(config))
    names = [p.name for p in config.pipelines]
    if pipeline not in names:
        raise ConfigError(
            [f"{config_path} has no pipeline {pipeline!r} (it has: {', '.join(names)})"]
        )
    pipe = config.pipelines[names.index(pipeline)]
    src: Any = pipe.source
    request = getattr(plugins.plugin("source", src.type), "request_snapshot", None)
    if request is None:
        raise ConfigError(
            [f"pipeline {pipeline!r}: the {src.type} source takes no snapshot requests"]
        )
    sink_path = getattr(pipe.sink, "path", None)
    if not _daemon_running(config, config_path, sink_path if isinstance(sink_path, Path) else None):
        print(
            f"error: pipeline {pipeline}: the daemon is not running with {config_path}, and "
            "only a running pipeline reads snapshot requests: start it (cdc run -c "
            f"{config_path}), then ask again; nothing was sent",
            file=sys.stderr,
        )
        return 1
    rid = request(src, pipeline, tables, where)
    print(
        f"pipeline {pipeline}: incremental snapshot {rid} of {', '.join(tables)}"
        + (f" WHERE {where}" if where else "")
        + " requested; the running pipeline reads it while streaming (progress: cdc status)"
    )
    return 0
