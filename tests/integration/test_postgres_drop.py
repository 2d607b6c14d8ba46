"""`cdc drop -c FILE PIPELINE`: a removed pipeline's slot and publication dropped, on a real server,
run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scratch._common import free_port
from tests.conftest import ROOT, wait_until
from tests.logtools import postgres_items_config, read_log, row_events

pytestmark = pytest.mark.integration


def cdc_drop(config: Path, pipeline: str, *flags: str, stdin: Any = subprocess.DEVNULL) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "cdc", "drop", "-c", str(config), pipeline, *flags],
        stdin=stdin,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        cwd=ROOT,
        timeout=60,
    )


def setup(dsn: str) -> str:
    """The table, and a name unique to this database (slots are per server)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
    return "shop_" + dsn.rsplit("dbname=", 1)[1]


def slots(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as c:
        rows = c.execute("SELECT slot_name, active_pid FROM pg_replication_slots").fetchall()
    return {r[0]: r[1] for r in rows}


def publications(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return {r[0] for r in c.execute("SELECT pubname FROM pg_publication").fetchall()}


def run_once(daemon: Any, cfg: Path, dsn: str) -> None:
    """Run the daemon until a row is in the log, then stop it as a user does."""
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO items VALUES (1, 'x')")
    wait_until(lambda: row_events(read_log(cfg.parent / "log")), 60, "the row in the log")
    assert d.terminate() == 0, d.output()


def test_drop_after_a_run_leaves_nothing_of_ours_and_is_idempotent(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    name = setup(pg_db)
    slot = pub = f"cdc_{name}"
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE PUBLICATION users_own FOR TABLE items")
    cfg = postgres_items_config(tmp_path / "cdc.yaml", name, pg_db)
    run_once(daemon, cfg, pg_db)
    assert slot in slots(pg_db) and pub in publications(pg_db)

    # no terminal, no --yes: shows the plan and refuses
    no = cdc_drop(cfg, name)
    assert no.returncode == 2, no.stdout + no.stderr
    assert f"drop: replication slot '{slot}' (retains " in no.stdout
    assert " of WAL now, wal_status reserved)" in no.stdout
    assert f"drop: publication '{pub}' in database " in no.stdout
    assert "confirmation needed and stdin is not a terminal; pass --yes" in no.stderr
    assert slot in slots(pg_db) and pub in publications(pg_db)

    yes = cdc_drop(cfg, name, "--yes")
    assert yes.returncode == 0, yes.stdout + yes.stderr
    assert f"dropped replication slot '{slot}'" in yes.stdout
    assert f"dropped publication '{pub}'" in yes.stdout
    assert f"the log {cfg.parent / 'log'} keeps its events" in yes.stdout
    assert slot not in slots(pg_db)
    assert publications(pg_db) == {"users_own"}  # the user's own publication survives
    assert row_events(read_log(cfg.parent / "log"))  # the sink's data is left alone

    again = cdc_drop(cfg, name, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing left to drop on the server" in again.stdout
    assert f"absent: replication slot '{slot}' (nothing to drop)" in again.stdout
    assert f"absent: publication '{pub}' in database " in again.stdout


def test_a_users_or_another_pipelines_publication_is_never_dropped(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    name = setup(pg_db)
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE PUBLICATION userpub FOR TABLE items")
    cfg = postgres_items_config(tmp_path / "cdc.yaml", name, pg_db, "publication: userpub")
    run_once(daemon, cfg, pg_db)

    out = cdc_drop(cfg, name, "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (
        "keep: publication 'userpub': left in place, its comment records no pipeline" in out.stdout
    )
    assert f"dropped replication slot 'cdc_{name}'" in out.stdout
    assert "dropped publication" not in out.stdout
    assert "userpub" in publications(pg_db) and f"cdc_{name}" not in slots(pg_db)

    # a publication (and the slot it records) that another pipeline's comment claims
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(f"SELECT pg_create_logical_replication_slot('cdc_{name}', 'pgoutput')")
        c.execute("CREATE PUBLICATION theirs FOR TABLE items")
        c.execute(
            "COMMENT ON PUBLICATION theirs IS "
            f'\'cdc:{{"pipeline": "other", "slot": "cdc_{name}"}}\''
        )
    cfg2 = postgres_items_config(tmp_path / "b" / "cdc.yaml", name, pg_db, "publication: theirs")
    out = cdc_drop(cfg2, name, "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "publication 'theirs': left in place, it belongs to pipeline 'other'" in out.stdout
    assert (
        f"replication slot 'cdc_{name}': left in place, it belongs to pipeline 'other' "
        "(publication 'theirs' records it)"
    ) in out.stdout
    assert "theirs" in publications(pg_db) and f"cdc_{name}" in slots(pg_db)


def test_refused_while_the_daemon_runs_or_a_client_reads_the_slot(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    name = setup(pg_db)
    slot = f"cdc_{name}"
    cfg = postgres_items_config(tmp_path / "cdc.yaml", name, pg_db)
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    wait_until((tmp_path / "cdc.status.json").exists, 30, "the status file")

    out = cdc_drop(cfg, name, "--yes")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"error: not dropping pipeline {name}: the daemon pid {d.proc.pid} runs" in out.stderr
    assert "stop the daemon first" in out.stderr
    assert slot in slots(pg_db) and slot in publications(pg_db)
    assert d.terminate() == 0

    # the same pipeline run from another config file (another status file, another sink): only
    # the server knows that its slot is being read
    other = postgres_items_config(tmp_path / "elsewhere" / "cdc.yaml", name, pg_db)
    d2 = daemon(other).start()
    # Its log is empty, so it snapshots first, and the slot's reader changes when it goes on to
    # stream (CI read a pid, then None): the pid is read once it streams.
    wait_until(lambda: "streaming from slot" in d2.output(), 60, "the other daemon streaming")
    wait_until(lambda: slots(pg_db).get(slot), 60, "the slot read by the other daemon")
    pid = slots(pg_db)[slot]
    out = cdc_drop(cfg, name, "--yes")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"replication slot '{slot}' is being read by pid {pid}" in out.stderr
    assert "error: not dropping anything: " in out.stderr
    assert "(client 127.0.0.1)" in out.stderr and "stop it, then run cdc drop again" in out.stderr
    assert slot in slots(pg_db) and slot in publications(pg_db)  # nothing dropped
    assert d2.terminate() == 0


def test_refused_while_a_daemon_holds_the_sinks_lock(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    """A daemon started with another status file (another copy of the config): the log
    directory's writer lock tells that the pipeline runs."""
    name = setup(pg_db)
    cfg = postgres_items_config(tmp_path / "cdc.yaml", name, pg_db)
    running = tmp_path / "running.yaml"
    running.write_text(f"status_file: {tmp_path / 'other.status.json'}\n" + cfg.read_text())
    d = daemon(running).start()
    wait_until(lambda: "streaming from slot" in d.output(), 60, "streaming")
    assert not (tmp_path / "cdc.status.json").exists()

    out = cdc_drop(cfg, name, "--yes")
    assert out.returncode == 1, out.stdout + out.stderr
    assert (
        f"error: not dropping pipeline {name}: a process holds the lock of this pipeline's "
        f"sink ({tmp_path / 'log'})"
    ) in out.stderr
    assert f"cdc_{name}" in slots(pg_db) and f"cdc_{name}" in publications(pg_db)
    assert d.terminate() == 0


def test_asks_on_a_terminal(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    name = setup(pg_db)
    slot = f"cdc_{name}"
    cfg = postgres_items_config(tmp_path / "cdc.yaml", name, pg_db)
    run_once(daemon, cfg, pg_db)

    def answer(text: str) -> Any:
        primary, tty = os.openpty()
        try:
            os.write(primary, text.encode())
            return cdc_drop(cfg, name, stdin=tty)
        finally:
            os.close(tty)
            os.close(primary)

    no = answer("n\n")
    assert no.returncode == 1, no.stdout + no.stderr
    assert "drop these?" in no.stdout and "nothing dropped" in no.stdout
    assert slot in slots(pg_db) and slot in publications(pg_db)
    yes = answer("y\n")
    assert yes.returncode == 0, yes.stdout + yes.stderr
    assert slot not in slots(pg_db) and slot not in publications(pg_db)


def test_a_publication_it_may_not_drop_fails_naming_what_was_dropped(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    """Run as a user who has REPLICATION but does not own the publication: the slot goes, the
    publication's drop fails with what to run; a second run as the owner finishes the job."""
    name = setup(pg_db)
    role = "app_" + pg_db.rsplit("dbname=", 1)[1]
    cfg = postgres_items_config(tmp_path / "cdc.yaml", name, pg_db)
    run_once(daemon, cfg, pg_db)
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN REPLICATION")
    as_app = postgres_items_config(
        tmp_path / "app" / "cdc.yaml", name, pg_db.replace("user=postgres", f"user={role}")
    )

    out = cdc_drop(as_app, name, "--yes")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"dropped replication slot 'cdc_{name}'" in out.stdout
    assert f"error: cannot drop publication 'cdc_{name}': " in out.stderr
    assert "must be owner of publication" in out.stderr
    assert f"(dropped replication slot 'cdc_{name}'); drop it as its owner: " in out.stderr
    assert f"cdc_{name}" not in slots(pg_db) and f"cdc_{name}" in publications(pg_db)

    again = cdc_drop(cfg, name, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"absent: replication slot 'cdc_{name}'" in again.stdout
    assert f"dropped publication 'cdc_{name}'" in again.stdout
    assert f"cdc_{name}" not in publications(pg_db)


def test_unknown_pipeline_and_unreachable_server_are_clear_errors(tmp_path: Path) -> None:
    secret = "s3cretPassw0rd"
    dsn = f"host=127.0.0.1 port={free_port()} dbname=shop user=cdc password={secret}"
    cfg = postgres_items_config(tmp_path / "cdc.yaml", "shop", dsn)

    unknown = cdc_drop(cfg, "nope", "--yes")
    assert unknown.returncode == 2
    assert f"error: {cfg} has no pipeline 'nope' (it has: shop)" in unknown.stderr

    down = cdc_drop(cfg, "shop", "--yes")
    assert down.returncode == 1, down.stdout + down.stderr
    assert "error: cannot connect to postgres" in down.stderr
    assert "Traceback" not in down.stderr
    assert secret not in down.stdout + down.stderr


def test_a_mysql_pipeline_has_nothing_on_the_server_to_drop(tmp_path: Path) -> None:
    cfg = tmp_path / "cdc.yaml"
    cfg.write_text(
        f"""
pipelines:
  - name: shop
    source:
      type: mysql
      dsn: "mysql://cdc:pw@127.0.0.1:{free_port()}/shop"
      server_id: 4242
      tables: [shop.items]
    sink:
      type: log
      path: {tmp_path / "log"}
"""
    )
    out = cdc_drop(cfg, "shop")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pipeline shop (mysql source): nothing on the server to drop" in out.stdout
    assert f"the log {tmp_path / 'log'} keeps its events" in out.stdout


def test_a_renamed_pipeline_keeps_its_slot_when_set_to_the_old_names(
    tmp_path: Path, pg_db: str, daemon: Any
) -> None:
    """What docs/operations-postgres.md says about renaming: with slot, publication and
    topic_prefix set to the old ones (and the publication's comment naming the new pipeline),
    the renamed pipeline resumes where the old one stopped: no new slot, no new snapshot."""
    old = setup(pg_db)
    new = old + "_renamed"
    cfg = postgres_items_config(tmp_path / "cdc.yaml", old, pg_db)
    run_once(daemon, cfg, pg_db)
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("INSERT INTO items VALUES (2, 'while stopped')")
        c.execute(
            f"COMMENT ON PUBLICATION cdc_{old} IS "
            f'\'cdc:{{"pipeline": "{new}", "slot": "cdc_{old}"}}\''
        )
    postgres_items_config(
        cfg,
        new,
        pg_db,
        f"slot: cdc_{old}\n      publication: cdc_{old}",
    )
    cfg.write_text(
        cfg.read_text().replace(f"name: {new}\n", f"name: {new}\n    topic_prefix: {old}\n")
    )
    d = daemon(cfg).start()
    wait_until(lambda: len(row_events(read_log(cfg.parent / "log"))) >= 2, 60, "row 2")
    assert d.terminate() == 0, d.output()
    events = row_events(read_log(cfg.parent / "log"))  # a new snapshot would add r events
    assert [(e["topic"], e["value"]["op"], e["value"]["after"]["id"]) for e in events] == [
        (f"{old}.public.items", "c", 1),
        (f"{old}.public.items", "c", 2),
    ]
    assert set(slots(pg_db)) >= {f"cdc_{old}"} and f"cdc_{new}" not in slots(pg_db)
