"""The apply of a database target, shared by ``type: postgres`` and ``type: mysql``.

Delivery guarantee: exactly once, in commit order. Each batch's row changes are applied in one
target transaction together with an update of the pipeline's row in ``cdc_positions`` (the
batch's position); ``committed()`` reads that row. A batch that ends inside a source transaction
(``open_txn``) leaves the target transaction open, so a source transaction is never split;
consecutive whole source transactions of one batch share one target transaction. A crash of the
daemon or of the target before the commit loses the target transaction and its position alike:
the source resumes at the last committed position and the apply is repeated, once.

Per batch the changes of each target table are reduced to their net effect per primary key (the
last image of each key, or its deletion; a truncate drops what came before it), then applied as
multi-row statements: deletes first, then upserts (Postgres ``INSERT ... ON CONFLICT DO UPDATE``,
MySQL ``INSERT ... ON DUPLICATE KEY UPDATE``). Within one target transaction the order of
statements is invisible to other sessions, so this gives the same committed state as applying
every change in turn, in far fewer round trips.

A driver may send a batch's last statements and its commit without waiting for their answer
(``_commit_later``; the Postgres target does, for batches of at least half ``max_events``: the
source has more to give, else the batch would have been written sooner, smaller, and its commit
is waited for): the target then works on them while the daemon decodes the next batch, and the
answer is read before anything else is sent (``_settle``), at the latest by the next
``write_rows``, by ``acknowledgeable`` once it is there, or by ``close``. Until then the batch
is not known committed: ``acknowledgeable()`` stays at the last confirmed commit, so the source
is acknowledged one batch behind. A statement of those refused (``DeferredRefusal``) rolls the
transaction back, and its batches are applied again, each statement waited for, so that the
refusal is handled (a key the source called new found in the target) or named (below) as if
nothing had been deferred.

The target down (connection refused or lost, server shutting down, deadlock): ``write_rows``
reconnects with backoff (0.5 s doubling up to ``max_retry_backoff_s``), replays the batches of
the open transaction (kept in memory up to ``REPLAY_LIMIT`` events; past that the pipeline is
restarted from the committed position instead) and carries on; ``interrupt()`` makes it give
up with a retryable error. Nothing is acknowledged past the committed position.

A change the target refuses (a constraint violation, a value out of range): a fatal
``SinkError`` naming the table, the key, the column when the target says it, and the target's
message; the transaction is rolled back, so the position does not move.

Schema: a target table is created from the first version of a source table it sees (key columns
NOT NULL and the primary key; other columns nullable, so that rows of older and newer versions
both fit); a new version adds its new columns (with the column's default, so existing rows get
it as they did in the source), drops the columns the version before it had and it has not, and
widens types (``_types.widens``); any other type change stops the pipeline naming the table,
the column and the change. Columns are never dropped on first sight of a table after a restart
(a target column the daemon has not seen dropped is left alone: it may be the user's own).

One file past 500 lines on purpose: the apply, its retries and the schema changes made inside
its transactions share one connection's state (plans, catalogs, the open transaction, what to
replay) and are read together; the type mapping (``_types``) and each driver's glue
(``sinks/<name>/_sink.py``) live apart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdc.errors import SinkError
from cdc.model import NO_DEFAULT, ChangeBatch, Column, Position, RowChange, TableSchema
from cdc.sinks._sql._types import (
    UNAVAILABLE,
    UNAVAILABLE_BYTES,
    UNAVAILABLE_VALUES,
    Dialect,
    Mapping,
    map_column,
    normalize,
    widens,
)
from cdc.sinks._sql.config import TargetOptions

log = logging.getLogger(__name__)

POSITIONS_TABLE = "cdc_positions"
# Events of an open target transaction kept to replay it after a reconnect.
REPLAY_LIMIT = 200_000
# Rows of a failed statement tried one by one to name the row the target refuses.
LOCATE_LIMIT = 2000


class DeferredRefusal(Exception):
    """The target refused a statement the driver sent without waiting for its answer (see the
    module's docstring): the transaction is lost; ``cause`` is the driver's error."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(frozen=True, slots=True)
class TargetTable:
    schema: str
    table: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(slots=True)
class TablePlan:
    """How rows of one source table version are written to its target table (made once per
    version and connection): the columns written (those the target has), their converters,
    and where the key is among them."""

    version: TableSchema
    target: TargetTable
    names: list[str]
    types: list[str]
    idx: list[int]  # index into version.columns of each written column
    convs: list[tuple[int, Callable[[Any], Any]]]
    key_pos: list[int]  # positions in names of the key columns
    # the unchanged-TOAST placeholders this version's column types can hold (see _types)
    placeholders: tuple[Any, ...] = ()
    sql: dict[Any, str] = field(default_factory=dict)  # statement cache, the dialect's keys
    _take: Callable[[Sequence[Any]], Any] = field(init=False, repr=False)
    _keyget: Callable[[list[Any]], Any] = field(init=False, repr=False)

    @property
    def key_names(self) -> list[str]:
        return [self.names[i] for i in self.key_pos]

    def __post_init__(self) -> None:
        # made once per plan: the per-row work below is the apply's hot path
        self._take = operator.itemgetter(*self.idx)  # never empty: the key is among them
        self._keyget = operator.itemgetter(*self.key_pos)

    def row(self, values: Sequence[Any]) -> list[Any]:
        taken = self._take(values)
        out = list(taken) if len(self.idx) > 1 else [taken]
        for pos, conv in self.convs:
            v = out[pos]
            if v is not None:
                try:
                    out[pos] = conv(v)
                except Exception as e:
                    raise SinkError(
                        f"cannot convert column {self.target}.{self.names[pos]} value {v!r} "
                        f"to {self.types[pos]}: {e}; set column_types for it"
                    ) from e
        return out

    def key(self, row: list[Any]) -> Any:
        """The row's key as a dict key: the one key value, or a tuple of them (the same shape
        for every version of a table with the same key columns); its repr when a value is
        unhashable (a list)."""
        k = self._keyget(row)
        try:
            hash(k)
        except TypeError:
            return repr(k)
        return k


@dataclass(slots=True)
class _Pending:
    """Net effect of a batch on one target table: truncate first, then per key its last row,
    whether it is deleted, the mask of columns to leave alone (unchanged TOASTed values), and
    whether the key is new (its first change in the batch an insert or a snapshot read: the
    target, which mirrors the source, does not hold it yet, so a plain insert may do)."""

    truncate: bool = False
    ops: dict[Any, tuple[TablePlan, list[Any], bool, tuple[int, ...], bool]] = field(
        default_factory=dict
    )


class SqlTarget:
    """A ``RowSink`` applying change batches to a SQL database (see the module's docstring).
    Subclasses supply the driver: connecting, executing, the catalog and the statements."""

    dialect: Dialect
    label = "target"
    # reads no change's source block or event id (RowSink): the source may spare them
    event_details = False

    def __init__(
        self,
        options: TargetOptions,
        pipeline: str,
        schema: str | None,
        *,
        max_events: int = 5000,
    ) -> None:
        self.options = options
        # A batch of at least this many events may have statements deferred: one made while
        # the source has more to give (a batch written because the stream paused, smaller,
        # commits and waits, so the last one before a pause is acknowledged at once).
        self.defer_from = max(1, max_events // 2)
        self.pipeline = pipeline
        self.default_schema = schema
        self._interrupted = threading.Event()
        self._connected = False
        self._committed: Position | None = None
        self._loaded = False
        self._uncommitted: list[ChangeBatch] = []
        self._uncommitted_events = 0
        self._plans: dict[TableSchema, TablePlan] = {}
        self._catalogs: dict[TargetTable, dict[str, str] | None] = {}
        self._versions: dict[TargetTable, list[TableSchema]] = {}  # seen, in stream order
        self._schemas_made: set[str] = set()
        self._down = False  # an outage was logged: log the recovery
        # The batch whose commit was sent without waiting (``_commit_later``), not confirmed yet
        self._sent: ChangeBatch | None = None
        # Set by ``write_rows`` while it applies a batch for the first time: the driver may
        # defer statements; False while it replays batches, and outside ``write_rows``.
        self._deferring = False

    # --- driver hooks (subclasses) --------------------------------------------------------

    def _connect(self) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    def _is_down(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _commit_later(self) -> bool:
        """Commit the open transaction: by sending the commit (and what the driver queued)
        without waiting for the answer, when the driver can, then True (``_settle`` reads the
        answer); else by committing and waiting, then False (the default)."""
        self._commit()
        return False

    def _send_later(self) -> None:
        """Send what the driver queued of the open transaction without waiting for the answer
        (``_settle`` reads it), at the end of a batch that does not commit: nothing queued
        by one batch may go after the next batch's statements. The default: nothing is."""

    def _settle(self, block: bool = True) -> bool:
        """Read the answer to what was sent without waiting: True once nothing is outstanding;
        False when ``block`` is False and it is not there yet. Raises ``DeferredRefusal`` for a
        refused statement (again on every call, until ``_rollback``), the driver's error when
        the connection is lost. The default: nothing is ever deferred."""
        return True

    def quote(self, name: str) -> str:
        raise NotImplementedError

    def _literal(self, value: Any) -> str:
        raise NotImplementedError

    def _catalog(self, target: TargetTable) -> dict[str, str] | None:
        """The target table's columns (name -> type as ``_types.normalize`` spells it), None
        when it does not exist."""
        raise NotImplementedError

    def _create_schema(self, schema: str) -> None:
        raise NotImplementedError

    def _ensure_state(self) -> None:
        """Create the state schema and ``cdc_positions`` if missing (committed)."""
        raise NotImplementedError

    def _save_position(self, text: str) -> None:
        raise NotImplementedError

    def _load_position(self) -> str | None:
        raise NotImplementedError

    def _upsert(self, plan: TablePlan, rows: list[list[Any]], mask: tuple[int, ...]) -> None:
        raise NotImplementedError

    def _insert(self, plan: TablePlan, rows: list[list[Any]], mask: tuple[int, ...]) -> None:
        """Rows whose keys the target should not hold yet (new in the source): the driver may
        insert them by a cheaper way than ``_upsert``, but must end with the ``_upsert``
        result when a key is there after all (a target not mirroring the source)."""
        self._upsert(plan, rows, mask)

    def _delete(self, plan: TablePlan, keys: list[list[Any]]) -> None:
        raise NotImplementedError

    def _update_row(
        self, plan: TablePlan, key: list[Any], row: list[Any], mask: tuple[int, ...]
    ) -> bool:
        """Set the columns of ``row`` not in ``mask`` (its key included) on the row whose key
        is ``key``; whether there was one."""
        raise NotImplementedError

    def _truncate(self, target: TargetTable) -> None:
        raise NotImplementedError

    def _alter_type(self, target: TargetTable, column: str, sql_type: str) -> str:
        raise NotImplementedError

    def same_type(self, have: str, want: str) -> bool:
        """A catalog type (``have``) is what the mapping asks for (``want``)."""
        return normalize(have) == normalize(want)

    def _describe(self, exc: BaseException) -> tuple[str, str | None]:
        """The target's message for a refused statement and the column it names, if any."""
        return str(exc).strip(), None

    # --- RowSink ----------------------------------------------------------------------------

    def committed(self) -> Position | None:
        if not self._loaded:
            self._retrying(lambda: None)
            self._loaded = True
        return self._committed

    def acknowledgeable(self) -> Position | None:
        if self._sent is not None and self._connected:
            # A deferred commit whose answer has come: confirm it now. A refusal or a lost
            # connection is left for the next write_rows, which handles it (the driver repeats
            # a refusal until the rollback).
            with contextlib.suppress(Exception):
                if self._settle(block=False):
                    self._confirm()
        return self._committed

    def interrupt(self) -> None:
        self._interrupted.set()

    def close(self) -> None:
        if self._connected and self._sent is not None:
            try:
                self._confirm()
            except Exception as e:  # nothing lost: the source was not acknowledged past it
                log.warning(
                    "%s: the commit of the last batch was not confirmed (%s); it is applied "
                    "again from the last confirmed position at the next start",
                    self.label,
                    str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__,
                )
        if self._connected:
            with contextlib.suppress(Exception):  # the connection may be gone already
                self._rollback()
            self._drop()

    def write_rows(self, batch: ChangeBatch) -> None:
        """Apply ``batch``; it is committed (``acknowledgeable``) on return, or, when the
        driver deferred its commit, at the latest when the next ``write_rows`` or ``close``
        returns (see the module's docstring)."""
        self._uncommitted.append(batch)
        self._uncommitted_events += len(batch.events)
        # True: apply every batch of the open target transaction again, waiting for each
        # statement (after a new connection, or after the target refused a deferred statement)
        replay = [False]

        def attempt() -> None:
            self._deferring = not replay[0] and len(batch.events) >= self.defer_from
            try:
                if replay[0]:
                    if self._recover():
                        return
                    todo = self._uncommitted
                else:
                    self._confirm()
                    todo = [batch]
                for b in todo:
                    self._apply(b)
                if batch.open_txn:
                    self._send_later()  # what it queued goes before the next batch's changes
                else:
                    self._save_position(json.dumps(batch.position, sort_keys=True))
                    self._sent = batch if self._commit_later() else None
            finally:
                self._deferring = False

        def reconnected() -> None:
            replay[0] = True
            if self._uncommitted_events > REPLAY_LIMIT and len(self._uncommitted) > 1:
                raise SinkError(
                    f"{self.label} connection lost inside a source transaction of more than "
                    f"{REPLAY_LIMIT} changes: restarting from the last committed position",
                    retryable=True,
                )

        def refused() -> None:
            replay[0] = True

        self._retrying(attempt, reconnected, refused)
        if not batch.open_txn and self._sent is None:
            self._confirmed(batch)

    # --- connection, retries ---------------------------------------------------------------

    def _confirm(self) -> None:
        """Wait for the answer to a commit sent without waiting: its batches are committed."""
        sent = self._sent
        self._settle()
        self._sent = None
        if sent is not None:
            self._confirmed(sent)

    def _confirmed(self, batch: ChangeBatch) -> None:
        """``batch`` (one of ``_uncommitted``, whole transactions up to it) is committed."""
        self._committed = batch.position
        for i in range(len(self._uncommitted) - 1, -1, -1):
            if self._uncommitted[i] is batch:
                del self._uncommitted[: i + 1]
                break
        self._uncommitted_events = sum(len(b.events) for b in self._uncommitted)

    def _recover(self) -> bool:
        """On a new connection, or after a rollback: the batches of ``_uncommitted`` whose
        transaction the target committed after all (a connection lost after the COMMIT went
        out, or while a deferred commit was in flight) are found by the position it holds and
        dropped from it; True when none is left (the current batch's commit is among them)."""
        self._sent = None
        text = self._load_position()
        if text is None:
            return False
        held = json.loads(text)
        for i in range(len(self._uncommitted) - 1, -1, -1):
            b = self._uncommitted[i]
            if not b.open_txn and json.loads(json.dumps(b.position, sort_keys=True)) == held:
                self._confirmed(b)
                break
        return not self._uncommitted

    def _drop(self) -> None:
        self._connected = False
        self._plans.clear()
        self._catalogs.clear()
        self._schemas_made.clear()
        with contextlib.suppress(Exception):  # already broken: nothing more to release
            self._disconnect()

    def _open(self) -> None:
        self._connect()
        self._connected = True
        self._ensure_state()
        text = self._load_position()
        self._commit()
        if not self._loaded:
            self._committed = None if text is None else json.loads(text)

    def _retrying(
        self,
        attempt: Callable[[], None],
        reconnected: Callable[[], None] | None = None,
        refused: Callable[[], None] | None = None,
    ) -> None:
        delay = 0.5
        while True:
            try:
                if not self._connected:
                    self._open()
                    if reconnected is not None:
                        reconnected()
                attempt()
                if self._down:
                    log.info("%s available again: applying", self.label)
                    self._down = False
                return
            except SinkError:
                self._abandon()
                raise
            except DeferredRefusal as e:
                # Rolled back; the batches are applied again statement by statement (refused
                # is always given where anything may be deferred).
                self._abandon()
                if refused is None:
                    raise SinkError(f"{self.label} failed: {self._describe(e.cause)[0]}") from e
                refused()
                continue
            except Exception as e:
                if not self._is_down(e):
                    self._abandon()
                    raise SinkError(f"{self.label} failed: {self._describe(e)[0]}") from e
                self._drop()
                if not self._down:
                    self._down = True
                    log.warning(
                        "%s unavailable (%s): retrying with backoff; nothing is acknowledged "
                        "meanwhile",
                        self.label,
                        str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__,
                    )
                if self._interrupted.wait(delay):
                    raise SinkError(
                        f"{self.label} unavailable: gave up on stop ({e})", retryable=True
                    ) from e
                delay = min(delay * 2, self.options.max_retry_backoff_s)

    def _abandon(self) -> None:
        """Roll back after a refusal; the plans and catalogs may describe rolled-back DDL."""
        self._sent = None
        if self._connected:
            try:
                self._rollback()
            except Exception:
                self._drop()
                return
        self._plans.clear()
        self._catalogs.clear()
        self._schemas_made.clear()

    # --- apply ------------------------------------------------------------------------------

    def _apply(self, batch: ChangeBatch) -> None:
        events = batch.events
        # Every table version of the batch first, in order: a newer version may alter the
        # table (DDL), after which the plans of older versions are made again against it.
        versions: dict[TableSchema, None] = {}
        prev: TableSchema | None = None
        for ev in events:
            if type(ev) is RowChange and ev.table is not prev:
                prev = ev.table
                if prev.form != "message":  # logical decoding messages: no table to apply to
                    versions[prev] = None
        plans = self._plans
        for _ in range(2):
            for version in versions:
                if version not in plans:
                    self._prepare(version)
        pending: dict[TargetTable, _Pending] = {}
        prev = None
        plan: TablePlan | None = None
        p: _Pending | None = None
        ops: dict[Any, tuple[TablePlan, list[Any], bool, tuple[int, ...], bool]] = {}
        ph: tuple[Any, ...] = ()
        moved = -1  # the index of a create applied with its delete (a primary-key change)
        for i, ev in enumerate(events):
            if type(ev) is not RowChange or i == moved:
                continue
            if ev.table is not prev:
                prev = ev.table
                if prev.form == "message":
                    prev = None
                    continue
                plan = plans[prev]
                p = pending.get(plan.target)
                if p is None:
                    p = pending[plan.target] = _Pending()
                ops, ph = p.ops, plan.placeholders
            assert plan is not None and p is not None
            op = ev.op
            if op == "t":
                p.truncate = True
                ops.clear()
                continue
            values = ev.before if op == "d" else ev.after
            if values is None:
                continue
            row = plan.row(values)
            if op == "d" and ph and i + 1 < len(events):
                nxt = events[i + 1]
                if (
                    type(nxt) is RowChange
                    and nxt.op == "c"
                    and nxt.table is ev.table
                    and nxt.after is not None
                    and any(u in nxt.after for u in ph)
                    and nxt.source == ev.source  # shared per transaction without details
                ):
                    # A primary-key change (the source's delete and create of one update) whose
                    # new image lacks a value the update left alone (an unchanged TOASTed
                    # value): the target's row moves to the new key and keeps that value. What
                    # came before it is applied first, so that the row it moves is current.
                    for target, pend in pending.items():
                        self._flush(target, pend)
                    pending.clear()
                    prev = None
                    self._move_row(plan, row, plan.row(nxt.after), nxt.after)
                    moved = i + 1
                    continue
            mask: tuple[int, ...] = ()
            if (
                ph
                and op != "d"
                and (ph[0] in values or (len(ph) > 1 and any(u in values for u in ph[1:])))
            ):
                mask = tuple(
                    pos for pos, i in enumerate(plan.idx) if values[i] in UNAVAILABLE_VALUES
                )
            key = plan.key(row)
            had = ops.get(key)
            fresh = (op == "c" or op == "r") if had is None else had[4]
            ops[key] = (plan, row, op == "d", mask, fresh)
        for target, pend in pending.items():
            self._flush(target, pend)

    def _move_row(
        self, plan: TablePlan, old: list[Any], row: list[Any], values: Sequence[Any]
    ) -> None:
        """The row under ``old``'s key takes ``row``'s key and its values but those ``values``
        lacks (unchanged TOASTed values), keeping its own for them; without a row under the
        old key, ``row`` is upserted as it is (those columns left alone)."""
        mask = tuple(pos for pos, i in enumerate(plan.idx) if values[i] in UNAVAILABLE_VALUES)
        old_key = [old[i] for i in plan.key_pos]

        def step() -> None:
            if not self._update_row(plan, old_key, row, mask):
                self._upsert(plan, [row], mask)

        self._run(plan.target, (plan, [row], mask), step)

    def _flush(self, target: TargetTable, p: _Pending) -> None:
        if p.truncate:
            self._run(target, None, lambda: self._truncate(target))
        deletes: dict[int, tuple[TablePlan, list[list[Any]]]] = {}
        upserts: dict[tuple[int, tuple[int, ...], bool], tuple[TablePlan, list[list[Any]]]] = {}
        for plan, row, deleted, mask, fresh in p.ops.values():
            if deleted:
                d = deletes.get(id(plan))
                if d is None:
                    d = deletes[id(plan)] = (plan, [])
                d[1].append([row[i] for i in plan.key_pos])
                continue
            fresh = fresh and not mask
            g = upserts.get((id(plan), mask, fresh))
            if g is None:
                g = upserts[(id(plan), mask, fresh)] = (plan, [])
            g[1].append(row)
        for plan, keys in deletes.values():
            self._run(target, None, lambda plan=plan, keys=keys: self._delete(plan, keys))  # type: ignore[misc]
        for (_, mask, fresh), (plan, rows) in upserts.items():
            write = self._insert if fresh else self._upsert
            self._run(
                target,
                (plan, rows, mask),
                lambda plan=plan, rows=rows, mask=mask, write=write: write(plan, rows, mask),  # type: ignore[misc]
            )

    def _run(
        self,
        target: TargetTable,
        rows: tuple[TablePlan, list[list[Any]], tuple[int, ...]] | None,
        step: Callable[[], None],
    ) -> None:
        """Run one statement; a refusal becomes a fatal SinkError naming the row it concerns."""
        try:
            step()
        except Exception as e:
            if self._is_down(e) or isinstance(e, DeferredRefusal):
                raise
            message, column = self._describe(e)
            where = f"table {target}"
            if rows is not None:
                plan, batch_rows, mask = rows
                found = self._locate(plan, batch_rows, mask)
                if found is not None:
                    row, e2 = found
                    message, column = self._describe(e2)
                    keys = ", ".join(
                        f"{n}={row[i]!r}" for n, i in zip(plan.key_names, plan.key_pos, strict=True)
                    )
                    where += f" (key {keys})"
                else:
                    where += f" (one of {len(batch_rows)} rows)"
            if column:
                where += f", column {column}"
            raise SinkError(
                f"{self.label} refused a change to {where}: {message}; the position was not "
                "advanced: fix the target (or the source row) and restart the pipeline"
            ) from e

    def _locate(
        self, plan: TablePlan, rows: list[list[Any]], mask: tuple[int, ...]
    ) -> tuple[list[Any], BaseException] | None:
        """The first row the target refuses on its own (tried one by one, then rolled back)."""
        if len(rows) == 1:
            try:
                self._rollback()
                self._upsert(plan, rows, mask)
            except Exception as e:
                return (rows[0], e) if not self._is_down(e) else None
            return None
        try:
            self._rollback()
            for row in rows[:LOCATE_LIMIT]:
                try:
                    self._upsert(plan, [row], mask)
                except Exception as e:
                    if self._is_down(e):
                        return None
                    return row, e
        except Exception:
            return None
        finally:
            with contextlib.suppress(Exception):
                self._rollback()
        return None

    # --- schema -----------------------------------------------------------------------------

    def target_of(self, version: TableSchema) -> TargetTable:
        """Where a source table's rows go (``tables`` map, ``table_prefix``, the schema)."""
        opts = self.options
        mapped = opts.tables.get(version.qualified)
        schema = self.default_schema or version.namespace
        if mapped is None:
            return TargetTable(schema, opts.table_prefix + version.table)
        if "." in mapped:
            s, t = mapped.split(".", 1)
            return TargetTable(s, t)
        return TargetTable(schema, mapped)

    def mapping(self, version: TableSchema, col: Column, key: bool) -> Mapping:
        m = map_column(col.avro, self.dialect, key)
        override = self.options.column_types.get(f"{version.qualified}.{col.name}")
        return Mapping(override, m.convert, "override") if override else m

    def _prepare(self, version: TableSchema) -> TablePlan:
        target = self.target_of(version)
        if not version.key:
            raise SinkError(
                f"table {version.qualified} has no primary key: the {self.label} applies "
                f"changes by primary key; add one to the source table (ALTER TABLE ... ADD "
                f"PRIMARY KEY) or leave {version.qualified} out of the source's tables"
            )
        seen = self._versions.setdefault(target, [])
        if version not in seen:
            seen.append(version)
        maps = [self.mapping(version, c, i in version.key) for i, c in enumerate(version.columns)]
        if seen[-1] is version:  # the newest version of the table decides its shape
            before = seen[-2] if len(seen) > 1 else None
            self._sync(version, before, target, maps)
        catalog = self._catalog_of(target) or {}
        idx = [i for i, c in enumerate(version.columns) if c.name in catalog]
        names = [version.columns[i].name for i in idx]
        convs = []
        for pos, i in enumerate(idx):
            conv = maps[i].convert
            if conv is not None:
                convs.append((pos, conv))
        key_pos = [idx.index(k) for k in version.key if k in idx]
        if len(key_pos) != len(version.key):
            raise SinkError(
                f"{self.label} table {target} lacks a key column of {version.qualified}: add it "
                "or drop the target table so that it is created again"
            )
        types = [catalog[n] for n in names]
        kinds = {m.kind for m in maps}
        placeholders: tuple[Any, ...] = ()
        if kinds & {"string", "Json", "Xml", "Ltree", "TsVector", "Enum", "array"}:
            placeholders += (UNAVAILABLE,)
        if kinds & {"bytes", "array"}:
            placeholders += (UNAVAILABLE_BYTES,)
        if "array" in kinds:
            placeholders = (*UNAVAILABLE_VALUES,)
        plan = TablePlan(version, target, names, types, idx, convs, key_pos, placeholders)
        self._plans[version] = plan
        if seen[-1] is version:
            # Plans of older versions were made against the table's shape before this one.
            stale = [v for v, p in self._plans.items() if v is not version and p.target == target]
            for other in stale:
                del self._plans[other]
        return plan

    def _catalog_of(self, target: TargetTable) -> dict[str, str] | None:
        if target not in self._catalogs:
            self._catalogs[target] = self._catalog(target)
        return self._catalogs[target]

    def _sync(
        self,
        version: TableSchema,
        before: TableSchema | None,
        target: TargetTable,
        maps: list[Mapping],
    ) -> None:
        """Make the target table fit ``version`` (the newest seen; ``before`` the one before)."""
        catalog = self._catalog_of(target)
        if catalog is None:
            if target.schema not in self._schemas_made:
                self._create_schema(target.schema)
                self._schemas_made.add(target.schema)
            cols = [
                f"{self.quote(c.name)} {m.sql_type}" + (" NOT NULL" if i in version.key else "")
                for i, (c, m) in enumerate(zip(version.columns, maps, strict=True))
            ]
            key = ", ".join(self.quote(version.columns[i].name) for i in version.key)
            self._ddl(
                target,
                None,
                "create the table",
                f"CREATE TABLE {self.qualified(target)} ({', '.join(cols)}, PRIMARY KEY ({key}))",
            )
            log.info("%s: created table %s for %s", self.label, target, version.qualified)
            self._catalogs.pop(target, None)
            return
        changed = False
        names = {c.name for c in version.columns}
        if before is not None:
            for c in before.columns:
                if c.name not in names and c.name in catalog:
                    self._ddl(
                        target,
                        c.name,
                        "drop the column",
                        f"ALTER TABLE {self.qualified(target)} DROP COLUMN {self.quote(c.name)}",
                    )
                    changed = True
        for i, (c, m) in enumerate(zip(version.columns, maps, strict=True)):
            have = catalog.get(c.name)
            if have is None:
                default = ""
                if c.default is not NO_DEFAULT and c.default is not None:
                    value = c.default if m.convert is None else m.convert(c.default)
                    default = f" DEFAULT {self._literal(value)}"
                self._ddl(
                    target,
                    c.name,
                    f"add the column as {m.sql_type}",
                    f"ALTER TABLE {self.qualified(target)} ADD COLUMN {self.quote(c.name)} "
                    f"{m.sql_type}{default}",
                )
                changed = True
            elif m.kind != "override" and not self.same_type(have, m.sql_type):
                if widens(have, m.sql_type):
                    self._ddl(
                        target,
                        c.name,
                        f"widen the column from {have} to {m.sql_type}",
                        self._alter_type(target, c.name, m.sql_type),
                    )
                    changed = True
                elif not widens(m.sql_type, have):
                    raise SinkError(
                        f"cannot apply a type change to {self.label} table {target}, column "
                        f"{c.name}: {have} -> {m.sql_type} (from {version.qualified}) is not a "
                        "widening; alter the target column yourself, or set column_types "
                        f"{version.qualified}.{c.name}, then restart the pipeline"
                    )
            _ = i
        if changed:
            log.info("%s: table %s now follows %s", self.label, target, version.qualified)
            self._catalogs.pop(target, None)

    def _ddl(self, target: TargetTable, column: str | None, what: str, sql: str) -> None:
        try:
            self._execute(sql)
        except Exception as e:
            if self._is_down(e) or isinstance(e, DeferredRefusal):
                raise
            on = f"table {target}" + (f", column {column}" if column else "")
            raise SinkError(
                f"{self.label} cannot {what} ({on}): {self._describe(e)[0]}; statement: {sql}"
            ) from e

    def qualified(self, target: TargetTable) -> str:
        return f"{self.quote(target.schema)}.{self.quote(target.table)}"

    def key_list(self, names: Iterable[str]) -> str:
        return ", ".join(self.quote(n) for n in names)
