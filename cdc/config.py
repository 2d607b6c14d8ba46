"""Loading and validating the YAML configuration.

Every problem is reported at once, each located by its path in the file
(``pipelines[0].source.slot: ...``). ``${VAR}`` and ``${VAR:-default}`` in string values are
replaced from the environment; values of secret fields are never shown in messages.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cdc import plugins, secrets
from cdc.errors import ConfigError

# the transforms' models live beside the transforms, as each plugin's config beside it
from cdc.transforms.config import TRANSFORM_TYPES, TransformConfig, check_order
from cdc.units import DURATION_HELP, Duration


def _models(kind: str) -> list[type[BaseModel]]:
    table = plugins.SOURCES if kind == "source" else plugins.SINKS
    out: list[type[BaseModel]] = []
    for name in table:
        mod = plugins.config_module(kind, name)
        out.extend(
            v
            for v in vars(mod).values()
            if isinstance(v, type)
            and issubclass(v, BaseModel)
            and v.__module__ == mod.__name__
            and "type" in v.model_fields
        )
    return out


_source_models = _models("source")
_sink_models = _models("sink")
SourceConfig = Annotated[Union[tuple(_source_models)], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007
SinkConfig = Annotated[Union[tuple(_sink_models)], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,200}")


class BatchConfig(BaseModel):
    """When the source hands its events on: a batch is written as soon as the change stream
    pauses (the source has nothing more buffered, outside a transaction), when it is full (at
    the last transaction boundary it holds, if any: the open transaction's events start the
    next batch), or when it has waited ``max_wait_ms`` while more kept coming
    (cdc/assembler.py)."""

    model_config = ConfigDict(extra="forbid")

    max_events: int = Field(5000, ge=1, description="write a batch once it holds this many events")
    max_wait_ms: int = Field(
        100,
        ge=0,
        description="outside a transaction a batch is written as soon as the source has nothing "
        "more buffered; while more keeps coming, write a partial batch after waiting this long",
    )
    read_ahead: int = Field(
        0,
        ge=0,
        le=4,
        description="batches a reader thread may queue for the writing thread, so that the "
        "source's receive and decode overlap the encode, write and fsync (memory: up to "
        "read_ahead + 2 batches); 0: one thread reads and writes: on 2 cores read-ahead did "
        "not measurably raise rows/s and cost 5-10 % more CPU (the per-row work on both "
        "sides holds Python's GIL)",
    )


class PipelineConfig(BaseModel):
    """One source feeding one sink."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="unique pipeline name (letters, digits, _ . -)")
    topic_prefix: str | None = Field(
        None, description="topic prefix (Debezium's topic.prefix); default the pipeline name"
    )
    transaction_metadata: bool = Field(
        True,
        description="emit BEGIN/END events on <prefix>.transaction and fill the envelope's "
        "transaction block",
    )
    batch: BatchConfig = Field(
        default_factory=BatchConfig,  # type: ignore[arg-type]
        description="when the source hands a batch of events on to the sink",
    )
    source: SourceConfig = Field(  # type: ignore[valid-type]
        description="where changes come from; `type:` selects one of the sources below"
    )
    sink: SinkConfig = Field(  # type: ignore[valid-type]
        description="where events go; `type:` selects one of the sinks below"
    )
    transforms: list[TransformConfig] = Field(
        default_factory=list,
        description="changes applied to every event between the source and the sink, in order "
        "(docs/transforms.md)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"invalid pipeline name {v!r}: use letters, digits, _ . and -")
        return v

    @field_validator("transforms")
    @classmethod
    def _transforms(cls, v: list[Any]) -> list[Any]:
        return check_order(v)

    @model_validator(mode="after")
    def _reshaping_into_a_database(self) -> PipelineConfig:
        # unwrap and outbox turn change events into flat records for consumers; a database
        # target applies the change events themselves (inserts, updates, deletes by key)
        sink_type = getattr(self.sink, "type", None)
        if sink_type in ("postgres", "mysql"):
            for i, t in enumerate(self.transforms):
                kind = getattr(t, "type", None)
                if kind in ("unwrap", "outbox"):
                    raise ValueError(
                        f"transforms[{i}]: {kind} reshapes change events into records for "
                        f"consumers; the {sink_type} target applies the change events themselves: "
                        "remove it (filter, drop, mask and the others work with a target)"
                    )
        return self

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, v: str | None) -> str | None:
        # As Debezium validates topic.prefix: every topic starts with it, and is sanitised to
        # these characters (cdc.avro.topic_name) while the prefix must stay as configured.
        if v is not None and not _TOPIC_PREFIX.fullmatch(v):
            raise ValueError(
                f"invalid topic prefix {v!r}: use letters, digits, _ . and - (at most 200)"
            )
        return v

    @property
    def prefix(self) -> str:
        return self.topic_prefix or self.name


class HttpConfig(BaseModel):
    """The daemon's HTTP endpoint: /metrics, /health and /ready."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="serve /metrics, /health and /ready over HTTP")
    bind: str = Field(
        "127.0.0.1",
        description="address to listen on; the default answers this machine only (the endpoint "
        "has no authentication: bind 0.0.0.0 only behind a firewall)",
    )
    port: int = Field(
        8080, ge=0, le=65535, description="TCP port to listen on (0: any free port, logged)"
    )


class ServeConfig(BaseModel):
    """`cdc serve -c FILE`: the log sinks of this file's pipelines over HTTP (Server-Sent Events
    and a pull consumer API, docs/log.md "Over HTTP"). Only these logs, by pipeline name."""

    model_config = ConfigDict(extra="forbid")

    bind: str = Field(
        "127.0.0.1",
        description="address to listen on; the default answers this machine only. Any other "
        "address needs `token` or `token_file`",
    )
    port: int = Field(
        8081, ge=0, le=65535, description="TCP port to listen on (0: any free port, logged)"
    )
    token: str | None = Field(
        None,
        description="bearer token every request must carry (`Authorization: Bearer TOKEN`, or "
        "`?access_token=TOKEN` for a browser's EventSource); write `${ENV_VAR}`. At least 16 "
        "characters",
        json_schema_extra={"secret": True},
    )
    token_file: Path | None = Field(
        None,
        description="file holding the bearer token (surrounding whitespace ignored), instead of "
        "`token`; relative to the config file",
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate (chain) file: serve HTTPS; needs `tls_key`"
    )
    tls_key: Path | None = Field(None, description="PEM private key file of `tls_cert`")
    allow_origins: list[str] = Field(
        default_factory=list,
        description="web origins (`https://app.example.com`, or `*`) whose pages may read the "
        "logs from a browser (CORS); default none",
    )
    max_connections: int = Field(
        32,
        ge=1,
        le=10000,
        description="connections served at once (each SSE stream holds one); past it a client "
        "gets 503",
    )
    idle_timeout: Duration = Field(
        30.0,
        gt=0,
        description="close a connection whose request does not arrive, or that does not take "
        f"what is written to it, within this long; {DURATION_HELP}",
    )
    keepalive: Duration = Field(
        15.0,
        gt=0,
        description="an idle SSE stream gets a comment line this often (keeps proxies from "
        "closing it, and finds clients that went away)",
    )
    max_fetch: int = Field(
        10000, ge=1, description="most events one pull `fetch` returns (its `max` is capped)"
    )

    @model_validator(mode="after")
    def _safe(self) -> ServeConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token or token_file, not both")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both, or neither")
        if self.token is not None and len(self.token.strip()) < MIN_TOKEN:
            raise ValueError(
                f"token too short ({len(self.token.strip())} characters): use at least "
                f"{MIN_TOKEN}, e.g. the output of `openssl rand -hex 32`"
            )
        if not _is_loopback(self.bind) and self.token is None and self.token_file is None:
            raise ValueError(
                f"bind {self.bind!r} is not a loopback address, so anyone who can reach it "
                "could read the logs: set serve.token_file (or serve.token), or bind 127.0.0.1"
            )
        return self


MIN_TOKEN = 16


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class Config(BaseModel):
    """The whole file: pipelines and daemon-wide settings."""

    model_config = ConfigDict(extra="forbid")

    pipelines: list[PipelineConfig] = Field(
        min_length=1, description="the pipelines the daemon runs, each isolated from the others"
    )
    http: HttpConfig = Field(
        default_factory=HttpConfig,  # type: ignore[arg-type]
        description="the HTTP endpoint for /metrics, /health and /ready (off by default)",
    )
    serve: ServeConfig = Field(
        default_factory=ServeConfig,  # type: ignore[arg-type]
        description="`cdc serve`: the pipelines' logs over HTTP (SSE and pull consumers)",
    )
    status_file: Path | None = Field(
        None,
        description="where the daemon publishes its state for `cdc status` (JSON, rewritten "
        "about every second); default: <config file name without .yaml>.status.json next to "
        "the config file",
    )
    status_interval_s: float = Field(
        1.0, gt=0, le=60, description="seconds between rewrites of the status file"
    )
    shutdown_timeout_s: float = Field(
        30.0,
        gt=0,
        description="on SIGTERM/SIGINT, seconds every pipeline gets to make its current batch "
        "durable and stop; after that the daemon exits with status 3 naming those that did not",
    )

    @model_validator(mode="after")
    def _unique(self) -> Config:
        seen: set[str] = set()
        for i, p in enumerate(self.pipelines):
            if p.name in seen:
                raise ValueError(f"pipelines[{i}].name: pipeline name {p.name!r} is used twice")
            seen.add(p.name)
        return self


# --- loading --------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Field names whose malformed values are never shown, beyond the secrets (cdc.secrets): a DSN that
# failed validation may hold its password in a shape masking does not recognise.
_HIDDEN = ("dsn",)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _substitute(node: Any, loc: tuple[Any, ...], problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, (*loc, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, (*loc, i), problems) for i, v in enumerate(node)]
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            value = os.environ.get(m.group(1))
            if value is None:
                if m.group(2) is not None:
                    return m.group(2)
                hint = ""
                if m.group(1) == "routedByValue":  # Debezium's outbox placeholder, copied
                    hint = " (the outbox transform's placeholder is written {routedByValue})"
                problems.append(
                    f"{_path(loc)}: environment variable {m.group(1)} is not set; "
                    f"set it or write ${{{m.group(1)}:-default}}{hint}"
                )
                return ""
            return value

        return _VAR.sub(repl, node)
    return node


def _is_secret(loc: tuple[Any, ...]) -> bool:
    """True when the value at ``loc`` may not be shown at all (any part of the path names a
    secret: ``producer.sasl.password``, ``source.dsn``, ``basic_auth.password``)."""
    return any(
        isinstance(p, str) and (secrets.is_secret_name(p) or any(h in p.lower() for h in _HIDDEN))
        for p in loc
    )


_SCALAR_TAGS = ("str", "int", "float", "bool")


def _format_error(err: dict[str, Any], data: Any) -> str:
    loc = list(err["loc"])
    # Drop the discriminator tag pydantic inserts after a union field ("source", "postgres", ...).
    clean: list[Any] = []
    for i, part in enumerate(loc):
        if (
            i > 0
            and loc[i - 1] in ("source", "sink")
            and isinstance(part, str)
            and (part in plugins.SOURCES or part in plugins.SINKS)
        ):
            continue
        if i > 1 and loc[i - 2] == "transforms" and isinstance(loc[i - 1], int):
            continue  # the transform's type tag
        clean.append(part)
    kind = err["type"]
    msg = str(err["msg"])
    if len(clean) > 1 and clean[-1] in _SCALAR_TAGS and kind.endswith(("_type", "_parsing")):
        # One error per member of a str | int | float | bool union: say it once (parse dedups).
        clean.pop()
        kind, msg = "scalar", "Input should be a string, a number or true/false"
    path = _path(tuple(clean))
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "extra_forbidden":
        msg = "unknown field; check its spelling against docs/configuration.md"
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "union_tag_invalid":
        options: Any = plugins.SOURCES if clean and clean[-1] == "source" else plugins.SINKS
        if len(clean) > 1 and clean[-2] == "transforms":
            options = TRANSFORM_TYPES
        msg = f"unknown type {err['input'].get('type')!r}: use one of {', '.join(options)}"
    elif kind == "union_tag_not_found":
        msg = "missing 'type'"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        # Not shown: a string where a mapping belongs is often a whole connection string.
        got = type(err.get("input")).__name__
        got = {
            "str": "a string",
            "list": "a list",
            "NoneType": "nothing",
            "int": "a number",
            "float": "a number",
            "bool": "true/false",
        }.get(got, got)
        msg = f"expected a mapping of fields (name: value lines), got {got}"
    else:
        shown = "" if _is_secret(tuple(clean)) else f": {err.get('input')!r}"
        msg = f"bad value{shown}: {msg[0].lower() + msg[1:]}"
    return f"{path}: {msg}" if path else msg


# Bounds on what a configuration file may be: a real one is a few KB, a few levels deep, with at
# most a few thousand values. Past them the file is a mistake or an attack (a "billion laughs" of
# nested aliases expands 1 KB into billions of values; 5,000 nested brackets exhaust the stack),
# refused before anything walks it.
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_VALUES = 100_000


class _Refused(Exception):
    """Valid YAML beyond the bounds above, found at ``mark``."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem)
        self.problem = problem
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader refusing documents nested deeper than ``MAX_DEPTH`` (checked while
    composing, before the stack runs out) and documents whose aliases expand them to more than
    ``MAX_VALUES`` values or ``MAX_DEPTH`` levels, or into themselves (checked on the composed
    node graph, where an alias is one shared node, before anything is constructed)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    f"values nested more than {MAX_DEPTH} levels deep: check the brackets",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set(), 1)
        return self.construct_document(node)


def _expanded_size(
    node: yaml.Node, known: dict[int, tuple[int, int]], path: set[int], depth: int
) -> tuple[int, int]:
    """How many values ``node`` stands for once every alias in it is expanded, and how many
    levels deep it then is; ``depth`` is its own level. Each node's size and height are computed
    once (linear in the file, however large the expansion) and checked on every path to it."""
    if id(node) in path:
        raise _Refused("an alias refers to the value that contains it", node.start_mark)
    if id(node) in known:
        size, height = known[id(node)]
    else:
        size, height = 1, 1
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            path.add(id(node))
            children = (
                node.value
                if isinstance(node, yaml.SequenceNode)
                else [n for pair in node.value for n in pair]
            )
            for child in children:
                child_size, child_height = _expanded_size(child, known, path, depth + 1)
                size += child_size
                height = max(height, child_height + 1)
                if size > MAX_VALUES:
                    raise _Refused(
                        f"aliases expand this value to more than {MAX_VALUES:,} values; a "
                        "configuration is never that large: write the repeated parts out or use "
                        "fewer aliases",
                        node.start_mark,
                    )
            path.discard(id(node))
        known[id(node)] = (size, height)
    if depth + height - 1 > MAX_DEPTH:
        raise _Refused(
            f"aliases expand this value to more than {MAX_DEPTH} levels of nesting",
            node.start_mark,
        )
    return size, height


def _yaml(text: str, origin: str) -> Any:
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader: plain data only
    except _Refused as e:
        at = e.mark
        raise ConfigError(
            [f"{origin}: line {at.line + 1}, column {at.column + 1}: {e.problem}"]
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{origin}: not valid YAML{where}: {e.problem}"]) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        char = e.character if isinstance(e.character, str) else chr(e.character)
        raise ConfigError(
            [
                f"{origin}: not valid YAML at line {line}, column {column}: the character "
                f"U+{ord(char):04X} is not allowed in YAML; remove it"
            ]
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{origin}: not valid YAML: {e}"]) from None
    except RecursionError:  # not expected past MAX_DEPTH; never a traceback if it happens
        raise ConfigError(
            [f"{origin}: nested too deeply to read: keep it under {MAX_DEPTH} levels"]
        ) from None


def parse(text: str, origin: str = "<config>") -> Config:
    """Validate YAML text; raise ConfigError with every problem found.

    No message shows a secret: values of secret fields are never shown, and every secret found
    in the file (cdc.secrets: passwords in DSNs and URLs included) is masked in every message.
    """
    if len(text) > MAX_BYTES:
        raise ConfigError(
            [
                f"{origin}: {len(text):,} characters is too large for a configuration file "
                f"(at most {MAX_BYTES:,}): is it the right file?"
            ]
        )
    data = _yaml(text, origin)
    if not isinstance(data, dict):
        raise ConfigError([f"{origin}: expected a mapping with a 'pipelines' list at the top"])
    problems: list[str] = []
    data = _substitute(data, (), problems)
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            problem = _format_error(dict(err), data)
            if problem not in problems:
                problems.append(problem)
    else:
        problems += _shared_objects(config) + _reads_its_own_log(config)
        if not problems:
            return config
    found = secrets.secrets_in(data)
    raise ConfigError([secrets.mask(p, found) for p in problems])


def _shared_objects(config: Config) -> list[str]:
    """Pipelines that would share a server object (a Postgres slot or publication, as a source
    plugin's config module ``claims`` them): each would drop or alter the other's."""
    owners: dict[str, tuple[int, str]] = {}
    problems: list[str] = []
    for i, p in enumerate(config.pipelines):
        module = plugins.config_module("source", getattr(p.source, "type", ""))
        claims = getattr(module, "claims", None)
        for field, what in claims(p.source, p.name) if claims else ():
            if what in owners:
                j, other = owners[what]
                problems.append(
                    f"pipelines[{i}].source.{field}: {what} is also used by pipeline "
                    f"{other!r} (pipelines[{j}]); pipelines sharing one drop or alter each "
                    f"other's: give {p.name!r} a source.{field} of its own"
                )
            else:
                owners[what] = (i, p.name)
    return problems


def _reads_its_own_log(config: Config) -> list[str]:
    """A pipeline whose log source is its own log sink would relay its own events forever."""
    problems = []
    for i, p in enumerate(config.pipelines):
        source: Any = p.source
        sink: Any = p.sink
        if source.type == "log" and sink.type == "log" and source.path == sink.path:
            problems.append(
                f"pipelines[{i}].source.path: {str(source.path)!r} is this pipeline's own "
                "sink.path: it would read back what it writes, forever; give it the path of "
                "the log another pipeline writes"
            )
    return problems


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError([f"cannot read config file {str(p)!r}: {e.strerror}"]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(
            [
                f"{p}: larger than {MAX_BYTES:,} bytes, too large for a configuration file: "
                "is it the right file?"
            ]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            [
                f"{p}: not UTF-8 at line {line}, column {column} (byte {e.start}: "
                f"0x{raw[e.start]:02x}): save the file as UTF-8"
            ]
        ) from None
    config = parse(text, str(p))
    if config.status_file is None:
        config.status_file = default_status_file(p)
    elif not config.status_file.is_absolute():
        config.status_file = (p.parent / config.status_file).resolve()
    # Relative paths (a log sink's, a log source's) are relative to the config file, not to
    # wherever the daemon starts.
    for pl in config.pipelines:
        for part in (pl.sink, pl.source):
            plugin: Any = part
            part_path = getattr(plugin, "path", None)
            if isinstance(part_path, Path) and not part_path.is_absolute():
                plugin.path = (p.parent / part_path).resolve()
    return config


def default_status_file(config_path: str | Path) -> Path:
    """``<dir>/<stem>.status.json`` next to the config file: what `cdc status` reads by default."""
    p = Path(config_path).resolve()
    return p.parent / f"{p.stem}.status.json"
