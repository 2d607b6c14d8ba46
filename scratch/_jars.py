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
from collections.abc import Sequence
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


def fetch_jars(name: str, deps: Sequence[tuple[str, str, str]]) -> Path:
    """Make sure ``deps`` (groupId, artifactId, version) and their runtime dependencies are in
    ``cache_root()/name/libs``; return that directory. Quick when already there."""
    home = cache_root() / name
    libs = home / "libs"
    done = home / ".complete"
    if done.is_file() and libs.is_dir():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file() and libs.is_dir():
            return libs
        mvn = find_binary("mvn")
        pom = home / "pom.xml"
        pom.write_text(_pom(name, deps))
        staging = home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        proc = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"mvn could not fetch {name} (is Maven Central reachable?):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        done.write_text("\n".join(":".join(d) for d in deps) + "\n")
    return libs


def fetch_unpacked(name: str, artifact: str) -> Path:
    """Make sure the archive ``artifact`` (``group:artifact:version:type:classifier``) is unpacked
    in ``cache_root()/name/dist``; return that directory. Quick when already there."""
    home = cache_root() / name
    dist = home / "dist"
    done = home / ".complete"
    if done.is_file() and dist.is_dir():
        return dist
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file() and dist.is_dir():
            return dist
        mvn = find_binary("mvn")
        staging = home / "dist.partial"
        work = home / "work"  # without a project, mvn leaves "${project.basedir}/target" here
        shutil.rmtree(staging, ignore_errors=True)
        work.mkdir(exist_ok=True)
        proc = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "dependency:unpack",
                f"-Dartifact={artifact}",
                f"-DoutputDirectory={staging}",
            ],
            capture_output=True,
            text=True,
            cwd=work,
        )
        shutil.rmtree(work, ignore_errors=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"mvn could not fetch {artifact} (is Maven Central reachable?):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        shutil.rmtree(dist, ignore_errors=True)
        staging.rename(dist)
        done.write_text(artifact + "\n")
    return dist
