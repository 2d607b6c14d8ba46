"""The database targets' shared apply (sinks/_sql) against an in-memory target: net effect per
key, transactions across batches, replay after a lost connection, table versions, the mapping."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest

from cdc import avro
from cdc.errors import SinkError
from cdc.model import ChangeBatch, Column, RowChange, TableSchema, TxBoundary
from cdc.sinks._sql import SqlTarget, TablePlan, TargetTable, map_column, widens
from cdc.sinks._sql._sink import DeferredRefusal
from cdc.sinks._sql._types import civil
from cdc.sinks.postgres.config import PostgresSinkConfig


class Lost(Exception):
    """The fake's connection error."""


class FakeTarget(SqlTarget):
    """A database of dicts with transactions: ``committed`` is what a new session sees."""

    dialect = "postgres"

    def __init__(self) -> None:
        super().__init__(PostgresSinkConfig(type="postgres", dsn="x"), "p", "tgt")
        self.committed_db: dict[str, Any] = {"tables": {}, "position": None}
        self.work: dict[str, Any] | None = None
        self.fail_next = 0  # the next N statements lose the connection
        self.statements: list[str] = []
        self.commits = 0

    def _connect(self) -> None:
        self.work = copy.deepcopy(self.committed_db)

    def _disconnect(self) -> None:
        self.work = None

    def _is_down(self, exc: BaseException) -> bool:
        return isinstance(exc, Lost)

    def _step(self, what: str) -> dict[str, Any]:
        if self.work is None:
            raise Lost("closed")
        if self.fail_next:
            self.fail_next -= 1
            self.work = None
            raise Lost("connection reset")
        self.statements.append(what)
        return self.work

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        db = self._step(sql)
        if sql.startswith("CREATE TABLE"):
            name = sql.split()[2]
            cols = sql[sql.index("(") + 1 : sql.index("PRIMARY KEY")]
            db["tables"][name] = {
                "cols": {c.split()[0].strip('"'): c.split()[1] for c in cols.split(", ") if c},
                "rows": {},
            }
        elif "ADD COLUMN" in sql:
            name, col, typ = sql.split()[2], sql.split()[5].strip('"'), sql.split()[6]
            db["tables"][name]["cols"][col] = typ
        elif "DROP COLUMN" in sql:
            name, col = sql.split()[2], sql.split()[5].strip('"')
            del db["tables"][name]["cols"][col]
            for row in db["tables"][name]["rows"].values():
                row.pop(col, None)

    def _query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return []

    def _commit(self) -> None:
        self._step("COMMIT")
        assert self.work is not None
        self.committed_db = copy.deepcopy(self.work)
        self.commits += 1

    def _rollback(self) -> None:
        if self.work is not None:
            self.work = copy.deepcopy(self.committed_db)

    def quote(self, name: str) -> str:
        return '"' + name + '"'

    def _literal(self, value: Any) -> str:
        return repr(value)

    def _catalog(self, target: TargetTable) -> dict[str, str] | None:
        t = self._step("catalog")["tables"].get(self.qualified(target))
        return None if t is None else dict(t["cols"])

    def _create_schema(self, schema: str) -> None:
        self._step("CREATE SCHEMA")

    def _ensure_state(self) -> None:
        self._step("state")

    def _save_position(self, text: str) -> None:
        self._step("position")["position"] = text

    def _load_position(self) -> str | None:
        position: str | None = self._step("load")["position"]
        return position

    def _upsert(self, plan: TablePlan, rows: list[list[Any]], mask: tuple[int, ...]) -> None:
        table = self._step(f"upsert {plan.target} {len(rows)}")["tables"][
            self.qualified(plan.target)
        ]
        for row in rows:
            key = tuple(row[i] for i in plan.key_pos)
            old = table["rows"].get(key, {})
            new = {n: v for i, (n, v) in enumerate(zip(plan.names, row, strict=True))}
            table["rows"][key] = {**old, **{k: new[k] for i, k in enumerate(new) if i not in mask}}

    def _delete(self, plan: TablePlan, keys: list[list[Any]]) -> None:
        table = self._step(f"delete {plan.target} {len(keys)}")["tables"][
            self.qualified(plan.target)
        ]
        for k in keys:
            table["rows"].pop(tuple(k), None)

    def _truncate(self, target: TargetTable) -> None:
        self._step(f"truncate {target}")["tables"][self.qualified(target)]["rows"].clear()

    def _alter_type(self, target: TargetTable, column: str, sql_type: str) -> str:
        return f"ALTER {target} {column} {sql_type}"

    def rows(self, table: str = "t") -> dict[tuple[Any, ...], dict[str, Any]]:
        rows: dict[tuple[Any, ...], dict[str, Any]] = self.committed_db["tables"][
            f'"tgt"."{table}"'
        ]["rows"]
        return rows


def _table(*cols: str, key: tuple[int, ...] = (0,)) -> TableSchema:
    columns = tuple(Column(c, "int", i not in key, "int") for i, c in enumerate(cols))
    return TableSchema("p.s.t", "s", "t", columns, key)


def _ev(table: TableSchema, op: str, before: Any = None, after: Any = None) -> RowChange:
    return RowChange(table, op, before, after, {}, 0, "e")  # type: ignore[arg-type]


def _batch(*events: Any, pos: int, open_txn: bool = False) -> ChangeBatch:
    return ChangeBatch(list(events), {"n": pos}, open_txn=open_txn)


def test_net_effect_per_key_in_one_batch() -> None:
    t = _table("id", "v")
    sink = FakeTarget()
    assert sink.committed() is None
    sink.write_rows(
        _batch(
            TxBoundary("BEGIN", "1", 0, "b"),
            _ev(t, "c", None, (1, 10)),
            _ev(t, "c", None, (2, 20)),
            _ev(t, "u", (1, 10), (1, 11)),
            _ev(t, "d", (2, 20), None),
            _ev(t, "d", (1, 11), None),  # a primary-key change: delete the old key...
            _ev(t, "c", None, (3, 11)),  # ... create the new one
            _ev(t, "r", None, (4, 40)),
            pos=1,
        )
    )
    assert sink.rows() == {(3,): {"id": 3, "v": 11}, (4,): {"id": 4, "v": 40}}
    assert sink.committed() == {"n": 1} and sink.committed_db["position"] == '{"n": 1}'
    ops = [s for s in sink.statements if s.startswith(("upsert", "delete"))]
    assert ops == ["delete tgt.t 2", "upsert tgt.t 2"]  # one statement of each
    sink.write_rows(
        _batch(_ev(t, "c", None, (5, 50)), _ev(t, "t"), _ev(t, "c", None, (6, 6)), pos=2)
    )
    assert sink.rows() == {(6,): {"id": 6, "v": 6}}


def test_a_source_transaction_over_batches_commits_once_and_is_replayed_after_a_reset() -> None:
    t = _table("id", "v")
    sink = FakeTarget()
    sink.committed()
    sink.write_rows(_batch(_ev(t, "c", None, (1, 1)), pos=1, open_txn=True))
    assert sink.committed() is None and sink.commits == 1  # the state table's commit only
    assert sink.committed_db["tables"] == {} or not sink.rows()
    sink.fail_next = 1  # the connection breaks under the second half
    sink.write_rows(_batch(_ev(t, "c", None, (2, 2)), pos=2))
    assert sink.rows() == {(1,): {"id": 1, "v": 1}, (2,): {"id": 2, "v": 2}}
    assert sink.committed() == {"n": 2}


def test_interrupt_while_the_target_is_down_gives_up_retryably_and_commits_nothing() -> None:
    t = _table("id", "v")
    sink = FakeTarget()
    sink.committed()
    sink.fail_next = 10**6
    sink.interrupt()
    with pytest.raises(SinkError) as e:
        sink.write_rows(_batch(_ev(t, "c", None, (1, 1)), pos=1))
    assert e.value.retryable
    assert sink.committed() is None and sink.committed_db["position"] is None


def test_rows_of_an_older_version_after_a_newer_one_in_the_same_batch() -> None:
    v1 = _table("id", "a", "b")
    v2 = _table("id", "a")  # b dropped
    v3 = _table("id", "a", "c")  # c added
    sink = FakeTarget()
    sink.committed()
    sink.write_rows(_batch(_ev(v1, "c", None, (1, 1, 1)), pos=1))
    sink.write_rows(_batch(_ev(v1, "c", None, (2, 2, 2)), _ev(v2, "c", None, (3, 3)), pos=2))
    assert sink.rows() == {
        (1,): {"id": 1, "a": 1},
        (2,): {"id": 2, "a": 2},
        (3,): {"id": 3, "a": 3},
    }
    sink.write_rows(_batch(_ev(v2, "u", None, (1, 9)), _ev(v3, "c", None, (4, 4, 4)), pos=3))
    assert sink.rows()[(1,)] == {"id": 1, "a": 9}
    assert sink.rows()[(4,)] == {"id": 4, "a": 4, "c": 4}


def test_a_table_without_primary_key_is_refused_by_name() -> None:
    sink = FakeTarget()
    sink.committed()
    with pytest.raises(SinkError, match=r"table s\.t has no primary key") as e:
        sink.write_rows(_batch(_ev(_table("a", key=()), "c", None, (1,)), pos=1))
    assert not e.value.retryable
    assert sink.committed() is None


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        ("integer", "bigint", True),
        ("int(11)", "bigint", True),
        ("bigint", "integer", False),
        ("numeric(10,2)", "numeric(12,2)", True),
        ("numeric(10,2)", "numeric(10,3)", False),
        ("numeric(10,2)", "numeric(11,3)", True),
        ("character varying(20)", "text", True),
        ("real", "double precision", True),
        ("integer", "text", False),
        ("enum('a','b')", "enum('a','b','c')", True),
        ("enum('a','b')", "enum('b','a')", False),
        ("integer", "numeric(12,0)", True),
        ("bigint", "numeric(12,0)", False),
    ],
)
def test_widens(old: str, new: str, ok: bool) -> None:
    assert widens(old, new) is ok


def test_temporal_values_beyond_datetime_reach_postgres_as_text() -> None:
    assert civil(0) == (1970, 1, 1) and civil(19782) == (2024, 2, 29)
    assert civil(-735160) == (-43, 3, 15)  # 44 BC
    date = map_column(avro.DATE, "postgres").convert
    assert date is not None
    assert date(-735160) == "0044-03-15 BC"
    assert date(-2147472692) == "infinity"
    ts = map_column(avro.TIMESTAMP_MICROS, "postgres").convert
    assert ts is not None and ts(-63517780800000000) == "0044-03-15 12:00:00.000000 BC"
    zoned = map_column(avro.ZONED_TIMESTAMP, "postgres").convert
    assert zoned is not None
    assert zoned("-0043-03-15T10:00:00.000000Z") == "0044-03-15 10:00:00.000000Z BC"
    assert zoned("+12345-06-07T08:09:10.500000Z") == "12345-06-07T08:09:10.500000Z"
    clock = map_column(avro.TIME_MICROS, "mysql").convert
    assert clock is not None and clock(-3020399000000) == "-838:59:59.000000"


def test_a_commit_whose_answer_was_lost_is_not_applied_again() -> None:
    t = _table("id", "v")

    class LostAfterCommit(FakeTarget):
        lose = False

        def _commit(self) -> None:
            super()._commit()
            if self.lose:
                self.lose = False
                self.work = None
                raise Lost("connection reset after COMMIT")

    sink = LostAfterCommit()
    sink.committed()
    sink.lose = True
    sink.write_rows(_batch(_ev(t, "c", None, (1, 1)), pos=1))
    assert sink.committed() == {"n": 1}
    last_open = len(sink.statements) - 1 - sink.statements[::-1].index("state")
    after_reconnect = sink.statements[last_open + 1 :]
    assert after_reconnect == ["load", "COMMIT", "load"]  # read the position: committed


def test_example_config_loads_and_bad_target_options_are_located(tmp_path: Any) -> None:
    from pathlib import Path

    from cdc.config import load
    from cdc.errors import ConfigError

    root = Path(__file__).resolve().parents[2]
    sink = load(root / "config" / "mysql-to-postgres.yaml").pipelines[0].sink
    assert sink.type == "postgres" and sink.schema_ == "shop"
    assert sink.column_types == {"shop.orders.prep_time": "interval"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "pipelines:\n  - name: p\n    source: {type: postgres, dsn: x, tables: [public.t]}\n"
        "    sink: {type: mysql, dsn: 'postgres://h', column_types: {t.c: int}, tables: {t: u}}\n"
    )
    with pytest.raises(ConfigError) as e:
        load(bad)
    text = str(e.value)
    assert "pipelines[0].sink.dsn: invalid dsn: use mysql://user:password@host:port" in text
    assert "invalid column_types key 't.c': use namespace.table.column" in text
    assert "invalid tables key 't': use namespace.table" in text


class DeferringTarget(FakeTarget):
    """A driver that sends its commit without waiting (``_commit_later``): the commit happens,
    or is refused (``refuse``), or its connection is lost after it happened (``lose``), when
    ``_settle`` reads the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.defer_from = 1  # every batch (of max_events 5000, from 2500 events on)
        self.held = False
        self.refuse = False
        self.lose = False
        self.deferred = 0

    def _commit_later(self) -> bool:
        if not self._deferring:
            self._commit()
            return False
        self.deferred += 1
        self.held = True
        return True

    def _settle(self, block: bool = True) -> bool:
        if self.held:
            self.held = False
            if self.refuse:
                self.refuse = False
                raise DeferredRefusal(RuntimeError("refused by the target"))
            self._commit()
            if self.lose:
                self.lose = False
                self.work = None
                raise Lost("connection reset after the deferred COMMIT")
        return True

    def _rollback(self) -> None:
        self.held = False
        super()._rollback()


def test_a_deferred_commit_is_acknowledged_only_once_its_answer_is_read() -> None:
    t = _table("id", "v")
    sink = DeferringTarget()
    sink.committed()
    sink.write_rows(_batch(_ev(t, "c", None, (1, 1)), pos=1))
    assert sink.held and sink.committed_db["position"] is None  # sent, not answered
    assert sink.acknowledgeable() == {"n": 1}  # the answer has come: confirmed
    sink.write_rows(_batch(_ev(t, "c", None, (2, 2)), pos=2))
    sink.write_rows(_batch(_ev(t, "c", None, (3, 3)), pos=3))  # confirms 2 first
    assert sink.committed_db["position"] == '{"n": 2}' and sink.held
    sink.close()  # confirms the last
    assert sink.committed_db["position"] == '{"n": 3}'
    assert sink.rows() == {(k,): {"id": k, "v": k} for k in (1, 2, 3)}
    assert sink.deferred == 3


def test_a_refused_deferred_commit_is_replayed_without_deferring() -> None:
    t = _table("id", "v")
    sink = DeferringTarget()
    sink.committed()
    sink.write_rows(_batch(_ev(t, "c", None, (1, 1)), pos=1, open_txn=True))
    sink.write_rows(_batch(_ev(t, "c", None, (2, 2)), pos=2))  # commit sent
    sink.refuse = True
    sink.write_rows(_batch(_ev(t, "c", None, (3, 3)), pos=3))
    # The transaction of 1 and 2 was rolled back and applied again with 3, each statement
    # waited for, and committed at once.
    assert not sink.held and sink.committed_db["position"] == '{"n": 3}'
    assert sink.rows() == {(k,): {"id": k, "v": k} for k in (1, 2, 3)}
    assert sink.acknowledgeable() == {"n": 3}
    assert sink._uncommitted == []


def test_a_connection_lost_after_a_deferred_commit_happened_does_not_apply_it_twice() -> None:
    t = _table("id", "v")
    sink = DeferringTarget()
    sink.committed()
    sink.write_rows(_batch(_ev(t, "c", None, (1, 1)), pos=1))
    sink.lose = True
    sink.write_rows(_batch(_ev(t, "u", (1, 1), (1, 5)), pos=2))
    # The position read after the reconnect says 1 committed: only 2 is applied (replayed).
    upserts = [s for s in sink.statements if s.startswith("upsert")]
    assert upserts == ["upsert tgt.t 1", "upsert tgt.t 1"]
    sink.close()
    assert sink.committed_db["position"] == '{"n": 2}'
    assert sink.rows() == {(1,): {"id": 1, "v": 5}}


def test_a_batch_smaller_than_half_max_events_commits_and_waits() -> None:
    """A small batch was written because the stream paused: nothing more is coming soon, so
    its commit is waited for and it is acknowledgeable at once."""
    t = _table("id", "v")
    sink = DeferringTarget()
    sink.defer_from = 3
    sink.committed()
    sink.write_rows(_batch(_ev(t, "c", None, (1, 1)), _ev(t, "c", None, (2, 2)), pos=1))
    assert not sink.held and sink.committed_db["position"] == '{"n": 1}'
    events = [_ev(t, "c", None, (k, k)) for k in (3, 4, 5)]
    sink.write_rows(_batch(*events, pos=2))
    assert sink.held and sink.deferred == 1
