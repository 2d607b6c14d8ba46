"""Kafka sink: an idempotent producer, a Confluent-compatible schema registry, a checkpoint file."""

from __future__ import annotations

from cdc.model import PipelineContext, Sink
from cdc.sinks.kafka.config import KafkaSinkConfig

Config = KafkaSinkConfig


def open_sink(config: KafkaSinkConfig, context: PipelineContext) -> Sink:
    """Create the sink (imports confluent-kafka only now, so validating a config never needs it)."""
    from cdc.sinks.kafka._sink import KafkaSink

    return KafkaSink(config, context.name)


__all__ = ["Config", "KafkaSinkConfig", "open_sink"]
