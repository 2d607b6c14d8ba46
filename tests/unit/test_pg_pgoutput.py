"""The pgoutput and replication-protocol decoder (sources/postgres/_pgoutput.py) on hand-built
messages laid out as PostgreSQL's "Logical Replication Message Formats" documents them."""

from __future__ import annotations

import struct

from cdc.sources.postgres import _pgoutput as pgo


def test_message_types_are_the_documented_bytes() -> None:
    assert (pgo.BEGIN, pgo.COMMIT, pgo.RELATION, pgo.INSERT) == (66, 67, 82, 73)
    assert (pgo.UPDATE, pgo.DELETE, pgo.TRUNCATE, pgo.ORIGIN) == (85, 68, 84, 79)
    assert (pgo.TYPE, pgo.MESSAGE, pgo.XLOG_DATA, pgo.KEEPALIVE) == (89, 77, 119, 107)
    assert (pgo.OLD_KEY, pgo.OLD_ROW, pgo.NEW_ROW) == (75, 79, 78)


def test_begin_commit_and_xlog_header() -> None:
    begin = b"B" + struct.pack(">QqI", 0x1_0000_0010, 5_000_000, 742)
    assert pgo.begin(begin) == (0x1_0000_0010, 5_000_000 + pgo.PG_EPOCH_US, 742)
    commit = b"C" + struct.pack(">BQQq", 0, 0x1_0000_0010, 0x1_0000_0040, 5_000_000)
    assert pgo.commit(commit) == (0x1_0000_0010, 0x1_0000_0040)
    data = b"w" + struct.pack(">QQq", 0xABC, 0xDEF, 0) + begin
    assert data[0] == pgo.XLOG_DATA and pgo.xlog_start(data) == 0xABC
    assert data[pgo.XLOG_HEADER :] == begin


def test_relation_insert_and_truncate() -> None:
    rel = (
        b"R"
        + struct.pack(">I", 16384)
        + b"public\x00my table\x00"
        + b"d"
        + struct.pack(">H", 2)
        + b"\x01id\x00"
        + struct.pack(">Ii", 23, -1)
        + b"\x00n\x00"
        + struct.pack(">Ii", 1700, 0x50006)
    )
    msg = pgo.relation(rel)
    assert msg == pgo.RelationMessage(
        16384, "public", "my table", [("id", 23, -1), ("n", 1700, 0x50006)]
    )
    insert = b"I" + struct.pack(">I", 16384) + b"N" + struct.pack(">H", 0)
    assert pgo.relid(insert) == 16384 and insert[pgo.MARKER] == pgo.NEW_ROW
    assert insert[pgo.TUPLE :] == struct.pack(">H", 0)
    truncate = b"T" + struct.pack(">IB", 2, 0) + struct.pack(">II", 7, 9)
    assert pgo.truncated(truncate) == [7, 9]


def test_keepalive_and_status_update() -> None:
    ka = b"k" + struct.pack(">Qq?", 0x5000, 0, True)
    assert pgo.keepalive(ka) == (0x5000, True)
    status = pgo.status_update(0x5000, pgo.PG_EPOCH_US + 7)
    assert status == b"r" + struct.pack(">QQQqB", 0x5000, 0x5000, 0x5000, 7, 0)


def test_logical_message() -> None:
    content = b'{"type": "snapshot-window-open"}'
    buf = b"M" + struct.pack(">BQ", 0, 0x2_0000_0010) + b"cdc.x\x00"
    buf += struct.pack(">I", len(content)) + content + b"trailing"
    assert pgo.message(buf) == pgo.LogicalMessage(False, 0x2_0000_0010, "cdc.x", content)
    tx = b"M" + struct.pack(">BQ", 1, 7) + b"p\x00" + struct.pack(">I", 0)
    assert pgo.message(tx) == pgo.LogicalMessage(True, 7, "p", b"")
