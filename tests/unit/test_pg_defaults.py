"""Postgres column defaults as Debezium's PostgresDefaultValueConverter converts them.

The expressions are what ``pg_get_expr(adbin, adrelid)`` returns for each DDL default (checked
against a real server in tests/integration/test_postgres_defaults.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cdc.model import NO_DEFAULT
from cdc.sources.postgres._defaults import column_default
from cdc.sources.postgres._types import TypeInfo, mapping_for

MOOD = 90_001
DOMAIN = 90_002
TYPES = {
    MOOD: TypeInfo(MOOD, "mood", "e", "E", 0, 0, -1, ("happy", "sad")),
    DOMAIN: TypeInfo(DOMAIN, "posint", "d", "N", 0, 23, -1),
}


def default(expr: str | None, oid: int, typmod: int = -1) -> Any:
    return column_default(expr, oid, mapping_for(oid, typmod, None, TYPES.get), TYPES.get)


@pytest.mark.parametrize(
    ("expr", "oid", "typmod", "want"),
    [
        # serial / identity-like: a function call gives the type's placeholder
        ("nextval('t_id_seq'::regclass)", 23, -1, 0),
        ("nextval('t_id_seq'::regclass)", 20, -1, 0),
        ("42", 23, -1, 42),
        ("'-7'::integer", 23, -1, -7),
        ("'9223372036854775807'::bigint", 20, -1, 2**63 - 1),
        ("'-5'::smallint", 21, -1, -5),
        ("true", 16, -1, True),
        ("false", 16, -1, False),
        ("'abc'::text", 25, -1, "abc"),
        ("'it''s'::character varying", 1043, 14, "it's"),
        ("''::text", 25, -1, ""),
        ("upper('x'::text)", 25, -1, ""),
        ("1.5", 701, -1, 1.5),
        ("'12.5'::numeric", 1700, (9 << 16 | 2) + 4, Decimal("12.50")),
        ("'{}'::jsonb", 3802, -1, "{}"),
        ("gen_random_uuid()", 2950, -1, "00000000-0000-0000-0000-000000000000"),
        ("'2024-02-29'::date", 1082, -1, 19782),
        ("CURRENT_DATE", 1082, -1, 0),
        ("now()", 1184, -1, "1970-01-01T00:00:00.000000Z"),
        ("CURRENT_TIMESTAMP", 1184, -1, "1970-01-01T00:00:00.000000Z"),
        (
            "'2024-01-02 03:04:05+00'::timestamp with time zone",
            1184,
            -1,
            "2024-01-02T03:04:05.000000Z",
        ),
        ("'PT1H'::interval", 1186, -1, 3_600_000_000),  # as printed under IntervalStyle iso_8601
        ("'2024-01-02 03:04:05'::timestamp without time zone", 1114, -1, 1704164645000000),
        ("'happy'::mood", MOOD, -1, "happy"),
        ("B'101'::\"bit\"", 1562, -1, b"\x05"),
    ],
)
def test_defaults_debezium_carries(expr: str, oid: int, typmod: int, want: Any) -> None:
    got = default(expr, oid, typmod)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    ("expr", "oid"),
    [
        (None, 23),
        ("NULL::integer", 23),
        ("NULL::text", 25),
        ("(1 + 2)", 23),  # an expression Debezium does not evaluate
        ("'\\x00'::bytea", 17),  # no rule for bytea
        ("'{1,2}'::integer[]", 1007),  # nor arrays
        ("'1'::posint", DOMAIN),  # nor domains
        ("now()", 1186),  # an interval from a function
        ("'NaN'::double precision", 701),  # JSON has no NaN
        ("'-Infinity'::real", 700),
        ("'12.5'::numeric", 1700),  # numeric without scale: a struct, which Debezium drops
    ],
)
def test_defaults_debezium_leaves_out(expr: str | None, oid: int) -> None:
    assert default(expr, oid) is NO_DEFAULT
