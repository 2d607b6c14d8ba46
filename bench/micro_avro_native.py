"""Microbenchmark of Avro envelope encoding: the "python" writers against the "native" ones.

Rows are W1's ``orders`` (id bigint, customer_id int, amount numeric(12,2), status text,
note varchar(64), created_at timestamptz) in the Postgres source's envelope, with a transaction
block, ten row changes per transaction (``bench/micro_encoder.py`` makes them). Two steps:

- ``writer``: the envelope writer alone, one call per row change, on the tuple the encoder passes
  (before, after, source, transaction, op, ts_ms, ts_us, ts_ns): ``cdc._avrofast``'s generated
  function against ``cdc._native.Writer.write`` (and ``write_many`` on the whole list);
- ``encoder``: ``Encoder.encode`` of the batch, as the pipeline calls it (key and value,
  Confluent framing, the transaction topic's BEGIN and END records), ``native=False`` against
  ``native=True``.

Inserts (no before image) and updates (REPLICA IDENTITY FULL: before and after, the heaviest).

    PYTHONPATH=. python bench/micro_avro_native.py [--rows 20000] [--repeat 7]

Prints the best of ``--repeat`` runs, in CPU time of this thread (less disturbed than wall time
on a shared machine, though still moved by its load: compare the columns of one run), as us per
row change and row changes per second, after checking that both paths give the same bytes. The
two paths are timed in turn within each repeat. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import time
import types
from collections.abc import Callable
from typing import Any

import fastavro

from bench.micro_encoder import ORDERS, _Registry, batch
from cdc import _avrofast, _native_avro, avro
from cdc.avro import Encoder, _specialise_envelope, envelope_schema
from cdc.model import ChangeBatch, RowChange
from cdc.sources.postgres._source import SOURCE_SCHEMA

NOW_US = 1_795_000_000_123_456


def envelopes(b: ChangeBatch) -> list[tuple[Any, ...]]:
    return [
        (ev.before, ev.after, ev.source, ev.tx, ev.op, NOW_US // 1000, NOW_US, NOW_US * 1000)
        for ev in b.events
        if isinstance(ev, RowChange)
    ]


def best_of(repeat: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best CPU seconds of each run, the runs interleaved within each repeat."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for name, run in runs.items():
            t0 = time.thread_time()
            run()
            best[name] = min(best[name], time.thread_time() - t0)
    return best


def encoder(native: bool) -> Encoder:
    return Encoder(_Registry(), SOURCE_SCHEMA, "w1.transaction", False, native=native)


def same_records(b: ChangeBatch) -> bool:
    real = avro.time
    avro.time = types.SimpleNamespace(time_ns=lambda: NOW_US * 1000)  # type: ignore[assignment]
    try:
        py, nat = encoder(False).encode(b), encoder(True).encode(b)
    finally:
        avro.time = real
    return [(r.key, r.value) for r in py.records] == [(r.key, r.value) for r in nat.records]


def line(label: str, step: str, n: int, py: float, nat: float, many: float | None) -> str:
    us_py, us_nat = py / n * 1e6, nat / n * 1e6
    cells = f"{us_py:>9.2f}{n / py:>11,.0f}{us_nat:>9.2f}{n / nat:>11,.0f}{py / nat:>9.1f}x"
    if many is not None:
        cells += f"{many / n * 1e6:>11.2f}{py / many:>7.1f}x"
    return f"{label:<8}{step:<9}{cells}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    if not _native_avro.available():
        raise SystemExit(f"cdc._native is not built ({_native_avro.IMPORT_ERROR})")
    parsed = fastavro.parse_schema(envelope_schema(ORDERS, SOURCE_SCHEMA), _write_hint=False)
    write_py = _specialise_envelope(parsed, native=False)
    write_nat = _specialise_envelope(parsed, native=True)
    assert write_py is not None and write_nat is not None
    writer = getattr(write_nat, "__self__", None)
    assert writer is not None and not isinstance(write_py, type(write_nat))
    head = f"{'':<17}{'python':>20}{'native':>20}"
    print(f"{head}{'':>10}{'native write_many':>18}")
    print(
        f"{'op':<8}{'step':<9}{'us/row':>9}{'rows/s':>11}{'us/row':>9}{'rows/s':>11}"
        f"{'ratio':>10}{'us/row':>11}{'ratio':>8}"
    )
    for op, label in (("c", "insert"), ("u", "update")):
        b = batch(op, args.rows, 10)
        datums = envelopes(b)
        if [write_py(d) for d in datums[:1000]] != [write_nat(d) for d in datums[:1000]]:
            raise SystemExit(f"{label}: the writers' outputs differ")
        if not same_records(ChangeBatch(b.events[:1000], b.position)):
            raise SystemExit(f"{label}: the encoders' outputs differ")
        n = len(datums)
        t = best_of(
            args.repeat,
            {
                "py": lambda: [write_py(d) for d in datums],  # noqa: B023
                "nat": lambda: [write_nat(d) for d in datums],  # noqa: B023
                "many": lambda: writer.write_many(datums),  # noqa: B023
            },
        )
        print(line(label, "writer", n, t["py"], t["nat"], t["many"]))
        enc_py, enc_nat = encoder(False), encoder(True)
        for e in (enc_py, enc_nat):
            e.encode(ChangeBatch(b.events[:20], {}))  # compile and register outside the timing
        t = best_of(
            args.repeat,
            {"py": lambda: enc_py.encode(b), "nat": lambda: enc_nat.encode(b)},  # noqa: B023
        )
        print(line(label, "encoder", n, t["py"], t["nat"], None))
    print(f"(python: cdc._avrofast; native: {_native_avro.REASON}; {_avrofast.__name__} reference)")


if __name__ == "__main__":
    main()
