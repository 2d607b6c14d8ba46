"""Log output: human-readable lines by default, or one JSON object per line; secrets masked.

Every formatted line (message and traceback) passes through ``redact``, which replaces each secret
value taken from the configuration (passwords, tokens, the password inside a DSN or URL) with
``***``. ``redact`` is also applied to what the daemon publishes in its status file.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

from cdc import status
from cdc.secrets import mask

# What is secret in a configuration, and how it is found: one rule for logs, the status file and
# `cdc validate` (cdc.secrets).
from cdc.secrets import secrets_in as secrets_in

_lock = threading.Lock()
_secrets: list[str] = []


def add_secrets(values: list[str]) -> None:
    """Mask these values in every log line and published status from now on."""
    with _lock:
        new = {v for v in values if v} | set(_secrets)
        _secrets[:] = sorted(new, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every secret registered by ``add_secrets`` masked."""
    return mask(text, _secrets)


def redact_json(node: Any) -> Any:
    if isinstance(node, str):
        return redact(node)
    if isinstance(node, dict):
        return {k: redact_json(v) for k, v in node.items()}
    if isinstance(node, list):
        return [redact_json(v) for v in node]
    return node


def _pipeline(record: logging.LogRecord) -> str | None:
    name = getattr(record, "pipeline", None)
    if name is None and record.thread == threading.get_ident():
        name = status.current_pipeline()
    if name is None and record.threadName and record.threadName.startswith("pipeline-"):
        name = record.threadName.removeprefix("pipeline-")
    return name


class TextFormatter(logging.Formatter):
    """``2024-05-06 07:08:09,123 INFO cdc.sources.postgres._source [orders]: message``; the pipeline
    in brackets when the line comes from one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(where)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        pipeline = _pipeline(record)
        record.where = f" [{pipeline}]" if pipeline else ""
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, pipeline (when known), exc."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        pipeline = _pipeline(record)
        if pipeline is not None:
            obj["pipeline"] = pipeline
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exc"] = record.exc_text
        return redact(json.dumps(obj, ensure_ascii=False, default=str))


def setup(level: str = "info", fmt: str = "text") -> None:
    """Send the process's logs to stderr in ``fmt`` (text or json) at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
