"""The log's public consumer API (cdc.sinks.log.open_log): decoded events from an offset, a time
or a named consumer, and the documented example in docs/log.md, run as a user would run it."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from cdc import avro
from cdc.model import ChangeBatch, Column, RowChange, TableSchema, TxBoundary
from cdc.sinks.log import LogSink, LogSinkConfig, open_log

ROOT = Path(__file__).resolve().parents[2]
TABLE = TableSchema(
    topic="shop.public.orders",
    namespace="public",
    table="orders",
    columns=(
        Column("id", "int", False, "integer"),
        Column("amount", avro.decimal(12, 2), True, "numeric(12,2)"),
    ),
    key=(0,),
)
SOURCE = {
    "type": "record",
    "name": "Source",
    "namespace": "test",
    "fields": [{"name": "ts_us", "type": "long"}],
}


def _write(path: Path) -> None:
    """Two transactions into a real log: BEGIN, 2 creates, END; BEGIN, update, delete, END."""
    sink = LogSink(LogSinkConfig(type="log", path=path, tombstones=True))
    enc = avro.Encoder(sink.registry, SOURCE, "shop.transaction", tombstones=True)
    src = {"ts_us": 5}
    for n, events in enumerate(
        [
            [
                TxBoundary("BEGIN", "7:100", 1000, "100:0"),
                RowChange(
                    TABLE, "c", None, (1, Decimal("1.50")), src, 1000, "100:1", ("7:100", 1, 1)
                ),
                RowChange(
                    TABLE, "c", None, (2, Decimal("2.00")), src, 1000, "100:2", ("7:100", 2, 2)
                ),
                TxBoundary("END", "7:100", 1000, "100:3", 2, {"public.orders": 2}),
            ],
            [
                TxBoundary("BEGIN", "8:200", 2000, "200:0"),
                RowChange(
                    TABLE, "u", None, (1, Decimal("9.99")), src, 2000, "200:1", ("8:200", 1, 1)
                ),
                RowChange(
                    TABLE, "d", (2, Decimal("2.00")), None, src, 2000, "200:2", ("8:200", 2, 2)
                ),
                TxBoundary("END", "8:200", 2000, "200:3", 2, {"public.orders": 2}),
            ],
        ]
    ):
        sink.write(enc.encode(ChangeBatch(events, {"lsn": n + 1})))
    sink.close()


def test_events_are_decoded_with_offsets_ops_and_transactions(tmp_path: Path) -> None:
    _write(tmp_path)
    log = open_log(tmp_path)
    evs = list(log.events())
    # 4 + 4 events and one tombstone after the delete
    assert [e.offset for e in evs] == list(range(9))
    assert [e.op for e in evs] == [None, "c", "c", None, None, "u", "d", None, None]
    assert evs[1].key == {"id": 1} and evs[1].value["after"] == {"id": 1, "amount": Decimal("1.50")}
    assert evs[1].transaction == {"id": "7:100", "total_order": 1, "data_collection_order": 1}
    assert evs[0].transaction == {"id": "7:100", "status": "BEGIN"}
    assert evs[7].value is None and evs[7].key == {"id": 2}  # the tombstone
    assert evs[1].timestamp_ms == 1000 and evs[5].timestamp_ms == 2000
    assert [e.offset for e in log.events(5)] == [5, 6, 7, 8]
    assert [e.offset for e in log.events(topic="shop.transaction")] == [0, 3, 4, 8]
    assert [e.offset for e in log.events("latest")] == []
    assert log.start_offset() == 0 and log.end_offset() == 9


def test_a_named_consumer_resumes_after_what_it_committed(tmp_path: Path) -> None:
    _write(tmp_path)
    log = open_log(tmp_path)
    with log.consumer("c") as c:
        assert c.committed is None
        got = []
        for ev in c.events(topic="shop.public.orders"):
            got.append(ev.offset)
            if ev.offset == 2:
                c.commit()  # offset 2 and the frame's END (3), which the filter passed over
                break
        assert got == [1, 2] and c.committed == 4
    with log.consumer("c") as c:
        assert [e.offset for e in c.events(topic="shop.public.orders")] == [5, 6, 7]
        c.commit()
        # past the last event of the last frame, what the filter passed over counts too
        assert c.committed == 9 and c.lag() == 0
    with log.consumer("c") as c:
        assert list(c.events()) == []


def test_the_documented_example_runs(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "log.md").read_text()
    section = doc.split("## Reading from Python: decoded events", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "docs/log.md lost its example"
    script = tmp_path / "example.py"
    script.write_text(code.group(1))
    _write(tmp_path / "log")
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "log")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "1 shop.public.orders c {'id': 1} {'id': 1, 'amount': Decimal('1.50')}"
    assert "billing got 6 d" in lines and lines[-1] == "billing lag 0"
