"""The ``cdc`` command line.

Exit codes: 0 success, 1 runtime failure, 2 configuration or usage error. A user's mistake is
reported as a message, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import cdc
from cdc import _native_avro
from cdc.errors import CdcError, ConfigError

log = logging.getLogger("cdc")


def _setup_logging(level: str, fmt: str = "text") -> None:
    from cdc import logs

    logs.setup(level, fmt)


def _cmd_validate(args: argparse.Namespace) -> int:
    from cdc.config import load

    config = load(args.config)
    names = ", ".join(p.name for p in config.pipelines)
    print(f"{args.config}: ok ({len(config.pipelines)} pipeline(s): {names})")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    """Connect to every pipeline's source and print each problem; 1 when there is any."""
    from cdc import logs, plugins
    from cdc.config import load
    from cdc.model import Problem

    config = load(args.config)
    logs.add_secrets(logs.secrets_in(config))  # a driver's message may quote the DSN
    found = 0
    for p in config.pipelines:
        src: plugins.PluginConfig = p.source
        kind = src.type
        try:
            problems = list(plugins.check_source(kind, src, p))
        except CdcError as e:
            problems = [Problem(str(e))]
        found += len(problems)
        print(
            f"pipeline {p.name} ({kind} source): "
            + (f"{len(problems)} problem(s)" if problems else "ok")
        )
        for problem in problems:
            print(f"  - {logs.redact(str(problem))}")
    return 1 if found else 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Compare a pipeline's source tables with its database target's (docs/verify.md)."""
    from cdc import logs, verifycmd
    from cdc.config import load

    logs.add_secrets(logs.secrets_in(load(args.config)))  # a driver's message may quote the DSN
    return verifycmd.run(
        args.config,
        args.pipeline,
        args.tables,
        max_keys=args.max_keys,
        timeout_s=args.timeout,
        chunk=args.chunk,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from cdc import logs
    from cdc.config import load
    from cdc.daemon import Daemon, tune_gc

    config = load(args.config)
    logs.add_secrets(logs.secrets_in(config))
    tune_gc()
    return Daemon(config).run()


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _cmd_status(args: argparse.Namespace) -> int:
    """Print what the daemon running this config publishes; exit 0 only while it runs."""
    import time

    from cdc.config import default_status_file, load
    from cdc.status import pid_alive, read_file

    config = load(args.config)
    path = config.status_file or default_status_file(args.config)
    try:
        doc = read_file(path)
    except PermissionError:
        # the daemon writes it 0600: for its own user only
        print(
            f"error: cannot read the status file {path}: permission denied; run `cdc status` "
            "as the user the daemon runs as",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError) as e:
        print(f"error: cannot read the status file {path}: {e}", file=sys.stderr)
        return 1
    if doc is None:
        print(
            f"no daemon has published a status for {args.config} (no file {path}): "
            "is `cdc run` running with this config?",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(doc, indent=2))
    now = time.time()
    age = now - float(doc.get("written_at", 0))
    stale_after = max(5.0, 5 * float(doc.get("interval_s", 1.0)))
    pid = int(doc.get("pid", 0))
    running = bool(doc.get("running")) and age <= stale_after and pid_alive(pid)
    out = sys.stderr if args.json else sys.stdout
    if running:
        print(f"daemon pid {pid}: running (status written {_ago(age)})", file=out)
    elif doc.get("running") and age > stale_after:
        print(
            f"daemon pid {pid}: status is stale (written {_ago(age)}"
            f"{'' if pid_alive(pid) else '; that process is gone'}): "
            "the daemon is not running or is hung; the last known state follows",
            file=out,
        )
    else:
        print(
            f"daemon pid {pid}: not running (it exited {_ago(age)}); the last known state follows",
            file=out,
        )
    if args.json:
        return 0 if running else 1
    if running and doc.get("http"):
        print(f"http endpoint: {doc['http']} (/metrics, /health, /ready)")
    for p in doc.get("pipelines", []):
        lag = p.get("lag_ms")
        durable = p.get("last_durable_at")
        print(f"{p['name']}: {p['state']} (since {_ago(now - float(p.get('since') or now))})")
        print(f"  position: {json.dumps(p.get('position'))}")
        print(f"  lag: {'-' if lag is None else f'{lag} ms'}", end="")
        print(f"; last durable batch: {'-' if durable is None else _ago(now - durable)}")
        print(f"  events: {p.get('events', 0)}; restarts: {p.get('restarts', 0)}")
        for table, prog in sorted((p.get("snapshot") or {}).items()):
            total = prog.get("total", -1)
            print(f"  snapshot {table}: {prog.get('done')} of {total if total >= 0 else '?'} rows")
        if p.get("last_error"):
            when = p.get("last_error_at")
            ago = f" ({_ago(now - when)})" if when else ""
            print(f"  last error{ago}: {p['last_error']}")
    return 0 if running else 1


def _daemon_running(config: object, config_path: str, sink_path: Path | None) -> str | None:
    """Why a daemon seems to run this config or this pipeline's sink, or None: the status file
    says running and is fresh (as `cdc status` decides), or a writer holds the sink's lock (the
    log directory's flock, or the checkpoint's lock file of a Kafka/NATS sink)."""
    import fcntl
    import os
    import time

    from cdc.config import default_status_file
    from cdc.status import pid_alive, read_file

    path = getattr(config, "status_file", None) or default_status_file(config_path)
    try:
        doc = read_file(path)
    except (OSError, ValueError):
        doc = None  # unreadable: the locks below still tell
    if doc is not None:
        age = time.time() - float(doc.get("written_at", 0))
        pid = int(doc.get("pid", 0))
        fresh = age <= max(5.0, 5 * float(doc.get("interval_s", 1.0)))
        if doc.get("running") and fresh and pid_alive(pid):
            return f"the daemon pid {pid} runs this config (status file {path})"
    if sink_path is None:
        return None
    for target in (sink_path, sink_path / ".writer.lock"):
        try:
            fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # none yet: nobody writes there
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"a process holds the lock of this pipeline's sink ({target})"
        except OSError:
            pass  # cannot be locked (a network file system): the status file decides
        finally:
            os.close(fd)
    return None


def _sink_advice(sink: object) -> str:
    """What to do with the sink's data once the pipeline's position on the server is gone."""
    kind = getattr(sink, "type", "")
    path = getattr(sink, "path", None)
    if kind == "log":
        return (
            f"the log {path} keeps its events (cdc drop never touches them): once no reader "
            "needs them, delete the directory or move it aside; do not leave it at this path if "
            "this pipeline is to run again: the position it holds went with the slot, so the "
            "start would fail with the position lost (or, with snapshot: when_needed, append a "
            "new snapshot after the old events)"
        )
    return (
        f"the {kind} sink's checkpoint {path}/checkpoint.json still holds the last position "
        "(cdc drop never touches it or the events already published): delete the directory or "
        "move it aside before this pipeline runs again; delete the topics/subjects with the "
        "broker's tools once nobody needs them"
    )


def _cmd_drop(args: argparse.Namespace) -> int:
    """Drop the server objects a pipeline created (its slot and publication): 0 when done or
    nothing was left, 1 when refused or failed, 2 without confirmation or for an unknown name."""
    from typing import Any

    from cdc import logs, plugins
    from cdc.config import load

    config = load(args.config)
    logs.add_secrets(logs.secrets_in(config))
    names = [p.name for p in config.pipelines]
    if args.pipeline not in names:
        raise ConfigError(
            [f"{args.config} has no pipeline {args.pipeline!r} (it has: {', '.join(names)})"]
        )
    pipe = config.pipelines[names.index(args.pipeline)]
    src: Any = pipe.source
    sink_path = getattr(pipe.sink, "path", None)
    busy = _daemon_running(config, args.config, sink_path if isinstance(sink_path, Path) else None)
    if busy:
        print(
            f"error: not dropping pipeline {pipe.name}: {busy}; stop the daemon first "
            "(a running pipeline would recreate what is dropped, or fail)",
            file=sys.stderr,
        )
        return 1
    plan_drop = getattr(plugins.plugin("source", src.type), "plan_drop", None)
    if plan_drop is None:
        print(
            f"pipeline {pipe.name} ({src.type} source): nothing on the server to drop "
            "(this source keeps no slot or publication there)"
        )
        print(f"note: {_sink_advice(pipe.sink)}")
        return 0
    plan: Any = plan_drop(src, pipe.name)
    try:
        print(f"pipeline {pipe.name} ({src.type} source):")
        for line in plan.absent:
            print(f"  absent: {line} (nothing to drop)")
        for line in plan.kept:
            print(f"  keep: {line}")
        if plan.refusal:
            print(f"error: not dropping anything: {plan.refusal}", file=sys.stderr)
            return 1
        if not plan.drops:
            print("nothing left to drop on the server")
            print(f"note: {_sink_advice(pipe.sink)}")
            return 0
        for line in plan.drops:
            print(f"  drop: {line}")
        if not args.yes:
            if not sys.stdin.isatty():
                print(
                    "error: not dropping: confirmation needed and stdin is not a terminal; "
                    "pass --yes to drop without asking",
                    file=sys.stderr,
                )
                return 2
            sys.stdout.write("drop these? the pipeline cannot resume from them after [y/N] ")
            sys.stdout.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                print("nothing dropped")
                return 1
        for line in plan.execute():
            print(line)
        print(f"note: {_sink_advice(pipe.sink)}")
        return 0
    finally:
        plan.close()


def _cmd_snapshot(args: argparse.Namespace) -> int:
    from cdc.snapshotcmd import run

    return run(args.config, args.pipeline, args.tables, args.where)


def _log_start(text: str) -> int | Literal["earliest", "latest"]:
    if text == "earliest":
        return "earliest"
    if text == "latest":
        return "latest"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"bad value {text!r}: use an offset (0 or more), earliest or latest"
        )
    return value


def _log_since(text: str) -> int:
    from cdc.sinks.log import parse_since

    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _cmd_log_read(args: argparse.Namespace) -> int:
    """Print events as JSON lines, through the log's public consumer API (cdc.sinks.log.open_log).
    With ``--consumer``: start at its committed offset and commit what was printed (after
    flushing stdout, at most every second and at the end): at-least-once, a crash re-prints up
    to the last second's records."""
    import os
    import time

    from cdc._jsonout import dumps
    from cdc.sinks.log import EventBatch, open_log

    log = open_log(Path(args.path))
    out = sys.stdout
    consumer = log.consumer(args.consumer) if args.consumer else None
    if consumer is not None:
        import signal

        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # commit what was printed, as on Ctrl-C

        signal.signal(signal.SIGTERM, stop)
    batches: Iterator[EventBatch]
    if consumer is not None:
        batches = consumer.batches(
            args.from_offset, since=args.since, topic=args.topic, follow=args.follow
        )
    else:
        start: int | Literal["earliest", "latest"] = (
            "earliest" if args.from_offset is None else args.from_offset
        )
        batches = log.batches(start, since=args.since, topic=args.topic, follow=args.follow)
    done: int | None = None  # every record before this offset is printed (and flushed: committed)
    last_commit = time.monotonic()
    try:
        try:
            for batch in batches:
                for ev in batch.events:
                    out.write(dumps(ev.as_json()) + "\n")
                done = batch.next_offset
                if args.follow or consumer is not None:
                    out.flush()
                if consumer is not None and time.monotonic() - last_commit >= 1:
                    consumer.commit(done)
                    last_commit = time.monotonic()
            out.flush()
            rc = 0
        except BrokenPipeError:
            # The reader went away: what it got past the last commit is unknown. Quiet exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            return 0
        except KeyboardInterrupt:
            out.flush()
            rc = 130
        if consumer is not None and done is not None:
            consumer.commit(done)
        return rc
    finally:
        if consumer is not None:
            consumer.close()


def _cmd_serve(args: argparse.Namespace) -> int:
    from cdc import serve

    return serve.run(args.config)


def _cmd_log_info(args: argparse.Namespace) -> int:
    from cdc.sinks.log import LogReader

    info = LogReader(Path(args.path)).info()
    print(json.dumps(info, indent=2))
    return 0


def _cmd_log_consumers(args: argparse.Namespace) -> int:
    """List the named consumers of a log (committed offset, lag), or delete one."""
    from cdc.errors import SinkError
    from cdc.sinks.log import LogReader

    reader = LogReader(Path(args.path))
    if args.delete:
        names = [c["name"] for c in reader.consumers()]
        if args.delete not in names:
            raise SinkError(
                f"log {args.path} has no consumer {args.delete!r}"
                + (f" (it has: {', '.join(names)})" if names else " (it has none)")
            )
        with reader.consumer(args.delete) as gone:
            gone.delete()
        print(f"deleted consumer {args.delete!r}: retention no longer keeps records for it")
        return 0
    consumers = reader.consumers()
    if args.json:
        print(json.dumps(consumers, indent=2))
        return 0
    start, end = reader.start_offset(), reader.end_offset()
    held = f"records at offsets {start}..{end - 1}" if end > start else "no records"
    print(f"log {args.path}: {held}; the next record gets offset {end}")
    if not consumers:
        print("no named consumers")
        return 0
    width = max(len("consumer"), *(len(c["name"]) for c in consumers))
    print(f"{'consumer':<{width}}  {'committed':>12}  {'lag':>12}  committed at")
    for c in consumers:
        committed = "unreadable" if c["committed"] is None else str(c["committed"])
        lag = "-" if c["lag"] is None else str(c["lag"])
        note = "  (behind the log's start: records deleted)" if c["behind_start"] else ""
        print(f"{c['name']:<{width}}  {committed:>12}  {lag:>12}  {c['committed_at']}{note}")
    return 0


class _Version(argparse.Action):
    """``--version``: printed as is (argparse's own action rewraps the lines)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kw: object) -> None:
        head, *decoders = _native_avro.describe_all()
        print(f"cdc {cdc.__version__}, {head}")
        for line in decoders:  # each compiled part and why it runs or not
            print(line)
        # one distribution, one top-level package: sources and sinks install inside it
        print(
            f"installed as the package cdc (cdc.sources, cdc.sinks) at {Path(cdc.__file__).parent}"
        )
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cdc", description=cdc.__doc__)
    p.add_argument(
        "--version",
        action=_Version,
        nargs=0,
        help="the version, the compiled paths in use (Avro writers, decoders), and where the "
        "package is installed",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipelines of a config file in the foreground")
    run.add_argument("-c", "--config", required=True, help="YAML config file")
    run.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text: human-readable lines; json: one JSON object per line "
        "(ts, level, logger, message, pipeline, exc)",
    )
    run.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=["debug", "info", "warning", "error"],
        help="least severe level to log (default info)",
    )
    run.set_defaults(func=_cmd_run)

    stat = sub.add_parser(
        "status", help="show what the daemon running a config is doing (state, position, lag)"
    )
    stat.add_argument("-c", "--config", required=True, help="YAML config file")
    stat.add_argument("--json", action="store_true", help="print the published JSON document")
    stat.set_defaults(func=_cmd_status)

    val = sub.add_parser("validate", help="check a config file and report every problem")
    val.add_argument("-c", "--config", required=True, help="YAML config file")
    val.set_defaults(func=_cmd_validate)

    chk = sub.add_parser("check", help="connect to each pipeline's source and report problems")
    chk.add_argument("-c", "--config", required=True, help="YAML config file")
    chk.set_defaults(func=_cmd_check)

    drp = sub.add_parser(
        "drop",
        help="drop the replication slot and publication a pipeline created (stop the daemon "
        "first); the sink's data is left alone",
    )
    drp.add_argument("-c", "--config", required=True, help="YAML config file")
    drp.add_argument("pipeline", help="the pipeline's name in the config file")
    drp.add_argument("--yes", action="store_true", help="drop without asking (for scripts)")
    drp.set_defaults(func=_cmd_drop)

    ver = sub.add_parser(
        "verify",
        help="compare a pipeline's source tables with its database target's (checksums of key "
        "ranges computed by each server); exit 0 equal, 1 not",
    )
    ver.add_argument("-c", "--config", required=True, help="YAML config file")
    ver.add_argument("pipeline", help="the pipeline's name in the config file (a database sink)")
    ver.add_argument(
        "tables", nargs="*", help="source tables to compare (schema.table); default: all captured"
    )
    ver.add_argument(
        "--max-keys", type=int, default=20, help="differing keys to print per table (default 20)"
    )
    ver.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the target to apply the source through the point compared "
        "(default 120); past it, compare anyway and say so",
    )
    ver.add_argument(
        "--chunk", type=int, default=10000, help="rows per checksummed key range (default 10000)"
    )
    ver.set_defaults(func=_cmd_verify)
    srv = sub.add_parser(
        "serve",
        help="serve the pipelines' built-in logs over HTTP: Server-Sent Events and a pull "
        "consumer API (the config's serve: block; docs/log.md)",
    )
    srv.add_argument("-c", "--config", required=True, help="YAML config file")
    srv.set_defaults(func=_cmd_serve)
    snp = sub.add_parser(
        "snapshot",
        help="ask the running daemon for an incremental snapshot of tables of a pipeline, "
        "while it streams (re-read a table, or a range of it with --where)",
    )
    snp.add_argument("-c", "--config", required=True, help="YAML config file")
    snp.add_argument("pipeline", help="the pipeline's name in the config file")
    snp.add_argument("tables", nargs="+", metavar="TABLE", help="tables as in source.tables")
    snp.add_argument(
        "--where",
        metavar="CONDITION",
        help="only rows meeting this SQL condition (run by the server as written, on a "
        "read-only connection)",
    )
    snp.set_defaults(func=_cmd_snapshot)

    lg = sub.add_parser("log", help="read the built-in log")
    lsub = lg.add_subparsers(dest="log_command", required=True)
    rd = lsub.add_parser(
        "read", help="print records as JSON lines: offset, topic, key, value, timestamp"
    )
    rd.add_argument("path", help="log directory (the sink's path)")
    start = rd.add_mutually_exclusive_group()
    start.add_argument(
        "--from",
        dest="from_offset",
        metavar="OFFSET",
        type=_log_start,
        help="first offset to print, or earliest (the log's start; the default) or latest "
        "(only new records); an offset retention deleted is an error naming the first one",
    )
    start.add_argument(
        "--since",
        metavar="TIME",
        type=_log_since,
        help="start at the first frame written at or after this time: ISO-8601 "
        "(2026-11-27T10:00:00Z; UTC without an offset) or a duration back from now (10m, 2h, 7d)",
    )
    rd.add_argument("--topic", help="only records of this topic")
    rd.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    rd.add_argument(
        "--consumer",
        metavar="NAME",
        help="a named consumer: start after its committed offset (unless --from/--since moves "
        "it) and commit what was printed, at most once a second and at exit (at-least-once: "
        "after a crash the last second may print again); retention keeps what it has not "
        "committed",
    )
    rd.set_defaults(func=_cmd_log_read)
    inf = lsub.add_parser(
        "info", help="segments, start and end offsets, consumers and the last source position"
    )
    inf.add_argument("path", help="log directory (the sink's path)")
    inf.set_defaults(func=_cmd_log_info)
    cons = lsub.add_parser(
        "consumers", help="list the named consumers with their committed offset and lag"
    )
    cons.add_argument("path", help="log directory (the sink's path)")
    cons.add_argument("--json", action="store_true", help="print them as a JSON list")
    cons.add_argument(
        "--delete",
        metavar="NAME",
        help="forget this consumer (retention stops keeping its records)",
    )
    cons.set_defaults(func=_cmd_log_consumers)
    return p


def main(argv: list[str] | None = None) -> int:
    from cdc.logs import redact

    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, getattr(args, "log_format", "text"))
    try:
        return int(args.func(args))
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: {redact(problem)}", file=sys.stderr)
        return 2
    except CdcError as e:
        print(f"error: {redact(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
