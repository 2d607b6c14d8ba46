"""The scratch schema registry (Apicurio, Confluent-compatible API): register and read back."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from scratch.registry import SchemaRegistryServer, start_schema_registry

pytestmark = pytest.mark.integration

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
SCHEMA = {
    "type": "record",
    "name": "Item",
    "namespace": "shop",
    "fields": [{"name": "id", "type": "int"}, {"name": "name", "type": ["null", "string"]}],
}


@pytest.fixture
def server() -> Iterator[SchemaRegistryServer]:
    started = time.monotonic()
    srv = start_schema_registry()
    print(f"schema registry started in {time.monotonic() - started:.1f}s")
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(srv.base_dir, ignore_errors=True)
    assert not srv.running


def call(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_register_and_read_back(server: SchemaRegistryServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}/apis/ccompat/v7"
    assert call(f"{server.url}/subjects") == []

    registered = call(
        f"{server.url}/subjects/shop.item-value/versions", {"schema": json.dumps(SCHEMA)}
    )
    schema_id = registered["id"]
    assert isinstance(schema_id, int)

    by_id = call(f"{server.url}/schemas/ids/{schema_id}")
    assert json.loads(by_id["schema"]) == SCHEMA
    assert call(f"{server.url}/subjects") == ["shop.item-value"]
    latest = call(f"{server.url}/subjects/shop.item-value/versions/latest")
    assert latest["id"] == schema_id and latest["version"] == 1

    # the same schema again is the same id; an unknown id is a 404
    again = call(f"{server.url}/subjects/shop.item-value/versions", {"schema": json.dumps(SCHEMA)})
    assert again["id"] == schema_id
    with pytest.raises(urllib.error.HTTPError) as err:
        call(f"{server.url}/schemas/ids/{schema_id + 1000}")
    assert err.value.code == 404


def test_restart_keeps_port_but_not_schemas(server: SchemaRegistryServer) -> None:
    call(f"{server.url}/subjects/t-value/versions", {"schema": json.dumps(SCHEMA)})
    port = server.port
    server.stop()
    server.start()
    assert server.port == port
    assert call(f"{server.url}/subjects") == []  # in-memory storage
