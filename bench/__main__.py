"""python -m bench [--scale S] [--runs N] [--pipelines ...] [--profile]; see docs/bench.md."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import _servers
from bench._profile import hot_spots
from bench._report import as_json, client_versions, git_commit, machine, table
from bench._run import PIPELINES, WORKLOADS, Latency, Options, PipelineRun, Result
from bench._workloads import Sizes

DEFAULT_SCALE = 0.05
RESULTS = Path(__file__).resolve().parent / "results"


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="throughput and latency of cdc pipelines beside the ceiling, same run",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE,
        help=f"fraction of the issue's sizes (1 = W1 1.2M changes, W2 100k transactions, W3 2M "
        f"rows, W4 W3's rows backfilled beside W1); default {DEFAULT_SCALE}",
    )
    p.add_argument("--runs", type=int, default=3, help="repeats; the table shows min/median/max")
    p.add_argument(
        "--pipelines",
        default=",".join(PIPELINES),
        help=f"comma-separated subset of {','.join(PIPELINES)}",
    )
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)} (W4: Postgres into log/kafka)",
    )
    p.add_argument("--no-ceilings", action="store_true", help="skip the ceiling measurements")
    p.add_argument(
        "--latency-rate", type=float, default=2000, help="offered rows/s of the latency phase"
    )
    p.add_argument(
        "--latency-tx-rows", type=int, default=10, help="rows per transaction of the latency phase"
    )
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=5,
        help="length of the latency phase per pipeline and run (0: skip it)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run the daemon under py-spy for W1 of run 1 of each pipeline; print hot spots",
    )
    p.add_argument(
        "--peer",
        choices=["debezium"],
        help="also run Debezium Server 2.7 on W1 of postgres-kafka into the same Kafka",
    )
    p.add_argument(
        "--mysql-flavour",
        choices=["mariadb", "mysql"],
        default="mariadb",
        help="the server of the mysql-* pipelines: MariaDB (default) or Oracle MySQL "
        "(scratch/mysql.py; its ceiling is its own mysqlbinlog)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="directory of the JSON results")
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def capture_beside_apply(new: list[Result], earlier: list[Result]) -> None:
    """Put the capture rate of the same source into the log, same run and workload, beside the
    apply rate of a pipeline into a database target (the goal: apply keeps up with capture)."""
    for r in new:
        source, sink = r.pipeline.split("-")
        if sink != "postgres":
            continue
        for c in earlier:
            if (c.pipeline, c.run, c.workload) == (f"{source}-log", r.run, r.workload):
                # timed like the apply: from the daemon's streaming log line (W3: the log's span)
                capture = c.notes.get("rows_per_s_from_streaming", c.rows_per_s)
                if capture:
                    r.ceilings[f"capture {c.pipeline}"] = capture


def main(argv: list[str] | None = None) -> int:
    a = _args(sys.argv[1:] if argv is None else argv)
    pipelines = [p.strip() for p in a.pipelines.split(",") if p.strip()]
    workloads = [w.strip().upper() for w in a.workloads.split(",") if w.strip()]
    bad = [p for p in pipelines if p not in PIPELINES]
    bad += [w for w in workloads if w not in WORKLOADS]
    if bad or a.scale <= 0 or a.runs < 1:
        print(f"bench: bad arguments: {bad or (a.scale, a.runs)}", file=sys.stderr)
        return 2

    def say(msg: str) -> None:
        if not a.quiet:
            print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    started = dt.datetime.now(dt.UTC)
    sizes = Sizes.at(a.scale)
    header: dict[str, Any] = {
        "format": 1,
        "timestamp": started.isoformat(timespec="seconds"),
        "scale": a.scale,
        "runs": a.runs,
        "sizes": {
            "W1_changes": sizes.w1_changes,
            "W1_transactions": sizes.w1_inserts + sizes.w1_updates + sizes.w1_deletes,
            "W2_txns": sizes.w2_txns,
            "W3_rows": sizes.w3_rows,
            "latency_rows_per_s": a.latency_rate,
            "latency_seconds": a.latency_seconds,
            "latency_tx_rows": a.latency_tx_rows,
        },
        "pipelines": pipelines,
        "workloads": workloads,
        "machine": machine(),
        "git": git_commit(),
    }
    results: list[Result] = []
    latency: list[Latency] = []
    profiles: list[tuple[str, Path]] = []
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp:
        workdir = Path(tmp) if not a.keep else a.out / f"work-{stamp}"
        say(f"starting servers (work directory {workdir})")
        servers = _servers.start(
            stack,
            postgres=any("postgres" in p for p in pipelines),  # a source or the target
            mysql=any(p.startswith("mysql") for p in pipelines),
            kafka=any(p.endswith("kafka") for p in pipelines),
            mysql_flavour=a.mysql_flavour,
        )
        header["versions"] = {**client_versions(), **_servers.versions(servers)}
        if a.peer == "debezium":
            from bench._debezium import VERSION

            header["versions"]["debezium_server"] = VERSION
        opts = Options(
            scale=a.scale,
            runs=a.runs,
            pipelines=pipelines,
            workloads=workloads,
            ceilings=not a.no_ceilings,
            latency_rate=a.latency_rate,
            latency_seconds=a.latency_seconds,
            latency_tx_rows=a.latency_tx_rows,
            profile=a.profile,
            workdir=workdir,
            peer=a.peer,
            keep=a.keep,
            say=say,
        )
        # Runs outermost: a slow spell on a shared machine then hurts one run of every pipeline
        # rather than every run of one.
        for run in range(1, a.runs + 1):
            for pipeline in pipelines:
                pr = PipelineRun(opts, servers, pipeline, run)
                pr.execute()
                capture_beside_apply(pr.results, results)
                results.extend(pr.results)
                if pr.latency is not None:
                    latency.append(pr.latency)
                for path in pr.profiles:
                    kept = a.out / f"profile-{stamp}-{pipeline}-W1.txt"
                    if path.is_file():
                        kept.write_bytes(path.read_bytes())
                        profiles.append((pipeline, kept))
        say("stopping servers")
    header["loadavg_end"] = list(os.getloadavg())
    extra: dict[str, Any] = {
        "hot_spots": [
            {"pipeline": p, "workload": "W1", "file": str(f), "top": hot_spots(f)}
            for p, f in profiles
        ]
    }
    json_path = a.out / f"{stamp}.json"
    doc = as_json(header, results, latency, extra)
    doc["json_path"] = str(json_path)
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
