"""The built-in log under retention, with `cdc run` as a real process killed mid-load."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc._jsonout import AvroDecoder
from cdc.sinks.log import LogReader
from tests.conftest import wait_until
from tests.logtools import write_config

pytestmark = pytest.mark.integration

MiB = 1 << 20
TOPIC = "shop.public.load"


class Tail:
    """Follows the log as it is written, as a fast consumer would (row topic only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset: int | str = "earliest"
        self.keys: list[bytes] = []
        self._reader: LogReader | None = None

    def rows(self) -> int:
        if self._reader is None:
            if not self.path.is_dir():
                return 0
            self._reader = LogReader(self.path)
        for r in self._reader.records(self.offset):  # type: ignore[arg-type]
            self.offset = r.offset + 1
            if r.topic == TOPIC and r.value is not None and r.key is not None:
                self.keys.append(r.key)
        return len(self.keys)


def rows(path: Path, start: int | str = "earliest") -> list[tuple[int, int]]:
    """(offset, id) of the row events in the log from ``start``."""
    reader = LogReader(path)
    dec = AvroDecoder(reader.schemas.get)
    return [
        (r.offset, dec.decode(r.value)["after"]["id"])
        for r in reader.records(start, TOPIC)  # type: ignore[arg-type]
        if r.value is not None
    ]


def ids(path: Path, start: int | str = "earliest") -> list[int]:
    return [i for _, i in rows(path, start)]


def output(tmp_path: Path) -> str:
    """What every daemon of the test logged."""
    return "".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("daemon*.log")))


def _load(dsn: str, total: int, committed: list[int], gates: dict[int, threading.Event]) -> None:
    """Insert ``total`` rows in transactions of 1-5; at each gate, wait until the test opens it
    (so that each kill lands while the load is still going, however fast the pipeline is)."""
    with psycopg.connect(dsn) as c:
        i = 0
        while i < total:
            for at, gate in gates.items():
                if i >= at:
                    gate.wait(120)
            n = min(1 + i % 5, total - i)
            with c.cursor() as cur:
                cur.executemany(
                    "INSERT INTO load (id, payload) VALUES (%s, %s)",
                    [(i + k, f"row {i + k} " + "x" * 300) for k in range(n)],
                )
            c.commit()
            i += n
            committed.append(i)


def test_retention_under_load_and_kill_9(tmp_path: Path, pg_db: str, daemon: Any) -> None:
    total = 30_000
    max_bytes = 4 * MiB
    log = tmp_path / "log"
    slot = "s_" + pg_db.rsplit("dbname=", 1)[1]
    cfg = write_config(
        tmp_path / "cdc.yaml",
        f"""
pipelines:
  - name: shop
    source:
      type: postgres
      dsn: "{pg_db}"
      tables: [public.load]
      slot: {slot}
    sink:
      type: log
      path: {log}
      segment_bytes: {MiB}
      retention: {{max_bytes: 4MiB, max_age: 30d}}
    batch: {{max_events: 500, max_wait_ms: 20}}
""",
    )
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("CREATE TABLE load (id int PRIMARY KEY, payload text)")
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming")
    # A named consumer registered before the load: retention must keep all it has not committed.
    with LogReader(log).consumer("lagging") as c:
        c.commit(0)
    committed: list[int] = []
    killed = [threading.Event(), threading.Event()]
    gates = {12_000: killed[0], 24_000: killed[1]}
    w = threading.Thread(target=_load, args=(pg_db, total, committed, gates))
    w.start()
    tail = Tail(log)
    keep_from = -1
    try:
        wait_until(lambda: tail.rows() >= 8_000, 120, "8000 rows in the log")
        d.kill()
        assert committed[-1] < total, "killed while the load goes on"
        killed[0].set()
        d = daemon(cfg).start()
        wait_until(lambda: tail.rows() >= 14_000, 120, "14000 rows in the log")
        # the consumer processed up to row 10000: retention may now delete what is before it
        keep_from = next(offset for offset, i in rows(log, 0) if i == 10_000)
        with LogReader(log).consumer("lagging") as c:
            c.commit(keep_from)
        wait_until(lambda: tail.rows() >= 22_000, 120, "22000 rows in the log")
        d.kill()
        assert committed[-1] < total, "killed while the load goes on"
        killed[1].set()
        d = daemon(cfg).start()
    finally:
        for gate in killed:
            gate.set()
        w.join()
    assert committed[-1] == total
    wait_until(lambda: tail.rows() >= total, 180, "all rows in the log")
    d.terminate()

    # Seen as they were written, across both kills: every row exactly once, in commit order.
    dec = AvroDecoder(LogReader(log).schemas.get)
    seen = [dec.decode(k)["id"] for k in tail.keys]
    assert seen == list(range(total)), f"{len(seen) - len(set(seen))} duplicates"

    reader = LogReader(log)
    info = reader.info()
    start = info["start_offset"]
    assert start > 0 and info["segments"][0]["file"] != f"{0:020d}.seg", "old segments deleted"
    assert "retention deleted" in output(tmp_path)
    with pytest.raises(Exception, match=f"the log starts at offset {start} now"):
        next(reader.records(0))
    # What remains is a contiguous run of rows ending with the last one, none twice.
    left = ids(log)
    assert left == list(range(left[0], total)) and left[0] > 0
    # The lagging consumer lost nothing: it reads on from row 10000 to the end.
    assert start <= keep_from
    assert "retention keeps" in output(tmp_path) and f"lagging@{keep_from}" in output(tmp_path)
    with reader.consumer("lagging") as c:
        assert c.committed == keep_from
        assert ids(log, c.position()) == list(range(10_000, total))
        c.commit(reader.end_offset())
    # Caught up: the next open of the log brings it back under max_bytes.
    d = daemon(cfg).start()
    wait_until(lambda: "streaming from slot" in d.output(), 30, "daemon streaming again")
    d.terminate()
    sizes = [p.stat().st_size for p in log.glob("*.seg")]
    assert sum(sizes) <= max_bytes + MiB // 2, sizes
    assert LogReader(log).start_offset() > keep_from
