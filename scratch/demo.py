"""`make demo`: a scratch Postgres feeding the built-in log, end to end, as a user would run it.

Starts a throwaway PostgreSQL server, creates two tables, runs ``cdc run`` on a config written to
.demo/cdc.yaml, makes some changes in a few transactions and prints the captured events with
``cdc log read``. Everything it made is stopped at the end; the log stays in .demo/log to explore.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scratch.postgres import start_postgres

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"


def _cdc(*args: str) -> list[str]:
    return [sys.executable, "-m", "cdc", *args]


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.1)


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    print("demo: starting a scratch PostgreSQL server ...", flush=True)
    pg = start_postgres()
    daemon = None
    try:
        pg.create_database("shop")
        pg.psql(
            "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);"
            "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers,"
            " amount numeric(12,2) NOT NULL, status text, created_at timestamptz DEFAULT now());",
            "shop",
        )
        config = DEMO / "cdc.yaml"
        config.write_text(
            f"""# written by `make demo`
pipelines:
  - name: shop
    source:
      type: postgres
      dsn: "{pg.dsn("shop")}"
      tables: ["public.customers", "public.orders"]
    sink:
      type: log
      path: ./log
"""
        )
        print(f"demo: config {config.relative_to(ROOT)}:\n{config.read_text()}")
        print("demo: $ cdc run -c .demo/cdc.yaml", flush=True)
        log_file = open(DEMO / "daemon.log", "wb")
        daemon = subprocess.Popen(
            _cdc("run", "-c", str(config)), stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
        _wait(
            lambda: b"streaming from slot" in (DEMO / "daemon.log").read_bytes(),
            60,
            "the daemon to start streaming",
        )
        print("demo: writing rows in three transactions ...", flush=True)
        pg.psql(
            "BEGIN;"
            "INSERT INTO customers (name, email)"
            " VALUES ('Ada', 'ada@example.com'), ('Brian', NULL);"
            "INSERT INTO orders (customer_id, amount, status) VALUES (1, 19.99, 'new');"
            "COMMIT;"
            "UPDATE orders SET status = 'paid' WHERE id = 1;"
            "BEGIN; DELETE FROM orders WHERE id = 1; DELETE FROM customers WHERE id = 2; COMMIT;",
            "shop",
        )

        def count() -> int:
            out = subprocess.run(
                _cdc("log", "info", str(DEMO / "log")), capture_output=True, text=True, env=env
            )
            return int(json.loads(out.stdout)["records"]) if out.returncode == 0 else 0

        _wait(lambda: count() >= 11, 60, "the events to reach the log")
        daemon.terminate()
        daemon.wait(30)
        daemon = None
        print("demo: $ cdc log read .demo/log   (summary; every line is a full JSON event)\n")
        read = _cdc("log", "read", str(DEMO / "log"))
        out = subprocess.run(read, capture_output=True, text=True, env=env, check=True)
        for line in out.stdout.splitlines():
            r = json.loads(line)
            v = r["value"]
            if r["topic"].endswith(".transaction"):
                print(f"{r['offset']:>3}  {r['topic']:<22} {v['status']:<6} tx={v['id']}")
            else:
                row = v["after"] if v["after"] is not None else v["before"]
                print(
                    f"{r['offset']:>3}  {r['topic']:<22} op={v['op']}  key={json.dumps(r['key'])}"
                    f"  row={json.dumps(row)}"
                )
        print("\ndemo: one full event:")
        print(json.dumps(json.loads(out.stdout.splitlines()[1]), indent=2))
        print(
            "\ndemo: done. Explore with: .venv/bin/cdc log read .demo/log | less"
            "   and   .venv/bin/cdc log info .demo/log"
        )
        return 0
    finally:
        if daemon is not None:
            daemon.kill()
        pg.stop("immediate")
        shutil.rmtree(pg.datadir.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
