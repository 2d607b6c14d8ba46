"""Configuration of the transforms stage: one model per transform, selected by ``type``.

Beside the transforms themselves (cdc/transforms/_apply.py), as each source and sink keeps its
config next to it; cdc/config.py puts ``TransformConfig`` into a pipeline's ``transforms`` list.
User documentation: docs/transforms.md; field reference: docs/configuration.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _column_patterns(v: list[str]) -> list[str]:
    for p in v:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"invalid regular expression '{p}': {e}") from None
    return v


ColumnPatterns = Annotated[
    list[str],
    Field(
        min_length=1,
        description="full-match regular expressions (case-insensitive) on "
        "<namespace>.<table>.<column>, namespace being the Postgres schema or the MySQL database, "
        "as in Debezium's column lists: e.g. 'public\\.users\\.email' or 'shop\\..*\\.ssn'",
    ),
]


class _ColumnTransform(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: ColumnPatterns

    @field_validator("columns", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("columns")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        return _column_patterns(v)


class DropColumns(_ColumnTransform):
    """Remove the matching columns from every event (Debezium's column.exclude.list)."""

    type: Literal["drop_columns"] = Field(description="remove columns")


class MaskColumns(_ColumnTransform):
    """Replace each non-null value with ``chars`` asterisks (Debezium's
    column.mask.with.N.chars)."""

    type: Literal["mask_columns"] = Field(description="replace values with asterisks")
    chars: int = Field(ge=0, le=1024, description="how many asterisks replace each value")


HASH_ALGORITHMS = {
    "MD5": "md5",
    "SHA-1": "sha1",
    "SHA-224": "sha224",
    "SHA-256": "sha256",
    "SHA-384": "sha384",
    "SHA-512": "sha512",
    "SHA-512/224": "sha512_224",
    "SHA-512/256": "sha512_256",
    "SHA3-224": "sha3_224",
    "SHA3-256": "sha3_256",
    "SHA3-384": "sha3_384",
    "SHA3-512": "sha3_512",
}


class HashColumns(_ColumnTransform):
    """Replace each non-null value with the hex digest of salt + value
    (Debezium's column.mask.hash[.v2].<algorithm>.with.salt.<salt>)."""

    type: Literal["hash_columns"] = Field(description="replace values with a salted hash")
    algorithm: str = Field(
        "SHA-256",
        description="digest algorithm, by its Java name as Debezium takes it: "
        + ", ".join(HASH_ALGORITHMS),
    )
    salt: str = Field(
        description="salt hashed before each value (its UTF-8 bytes); keep it secret: write "
        "${SOME_ENV_VAR} to take it from the environment"
    )
    version: Literal["v1", "v2"] = Field(
        "v1",
        description="Debezium's hashing strategy: v1 (Debezium's default) hashes the Java "
        "serialisation of the string, v2 its UTF-8 bytes only",
    )
    length: int | None = Field(
        None, ge=1, description="keep only the first characters of the hex digest; default all"
    )

    @field_validator("algorithm")
    @classmethod
    def _algorithm(cls, v: str) -> str:
        if v.upper() not in HASH_ALGORITHMS:
            raise ValueError(
                f"unknown hash algorithm {v!r}: use one of {', '.join(HASH_ALGORITHMS)}"
            )
        return v.upper()


class TruncateColumns(_ColumnTransform):
    """Cut string values to at most ``chars`` characters (Debezium's column.truncate.to.N.chars)."""

    type: Literal["truncate_columns"] = Field(description="cut strings to a length")
    chars: int = Field(ge=0, description="the most characters a value keeps")


class SkipOperations(BaseModel):
    """Do not emit changes of these kinds (Debezium's skipped.operations)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["skip_operations"] = Field(description="drop changes by kind")
    operations: list[Literal["c", "u", "d", "t"]] = Field(
        min_length=1,
        description="c: inserts, u: updates, d: deletes, t: truncates (snapshot reads are "
        "never skipped)",
    )


_GROUP_REF = re.compile(r"\$(\d+)")


class RouteTopics(BaseModel):
    """Rename the topics whose name fully matches ``regex`` (Kafka Connect's RegexRouter)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["route_topics"] = Field(description="rename topics by regular expression")
    regex: str = Field(
        description="regular expression matched against the whole topic name (case-sensitive), "
        "e.g. 'shop\\.public\\.orders_\\d+'"
    )
    replacement: str = Field(
        description="the new topic name; $1, $2 ... insert the regex's groups, $$ a dollar sign"
    )

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"invalid regular expression '{v}': {e}") from None
        return v

    @model_validator(mode="after")
    def _groups(self) -> RouteTopics:
        try:
            groups = re.compile(self.regex).groups
        except re.error:
            return self  # reported by _regex
        for m in _GROUP_REF.finditer(self.replacement.replace("$$", "")):
            if int(m.group(1)) > groups:
                raise ValueError(
                    f"replacement {self.replacement!r} refers to group ${m.group(1)} but the "
                    f"regex has {groups} group(s)"
                )
        if not self.replacement.replace("$$", "").replace("$", "").strip():
            raise ValueError("replacement must not be empty")
        return self


TablePatterns = Annotated[
    list[str],
    Field(
        min_length=1,
        description="full-match regular expressions (case-insensitive) on <namespace>.<table>, "
        "e.g. 'public\\.outbox'",
    ),
]


def _table_patterns(v: Any) -> Any:
    v = [v] if isinstance(v, str) else v
    return _column_patterns(v) if isinstance(v, list) else v


class Filter(BaseModel):
    """Keep (or drop) the row changes for which a condition on their columns is true."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["filter"] = Field(description="keep or drop rows by a condition")
    condition: str = Field(
        description="e.g. \"status in ('paid', 'shipped') and amount >= 100\": comparisons "
        "(= != < <= > >=), in (...), is [not] null, and, or, not, parentheses; columns by name, "
        "'strings', numbers, true, false, null (docs/transforms.md)"
    )
    action: Literal["keep", "drop"] = Field(
        "keep", description="keep: only the matching rows pass; drop: the matching rows go"
    )
    tables: TablePatterns | None = Field(
        None, description="the tables it applies to (others pass unfiltered); default all"
    )

    @field_validator("tables", mode="before")
    @classmethod
    def _tables(cls, v: Any) -> Any:
        return None if v is None else _table_patterns(v)

    @field_validator("condition")
    @classmethod
    def _condition(cls, v: str) -> str:
        from cdc.transforms._expr import ExprError, parse

        try:
            parse(v)
        except ExprError as e:
            raise ValueError(f"cannot parse condition {v!r}: {e}") from None
        return v


UNWRAP_ENVELOPE_FIELDS = ("op", "ts_ms", "ts_us", "ts_ns")
UNWRAP_TRANSACTION_FIELDS = ("id", "total_order", "data_collection_order")


class Unwrap(BaseModel):
    """Debezium's ExtractNewRecordState: the row itself instead of the change envelope."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["unwrap"] = Field(description="flat rows instead of the change envelope")
    delete_handling_mode: Literal["drop", "tombstone", "rewrite"] = Field(
        "drop",
        description="a delete is dropped, becomes a tombstone (key, null value), or is "
        "rewritten as the deleted row with __deleted: 'true' (Debezium's "
        "delete.handling.mode drop / none / rewrite)",
    )
    drop_tombstones: bool = Field(
        True,
        description="no tombstone after a delete (Debezium's drop.tombstones); false: a "
        "tombstone follows each delete",
    )
    add_fields: list[str] = Field(
        default_factory=list,
        description="fields appended to each row as <prefix><name> (Debezium's add.fields): op, "
        "ts_ms, ts_us, ts_ns; id, total_order, data_collection_order (the transaction block); "
        "any source field (table, lsn, db, ts_ms written source.ts_ms...)",
    )
    add_fields_prefix: str = Field("__", description="prefix of the added fields' names")

    @field_validator("add_fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        for name in v:
            parts = name.split(".")
            if len(parts) > 2 or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
                raise ValueError(f"invalid field {name!r}: use a name or source.<name>")
            if len(parts) == 2 and parts[0] not in ("source", "transaction"):
                raise ValueError(
                    f"invalid field {name!r}: only source.<name> and transaction.<name> are nested"
                )
        return v


class Outbox(BaseModel):
    """Debezium's outbox EventRouter: inserts into an outbox table become events on a topic per
    aggregate type, keyed by the aggregate id, the payload column as the value."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["outbox"] = Field(description="route an outbox table's rows as events")
    tables: TablePatterns = Field(description="the outbox table(s), e.g. 'public\\.outbox'")
    id_column: str = Field("id", description="the event id: written as the record header 'id'")
    aggregate_type_column: str = Field(
        "aggregatetype",
        description="its value picks the topic (Debezium's route.by.field)",
    )
    aggregate_id_column: str = Field("aggregateid", description="the record key")
    payload_column: str = Field("payload", description="the record value")
    route_topic_replacement: str = Field(
        "outbox.event.{routedByValue}",
        description="the topic: {routedByValue} becomes the aggregate type (Debezium's "
        "route.topic.replacement writes ${routedByValue}; here ${...} is an environment variable)",
    )
    on_update: Literal["warn", "drop", "error"] = Field(
        "warn",
        description="an update of an outbox row: dropped with a warning (Debezium's "
        "table.op.invalid.behavior=warn), dropped quietly, or an error that stops the pipeline",
    )

    @field_validator("tables", mode="before")
    @classmethod
    def _tables(cls, v: Any) -> Any:
        return _table_patterns(v)

    @field_validator("route_topic_replacement")
    @classmethod
    def _replacement(cls, v: str) -> str:
        if not v.replace("{routedByValue}", "x").strip():
            raise ValueError("route_topic_replacement must not be empty")
        return v


TransformConfig = Annotated[
    DropColumns
    | MaskColumns
    | HashColumns
    | TruncateColumns
    | SkipOperations
    | RouteTopics
    | Filter
    | Unwrap
    | Outbox,
    Field(discriminator="type"),
]
TRANSFORM_TYPES = (
    "drop_columns",
    "mask_columns",
    "hash_columns",
    "truncate_columns",
    "skip_operations",
    "route_topics",
    "filter",
    "unwrap",
    "outbox",
)
EVENT_TRANSFORMS = (Filter, Unwrap, Outbox)
"""Transforms that apply to whole events, after every other (column transforms, routing,
skipped operations), in their list order."""


def check_order(transforms: list[Any]) -> list[Any]:
    """Refuse a column transform, route or skip listed after filter, unwrap or outbox: those
    apply last (docs/transforms.md), so the list must say so."""
    seen = None
    for i, t in enumerate(transforms):
        if isinstance(t, EVENT_TRANSFORMS):
            seen = seen or (i, t.type)
        elif seen is not None:
            raise ValueError(
                f"transforms[{i}] ({t.type}) comes after transforms[{seen[0]}] ({seen[1]}): "
                "filter, unwrap and outbox apply after every other transform; list them last"
            )
    return transforms
