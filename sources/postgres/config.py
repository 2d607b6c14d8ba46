"""Configuration of the PostgreSQL source."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")
# A name part: in double quotes (any characters, a double quote written twice), or bare (no
# dot, no double quote, no surrounding space), as Debezium reads fully-qualified table names.
_PART = r'"(?:[^"]|"")+"|[^."\s](?:[^."]*[^."\s])?'
_TABLE = re.compile(rf"(?:({_PART})\.)?({_PART})")
MAX_IDENTIFIER_BYTES = 63  # Postgres' NAMEDATALEN - 1: longer names are truncated on creation

TABLE_HELP = (
    "write schema.table (schema defaults to public); put a name part holding a dot, a double "
    "quote or surrounding spaces in double quotes, a double quote inside written twice: "
    '"my.schema"."my ""quoted"" table"'
)


def parse_table(name: str) -> tuple[str, str]:
    """``schema.table`` as written in ``source.tables`` -> (schema, table) as Postgres names them.

    Quoted parts are unquoted (``"a""b"`` -> ``a"b``); bare parts are taken as written (not
    folded to lower case); the schema defaults to public. Raises ValueError for a name that
    cannot be read.
    """
    m = _TABLE.fullmatch(name)
    if m is None:
        raise ValueError(f"invalid table name {name!r}: {TABLE_HELP}")
    schema, table = (_unquote(p) if p is not None else "public" for p in m.groups())
    for part in (schema, table):
        if "\x00" in part:
            raise ValueError(f"invalid table name {name!r}: a name cannot contain NUL")
        if len(part.encode()) > MAX_IDENTIFIER_BYTES:
            raise ValueError(
                f"invalid table name {name!r}: {part!r} is longer than Postgres' "
                f"{MAX_IDENTIFIER_BYTES}-byte identifiers (the server truncates longer names): "
                "write the name as the server keeps it"
            )
    return schema, table


# not the dot (it separates schema and table) nor $ (Postgres identifiers may hold it; a pattern
# is matched whole, so an anchor adds nothing)
_REGEX_CHARS = re.compile(r"[*+?\[\](){}|^\\]")


def is_pattern(entry: str) -> bool:
    """Whether a ``tables``/``exclude_tables``/``schemas`` entry is a regular expression: it
    holds one of ``* + ? [ ] ( ) { } | ^ \\`` outside double quotes (``_selection``)."""
    unquoted = re.sub(r'"(?:[^"]|"")*"', "", entry)
    return bool(_REGEX_CHARS.search(unquoted))


def compile_pattern(entry: str, what: str) -> re.Pattern[str]:
    """The entry as a regular expression, or a ValueError naming it."""
    try:
        return re.compile(entry)
    except re.error as e:
        raise ValueError(f"invalid {what} pattern {entry!r}: {e}") from None


_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")


def sql_table(schema: str, table: str) -> str:
    """``schema.table`` for SQL shown to the operator: a part quoted unless it is a plain lower-case
    identifier (``public."Spaced Table"``)."""
    return ".".join(
        p if _PLAIN.fullmatch(p) else '"' + p.replace('"', '""') + '"' for p in (schema, table)
    )


def _unquote(part: str) -> str:
    if part.startswith('"'):
        return part[1:-1].replace('""', '"')
    return part


class MessagesConfig(BaseModel):
    """Which logical decoding messages (``pg_logical_emit_message``) become events."""

    model_config = ConfigDict(extra="forbid")

    prefixes: list[str] | None = Field(
        None,
        description="capture only messages whose prefix matches one of these (a regular "
        "expression matching the whole prefix, so a plain name matches itself), as Debezium's "
        "message.prefix.include.list; unset: every prefix",
    )
    exclude_prefixes: list[str] = Field(
        default_factory=list,
        description="drop messages whose prefix matches one of these (whole-prefix regular "
        "expressions), as Debezium's message.prefix.exclude.list; applied after prefixes",
    )

    @field_validator("prefixes", "exclude_prefixes")
    @classmethod
    def _patterns(cls, v: list[str] | None) -> list[str] | None:
        for p in v or ():
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(
                    f"invalid prefix pattern {p!r} ({e}): write a regular expression, "
                    "or escape its special characters (a.b matches any character for the dot)"
                ) from None
        return v

    def captures(self, prefix: str) -> bool:
        """Whether a message with ``prefix`` becomes an event (cdc's own prefixes never do)."""
        if prefix.startswith(OWN_MESSAGE_PREFIX):
            return False
        if self.prefixes is not None and not any(re.fullmatch(p, prefix) for p in self.prefixes):
            return False
        return not any(re.fullmatch(p, prefix) for p in self.exclude_prefixes)


OWN_MESSAGE_PREFIX = "cdc.incremental"
"""The prefix (``cdc.incremental.<slot>``) of the messages cdc writes itself: never emitted."""


class PostgresSourceConfig(BaseModel):
    """PostgreSQL logical replication (pgoutput) source."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["postgres"] = Field(description="selects the PostgreSQL source")
    dsn: str = Field(
        description="libpq connection string or URI; the user needs the REPLICATION attribute "
        "and SELECT on the tables (and CREATE on the database to create the publication)",
        json_schema_extra={"secret": True},
    )
    tables: list[str] = Field(
        default_factory=list,
        description='tables to capture, "schema.table" (schema defaults to public), names as '
        "they are (case kept); a part holding a dot, a double quote or surrounding spaces in "
        'double quotes, a double quote inside written twice: "my.schema"."a ""b"""; or a '
        "pattern: a regular expression on the whole schema.table, as Debezium's "
        "table.include.list (an entry holding * + ? [ ] ( ) { } | ^ or \\ outside double "
        "quotes: public\\.order_.*). Tables a pattern matches are picked up while running "
        "(checked every slot_check_interval_s) and backfilled",
    )
    exclude_tables: list[str] = Field(
        default_factory=list,
        description="tables left out of what tables and schemas select: exact names or "
        "patterns, written as in tables",
    )
    schemas: list[str] = Field(
        default_factory=list,
        description="capture every table of these schemas (exact names, or regular expressions "
        "on the schema's name), beside tables",
    )
    slot: str | None = Field(
        None, description="replication slot name; default cdc_<pipeline name>; created if missing"
    )
    publication: str | None = Field(
        None,
        description="publication name; default cdc_<pipeline name>; created if missing "
        "(see publication_autocreate_mode)",
    )
    publication_autocreate_mode: Literal["filtered", "all_tables", "disabled"] = Field(
        "filtered",
        description="as Debezium's publication.autocreate.mode: filtered: create the "
        "publication for the captured tables and keep it to exactly them (needs CREATE on the "
        "database and ownership of the tables; a publication another pipeline or user made is "
        "only added to, never trimmed); all_tables: create it FOR ALL TABLES when missing "
        "(needs a superuser), otherwise use it as it is; disabled: never create or alter it "
        "(an administrator makes it; a captured table missing from it stops the pipeline and is "
        "a cdc check problem). Changes of tables the publication holds but the pipeline does "
        "not capture are skipped",
    )
    temporary_slot: bool = Field(
        False,
        description="create the replication slot TEMPORARY: the server drops it when the "
        "replication connection ends (a crash included), so a throwaway pipeline never leaves "
        "a slot pinning WAL; every restart then finds it gone: with snapshot: when_needed the "
        "pipeline snapshots again, otherwise it stops (PositionLost)",
    )
    slot_failover: bool = Field(
        False,
        description="create the slot with FAILOVER (Postgres 17+) so that a physical standby "
        "with sync_replication_slots = on keeps a copy and the pipeline resumes on it after a "
        "promotion (docs/operations-postgres.md, high availability); an existing slot is "
        "switched with ALTER_REPLICATION_SLOT",
    )
    snapshot: Literal["initial", "never", "initial_only", "when_needed"] = Field(
        "initial",
        description="initial: snapshot existing rows on first start, then stream; never: stream "
        "only; initial_only: snapshot, then stop; when_needed: like initial, and snapshot again "
        "when the position to resume from is lost (slot dropped or invalidated)",
    )
    snapshot_parallelism: int = Field(
        1,
        ge=1,
        le=16,
        description="connections reading a snapshot at once: tables, and key ranges of a large "
        "table (at least 50,000 rows, integer first key column)",
    )
    snapshot_fetch_size: int = Field(
        5000, ge=100, description="rows fetched per round trip (and per batch) during a snapshot"
    )
    incremental_chunk_size: int = Field(
        1024,
        ge=1,
        description="rows read per chunk (one watermark window) of an incremental snapshot: a "
        "table added to tables later, `cdc snapshot`, or the signal table",
    )
    signal_table: str | None = Field(
        None,
        description="Debezium's signal table, schema.table with columns id, type and data (text); "
        "rows inserted into it ask for an incremental snapshot (type execute-snapshot, data "
        '{"data-collections": [...], "additional-conditions": [{"data-collection": ..., '
        '"filter": ...}]}) or stop one (stop-snapshot); added to the publication, its rows are '
        "read from the stream and never emitted as events",
    )
    messages: MessagesConfig | None = Field(
        None,
        description="emit logical decoding messages (pg_logical_emit_message) as events on the "
        "topic <prefix>.message, as Debezium's message events (key {prefix}, value op m with "
        "message {prefix, content}): transactional ones inside their transaction, "
        "non-transactional ones where the server decoded them; unset: none is emitted",
    )
    status_interval_s: float = Field(
        10.0, gt=0, description="how often to send standby status (flush position) to the server"
    )
    heartbeat_interval_s: float = Field(
        10.0,
        ge=0,
        description="when only tables this pipeline does not capture (or other databases) "
        "write WAL, move the slot forward this often: the source yields an empty batch at the "
        "server's WAL position so the sink makes it durable and the slot is acknowledged up to it; "
        "0 disables (the slot then pins WAL until a captured table changes)",
    )
    heartbeat_action_query: str | None = Field(
        None,
        description="SQL run on a normal connection every heartbeat_interval_s (when that is "
        "not 0), e.g. an UPDATE of a captured heartbeat table; for servers where nothing else "
        "writes WAL; errors are logged and ignored",
    )
    slot_check_interval_s: float = Field(
        60.0,
        gt=0,
        description="how often to read the slot's retained WAL and wal_status and check that the "
        "publication still publishes every configured table and operation (cheap queries)",
    )
    max_retained_wal_mb: int = Field(
        1024,
        ge=0,
        description="log a warning once when the slot retains more WAL than this (MB); 0 disables",
    )

    @field_validator("slot")
    @classmethod
    def _slot(cls, v: str | None) -> str | None:
        if v is not None and not _SLOT.match(v):
            raise ValueError(f"invalid slot name {v!r}: use a-z, 0-9 and _ (at most 63 characters)")
        return v

    @field_validator("publication")
    @classmethod
    def _publication(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", v):
            raise ValueError(
                f"invalid publication name {v!r}: use letters, digits and _ (at most 63 characters)"
            )
        return v

    @field_validator("signal_table")
    @classmethod
    def _signal_table(cls, v: str | None) -> str | None:
        if v is not None:
            parse_table(v)  # a ValueError names the problem
        return v

    @field_validator("tables", "exclude_tables")
    @classmethod
    def _tables(cls, v: list[str]) -> list[str]:
        seen: dict[tuple[str, str], str] = {}
        problems: list[str] = []  # every bad name at once
        for t in v:
            try:
                if is_pattern(t):
                    compile_pattern(t, "table")
                    continue
                parsed = parse_table(t)
            except ValueError as e:
                problems.append(str(e))
                continue
            if parsed in seen:
                problems.append(f"table {t!r} is listed twice (also as {seen[parsed]!r})")
            seen[parsed] = t
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @field_validator("schemas")
    @classmethod
    def _schemas(cls, v: list[str]) -> list[str]:
        for s in v:
            if is_pattern(s):
                compile_pattern(s, "schemas")
        return v

    @model_validator(mode="after")
    def _something(self) -> PostgresSourceConfig:
        if not self.tables and not self.schemas:
            raise ValueError("tables: list the tables to capture (or schemas: whole schemas)")
        return self


def default_name(pipeline: str) -> str:
    """Slot/publication name derived from a pipeline name: cdc_<name>, lowercased, sanitised."""
    return ("cdc_" + re.sub(r"[^a-z0-9_]", "_", pipeline.lower()))[:63]


def claims(config: PostgresSourceConfig, pipeline: str) -> list[tuple[str, str]]:
    """The server objects this source takes that no other pipeline may share, as (config field,
    the object and where it lives): its replication slot (per server) and its publication (per
    database). Two pipelines sharing one drop or alter each other's (``cdc validate`` refuses).
    The server is told by the DSN's host and port as written (not resolved; libpq's defaults
    when absent)."""
    params = _dsn_params(config.dsn)
    server = f"{params.get('host') or params.get('hostaddr') or 'localhost'}:"
    server += params.get("port") or "5432"
    db = params.get("dbname") or params.get("user") or ""
    slot = config.slot or default_name(pipeline)
    publication = config.publication or default_name(pipeline)
    return [
        ("slot", f"replication slot {slot!r} on server {server}"),
        ("publication", f"publication {publication!r} in database {db!r} on server {server}"),
    ]


_KV = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


def _dsn_params(dsn: str) -> dict[str, str]:
    """host, port, dbname, user of a libpq DSN (key=value or URI), without importing a driver."""
    if dsn.startswith(("postgres://", "postgresql://")):
        u = urlsplit(dsn)
        out = {"host": u.hostname or "", "port": str(u.port or ""), "user": u.username or ""}
        out["dbname"] = unquote(u.path.lstrip("/"))
        out.update({k: v[-1] for k, v in parse_qs(u.query).items()})
        return out
    return {k: v[1:-1].replace("\\'", "'") if v[:1] == "'" else v for k, v in _KV.findall(dsn)}
