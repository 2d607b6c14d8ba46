"""The built-in log as a source (``source: {type: log, path: ...}``): another pipeline's log,
read from this pipeline's own position and followed as it grows (docs/log.md, "The log as a
source")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cdc.model import PipelineContext, Problem, Source
from cdc.sources.log.config import LogSourceConfig

if TYPE_CHECKING:
    from cdc.config import PipelineConfig

Config = LogSourceConfig


def open_source(config: LogSourceConfig, context: PipelineContext) -> Source:
    """The source; it opens the log only in ``batches`` (its writer may not have created it)."""
    from cdc.sources.log._source import LogSource

    return LogSource(config, context.name)


def check_source(config: LogSourceConfig, pipeline: PipelineConfig) -> list[Problem]:
    """``cdc check``: the path exists and is a log this version can read."""
    from cdc.sources.log._source import check

    return check(config)


__all__ = ["Config", "LogSourceConfig", "check_source", "open_source"]


def verify_applied_through(path: Path, offset: int, covers: Callable[[Any], bool]) -> bool:
    """``cdc verify`` through a log: whether a pipeline at log offset ``offset`` has passed the
    source point ``covers`` recognises in the log writer's frame positions."""
    from cdc.sources.log._source import applied_through

    return applied_through(path, offset, covers)
