"""Watching a sink from outside the daemon: how many records a topic holds, and when each
became durable.

The built-in log: frames are tailed incrementally from the segment files (each frame carries the
time it was written, just before its fsync). Kafka: the partition's high watermark while waiting,
then the broker's append time of each record (topics are created with
``message.timestamp.type=LogAppendTime``). Both return stamps as (ms, rows) so that the same rate
and latency arithmetic applies.
"""

from __future__ import annotations

import bisect
import time
from pathlib import Path
from typing import Any, Protocol

from cdc.sinks.log import FrameError, read_frame, records_of, segments


class Observer(Protocol):
    def count(self, topic: str) -> int:
        """Records on ``topic`` now durable in the sink (tombstones included)."""

    def stamps(self, topic: str, start: int, end: int) -> list[tuple[int, int]]:
        """(durable ms, row events) for the records ``start``..``end - 1`` of ``topic``, in order;
        tombstones count 0 rows."""

    def close(self) -> None: ...


class LogObserver:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seg = -1  # base offset of the segment being read
        self._pos = 0
        # per topic: cumulative record counts after each frame, and that frame's time
        self._cum: dict[str, list[int]] = {}
        self._ts: dict[str, list[int]] = {}

    def _poll(self) -> None:
        if not self.directory.is_dir():
            return
        segs = segments(self.directory)
        for i, (base, path) in enumerate(segs):
            if base < self._seg:
                continue
            if base > self._seg:
                self._seg, self._pos = base, 0
            with open(path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
            at = 0
            while at < len(data):
                try:
                    fr = read_frame(data, at)
                except FrameError:
                    break  # the tail being written: read again next time
                at += fr.size
                per: dict[str, int] = {}
                for r in records_of(fr):
                    per[r.topic] = per.get(r.topic, 0) + 1
                for topic, n in per.items():
                    cum = self._cum.setdefault(topic, [])
                    cum.append((cum[-1] if cum else 0) + n)
                    self._ts.setdefault(topic, []).append(fr.timestamp_ms)
            self._pos += at
            if i < len(segs) - 1 and at == len(data):
                continue
            break

    def count(self, topic: str) -> int:
        self._poll()
        cum = self._cum.get(topic)
        return cum[-1] if cum else 0

    def stamps(self, topic: str, start: int, end: int) -> list[tuple[int, int]]:
        self._poll()
        cum, ts = self._cum.get(topic, []), self._ts.get(topic, [])
        out = []
        i = bisect.bisect_right(cum, start)  # first frame holding record ``start``
        while i < len(cum):
            lo = cum[i - 1] if i else 0
            if lo >= end:
                break
            n = min(cum[i], end) - max(lo, start)
            if n > 0:
                out.append((ts[i], n))
            i += 1
        return out

    def close(self) -> None:
        pass


class KafkaObserver:
    def __init__(self, bootstrap_servers: str) -> None:
        from confluent_kafka import Consumer

        self._consumer: Any = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": "cdc-bench",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        self.log_append_time = True

    def count(self, topic: str) -> int:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, 0), timeout=5, cached=False
            )
        except KafkaException:
            high = 0
        if high <= 0:
            # Not created yet, or created since the client last looked: librdkafka keeps
            # answering "unknown partition" until its metadata is refreshed.
            self._consumer.list_topics(topic, timeout=5)
            return 0
        return int(high)

    def stamps(self, topic: str, start: int, end: int) -> list[tuple[int, int]]:
        from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, TopicPartition

        out: list[tuple[int, int]] = []
        if end <= start:
            return out
        self._consumer.assign([TopicPartition(topic, 0, start)])
        deadline = time.monotonic() + 120 + (end - start) / 10_000
        try:
            while time.monotonic() < deadline:
                for msg in self._consumer.consume(num_messages=10_000, timeout=5):
                    if msg.error():
                        continue
                    kind, ts = msg.timestamp()
                    if kind != TIMESTAMP_LOG_APPEND_TIME:
                        self.log_append_time = False
                    off = msg.offset()
                    if off >= end:
                        return out
                    out.append((ts, 0 if msg.value() is None else 1))
                    if off == end - 1:
                        return out
            raise TimeoutError(f"kafka topic {topic}: records {start}..{end - 1} not all read")
        finally:
            self._consumer.unassign()

    def close(self) -> None:
        self._consumer.close()
