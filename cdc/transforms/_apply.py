"""The transforms stage: column filtering, masking, hashing, truncation, skipped operations and
topic routing, applied to whole batches between the source and the encoder; then the event
transforms (filter, unwrap, outbox: ``cdc.transforms._events``) in their list order.

Everything that depends on a table's shape is worked out once per ``TableSchema`` object (one per
table version, see cdc/model.py): the transformed ``TableSchema`` (fewer columns, new Avro types,
key indexes remapped, topic renamed) and a row function generated for it, so that a row costs one
tuple rebuild. The transformed schema is cached per original object and is itself one object per
version, so the encoder's per-schema caches keep working. A table no transform touches keeps its
own ``TableSchema`` and its rows pass unchanged.

``Transformer.apply`` rewrites the batch's events in place (the source hands them over) and
returns the batch with the skipped changes left out. With ``skip_operations``, the transaction
metadata counts only what is emitted, as Debezium's does: the ``transaction`` block's orders are
renumbered, END's ``event_count`` and ``per_table`` count the emitted changes, and a transaction
whose changes are all skipped gets neither BEGIN nor END. That takes state across batches (a
transaction may span several): one ``Transformer`` per pipeline run.

Configuration: ``cdc.transforms.config`` (beside this module); user documentation:
docs/transforms.md.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cdc.errors import ConfigError
from cdc.model import NO_DEFAULT, ChangeBatch, Column, RowChange, TableSchema, TxBoundary
from cdc.transforms._events import event_step
from cdc.transforms.config import (
    EVENT_TRANSFORMS,
    HASH_ALGORITHMS,
    DropColumns,
    HashColumns,
    MaskColumns,
    RouteTopics,
    SkipOperations,
    TransformConfig,
    TruncateColumns,
)

log = logging.getLogger(__name__)

ValueFn = Callable[[Any], Any]
RowFn = Callable[[tuple[Any, ...]], tuple[Any, ...]]


# --- value functions ------------------------------------------------------------------------------


def _java_serialized(s: str) -> bytes:
    """The bytes Java's ObjectOutputStream writes for a String: stream header, TC_STRING (or
    TC_LONGSTRING past 65535 bytes) and the modified UTF-8 of ``s`` (NUL as C0 80, characters
    beyond the BMP as two 3-byte surrogates). Debezium's v1 hashing strategy hashes these."""
    if not s or ("\x00" not in s and max(s) <= "\uffff"):
        data = s.encode("utf-8", "surrogatepass")  # the same bytes as modified UTF-8 here
    else:
        units = s.encode("utf-16-be", "surrogatepass")
        data = b"".join(
            b"\xc0\x80" if u == 0 else chr(u).encode("utf-8", "surrogatepass")
            for u in struct.unpack(f">{len(units) // 2}H", units)
        )
    if len(data) <= 0xFFFF:
        return b"\xac\xed\x00\x05\x74" + struct.pack(">H", len(data)) + data
    return b"\xac\xed\x00\x05\x7c" + struct.pack(">Q", len(data)) + data


def hash_function(cfg: HashColumns) -> ValueFn:
    """``value -> hex digest`` of salt + value, as Debezium's MaskStrings computes it for strings.

    Values that are not strings are hashed over their text (``str(value)``; ``bytes`` over
    themselves, in both versions): Debezium leaves non-character columns unhashed.
    """
    algo = HASH_ALGORITHMS[cfg.algorithm]
    salted = hashlib.new(algo, cfg.salt.encode("utf-8"))
    length = cfg.length
    v1 = cfg.version == "v1"

    def digest(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is not str:
            if type(value) is bytes:
                h = salted.copy()
                h.update(value)
                out = h.hexdigest()
                return out if length is None else out[:length]
            value = str(value)
        h = salted.copy()
        h.update(_java_serialized(value) if v1 else value.encode("utf-8", "surrogatepass"))
        out = h.hexdigest()
        return out if length is None else out[:length]

    return digest


def _mask_function(chars: int) -> ValueFn:
    mask = "*" * chars

    def masked(value: Any) -> Any:
        return None if value is None else mask

    return masked


def _truncate_function(chars: int) -> ValueFn:
    def truncated(value: Any) -> Any:
        return value[:chars] if value is not None and len(value) > chars else value

    return truncated


def _chain(first: ValueFn | None, then: ValueFn) -> ValueFn:
    if first is None:
        return then
    return lambda v: then(first(v))


def _row_function(sources: Sequence[int], fns: Sequence[ValueFn | None]) -> RowFn:
    """``row -> tuple`` taking column ``sources[i]`` of the row through ``fns[i]`` (if any).

    Generated source holds only indexes and local names; the functions are bound as defaults.
    """
    parts = []
    bound: dict[str, Any] = {}
    for i, (src, fn) in enumerate(zip(sources, fns, strict=True)):
        if fn is None:
            parts.append(f"r[{src}]")
        else:
            bound[f"f{i}"] = fn
            parts.append(f"f{i}(r[{src}])")
    args = "".join(f", {n}={n}" for n in bound)
    code = f"def row(r{args}):\n    return ({', '.join(parts)}{',' if len(parts) == 1 else ''})\n"
    ns: dict[str, Any] = dict(bound)
    exec(compile(code, "<cdc.transforms row>", "exec"), ns)
    made: RowFn = ns["row"]
    return made


# --- per table version ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TablePlan:
    """What the transforms do to one table version: ``row`` None means rows pass unchanged."""

    table: TableSchema
    row: RowFn | None


def _column_regex(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


class _Step:
    """One configured column transform, compiled."""

    __slots__ = ("cfg", "index", "regex")

    def __init__(self, index: int, cfg: TransformConfig) -> None:
        self.index = index
        self.cfg = cfg
        self.regex = (
            _column_regex(cfg.columns)
            if isinstance(cfg, DropColumns | MaskColumns | HashColumns | TruncateColumns)
            else None
        )


STRING = "string"
# Debezium marks masked and hashed fields with the schema parameter masked=true.
MASKED: dict[str, Any] = {"type": "string", "connect.parameters": {"masked": "true"}}


def _masked() -> dict[str, Any]:
    return {"type": "string", "connect.parameters": {"masked": "true"}}  # one per field


def _plain_string(t: Any) -> bool:
    """A string without a semantic type (text, varchar, char...): Json, Uuid, Enum... are not."""
    return t == STRING or (
        isinstance(t, dict) and t.get("type") == STRING and "connect.name" not in t
    )


class Transformer:
    """Applies a pipeline's transforms to its batches; one per pipeline run (see module doc)."""

    def __init__(
        self,
        transforms: Sequence[TransformConfig],
        pipeline: str = "",
        source_schema: dict[str, Any] | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._steps = [_Step(i, t) for i, t in enumerate(transforms)]
        # filter, unwrap, outbox: after everything else, in list order (cdc.transforms._events)
        self._events = [
            event_step(t, self._where(i, "").rstrip("."), source_schema)
            for i, t in enumerate(transforms)
            if isinstance(t, EVENT_TRANSFORMS)
        ]
        self._hashes: dict[int, ValueFn] = {
            s.index: hash_function(s.cfg) for s in self._steps if isinstance(s.cfg, HashColumns)
        }
        routes = [(s.index, s.cfg) for s in self._steps if isinstance(s.cfg, RouteTopics)]
        self._routes = [(i, re.compile(r.regex), _replacement(r.replacement)) for i, r in routes]
        skip: set[str] = set()
        for s in self._steps:
            if isinstance(s.cfg, SkipOperations):
                skip.update(s.cfg.operations)
        self.skip = frozenset(skip)
        self._plans: dict[int, tuple[TableSchema, TablePlan]] = {}
        # the transaction being renumbered (only with skipped operations)
        self._tx_id: str | None = None
        self._begin: TxBoundary | None = None  # BEGIN held until the first emitted change
        self._began = False
        self._resumed = False  # first seen mid-transaction: its BEGIN was written before
        self._total = 0
        self._per_table: dict[str, int] = {}

    # -- schemas --

    def plan(self, table: TableSchema) -> TablePlan:
        """The transformed version of ``table``: the same object for the same ``table``."""
        hit = self._plans.get(id(table))
        if hit is not None and hit[0] is table:
            return hit[1]
        plan = self._make_plan(table)
        self._plans[id(table)] = (table, plan)
        return plan

    def _where(self, index: int, field: str) -> str:
        where = f"transforms[{index}].{field}"
        return f"pipeline {self._pipeline!r}: {where}" if self._pipeline else where

    def _make_plan(self, table: TableSchema) -> TablePlan:
        if table.form == "message":
            # A message's prefix and content are no table's columns (a pattern such as
            # .*\.content would match them): only the routing applies.
            topic = self._route(table.topic)
            return TablePlan(table if topic == table.topic else replace(table, topic=topic), None)
        cols: list[Column] = list(table.columns)
        sources = list(range(len(cols)))
        fns: list[ValueFn | None] = [None] * len(cols)
        key = list(table.key)
        prefix = table.qualified + "."
        for step in self._steps:
            cfg, regex = step.cfg, step.regex
            if regex is None:
                continue
            hits = [j for j, c in enumerate(cols) if regex.fullmatch(prefix + c.name)]
            if not hits:
                continue
            if isinstance(cfg, DropColumns):
                in_key = [cols[j].name for j in hits if sources[j] in key]
                if in_key:
                    raise ConfigError(
                        [
                            f"{self._where(step.index, 'columns')}: column "
                            f"{prefix}{in_key[0]} is part of the primary key of "
                            f"{table.qualified} and cannot be dropped: narrow the pattern, or "
                            "use hash_columns on it instead"
                        ]
                    )
                for j in reversed(hits):
                    del cols[j], sources[j], fns[j]
                continue
            for j in hits:
                c = cols[j]
                fn: ValueFn
                if isinstance(cfg, MaskColumns):
                    fn = _mask_function(cfg.chars)
                elif isinstance(cfg, HashColumns):
                    fn = self._hashes[step.index]
                else:
                    assert isinstance(cfg, TruncateColumns)
                    if not _plain_string(c.avro):
                        log.warning(
                            "%s: column %s%s is not a plain string (Avro %s): not truncated",
                            self._where(step.index, "columns"),
                            prefix,
                            c.name,
                            c.avro if isinstance(c.avro, str) else c.avro.get("connect.name"),
                        )
                        continue
                    fn = _truncate_function(cfg.chars)
                fallback = None if c.fallback is None else fn(c.fallback)
                avro_type = c.avro if isinstance(cfg, TruncateColumns) else _masked()
                # The default is dropped, not transformed: a schema must not carry the clear
                # value of a masked or hashed column.
                cols[j] = replace(c, avro=avro_type, fallback=fallback, default=NO_DEFAULT)
                fns[j] = _chain(fns[j], fn)
        topic = self._route(table.topic)
        changed_columns = sources != list(range(len(table.columns))) or any(fns)
        if not changed_columns and topic == table.topic:
            return TablePlan(table, None)
        new_key = tuple(sources.index(k) for k in key)
        out = TableSchema(topic, table.namespace, table.table, tuple(cols), new_key)
        return TablePlan(out, _row_function(sources, fns) if changed_columns else None)

    def _route(self, topic: str) -> str:
        for index, regex, repl in self._routes:
            m = regex.fullmatch(topic)
            if m is not None:
                new = repl(m)
                if not new:
                    raise ConfigError(
                        [
                            f"{self._where(index, 'replacement')}: topic {topic!r} would be "
                            "renamed to an empty name: change the replacement"
                        ]
                    )
                topic = new
        return topic

    # -- batches --

    def apply(self, batch: ChangeBatch) -> ChangeBatch:
        """Transform ``batch`` in place; returns it with skipped changes left out."""
        if self.skip:
            batch.events = self._skipping(batch.events)
        last: TableSchema | None = None
        plan: TablePlan | None = None
        for ev in batch.events:
            if type(ev) is not RowChange:
                continue
            if ev.table is not last:  # runs of one table are the common case
                last = ev.table
                plan = self.plan(last)
            assert plan is not None
            ev.table = plan.table
            row = plan.row
            if row is not None:
                if ev.before is not None:
                    ev.before = row(ev.before)
                if ev.after is not None:
                    ev.after = row(ev.after)
                if ev.key_override is not None:
                    ev.key_override = row(ev.key_override)
        for step in self._events:
            batch.events = step.apply(batch.events)
        return batch

    def _skipping(self, events: list[RowChange | TxBoundary]) -> list[RowChange | TxBoundary]:
        """``events`` without the skipped changes, transaction metadata recounted."""
        skip = self.skip
        out: list[RowChange | TxBoundary] = []
        for ev in events:
            if isinstance(ev, RowChange):
                tx = ev.tx
                if tx is None:
                    if ev.op not in skip:
                        out.append(ev)
                    continue
                if tx[0] != self._tx_id:
                    # A transaction whose BEGIN came before a restart: the source resumed inside
                    # it. What was skipped before the restart is unknown: counted as emitted.
                    self._start(tx[0], None)
                    self._began = self._resumed = True
                    self._total = tx[1] - 1
                table = ev.table.qualified
                if self._resumed and table not in self._per_table:
                    self._per_table[table] = tx[2] - 1
                if ev.op in skip:
                    continue
                if self._begin is not None:
                    out.append(self._begin)
                    self._begin = None
                    self._began = True
                n = self._per_table.get(table, 0) + 1
                self._total += 1
                self._per_table[table] = n
                ev.tx = (tx[0], self._total, n)
                out.append(ev)
            elif ev.status == "BEGIN":
                self._start(ev.tx_id, ev)
            else:
                if ev.tx_id == self._tx_id:
                    if self._began:
                        ev.event_count = self._total
                        ev.per_table = {t: n for t, n in self._per_table.items() if n}
                        out.append(ev)
                    # else every change was skipped: no BEGIN was written, so no END
                else:
                    out.append(ev)  # resumed just before END: the source's counts, unchanged
                self._start(None, None)
        return out

    def _start(self, tx_id: str | None, begin: TxBoundary | None) -> None:
        self._tx_id, self._begin = tx_id, begin
        self._began = self._resumed = False
        self._total = 0
        self._per_table = {}


def _replacement(template: str) -> Callable[[re.Match[str]], str]:
    """Kafka Connect RegexRouter's replacement: ``$n`` is group n, ``$$`` a dollar sign."""
    parts: list[str | int] = []
    for i, piece in enumerate(re.split(r"\$(\d+|\$)", template)):
        if i % 2 == 0:
            if piece:
                parts.append(piece)
        else:
            parts.append("$" if piece == "$" else int(piece))

    def expand(m: re.Match[str]) -> str:
        return "".join(p if isinstance(p, str) else (m.group(p) or "") for p in parts)

    return expand


def transformer(
    transforms: Sequence[TransformConfig],
    pipeline: str = "",
    source_schema: dict[str, Any] | None = None,
) -> Transformer | None:
    """A ``Transformer`` for a pipeline's transforms; None when it has none (the hot path then
    skips the stage altogether). ``source_schema`` (the source's ``source`` record) lets
    ``unwrap`` check and type the source fields it adds."""
    return Transformer(transforms, pipeline, source_schema) if transforms else None
