"""The snapshot's chunk readers: a table's rows in primary-key chunks, converted, with their event
ids, read one of two ways that give the same rows.

- **python** (``Reader(..., native=False)``), the reference: PyMySQL's buffered cursor parses
  each row (its length-coded strings and per-type converters), then the table version's
  ``from_select`` converters convert it.
- **native** (``cdc._native.SelectDecoder``, native/src/select.rs): the query is sent unbuffered,
  PyMySQL reads the column definitions, and the compiled decoder reads the row packets in bulk
  off the connection's buffered reader, straight to the converted values, by a plan made once
  per table version from its column types and the result's column definitions (``plan``).
  Contract: the very rows the reference gives (equal values of the same types); a value it does
  not take exactly is handed, with its row, to the reference's conversion, which returns the row
  or raises the reference's error. A table with a column the plan does not cover falls back to
  the reference, counted (``cdc_native_fallbacks_total{path="mysql_select_decoder"}``) and
  logged once.

The path is chosen once per process (``cdc._native_avro.choose``): native when the extension has
a ``SelectDecoder``, unless ``CDC_NATIVE=0``; ``describe()`` says which and why; ``explain``
prints a plan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pymysql
from pymysql.constants import CLIENT, COMMAND, FIELD_TYPE

from cdc import _native_avro
from cdc.errors import SourceError
from cdc.model import snapshot_event_id
from cdc.sources.mysql._schema import TableVersion
from cdc.sources.mysql._types import TEXT_KINDS, ColumnType, mapping

log = logging.getLogger(__name__)

# (rows, ids, last row as PyMySQL gives it, more rows left): see ``Reader.chunk``
Chunk = tuple[list[tuple[Any, ...]], list[str | None], tuple[Any, ...] | None, bool]

# Operations of the compiled decoder, numbered as in native/src/select.rs.
(INT, UINT64_DECIMAL, DECIMAL, FLOAT, BIT1, BITS, TEXT, BYTES) = range(8)
(DATE, DATETIME_MILLIS, DATETIME_MICROS, TIMESTAMP, TIME) = range(8, 13)
OP_NAMES = {v: k for k, v in dict(globals()).items() if k.isupper() and isinstance(v, int)}

_INTS = {"tinyint", "smallint", "mediumint", "int", "bigint"}
_INT_CODES = {
    FIELD_TYPE.TINY,
    FIELD_TYPE.SHORT,
    FIELD_TYPE.INT24,
    FIELD_TYPE.LONG,
    FIELD_TYPE.LONGLONG,
}
# the result column types PyMySQL gives as text (str) or, in the binary character set, as bytes
_TEXT_CODES = {
    FIELD_TYPE.BLOB,
    FIELD_TYPE.LONG_BLOB,
    FIELD_TYPE.MEDIUM_BLOB,
    FIELD_TYPE.TINY_BLOB,
    FIELD_TYPE.STRING,
    FIELD_TYPE.VAR_STRING,
    FIELD_TYPE.VARCHAR,
    FIELD_TYPE.GEOMETRY,
}
_BINARY_CHARSET = 63

NATIVE, PYTHON = "native", "python"
PATH, REASON = _native_avro.choose("SelectDecoder")


def describe() -> str:
    """One line for the log: the snapshot's row reader and why."""
    return f"mysql snapshot rows: {PATH} ({REASON})"


class _Fallbacks:
    """Tables the native path left to the reference (a column its plan does not cover)."""

    count = 0
    logged = False
    logged_choice = False


def log_choice() -> None:
    """Log ``describe()`` once per process (the first snapshot)."""
    if not _Fallbacks.logged_choice:
        _Fallbacks.logged_choice = True
        log.info("%s", describe())


def native_fallbacks() -> int:
    """How many tables were read by the reference while the native path was on."""
    return _Fallbacks.count


_native_avro.count_fallbacks("mysql_select_decoder", native_fallbacks)  # the metric's


def column_op(t: ColumnType, field: Any) -> tuple[int, int] | str:
    """The compiled decoder's ``(op, a)`` for a column of type ``t`` whose result column
    definition is ``field`` (PyMySQL's ``FieldDescriptorPacket``), or why it has none: the
    result's type decides what PyMySQL gives, the column's type what ``from_select`` makes of
    it, and the op must give both in one step."""
    code, binary, k = field.type_code, field.charsetnr == _BINARY_CHARSET, t.kind
    if k in _INTS and code in _INT_CODES:
        return (UINT64_DECIMAL if k == "bigint" and t.unsigned else INT), 0
    if k == "year" and code == FIELD_TYPE.YEAR:
        return INT, 0
    if k == "decimal" and code == FIELD_TYPE.NEWDECIMAL:
        return DECIMAL, t.scale
    if k in ("float", "double") and code in (FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE):
        return FLOAT, 0
    if k == "bit" and code == FIELD_TYPE.BIT and binary:
        return (BIT1, 0) if t.length == 1 else (BITS, (t.length + 7) // 8)
    if k in TEXT_KINDS | {"enum", "set", "json"} and (
        code == FIELD_TYPE.JSON or (code in _TEXT_CODES and not binary)
    ):
        return TEXT, 0
    if k in ("binary", "varbinary", "blob", "geometry") and code in _TEXT_CODES and binary:
        return BYTES, 0
    if k == "date" and code in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return DATE, 0
    if k == "datetime" and code == FIELD_TYPE.DATETIME:
        return (DATETIME_MILLIS if t.fsp <= 3 else DATETIME_MICROS), t.fsp
    if k == "timestamp" and code == FIELD_TYPE.TIMESTAMP:
        return TIMESTAMP, t.fsp
    if k == "time" and code == FIELD_TYPE.TIME:
        return TIME, t.fsp
    return f"{k} (result type {code}, charset {field.charsetnr})"


def plan(version: TableVersion, fields: Sequence[Any]) -> list[tuple[Any, ...]] | str:
    """The compiled decoder's columns ``(op, a, required, adjust, fallback)`` for ``version``
    read with the result columns ``fields``, or why there is none."""
    if len(fields) != len(version.types):
        return f"{len(fields)} result columns for {len(version.types)}"
    out: list[tuple[Any, ...]] = []
    for col, (t, required), field in zip(
        version.schema.columns, version.types, fields, strict=True
    ):
        op = column_op(t, field)
        if isinstance(op, str):
            return f"column {col.name} is {op}"
        out.append((op[0], op[1], required, version.adjust_years, mapping(t).fallback))
    return out


def explain(columns: Sequence[tuple[Any, ...]]) -> str:
    """A plan, one column a line: the operation, its parameter, NOT NULL, the zero date's value."""
    return "\n".join(
        f"{i}: {OP_NAMES.get(op, op)}({a}){' not null' if required else ''}"
        f"{' adjusted' if adjust else ''} fallback={fallback!r}"
        for i, (op, a, required, adjust, fallback) in enumerate(columns)
    )


def resumable_key(version: TableVersion) -> Callable[[tuple[Any, ...]], list[Any] | None]:
    """``key(row)``: a converted row's primary key as JSON holds it and a resumed snapshot's
    query takes it back (ints and strings), or None (no key, or a key column of another type:
    the table is then read again from its start)."""
    schema = version.schema
    parts: list[tuple[int, bool]] = []  # (index, a Decimal to make an int of)
    for i in schema.key:
        t = version.types[i][0]
        if (t.kind in _INTS and not (t.kind == "bigint" and t.unsigned)) or t.kind == "year":
            parts.append((i, False))
        elif t.kind == "bigint":
            parts.append((i, True))
        elif t.kind in TEXT_KINDS | {"enum", "set"}:
            parts.append((i, False))
        else:
            return lambda row: None
    if not parts:
        return lambda row: None
    if len(parts) == 1 and not parts[0][1]:
        one = parts[0][0]
        return lambda row: [row[one]]
    return lambda row: [int(row[i]) if dec else row[i] for i, dec in parts]


class Reader:
    """One table's rows at the snapshot's consistent read, converted: ``chunk`` reads one
    query's result. The path is fixed at the first chunk (``native``: try the compiled one)."""

    def __init__(self, version: TableVersion, scope: str, here_id: str, native: bool) -> None:
        self.version = version
        schema = version.schema
        self.scope = scope
        self.name = schema.qualified
        self.here_id = here_id  # names a keyless table's rows by their place: file:pos
        self.native = native
        self.decoder: Any = None  # the compiled decoder, once planned
        self.plan: list[tuple[Any, ...]] = []  # its columns (``explain`` prints them)
        self._pymysql: list[tuple[str | None, Any]] = []  # PyMySQL's (encoding, converter)
        self._result: Any = None  # the result being read
        self.generic_rows = 0  # rows the compiled decoder handed to the reference's conversion
        convs = [(i, conv) for i, conv in enumerate(version.from_select) if conv is not None]
        width = len(version.from_select)

        def convert(raw: Sequence[Any]) -> tuple[Any, ...]:
            """The reference conversion of a row as PyMySQL gives it."""
            try:
                if len(raw) != width:
                    raise ValueError(f"{len(raw)} values for {width} columns")
                row = list(raw)
                for i, conv in convs:
                    v = row[i]
                    if v is not None:
                        row[i] = conv(v)
                return tuple(row)
            except Exception as e:
                key = [raw[i] for i in schema.key] if len(raw) == width else []
                where = f"the snapshot (row with key {key!r})" if key else "the snapshot"
                failure = version.conversion_failure(list(raw), False, where)
                raise SourceError(failure, retryable=False) from e

        self.convert = convert

    def pymysql_row(self, fields: Sequence[bytes | None]) -> tuple[Any, ...]:
        """A row's field bytes as PyMySQL's ``_read_row_from_packet`` makes them."""
        row = []
        for data, (encoding, converter) in zip(fields, self._pymysql, strict=True):
            v: Any = data
            if v is not None:
                if encoding is not None:
                    v = v.decode(encoding)
                if converter is not None:
                    v = converter(v)
            row.append(v)
        return tuple(row)

    def _generic(self, fields: list[bytes | None]) -> tuple[Any, ...]:
        self.generic_rows += 1
        return self.convert(self.pymysql_row(fields))

    def _plan(self, result: Any, client_flag: int) -> None:
        """Make the compiled decoder from the first result's column definitions, or fall back."""
        self.native = False
        columns = plan(self.version, result.fields)
        if client_flag & CLIENT.DEPRECATE_EOF:  # the decoder knows results that end with EOF
            columns = "the connection asked for results that end with OK packets"
        schema = self.version.schema
        one = schema.key[0] if len(schema.key) == 1 else None
        native = _native_avro._native
        assert native is not None
        if not isinstance(columns, str):
            id_key = one if one is not None and columns[one][0] == INT else None
            try:
                self.decoder = native.SelectDecoder(
                    columns, id_key, f"s:{self.scope}:{self.name}:", self._generic
                )
            except native.Unsupported as e:  # parameters out of its range: the reference reads
                columns = f"the compiled decoder refused its plan: {e}"
        if isinstance(columns, str):
            _Fallbacks.count += 1
            if not _Fallbacks.logged:
                _Fallbacks.logged = True
                log.info(
                    "snapshot rows of %s go to the python reader: %s (each such table is "
                    "counted, this one logged)",
                    self.name,
                    columns,
                )
            return
        self.plan = columns
        self.native = True

    def ids(self, rows: list[tuple[Any, ...]], ids: list[str | None], ordinal: int) -> list[str]:
        """``ids`` with each None replaced by the row's event id: unique in the snapshot and
        the same when a row is read again after a resume: from the primary key; without one,
        from the row's place in its table (``ordinal``: the first row's, from 1) at this
        attempt's binlog position (an unchanged binlog position means unchanged rows, read in
        the same clustered-index order; a changed one gives new ids, so no distinct row takes
        an id a de-duplicating sink has seen)."""
        key = self.version.schema.key
        if None not in ids:
            return ids  # type: ignore[return-value]
        scope, name = self.scope, self.name
        out: list[str] = []
        for j, (row, eid) in enumerate(zip(rows, ids, strict=True)):
            if eid is None:
                if len(key) == 1 and type(k := row[key[0]]) is int:
                    eid = f"s:{scope}:{name}:{k}"  # snapshot_event_id's plain form of it
                elif key:
                    eid = snapshot_event_id(scope, name, [row[i] for i in key])
                else:
                    eid = f"s:{scope}:{name}:@{self.here_id}:{ordinal + j}"
            out.append(eid)
        return out

    @staticmethod
    def send(conn: pymysql.Connection[Any], sql: str) -> None:
        """Send the query ``sql``, whose result the next ``chunk`` reads: the server runs it
        and sends its rows meanwhile (PyMySQL's ``query`` in two halves)."""
        conn._execute_command(COMMAND.COM_QUERY, sql)

    def chunk(self, conn: pymysql.Connection[Any], sql: str | None, limit: int = 0) -> Chunk:
        """The first rows of ``sql``'s result (None: of the query ``send`` sent), all of them or
        the first ``limit`` (then ``more`` reads on): ``(rows, ids, last, more)``, ``ids`` None
        where ``ids`` names the row, ``last`` the last row as PyMySQL gives it (None: no row),
        ``more`` whether rows are left. Both paths read the result unbuffered, as PyMySQL's
        SSCursor does (its rows are the buffered cursor's)."""
        if sql is not None:
            self.send(conn, sql)
        conn._read_query_result(unbuffered=True)
        self._result = result = conn._result
        if not self._pymysql:
            self._pymysql = list(result.converters)
            if self.native:
                self._plan(result, conn.client_flag)
        return self.more(conn, limit)

    def more(self, conn: pymysql.Connection[Any], limit: int = 0) -> Chunk:
        """The next rows of the result ``chunk`` began to read (see there)."""
        result = self._result
        if self.decoder is None:
            raws: list[tuple[Any, ...]] = []
            while limit == 0 or len(raws) < limit:
                raw = result._read_rowdata_packet_unbuffered()
                if raw is None:
                    break
                raws.append(raw)
            convert = self.convert
            last = raws[-1] if raws else None
            return [convert(r) for r in raws], [None] * len(raws), last, result.unbuffered_active
        try:
            rows, ids, last, seq, end = self.decoder.read(conn._rfile, conn._next_seq_id, limit)
        except ValueError as e:
            result.unbuffered_active = False
            conn._force_close()
            raise SourceError(
                f"snapshot of {self.name}: cannot read the result of its query ({e}): the "
                "connection is closed; the pipeline restarts and the snapshot resumes after the "
                "last key written"
            ) from e
        except BaseException:
            # the connection is somewhere inside the result: unusable (the snapshot restarts)
            result.unbuffered_active = False
            conn._force_close()
            raise
        conn._next_seq_id = seq
        if end is not True:
            result.unbuffered_active = False
            result.connection = None
            if end is not None:
                pymysql.err.raise_mysql_exception(end)
        return rows, ids, None if last is None else self.pymysql_row(last), end is True
