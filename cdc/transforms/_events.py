"""The transforms that act on whole events: ``filter``, ``unwrap`` (Debezium's
ExtractNewRecordState) and ``outbox`` (Debezium's EventRouter).

They run after the column transforms, routing and skipped operations (the config enforces that
they are listed last), in their list order, each over a batch's events. Like the column
transforms, each works out once per table version (``TableSchema`` object) what it does to it: the
compiled condition, the flat ``row`` table with its added fields, the outbox columns, and raises
``ConfigError`` naming the transform when a table does not fit it (a missing column); the
pipeline then stops and the daemon does not restart it.

Reshaped tables carry ``TableSchema.form`` (``row``, ``payload``) so that the encoders (Avro and
JSON alike) write the flat row or the payload instead of the envelope. Transaction metadata is
not recounted: as Debezium's SMTs run after its connector made the BEGIN/END events, its counts
include the changes they drop.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from cdc.errors import ConfigError
from cdc.model import Column, RowChange, TableSchema, TxBoundary
from cdc.transforms import _expr
from cdc.transforms.config import (
    UNWRAP_ENVELOPE_FIELDS,
    UNWRAP_TRANSACTION_FIELDS,
    Filter,
    Outbox,
    Unwrap,
)

log = logging.getLogger(__name__)

Events = list[RowChange | TxBoundary]


def _table_regex(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


class _PerTable:
    """A cache of one plan per table version (identity, as the encoders cache)."""

    def __init__(self, make: Callable[[TableSchema], Any]) -> None:
        self._make = make
        self._plans: dict[int, tuple[TableSchema, Any]] = {}

    def __call__(self, table: TableSchema) -> Any:
        hit = self._plans.get(id(table))
        if hit is not None and hit[0] is table:
            return hit[1]
        plan = self._make(table)
        self._plans[id(table)] = (table, plan)
        return plan


def _variable_scale(v: Any) -> Decimal:
    unscaled = int.from_bytes(v["value"], "big", signed=True)
    return Decimal(unscaled).scaleb(-v["scale"])


def _converter(avro: Any) -> Callable[[Any], Any] | None:
    """How a filter reads a column's non-null values when not as they are."""
    if (
        isinstance(avro, dict)
        and avro.get("connect.name") == "io.debezium.data.VariableScaleDecimal"
    ):
        return _variable_scale
    return None


def _kind(avro: Any) -> str:
    """What a filter may compare a column's values with: number, string, boolean or other."""
    if _converter(avro) is not None:
        return "number"  # Postgres numeric without a scale
    base = avro.get("type") if isinstance(avro, dict) else avro
    if base in ("int", "long", "float", "double"):
        return "number"
    if base == "bytes" and isinstance(avro, dict) and avro.get("logicalType") == "decimal":
        return "number"
    if base in ("string", "boolean"):
        return "boolean" if base == "boolean" else "string"
    return "other"


class FilterStep:
    """Keeps (``action: keep``) or drops the row changes whose row satisfies the condition: the
    new row (``after``) of inserts, updates and snapshot reads, the old row (``before``) of
    deletes. Truncates and other tables' changes pass."""

    def __init__(self, cfg: Filter, where: str) -> None:
        self._where = where
        self._node = _expr.parse(cfg.condition)
        self._keep = cfg.action == "keep"
        self._tables = None if cfg.tables is None else _table_regex(cfg.tables)
        self._plan = _PerTable(self._make)

    def _make(self, table: TableSchema) -> _expr.Test | None:
        if table.form in ("payload", "message"):
            return None  # an outbox event: no columns left; a message: no row
        if self._tables is not None and not self._tables.fullmatch(table.qualified):
            return None
        names = [c.name for c in table.columns]
        try:
            return _expr.compile_condition(
                self._node,
                names,
                [_kind(c.avro) for c in table.columns],
                [_converter(c.avro) for c in table.columns],
            )
        except _expr.ExprError as e:
            raise ConfigError([f"{self._where}.condition: table {table.qualified}: {e}"]) from None

    def apply(self, events: Events) -> Events:
        out: Events = []
        keep = self._keep
        for ev in events:
            if type(ev) is RowChange and ev.op != "t":
                test = self._plan(ev.table)
                row = ev.before if ev.op == "d" else ev.after
                if test is not None and row is not None and (test(row) is True) != keep:
                    continue
            out.append(ev)
        return out


_Getter = Callable[[RowChange, int], Any]


def _optional(avro: Any) -> Any:
    """The non-null branch of ``avro`` without a default (added fields are optional, no default)."""
    if isinstance(avro, list):
        avro = next(t for t in avro if t != "null")
    if isinstance(avro, dict) and "connect.default" in avro:
        avro = {k: v for k, v in avro.items() if k != "connect.default"}
    return avro


def _tx_getter(i: int) -> _Getter:
    return lambda ev, now: None if ev.tx is None else ev.tx[i]


def _source_getter(field: str) -> _Getter:
    return lambda ev, now: ev.source.get(field)


class _PlannedStep:
    """A step over the row changes of the tables it has a plan for (``_plan`` not None): other
    events pass as they are; ``_change`` appends what becomes of each of the planned ones."""

    _plan: _PerTable

    def apply(self, events: Events) -> Events:
        out: Events = []
        for ev in events:
            if type(ev) is RowChange:
                plan = self._plan(ev.table)
                if plan is not None:
                    self._change(ev, plan, out)
                    continue
            out.append(ev)
        return out

    def _change(self, ev: RowChange, plan: Any, out: Events) -> None:
        raise NotImplementedError


class UnwrapStep(_PlannedStep):
    """The row instead of the envelope (``TableSchema.form`` ``row``), Debezium's
    ExtractNewRecordState: inserts, updates and reads become their new row plus the added fields;
    deletes are dropped, become tombstones or the deleted row with ``__deleted: "true"``
    (``delete_handling_mode``); with ``drop_tombstones`` false a tombstone follows each delete.
    Truncates are dropped (they have no row)."""

    def __init__(self, cfg: Unwrap, where: str, source_schema: dict[str, Any] | None) -> None:
        self._mode = cfg.delete_handling_mode
        self._tombstones = not cfg.drop_tombstones
        self._where = where
        source_fields = {
            f["name"]: f["type"] for f in (source_schema or {"fields": []}).get("fields", [])
        }
        added: list[tuple[Column, _Getter]] = []
        for name in cfg.add_fields:
            parts = name.split(".")
            if len(parts) == 1 and parts[0] in UNWRAP_ENVELOPE_FIELDS:
                field = parts[0]
                added.append(self._envelope_field(cfg.add_fields_prefix + field, field))
                continue
            struct = parts[0] if len(parts) == 2 else None
            field = parts[-1]
            if struct is None:
                struct = "transaction" if field in UNWRAP_TRANSACTION_FIELDS else "source"
            new = cfg.add_fields_prefix + (field if len(parts) == 1 else f"{struct}_{field}")
            if struct == "transaction":
                if field not in UNWRAP_TRANSACTION_FIELDS:
                    raise ConfigError(
                        [
                            f"{where}.add_fields: the transaction block has no field {field!r}: "
                            f"use one of {', '.join(UNWRAP_TRANSACTION_FIELDS)}"
                        ]
                    )
                i = UNWRAP_TRANSACTION_FIELDS.index(field)
                avro = "string" if i == 0 else "long"
                added.append((Column(new, avro, True, ""), _tx_getter(i)))
                continue
            if source_schema is not None and field not in source_fields:
                raise ConfigError(
                    [
                        f"{where}.add_fields: the source block has no field {field!r} (it has "
                        f"{', '.join(source_fields)})"
                    ]
                )
            avro = _optional(source_fields.get(field, "string"))
            added.append((Column(new, avro, True, ""), _source_getter(field)))
        if self._mode == "rewrite":
            deleted: _Getter = lambda ev, now: "true" if ev.op == "d" else "false"  # noqa: E731
            added.append((Column("__deleted", "string", True, ""), deleted))
        self._added = added
        self._plan = _PerTable(self._make)
        self._now_us = 0  # set per batch by apply

    @staticmethod
    def _envelope_field(new: str, field: str) -> tuple[Column, _Getter]:
        """An added field of the envelope itself; ``now`` (microseconds) stands for its ts_*."""
        getters: dict[str, _Getter] = {
            "op": lambda ev, now: ev.op,
            "ts_ms": lambda ev, now: now // 1000,
            "ts_us": lambda ev, now: now,
            "ts_ns": lambda ev, now: now * 1000,
        }
        return Column(new, "string" if field == "op" else "long", True, ""), getters[field]

    def _make(self, table: TableSchema) -> TableSchema | None:
        if table.form != "envelope":
            return None
        names = {c.name for c in table.columns}
        for col, _ in self._added:
            if col.name in names:
                raise ConfigError(
                    [
                        f"{self._where}: table {table.qualified} has a column {col.name!r} "
                        "already: change add_fields_prefix"
                    ]
                )
        cols = table.columns + tuple(c for c, _ in self._added)
        return TableSchema(table.topic, table.namespace, table.table, cols, table.key, "row")

    def apply(self, events: Events) -> Events:
        self._now_us = time.time_ns() // 1000  # the envelope's ts_* say when it was processed
        return super().apply(events)

    def _change(self, ev: RowChange, flat: TableSchema, out: Events) -> None:
        if ev.op == "t":
            return
        ev.table = flat
        extra = tuple(g(ev, self._now_us) for _, g in self._added)
        if ev.op != "d":
            assert ev.after is not None
            ev.after = ev.after + extra
            out.append(ev)
            return
        if self._mode == "rewrite":
            assert ev.before is not None
            ev.after = ev.before + extra
            out.append(ev)
        elif self._mode == "tombstone":
            out.append(ev)  # after None: a tombstone
        if self._tombstones:
            out.append(
                RowChange(
                    flat,
                    "d",
                    ev.before,
                    None,
                    ev.source,
                    ev.ts_ms,
                    ev.event_id + "~",
                    ev.tx,
                    ev.key_override,
                )
            )


_ROUTED_BY = "{routedByValue}"


class OutboxStep(_PlannedStep):
    """Debezium's EventRouter over the outbox tables: an insert (or snapshot read) of an outbox
    row becomes an event on the topic ``route_topic_replacement`` makes of its aggregate type,
    keyed by its aggregate id, the payload as the value (``TableSchema.form`` ``payload``) and its
    id in the record header ``id``. Deletes and truncates of the outbox table are dropped (the
    usual outbox writes and deletes a row in one transaction); updates per ``on_update``. A row
    without an aggregate type cannot be routed: dropped with a warning."""

    def __init__(self, cfg: Outbox, where: str) -> None:
        self._cfg = cfg
        self._where = where
        self._tables = _table_regex(cfg.tables)
        self._plan = _PerTable(self._make)
        self._routed: dict[tuple[int, str], TableSchema] = {}

    def _make(self, table: TableSchema) -> tuple[int, int, int, int] | None:
        if table.form != "envelope" or not self._tables.fullmatch(table.qualified):
            return None
        cfg = self._cfg
        names = [c.name for c in table.columns]
        wanted = [
            ("id_column", cfg.id_column),
            ("aggregate_type_column", cfg.aggregate_type_column),
            ("aggregate_id_column", cfg.aggregate_id_column),
            ("payload_column", cfg.payload_column),
        ]
        missing = [f"{field} {col!r}" for field, col in wanted if col not in names]
        if missing:
            raise ConfigError(
                [
                    f"{self._where}: outbox table {table.qualified} has no column "
                    + ", no column ".join(missing)
                    + f" (its columns: {', '.join(names)}): add them to the table, or name its "
                    "columns in the transform's *_column settings"
                ]
            )
        i, t, a, p = (names.index(col) for _, col in wanted)
        return i, t, a, p

    def _table(self, table: TableSchema, plan: tuple[int, int, int, int], kind: str) -> TableSchema:
        hit = self._routed.get((id(table), kind))
        if hit is None:
            _, _, a, p = plan
            topic = self._cfg.route_topic_replacement.replace(_ROUTED_BY, kind)
            cols = (table.columns[a], table.columns[p])
            hit = TableSchema(topic, table.namespace, table.table, cols, (0,), "payload")
            self._routed[(id(table), kind)] = hit
        return hit

    def _change(self, ev: RowChange, plan: tuple[int, int, int, int], out: Events) -> None:
        if ev.op == "u":
            self._update(ev)
            return
        if ev.op not in ("c", "r"):
            return
        row = ev.after
        assert row is not None
        i, t, a, p = plan
        kind = row[t]
        if kind is None:
            log.warning(
                "%s: outbox row %s of %s has no %s: not routed (dropped)",
                self._where,
                row[i],
                ev.table.qualified,
                self._cfg.aggregate_type_column,
            )
            return
        ev.headers = (*ev.headers, ("id", str(row[i]).encode()))
        ev.table = self._table(ev.table, plan, str(kind))
        ev.before, ev.after, ev.key_override = None, (row[a], row[p]), None
        out.append(ev)

    def _update(self, ev: RowChange) -> None:
        what = (
            f"{self._where}: an update of outbox table {ev.table.qualified} (event "
            f"{ev.event_id}): outbox rows are only inserted"
        )
        if self._cfg.on_update == "error":
            raise ConfigError([what + "; set on_update: warn to drop such updates"])
        if self._cfg.on_update == "warn":
            log.warning("%s: dropped", what)


EventStep = FilterStep | UnwrapStep | OutboxStep


def event_step(
    cfg: Filter | Unwrap | Outbox, where: str, source_schema: dict[str, Any] | None
) -> EventStep:
    if isinstance(cfg, Filter):
        return FilterStep(cfg, where)
    if isinstance(cfg, Unwrap):
        return UnwrapStep(cfg, where, source_schema)
    return OutboxStep(cfg, where)
