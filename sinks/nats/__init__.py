"""NATS JetStream sink: one stream, a subject per table, schemas in a key-value bucket."""

from __future__ import annotations

from cdc.model import PipelineContext, Sink
from cdc.sinks.nats.config import NatsSinkConfig, NatsTlsConfig

Config = NatsSinkConfig


def open_sink(config: NatsSinkConfig, context: PipelineContext) -> Sink:
    """Connect and check the stream; nats-py is imported only now, never to validate a config."""
    from cdc.sinks.nats._sink import NatsSink

    return NatsSink(config, context.name, context.prefix)


__all__ = ["Config", "NatsSinkConfig", "NatsTlsConfig", "open_sink"]
