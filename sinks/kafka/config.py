"""Configuration of the Kafka sink (imports no Kafka client)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cdc.connectjson import (
    DecimalFormat,
    Format,
    ReplaceNullWithDefault,
    SchemasEnable,
    check_format,
)
from cdc.secrets import mask_connection_string

# Producer settings the sink's delivery guarantee depends on: an override may not weaken them.
_GUARDED = {
    "bootstrap.servers": "set bootstrap_servers instead",
    "enable.idempotence": "the sink needs the idempotent producer (no duplicates or reordering "
    "from its own retries)",
    "acks": "the sink needs acks=all (a batch is durable only once every in-sync replica has it)",
    "delivery.report.only.error": "the sink counts deliveries itself",
    "on_delivery": "the sink installs its own delivery callback",
    "error_cb": "the sink installs its own error callback",
    "logger": "the sink routes librdkafka's log itself",
}


class BasicAuth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(description="user name (Confluent Cloud: the API key)")
    password: str = Field(
        description="password (Confluent Cloud: the API secret); use ${ENV} to keep it out of "
        "the file",
        json_schema_extra={"secret": True},
    )


class SchemaRegistryConfig(BaseModel):
    """A Confluent-compatible schema registry (Confluent, Karapace, Apicurio's ccompat API...)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="base URL of the registry, e.g. http://localhost:8081")
    basic_auth: BasicAuth | None = Field(None, description="HTTP basic authentication")
    timeout_s: float = Field(10.0, gt=0, description="timeout of one registry request")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(
                f"invalid registry url {mask_connection_string(v)!r}: use http://host:port or "
                "https://..."
            )
        return v.rstrip("/")


class TopicsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    create: bool = Field(
        True,
        description="create missing topics with the settings below; when false a missing topic "
        "stops the pipeline with an error",
    )
    partitions: int = Field(
        1,
        ge=1,
        description="partitions of a created topic; a row's changes always go to one partition "
        "(the key is hashed with murmur2, as Java clients do)",
    )
    replication_factor: int = Field(
        -1,
        ge=-1,
        description="replication factor of a created topic; -1 takes the broker's "
        "default.replication.factor",
    )
    config: dict[str, str] = Field(
        default_factory=dict,
        description="topic-level settings of a created topic, e.g. {cleanup.policy: compact}",
    )

    @field_validator("replication_factor")
    @classmethod
    def _rf(cls, v: int) -> int:
        if v == 0:
            raise ValueError("replication_factor 0 is not valid: use -1 (broker default) or >= 1")
        return v


class KafkaSinkConfig(BaseModel):
    """Kafka (or any broker speaking its protocol, such as Redpanda): Avro with a schema
    registry, or JSON."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["kafka"] = Field(description="selects the Kafka sink")
    bootstrap_servers: str = Field(description="comma-separated host:port list of brokers")
    schema_registry: SchemaRegistryConfig | None = Field(
        None,
        description="where the Avro key and value schemas are registered (required with "
        "format: avro; not used with json)",
    )
    path: Path = Field(
        description="state directory of this sink (created if missing; relative to the config "
        "file): holds checkpoint.json, the source position of the last batch the broker "
        "acknowledged. One directory per pipeline."
    )
    tombstones: bool = Field(
        True,
        description="after each delete, write a record with the same key and a null value so "
        "that log compaction can drop the row's history",
    )
    delivery_timeout_s: float | None = Field(
        None,
        gt=0,
        description="fail a batch the broker has not acknowledged after this long (the pipeline "
        "then restarts with backoff and writes it again); default: wait as long as it takes",
    )
    client_id: str = Field("cdc", description="client.id the broker sees")
    topics: TopicsConfig = Field(
        default_factory=TopicsConfig,  # type: ignore[arg-type]
        description="creation of missing topics",
    )
    producer: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="librdkafka producer settings that override the sink's defaults "
        "(e.g. compression.type, linger.ms, security.protocol, sasl.*, ssl.*)",
        json_schema_extra={"secret": True},
    )

    @field_validator("producer")
    @classmethod
    def _producer(
        cls, v: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        for key, value in v.items():
            reason = _GUARDED.get(key)
            if reason is None:
                continue
            if key == "acks" and str(value).lower() in ("all", "-1"):
                continue
            if key == "enable.idempotence" and str(value).lower() == "true":
                continue
            raise ValueError(f"producer setting {key!r} cannot be overridden: {reason}")
        return v

    format: Format = "avro"
    schemas_enable: SchemasEnable = True
    decimal_format: DecimalFormat = "base64"
    replace_null_with_default: ReplaceNullWithDefault = True

    @model_validator(mode="after")
    def _registry(self) -> KafkaSinkConfig:
        check_format(self)
        if self.format == "avro" and self.schema_registry is None:
            raise ValueError(
                "schema_registry is required with format: avro (the default): give its url, "
                "or set format: json"
            )
        return self

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        parts = [p.strip() for p in v.split(",")]
        if not all(parts) or any(":" not in p for p in parts):
            raise ValueError(f"invalid bootstrap_servers {v!r}: use host:port[,host:port...]")
        return ",".join(parts)
