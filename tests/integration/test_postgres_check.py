"""`cdc check` against real PostgreSQL servers, run as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT
from tests.logtools import write_config

pytestmark = pytest.mark.integration


def cdc_check(config: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "cdc", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
        timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr


def config(tmp_path: Path, dsn: str, tables: list[str], **source: str) -> Path:
    extra = "".join(f"      {k}: {v}\n" for k, v in source.items())
    return write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: shop
    source:
      type: postgres
      dsn: "{dsn}"
      tables: {tables!r}
{extra}    sink:
      type: log
      path: {tmp_path / "log"}
""",
    )


@pytest.fixture(scope="module")
def replica_server() -> Iterator[Any]:
    """A server set up the way a default install is: wal_level=replica, no spare slot/sender."""
    from scratch.postgres import start_postgres

    server = start_postgres(
        settings={"wal_level": "replica", "max_replication_slots": "1", "max_wal_senders": "0"}
    )
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.datadir.parent, ignore_errors=True)


def test_check_names_wal_level_and_missing_replication_privilege(
    tmp_path: Path, replica_server: Any
) -> None:
    replica_server.psql(
        "CREATE ROLE app LOGIN; CREATE DATABASE shop OWNER app;"
        "SELECT pg_create_physical_replication_slot('standby1');"
    )
    with psycopg.connect(replica_server.dsn("shop", "app"), autocommit=True) as c:
        c.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
    rc, out = cdc_check(config(tmp_path, replica_server.dsn("shop", "app"), ["orders"]))
    assert rc == 1, out
    assert "pipeline shop (postgres source): 4 problem(s)" in out
    assert "wal_level is 'replica': set wal_level = logical" in out
    assert "user 'app' lacks the REPLICATION attribute: ALTER ROLE \"app\" REPLICATION" in out
    assert "max_replication_slots is 1 and 1 slots exist" in out
    assert "max_wal_senders is 0" in out


def test_check_ok_then_table_slot_and_publication_problems(tmp_path: Path, pg_db: str) -> None:
    db = pg_db.rsplit("dbname=", 1)[1]
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        c.execute("CREATE TABLE audit (at timestamptz, what text)")
        c.execute("CREATE TABLE notes (at timestamptz, what text)")
        c.execute("ALTER TABLE notes REPLICA IDENTITY FULL")
    good = config(tmp_path, pg_db, ["orders", "public.notes"], slot=f"s_{db}")
    rc, out = cdc_check(good)
    assert (rc, out.strip()) == (0, "pipeline shop (postgres source): ok")

    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(f"SELECT pg_create_logical_replication_slot('s_{db}', 'test_decoding')")
        c.execute(f"CREATE PUBLICATION p_{db} FOR TABLE orders WITH (publish = 'insert')")
    bad = config(
        tmp_path,
        pg_db,
        ["orders", "audit", "public.missing"],
        slot=f"s_{db}",
        publication=f"p_{db}",
    )
    rc, out = cdc_check(bad)
    assert rc == 1, out
    assert "4 problem(s)" in out
    assert f"replication slot 's_{db}' already exists as a logical slot for plugin " in out
    assert "'test_decoding'" in out and "set source.slot to another name" in out
    assert (
        "table public.audit has no primary key and REPLICA IDENTITY DEFAULT (its UPDATEs and "
        "DELETEs fail once it is published): add a primary key or ALTER TABLE public.audit "
        "REPLICA IDENTITY FULL"
    ) in out
    assert f"table public.missing does not exist in database '{db}'" in out
    assert f"publication 'p_{db}' does not publish update, delete, truncate" in out


def test_check_config_error_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.yaml", "pipelines:\n  - name: x\n    source: {}\n")
    rc, out = cdc_check(path)
    assert rc == 2 and "error:" in out and "Traceback" not in out


def test_the_readme_quickstart_for_your_own_database_one_fix_at_a_time(tmp_path: Path) -> None:
    """README "Your own PostgreSQL": a server as installed (wal_level replica), tables owned by
    the application, a `cdc` role; `cdc check` names each fix the quickstart lists, and is clean
    once they are made. pg_hba.conf has no line with the `replication` keyword: a logical
    replication connection matches the database's own lines, as the README says."""
    from scratch.postgres import start_postgres

    server = start_postgres(settings={"wal_level": "replica"})
    try:
        hba = server.datadir / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        server.psql("SELECT pg_reload_conf()")
        server.psql("CREATE ROLE app LOGIN; CREATE ROLE cdc LOGIN; CREATE DATABASE shop OWNER app")
        with psycopg.connect(server.dsn("shop", "app"), autocommit=True) as c:
            c.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        cfg = config(
            tmp_path,
            server.dsn("shop", "cdc"),
            ["public.orders"],
            publication="cdc_shop",
            publication_autocreate_mode="disabled",
        )
        rc, out = cdc_check(cfg)
        assert rc == 1, out
        assert "wal_level is 'replica'" in out, out
        assert "user 'cdc' lacks the REPLICATION attribute" in out, out
        assert "user 'cdc' cannot SELECT from public.orders" in out, out
        assert "publication 'cdc_shop' does not exist" in out, out

        # the fixes, as the README gives them
        server.psql("ALTER SYSTEM SET wal_level = logical")
        server.stop()
        server.start()
        server.psql("ALTER ROLE cdc REPLICATION")
        with psycopg.connect(server.dsn("shop", "app"), autocommit=True) as c:
            c.execute("GRANT SELECT ON public.orders TO cdc")
            c.execute("CREATE PUBLICATION cdc_shop FOR TABLE public.orders")
        rc, out = cdc_check(cfg)
        assert (rc, out.strip()) == (0, "pipeline shop (postgres source): ok"), out
    finally:
        server.stop("immediate")
        shutil.rmtree(server.datadir.parent, ignore_errors=True)
