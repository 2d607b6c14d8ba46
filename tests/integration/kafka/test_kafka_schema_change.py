"""A column added mid-stream: a new schema version is registered and consumers keep decoding."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.kafka.conftest import (
    KafkaCase,
    dbname,
    postgres_source,
    set_compatibility,
    start_streaming,
    subject_versions,
)

pytestmark = pytest.mark.integration


def test_added_column_registers_a_new_version(pg_server: Any, pg_db: str, case: KafkaCase) -> None:
    db = dbname(pg_db)
    pg_server.psql("CREATE TABLE doc (id int PRIMARY KEY, title text NOT NULL)", db)
    d = start_streaming(pg_server, case, [case.pipeline(postgres_source(pg_db, "public.doc"))])
    topic = f"{case.prefix}.public.doc"
    pg_server.psql("INSERT INTO doc SELECT g, 'v1 ' || g FROM generate_series(1, 10) g", db)
    pg_server.psql("ALTER TABLE doc ADD COLUMN note text", db)
    pg_server.psql(
        "INSERT INTO doc SELECT g, 'v2 ' || g, 'n' || g FROM generate_series(11, 20) g", db
    )
    pg_server.psql("UPDATE doc SET note = 'late' WHERE id = 1", db)

    events = case.reader.read([topic], at_least=21, timeout=60)
    assert len(events) == 21
    afters = [e.value["after"] for e in events]
    assert afters[:10] == [{"id": i, "title": f"v1 {i}"} for i in range(1, 11)]
    assert afters[10:20] == [{"id": i, "title": f"v2 {i}", "note": f"n{i}"} for i in range(11, 21)]
    assert afters[20] == {"id": 1, "title": "v1 1", "note": "late"}
    # One value schema per table version; the key did not change.
    assert len(subject_versions(case.registry, f"{topic}-value")) == 2
    assert len(subject_versions(case.registry, f"{topic}-key")) == 1
    assert d.terminate() == 0


def test_refused_schema_stops_the_pipeline_with_a_clear_error(
    pg_server: Any, pg_db: str, case: KafkaCase
) -> None:
    db = dbname(pg_db)
    pg_server.psql("CREATE TABLE doc (id int PRIMARY KEY, title text NOT NULL)", db)
    d = start_streaming(pg_server, case, [case.pipeline(postgres_source(pg_db, "public.doc"))])
    topic = f"{case.prefix}.public.doc"
    pg_server.psql("INSERT INTO doc VALUES (1, 'a')", db)
    case.reader.read([topic], at_least=1)
    # An operator asks for BACKWARD compatibility; then a required column without an Avro
    # default arrives: a reader with the new schema could not read the old records (HTTP 409).
    # (A constant DEFAULT would be in the schema, as Debezium carries it; an expression is not.)
    set_compatibility(case.registry, f"{topic}-value", "BACKWARD")
    pg_server.psql("ALTER TABLE doc ADD COLUMN n int NOT NULL DEFAULT (0 + 0)", db)
    pg_server.psql("INSERT INTO doc VALUES (2, 'b', 7)", db)
    assert d.proc.wait(60) == 1
    out = d.output()
    assert f"refused the value schema of topic '{topic}' (subject '{topic}-value')" in out
    assert "as incompatible" in out and "relax it (PUT /config/" in out
    assert "Incompatible artifact" in out  # what the registry said (Apicurio's wording)
    # The refused change was not written, and not acknowledged: it is still there to retry.
    assert len(case.reader.read([topic])) == 1
