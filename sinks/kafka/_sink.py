"""The Kafka sink: an idempotent confluent-kafka producer, topics created on demand, a checkpoint.

Delivery guarantee: at-least-once, per-key order kept. ``write`` hands every record of a batch to
an idempotent producer (acks=all), waits until the broker acknowledged every one of them, and only
then replaces the checkpoint file with the batch's position; the source is acknowledged up to that
checkpoint and no further. After a crash the source resumes from the checkpoint, so the records of
the batch that was in flight (written to Kafka or not) are written again: duplicates are bounded by
one batch, there is never a gap. Within a run the idempotent producer neither duplicates nor
reorders records, and a row's changes go to one partition (the key decides), so a consumer sees
each row's changes in commit order, possibly followed by a replay of the last batch's.

While the brokers are unreachable ``write`` waits (librdkafka keeps retrying; by default with no
time limit, see ``delivery_timeout_s``): the batch stays in memory, the next one is not read, the
checkpoint and so the source's acknowledgement do not move. It logs the outage once and the
recovery once, and carries on unaided when a broker answers again.

Stopping: ``interrupt()`` (the pipeline calls it on SIGTERM) lets a ``write`` in progress finish
for up to ``STOP_GRACE_S`` seconds while the brokers answer, and ends it at once while they are
unreachable: it raises a retryable SinkError and checkpoints nothing, and ``close`` drops the
undelivered records (the next start writes that batch again), so the daemon stops within seconds
during an outage and keeps everything it had checkpointed.

A batch without records (a source's position-only "heartbeat") is checkpointed like any other:
its position becomes ``committed()`` without a round trip to the brokers.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from cdc.checkpoint import Checkpoint
from cdc.connectjson import record_format
from cdc.errors import SinkError
from cdc.model import EncodedBatch, Position, SchemaRegistry
from cdc.sinks.kafka._registry import RegistryClient
from cdc.sinks.kafka.config import KafkaSinkConfig

log = logging.getLogger(__name__)

# Throughput defaults (a batch is flushed as a whole, so linger only shapes requests).
_DEFAULTS: dict[str, Any] = {
    "linger.ms": 20,
    "batch.size": 1 << 20,
    "compression.type": "lz4",
    "queue.buffering.max.kbytes": 256 << 10,
    "queue.buffering.max.messages": 1_000_000,
    # Same partition for the same key bytes as the Java client's default partitioner, so a
    # topic fed by this sink and by Kafka Connect partitions keys alike.
    "partitioner": "murmur2_random",
    "socket.keepalive.enable": True,
    "reconnect.backoff.max.ms": 2000,
}

# How long a write must be held up by unreachable brokers before the outage is logged.
_REPORT_AFTER_S = 5.0

# How long a write in progress may go on after ``interrupt()`` while the brokers answer.
STOP_GRACE_S = 2.0

_OUTAGE = {
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TRANSPORT,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
}


class _RdkafkaLog:
    """librdkafka's own log, kept at debug level: connection failures repeat every second or so
    while a broker is down, and the sink reports an outage itself, once."""

    def __init__(self) -> None:
        self._log = logging.getLogger("cdc.sinks.kafka.librdkafka")

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log.debug(msg, *args)


class _NoRegistry:
    """The registry of a sink writing JSON: none (the JSON encoder registers nothing)."""

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        raise SinkError(f"kafka sink: format json has no schema registry (subject {subject!r})")


class KafkaSink:
    """Writes encoded batches to Kafka; see the module docstring for the delivery guarantee."""

    def __init__(self, config: KafkaSinkConfig, pipeline_name: str = "") -> None:
        self._config = config
        self._name = pipeline_name
        self.tombstones = config.tombstones
        self.record_format = record_format(config)
        # JSON records carry no schema ids: no registry then (one that refuses, should anything
        # try to register).
        self.registry: SchemaRegistry = (
            _NoRegistry()
            if config.schema_registry is None
            else RegistryClient(config.schema_registry)
        )
        self._checkpoint = Checkpoint(config.path, "kafka sink")
        self._interrupted_at: float | None = None
        self._down_since: float | None = None
        self._suspect: tuple[float, str] | None = None
        self._fatal: KafkaError | None = None
        self._failed: list[tuple[str, KafkaError]] = []
        self._topics: set[str] = set()
        self._request_timeout = min(15.0, config.delivery_timeout_s or 15.0)
        common: dict[str, Any] = {
            "bootstrap.servers": config.bootstrap_servers,
            "client.id": config.client_id,
            "error_cb": self._on_error,
            "logger": _RdkafkaLog(),
        }
        # Security settings apply to the admin client too; producer tuning does not.
        security = {
            k: v
            for k, v in config.producer.items()
            if k.startswith(("security.", "sasl.", "ssl.", "client.dns", "broker.address"))
        }
        timeout_s = config.delivery_timeout_s
        timeout_ms = 0 if timeout_s is None else int(timeout_s * 1000)
        conf = {
            **_DEFAULTS,
            **config.producer,
            **common,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": timeout_ms,
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        try:
            self._producer = Producer(conf)
            self._admin = AdminClient({**common, **security})
        except KafkaException as e:
            raise SinkError(f"bad kafka producer settings: {e.args[0].str()}") from None

    # --- callbacks (run inside poll/flush, on the writing thread) -------------------------------

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failed.append((str(msg.topic()), err))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
        elif err.code() in _OUTAGE:
            # Not reported yet: a broker closing an idle connection looks the same for a moment.
            # ``_wait`` reports it once a write has been held up by it for a while.
            if self._suspect is None:
                self._suspect = (time.monotonic(), err.str())
        else:
            log.debug("kafka client error: %s", err.str())

    def _outage(self, why: str, since: float | None = None) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic() if since is None else since
            log.warning(
                "kafka sink: brokers %s unreachable (%s); holding the pipeline until they answer "
                "(the source is not acknowledged past delivered data)",
                self._config.bootstrap_servers,
                why,
            )

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.info(
                "kafka sink: brokers %s answer again after %.0fs; resuming",
                self._config.bootstrap_servers,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        self._suspect = None

    # --- the Sink protocol ----------------------------------------------------------------------

    def write(self, batch: EncodedBatch) -> None:
        """Return once every record of ``batch`` is acknowledged and its position checkpointed.

        Raises ``SinkError``: retryable when a retry (a new producer, after the pipeline's
        backoff) may succeed, fatal when the broker refuses the records themselves.
        """
        records = batch.records
        self._ensure_topics({r.topic for r in records})
        self._failed.clear()
        produce = self._producer.produce
        for r in records:
            while True:
                try:
                    produce(
                        r.topic,
                        r.value,
                        r.key,
                        timestamp=r.timestamp_ms,
                        headers=list(r.headers) if r.headers else None,
                    )
                    break
                except BufferError:
                    # The local queue is full: serve delivery reports until there is room.
                    self._wait(self._producer.poll, 0.5)
                    self._check_interrupt()
                except KafkaException as e:
                    raise self._error(e.args[0]) from None
        while self._wait(self._producer.flush, 1.0) > 0:
            pass
        if self._failed:
            topic, err = self._failed[0]
            n = len(self._failed)
            self._failed.clear()
            raise self._error(err, topic, n)
        if records:  # a heartbeat proves nothing about the brokers
            self._recovered()
        self._checkpoint.save(batch.position, {"pipeline": self._name})

    def committed(self) -> Position | None:
        return self._checkpoint.position

    def acknowledgeable(self) -> Position | None:
        return self._checkpoint.position

    def interrupt(self) -> None:
        """Make a ``write`` waiting for the brokers give up (see the module docstring); safe
        from a signal handler."""
        if self._interrupted_at is None:
            self._interrupted_at = time.monotonic()

    def close(self) -> None:
        try:
            if len(self._producer) and (
                self._interrupted_at is not None
                or self._down_since is not None
                or self._suspect is not None
            ):
                # Not checkpointed: the next start writes these records again, so waiting
                # for unreachable brokers would only hold up the stop.
                self._producer.purge()
                self._producer.poll(0)
            else:
                self._producer.flush(5)
        finally:
            self._checkpoint.close()

    # --- helpers --------------------------------------------------------------------------------

    def _wait(self, step: Any, timeout: float) -> int:
        """One bounded wait on the producer, checking for stop requests and fatal errors."""
        result = int(step(timeout) or 0)
        suspect = self._suspect
        if suspect is not None and result and time.monotonic() - suspect[0] >= _REPORT_AFTER_S:
            self._outage(suspect[1], suspect[0])
        if self._fatal is not None:
            err, self._fatal = self._fatal, None
            raise SinkError(
                f"kafka producer hit a fatal error: {err.str()}; restarting the pipeline with a "
                "new producer (the unacknowledged batch is written again)",
                retryable=True,
            )
        if result:
            self._check_interrupt()
        return result

    def _check_interrupt(self) -> None:
        """Give up the write in progress once interrupted and the brokers are away or the
        grace period is over."""
        since = self._interrupted_at
        if since is None:
            return
        away = self._down_since is not None or self._suspect is not None
        if away or time.monotonic() - since >= STOP_GRACE_S:
            raise SinkError(
                "kafka sink: stopped while waiting for the brokers to acknowledge a batch; it "
                "is written again on restart",
                retryable=True,
            )

    def _error(self, err: KafkaError, topic: str | None = None, n: int = 1) -> SinkError:
        where = f" to topic {topic!r}" if topic else ""
        count = f"{n} record(s)" if n != 1 else "a record"
        code = err.code()
        if code == KafkaError.MSG_SIZE_TOO_LARGE:
            return SinkError(
                f"kafka refused {count}{where}: larger than the broker or topic allows "
                "(message.max.bytes / max.message.bytes); raise that limit, and "
                "producer.message.max.bytes with it",
                retryable=False,
            )
        if code in (
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
            KafkaError._INVALID_ARG,
        ):
            return SinkError(f"kafka refused {count}{where}: {err.str()}", retryable=False)
        return SinkError(
            f"kafka did not acknowledge {count}{where}: {err.str()}; the batch is written again "
            "after the pipeline restarts",
            retryable=True,
        )

    def _ensure_topics(self, topics: set[str]) -> None:
        missing = topics - self._topics
        if not missing:
            return
        cfg = self._config.topics
        limit = self._config.delivery_timeout_s
        started = time.monotonic()
        while missing:
            try:
                if cfg.create:
                    self._create(missing)
                else:
                    self._check_exist(missing)
                self._topics |= missing
                return
            except KafkaException as e:
                err = e.args[0]
                if not isinstance(err, KafkaError) or err.code() not in _OUTAGE:
                    raise SinkError(
                        f"kafka refused to create topics {sorted(missing)}: {err}; check "
                        "sink.topics (partitions, replication_factor, config) and the "
                        "client's rights",
                        retryable=False,
                    ) from None
                self._outage(err.str())
                if limit is not None and time.monotonic() - started >= limit:
                    raise SinkError(
                        f"kafka brokers {self._config.bootstrap_servers} unreachable for "
                        f"{limit:g}s (delivery_timeout_s) while preparing topics: {err.str()}; "
                        "the batch is written again after the pipeline restarts",
                        retryable=True,
                    ) from None
                self._check_interrupt()
                time.sleep(1.0)
                self._check_interrupt()

    def _create(self, topics: set[str]) -> None:
        cfg = self._config.topics
        new = [
            NewTopic(t, cfg.partitions, cfg.replication_factor, config=dict(cfg.config))
            for t in sorted(topics)
        ]
        futures = self._admin.create_topics(new, request_timeout=self._request_timeout)
        pending = set(futures.values())
        while pending:  # in steps, so that interrupt() ends a wait for unreachable brokers
            _, pending = concurrent.futures.wait(pending, timeout=0.5)
            if pending:
                self._check_interrupt()
        for topic, fut in futures.items():
            try:
                fut.result()
                log.info("kafka sink: created topic %s", topic)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def _check_exist(self, topics: set[str]) -> None:
        # Short: the caller retries, and checks for interrupt() between attempts.
        meta = self._admin.list_topics(timeout=min(self._request_timeout, 2.0))
        absent = sorted(t for t in topics if t not in meta.topics)
        if absent:
            raise SinkError(
                f"kafka topics {absent} do not exist and sink.topics.create is false: create "
                "them, or set sink.topics.create: true",
                retryable=False,
            )
