"""MySQL source without a server: config, type descriptors, TYPES.md's Avro column."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cdc.config import parse
from cdc.errors import ConfigError, SourceError
from cdc.sources.mysql import _tables
from cdc.sources.mysql._schema import SchemaCache
from cdc.sources.mysql._server import format_gtid_state, parse_gtid_state, parse_version
from cdc.sources.mysql._tables import Tables
from cdc.sources.mysql._types import ColumnType, from_binlog, from_catalog, mapping

TYPES_MD = Path(__file__).resolve().parents[2] / "sources" / "mysql" / "TYPES.md"


def _config(**source: Any) -> str:
    import yaml

    src = {"type": "mysql", "server_id": 1000, "tables": ["shop.*"], **source}
    return yaml.safe_dump(
        {"pipelines": [{"name": "p", "source": src, "sink": {"type": "log", "path": "/tmp/x"}}]}
    )


def test_config_defaults_and_dsn() -> None:
    cfg = parse(_config(dsn="mysql://rep:s%40cret@db.example:3307")).pipelines[0].source
    assert (cfg.host, cfg.port, cfg.user, cfg.password) == ("db.example", 3307, "rep", "s@cret")
    assert cfg.snapshot == "initial" and cfg.position_mode == "auto"


def test_config_reports_every_problem_with_its_path() -> None:
    with pytest.raises(ConfigError) as e:
        parse(_config(server_id=0, tables=["nodot"], snapshot="sometimes", password="hunter2"))
    text = "\n".join(e.value.problems)
    assert "pipelines[0].source.server_id" in text
    assert "invalid table pattern 'nodot': use database.table" in text
    assert "pipelines[0].source.snapshot" in text
    assert "hunter2" not in text


def test_config_requires_server_id() -> None:
    import yaml

    text = yaml.safe_dump(
        {
            "pipelines": [
                {
                    "name": "p",
                    "source": {"type": "mysql", "tables": ["a.b"]},
                    "sink": {"type": "log", "path": "/tmp/x"},
                }
            ]
        }
    )
    with pytest.raises(ConfigError, match=r"source.server_id: required field is missing"):
        parse(text)


def test_gtid_state_round_trip() -> None:
    state = parse_gtid_state("1-2-30,0-1-5")
    assert state == {0: "0-1-5", 1: "1-2-30"}
    state[0] = "0-1-6"
    assert format_gtid_state(state) == "0-1-6,1-2-30"
    assert parse_gtid_state(None) == {} and parse_gtid_state("") == {}


def _col(type_code: int, **kw: Any) -> Any:
    base = {"unsigned": False, "character_set_name": None, "enum_values": None, "set_values": None}
    return SimpleNamespace(type=type_code, **{**base, **kw})


@pytest.mark.parametrize(
    ("binlog", "catalog"),
    [
        (_col(1, unsigned=True), ("tinyint", "tinyint(3) unsigned", 3, 0, None, None)),
        (_col(8, unsigned=True), ("bigint", "bigint(20) unsigned", 20, 0, None, None)),
        (_col(246, precision=10, decimals=3), ("decimal", "decimal(10,3)", 10, 3, None, None)),
        (_col(16, bits=12), ("bit", "bit(12)", 12, None, None, None)),
        (
            _col(254, max_length=4, character_set_name="binary"),
            ("binary", "binary(4)", None, None, None, 4),
        ),
        (_col(15, character_set_name="utf8"), ("varchar", "varchar(20)", None, None, None, 80)),
        (_col(252, character_set_name="binary"), ("blob", "blob", None, None, None, 65535)),
        (_col(19, fsp=6), ("time", "time(6)", None, None, 6, None)),
        (_col(18, fsp=3), ("datetime", "datetime(3)", None, None, 3, None)),
        (_col(17, fsp=0), ("timestamp", "timestamp", None, None, 0, None)),
        (
            _col(247, enum_values=["", "a", "it's"]),
            ("enum", "enum('a','it''s')", None, None, None, 4),
        ),
        (_col(248, set_values=["x", "y"]), ("set", "set('x','y')", None, None, None, 3)),
    ],
)
def test_binlog_and_catalog_describe_a_column_alike(binlog: Any, catalog: tuple[Any, ...]) -> None:
    # the snapshot (catalog) and the stream (binlog) must give one schema version
    assert from_binlog(binlog) == from_catalog(*catalog)


def test_json_is_recognised_from_its_check_on_both_sides() -> None:
    assert from_binlog(_col(252, character_set_name="utf8"), is_json=True) == ColumnType("json")
    assert from_catalog("longtext", "longtext", None, None, None, None, True) == ColumnType("json")


_DDL = re.compile(r"^(\w+)(?:\((.*)\))?(?: (unsigned))?$")


def _describe(avro_type: Any) -> tuple[str, str | None]:
    if isinstance(avro_type, str):
        return avro_type, None
    return avro_type["type"], avro_type.get("connect.name") or avro_type.get("connect.type")


def test_types_md_avro_column_is_what_the_mapping_gives() -> None:
    rows = [line for line in TYPES_MD.read_text().splitlines() if line.startswith("| `")]
    assert len(rows) >= 30
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        ddl = cells[0].strip("`")
        m = _DDL.match(ddl)
        assert m, ddl
        name, args, _unsigned = m.groups()
        nums = [int(x) for x in args.split(",")] if args and "'" not in args else []
        if name == "boolean":
            name, ct = "tinyint", "tinyint(1)"
        else:
            ct = ddl
        data_type = {"json": "json"}.get(name, name)
        t = from_catalog(
            data_type,
            ct,
            nums[0] if nums and name in ("decimal", "bit", "float") else None,
            nums[1] if len(nums) > 1 else None,
            nums[0] if nums and name in ("time", "datetime", "timestamp") else None,
            nums[0] if nums and name == "binary" else None,
        )
        base, semantic = _describe(mapping(t).avro)
        assert f"`{base}`" in cells[1], f"{ddl}: Avro type {base!r} not in {cells[1]!r}"
        if semantic is not None:
            assert semantic in cells[1], f"{ddl}: {semantic!r} not in {cells[1]!r}"


def test_mysql_gtid_set_grows_by_merging_each_transaction() -> None:
    # the arithmetic the stream relies on for MySQL positions (uuid:interval sets)
    from pymysqlreplication.gtid import Gtid, GtidSet

    a, b = "3e11fa47-71ca-11e1-9e33-c80aa9429562", "4e11fa47-71ca-11e1-9e33-c80aa9429562"
    s = GtidSet(f"{a}:1-5")
    s.merge_gtid(Gtid(f"{a}:6"))
    s.merge_gtid(Gtid(f"{b}:1"))
    assert str(s) == f"{a}:1-6,{b}:1"


def test_server_versions_parse_and_pick_the_binlog_status_statement() -> None:
    from cdc.sources.mysql._server import Server

    assert parse_version("9.7.4-2") == (9, 7, 4)
    assert parse_version("8.4.3") == (8, 4, 3)
    assert parse_version("10.11.6-MariaDB-0+deb12u1") == (10, 11, 6)
    assert parse_version("8.0.36-log") == (8, 0, 36)
    src = Server.__new__(Server)
    for mariadb, version, statement in [
        (False, (9, 7, 4), "SHOW BINARY LOG STATUS"),
        (False, (8, 4, 0), "SHOW BINARY LOG STATUS"),
        (False, (8, 0, 36), "SHOW MASTER STATUS"),
        (True, (10, 11, 6), "SHOW MASTER STATUS"),
    ]:
        src.is_mariadb, src.version = mariadb, version
        assert src.status_sql == statement


class _Catalog:
    """A cursor whose information_schema.COLUMNS answer is empty ``empty`` times, then one
    INT key column."""

    def __init__(self, empty: int) -> None:
        self.empty = empty
        self.asked = 0

    def execute(self, sql: str, params: Any = None) -> None:
        self.asked += 1

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self.asked <= self.empty:
            return []
        return [("id", "int", "int(11)", 10, 0, None, None, "NO", "PRI", None)]


class _Server:
    is_mariadb = False

    def all(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return [("id", None, "")]


def test_a_table_the_catalog_shows_without_columns_for_a_moment_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A table being altered or truncated while the snapshot starts can show no columns in
    information_schema for a moment: asked again, not read as a table without columns (which
    made a `SELECT  FROM` the server refused); still none after the wait: a retryable error."""
    tables = Tables(_Server(), ["shop.*"], SchemaCache("p"))  # type: ignore[arg-type]
    cur = _Catalog(empty=2)
    version = tables.catalog_version(cur, "shop", "items")
    assert [c.name for c in version.schema.columns] == ["id"] and cur.asked == 3
    monkeypatch.setattr(_tables, "CATALOG_WAIT_S", 0.3)
    with pytest.raises(SourceError) as e:
        tables.catalog_version(_Catalog(empty=10**6), "shop", "gone")
    assert e.value.retryable and "shop.gone has no columns" in str(e.value)
