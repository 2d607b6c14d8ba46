"""``cdc verify``: do a pipeline's source tables and its database target's tables hold the same
rows? Compared by checksums each server computes over primary-key ranges, never by pulling
every row into Python.

How (docs/verify.md has the user's view):

1. Each side describes its tables (columns, their types, the primary key). Every compared column
   gets a canonical text form, written in SQL per side from that side's own column type
   (``SqlSide.canonical``), so that the same value prints the same on Postgres and on MySQL
   (decimals without trailing zeros, times as microseconds, timestamps in UTC with six
   fractional digits, bytes as lower-case hex, booleans as 1/0; floats rounded to 6 decimal
   places: the one approximate comparison). A row's hash is the SHA-256 of its columns' canonical
   texts; a range's checksum is its row count and the sum of the first 60 bits of its rows'
   hashes (order-independent, so the two servers may scan in any order).
2. The source is read in one snapshot, at a source point P (a Postgres WAL position, a binlog
   file and offset). The target is read in one snapshot too, once its position table says it
   has applied the source through P (waited for, up to ``timeout``): Q, at or past P.
3. The table is cut into ranges of about ``chunk`` rows at source keys; ranges whose checksums
   differ are split at the median key of the side holding more rows, down to ranges of at most
   ``LEAF`` rows, whose rows' hashes are fetched and matched by their canonical key text (so a
   key that the two servers' collations order differently is still matched).
4. The target may be past P (the pipeline runs on): a key found different is read again from
   the source in a new snapshot P' (taken after Q); if its source row is the same at P and at
   P' it was the same at Q too, and the difference is real. Keys whose source row changed in
   between are checked again, up to ``ROUNDS`` times, then reported as unsettled.

The driver-facing part (connections, SQL per dialect) is in ``sources/postgres/_verify.py`` and
``sources/mysql/_verify.py``: subclasses of ``SqlSide``. This module imports no driver. The
command (which databases, tables and positions a config means) is ``cdc.verifycmd``; this one
stays whole (some 500 lines) because the side's SQL, the bisection and the confirmation are one
algorithm whose steps above refer to each other.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdc.errors import ConfigError

log = logging.getLogger(__name__)

Key = tuple[Any, ...]
LEAF = 256  # a differing range of at most this many rows (on both sides) is compared row by row
ROUNDS = 5  # how often a key whose source row keeps changing is checked again
CANDIDATE_LIMIT = 10000  # rows found apart in a table before further differing ranges are
# only counted
SEP = "\x1f"  # between the canonical texts of a row's columns (unit separator)
NULL = "\\N"  # the canonical text of NULL


class VerifyError(ConfigError):
    """A usage or configuration problem of ``cdc verify`` (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__([message])


@dataclass(frozen=True, slots=True)
class TableRef:
    schema: str  # Postgres schema, MySQL database
    table: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A column as its server's catalog describes it: ``data_type`` lower-case
    (information_schema.columns.data_type), ``column_type`` the full type (MySQL's
    COLUMN_TYPE, Postgres' format_type)."""

    name: str
    data_type: str
    column_type: str


@dataclass
class Plan:
    """What is compared of one table: the compared columns of each side (same names, same
    order; the key's first) and the key columns."""

    source: TableRef
    target: TableRef
    key: list[str]
    source_columns: list[ColumnInfo]
    target_columns: list[ColumnInfo]
    missing: list[str] = field(default_factory=list)  # source columns the target lacks


class SqlSide:
    """One database of a verify, read inside one snapshot at a time. A dialect subclass gives
    ``_query``, quoting, the canonical text of a column, the snapshot statements and how to
    read the current source point and the target's applied position."""

    label = "database"
    dialect = "sql"

    # --- what a dialect provides ------------------------------------------------------------

    def _execute(self, sql: str, params: list[Any] | None) -> list[tuple[Any, ...]]:
        """Run one statement (``%s`` placeholders, literal ``%`` doubled when ``params`` is
        not None) and return its rows."""
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # Statements are written with literal percent signs doubled, as the drivers want them
        # when they format parameters in; without parameters they send the text as it is.
        if not params:
            return self._execute(sql.replace("%%", "%"), None)
        return self._execute(sql, list(params))

    def quote(self, name: str) -> str:
        raise NotImplementedError

    def canonical(self, expr: str, column: ColumnInfo) -> str:
        """SQL giving the canonical text of ``expr`` (a value of ``column``), NULL for NULL."""
        raise NotImplementedError

    def _row_hash(self, texts: list[str]) -> str:
        """SQL of the SHA-256 (64 hex digits) of the texts' UTF-8 joined by SEP, NULL as
        NULL's text."""
        raise NotImplementedError

    def _hash_sum(self, hash_sql: str) -> str:
        """SQL of the sum of the first 60 bits of the hashes as an exact integer."""
        raise NotImplementedError

    def snapshot(self) -> None:
        """End the open snapshot (if any) and start a consistent read-only one."""
        raise NotImplementedError

    def point(self) -> Any:
        """Source: where the source is now (a position the target's can be compared with)."""
        raise NotImplementedError

    def nudge(self) -> None:
        """Source: write something to the change stream (outside any captured table) so that the
        pipeline's next heartbeat position passes the point just read. Optional."""

    def applied(self, state: TableRef, pipeline: str) -> dict[str, Any] | None:
        """Target: the position the pipeline applied through, as the target's state table
        holds it in the current snapshot; None when it holds none."""
        raise NotImplementedError

    def describe(self, t: TableRef) -> tuple[list[ColumnInfo], list[str]] | None:
        """Columns in order and primary-key columns of ``t``; None when it does not exist."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # --- shared SQL ---------------------------------------------------------------------------

    def _name(self, t: TableRef) -> str:
        return f"{self.quote(t.schema)}.{self.quote(t.table)}"

    def _texts(self, cols: list[ColumnInfo]) -> list[str]:
        return [self.canonical(self.quote(c.name), c) for c in cols]

    def _range(self, key: list[str], lo: Key | None, hi: Key | None) -> tuple[str, list[Any]]:
        cols = "(" + ", ".join(self.quote(k) for k in key) + ")"
        marks = "(" + ", ".join(["%s"] * len(key)) + ")"
        parts, params = [], []
        if lo is not None:
            parts.append(f"{cols} > {marks}")
            params += list(lo)
        if hi is not None:
            parts.append(f"{cols} <= {marks}")
            params += list(hi)
        return (" WHERE " + " AND ".join(parts) if parts else ""), params

    def checksum(
        self, t: TableRef, cols: list[ColumnInfo], key: list[str], lo: Key | None, hi: Key | None
    ) -> tuple[int, int]:
        where, params = self._range(key, lo, hi)
        h = self._row_hash(self._texts(cols))
        rows = self._query(
            f"SELECT count(*), {self._hash_sum(h)} FROM {self._name(t)}{where}", params
        )
        n, s = rows[0]
        return int(n), int(s or 0)

    def boundaries(self, t: TableRef, key: list[str], every: int) -> list[Key]:
        """Every ``every``-th key in key order (the last rows' range ends open)."""
        k = ", ".join(self.quote(c) for c in key)
        rows = self._query(
            f"SELECT {k} FROM (SELECT {k}, row_number() OVER (ORDER BY {k}) AS cdc_rn "
            f"FROM {self._name(t)}) AS numbered WHERE MOD(cdc_rn, {int(every)}) = 0 ORDER BY {k}"
        )
        return [tuple(r) for r in rows]

    def split(self, t: TableRef, key: list[str], lo: Key | None, hi: Key | None, n: int) -> Key:
        """The key of the ``n``-th row (from 1) of the range, in key order."""
        where, params = self._range(key, lo, hi)
        k = ", ".join(self.quote(c) for c in key)
        rows = self._query(
            f"SELECT {k} FROM {self._name(t)}{where} ORDER BY {k} LIMIT 1 OFFSET {int(n) - 1}",
            params,
        )
        return tuple(rows[0])

    def rows(
        self,
        t: TableRef,
        cols: list[ColumnInfo],
        key: list[str],
        lo: Key | None,
        hi: Key | None,
        keys: Sequence[Key] | None = None,
    ) -> dict[str, tuple[Key, str]]:
        """Canonical key text -> (key values, row hash) of the rows of a range, or of ``keys``."""
        nk = len(key)
        k = ", ".join(self.quote(c) for c in key)
        if keys is None:
            where, params = self._range(key, lo, hi)
        else:
            one = "(" + ", ".join(["%s"] * nk) + ")"
            where = f" WHERE ({k}) IN ({', '.join([one] * len(keys))})"
            params = [v for kv in keys for v in kv]
        texts = self._texts(cols)
        rows = self._query(
            f"SELECT {k}, {', '.join(texts[:nk])}, {self._row_hash(texts)} "
            f"FROM {self._name(t)}{where}",
            params,
        )
        out: dict[str, tuple[Key, str]] = {}
        for r in rows:
            text = SEP.join(NULL if v is None else str(v) for v in r[nk : 2 * nk])
            out[text] = (tuple(r[:nk]), str(r[2 * nk]))
        return out


# --- comparing -----------------------------------------------------------------------------------


@dataclass
class Difference:
    key: str  # "id=5" or "a=1, b=x"
    what: str  # "differs", "missing in the target", "only in the target", "unsettled"


@dataclass
class TableResult:
    plan: Plan
    rows: int = 0  # source rows compared
    differences: list[Difference] = field(default_factory=list)
    problem: str | None = None  # a table or key missing: nothing compared
    unresolved_ranges: int = 0  # differing ranges not bisected (past CANDIDATE_LIMIT)
    unresolved_rows: int = 0  # the rows of those ranges (the larger side's count)


def plan_table(
    source: SqlSide, target: SqlSide, s: TableRef, t: TableRef
) -> tuple[Plan | None, str | None]:
    """The comparison plan of one table, or why there is none."""
    sd = source.describe(s)
    if sd is None:
        return None, f"source table {s} does not exist"
    td = target.describe(t)
    if td is None:
        return None, f"target table {t} does not exist (the pipeline creates it at its first row)"
    scols, skey = sd
    tcols, _ = td
    if not skey:
        return None, f"source table {s} has no primary key: verify compares by primary key"
    tby = {c.name: c for c in tcols}
    missing = [c.name for c in scols if c.name not in tby]
    if any(k in missing for k in skey):
        return None, f"target table {t} lacks key column(s) {', '.join(missing)}"
    order = skey + [c.name for c in scols if c.name not in skey and c.name not in missing]
    sby = {c.name: c for c in scols}
    return (
        Plan(s, t, skey, [sby[n] for n in order], [tby[n] for n in order], missing),
        None,
    )


class _Candidates:
    """Rows found different by range, matched by key text across the whole table."""

    def __init__(self) -> None:
        self.source: dict[str, tuple[Key, str]] = {}
        self.target: dict[str, tuple[Key, str]] = {}

    def add(self, src: dict[str, tuple[Key, str]], tgt: dict[str, tuple[Key, str]]) -> None:
        for k, v in src.items():
            if tgt.get(k, (None, None))[1] != v[1]:
                self.source[k] = v
        for k, v in tgt.items():
            if src.get(k, (None, None))[1] != v[1]:
                self.target[k] = v

    def keys(self) -> dict[str, Key]:
        """Key text -> key values of the rows still different (a pair matched across ranges
        with equal hashes is not)."""
        out: dict[str, Key] = {}
        for k in set(self.source) | set(self.target):
            s, t = self.source.get(k), self.target.get(k)
            if s is not None and t is not None and s[1] == t[1]:
                continue
            out[k] = (s or t)[0]  # type: ignore[index]
        return out


def _bisect(
    source: SqlSide,
    target: SqlSide,
    plan: Plan,
    lo: Key | None,
    hi: Key | None,
    counts: tuple[int, int],
    found: _Candidates,
) -> None:
    """Split a differing range until it is small, then match its rows (recursion depth is the
    log2 of the range's rows)."""
    ns, nt = counts
    if ns <= LEAF and nt <= LEAF:
        found.add(
            source.rows(plan.source, plan.source_columns, plan.key, lo, hi),
            target.rows(plan.target, plan.target_columns, plan.key, lo, hi),
        )
        return
    side, table, n = (source, plan.source, ns) if ns >= nt else (target, plan.target, nt)
    mid = side.split(table, plan.key, lo, hi, n // 2)
    for a, b in ((lo, mid), (mid, hi)):
        s = source.checksum(plan.source, plan.source_columns, plan.key, a, b)
        t = target.checksum(plan.target, plan.target_columns, plan.key, a, b)
        if s != t:
            _bisect(source, target, plan, a, b, (s[0], t[0]), found)


def _key_label(plan: Plan, text: str) -> str:
    parts = text.split(SEP)
    return ", ".join(f"{k}={v}" for k, v in zip(plan.key, parts, strict=False))


@dataclass
class Verifier:
    """Compares tables of a source and a target (see the module docstring).

    ``reached(applied, point)``: whether the target's applied position covers the source point
    (the source plugin's notion of order). ``say`` prints progress lines.
    """

    source: SqlSide
    target: SqlSide
    pipeline: str
    state: TableRef
    reached: Callable[[dict[str, Any] | None, Any], bool]
    chunk: int = 10000
    timeout_s: float = 120.0
    say: Callable[[str], None] = print
    behind: str | None = None  # set when the target had not reached the point in time

    def _catch_up(self, point: Any) -> None:
        """Start a target snapshot in which it has applied the source through ``point``
        (polling its state table); after ``timeout_s`` go on with the snapshot it has."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.05
        self.source.nudge()
        while True:
            self.target.snapshot()
            applied = self.target.applied(self.state, self.pipeline)
            if self.reached(applied, point):
                return
            if time.monotonic() >= deadline:
                self.behind = (
                    f"the target had not applied the source through {_show(point)} after "
                    f"{self.timeout_s:g} s (it is at {_show(applied)}): is the pipeline "
                    "running? rows changed since are reported as differences"
                )
                self.say(f"warning: {self.behind}")
                return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def run(self, tables: list[tuple[TableRef, TableRef]]) -> list[TableResult]:
        plans: list[tuple[Plan | None, TableResult]] = []
        for s, t in tables:
            plan, problem = plan_table(self.source, self.target, s, t)
            res = TableResult(plan or Plan(s, t, [], [], []), problem=problem)
            plans.append((plan, res))
        self.source.snapshot()
        point = self.source.point()
        self._catch_up(point)
        pending: list[tuple[Plan, TableResult, dict[str, Key]]] = []
        for plan, res in plans:
            if plan is None:
                continue
            found = self._compare(plan, res)
            if found:
                pending.append((plan, res, found))
        self._confirm(pending)
        return [res for _, res in plans]

    def _compare(self, plan: Plan, res: TableResult) -> dict[str, Key]:
        src, tgt = self.source, self.target
        bounds: list[Key | None] = [None, *src.boundaries(plan.source, plan.key, self.chunk)]
        bounds.append(None)
        log.info(
            "verify %s -> %s: %d key range(s) of about %d rows",
            plan.source,
            plan.target,
            len(bounds) - 1,
            self.chunk,
        )
        found = _Candidates()
        for lo, hi in itertools.pairwise(bounds):
            s = src.checksum(plan.source, plan.source_columns, plan.key, lo, hi)
            t = tgt.checksum(plan.target, plan.target_columns, plan.key, lo, hi)
            res.rows += s[0]
            if s == t:
                continue
            if len(found.source) + len(found.target) >= CANDIDATE_LIMIT:
                # Past this many rows apart, naming more keys helps nobody and would pull
                # the table into memory: the rest of the differing ranges are only counted.
                res.unresolved_ranges += 1
                res.unresolved_rows += max(s[0], t[0])
                continue
            _bisect(src, tgt, plan, lo, hi, (s[0], t[0]), found)
        return found.keys()

    def _confirm(self, pending: list[tuple[Plan, TableResult, dict[str, Key]]]) -> None:
        """Keep the differences that stand while the source row did not change (module
        docstring, step 4). The first round reads the snapshots the differences were found
        in; each later one waits for the target to pass the source's snapshot again."""
        for round_ in range(ROUNDS):
            if not pending:
                return
            if round_:
                self._catch_up(self.source.point())

            targets = _read(self.target, pending, True)
            before = _read(self.source, pending, False)
            self.source.snapshot()  # taken after the target's: at or past the target's point
            after = _read(self.source, pending, False)
            still: list[tuple[Plan, TableResult, dict[str, Key]]] = []
            for i, (plan, res, keys) in enumerate(pending):
                again: dict[str, Key] = {}
                for text, kv in keys.items():
                    b, a, t = before[i].get(text), after[i].get(text), targets[i].get(text)
                    if (b and b[1]) != (a and a[1]):
                        again[text] = kv  # the source row changed meanwhile: look again
                    elif (a and a[1]) != (t and t[1]):
                        what = (
                            "missing in the target"
                            if t is None
                            else "only in the target"
                            if a is None
                            else "differs"
                        )
                        res.differences.append(Difference(_key_label(plan, text), what))
                if again:
                    still.append((plan, res, again))
            pending = still
        for plan, res, keys in pending:
            for text in keys:
                res.differences.append(
                    Difference(_key_label(plan, text), "unsettled (changed at every check)")
                )


def _read(
    side: SqlSide, pending: list[tuple[Plan, TableResult, dict[str, Key]]], target: bool
) -> list[dict[str, tuple[Key, str]]]:
    """The rows of the pending keys of each table, on one side, in its current snapshot."""
    return [
        side.rows(
            p.target if target else p.source,
            p.target_columns if target else p.source_columns,
            p.key,
            None,
            None,
            list(keys.values()),
        )
        for p, _, keys in pending
    ]


def _show(position: Any) -> str:
    return "nothing" if position is None else json.dumps(position, sort_keys=True, default=str)


def report(
    results: list[TableResult], say: Callable[[str], None], max_keys: int, behind: str | None
) -> int:
    """Print what was found; the exit code (0 equal, 1 not)."""
    bad = 0
    for r in results:
        name = f"{r.plan.source} -> {r.plan.target}"
        if r.problem:
            bad += 1
            say(f"{name}: not compared: {r.problem}")
            continue
        if r.plan.missing:
            bad += 1
            say(f"{name}: the target lacks column(s) {', '.join(r.plan.missing)}")
        if not r.differences and not r.unresolved_ranges:
            say(f"{name}: equal ({r.rows} row{'' if r.rows == 1 else 's'})")
            continue
        bad += 1
        shown = sorted(r.differences, key=lambda d: d.key)[:max_keys]
        more = len(r.differences) - len(shown)
        say(f"{name}: {len(r.differences)} row(s) differ of {r.rows}")
        for d in shown:
            say(f"  {d.key}: {d.what}")
        if more:
            say(f"  ... and {more} more (--max-keys to show more)")
        if r.unresolved_ranges:
            say(
                f"  ... and {r.unresolved_ranges} more key range(s) differ ({r.unresolved_rows} "
                f"rows), not searched past {CANDIDATE_LIMIT} rows apart: repair what is named, "
                "then verify again"
            )
    if bad and behind:
        say(f"note: {behind}")
    return 1 if bad else 0
