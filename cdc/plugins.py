"""Where each ``type:`` of source and sink lives.

A plugin module exports ``Config`` (a pydantic model whose ``type`` field is a Literal) and
``open_source(config, pipeline)`` or ``open_sink(config, pipeline)``. Config modules import no
driver, so validating a file never needs psycopg, pymysql or a broker client.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SOURCES: dict[str, str] = {
    "postgres": "sources.postgres",
    "mysql": "sources.mysql",
}
SINKS: dict[str, str] = {
    "log": "sinks.log",
    "kafka": "sinks.kafka",
    "nats": "sinks.nats",
}


def config_module(kind: str, name: str) -> ModuleType:
    table = SOURCES if kind == "source" else SINKS
    return importlib.import_module(table[name] + ".config")


def plugin(kind: str, name: str) -> ModuleType:
    table = SOURCES if kind == "source" else SINKS
    return importlib.import_module(table[name])
