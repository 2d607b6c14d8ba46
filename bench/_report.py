"""The table for people, the JSON for machines, the machine and versions they were measured on."""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench._run import Latency, Result
from bench._stats import spread

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "loadavg": list(os.getloadavg()),
    }


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
            )
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status)}


def client_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    import cdc

    out: dict[str, str | None] = {"python": platform.python_version(), "cdc": cdc.__version__}
    for dist in ("mysql-replication", "confluent-kafka", "psycopg", "fastavro"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def summarise(results: list[Result], latency: list[Latency]) -> dict[str, Any]:
    groups: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        groups[(r.pipeline, r.workload)].append(r)
    rows = []
    for (pipeline, workload), rs in groups.items():
        ceilings: dict[str, list[float | None]] = defaultdict(list)
        fractions: dict[str, list[float | None]] = defaultdict(list)
        for r in rs:
            for name, c in r.ceilings.items():
                ceilings[name].append(c)
                fractions[name].append(r.rows_per_s / c if r.rows_per_s and c else None)
        rows.append(
            {
                "pipeline": pipeline,
                "workload": workload,
                "rows": rs[0].rows,
                "runs": len(rs),
                "rows_per_s": spread([r.rows_per_s for r in rs]),
                "cpu_s": spread([r.cpu_s for r in rs]),
                "cpu_us_per_row": spread(
                    [
                        r.cpu_s * 1e6 / (r.cpu_rows or r.rows) if r.cpu_s is not None else None
                        for r in rs
                    ]
                ),
                "peak_rss_mb": spread([r.peak_rss_mb for r in rs]),
                "ceilings": {k: spread(v) for k, v in ceilings.items()},
                "fraction_of_ceiling": {k: spread(v) for k, v in fractions.items()},
            }
        )
    lat: dict[str, list[Latency]] = defaultdict(list)
    for x in latency:
        lat[x.pipeline].append(x)
    lat_rows = [
        {
            "pipeline": p,
            "runs": len(xs),
            "offered_rows_per_s": xs[0].offered_rows_per_s,
            "tx_rows": xs[0].tx_rows,
            "achieved_rows_per_s": spread([x.achieved_rows_per_s for x in xs]),
            "p50_ms": spread([x.p50_ms for x in xs]),
            "p99_ms": spread([x.p99_ms for x in xs]),
            "max_ms": spread([x.max_ms for x in xs]),
        }
        for p, xs in lat.items()
    ]
    return {"throughput": rows, "latency": lat_rows}


def as_json(
    header: dict[str, Any], results: list[Result], latency: list[Latency], extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        **header,
        "summary": summarise(results, latency),
        "results": [dataclasses.asdict(r) for r in results],
        "latency": [dataclasses.asdict(x) for x in latency],
        **extra,
    }


def _n(v: float | None, digits: int = 0) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def _spread(s: dict[str, float | None], digits: int = 0) -> str:
    if s["median"] is None:
        return "n/a"
    if s["min"] == s["max"]:
        return _n(s["median"], digits)
    return f"{_n(s['median'], digits)} [{_n(s['min'], digits)}-{_n(s['max'], digits)}]"


def table(doc: dict[str, Any]) -> str:
    sizes = doc["sizes"]
    lines = [
        f"cdc bench  scale={doc['scale']}  runs={doc['runs']}  "
        f"commit={(doc['git']['commit'] or '?')[:10]}{' (dirty)' if doc['git']['dirty'] else ''}",
        f"  W1 {sizes['W1_changes']:,} changes in 1,000-row transactions; "
        f"W2 {sizes['W2_txns']:,} one-row transactions; W3 {sizes['W3_rows']:,} rows snapshot",
        f"  {doc['machine']['cpu_model']}, {doc['machine']['cores']} cores, "
        f"{doc['machine']['ram_gb']} GB; load average at start "
        f"{doc['machine']['loadavg'][0]:.2f}, at end {doc['loadavg_end'][0]:.2f}",
        "  rows/s: median [min-max] of the runs, first to last event durable in the sink; "
        "cpu s (and us per row, start-up included) and peak RSS of the daemon; into a database "
        "target: rows visible in the target (polled)",
        "",
    ]
    head = (
        f"{'pipeline':<23} {'work':<4} {'rows':>9} {'rows/s':>26} {'cpu s':>7} {'us/row':>6}"
        f" {'RSS MB':>7}"
        f"  ceiling (rows/s, our fraction of it)"
    )
    lines += [head, "-" * len(head)]
    for r in doc["summary"]["throughput"]:
        ceil = "; ".join(
            f"{name} {_n(c['median'])} ({_n(r['fraction_of_ceiling'][name]['median'], 2)})"
            for name, c in r["ceilings"].items()
        )
        lines.append(
            f"{r['pipeline']:<23} {r['workload']:<4} {r['rows']:>9,} {_spread(r['rows_per_s']):>26}"
            f" {_n(r['cpu_s']['median'], 1):>7} {_n(r['cpu_us_per_row']['median'], 1):>6}"
            f" {_n(r['peak_rss_mb']['median']):>7}  {ceil or '-'}"
        )
    if doc["summary"]["latency"]:
        lines += [
            "",
            "latency: commit (client wall clock) to durable in the sink, paced transactions of "
            f"{doc['sizes']['latency_tx_rows']} rows for {doc['sizes']['latency_seconds']:g} s",
            f"{'pipeline':<23} {'offered/s':>9} {'achieved/s':>10} {'p50 ms':>10} {'p99 ms':>10}"
            f" {'max ms':>10}",
        ]
        for x in doc["summary"]["latency"]:
            lines.append(
                f"{x['pipeline']:<23} {_n(x['offered_rows_per_s']):>9}"
                f" {_n(x['achieved_rows_per_s']['median']):>10} {_n(x['p50_ms']['median']):>10}"
                f" {_n(x['p99_ms']['median']):>10} {_n(x['max_ms']['max']):>10}"
            )
    for hs in doc.get("hot_spots", []):
        lines += ["", f"profile {hs['pipeline']} {hs['workload']}: {hs['file']}"]
        lines += [
            f"  {s['self_pct']:5.1f}% self {s['total_pct']:5.1f}% total  {s['function']}"
            for s in hs["top"]
        ]
    lines.append("")
    lines.append(f"json: {doc['json_path']}")
    return "\n".join(lines)
