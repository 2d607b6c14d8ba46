"""A scratch Oracle MySQL server (Debian sid's build), run from a private root on any Debian.

Debian 12 has no MySQL, and sid's ``mysql-server-core`` needs a newer glibc and libstdc++ than
the host has. So the first use downloads sid's package index, resolves the Depends closure of
``mysql-server-core`` (alternatives take the first that exists, virtual packages go through
Provides; perl and other things mysqld does not load are skipped), downloads those .debs (SHA256
checked) and unpacks them all with ``dpkg-deb -x`` into one root in the scratch cache
(``$CDC_SCRATCH_CACHE/mysql-<version>/root``, see scratch/_jars.py). mysqld then runs through
that root's own dynamic loader with ``--library-path`` pointing into the root, so not one host
library is used. Later runs reuse the newest complete root without touching the network.

The server: a fresh datadir (``mysqld --initialize-insecure``) in a temporary directory, a free
port on 127.0.0.1, a socket in that directory, no X plugin, a binlog with ``binlog_format=ROW``,
``binlog_row_metadata=FULL``, ``gtid_mode=ON`` and ``enforce_gtid_consistency=ON``. Accounts:
``root`` without password from localhost and 127.0.0.1 (``MySQLServer.user``/``password``), and
``cdc`` with password ``cdc`` from any host (caching_sha2_password, MySQL's default), with ALL
PRIVILEGES WITH GRANT OPTION. When we are root, mysqld runs as root (``--user=root``), because the
cache is usually under root's home, which the ``mysql`` user cannot read.

``python -m scratch.mysql fetch`` fills the cache (prints the root); ``python -m scratch.mysql``
starts a server and waits for Ctrl-C.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from scratch._common import find_binary, free_port, is_root, scratch_dir
from scratch._jars import cache_root
from scratch._mysql_client import MySQLClient
from scratch._proc import ServerProcess, log_tail

STARTUP_TIMEOUT = 120.0
SHUTDOWN_TIMEOUT = 60.0
MIRROR = os.environ.get("CDC_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "sid"
ROOT_PACKAGE = "mysql-server-core"
# Depends that mysqld never loads: the scripts' interpreter, and what only maintainer scripts use.
SKIP = {"perl", "perl-base", "debconf", "debconf-2.0", "dpkg", "adduser", "lsb-base", "passwd"}
TRIPLET = "x86_64-linux-gnu"


# --- fetching the root ----------------------------------------------------------------------


def _parse_index(text: str) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
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


def _closure(
    packages: dict[str, dict[str, str]], provides: dict[str, list[str]], root: str
) -> list[str]:
    """``root`` and everything it Depends/Pre-Depends on, recursively, minus SKIP."""
    chosen: list[str] = []
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen or name in SKIP:
            continue
        seen.add(name)
        chosen.append(name)
        fields = packages[name]
        deps = ",".join(x for x in (fields.get("Pre-Depends"), fields.get("Depends")) if x)
        for item in deps.split(","):
            if not item.strip():
                continue
            alternatives = [_bare(a) for a in item.split("|")]
            if any(a in seen or a in SKIP for a in alternatives):
                continue
            pick = next((a for a in alternatives if a in packages), None)
            if pick is None:
                pick = next((provides[a][0] for a in alternatives if a in provides), None)
            if pick is None:
                raise RuntimeError(f"{name}: no package satisfies {item.strip()!r} in {SUITE}")
            todo.append(pick)
    return chosen


def _download(url: str, dest: Path, sha256: str | None = None) -> None:
    with urllib.request.urlopen(url, timeout=120) as resp, open(dest, "wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)
    if sha256 is not None:
        digest = hashlib.sha256(dest.read_bytes()).hexdigest()
        if digest != sha256:
            raise RuntimeError(f"{url}: sha256 {digest} is not the index's {sha256}")


def _cached_roots() -> list[Path]:
    base = cache_root()
    if not base.is_dir():
        return []
    found = [p / "root" for p in base.glob("mysql-*") if (p / ".complete").is_file()]
    return sorted(found, key=lambda p: p.parent.stat().st_mtime, reverse=True)


def fetch_mysql(*, verbose: bool = False) -> Path:
    """The root that holds mysqld and every library it loads; downloaded only if none is cached.

    Resolves the package set from sid's live index, caches it under the mysql version, and
    returns ``cache_root()/mysql-<version>/root``. A file lock keeps concurrent fetches apart;
    the root is built in a staging directory and renamed into place when complete.
    """
    cached = _cached_roots()
    if cached:
        return cached[0]
    base = cache_root()
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".mysql.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _cached_roots()
        if cached:
            return cached[0]
        dpkg_deb = find_binary("dpkg-deb")
        started = time.monotonic()
        with urllib.request.urlopen(
            f"{MIRROR}/dists/{SUITE}/main/binary-amd64/Packages.xz", timeout=120
        ) as resp:
            index = lzma.decompress(resp.read()).decode("utf-8", "replace")
        packages, provides = _parse_index(index)
        if ROOT_PACKAGE not in packages:
            raise RuntimeError(f"{ROOT_PACKAGE} is not in Debian {SUITE}'s index")
        version = packages[ROOT_PACKAGE]["Version"]
        names = _closure(packages, provides, ROOT_PACKAGE)
        home = base / f"mysql-{version}"
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
        _prune(staging)
        (home / "packages.txt").write_text(
            "".join(f"{n} {packages[n]['Version']}\n" for n in sorted(names))
        )
        root = home / "root"
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
        shutil.rmtree(debs, ignore_errors=True)
        (home / ".complete").write_text(version + "\n")
        if verbose:
            print(
                f"mysql {version}: {len(names)} packages, {total / 1e6:.0f} MB of .debs, "
                f"fetched and unpacked in {time.monotonic() - started:.0f}s",
                file=sys.stderr,
            )
        return root


def _prune(root: Path) -> None:
    """Drop what a test server never uses: the other tools (80 MB), docs, man pages."""
    for tool in (root / "usr/bin").glob("*"):
        if tool.name != "mysqlbinlog":  # kept: handy to look at a test server's binlog
            tool.unlink()
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/lintian"):
        shutil.rmtree(root / sub, ignore_errors=True)


def _loader(root: Path) -> list[str]:
    """argv prefix that runs a binary of ``root`` with ``root``'s libc and libraries only."""
    libdirs = [root / "usr/lib" / TRIPLET, root / "lib" / TRIPLET, root / "usr/lib"]
    ld = root / "usr/lib" / TRIPLET / "ld-linux-x86-64.so.2"
    if not ld.exists():
        ld = root / "lib" / TRIPLET / "ld-linux-x86-64.so.2"
    return [str(ld), "--library-path", ":".join(str(d) for d in libdirs if d.is_dir())]


def mysqld_argv(root: Path) -> list[str]:
    return [*_loader(root), str(root / "usr/sbin/mysqld")]


def mysqlbinlog_argv(root: Path) -> list[str]:
    """argv of the root's ``mysqlbinlog`` (the one tool _prune keeps)."""
    return [*_loader(root), str(root / "usr/bin/mysqlbinlog")]


# --- the server -----------------------------------------------------------------------------


@dataclass
class MySQLServer(MySQLClient, ServerProcess):
    """A running scratch server; ``connect_kwargs()`` are ready for ``pymysql.connect``.

    ``stop()`` (SIGTERM; SIGKILL after SHUTDOWN_TIMEOUT s) keeps the data and the port;
    ``kill()`` is a crash: InnoDB recovers on the next ``start()``.
    """

    base_dir: Path
    port: int
    server_id: int
    root: Path
    host: str = "127.0.0.1"
    user: str = "root"
    password: str = ""
    flavour: str = "mysql"

    process_name = "mysqld"
    startup_timeout = STARTUP_TIMEOUT
    shutdown_timeout = SHUTDOWN_TIMEOUT

    def _socket_sql(self, statements: list[str]) -> None:
        import pymysql

        conn = pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                for s in statements:
                    cur.execute(s)
        finally:
            conn.close()

    @property
    def _output(self) -> Path:
        return self.base_dir / "mysqld.out"

    def _argv(self) -> list[str]:
        return [*mysqld_argv(self.root), f"--defaults-file={self.config_file}"]

    def _ready(self) -> bool:
        # the socket: root@127.0.0.1 does not exist until start_mysql has created it
        import pymysql

        pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=2).close()
        return True

    def _waiting_for(self) -> str:
        return f"mysql on port {self.port} ({self.error_log})"

    def _logs(self) -> list[tuple[str, Path]]:
        return [("error log ", self.error_log)]


def _config(base_dir: Path, root: Path, port: int, server_id: int) -> dict[str, str]:
    share = root / "usr/share/mysql"
    return {
        "basedir": str(root / "usr"),
        "lc-messages-dir": str(share),
        "character-sets-dir": str(share / "charsets"),
        "plugin-dir": str(root / "usr/lib/mysql/plugin"),
        "datadir": str(base_dir / "data"),
        "socket": str(base_dir / "mysqld.sock"),
        "pid-file": str(base_dir / "mysqld.pid"),
        "log-error": str(base_dir / "error.log"),
        "tmpdir": str(base_dir),
        "secure-file-priv": str(base_dir),
        "user": getpass.getuser() if not is_root() else "root",
        "port": str(port),
        "bind-address": "127.0.0.1",
        "mysqlx": "OFF",
        "log-bin": "mysql-bin",
        "binlog_row_image": "FULL",
        "binlog_row_metadata": "FULL",
        "gtid_mode": "ON",
        "enforce_gtid_consistency": "ON",
        "server_id": str(server_id),
        "character-set-server": "utf8mb4",
        "default-time-zone": "+00:00",
        "max_connections": "200",
        "performance_schema": "OFF",
        "innodb_buffer_pool_size": "64M",
        "innodb_redo_log_capacity": "32M",
        "innodb_log_buffer_size": "8M",
        "innodb_flush_log_at_trx_commit": "2",
        "innodb_doublewrite": "OFF",
        "innodb_use_native_aio": "OFF",
        "sync_binlog": "0",
        "skip-external-locking": "ON",
    }


def _write_config(path: Path, conf: dict[str, str]) -> None:
    with open(path, "w") as f:
        f.write("[mysqld]\n")
        for k, v in conf.items():
            f.write(f"{k} = {v}\n")


def start_mysql(
    base_dir: Path | None = None,
    *,
    server_id: int = 1,
    port: int | None = None,
    settings: dict[str, str] | None = None,
) -> MySQLServer:
    """Fetch the root if needed, initialise a datadir and start mysqld on a free port.

    ``settings`` are extra or overriding ``[mysqld]`` options, e.g.
    ``{"binlog_row_metadata": "MINIMAL"}``.
    """
    root = fetch_mysql()
    base_dir = scratch_dir(base_dir, "cdc-mysql-")
    port = port or free_port()
    conf = _config(base_dir, root, port, server_id)
    conf.update(settings or {})
    config_file = base_dir / "my.cnf"
    _write_config(config_file, conf)
    proc = subprocess.run(
        [*mysqld_argv(root), f"--defaults-file={config_file}", "--initialize-insecure"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"mysqld --initialize-insecure failed ({proc.returncode}):\n{proc.stdout}\n"
            f"{proc.stderr}\n{log_tail(base_dir / 'error.log')}"
        )
    server = MySQLServer(base_dir=base_dir, port=port, server_id=server_id, root=root)
    server.start()
    try:
        server._socket_sql(
            [
                # kept out of the binlog: CDC tests start from a clean one
                "SET SESSION sql_log_bin = 0",
                "CREATE USER 'root'@'127.0.0.1'",
                "GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION",
                "CREATE USER 'cdc'@'%' IDENTIFIED BY 'cdc'",
                "GRANT ALL PRIVILEGES ON *.* TO 'cdc'@'%' WITH GRANT OPTION",
            ]
        )
    except BaseException:
        server.stop()
        raise
    return server


def main() -> None:
    if sys.argv[1:] == ["fetch"]:
        print(fetch_mysql(verbose=True))
        return
    server = start_mysql()
    print(f"mysql {server.sql('SELECT VERSION()')[0][0]} on 127.0.0.1:{server.port}")
    try:
        server.wait()
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
