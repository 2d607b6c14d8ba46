"""Configuration of the built-in log as a source (another pipeline's log, read and followed)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LogSourceConfig(BaseModel):
    """Another pipeline's built-in log, read from this pipeline's own position and followed."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["log"] = Field(description="selects the built-in log as a source")
    path: Path = Field(
        description="directory of the log to read (another pipeline's `sink.path`); relative "
        "to the config file. It may not exist yet when the daemon starts: the source waits "
        "for its writer to create it"
    )
    tables: list[str] | None = Field(
        None,
        description="only row changes of these tables, written as the source's data "
        "collections are (`schema.table` for Postgres, `database.table` for MySQL); default "
        "every table in the log",
    )
    topics: list[str] | None = Field(
        None,
        description="only row changes of these topics (e.g. `shop.public.orders`); default "
        "every topic. With `tables` too, a change must match both",
    )
    start: Literal["earliest", "latest"] = Field(
        "earliest",
        description="where a pipeline without a committed position starts: `earliest` (the "
        "log's first record) or `latest` (only what is written from then on); later starts "
        "resume from the position its sink committed",
    )
    consumer: str | None = Field(
        None,
        description="the named consumer of the log under which this pipeline records how far "
        "its sink has made the log durable, so the log's retention (keep_unconsumed) keeps "
        "what it has not read; default the pipeline's name",
    )

    @field_validator("path", mode="before")
    @classmethod
    def _path_given(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty path: give the directory of the log to read")
        return value
