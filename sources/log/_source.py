"""The built-in log as a source: another pipeline's log, read from this pipeline's position and
followed as it grows.

Delivery: what the log holds, in its order, from the position after the last durable batch
(exclusive); into the built-in log as a sink that is exactly-once, as from any source (the
position, a log offset, rides in the sink's frames). One batch per frame of the log read (a
frame is one batch of the pipeline that wrote it); a frame that ends inside a source transaction
after the END of an earlier one is two batches, the first ending at that END (resuming at the
offset after it), the second, with ``open_txn`` True, holding the open transaction's start. So
a database target, which commits only between source transactions, commits once per frame even
when every frame ends inside a transaction (as the frames of versions before 2026-12-07 mostly
did), instead of holding one transaction open, and in memory, until a frame ends on a boundary.

The events are rebuilt, not copied: row changes with the values the Avro holds (which are the
values the original source produced: ``cdc.avro`` writes them without conversion) and the table
versions of ``_schemas``, one object per schema version; transaction BEGIN/END events from the
log's transaction topic. A relay into a bytes sink encodes them again with the normal encoder,
which gives the Avro the log holds (see docs/log.md, "The log as a source").
"""

from __future__ import annotations

import io
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fastavro

from cdc.avro import canonical_schema, unframe
from cdc.errors import CdcError, LogCorrupt, PositionLost, SourceError
from cdc.model import ChangeBatch, Position, Problem, RowChange, TableSchema, TxBoundary
from cdc.sinks.log import Consumer, FrameInfo, LogReader, OffsetOutOfRange, records_of, segments
from cdc.sources.log._schemas import TX_VALUE, record_name, table_of
from cdc.sources.log.config import LogSourceConfig

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a follow looks for new frames (a wait that stop() ends at once)
EMPTY_EVERY_S = 1.0  # at most this often a batch with no events only to move the position
COMMIT_EVERY_S = 1.0  # at most this often the named consumer's offset is written (fsyncs)
_ROW, _TX, _OTHER = 0, 1, 2


def _read(parsed: Any, body: bytes) -> Any:
    """An Avro body as Python values (records as dicts)."""
    return fastavro.schemaless_reader(io.BytesIO(body), parsed, None)


def check(config: LogSourceConfig) -> list[Problem]:
    """``cdc check``: the path is a log directory cdc can read."""
    path = config.path
    if not path.exists():
        return [
            Problem(
                f"log {path} does not exist",
                "nothing to read yet",
                "check source.path: it must be the sink.path of the pipeline that writes the "
                "log (that pipeline creates it when it first runs)",
            )
        ]
    if not path.is_dir():
        return [Problem(f"log {path} is not a directory", fix="give the log's directory")]
    if not segments(path) and not (path / "schemas.jsonl").exists():
        return [
            Problem(
                f"{path} is not a cdc log (no segment files, no schemas.jsonl)",
                fix="give the directory a pipeline's `sink: {type: log}` writes",
            )
        ]
    try:
        reader = LogReader(path)
        reader.info()
    except CdcError as e:
        return [Problem(f"log {path} cannot be read: {e}")]
    return []


class LogSource:
    """``source: {type: log}``. See the module docstring for what it yields."""

    def __init__(self, config: LogSourceConfig, pipeline: str) -> None:
        self._config = config
        self._path = Path(config.path)
        self._consumer_name = config.consumer or pipeline
        self._topics = None if config.topics is None else frozenset(config.topics)
        self._tables = None if config.tables is None else frozenset(config.tables)
        self._stop = threading.Event()
        self._streaming = False
        # Filled in place from the log's first envelope schema: the encoder keeps this very
        # dict, and only reads it for a table's first event, after the schema was read here.
        self._source_record: dict[str, Any] = {}
        self._reader: LogReader | None = None
        self._consumer: Consumer | None = None
        self._committed_at = 0.0
        self._pending_commit: int | None = None
        # _commit runs on the reader thread (the first offset) and on the writing thread
        # (acknowledge, see Source): one at a time, so the consumer is opened once.
        self._commit_lock = threading.Lock()
        self._kinds: dict[int, tuple[int, Any]] = {}  # value schema id -> kind, parsed schema
        self._versions: dict[tuple[str, int], TableSchema] = {}
        self._wanted: dict[int, tuple[TableSchema, bool]] = {}  # id(table) -> included?
        self._kept_collections: set[str] = set()
        self._rows: dict[int, tuple[TableSchema, Callable[[dict[str, Any]], tuple[Any, ...]]]] = {}
        self._in_txn = False
        self._end_at = (0, 0)  # see _events

    # --- the Source contract -----------------------------------------------------------

    @property
    def source_schema(self) -> dict[str, Any]:
        if not self._source_record and self._path.is_dir():
            self._find_source_record(LogReader(self._path))
        return self._source_record

    @property
    def streaming(self) -> bool:
        return self._streaming

    def check(self) -> Sequence[Problem]:
        return check(self._config)

    def batches(self, start: Position | None) -> Iterator[ChangeBatch]:
        reader = self._wait_for_log()
        if reader is None:
            return
        if start is not None:
            first: int | str = int(start["offset"])
        else:
            first = self._config.start
        if first == "latest":
            first = reader.end_offset()
        elif isinstance(first, int) and first > (end := reader.end_offset()):
            # Not an error: a frame the writer had not fsynced when the machine crashed is
            # gone, and the writer writes those offsets again when it resumes.
            log.warning(
                "log source %s: this pipeline's position is offset %d but the log ends at "
                "offset %d; waiting for the log to reach it (after a machine crash its writer "
                "writes the lost frames again). If the log was started again from nothing, "
                "re-create this pipeline's sink to read it from its start",
                self._path,
                first,
                end,
            )
        self._streaming = True
        log.info("log source %s: reading from offset %s", self._path, first)
        if start is None:
            self._commit(reader.start_offset() if first == "earliest" else int(first), now=True)
        begin = first if isinstance(first, int) else 0
        last_yield = time.monotonic()
        try:
            frames = reader.frames(
                begin if isinstance(first, int) else "earliest",
                follow=True,
                poll=POLL_S,
                wait=self._stop.wait,  # returns True once stop() is called
            )
            for fr in frames:
                events = self._events(fr, reader, begin)
                now = time.monotonic()
                if events or now - last_yield >= EMPTY_EVERY_S or self._stop.is_set():
                    last_yield = now
                    cut, after_end = self._end_at
                    if self._in_txn and 0 < cut < len(events):
                        yield ChangeBatch(events[:cut], {"offset": after_end})
                        events = events[cut:]
                    yield ChangeBatch(
                        events, {"offset": fr.base_offset + fr.count}, open_txn=self._in_txn
                    )
                if self._stop.is_set():
                    return
        except OffsetOutOfRange as e:
            raise PositionLost(
                f"log source {self._path}: offset {e.offset} was deleted by the log's "
                f"retention before this pipeline read it (the log now starts at "
                f"{e.start_offset}); keep the consumer {self._consumer_name!r} in the log "
                "(retention.keep_unconsumed) or re-create this pipeline's sink to start again"
            ) from None

    def acknowledge(self, upto: Position) -> None:
        """Record ``upto`` (a durable log offset) as the named consumer's committed offset,
        at most once a second, so that the log's retention keeps what is not read yet. Safe
        beside ``batches`` on another thread: it shares no state with it but the consumer,
        which ``_commit`` locks, and the committed offset is a file of its own."""
        offset = upto.get("offset")
        if isinstance(offset, int):
            self._commit(offset)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._pending_commit is not None and self._consumer is not None:
            self._commit(self._pending_commit, now=True)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # --- reading -----------------------------------------------------------------------

    def _wait_for_log(self) -> LogReader | None:
        """The log's reader once its directory exists (its writer, maybe a pipeline of this
        daemon, creates it when it first runs); None when stopped first."""
        told = False
        while not self._path.is_dir():
            if not told:
                log.info("log source %s: waiting for the log to be created", self._path)
                told = True
            if self._stop.wait(0.5):
                return None
        self._reader = LogReader(self._path)
        return self._reader

    def _find_source_record(self, reader: LogReader) -> None:
        for subject, ids in reader.schemas.subjects().items():
            if subject.endswith("-value"):
                for sid in ids:
                    self._source_of(reader.schemas.get(sid))
                    if self._source_record:
                        return

    def _source_of(self, envelope: dict[str, Any]) -> None:
        fields = {f["name"]: f["type"] for f in envelope.get("fields", ())}
        record = fields.get("source")
        if not isinstance(record, dict) or "before" not in fields:
            return
        if not self._source_record:
            self._source_record.update(record)
        elif canonical_schema(record) != canonical_schema(self._source_record):
            raise SourceError(
                f"log source {self._path}: events of two kinds of source "
                f"({record_name(self._source_record)} and {record_name(record)}) in one log; "
                "a relay writes one source block: read them with two pipelines filtered by "
                "`tables`",
                retryable=False,
            )

    def _kind(self, sid: int, reader: LogReader) -> tuple[int, Any]:
        hit = self._kinds.get(sid)
        if hit is None:
            schema = reader.schemas.get(sid)
            names = {f.get("name") for f in schema.get("fields", ())}
            if record_name(schema) == TX_VALUE:
                kind = _TX
            elif {"before", "after", "source", "op"} <= names:
                kind = _ROW
                self._source_of(schema)
            else:
                kind = _OTHER
            hit = self._kinds[sid] = (kind, fastavro.parse_schema(schema))
        return hit

    def _table(self, topic: str, vsid: int, ksid: int, source: dict[str, Any]) -> TableSchema:
        k = (topic, vsid)
        t = self._versions.get(k)
        if t is None:
            assert self._reader is not None
            schemas = self._reader.schemas
            envelope = schemas.get(vsid)
            if not ksid:  # a truncate carries no key: the version's key schema is in the store
                ksid = self._key_id(topic, vsid)
            key = schemas.get(ksid) if ksid else None
            t = self._versions[k] = table_of(topic, envelope, key, source)
        return t

    def _key_id(self, topic: str, vsid: int) -> int:
        """The key schema of the version whose value schema is ``vsid``, for an event without a
        key: the encoder registers a version's value schema, then its key schema, so that is
        the newest key of the topic registered by then (id ``vsid + 1`` at most); 0 for a
        table without a primary key."""
        assert self._reader is not None
        self._reader.schemas.reload()
        ids = self._reader.schemas.subjects().get(f"{topic}-key", [])
        before = [i for i in ids if i <= vsid + 1]
        return max(before, default=0)

    def _row_of(self, t: TableSchema) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
        """The row tuple of a decoded before/after record of version ``t``."""
        hit = self._rows.get(id(t))
        if hit is None or hit[0] is not t:
            names = [c.name for c in t.columns]
            get = operator.itemgetter(*names)
            row = get if len(names) > 1 else (lambda r: (get(r),))
            hit = self._rows[id(t)] = (t, row)
        return hit[1]

    def _included(self, t: TableSchema) -> bool:
        hit = self._wanted.get(id(t))
        if hit is None or hit[0] is not t:
            ok = (self._topics is None or t.topic in self._topics) and (
                self._tables is None or t.qualified in self._tables
            )
            if ok:
                self._kept_collections.add(t.qualified)
            hit = self._wanted[id(t)] = (t, ok)
        return hit[1]

    def _events(self, fr: FrameInfo, reader: LogReader, begin: int) -> list[RowChange | TxBoundary]:
        out: list[RowChange | TxBoundary] = []
        topics = self._topics
        self._end_at = (0, 0)  # (events up to the frame's last END, the offset after it)
        for r in records_of(fr):
            if r.offset < begin or r.value is None:  # before the start; a tombstone
                continue
            try:
                vsid, body = unframe(r.value)
                kind, parsed = self._kind(vsid, reader)
                if kind == _OTHER or (
                    kind == _ROW and topics is not None and r.topic not in topics
                ):
                    continue
                value = _read(parsed, body)
                if kind == _TX:
                    out.append(self._boundary(value, r.event_id))
                    if not self._in_txn:
                        self._end_at = (len(out), r.offset + 1)
                    continue
                ksid = unframe(r.key)[0] if r.key else 0
                tx = value["transaction"]
                self._in_txn = tx is not None
                table = self._table(r.topic, vsid, ksid, value["source"])
                if not self._included(table):
                    continue
                out.append(self._change(table, value, tx, r.timestamp_ms, r.event_id))
            except CdcError:
                raise
            except Exception as e:  # fastavro raises many kinds on bytes it cannot read
                raise LogCorrupt(
                    f"log {self._path}: record {r.offset} ({r.topic}) in {fr.segment} cannot "
                    f"be read as a change event: {type(e).__name__}: {e}"
                ) from None
        return out

    def _boundary(self, value: dict[str, Any], event_id: str) -> TxBoundary:
        status = value["status"]
        self._in_txn = status == "BEGIN"
        dcs = value.get("data_collections")
        per_table = None if dcs is None else {d["data_collection"]: d["event_count"] for d in dcs}
        count = value.get("event_count")
        if per_table is not None and (self._tables is not None or self._topics is not None):
            per_table = {t: n for t, n in per_table.items() if t in self._kept_collections}
            count = sum(per_table.values())
        return TxBoundary(status, value["id"], value["ts_ms"], event_id, count, per_table)

    def _change(
        self,
        table: TableSchema,
        value: dict[str, Any],
        tx: dict[str, Any] | None,
        ts_ms: int,
        event_id: str,
    ) -> RowChange:
        row = self._row_of(table)
        b, a = value["before"], value["after"]
        before = None if b is None else row(b)
        after = None if a is None else row(a)
        # The record's key is not read: the encoder made it from the row (no source sets
        # key_override), so encoding the row again gives it back.
        return RowChange(
            table,
            value["op"],
            before,
            after,
            value["source"],
            ts_ms,
            event_id,
            None if tx is None else (tx["id"], tx["total_order"], tx["data_collection_order"]),
        )

    # --- the named consumer ------------------------------------------------------------

    def _commit(self, offset: int, now: bool = False) -> None:
        with self._commit_lock:
            self._commit_locked(offset, now)

    def _commit_locked(self, offset: int, now: bool) -> None:
        self._pending_commit = offset
        t = time.monotonic()
        if not now and t - self._committed_at < COMMIT_EVERY_S:
            return
        if self._consumer is None:
            if not self._path.is_dir():
                return
            reader = self._reader or LogReader(self._path)
            try:
                self._consumer = reader.consumer(self._consumer_name)
            except CdcError as e:
                raise SourceError(
                    f"log source {self._path}: {e}; two pipelines reading one log need "
                    "different `source.consumer` names",
                    retryable=False,
                ) from None
        self._consumer.commit(offset)
        self._committed_at = t
        self._pending_commit = None


def applied_through(path: Path, offset: int, covers: Callable[[Position | None], bool]) -> bool:
    """Whether a pipeline reading the log at ``path`` up to ``offset`` (exclusive: its
    position) has passed every change up to a point of the log writer's source: ``covers``
    says whether one of the writer's source positions (each frame carries the position after
    it) is at or past that point. The frames checked are the ones ending at or before
    ``offset``, from the one holding ``offset - 1``: the last of them is the newest position
    passed (an empty frame at ``offset``, a heartbeat, counts: it holds nothing to apply)."""
    if not path.is_dir():
        return False
    reader = LogReader(path)
    for fr in reader.frames(max(offset - 1, 0)):
        if fr.base_offset + fr.count > offset:
            return False
        if covers(fr.position):
            return True
    return False
