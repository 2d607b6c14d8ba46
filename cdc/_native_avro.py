"""Which Avro writers the encoder compiles: "native" or "python".

- **native**: ``cdc._native.Writer``, the compiled extension built from ``native/`` (Rust, PyO3).
- **python**: ``cdc._avrofast.compile_writer``, the pure-Python writers: the reference the native
  writers are tested against byte for byte, and the fallback where the extension is not built.

Both have one contract (``cdc._avrofast``'s docstring): a writer returns exactly
``fastavro.schemaless_writer``'s bytes or raises, and the encoder lets fastavro write a datum a
writer raised on. The path is chosen once per process: native when ``cdc._native`` imports,
unless the environment variable ``CDC_NATIVE`` is ``0`` (for tests and debugging); the choice
and its reason are logged once (``log_choice``), shown by ``cdc --version`` and exported as the
metric ``cdc_encoder_info{path=...}``. The decoders (``PARTS``) are chosen the same way, by
``choose``; ``cdc --version`` shows each (``describe_all``) and the metric
``cdc_native_paths{path=PART}`` is 1 where the compiled part runs, 0 where its reference does.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from types import ModuleType
from typing import Any

from cdc import _avrofast
from cdc._avrofast import Unsupported, Writer

log = logging.getLogger(__name__)

NATIVE, PYTHON = "native", "python"

_native: ModuleType | None
try:
    _native = importlib.import_module("cdc._native")
except ImportError as e:  # not built: no Rust toolchain at install time, or a source checkout
    _native = None
    IMPORT_ERROR: str | None = f"{type(e).__name__}: {e}"
else:
    IMPORT_ERROR = None


def choose(feature: str) -> tuple[str, str]:
    """(path, why) of a compiled part of ``cdc._native`` (``feature``: its class, e.g.
    ``RowsDecoder``): native when the extension imports and has it, unless ``CDC_NATIVE=0``.
    Each part is chosen once per process, by the module that uses it."""
    if os.environ.get("CDC_NATIVE", "").strip() == "0":
        return PYTHON, "CDC_NATIVE=0"
    if _native is None:
        return PYTHON, f"the compiled extension cdc._native is not built ({IMPORT_ERROR})"
    if not hasattr(_native, feature):
        return PYTHON, f"this build of cdc._native has no {feature}"
    return NATIVE, f"cdc._native {_native.__version__}"


PATH, REASON = choose("Writer")
_logged = False

PARTS = {
    "avro_writers": "Writer",
    "pgoutput_tuple_decoder": "TupleDecoder",
    "copy_decoder": "CopyDecoder",
    "binlog_rows_decoder": "RowsDecoder",
    "mysql_select_decoder": "SelectDecoder",
}
"""The compiled parts of ``cdc._native``, by the name ``cdc --version`` and the metrics
(``cdc_native_paths{path}``, ``cdc_native_fallbacks_total{path}``) give them: their class.
Each module using one chooses it with ``choose`` (the COPY decoder also needs the tuple
decoder's plan: the same build has both)."""

_fallback_counts: dict[str, Callable[[], int]] = {}


def paths() -> dict[str, tuple[str, str]]:
    """(path, why) of each part in ``PARTS``, as ``choose`` gives it to the module using it."""
    return {name: choose(feature) for name, feature in PARTS.items()}


def describe_all() -> list[str]:
    """``cdc --version``'s lines: ``describe()``, then each decoder's path and why."""
    return [describe()] + [
        f"{name.replace('_', ' ')}: {path} ({why})"
        for name, (path, why) in paths().items()
        if name != "avro_writers"
    ]


def count_fallbacks(part: str, count: Callable[[], int]) -> None:
    """Register ``count``: how many inputs the compiled ``part`` (a key of ``PARTS``) handed to
    the Python reference in this process (called when the metrics are read)."""
    _fallback_counts[part] = count


def fallbacks() -> dict[str, int]:
    """Inputs each decoder part handed to the Python reference so far (0 until its module is
    loaded); the encoder's own are ``cdc_encoder_fallback_records_total{pipeline}``."""
    return {
        name: _fallback_counts[name]() if name in _fallback_counts else 0
        for name in PARTS
        if name != "avro_writers"
    }


def available() -> bool:
    """Whether the compiled extension imported (whatever ``CDC_NATIVE`` says)."""
    return _native is not None


def describe() -> str:
    """One line for ``cdc --version`` and the log: the path and why."""
    return f"avro writers: {PATH} ({REASON})"


def log_choice() -> None:
    """Log the path once per process (the first encoder made)."""
    global _logged
    if not _logged:
        _logged = True
        log.info("%s", describe())


def compile_writer(
    schema: Any,
    positional: Mapping[str, Sequence[int] | None] | None = None,
    memo: Collection[str] = (),
    *,
    native: bool | None = None,
) -> Writer:
    """A writer for ``schema`` with ``_avrofast.compile_writer``'s arguments and contract.

    ``native``: True for the compiled writer (raises ``RuntimeError`` when it is not built),
    False for the Python one, None for the process's path (``PATH``). A schema the compiled
    writer does not take is compiled by ``_avrofast``; ``Unsupported`` when neither takes it.
    """
    if native is None:
        native = PATH == NATIVE
    if native:
        if _native is None:
            raise RuntimeError(f"the compiled extension cdc._native is not built ({IMPORT_ERROR})")
        try:
            write: Writer = _native.Writer(schema, positional, tuple(memo)).write
            return write
        except _native.Unsupported as e:
            log.debug("native writer refused a schema (%s): the python writer takes it", e)
        except Exception as e:  # a schema shape the compiler did not expect: still correct
            log.warning(
                "native writer failed to compile a schema (%r): the python writer takes it", e
            )
    return _avrofast.compile_writer(schema, positional, memo)


RowEncoder = Callable[[Any, int, int, int], tuple[bytes | None, bytes]]


def row_encoder(
    key: Writer | None, value: Writer | None, keyed: bool, key_head: bytes, value_head: bytes
) -> RowEncoder | None:
    """``encode(ev, ts_ms, ts_us, ts_ns) -> (key, value)``, both framed, for a table whose key
    (when ``keyed``) and envelope writers are native: one call per row change
    (``cdc._native.RowEncoder``); None when they are not native. It raises where either writer
    would, and the encoder then writes that event part by part."""
    if _native is None or value is None:
        return None
    vw, kw = getattr(value, "__self__", None), getattr(key, "__self__", None)
    if not isinstance(vw, _native.Writer) or (keyed and not isinstance(kw, _native.Writer)):
        return None
    try:
        encode: RowEncoder = _native.RowEncoder(
            kw if keyed else None, vw, key_head, value_head
        ).encode
        return encode
    except _native.Unsupported:
        return None


__all__ = [
    "NATIVE",
    "PARTS",
    "PATH",
    "PYTHON",
    "REASON",
    "RowEncoder",
    "Unsupported",
    "Writer",
    "compile_writer",
    "count_fallbacks",
    "describe_all",
    "fallbacks",
    "paths",
    "row_encoder",
]
