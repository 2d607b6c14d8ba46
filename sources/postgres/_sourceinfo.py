"""The ``source`` block of a Postgres event (Debezium's io.debezium.connector.postgresql.Source),
shared by streamed and snapshot events."""

from __future__ import annotations

from typing import Any

import cdc
from cdc import avro
from cdc.model import TableSchema

SOURCE_SCHEMA = avro.source_schema(
    "io.debezium.connector.postgresql",
    [
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "txId", "type": ["null", "long"], "default": None},
        {"name": "lsn", "type": ["null", "long"], "default": None},
        {"name": "xmin", "type": ["null", "long"], "default": None},
    ],
)


def source_block(
    prefix: str,
    db: str,
    table: TableSchema,
    ts_us: int,
    xid: int | None,
    lsn: int,
    last_commit_lsn: int,
    snapshot: str = "false",
) -> dict[str, Any]:
    """The block of one event: ``prefix`` the topic prefix (Debezium's ``name``), ``ts_us`` the
    commit time (the read time in a snapshot), ``snapshot`` Debezium's marker ("false" when
    streamed: then ``sequence`` is ``[last commit lsn, lsn]``)."""
    return {
        "version": cdc.__version__,
        "connector": "postgresql",
        "name": prefix,
        "ts_ms": ts_us // 1000,
        "snapshot": snapshot,
        "db": db,
        # Debezium's ["<last commit lsn>","<lsn>"], as json.dumps with compact separators
        # writes it (formatted by hand: json.dumps per row was 13 % of a streaming profile).
        "sequence": None
        if snapshot != "false"
        else f'["{last_commit_lsn}","{lsn}"]'
        if last_commit_lsn
        else f'[null,"{lsn}"]',
        "ts_us": ts_us,
        "ts_ns": ts_us * 1000,
        "schema": table.namespace,
        "table": table.table,
        "txId": xid,
        "lsn": lsn,
        "xmin": None,
    }
