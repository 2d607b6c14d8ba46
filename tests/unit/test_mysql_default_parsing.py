"""MySQL/MariaDB column defaults from information_schema, as Debezium carries them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cdc.model import NO_DEFAULT
from cdc.sources.mysql._defaults import column_default
from cdc.sources.mysql._types import ColumnType, mapping


def default(raw: Any, kind: str, *, extra: str = "", mariadb: bool = False, **t: Any) -> Any:
    optional = t.pop("optional", True)
    ct = ColumnType(kind, **t)
    return column_default(raw, extra, ct, mapping(ct), optional, mariadb)


@pytest.mark.parametrize("mariadb", [False, True])
def test_literals(mariadb: bool) -> None:
    q = (lambda s: f"'{s}'") if mariadb else (lambda s: s)
    assert default("42", "int", mariadb=mariadb) == 42
    assert default("-7", "bigint", mariadb=mariadb) == -7
    assert default("5", "bigint", unsigned=True, mariadb=mariadb) == Decimal(5)
    assert default("12.50", "decimal", precision=6, scale=2, mariadb=mariadb) == Decimal("12.50")
    assert default("1.5", "double", mariadb=mariadb) == 1.5
    assert default(q("abc"), "varchar", mariadb=mariadb) == "abc"
    assert default(q("b"), "enum", values=("a", "b"), mariadb=mariadb) == "b"
    assert default(q(""), "char", mariadb=mariadb) == ""
    assert default(None, "int", mariadb=mariadb) is NO_DEFAULT


def test_mariadb_quotes_and_nulls() -> None:
    assert default("'it''s'", "varchar", mariadb=True) == "it's"
    assert default("NULL", "varchar", mariadb=True) is NO_DEFAULT
    assert default("NULL", "int", mariadb=True) is NO_DEFAULT
    assert default("uuid()", "varchar", mariadb=True) is NO_DEFAULT


def test_current_timestamp_is_the_epoch_on_not_null_columns_only() -> None:
    mysql = {"extra": "DEFAULT_GENERATED on update CURRENT_TIMESTAMP"}
    assert default("CURRENT_TIMESTAMP", "timestamp", optional=False, **mysql) == (
        "1970-01-01T00:00:00Z"
    )
    assert default("CURRENT_TIMESTAMP(3)", "datetime", fsp=3, optional=False, **mysql) == 0
    assert default("CURRENT_TIMESTAMP", "timestamp", **mysql) is NO_DEFAULT
    assert default("current_timestamp()", "datetime", optional=False, mariadb=True) == 0
    # A string column whose literal default reads CURRENT_TIMESTAMP is just that string.
    assert default("CURRENT_TIMESTAMP", "varchar") == "CURRENT_TIMESTAMP"


def test_what_is_not_carried() -> None:
    assert default("rand()", "double", extra="DEFAULT_GENERATED") is NO_DEFAULT
    assert default("2024-01-02 03:04:05", "timestamp") is NO_DEFAULT
    assert default("b'1'", "bit", length=1) is NO_DEFAULT
    assert default("x", "int") is NO_DEFAULT
    assert default("TRUE", "tinyint") == 1


@pytest.mark.parametrize("mariadb", [False, True])
def test_date_and_time_literals(mariadb: bool) -> None:
    q = (lambda s: f"'{s}'") if mariadb else (lambda s: s)
    assert default(q("2024-02-29"), "date", mariadb=mariadb) == 19782
    assert default(q("2024-01-02 03:04:05.5"), "datetime", fsp=1, mariadb=mariadb) == (
        1704164645500
    )
    assert default(q("2024-01-02 03:04:05"), "datetime", fsp=6, mariadb=mariadb) == (
        1704164645000000
    )
    assert default(q("-838:59:59"), "time", mariadb=mariadb) == -3020399000000
    assert default(q("2024"), "year", mariadb=mariadb) == 2024
    # Zero dates: none on a nullable column, the epoch on a NOT NULL one (as Debezium).
    assert default(q("0000-00-00"), "date", mariadb=mariadb) is NO_DEFAULT
    assert default(q("0000-00-00 00:00:00"), "datetime", optional=False, mariadb=mariadb) == 0
    assert default(q("2020-00-15"), "date", mariadb=mariadb) is NO_DEFAULT
