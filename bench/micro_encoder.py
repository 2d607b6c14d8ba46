"""Microbenchmark of the Avro encoder: us/record, fastavro per record vs the specialised writers.

The record is W1's ``orders`` row (id bigint, customer_id int, amount numeric(12,2), status text,
note varchar(64), created_at timestamptz) in the Postgres source's envelope with a transaction
block (``--per-tx`` rows per transaction, default 10, one commit time each), as ``Encoder.encode``
writes it (key and value, Confluent framing), plus each transaction's BEGIN and END records on the
transaction topic (on by default), their time spread over the transaction's rows. Updates carry a
before image too (REPLICA IDENTITY FULL), the heaviest case.

    PYTHONPATH=. python bench/micro_encoder.py [--rows 20000] [--repeat 5]

Prints the best of ``--repeat`` runs per encoder and operation, in CPU time of this thread (less
disturbed than wall time on a shared machine, though still moved by its load: compare the two
columns of one run), after checking that both encoders give the same bytes. No timing is asserted
anywhere.
"""

from __future__ import annotations

import argparse
import time
import types
from decimal import Decimal
from typing import Any

import cdc
from cdc import avro
from cdc.avro import Encoder
from cdc.model import ChangeBatch, Column, RowChange, TableSchema, TxBoundary
from cdc.sources.postgres._source import SOURCE_SCHEMA

ORDERS = TableSchema(
    topic="w1.public.orders",
    namespace="public",
    table="orders",
    columns=(
        Column("id", avro.INT64, False, "bigint"),
        Column("customer_id", avro.INT32, True, "integer"),
        Column("amount", avro.decimal(12, 2), True, "numeric(12,2)"),
        Column("status", avro.STRING, True, "text"),
        Column("note", avro.STRING, True, "character varying(64)"),
        Column("created_at", avro.ZONED_TIMESTAMP, True, "timestamp with time zone"),
    ),
    key=(0,),
)


class _Registry:
    def register(self, subject: str, schema: dict[str, Any]) -> int:
        return 1


def _source(i: int, ts_us: int) -> dict[str, Any]:
    lsn = 0x16B374D848 + i * 120
    return {
        "version": cdc.__version__,
        "connector": "postgresql",
        "name": "w1",
        "ts_ms": ts_us // 1000,
        "snapshot": "false",
        "db": "bench",
        "sequence": f'["{lsn - 1000}","{lsn}"]',
        "ts_us": ts_us,
        "ts_ns": ts_us * 1000,
        "schema": "public",
        "table": "orders",
        "txId": 7_000_000 + i // 10,
        "lsn": lsn,
        "xmin": None,
    }


def _row(i: int) -> tuple[Any, ...]:
    return (
        1_000_000 + i,
        10_000 + i % 5000,
        Decimal(f"{i % 100000}.{i % 100:02d}"),
        ("new", "paid", "shipped")[i % 3],
        f"order note {i}",
        f"2026-11-26T22:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000000:06d}Z",
    )


def batch(op: str, rows: int, per_tx: int) -> ChangeBatch:
    """``rows`` row changes, ``per_tx`` to a transaction, with its BEGIN and END events."""
    ts_us = 1_795_000_000_000_000
    events: list[Any] = []
    for i in range(rows):
        txid = str(7_000_000 + i // per_tx)
        if i % per_tx == 0:
            events.append(TxBoundary("BEGIN", txid, ts_us // 1000, f"b{i}"))
        after = _row(i)
        before = None
        if op == "u":
            before = (*after[:3], "new", *after[4:])
        events.append(
            RowChange(
                ORDERS,
                "c" if op == "c" else "u",
                before,
                after,
                _source(i, ts_us + i // per_tx * 1000),  # one commit time per transaction
                ts_us // 1000,
                f"e{i}",
                (txid, i % per_tx + 1, i % per_tx + 1),
            )
        )
        if i % per_tx == per_tx - 1 or i == rows - 1:
            n = i % per_tx + 1
            events.append(TxBoundary("END", txid, ts_us // 1000, f"e{i}", n, {ORDERS.topic: n}))
    return ChangeBatch(events, {"lsn": 1})


def encoder(specialise: bool) -> Encoder:
    return Encoder(_Registry(), SOURCE_SCHEMA, "w1.transaction", False, specialise=specialise)


def measure(specialise: bool, b: ChangeBatch, repeat: int) -> float:
    """Best time per row change (transaction events included in the time, not in the count)."""
    enc = encoder(specialise)
    enc.encode(ChangeBatch(b.events[:10], {}))  # compile and register outside the timing
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        enc.encode(b)
        best = min(best, time.thread_time() - t0)
    rows = sum(isinstance(ev, RowChange) for ev in b.events)
    return best / rows * 1e6


def same_output(b: ChangeBatch) -> bool:
    """Both encoders give the same records (the envelope's processing time held still)."""
    real = avro.time
    avro.time = types.SimpleNamespace(time_ns=lambda: 1_795_000_000_123_456_789)  # type: ignore[assignment]
    try:
        old = encoder(False).encode(b)
        new = encoder(True).encode(b)
    finally:
        avro.time = real
    return [(r.key, r.value) for r in old.records] == [(r.key, r.value) for r in new.records]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--per-tx", type=int, default=10, help="row changes per transaction")
    args = ap.parse_args()
    print(f"{args.per_tx} row changes per transaction, BEGIN/END events on (the default)")
    print(f"{'op':<8}{'fastavro us/row':>18}{'specialised us/row':>21}{'speed-up':>10}")
    for op, label in (("c", "insert"), ("u", "update")):
        b = batch(op, args.rows, args.per_tx)
        if not same_output(ChangeBatch(b.events[:1000], b.position)):
            raise SystemExit(f"{label}: the encoders' outputs differ")
        old = measure(False, b, args.repeat)
        new = measure(True, b, args.repeat)
        print(f"{label:<8}{old:>18.2f}{new:>21.2f}{old / new:>9.1f}x")


if __name__ == "__main__":
    main()
