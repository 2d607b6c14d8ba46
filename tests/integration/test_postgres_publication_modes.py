"""Publication modes (Debezium's publication.autocreate.mode), tables removed from `tables`, and
temporary slots (issue 18 items 2 and 3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, wait_until
from tests.integration.test_postgres_server_ops import (
    create_two,
    ids,
    insert,
    published,
    stops,
    two_tables,
)

pytestmark = pytest.mark.integration


def pub_of(dsn: str) -> str:
    return "cdc_p" + dsn.rsplit("dbname=", 1)[1]


def check(cfg: Path) -> tuple[int, str]:
    r = subprocess.run(
        [sys.executable, "-m", "cdc", "check", "-c", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    return r.returncode, r.stdout + r.stderr


def test_all_tables_creates_a_publication_for_all_tables_and_captures_only_the_configured(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    create_two(pg_db)
    cfg = two_tables(tmp_path, pg_db, "publication_autocreate_mode: all_tables", tables="items")
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    with psycopg.connect(pg_db) as c:
        row = c.execute(
            "SELECT puballtables FROM pg_publication WHERE pubname = %s", (pub_of(pg_db),)
        ).fetchone()
        assert row == (True,)
    # one transaction over a captured and an uncaptured table, and a table created later
    with psycopg.connect(pg_db) as c:
        c.execute("INSERT INTO other VALUES (1, 'x')")
        c.execute("INSERT INTO items VALUES (1, 'x')")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE later (id int PRIMARY KEY)")
        c.execute("INSERT INTO later VALUES (7)")
    insert(pg_db, 2, 4)
    wait_until(lambda: ids(tmp_path / "log") == [1, 2, 3], 30, "the captured rows")
    assert d.terminate() == 0
    assert ids(tmp_path / "log", "other") == [] and ids(tmp_path / "log", "later") == []
    assert "ERROR" not in d.output(), d.output()


def test_disabled_never_creates_nor_alters_and_says_what_to_run(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    create_two(pg_db)
    pub = pub_of(pg_db)
    cfg = two_tables(tmp_path, pg_db, "publication_autocreate_mode: disabled")
    rc, out = check(cfg)
    assert rc != 0 and f"publication '{pub}' does not exist" in out, out
    assert f'CREATE PUBLICATION "{pub}" FOR TABLE public.items, public.other' in out, out
    err = stops(daemon(cfg).start(), "a missing publication under mode disabled")
    assert f"publication {pub!r} does not exist" in err and "disabled" in err, err

    # an administrator's publication missing one captured table: still never altered
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(f"CREATE PUBLICATION {pub} FOR TABLE items")
    rc, out = check(cfg)
    assert rc != 0 and "does not include public.other" in out, out
    err = stops(daemon(cfg).start(), "a captured table missing from the publication")
    assert "does not publish captured table(s) public.other" in err, err
    assert f'ALTER PUBLICATION "{pub}" ADD TABLE public.other' in err, err
    assert published(pg_db, pub) == ["items"]

    # with both tables (and one more the pipeline does not capture) it streams, unaltered
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE third (id int PRIMARY KEY)")
        c.execute(f"ALTER PUBLICATION {pub} ADD TABLE other, third")
    rc, out = check(cfg)
    assert "publication" not in out, out
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO third VALUES (5)")
    insert(pg_db, 0, 2)
    insert(pg_db, 0, 2, "other")
    wait_until(lambda: ids(tmp_path / "log", "other") == [0, 1], 30, "other's rows")
    assert ids(tmp_path / "log") == [0, 1] and ids(tmp_path / "log", "third") == []
    assert d.terminate() == 0
    assert published(pg_db, pub) == ["items", "other", "third"]
    with psycopg.connect(pg_db) as c:
        comment = c.execute(
            "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
            (pub,),
        ).fetchone()
    assert comment == (None,), "not even an owner comment under mode disabled"


def test_a_table_removed_from_tables_leaves_our_publication_and_stops_streaming(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    """Filtered: the publication holds exactly the captured tables. Before, a table removed from
    `tables` stayed published and its changes kept arriving in the log."""
    create_two(pg_db)
    d = daemon(two_tables(tmp_path, pg_db)).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    insert(pg_db, 0, 2, "other")
    wait_until(lambda: ids(tmp_path / "log", "other") == [0, 1], 30, "other's rows")
    assert d.terminate() == 0
    insert(pg_db, 2, 4, "other")  # before the restart: in the slot, decoded as published then
    d = daemon(two_tables(tmp_path, pg_db, tables="items")).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    insert(pg_db, 4, 6, "other")
    insert(pg_db, 0, 3)
    wait_until(lambda: ids(tmp_path / "log") == [0, 1, 2], 30, "items' rows")
    assert d.terminate() == 0
    assert published(pg_db, pub_of(pg_db)) == ["items"]
    assert "removed 1 tables no longer captured from publication" in d.output()
    assert ids(tmp_path / "log", "other") == [0, 1], "nothing of a table no longer captured"


def test_a_temporary_slot_is_gone_after_a_crash_and_when_needed_snapshots_again(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    create_two(pg_db)
    insert(pg_db, 0, 2)
    slot = "s_" + pg_db.rsplit("dbname=", 1)[1]
    cfg = two_tables(tmp_path, pg_db, "temporary_slot: true", tables="items")
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    assert "created temporary replication slot" in d.output()
    with psycopg.connect(pg_db) as c:
        assert c.execute(
            "SELECT temporary FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone() == (True,)
    insert(pg_db, 2, 3)
    wait_until(lambda: ids(tmp_path / "log") == [0, 1, 2], 30, "snapshot and stream")
    d.kill()

    def slot_gone() -> bool:
        with psycopg.connect(pg_db) as c:
            return c.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone() == (0,)

    wait_until(slot_gone, 30, "the server to drop the temporary slot with its connection")
    err = stops(daemon(cfg).start(), "a temporary slot gone after a crash")
    assert "temporary_slot: true" in err and "does not exist" in err, err
    both = "temporary_slot: true\n      snapshot: when_needed"  # two lines of the source block
    again = two_tables(tmp_path, pg_db, both, tables="items")
    d = daemon(again).start()
    wait_until(lambda: ids(tmp_path / "log") == [0, 1, 2, 0, 1, 2], 60, "a new snapshot")
    assert d.terminate() == 0
