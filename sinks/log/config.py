"""Configuration of the built-in log sink."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LogSinkConfig(BaseModel):
    """The built-in durable log on local disk (the default sink)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["log"] = Field(description="selects the built-in log")
    path: Path = Field(description="directory of the log; created if missing")
    segment_bytes: int = Field(
        64 << 20, ge=1 << 20, description="roll to a new segment file past this size"
    )
    fsync: bool = Field(
        True,
        description="fsync every frame before acknowledging the source; turning it off trades "
        "crash safety of the machine (not of the process) for speed",
    )
    tombstones: bool = Field(
        False, description="write a null-value record with the same key after each delete"
    )
