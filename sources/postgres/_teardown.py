"""`cdc drop`: what a removed pipeline leaves on the server (its slot and publication), dropped.

Only what is this pipeline's: the publication when its comment records this pipeline as owner
(``_publication.OWNER_TAG``; a user's publication, or another pipeline's, is left and said so);
the slot under the pipeline's configured (or default) name when it is a pgoutput slot of this
database and no other pipeline's publication records it. A slot a connection is reading (the
daemon, or another client) is never dropped: the whole drop is refused, naming the reader's pid.

The plan is read first and shown; ``Teardown.execute`` drops the slot, then the publication, so a
slot that became active meanwhile (the server refuses to drop it) leaves both in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from cdc.errors import SourceError
from cdc.sources.postgres._connections import Catalog
from cdc.sources.postgres._publication import publication_claims
from cdc.sources.postgres.config import PostgresSourceConfig, default_name


def _size(n: int) -> str:
    """``n`` bytes for a person: 512 bytes, 16.0 MB."""
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            break
        value /= 1024
    return f"{value:.1f} {unit}"


class Teardown:
    """The slot and publication of one pipeline, as they are now, and what ``execute`` drops.

    ``drops``: one line per object it will drop (the slot's line says the WAL it retains now);
    ``kept``: one line per object it leaves and why; ``absent``: the objects that do not exist
    (nothing to drop); ``refusal``: why nothing may be dropped now
    (a connection reads the slot), else None."""

    def __init__(self, config: PostgresSourceConfig, pipeline: str) -> None:
        self.pipeline = pipeline
        self.slot = config.slot or default_name(pipeline)
        self.publication = config.publication or default_name(pipeline)
        self.catalog = Catalog(config.dsn)
        self.drops: list[str] = []
        self.kept: list[str] = []
        self.absent: list[str] = []
        self.refusal: str | None = None
        self.drop_slot = False
        self.drop_publication = False
        try:
            self._plan()
        except psycopg.Error as e:
            self.catalog.close()
            raise SourceError(f"cannot read the slot and publication: {str(e).strip()}") from None
        except BaseException:
            self.catalog.close()
            raise

    def _plan(self) -> None:
        cat = self.catalog.connect()
        claims = publication_claims(cat)
        self._plan_slot(cat, claims)
        self._plan_publication(cat, claims)

    def _plan_slot(self, cat: psycopg.Connection[Any], claims: dict[str, dict[str, Any]]) -> None:
        """The slot is this pipeline's unless another pipeline's publication records it, or it
        is not a pgoutput slot of this database (then this pipeline did not make it)."""
        db = self.catalog.db
        row = cat.execute(
            "SELECT s.plugin, s.database, s.active_pid, s.wal_status, "
            "pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() "
            "ELSE pg_current_wal_lsn() END, s.restart_lsn)::bigint, "
            "r.application_name, host(r.client_addr) "
            "FROM pg_replication_slots s "
            "LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = %s",
            (self.slot,),
        ).fetchone()
        others = sorted(
            (pub, str(c.get("pipeline")))
            for pub, c in claims.items()
            if c.get("slot") == self.slot and c.get("pipeline") != self.pipeline
        )
        if row is None:
            self.absent.append(f"replication slot {self.slot!r}")
            return
        plugin, slot_db, pid, wal_status, retained, app, client = row
        if others:
            pub, owner = others[0]
            self.kept.append(
                f"replication slot {self.slot!r}: left in place, it belongs to pipeline "
                f"{owner!r} (publication {pub!r} records it)"
            )
            return
        if plugin != "pgoutput" or slot_db != db:
            self.kept.append(
                f"replication slot {self.slot!r}: left in place, it is a slot for plugin "
                f"{plugin!r} in database {slot_db!r}, not one this pipeline made (pgoutput in "
                f"{db!r})"
            )
            return
        if pid is not None:
            who = f"pid {pid}"
            about = ([f"application_name {app!r}"] if app else []) + [
                f"client {client or 'on a local socket'}"
            ]
            if app is not None or client:  # a walsender: pg_stat_replication knows it
                who += f" ({', '.join(about)})"
            self.refusal = (
                f"replication slot {self.slot!r} is being read by {who}: the daemon or "
                "another client still runs this pipeline; stop it, then run cdc drop again"
            )
        self.drop_slot = True
        status = f", wal_status {wal_status}" if wal_status else ""
        self.drops.append(
            f"replication slot {self.slot!r} (retains {_size(int(retained or 0))} of WAL now"
            f"{status})"
        )

    def _plan_publication(
        self, cat: psycopg.Connection[Any], claims: dict[str, dict[str, Any]]
    ) -> None:
        """The publication is this pipeline's only when its comment records it as owner."""
        db = self.catalog.db
        exists = cat.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,)
        ).fetchone()
        claim = claims.get(self.publication)
        if exists is None:
            self.absent.append(f"publication {self.publication!r} in database {db!r}")
        elif claim is None:
            self.kept.append(
                f"publication {self.publication!r}: left in place, its comment records no "
                "pipeline (a user made it, or a cdc version before owners were recorded); "
                "if nothing else uses it, drop it as its owner: "
                f'DROP PUBLICATION "{self.publication}"'
            )
        elif claim.get("pipeline") != self.pipeline:
            self.kept.append(
                f"publication {self.publication!r}: left in place, it belongs to pipeline "
                f"{claim.get('pipeline')!r} (its comment records it)"
            )
        else:
            self.drop_publication = True
            self.drops.append(f"publication {self.publication!r} in database {db!r}")

    def execute(self) -> Iterator[str]:
        """Drop what ``drops`` lists (the slot first), yielding a line as each is dropped (so
        that what was dropped is shown before a later failure). Raises ``SourceError`` when the
        server refuses (a reader took the slot meanwhile, a missing privilege)."""
        if self.refusal is not None:
            raise SourceError(f"not dropping anything: {self.refusal}", retryable=False)
        done: list[str] = []
        cat = self.catalog.connect()
        if self.drop_slot:
            try:
                cat.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                done.append(f"dropped replication slot {self.slot!r}")
            except psycopg.errors.UndefinedObject:
                done.append(f"replication slot {self.slot!r} was gone already")
            except psycopg.Error as e:
                msg = str(e).strip()
                todo = (
                    "stop whatever reads it, then run cdc drop again"
                    if isinstance(e, psycopg.errors.ObjectInUse)
                    else "fix that, then run cdc drop again"
                )
                raise SourceError(
                    f"cannot drop replication slot {self.slot!r}: {msg}; nothing was dropped: "
                    + todo,
                    retryable=False,
                ) from None
            yield done[-1]
        if self.drop_publication:
            claim = publication_claims(cat).get(self.publication)
            if claim is not None and claim.get("pipeline") == self.pipeline:
                try:
                    cat.execute(
                        sql.SQL("DROP PUBLICATION IF EXISTS {}").format(
                            sql.Identifier(self.publication)
                        )
                    )
                except psycopg.Error as e:
                    raise SourceError(
                        f"cannot drop publication {self.publication!r}: {str(e).strip()}"
                        + (f" ({done[0]})" if done else "")
                        + f'; drop it as its owner: DROP PUBLICATION "{self.publication}"',
                        retryable=False,
                    ) from None
                yield f"dropped publication {self.publication!r}"

    def close(self) -> None:
        self.catalog.close()
