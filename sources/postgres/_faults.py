"""What went wrong with the slot, the publication or a captured table, and the ways out.

Classifies the server's errors (a slot that lost its WAL is ``PositionLost``; text that is not
UTF-8, a dropped publication, a renamed or dropped table cannot heal: not retryable) and words
each fault as the house style wants: what, the value, what to do, and what the slot costs
meanwhile.
"""

from __future__ import annotations

import psycopg

from cdc.errors import PositionLost, SourceError
from cdc.model import Position
from cdc.sources.postgres import _tuples
from cdc.sources.postgres._connections import Catalog
from cdc.sources.postgres._lsn import format_lsn


class Faults:
    """The fault messages of one pipeline's slot and publication."""

    def __init__(
        self, catalog: Catalog, pipeline_name: str, slot: str, publication: str, prefix: str
    ) -> None:
        self.catalog = catalog
        self.pipeline_name = pipeline_name
        self.slot = slot
        self.publication = publication
        self.prefix = prefix

    def not_ours(self, what: str, owner: str) -> SourceError:
        return SourceError(
            f"{what} belongs to pipeline {owner!r} (the publication's comment records it); "
            f"pipeline {self.pipeline_name!r} will neither use, alter nor drop it: give this "
            "pipeline a source.slot and source.publication of its own (cdc validate reports "
            "pipeline names that map to the same ones)",
            retryable=False,
        )

    def position_problem(self, state: tuple[int, str | None] | None, start: Position) -> str | None:
        """Why the slot cannot resume from ``start``, or None when it can."""
        start_lsn = int(start["lsn"])
        if state is None:
            return (
                f"replication slot {self.slot!r} does not exist, but the sink's last position is "
                f"{format_lsn(start_lsn)}: changes since then are gone"
            )
        confirmed, wal_status = state
        if wal_status == "lost":
            return self.invalidated()
        if confirmed > start_lsn:
            return (
                f"replication slot {self.slot!r} is at {format_lsn(confirmed)}, past the sink's "
                f"last position {format_lsn(start_lsn)}: the changes between were consumed "
                "elsewhere (use a slot only this pipeline reads)"
            )
        return None

    def invalidated(self) -> str:
        return (
            f"replication slot {self.slot!r} was invalidated (wal_status lost: the server "
            "removed WAL it needed, see max_slot_wal_keep_size)"
        )

    def ways_out(self) -> str:
        return (
            "Ways out: set snapshot: when_needed and restart to drop the slot and take a new "
            "snapshot automatically; or move the sink's data aside, drop the slot (SELECT "
            f"pg_drop_replication_slot('{self.slot}')) and restart for a new initial snapshot. "
            "To keep it from happening again, raise max_slot_wal_keep_size (-1: no limit) and "
            "keep the pipeline running"
        )

    def stream_error(self, msg: str) -> SourceError:
        """The error for a failed or ended stream: PositionLost when the slot lost its WAL."""
        if "invalid byte sequence for encoding" in msg:
            # text of a SQL_ASCII database that is not UTF-8: it fails again on every restart
            return SourceError(f"{msg.strip()}. {_tuples.NOT_UTF8}", retryable=False)
        if any(
            s in msg
            for s in ("invalidated", "can no longer get changes", "has already been removed")
        ):
            detail = " ".join(msg.split()).rstrip(".")
            return PositionLost(
                f"replication slot {self.slot!r} can no longer be read (the server removed WAL "
                f"it needed): {detail}. {self.ways_out()}"
            )
        if "publication" in msg and "does not exist" in msg:
            return self.publication_gone(" ".join(msg.split()).rstrip("."))
        return SourceError(msg)

    # --- faults that cannot heal: stop, say why, the ways out, and what the slot costs ------------

    def retained_note(self) -> str:
        """The slot's WAL cost while the pipeline is stopped (best effort: '' when unknown)."""
        try:
            row = (
                self.catalog.connect()
                .execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
                    "FROM pg_replication_slots WHERE slot_name = %s",
                    (self.slot,),
                )
                .fetchone()
            )
        except (psycopg.Error, SourceError):
            row = None
        now = f" ({int(row[0] or 0) >> 20} MB now)" if row is not None else ""
        return (
            f" Meanwhile replication slot {self.slot!r} keeps every WAL file from its position"
            f"{now}, growing with every write on the server: drop it (SELECT "
            f"pg_drop_replication_slot('{self.slot}')) if this pipeline will not resume soon."
        )

    def publication_gone(self, detail: str) -> SourceError:
        return SourceError(
            f"publication {self.publication!r} was dropped after the slot's position ({detail}): "
            "the server decodes the changes since then with the publication as it was when "
            "they were written, so a recreated one does not help and every restart fails the "
            "same way. Ways out: drop the slot, move the sink's data aside and restart for a new "
            "snapshot (or set snapshot: when_needed and drop the slot); or, accepting that the "
            "changes in between are lost, advance the slot past the recreation with "
            f"SELECT pg_replication_slot_advance('{self.slot}', pg_current_wal_lsn()) and "
            f"restart.{self.retained_note()}",
            retryable=False,
        )

    def unpublished(self, missing: list[tuple[str, str]], mode: str) -> SourceError:
        """Captured tables the publication does not hold, when the daemon may not add them
        (publication_autocreate_mode all_tables or disabled: used as it is)."""
        from cdc.sources.postgres.config import sql_table

        names = ", ".join(sql_table(s, t) for s, t in missing)
        return SourceError(
            f"publication {self.publication!r} does not publish captured table(s) {names}, and "
            f"publication_autocreate_mode is {mode} (the daemon never alters it): their changes "
            f'would be missed. Have its owner run ALTER PUBLICATION "{self.publication}" ADD '
            f"TABLE {names}, or remove them from source.tables, then restart",
            retryable=False,
        )

    def renamed(self, old: str, new: str) -> SourceError:
        return SourceError(
            f"captured table {old} was renamed to {new}: its topic would change (to "
            f"{self.prefix}.{new}), so the pipeline stops rather than keep writing to the old "
            f"one or drop its changes. Put {new} in source.tables in place of {old} and restart: "
            "the pipeline resumes where it stopped, nothing lost; changes before the rename "
            f"keep the old topic.{self.retained_note()}",
            retryable=False,
        )

    def dropped(self, table: str) -> SourceError:
        return SourceError(
            f"captured table {table} does not exist in database {self.catalog.db!r} (dropped, "
            "or renamed while the pipeline was not running); its changes up to the drop were "
            "delivered. Remove it from source.tables (or create it, or put its new name there) "
            f"and restart.{self.retained_note()}",
            retryable=False,
        )
