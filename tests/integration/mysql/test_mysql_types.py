"""Type round-trip: each value decoded from the log equals what SELECT returns and TYPES.md says,
for the snapshot and for the binlog alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cdc._jsonout import dumps
from tests.conftest import wait_until
from tests.integration.mysql.conftest import connect, read_log, write_config

pytestmark = pytest.mark.integration

TYPES_MD = Path(__file__).resolve().parents[3] / "sources" / "mysql" / "TYPES.md"


def types_table() -> list[tuple[str, str, str, str]]:
    """(column type, avro type, SQL literal, value as JSON) for every row of TYPES.md."""
    rows = []
    for line in TYPES_MD.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4, line
        rows.append(
            tuple(
                c[1:-1] if c.startswith("`") and c.endswith("`") and c.count("`") == 2 else c
                for c in cells
            )
        )
    return rows  # type: ignore[return-value]


def _expected_from_select(v: Any, avro_type: str) -> Any:
    """What SELECT's value becomes in the event, by Debezium's rules (independent of the code)."""
    from datetime import date, datetime, timedelta

    if v is None:
        return None
    if isinstance(v, datetime):
        if "ZonedTimestamp" in avro_type:
            return v  # compared textually below
        micros = (v - datetime(1970, 1, 1)) // timedelta(microseconds=1)
        return micros if "MicroTimestamp" in avro_type else micros // 1000
    if isinstance(v, date):
        return (v - date(1970, 1, 1)).days
    if isinstance(v, timedelta):
        return v // timedelta(microseconds=1)
    return v


def test_every_type_round_trips_through_snapshot_and_binlog(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any, rows_path: str
) -> None:
    types = types_table()
    assert len(types) >= 30
    db = mysql_db
    conn = connect(server, db)
    cur = conn.cursor()
    cur.execute("SET time_zone = '+00:00'")
    cols = [f"c{i}" for i in range(len(types))]
    ddl = ", ".join(f"{c} {t[0]} NULL" for c, t in zip(cols, types, strict=True))
    cur.execute(f"CREATE TABLE t (id INT PRIMARY KEY, {ddl})")
    literals = ", ".join(t[2] for t in types)
    nulls = ", ".join("NULL" for _ in types)
    cur.execute(f"INSERT INTO t VALUES (1, {literals}), (2, {nulls})")  # read by the snapshot
    log_dir = tmp_path / "log"
    cfg = write_config(tmp_path / "c.yaml", server, [f"{db}.t"], log_dir)
    p = run_pipeline(cfg)
    topic = f"mysqltest.{db}.t"
    wait_until(lambda: len(read_log(log_dir, topic)) >= 2, 60, "the snapshot")
    cur.execute("SET time_zone = '+05:00'")  # the binlog holds UTC: the session zone is moot
    cur.execute("SET time_zone = '+00:00'")
    cur.execute(f"INSERT INTO t VALUES (3, {literals}), (4, {nulls})")  # read from the binlog
    cur.execute("UPDATE t SET c0 = c0 WHERE id = 1")  # no-op: not logged; keeps ids stable
    wait_until(lambda: len(read_log(log_dir, topic)) >= 4, 60, "the streamed rows")
    p.stop()

    records = read_log(log_dir, topic)
    by_id = {r["value"]["after"]["id"]: r["value"] for r in records}
    assert [by_id[i]["op"] for i in (1, 2, 3, 4)] == ["r", "r", "c", "c"]
    cur.execute("SELECT * FROM t WHERE id = 1")
    selected = cur.fetchone()[1:]
    failures = []
    for i, (ctype, avro_type, _literal, doc_json) in enumerate(types):
        name = cols[i]
        for row_id in (1, 3):
            got = by_id[row_id]["after"][name]
            if dumps(got) != dumps(json.loads(doc_json)):
                failures.append(
                    f"{ctype} ({'snapshot' if row_id == 1 else 'binlog'}): "
                    f"got {dumps(got)}, TYPES.md says {doc_json}"
                )
        for row_id in (2, 4):
            if by_id[row_id]["after"][name] is not None:
                failures.append(f"{ctype}: NULL came out as {by_id[row_id]['after'][name]!r}")
        # the value equals what SELECT returns, through Debezium's conversion
        exp = _expected_from_select(selected[i], avro_type)
        got = by_id[1]["after"][name]
        if ctype in ("float",):
            ok = abs(got - exp) < 1e-6
        elif "ZonedTimestamp" in avro_type:
            ok = got.startswith(exp.strftime("%Y-%m-%dT%H:%M:%S"))
        elif ctype.startswith("bit(") and ctype != "bit(1)":
            ok = int.from_bytes(got, "little") == int.from_bytes(exp, "big")
        elif ctype == "bit(1)":
            ok = got == (exp == b"\x01")
        elif ctype.startswith("set("):
            ok = sorted(got.split(",")) == sorted(exp.split(","))
        else:
            ok = got == exp
        if not ok:
            failures.append(f"{ctype}: event has {got!r}, SELECT gives {selected[i]!r}")
    assert not failures, "\n".join(failures)


# JSON documents whose text form MySQL's binary JSON must reproduce exactly: scalars at the top,
# a JSON null (not SQL NULL), opaque SQL values inside JSON (dates, times, decimals, binary),
# doubles in fixed and exponent notation, non-ASCII and escaped strings, key order, and documents
# over 64 KiB (the large object/array format).
JSON_DOCUMENTS = [
    """'{"b": "é ü 日本", "a": {"x": [true, false, null, -3, 0.1]}, "big": 18446744073709551615,"""
    """ "neg": -9223372036854775808}'""",
    """'"a \\\\"quoted\\\\" string\\\\n with a tab\\\\t and a \\\\u0001"'""",
    "'null'",
    "'true'",
    "'[]'",
    "'{}'",
    """'{"longer key": 1, "a": 2, "zz": 3}'""",
    "'[2.0, 1e-5, 1e15, 1e16, 123456789012345680.0, -0.0, 1.5e300, 1.2345678901234567e-15]'",
    "'[100000, 70000, -70000, 4294967295, -2147483648, -9223372036854775808]'",
    "CAST(CAST('2024-01-02 03:04:05.123456' AS DATETIME(6)) AS JSON)",
    "CAST(CAST('2024-01-02' AS DATE) AS JSON)",
    "CAST(CAST('-12:00:01.5' AS TIME(1)) AS JSON)",
    "JSON_ARRAY(CAST(12.50 AS DECIMAL(5,2)), CAST(-1.5 AS DECIMAL(4,1)), CAST(x'00ff' AS BINARY))",
    "JSON_OBJECT('big', REPEAT('x', 70000), 'n', 70000, 'arr', JSON_ARRAY(1, 70000, 'y'))",
    "JSON_ARRAY(REPEAT('y', 70000), 70000, -5, TRUE, NULL, JSON_OBJECT('a', 1))",
]


@pytest.mark.parametrize("server", ["mysql"], indirect=True)
def test_mysql_binary_json_reads_as_select_prints_it(
    server: Any, mysql_db: str, tmp_path: Path, run_pipeline: Any
) -> None:
    db = mysql_db
    cur = connect(server, db).cursor()
    cur.execute("CREATE TABLE j (id INT PRIMARY KEY, doc JSON NULL)")
    n = len(JSON_DOCUMENTS)
    for i, doc in enumerate(JSON_DOCUMENTS):
        cur.execute(f"INSERT INTO j VALUES ({i}, {doc})")  # read by the snapshot
    cur.execute(f"INSERT INTO j VALUES ({n}, NULL)")
    log_dir = tmp_path / "log"
    p = run_pipeline(write_config(tmp_path / "c.yaml", server, [f"{db}.j"], log_dir))
    topic = f"mysqltest.{db}.j"
    wait_until(lambda: len(read_log(log_dir, topic)) >= n + 1, 60, "the snapshot")
    for i, doc in enumerate(JSON_DOCUMENTS):
        cur.execute(f"INSERT INTO j VALUES ({100 + i}, {doc})")  # read from the binlog
    cur.execute(f"INSERT INTO j VALUES ({100 + n}, NULL)")
    wait_until(lambda: len(read_log(log_dir, topic)) >= 2 * (n + 1), 60, "the streamed rows")
    p.stop()
    got = {r["value"]["after"]["id"]: r["value"]["after"]["doc"] for r in read_log(log_dir, topic)}
    cur.execute("SELECT id, doc FROM j WHERE id < 100 ORDER BY id")
    selected = dict(cur.fetchall())
    assert selected[2] == "null" and selected[n] is None
    failures = [
        f"{JSON_DOCUMENTS[i] if i < n else 'NULL'}: SELECT {selected[i]!r:.200}, "
        f"snapshot {got[i]!r:.200}, binlog {got[100 + i]!r:.200}"
        for i in range(n + 1)
        if not (got[i] == got[100 + i] == selected[i])
    ]
    assert not failures, "\n".join(failures)
