"""Table selection as Debezium users write it (issue 18 item 1): patterns in `tables`,
`exclude_tables`, whole `schemas`; tables created while the daemon runs are picked up and their
existing rows backfilled; in each publication mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.config import parse
from cdc.errors import ConfigError
from tests.conftest import ROOT, wait_until
from tests.logtools import read_log, row_events, write_config

pytestmark = pytest.mark.integration


def config(tmp_path: Path, dsn: str, selection: str) -> Path:
    db = dsn.rsplit("dbname=", 1)[1]
    return write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: p{db}
    batch: {{max_wait_ms: 20}}
    source:
      type: postgres
      dsn: "{dsn}"
      slot: s_{db}
      slot_check_interval_s: 0.5
{selection}
    sink:
      type: log
      path: {tmp_path / "log"}
""",
    )


def state(log: Path) -> dict[str, dict[int, str]]:
    """Replay of the log: table -> id -> note, as a consumer applying events by key."""
    out: dict[str, dict[int, str]] = {}
    for r in row_events(read_log(log)):
        table = r["topic"].split(".", 1)[1]
        rows = out.setdefault(table, {})
        v = r["value"]
        if v["after"] is not None:
            rows[v["after"]["id"]] = v["after"]["note"]
        elif v["before"] is not None:
            rows.pop(v["before"]["id"], None)
    return out


def make(dsn: str, *names: str, rows: int = 3) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for name in names:
            c.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, note text)")
            c.execute(f"INSERT INTO {name} SELECT g, 'r' || g FROM generate_series(1, {rows}) g")


def table_rows(dsn: str, name: str) -> dict[int, str]:
    with psycopg.connect(dsn) as c:
        return dict(c.execute(f"SELECT id, note FROM {name}").fetchall())  # type: ignore[arg-type]


def test_patterns_exclusions_and_schemas_and_a_table_created_while_running(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE SCHEMA sales")
    make(pg_db, "order_a", "order_b", "order_archive", "other", "sales.x")
    cfg = config(
        tmp_path,
        pg_db,
        '      tables: ["public\\\\.order_.*"]\n'
        "      exclude_tables: [public.order_archive]\n"
        "      schemas: [sales]",
    )
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    # created while running: rows written before the daemon notices it, and after
    make(pg_db, "order_c", "order_archive2", "other2")
    wait_until(lambda: "tables joined the selection" in d.output(), 30, "order_c picked up")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO order_c VALUES (10, 'later')")
        c.execute("UPDATE order_c SET note = 'changed' WHERE id = 1")
        c.execute("DELETE FROM order_a WHERE id = 2")
    wanted = ["public.order_a", "public.order_b", "public.order_archive2", "public.order_c"]
    wanted += ["sales.x"]
    expected = {t: table_rows(pg_db, t) for t in wanted}
    wait_until(lambda: state(tmp_path / "log") == expected, 60, "the selected tables' rows")
    assert d.terminate() == 0
    assert "ERROR" not in d.output(), d.output()
    assert "backfilling while streaming" in d.output()


def test_disabled_mode_captures_only_what_the_publication_holds(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    db = pg_db.rsplit("dbname=", 1)[1]
    make(pg_db, "order_a", "order_b")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(f"CREATE PUBLICATION cdc_p{db} FOR TABLE order_a")
    cfg = config(
        tmp_path,
        pg_db,
        '      tables: ["public\\\\.order_.*"]\n      publication_autocreate_mode: disabled',
    )
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    wait_until(lambda: "public.order_a" in state(tmp_path / "log"), 30, "order_a's snapshot")
    assert d.terminate() == 0
    assert set(state(tmp_path / "log")) == {"public.order_a"}
    assert "publication_autocreate_mode: disabled): not captured" in d.output()


def test_all_tables_mode_backfills_a_matching_table_created_later(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    """FOR ALL TABLES publishes a new table at once: the position's record of what was
    snapshotted, not the publication, says it needs a backfill."""
    make(pg_db, "order_a")
    cfg = config(
        tmp_path,
        pg_db,
        '      tables: ["public\\\\.order_.*"]\n      publication_autocreate_mode: all_tables',
    )
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    make(pg_db, "order_b")  # published at once: the server announces it before it is selected
    backfilled = {1: "r1", 2: "r2", 3: "r3"}
    wait_until(
        lambda: state(tmp_path / "log").get("public.order_b") == backfilled, 60, "the backfill"
    )
    with psycopg.connect(pg_db, autocommit=True) as c:  # no new RELATION for these
        c.execute("INSERT INTO order_b VALUES (10, 'later')")
        c.execute("UPDATE order_b SET note = 'changed' WHERE id = 1")
    expected = {t: table_rows(pg_db, t) for t in ("public.order_a", "public.order_b")}
    wait_until(lambda: state(tmp_path / "log") == expected, 60, "order_b backfilled and streamed")
    assert d.terminate() == 0


def test_check_resolves_patterns_and_a_bad_pattern_is_a_config_error(
    tmp_path: Path, pg_db: str
) -> None:
    make(pg_db, "order_a")
    cfg = config(tmp_path, pg_db, '      tables: ["public\\\\.order_.*"]')
    r = subprocess.run(
        [sys.executable, "-m", "cdc", "check", "-c", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    with pytest.raises(ConfigError) as e:
        parse(cfg.read_text().replace("order_.*", "order_(.*"))
    assert "invalid table pattern 'public\\\\.order_(.*'" in str(e.value), e.value
