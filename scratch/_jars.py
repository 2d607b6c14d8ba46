"""Fetching Java artifacts from Maven Central into a local cache, once, with ``mvn``.

The cache lives in ``$CDC_SCRATCH_CACHE`` (default ``~/.cache/cdc-scratch``). Each fetch writes a
tiny generated pom into its own directory and runs ``mvn dependency:copy-dependencies`` into a
staging directory that is renamed into place when complete, so an interrupted fetch is retried
rather than half used. A file lock keeps two concurrent fetches of the same thing apart.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from scratch._common import find_binary


def cache_root() -> Path:
    """Where downloaded artifacts are kept: ``$CDC_SCRATCH_CACHE`` or ``~/.cache/cdc-scratch``."""
    env = os.environ.get("CDC_SCRATCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cdc-scratch"


def _pom(name: str, deps: Sequence[tuple[str, str, str]]) -> str:
    items = "".join(
        "    <dependency>\n"
        f"      <groupId>{escape(g)}</groupId>\n"
        f"      <artifactId>{escape(a)}</artifactId>\n"
        f"      <version>{escape(v)}</version>\n"
        "    </dependency>\n"
        for g, a, v in deps
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>local.cdc-scratch</groupId>\n"
        f"  <artifactId>{escape(name)}</artifactId>\n"
        "  <version>0</version>\n"
        "  <packaging>pom</packaging>\n"
        f"  <dependencies>\n{items}  </dependencies>\n"
        "</project>\n"
    )


def _cached(name: str, subdir: str, stamp: str, fill: Callable[[Path], None]) -> Path:
    """``cache_root()/name/subdir``, made by ``fill(staging)`` unless a complete one is there.

    ``fill`` writes into an empty staging directory, renamed into place once it returned; the
    ``.complete`` file (holding ``stamp``) marks the result as whole.
    """
    home = cache_root() / name
    target = home / subdir
    done = home / ".complete"
    if done.is_file() and target.is_dir():
        return target
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file() and target.is_dir():
            return target
        staging = home / f"{subdir}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        fill(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        done.write_text(stamp)
    return target


def _mvn(what: str, args: Sequence[str], cwd: Path | None = None) -> None:
    """Run ``mvn -B -q args``; raise naming ``what`` with mvn's output if it fails."""
    proc = subprocess.run(
        [find_binary("mvn"), "-B", "-q", *args], capture_output=True, text=True, cwd=cwd
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"mvn could not fetch {what} (is Maven Central reachable?):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )


def fetch_jars(name: str, deps: Sequence[tuple[str, str, str]]) -> Path:
    """Make sure ``deps`` (groupId, artifactId, version) and their runtime dependencies are in
    ``cache_root()/name/libs``; return that directory. Quick when already there."""

    def fill(staging: Path) -> None:
        pom = cache_root() / name / "pom.xml"
        pom.write_text(_pom(name, deps))
        _mvn(
            name,
            [
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
        )

    return _cached(name, "libs", "\n".join(":".join(d) for d in deps) + "\n", fill)


def fetch_unpacked(name: str, artifact: str) -> Path:
    """Make sure the archive ``artifact`` (``group:artifact:version:type:classifier``) is unpacked
    in ``cache_root()/name/dist``; return that directory. Quick when already there."""

    def fill(staging: Path) -> None:
        # without a project, mvn leaves "${project.basedir}/target" here
        work = cache_root() / name / "work"
        work.mkdir(exist_ok=True)
        try:
            _mvn(
                artifact,
                ["dependency:unpack", f"-Dartifact={artifact}", f"-DoutputDirectory={staging}"],
                cwd=work,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return _cached(name, "dist", artifact + "\n", fill)
