"""cdc verify's rules while the pipeline runs, on in-memory sides (the SQL is tested on real
servers in tests/integration/test_verify.py): a difference is reported only when the source row
stayed the same around the target's snapshot; a row that keeps changing is unsettled; the target
is read once it applied through the source's point."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from cdc.verify import ColumnInfo, Key, SqlSide, TableRef, Verifier, report

COLS = [ColumnInfo("id", "integer", "integer"), ColumnInfo("v", "text", "text")]
T = TableRef("public", "t")


class MemorySide(SqlSide):
    """A table in memory; ``snapshot()`` freezes the rows ``state()`` gives at that moment."""

    def __init__(self, state: Callable[[], dict[int, str]], position: Callable[[], Any]) -> None:
        self.state = state
        self.position = position
        self.rows_now: dict[int, str] = {}
        self.snapshots = 0
        self.at: Any = None

    def snapshot(self) -> None:
        self.snapshots += 1
        self.rows_now = dict(self.state())
        self.at = self.position()

    def point(self) -> Any:
        return self.at

    def applied(self, state: TableRef, pipeline: str) -> dict[str, Any] | None:
        return {"n": self.at}

    def describe(self, t: TableRef) -> tuple[list[ColumnInfo], list[str]] | None:
        return COLS, ["id"]

    def _in(self, lo: Key | None, hi: Key | None) -> list[int]:
        return sorted(
            k for k in self.rows_now if (lo is None or k > lo[0]) and (hi is None or k <= hi[0])
        )

    @staticmethod
    def _hash(k: int, v: str) -> str:
        return hashlib.md5(f"{k}\x1f{v}".encode()).hexdigest()

    def checksum(
        self, t: TableRef, cols: list[ColumnInfo], key: list[str], lo: Key | None, hi: Key | None
    ) -> tuple[int, int]:
        ks = self._in(lo, hi)
        return len(ks), sum(int(self._hash(k, self.rows_now[k])[:15], 16) for k in ks)

    def boundaries(self, t: TableRef, key: list[str], every: int) -> list[Key]:
        ks = sorted(self.rows_now)
        return [(k,) for i, k in enumerate(ks, 1) if i % every == 0]

    def split(self, t: TableRef, key: list[str], lo: Key | None, hi: Key | None, n: int) -> Key:
        return (self._in(lo, hi)[n - 1],)

    def rows(
        self,
        t: TableRef,
        cols: list[ColumnInfo],
        key: list[str],
        lo: Key | None,
        hi: Key | None,
        keys: Sequence[Key] | None = None,
    ) -> dict[str, tuple[Key, str]]:
        ks = self._in(lo, hi) if keys is None else [k[0] for k in keys if k[0] in self.rows_now]
        return {str(k): ((k,), self._hash(k, self.rows_now[k])) for k in ks}

    def close(self) -> None:
        pass


def run(source: MemorySide, target: MemorySide) -> tuple[int, list[str]]:
    lines: list[str] = []
    v = Verifier(
        source,
        target,
        "p",
        TableRef("cdc", "cdc_positions"),
        lambda applied, point: applied is not None and applied["n"] >= point,
        chunk=100,
        timeout_s=5,
        say=lines.append,
    )
    return report(v.run([(T, T)]), lines.append, 20, v.behind), lines


def test_the_target_is_read_once_it_applied_through_the_source_point() -> None:
    """The target lags: its first snapshots are behind (a row missing); verify reads it again
    until its position reaches the source's, and then finds it equal."""
    rows = {k: f"v{k}" for k in range(1, 1001)}
    lagging = dict(rows)
    del lagging[500]
    polls = iter([1, 2, 3])  # the target's applied position at each of its snapshots
    target = MemorySide(lambda: lagging if target.snapshots < 3 else rows, lambda: next(polls, 3))
    source = MemorySide(lambda: rows, lambda: 3)
    assert run(source, target) == (0, ["public.t -> public.t: equal (1000 rows)"])
    assert target.snapshots == 3


def test_a_row_the_target_has_caught_up_on_is_not_reported_and_a_real_difference_is() -> None:
    """The source changes row 7 after its snapshot and the target (read later, past that
    change) already holds the new value: the source read again agrees, not a difference. Row
    9 was changed in the target by hand: reported."""
    before = {k: f"v{k}" for k in range(1, 301)}
    after = {**before, 7: "changed at the source"}
    states = iter([before, after, after, after])
    source = MemorySide(lambda: next(states), lambda: 1)
    target = MemorySide(lambda: {**after, 9: "by hand"}, lambda: 2)
    code, lines = run(source, target)
    assert lines == ["public.t -> public.t: 1 row(s) differ of 300", "  id=9: differs"]
    assert code == 1


def test_a_row_that_changes_at_every_check_is_unsettled() -> None:
    counter = iter(range(1000))

    def hot() -> dict[int, str]:
        return {1: "a", 2: f"hot {next(counter)}", 3: "c"}

    source = MemorySide(hot, lambda: 1)
    target = MemorySide(lambda: {1: "a", 2: "old", 3: "c"}, lambda: 1)
    code, lines = run(source, target)
    assert lines == [
        "public.t -> public.t: 1 row(s) differ of 3",
        "  id=2: unsettled (changed at every check)",
    ]
    assert code == 1


def test_past_the_candidate_limit_further_differing_ranges_are_only_counted(
    monkeypatch: Any,
) -> None:
    """A target that lost most of a table: verify names keys up to the limit and counts the
    ranges left, rather than fetching every row's hash."""
    import cdc.verify

    monkeypatch.setattr(cdc.verify, "CANDIDATE_LIMIT", 150)
    rows = {k: f"v{k}" for k in range(1, 1001)}
    source = MemorySide(lambda: rows, lambda: 1)
    target = MemorySide(lambda: {k: v for k, v in rows.items() if k <= 100}, lambda: 1)
    code, lines = run(source, target)
    assert lines[0] == "public.t -> public.t: 200 row(s) differ of 1000"
    assert lines[-1].startswith("  ... and 7 more key range(s) differ (700 rows), not searched")
    assert code == 1


def test_a_mysql_target_position_covers_the_point_by_gtids_or_by_binlog_offset() -> None:
    from cdc.sources.mysql._verify import reached

    at = {"file": "bin.000002", "pos": 900}
    # MariaDB: per domain; an idle server's binlog end may lie past the last commit
    assert reached(
        {**at, "gtid": "0-1-21,1-1-5"}, {"file": "bin.000003", "pos": 4, "gtid": "0-1-21"}
    )
    assert not reached({**at, "gtid": "0-1-20"}, {"file": "bin.000003", "pos": 4, "gtid": "0-1-21"})
    # MySQL: as a set
    sid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
    point = {"file": "bin.000003", "pos": 4, "gtid": f"{sid.upper()}:1-5:7"}
    assert reached({**at, "gtid": f"{sid}:1-9"}, point)
    assert not reached({**at, "gtid": f"{sid}:1-5"}, point)
    # without GTIDs: the binlog file and offset
    assert reached({**at, "gtid": None}, {"file": "bin.000002", "pos": 900, "gtid": None})
    assert not reached({**at, "gtid": None}, {"file": "bin.000002", "pos": 901, "gtid": None})
    assert not reached(None, {"file": "bin.000002", "pos": 1, "gtid": None})
