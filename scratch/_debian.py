"""Debian packages from another suite, unpacked into a private root that the host never sees.

Used to run servers Debian 12 does not carry (Oracle MySQL from sid, PostgreSQL 17 and 18 from
trixie and sid) whose builds need a newer glibc and libstdc++ than the host has. ``fetch_root``
downloads the suite's package index, resolves the Depends closure of one package (alternatives
take the first that exists, virtual packages go through Provides, a skip set drops what the server
never loads), downloads those .debs (SHA256 checked against the index) and unpacks them all with
``dpkg-deb -x`` into ``<cache>/<name>-<version>/root``. A file lock keeps concurrent fetches apart;
the root is built in a staging directory and renamed into place when complete, and later calls
reuse the newest complete root without touching the network.

``loader_argv`` runs a binary of such a root through the root's own dynamic loader with
``--library-path`` into the root; ``patch_elves`` instead rewrites the root's ELF files (with
``patchelf``) so that they can exec each other directly.
"""

from __future__ import annotations

import fcntl
import hashlib
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from scratch._common import find_binary

MIRROR = os.environ.get("CDC_DEBIAN_MIRROR", "http://deb.debian.org/debian")
TRIPLET = "x86_64-linux-gnu"
# Depends only maintainer scripts use; no server loads them.
MAINTAINER_ONLY = frozenset(
    {"perl", "perl-base", "debconf", "debconf-2.0", "dpkg", "adduser", "lsb-base", "passwd"}
)


@dataclass(frozen=True)
class RootSpec:
    """What to unpack: ``package``'s closure in ``suite``, cached as ``<name>-<version>``.

    ``skip`` names packages (and, ending in ``*``, name prefixes) left out together with what
    only they depend on; ``prune`` gets the unpacked staging root before it is renamed into place;
    ``finish`` gets the root at its final path before it is marked complete (for what embeds
    absolute paths, such as ``patch_elves``).
    """

    name: str
    suite: str
    package: str
    skip: Collection[str] = MAINTAINER_ONLY
    prune: Callable[[Path], None] | None = field(default=None, compare=False)
    finish: Callable[[Path], None] | None = field(default=None, compare=False)

    def skipped(self, package: str) -> bool:
        return any(
            package.startswith(s[:-1]) if s.endswith("*") else package == s for s in self.skip
        )


def parse_index(text: str) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Packages stanzas by name (the last one wins) and virtual name -> providers."""
    packages: dict[str, dict[str, str]] = {}
    provides: dict[str, list[str]] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        name = fields.get("Package")
        if not name:
            continue
        packages[name] = fields
        for item in _split_list(fields.get("Provides", "")):
            provides.setdefault(item, []).append(name)
    return packages, provides


def _split_list(value: str) -> list[str]:
    """Names in a Provides/Depends list item-by-item, without versions and arch qualifiers."""
    return [_bare(item) for item in value.split(",") if item.strip()]


def _bare(item: str) -> str:
    return re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", item).strip().split(":")[0]


def closure(
    packages: dict[str, dict[str, str]], provides: dict[str, list[str]], spec: RootSpec
) -> list[str]:
    """``spec.package`` and everything it Depends/Pre-Depends on, recursively, minus skipped."""
    chosen: list[str] = []
    seen: set[str] = set()
    todo = [spec.package]
    while todo:
        name = todo.pop()
        if name in seen or spec.skipped(name):
            continue
        seen.add(name)
        chosen.append(name)
        fields = packages[name]
        deps = ",".join(x for x in (fields.get("Pre-Depends"), fields.get("Depends")) if x)
        for item in deps.split(","):
            if not item.strip():
                continue
            alternatives = [_bare(a) for a in item.split("|")]
            if any(a in seen or spec.skipped(a) for a in alternatives):
                continue
            pick = next((a for a in alternatives if a in packages), None)
            if pick is None:
                pick = next((provides[a][0] for a in alternatives if a in provides), None)
            if pick is None:
                raise RuntimeError(
                    f"{name}: no package satisfies {item.strip()!r} in Debian {spec.suite}"
                )
            todo.append(pick)
    return chosen


def _download(url: str, dest: Path, sha256: str | None = None) -> None:
    with urllib.request.urlopen(url, timeout=120) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)
    if sha256 is not None:
        digest = hashlib.sha256(dest.read_bytes()).hexdigest()
        if digest != sha256:
            raise RuntimeError(f"{url}: sha256 {digest} is not the index's {sha256}")


def cached_roots(base: Path, name: str) -> list[Path]:
    """Complete roots of ``name`` under ``base``, newest first."""
    if not base.is_dir():
        return []
    found = [p / "root" for p in base.glob(f"{name}-*") if (p / ".complete").is_file()]
    return sorted(found, key=lambda p: p.parent.stat().st_mtime, reverse=True)


def fetch_root(spec: RootSpec, base: Path, *, verbose: bool = False) -> Path:
    """The root that holds ``spec.package``'s closure; downloaded only if none is cached.

    Returns ``base/<name>-<version>/root``, where version is the package's in the live index.
    """
    cached = cached_roots(base, spec.name)
    if cached:
        return cached[0]
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f".{spec.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = cached_roots(base, spec.name)
        if cached:
            return cached[0]
        dpkg_deb = find_binary("dpkg-deb")
        started = time.monotonic()
        with urllib.request.urlopen(
            f"{MIRROR}/dists/{spec.suite}/main/binary-amd64/Packages.xz", timeout=120
        ) as resp:
            index = lzma.decompress(resp.read()).decode("utf-8", "replace")
        packages, provides = parse_index(index)
        if spec.package not in packages:
            raise RuntimeError(f"{spec.package} is not in Debian {spec.suite}'s index")
        version = packages[spec.package]["Version"]
        names = closure(packages, provides, spec)
        home = base / f"{spec.name}-{version}"
        debs = home / "debs"
        staging = home / "root.partial"
        shutil.rmtree(staging, ignore_errors=True)
        debs.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        total = 0
        for name in sorted(names):
            fields = packages[name]
            deb = debs / Path(fields["Filename"]).name
            if not deb.is_file():
                _download(f"{MIRROR}/{fields['Filename']}", deb, fields.get("SHA256"))
            total += deb.stat().st_size
            subprocess.run([dpkg_deb, "-x", str(deb), str(staging)], check=True)
        if spec.prune is not None:
            spec.prune(staging)
        (home / "packages.txt").write_text(
            "".join(f"{n} {packages[n]['Version']}\n" for n in sorted(names))
        )
        root = home / "root"
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
        if spec.finish is not None:
            spec.finish(root)
        shutil.rmtree(debs, ignore_errors=True)
        (home / ".complete").write_text(version + "\n")
        if verbose:
            print(
                f"{spec.name} {version}: {len(names)} packages, {total / 1e6:.0f} MB of .debs, "
                f"fetched and unpacked in {time.monotonic() - started:.0f}s",
                file=sys.stderr,
            )
        return root


def prune_docs(root: Path) -> None:
    """Drop docs, man pages and lintian overrides: no server reads them."""
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/lintian"):
        shutil.rmtree(root / sub, ignore_errors=True)


def lib_dirs(root: Path) -> list[Path]:
    """The root's library directories that exist, in the order the loader should search them."""
    dirs = [root / "usr/lib" / TRIPLET, root / "lib" / TRIPLET, root / "usr/lib"]
    return [d for d in dirs if d.is_dir()]


def loader_path(root: Path) -> Path:
    """The root's own dynamic loader."""
    ld = root / "usr/lib" / TRIPLET / "ld-linux-x86-64.so.2"
    return ld if ld.exists() else root / "lib" / TRIPLET / "ld-linux-x86-64.so.2"


def loader_argv(root: Path) -> list[str]:
    """argv prefix that runs a binary of ``root`` with ``root``'s libc and libraries only."""
    return [str(loader_path(root)), "--library-path", ":".join(str(d) for d in lib_dirs(root))]


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def patch_elves(root: Path, extra_lib_dirs: Collection[Path] = ()) -> int:
    """Make every ELF file of ``root`` load the root's loader and libraries, never the host's.

    Executables get the root's ``ld-linux`` as interpreter; every ELF file (executables, shared
    libraries, dlopen'ed modules) gets a DT_RPATH of the root's library directories plus
    ``extra_lib_dirs``. DT_RPATH, not DT_RUNPATH: it also applies to the dependencies of
    dependencies, and it wins over LD_LIBRARY_PATH and the host's ld.so.cache. The loader and
    libc are left alone. Must run on the root at its final path (the paths are absolute).
    Returns how many files were patched.
    """
    patchelf = find_binary("patchelf")
    ld = loader_path(root).resolve()
    rpath = ":".join(str(d) for d in [*lib_dirs(root), *extra_lib_dirs])
    patched = 0
    for dirpath, _dirs, files in os.walk(root):
        for fname in files:
            path = Path(dirpath) / fname
            if path.is_symlink() or not _is_elf(path) or path.resolve() == ld:
                continue
            if fname.startswith(("ld-linux", "libc.so")):
                continue
            has_interp = (
                subprocess.run(
                    [patchelf, "--print-interpreter", str(path)], capture_output=True
                ).returncode
                == 0
            )
            argv = [patchelf, "--force-rpath", "--set-rpath", rpath]
            if has_interp:
                argv += ["--set-interpreter", str(ld)]
            proc = subprocess.run([*argv, str(path)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"patchelf failed on {path}: {proc.stderr.strip()}")
            patched += 1
    return patched
