"""Reading the built-in log as decoded change events: the public consumer API.

``open_log(path)`` gives an ``EventLog``; its ``events()`` and ``batches()`` yield ``Event``
objects (topic, key and value decoded from Avro to Python values, offset, timestamp,
transaction), from an offset, a time or a named consumer, and follow new data if asked.
``cdc log read`` is built on it. Delivery is what the caller makes of it: committing after
processing gives at-least-once.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import fastavro

from cdc.avro import unframe
from cdc.errors import CdcError, LogCorrupt
from cdc.sinks.log._consumers import Consumer
from cdc.sinks.log._format import records_of
from cdc.sinks.log._log import LogReader
from cdc.units import parse_since

Start = int | Literal["earliest", "latest"]


@dataclass(frozen=True, slots=True)
class Event:
    """One record of the log, decoded.

    ``key`` and ``value`` are what the Avro bytes hold, as Python values (records as dicts,
    decimals as ``Decimal``, bytes as ``bytes``); ``value`` is None for a tombstone. For a row
    change the value is Debezium's envelope (``before``, ``after``, ``source``, ``op``,
    ``transaction``, ``ts_ms`` ...); on the ``<prefix>.transaction`` topic it is a BEGIN or END
    record. ``timestamp_ms`` is the source's commit time (a snapshot row's read time).
    """

    offset: int
    topic: str
    key: Any
    value: Any
    timestamp_ms: int
    event_id: str
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def op(self) -> str | None:
        """c, u, d, r or t for a row change; None for a tombstone or a transaction event."""
        if isinstance(self.value, dict):
            op = self.value.get("op")
            return op if isinstance(op, str) else None
        return None

    @property
    def transaction(self) -> dict[str, Any] | None:
        """The transaction this event belongs to: a row change's ``transaction`` block
        (``id``, ``total_order``, ``data_collection_order``), or a BEGIN/END record's
        ``{"id", "status"}``; None outside transactions or without transaction metadata."""
        v = self.value
        if not isinstance(v, dict):
            return None
        if "status" in v and "id" in v:
            return {"id": v["id"], "status": v["status"]}
        tx = v.get("transaction")
        return tx if isinstance(tx, dict) else None

    def as_json(self) -> dict[str, Any]:
        """What ``cdc log read`` prints for it (before JSON encoding)."""
        return {
            "offset": self.offset,
            "topic": self.topic,
            "key": self.key,
            "value": self.value,
            "timestamp": self.timestamp_ms,
        }


@dataclass(frozen=True, slots=True)
class EventBatch:
    """The events of one frame of the log (one batch the source wrote, filtered by topic), and
    ``next_offset``: every record before it has been passed, so committing it after handling
    ``events`` loses nothing."""

    events: list[Event]
    next_offset: int


class _Decoder:
    """Confluent-framed Avro -> Python values, with the log's own schema store."""

    def __init__(self, reader: LogReader) -> None:
        self._schemas = reader.schemas
        self._parsed: dict[int, Any] = {}

    def __call__(self, data: bytes | None) -> Any:
        if data is None:
            return None
        sid, body = unframe(data)
        parsed = self._parsed.get(sid)
        if parsed is None:
            parsed = self._parsed[sid] = fastavro.parse_schema(self._schemas.get(sid))
        return fastavro.schemaless_reader(io.BytesIO(body), parsed, None)


def _since_ms(since: int | float | str | datetime) -> int:
    if isinstance(since, datetime):
        return int(since.timestamp() * 1000)
    if isinstance(since, str):
        return parse_since(since)
    return int(since)


class EventLog:
    """A log directory opened for reading; never modifies it (named consumers keep their
    offsets in their own files). Safe to use while the daemon writes the log."""

    def __init__(self, path: str | Path) -> None:
        self.reader = LogReader(Path(path))
        self._decode = _Decoder(self.reader)

    def start_offset(self) -> int:
        """The first offset still in the log (0 until retention deletes a segment)."""
        return self.reader.start_offset()

    def end_offset(self) -> int:
        """The offset the next record written will get."""
        return self.reader.end_offset()

    def batches(
        self,
        start: Start = "earliest",
        *,
        since: int | float | str | datetime | None = None,
        topic: str | None = None,
        follow: bool = False,
        wait: Callable[[float], object] = time.sleep,
    ) -> Iterator[EventBatch]:
        """The log's frames as ``EventBatch`` objects, from ``start`` (an offset, ``"earliest"``
        or ``"latest"``) or, given ``since`` (a datetime, ms since the epoch, or a string such
        as ``"2026-11-27T10:00:00Z"`` or ``"10m"``), from the first frame written at or after
        that time. Only events of ``topic`` when given (the batch is then maybe empty: its
        ``next_offset`` still moves on). With ``follow``, waits for new frames until the caller
        stops iterating, calling ``wait(seconds)`` when caught up (``LogReader.frames``).
        Raises ``OffsetOutOfRange`` when retention deleted what is asked for.
        """
        since_ms = None if since is None else _since_ms(since)
        if since_ms is not None:
            start = self.reader.offset_for_time(since_ms)
        first = start if isinstance(start, int) else 0
        decode = self._decode
        for fr in self.reader.frames(start, follow, wait=wait):
            if since_ms is not None:
                if fr.timestamp_ms < since_ms:  # a time still ahead when following began
                    continue
                since_ms = None
            events = []
            for r in records_of(fr):
                if r.offset < first or (topic is not None and r.topic != topic):
                    continue
                try:
                    key, value = decode(r.key), decode(r.value)
                except CdcError:
                    raise
                except Exception as e:  # fastavro raises many kinds on bytes it cannot read
                    raise LogCorrupt(
                        f"log {self.reader.directory}: record {r.offset} ({r.topic}) in "
                        f"{fr.segment} is not Avro this log's schemas can read: {e}"
                    ) from None
                events.append(
                    Event(r.offset, r.topic, key, value, r.timestamp_ms, r.event_id, r.headers)
                )
            yield EventBatch(events, max(first, fr.base_offset + fr.count))

    def events(
        self,
        start: Start = "earliest",
        *,
        since: int | float | str | datetime | None = None,
        topic: str | None = None,
        follow: bool = False,
    ) -> Iterator[Event]:
        """Events one by one (see ``batches`` for the arguments)."""
        for batch in self.batches(start, since=since, topic=topic, follow=follow):
            yield from batch.events

    def consumer(self, name: str) -> EventConsumer:
        """The named consumer ``name`` (created by its first commit); close it when done, or
        use it as a context manager. One process at a time per name."""
        return EventConsumer(self, self.reader.consumer(name))


class EventConsumer:
    """A named consumer: ``events()`` resumes after its committed offset, ``commit()`` records
    progress durably. Committing after handling gives at-least-once delivery; while the log's
    retention keeps unconsumed records (the default), nothing not yet committed is deleted."""

    def __init__(self, log: EventLog, consumer: Consumer) -> None:
        self.log = log
        self.name = consumer.name
        self._consumer = consumer
        self._next: int | None = None  # every record before it was yielded or passed over

    @property
    def committed(self) -> int | None:
        """The committed offset (the next record wanted), or None before the first commit."""
        return self._consumer.committed

    def lag(self) -> int:
        """Records in the log at or after the committed offset."""
        return self._consumer.lag()

    def batches(
        self,
        start: Start | None = None,
        *,
        since: int | float | str | datetime | None = None,
        topic: str | None = None,
        follow: bool = False,
    ) -> Iterator[EventBatch]:
        """Batches from the committed offset (the log's start before the first commit), unless
        ``start`` or ``since`` say otherwise (see ``EventLog.batches``)."""
        if start is None:
            committed = self._consumer.committed
            start = "earliest" if committed is None else committed
        for batch in self.log.batches(start, since=since, topic=topic, follow=follow):
            self._next = batch.next_offset
            yield batch

    def events(
        self,
        start: Start | None = None,
        *,
        since: int | float | str | datetime | None = None,
        topic: str | None = None,
        follow: bool = False,
    ) -> Iterator[Event]:
        """Events from the committed offset (or ``start``/``since``); ``commit()`` after
        handling them."""
        for batch in self.batches(start, since=since, topic=topic, follow=follow):
            for i, ev in enumerate(batch.events):
                last = i == len(batch.events) - 1
                # past the last event of a frame, what the topic filter passed over counts too
                self._next = batch.next_offset if last else ev.offset + 1
                yield ev

    def commit(self, offset: int | None = None) -> None:
        """Durably record that every record before ``offset`` is done; by default, everything
        ``events()``/``batches()`` has yielded so far. Does nothing before anything was read."""
        if offset is None:
            offset = self._next
            if offset is None:
                return
        self._consumer.commit(offset)

    def delete(self) -> None:
        """Forget this consumer: retention no longer keeps records for it."""
        self._consumer.delete()

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> EventConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_log(path: str | Path) -> EventLog:
    """Open the log directory ``path`` (as written by a pipeline's ``sink: {type: log}``)."""
    return EventLog(path)
