"""Kafka sink: an idempotent producer, a Confluent-compatible schema registry, a checkpoint file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cdc.model import PipelineContext
from sinks.kafka.config import KafkaSinkConfig

if TYPE_CHECKING:
    from sinks.kafka._sink import KafkaSink

Config = KafkaSinkConfig


def open_sink(config: KafkaSinkConfig, context: PipelineContext) -> KafkaSink:
    """Create the sink (imports confluent-kafka only now, so validating a config never needs it)."""
    from sinks.kafka._sink import KafkaSink

    return KafkaSink(config, context.name)


__all__ = ["Config", "KafkaSinkConfig", "open_sink"]
