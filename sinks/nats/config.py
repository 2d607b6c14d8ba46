"""Configuration of the NATS JetStream sink (imports no NATS client)."""

from __future__ import annotations

import re
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
from cdc.units import DURATION_HELP, Duration

_STREAM = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _show(seconds: float) -> str:
    return f"{seconds:g}s"


class NatsTlsConfig(BaseModel):
    """TLS to the NATS servers (also used for ``tls://`` server URLs)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) to verify the server with; default the system's"
    )
    cert_file: Path | None = Field(
        None, description="PEM client certificate, for servers that verify clients (with key_file)"
    )
    key_file: Path | None = Field(None, description="PEM private key of cert_file")
    server_name: str | None = Field(
        None, description="host name expected in the server certificate; default the URL's host"
    )
    verify: bool = Field(
        True, description="verify the server certificate; false only for throwaway test servers"
    )

    @model_validator(mode="after")
    def _pair(self) -> NatsTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return self


class NatsSinkConfig(BaseModel):
    """NATS JetStream: one stream, one subject per table, schemas in a key-value bucket."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["nats"] = Field(description="selects the NATS JetStream sink")
    servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        min_length=1,
        description="server URLs (nats://host:port or tls://host:port), tried in turn",
    )
    path: Path = Field(
        description="directory of this sink's local state (checkpoint.json: the last source "
        "position JetStream acknowledged); created if missing; relative to the config file; "
        "one per pipeline"
    )
    stream: str | None = Field(
        None,
        description="JetStream stream name (letters, digits, _ and -); default the pipeline "
        "name with other characters replaced by _",
    )
    subject_prefix: str | None = Field(
        None,
        description="first token(s) of every subject; default the pipeline's topic prefix "
        "(sanitised like a table name)",
    )
    create: bool = Field(
        True,
        description="create the stream (subjects <subject_prefix>.>) and the schema bucket "
        "<stream>_schemas when missing; when false, both must exist",
    )
    retention: Literal["limits", "interest", "workqueue"] = Field(
        "limits", description="retention policy of a stream this sink creates"
    )
    storage: Literal["file", "memory"] = Field(
        "file", description="storage of a stream (and schema bucket) this sink creates"
    )
    replicas: int = Field(
        1, ge=1, le=5, description="replicas of a stream (and schema bucket) this sink creates"
    )
    max_age: Duration = Field(
        0,
        ge=0,
        description="drop messages older than this from a stream this sink creates; "
        f"{DURATION_HELP}; 0 keeps them until other limits apply",
    )
    duplicate_window: Duration = Field(
        120,
        gt=0,
        description="how long JetStream remembers message ids to drop duplicates, for a stream "
        f"this sink creates ({DURATION_HELP}); restarts within it are "
        "exactly-once",
    )
    credentials: Path | None = Field(
        None,
        description="NATS credentials file (.creds with user JWT and nkey seed)",
        json_schema_extra={"secret": True},
    )
    user: str | None = Field(None, description="user name (with password)")
    password: str | None = Field(
        None, description="password of user", json_schema_extra={"secret": True}
    )
    token: str | None = Field(
        None, description="authentication token", json_schema_extra={"secret": True}
    )
    tls: NatsTlsConfig | None = Field(None, description="TLS settings; see the tls fields")
    max_pending: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="messages published but not yet acknowledged by JetStream, at most",
    )
    ack_timeout: Duration = Field(
        10,
        gt=0,
        description="when messages are pending and no acknowledgement arrives for this long "
        "(seconds), treat the connection as broken: close it and publish again from the first "
        "unacknowledged message on a new one; also the timeout of JetStream API requests",
    )
    connect_timeout: Duration = Field(5, gt=0, description="seconds to wait for one connection")
    retry_for: Duration = Field(
        300,
        gt=0,
        description="seconds to keep retrying an unavailable server inside the sink before "
        "failing the pipeline with a retryable error (the daemon then restarts it with backoff)",
    )
    tombstones: bool = Field(
        False,
        description="publish an empty message (header Cdc-Tombstone: true) with the same key "
        "after each delete",
    )
    format: Format = "avro"
    schemas_enable: SchemasEnable = True
    decimal_format: DecimalFormat = "base64"
    replace_null_with_default: ReplaceNullWithDefault = True

    @field_validator("stream")
    @classmethod
    def _stream(cls, v: str | None) -> str | None:
        if v is not None and not _STREAM.match(v):
            raise ValueError(
                f"invalid stream name {v!r}: use letters, digits, _ and - (at most 200 characters)"
            )
        return v

    @field_validator("subject_prefix")
    @classmethod
    def _subject_prefix(cls, v: str | None) -> str | None:
        if v is not None and not all(_TOKEN.match(t) for t in v.split(".")):
            raise ValueError(
                f"invalid subject prefix {v!r}: use dot-separated tokens of letters, digits, "
                "_ and - (no wildcards, spaces or empty tokens)"
            )
        return v

    @field_validator("servers")
    @classmethod
    def _servers(cls, v: list[str]) -> list[str]:
        for url in v:
            scheme = url.split("://", 1)[0] if "://" in url else "nats"
            if scheme not in ("nats", "tls", "ws", "wss") or not url.split("://")[-1]:
                raise ValueError(
                    f"invalid server URL {mask_connection_string(url)!r}: use nats://host:port "
                    "or tls://host:port"
                )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> NatsSinkConfig:
        check_format(self)
        if self.max_age and self.duplicate_window > self.max_age:
            raise ValueError(
                f"duplicate_window {_show(self.duplicate_window)} is longer than max_age "
                f"{_show(self.max_age)}: shorten duplicate_window or raise max_age"
            )
        if self.password is not None and self.user is None:
            raise ValueError("password is set without user: set user too")
        if sum(x is not None for x in (self.credentials, self.user, self.token)) > 1:
            raise ValueError("set only one of credentials, user/password and token")
        return self


def default_stream(pipeline: str) -> str:
    """Stream name derived from a pipeline name: characters other than A-Z a-z 0-9 _ - become _."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", pipeline)[:200]
