"""``format: json`` on the NATS sink (Postgres -> JetStream), with a ``filter`` transform: each
message's data is a JsonConverter document, its key (header Cdc-Key) one too, and exactly the rows
the condition holds for arrive."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.integration.kafka.conftest import dbname
from tests.integration.nats.conftest import read_stream, stream_count

pytestmark = pytest.mark.integration


def test_nats_json_with_a_filter(
    pg_server: Any,
    pg_db: str,
    nats_server: Any,
    daemon: Callable[[Path], Any],
    tmp_path: Path,
    unique: str,
) -> None:
    db = dbname(pg_db)
    pg_server.psql(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2));"
        "ALTER TABLE items REPLICA IDENTITY FULL;",
        db,
    )
    config = tmp_path / "cdc.yaml"
    config.write_text(
        f"""
pipelines:
  - name: {unique}
    transaction_metadata: false
    source: {{type: postgres, dsn: "{pg_db}", tables: [public.items]}}
    sink:
      type: nats
      servers: ['{nats_server.url}']
      stream: {unique}
      path: {tmp_path / "nats"}
      tombstones: true
      format: json
      decimal_format: numeric
    transforms:
      - type: filter
        condition: "price >= 5 and name not in ('skip')"
"""
    )
    d = daemon(config).start()
    wait_until(
        lambda: (
            pg_server.psql(
                f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc_{unique}' "
                "AND active"
            ).strip()
            == "1"
        ),
        60,
        "the pipeline streaming",
    )
    pg_server.psql(
        "INSERT INTO items SELECT g, 'item ' || g, g * 1.25 FROM generate_series(1, 10) g;"
        "INSERT INTO items VALUES (11, 'skip', 100), (12, 'nothing', NULL);"
        "UPDATE items SET price = 1 WHERE id = 10;"  # now below: filtered out
        "DELETE FROM items WHERE id IN (1, 9);",  # by the deleted row: 1 goes, 9 is kept
        db,
    )
    src = {r: Decimal(r) * Decimal("1.25") for r in range(1, 11)}
    matching = [i for i in range(1, 11) if src[i] >= 5]
    # inserts 4..10, the delete of 9 and its tombstone
    expected = len(matching) + 2
    wait_until(lambda: stream_count(nats_server.url, unique) >= expected, 60, "the messages")
    assert d.terminate() == 0, d.output()

    msgs = read_stream(nats_server.url, unique)
    assert len(msgs) == expected
    assert all("Cdc-Schema-Id" not in m.headers for m in msgs)
    docs = []
    for m in msgs:
        key = json.loads(base64.b64decode(m.headers["Cdc-Key"]))
        assert key["schema"]["name"] == f"{unique}.public.items.Key"
        value = None if m.value is None else json.loads(m.value, parse_float=Decimal)
        docs.append((key["payload"]["id"], value and value["payload"]))
    inserts = [(i, v) for i, v in docs if v and v["op"] == "c"]
    assert [i for i, _ in inserts] == matching
    assert all(v["after"]["price"] == src[i] for i, v in inserts)
    assert [(i, v and v["op"]) for i, v in docs[len(inserts) :]] == [(9, "d"), (9, None)]
    envelope = json.loads(msgs[0].data)["schema"]
    assert envelope["name"] == f"{unique}.public.items.Envelope"
    assert [f["field"] for f in envelope["fields"]][:5] == [
        "before",
        "after",
        "source",
        "transaction",
        "op",
    ]
