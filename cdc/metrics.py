"""The daemon's Prometheus metrics, one set per process, labelled by pipeline.

Sources, sinks and the pipeline update these objects directly; the HTTP endpoint (off by default)
serves ``REGISTRY``. Label values are pipeline names and ``schema.table`` names, never secrets.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from cdc import _native_avro

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter(
    "cdc_events",
    "Change events made durable in the sink, by pipeline, table and op (c/u/d/r/t).",
    ["pipeline", "table", "op"],
    registry=REGISTRY,
)
LAG_MS = Gauge(
    "cdc_lag_ms",
    "Milliseconds from the source commit of the newest durable event to the moment it was durable.",
    ["pipeline"],
    registry=REGISTRY,
)
LAST_DURABLE_POSITION = Gauge(
    "cdc_last_durable_position_info",
    "Always 1; the label holds the last position the sink made durable, as JSON.",
    ["pipeline", "position"],
    registry=REGISTRY,
)
SNAPSHOT_ROWS_DONE = Gauge(
    "cdc_snapshot_rows_done",
    "Rows of a table read by the current or last snapshot.",
    ["pipeline", "table"],
    registry=REGISTRY,
)
SNAPSHOT_ROWS_TOTAL = Gauge(
    "cdc_snapshot_rows_total",
    "Estimated rows of a table to snapshot (from the server's statistics).",
    ["pipeline", "table"],
    registry=REGISTRY,
)
SLOT_RETAINED_WAL = Gauge(
    "cdc_postgres_slot_retained_wal_bytes",
    "WAL bytes the server keeps for this pipeline's replication slot (restart_lsn to current).",
    ["pipeline", "slot"],
    registry=REGISTRY,
)
RESTARTS = Counter(
    "cdc_pipeline_restarts",
    "Times the daemon restarted a pipeline after a retryable failure.",
    ["pipeline"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "cdc_pipeline_errors",
    "Pipeline failures, by error class name.",
    ["pipeline", "error"],
    registry=REGISTRY,
)
PIPELINE_STATE = Gauge(
    "cdc_pipeline_state",
    "1 for the state a pipeline is in (starting, snapshot, streaming, restarting, failed, "
    "stopped), 0 for the others.",
    ["pipeline", "state"],
    registry=REGISTRY,
)
LAST_DURABLE_TIME = Gauge(
    "cdc_last_durable_timestamp_seconds",
    "Unix time at which the sink last made a batch durable.",
    ["pipeline"],
    registry=REGISTRY,
)
LAST_COMMIT_TIME = Gauge(
    "cdc_last_event_commit_timestamp_seconds",
    "Source commit time (Unix seconds) of the newest change-stream event made durable; "
    "cdc_lag_ms is the time from it to the moment it was durable.",
    ["pipeline"],
    registry=REGISTRY,
)
ENCODER_FALLBACKS = Counter(
    "cdc_encoder_fallback_records",
    "Records encoded by fastavro because no specialised writer covered their schema or values "
    "(correct, only slower; a steady rise names a type worth specialising).",
    ["pipeline"],
    registry=REGISTRY,
)
ENCODER_INFO = Gauge(
    "cdc_encoder_info",
    "Always 1; path says which Avro writers the encoder compiles: native (the compiled extension "
    "cdc._native) or python (cdc/_avrofast.py: not built, or CDC_NATIVE=0).",
    ["path"],
    registry=REGISTRY,
)
ENCODER_INFO.labels(path=_native_avro.PATH).set(1)
NATIVE_PATHS = Gauge(
    "cdc_native_paths",
    "1 where the compiled part of cdc._native named by path runs (avro_writers, "
    "pgoutput_tuple_decoder, copy_decoder, binlog_rows_decoder, mysql_select_decoder), 0 where "
    "its pure-Python reference does (the extension not built or without it, or CDC_NATIVE=0).",
    ["path"],
    registry=REGISTRY,
)
for _part, (_path, _why) in _native_avro.paths().items():
    NATIVE_PATHS.labels(path=_part).set(1 if _path == _native_avro.NATIVE else 0)


class _NativeFallbacks(Collector):
    """``cdc_native_fallbacks_total{path}``: read from the decoders' own counts when scraped
    (they count per process, in the reader threads, without touching a metric per row)."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "cdc_native_fallbacks",
            "Inputs a compiled decoder handed to its Python reference (a tuple, a rows event: a "
            "value or a column it does not take): correct, only slower; the encoder's own are "
            "cdc_encoder_fallback_records_total.",
            labels=["path"],
        )
        for part, n in _native_avro.fallbacks().items():
            family.add_metric([part], n)
        yield family


REGISTRY.register(_NativeFallbacks())
