"""Configuration of the built-in log sink."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from cdc.units import DURATION_HELP, SIZE_HELP, Duration, Size


def _parse_mode(value: object) -> int:
    """A file mode: an int (YAML reads 0640 as octal) or an octal string ("0640", "0o640")."""
    if isinstance(value, bool):
        raise ValueError(f"bad file mode {value!r}: use an octal number such as 0600 or 0640")
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        try:
            value = int(text, 8)
        except ValueError:
            raise ValueError(
                f"bad file mode {value!r}: use an octal number such as 0600 or 0640"
            ) from None
    if not isinstance(value, int) or not 0 <= value <= 0o777:
        raise ValueError(f"bad file mode {value!r}: use an octal number such as 0600 or 0640")
    if value & 0o600 != 0o600:
        raise ValueError(
            f"bad file mode {value:04o}: the owner (the daemon) needs read and write (0600)"
        )
    return value


FileMode = Annotated[int, BeforeValidator(_parse_mode)]


class LogRetention(BaseModel):
    """When whole, closed segments of the log are deleted. Without any limit nothing is."""

    model_config = ConfigDict(extra="forbid")

    max_age: Duration | None = Field(
        None,
        gt=0,
        description="delete a closed segment once everything in it was written longer ago than "
        f"this; {DURATION_HELP}. Unset: no age limit",
    )
    max_bytes: Size | None = Field(
        None,
        gt=0,
        description="delete the oldest closed segments while all segments together are larger "
        f"than this; {SIZE_HELP}. The active segment is never deleted, so the log can exceed "
        "it by up to one segment. Unset: no size limit",
    )
    keep_unconsumed: bool = Field(
        True,
        description="never delete records a named consumer (`cdc log read --consumer`) has not "
        "committed, even past max_age or max_bytes (a warning is logged and the metric "
        "cdc_log_retention_held_bytes shows by how much); delete a consumer that is gone with "
        "`cdc log consumers PATH --delete NAME`. false: limits win and a lagging consumer gets "
        "an error naming the log's first offset",
    )
    check_interval: Duration = Field(
        300,
        gt=0,
        description="with max_age, also apply retention at most this often while the log is "
        "written without rolling to a new segment (it always applies at open and at each roll); "
        f"{DURATION_HELP}",
    )


class LogSinkConfig(BaseModel):
    """The built-in durable log on local disk (the default sink)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["log"] = Field(description="selects the built-in log")
    path: Path = Field(description="directory of the log; created if missing")
    file_mode: FileMode = Field(
        0o600,
        description="permissions of the files the log creates (segments, schemas.jsonl, "
        "consumer offsets), as an octal number such as 0600 or 0640; directories it creates get "
        "the matching mode (0700, 0750). Set exactly, whatever the umask; existing files keep "
        "theirs. Must give the owner read and write",
    )
    segment_bytes: Size = Field(
        64 << 20, ge=1 << 20, description=f"roll to a new segment file past this size; {SIZE_HELP}"
    )
    fsync: bool = Field(
        True,
        description="fsync every frame before acknowledging the source; turning it off trades "
        "crash safety of the machine (not of the process) for speed",
    )
    tombstones: bool = Field(
        False, description="write a null-value record with the same key after each delete"
    )
    retention: LogRetention = Field(
        default_factory=LogRetention,  # type: ignore[arg-type]
        description="which old segments to delete (by age, by size); default: keep everything",
    )

    @field_validator("path", mode="before")
    @classmethod
    def _path_given(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError(
                "empty path: give the log its own directory, such as /var/lib/cdc/shop (an "
                "empty path would put the log in the config file's folder)"
            )
        return value

    @model_validator(mode="after")
    def _retention_fits_segments(self) -> LogSinkConfig:
        limit = self.retention.max_bytes
        if limit is not None and limit < self.segment_bytes:
            raise ValueError(
                f"retention.max_bytes ({limit}) is smaller than segment_bytes "
                f"({self.segment_bytes}): the log always keeps its active segment, so it would "
                "keep only that one; raise max_bytes to a few segments or lower segment_bytes"
            )
        return self
