"""Where each ``type:`` of source and sink lives, and what a plugin module exports.

A source plugin module exports ``Config`` (a pydantic model whose ``type`` field is a Literal)
and ``open_source(config, context)`` (``SourcePlugin``), optionally ``check_source`` for
``cdc check``; a sink plugin module exports ``Config`` and ``open_sink(config, context)``
(``SinkPlugin``). Config modules import no driver, so validating a file never needs psycopg,
pymysql or a broker client. docs/architecture.md says where a new one goes.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol, cast

from cdc.model import PipelineContext, Problem, RowSink, Sink, Source

SOURCES: dict[str, str] = {
    "postgres": "cdc.sources.postgres",
    "mysql": "cdc.sources.mysql",
    "log": "cdc.sources.log",
}
SINKS: dict[str, str] = {
    "log": "cdc.sinks.log",
    "kafka": "cdc.sinks.kafka",
    "nats": "cdc.sinks.nats",
    "postgres": "cdc.sinks.postgres",
    "mysql": "cdc.sinks.mysql",
}


class PluginConfig(Protocol):
    """What the pipeline reads of any plugin's ``Config``: the ``type`` that selects it."""

    @property
    def type(self) -> str: ...


class SourcePlugin(Protocol):
    """A source plugin module."""

    def open_source(self, config: Any, context: PipelineContext) -> Source:
        """Create the source for ``config`` (this plugin's ``Config``); imports its driver only
        now. It connects lazily or here; either way a failure is a ``SourceError``."""
        ...


class SinkPlugin(Protocol):
    """A sink plugin module."""

    def open_sink(self, config: Any, context: PipelineContext) -> Sink | RowSink:
        """Create (open) the sink for ``config`` (this plugin's ``Config``)."""
        ...


def config_module(kind: str, name: str) -> ModuleType:
    table = SOURCES if kind == "source" else SINKS
    return importlib.import_module(table[name] + ".config")


def plugin(kind: str, name: str) -> ModuleType:
    table = SOURCES if kind == "source" else SINKS
    return importlib.import_module(table[name])


def source_plugin(name: str) -> SourcePlugin:
    return cast(SourcePlugin, plugin("source", name))


def sink_plugin(name: str) -> SinkPlugin:
    return cast(SinkPlugin, plugin("sink", name))


def check_source(name: str, config: Any, pipeline: Any) -> Sequence[Problem]:
    """The preflight problems the source plugin's ``check_source`` finds (none if it has none)."""
    module = plugin("source", name)
    check = getattr(module, "check_source", None)  # optional: a plugin may have none
    if check is None:
        return []
    problems: Sequence[Problem] = check(config, pipeline)
    return problems
