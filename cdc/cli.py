"""The ``cdc`` command line.

Exit codes: 0 success, 1 runtime failure, 2 configuration or usage error. A user's mistake is
reported as a message, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cdc
from cdc.errors import CdcError, ConfigError

log = logging.getLogger("cdc")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    from cdc.config import load

    config = load(args.config)
    names = ", ".join(p.name for p in config.pipelines)
    print(f"{args.config}: ok ({len(config.pipelines)} pipeline(s): {names})")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    """Connect to every pipeline's source and print each problem; 1 when there is any."""
    from cdc import plugins
    from cdc.config import load

    config = load(args.config)
    found = 0
    for p in config.pipelines:
        src: object = p.source
        kind = str(getattr(src, "type", "?"))
        check = getattr(plugins.plugin("source", kind), "check_source", None)
        try:
            problems: list[str] = check(src, p) if check is not None else []
        except CdcError as e:
            problems = [str(e)]
        found += len(problems)
        print(
            f"pipeline {p.name} ({kind} source): "
            + (f"{len(problems)} problem(s)" if problems else "ok")
        )
        for problem in problems:
            print(f"  - {problem}")
    return 1 if found else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from cdc.config import load
    from cdc.daemon import Daemon

    config = load(args.config)
    return Daemon(config).run()


def _cmd_log_read(args: argparse.Namespace) -> int:
    from cdc._jsonout import AvroDecoder, dumps
    from sinks.log import LogReader

    reader = LogReader(Path(args.path))
    dec = AvroDecoder(reader.schemas.get)
    out = sys.stdout
    try:
        for r in reader.records(args.from_offset, args.topic, args.follow):
            obj = {
                "offset": r.offset,
                "topic": r.topic,
                "key": dec.decode(r.key),
                "value": dec.decode(r.value),
                "timestamp": r.timestamp_ms,
            }
            out.write(dumps(obj) + "\n")
            if args.follow:
                out.flush()
    except BrokenPipeError:
        return 0
    return 0


def _cmd_log_info(args: argparse.Namespace) -> int:
    from sinks.log import LogReader

    info = LogReader(Path(args.path)).info()
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cdc", description=cdc.__doc__)
    p.add_argument("--version", action="version", version=f"cdc {cdc.__version__}")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the pipelines of a config file in the foreground")
    run.add_argument("-c", "--config", required=True, help="YAML config file")
    run.set_defaults(func=_cmd_run)

    val = sub.add_parser("validate", help="check a config file and report every problem")
    val.add_argument("-c", "--config", required=True, help="YAML config file")
    val.set_defaults(func=_cmd_validate)

    chk = sub.add_parser("check", help="connect to each pipeline's source and report problems")
    chk.add_argument("-c", "--config", required=True, help="YAML config file")
    chk.set_defaults(func=_cmd_check)

    lg = sub.add_parser("log", help="read the built-in log")
    lsub = lg.add_subparsers(dest="log_command", required=True)
    rd = lsub.add_parser(
        "read", help="print records as JSON lines: offset, topic, key, value, timestamp"
    )
    rd.add_argument("path", help="log directory (the sink's path)")
    rd.add_argument("--from", dest="from_offset", type=int, default=0, help="first offset to print")
    rd.add_argument("--topic", help="only records of this topic")
    rd.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    rd.set_defaults(func=_cmd_log_read)
    inf = lsub.add_parser("info", help="segments, offsets and the last source position")
    inf.add_argument("path", help="log directory (the sink's path)")
    inf.set_defaults(func=_cmd_log_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except ConfigError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except CdcError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
