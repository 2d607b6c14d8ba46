"""The wire: the streaming replication protocol's copy messages and pgoutput's logical messages.

Pure decoding, no I/O: the glue (``_source``) reads copy data from the replication connection
and dispatches on the named message types below. References: PostgreSQL's "Streaming
Replication Protocol" (XLogData, Primary keepalive, Standby status update) and "Logical
Replication Message Formats" (pgoutput, protocol version 1). Tuple data is decoded by
``_tuples``' decoders, which start at the offsets these messages leave.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 (the protocol's epoch) in µs since 1970-01-01

# --- copy messages of the replication stream (first byte of each CopyData) ---------------
XLOG_DATA = ord("w")  # a piece of WAL: header, then one pgoutput message
KEEPALIVE = ord("k")  # the server's keepalive, maybe asking for a reply
STATUS_UPDATE = b"r"  # ours: the standby status update (written, flushed, applied)

# --- pgoutput messages (first byte of an XLogData's payload) ------------------------------
BEGIN = ord("B")
COMMIT = ord("C")
ORIGIN = ord("O")
RELATION = ord("R")
TYPE = ord("Y")
INSERT = ord("I")
UPDATE = ord("U")
DELETE = ord("D")
TRUNCATE = ord("T")
MESSAGE = ord("M")  # a logical decoding message (pg_logical_emit_message), with messages 'true'

# --- what precedes a tuple in an update or delete -----------------------------------------
OLD_KEY = ord("K")  # the replica identity's columns only (the key)
OLD_ROW = ord("O")  # the whole old row (REPLICA IDENTITY FULL)
NEW_ROW = ord("N")  # the new row

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_COLUMN = struct.Struct(">Ii")  # type oid, type modifier
_XLOG = struct.Struct(">QQq")  # 'w': data start, wal end, send time
_KEEPALIVE = struct.Struct(">Qq?")  # 'k': wal end, send time, reply requested
_BEGIN = struct.Struct(">QqI")  # final lsn, commit time, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit lsn, end lsn, commit time
_STATUS = struct.Struct(">cQQQqB")
_MESSAGE = struct.Struct(">BQ")  # 'M': flags (1: transactional), the message's LSN

XLOG_HEADER = 1 + _XLOG.size  # an XLogData's payload (the pgoutput message) starts here
MARKER = 5  # an INSERT's, UPDATE's or DELETE's first tuple marker: after the tag and relid
TUPLE = MARKER + 1  # the tuple data after that marker


def xlog_start(data: bytes) -> int:
    """The WAL position of an XLogData message (the change's LSN)."""
    return int(_XLOG.unpack_from(data, 1)[0])


def keepalive(data: bytes) -> tuple[int, bool]:
    """A keepalive's WAL end and whether the server asks for a reply now."""
    end, _, reply = _KEEPALIVE.unpack_from(data, 1)
    return end, reply


def status_update(lsn: int, now_us: int) -> bytes:
    """Our standby status update: written, flushed and applied up to ``lsn``; ``now_us`` in
    µs since 1970 (the protocol counts from 2000); no reply requested."""
    return _STATUS.pack(STATUS_UPDATE, lsn, lsn, lsn, now_us - PG_EPOCH_US, 0)


def begin(buf: bytes) -> tuple[int, int, int]:
    """A BEGIN's commit LSN (the transaction's final LSN), commit time in µs since 1970, xid."""
    final_lsn, commit_ts, xid = _BEGIN.unpack_from(buf, 1)
    return final_lsn, commit_ts + PG_EPOCH_US, xid


def commit(buf: bytes) -> tuple[int, int]:
    """A COMMIT's commit LSN and end LSN (where the next transaction may start)."""
    _, commit_lsn, end_lsn, _ = _COMMIT.unpack_from(buf, 1)
    return commit_lsn, end_lsn


def relid(buf: bytes, at: int = 1) -> int:
    """The relation id of an INSERT, UPDATE or DELETE (or a TRUNCATE's ``at``)."""
    return int(_U32.unpack_from(buf, at)[0])


def truncated(buf: bytes) -> list[int]:
    """The relation ids a TRUNCATE names."""
    (n,) = _U32.unpack_from(buf, 1)
    return [relid(buf, 6 + 4 * k) for k in range(n)]


@dataclass(frozen=True, slots=True)
class RelationMessage:
    """A RELATION message: the relation's id, name and columns (name, type oid, typmod)."""

    relid: int
    namespace: str
    name: str
    columns: list[tuple[str, int, int]]


def relation(buf: bytes) -> RelationMessage:
    """Decode a RELATION message."""
    rel = relid(buf)
    ns, i = _cstring(buf, 5)
    name, i = _cstring(buf, i)
    i += 1  # replica identity setting
    (ncols,) = _U16.unpack_from(buf, i)
    i += 2
    cols: list[tuple[str, int, int]] = []
    for _ in range(ncols):
        i += 1  # flags: part of the replica identity (not the primary key, under FULL)
        cname, i = _cstring(buf, i)
        type_oid, typmod = _COLUMN.unpack_from(buf, i)
        i += 8
        cols.append((cname, type_oid, typmod))
    return RelationMessage(rel, ns, name, cols)


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """A MESSAGE: what ``pg_logical_emit_message(transactional, prefix, content)`` wrote;
    ``lsn`` is the END of its WAL record (the server reports that, not its start). A
    transactional one comes inside its transaction (when it commits), a non-transactional one
    between transactions, where the server decoded it."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


def message(buf: bytes) -> LogicalMessage:
    """Decode a MESSAGE (protocol version 1: no xid, as in-progress transactions are not
    streamed)."""
    flags, lsn = _MESSAGE.unpack_from(buf, 1)
    prefix, i = _cstring(buf, 1 + _MESSAGE.size)
    (n,) = _U32.unpack_from(buf, i)
    i += 4
    return LogicalMessage(bool(flags & 1), lsn, prefix, bytes(buf[i : i + n]))


def _cstring(buf: bytes, i: int) -> tuple[str, int]:
    end = buf.index(b"\x00", i)
    return buf[i:end].decode(), end + 1
