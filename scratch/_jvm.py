"""Class-data sharing for the Java servers: JVM start-up dominates their start time.

The first JVM started for a given set of jars runs with ``-XX:ArchiveClassesAtExit`` into a
temporary file, which becomes the archive once that JVM has exited (``finish_dump``); later JVMs
map the archive with ``-XX:SharedArchiveFile`` and start in about half the time. A stale archive
(other jars, another JDK) is ignored by the JVM; delete it to have it rebuilt.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from scratch._proc import ServerProcess


def start_dump(archive: Path) -> Path | None:
    """A fresh file for this JVM to dump its classes into, or None when ``archive`` exists."""
    if archive.is_file():
        return None
    return archive.with_name(f".{archive.name}.{uuid.uuid4().hex}.partial")


def cds_flags(archive: Path, dump: Path | None) -> list[str]:
    if dump is not None:
        return [f"-XX:ArchiveClassesAtExit={dump}", "-Xlog:cds=off,cds+dynamic=off"]
    if archive.is_file():
        return [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off,cds+dynamic=off"]
    return []


def finish_dump(archive: Path, dump: Path | None) -> None:
    """After the dumping JVM exited: keep its archive (first one wins) or remove the leftover."""
    if dump is None:
        return
    if dump.is_file() and dump.stat().st_size > 0 and not archive.exists():
        os.replace(dump, archive)
    else:
        dump.unlink(missing_ok=True)


class JvmServer(ServerProcess):
    """A ServerProcess that is a JVM sharing classes through ``cds_archive``: its first start
    dumps the archive (``_cds_flags()`` in the command line say where), later starts map it."""

    _cds_dump: Path | None = None

    @property
    def cds_archive(self) -> Path:
        raise NotImplementedError

    def _cds_flags(self) -> list[str]:
        return cds_flags(self.cds_archive, self._cds_dump)

    def _before_start(self) -> None:
        self._cds_dump = start_dump(self.cds_archive)

    def _after_exit(self) -> None:
        finish_dump(self.cds_archive, self._cds_dump)
        self._cds_dump = None
