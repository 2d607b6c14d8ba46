"""Odd table and column names, and column defaults, from a real Postgres into the built-in log.

- Table names that are not legal Kafka topic or Avro names get Debezium's sanitised topic and
  valid Avro names; their events decode.
- Columns whose names become one Avro field stop the pipeline with an error naming them.
- Column defaults reach the value and key schemas as Debezium carries them (serial -> 0).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.sinks.log import LogReader
from tests.conftest import wait_until
from tests.logtools import read_log, row_events, write_config

pytestmark = pytest.mark.integration

_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def config(tmp_path: Path, dsn: str, tables: list[str]) -> Path:
    slot = "s_" + dsn.rsplit("dbname=", 1)[1]
    return write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: odd
    source:
      type: postgres
      dsn: "{dsn}"
      tables: {tables!r}
      slot: {slot}
    sink:
      type: log
      path: {tmp_path / "log"}
""",
    )


def schema_of(log: Path, topic: str, part: str = "value") -> dict[str, Any]:
    reader = LogReader(log)
    first = next(iter(reader.records(0, topic)))
    data = first.value if part == "value" else first.key
    schema: dict[str, Any] = reader.schemas.get(int.from_bytes((data or b"")[1:5], "big"))
    return schema


def names_in(schema: Any) -> list[str]:
    out: list[str] = []
    if isinstance(schema, list):
        for s in schema:
            out += names_in(s)
    elif isinstance(schema, dict) and schema.get("type") == "record":
        out.append(schema["name"])
        out += [p for p in schema.get("namespace", "").split(".") if p]
        for f in schema["fields"]:
            out.append(f["name"])
            out += names_in(f["type"])
    return out


ODD = {
    "Spaced Table": "odd.public.Spaced_Table",
    "my-table": "odd.public.my-table",
    "cost$": "odd.public.cost_",
    "1st": "odd.public.1st",
    "café": "odd.public.caf_",
}


def test_odd_table_and_column_names(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        for table in ODD:
            c.execute(f'CREATE TABLE "{table}" ("1 id" int PRIMARY KEY, "total-€" text)')
            c.execute(f"INSERT INTO \"{table}\" VALUES (1, 'snap')")
    tables = [f'public."{t}"' for t in ODD]
    d = daemon(config(tmp_path, pg_db, tables)).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        for table in ODD:
            c.execute(f"INSERT INTO \"{table}\" VALUES (2, 'stream')")
    log = tmp_path / "log"
    wait_until(lambda: len(row_events(read_log(log))) >= 2 * len(ODD), 60, "every row event")
    assert d.terminate() == 0, d.output()
    rows = row_events(read_log(log))
    assert {r["topic"] for r in rows} == set(ODD.values())
    for topic in ODD.values():
        mine = [r for r in rows if r["topic"] == topic]
        assert [r["value"]["after"] for r in mine] == [
            {"_1_id": 1, "total__": "snap"},
            {"_1_id": 2, "total__": "stream"},
        ]
        assert [r["key"] for r in mine] == [{"_1_id": 1}, {"_1_id": 2}]
        assert [r["value"]["source"]["table"] for r in mine] == [
            mine[0]["value"]["source"]["table"]
        ] * 2
        for part in ("value", "key"):
            bad = [n for n in names_in(schema_of(log, topic, part)) if not _AVRO_NAME.fullmatch(n)]
            assert not bad, (topic, part, bad)
    # source.table keeps the table's real name, as Debezium's does
    tables_seen = {r["value"]["source"]["table"] for r in rows}
    assert tables_seen == set(ODD)


def test_columns_that_become_one_field_stop_the_pipeline_naming_them(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute('CREATE TABLE clash (id int PRIMARY KEY, "a b" int, "a_b" int, "a-b" int)')
        c.execute("INSERT INTO clash VALUES (1, 1, 2, 3)")
    d = daemon(config(tmp_path, pg_db, ["public.clash"])).start()
    assert d.proc is not None
    wait_until(lambda: d.proc is not None and d.proc.poll() is not None, 60, "the daemon to stop")
    out = d.output()
    assert d.proc.returncode == 1, out
    assert "columns 'a b', 'a_b', 'a-b' all become the avro field name 'a_b'" in out, out
    assert "Traceback" not in out


DEFAULTS_DDL = """
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE d (
    id serial PRIMARY KEY,
    n int NOT NULL DEFAULT 42,
    neg bigint DEFAULT -7,
    price numeric(6,2) DEFAULT 12.5,
    label varchar(20) DEFAULT 'it''s',
    flag boolean NOT NULL DEFAULT true,
    born date DEFAULT '2024-02-29',
    seen timestamptz DEFAULT now(),
    at timestamp DEFAULT '2024-01-02 03:04:05',
    wait interval DEFAULT '1 hour',
    m mood DEFAULT 'sad',
    u uuid DEFAULT gen_random_uuid(),
    j jsonb DEFAULT '{}',
    b bytea DEFAULT '\\x00',
    calc int DEFAULT (1 + 2),
    plain text
)
"""


def test_column_defaults_in_the_schemas(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(DEFAULTS_DDL)
        c.execute("INSERT INTO d DEFAULT VALUES")
    d = daemon(config(tmp_path, pg_db, ["public.d"])).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "daemon streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO d DEFAULT VALUES")
        c.execute("UPDATE d SET n = 1, flag = false")
        c.execute("DELETE FROM d WHERE id = 1")
    log = tmp_path / "log"
    wait_until(lambda: len(row_events(read_log(log))) >= 5, 60, "5 row events")
    assert d.terminate() == 0, d.output()
    schema = schema_of(log, "odd.public.d")
    fields = {f["name"]: f for f in schema["fields"][0]["type"][1]["fields"]}
    defaults = {n: f.get("default", "<none>") for n, f in fields.items()}
    assert defaults == {
        "id": 0,  # nextval(...): Debezium's placeholder
        "n": 42,
        "neg": -7,
        "price": "\x04\xe2",  # 1250 at scale 2, as bytes
        "label": "it's",
        "flag": True,
        "born": 19782,
        "seen": "1970-01-01T00:00:00.000000Z",  # now(): the epoch
        "at": 1704164645000000,
        "wait": 3_600_000_000,
        "m": "sad",
        "u": "00000000-0000-0000-0000-000000000000",
        "j": "{}",
        "b": None,  # no rule for bytea
        "calc": None,  # an expression: not evaluated
        "plain": None,
    }
    assert fields["id"]["type"] == {"type": "int", "connect.default": 0}
    assert fields["neg"]["type"] == [{"type": "long", "connect.default": -7}, "null"]
    assert fields["b"]["type"][0] == "null"
    key = schema_of(log, "odd.public.d", "key")
    assert key["fields"] == [fields["id"]]
    rows = row_events(read_log(log))
    assert [r["value"]["after"]["n"] for r in rows[:2]] == [42, 42]
    # A delete under REPLICA IDENTITY DEFAULT carries the key only: a NOT NULL column takes its
    # default where the schema has one (not the type's neutral value), as Debezium fills it.
    before = rows[4]["value"]["before"]
    assert rows[4]["value"]["op"] == "d" and before["id"] == 1
    assert before["n"] == 42 and before["flag"] is True
