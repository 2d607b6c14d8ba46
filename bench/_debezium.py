"""``--peer debezium``: Debezium Server on the same W1 changes into the same Kafka, for comparison.

Debezium Server 2.7 (io.debezium:debezium-server-dist on Maven Central, fetched once with mvn by
scratch._jars); 3.x needs Java 21 and these machines have Java 17. Only Postgres -> Kafka: it
reads its own pgoutput slot, created just before the workload like the ceiling's, with Avro keys
and values registered in the same schema registry (Apicurio's converter, which the distribution
ships), and writes to a topic the bench creates with LogAppendTime, so its rate is timed exactly
like ours.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench._stats import ProcStats, proc_stats

VERSION = "2.7.3.Final"
FORMAT = os.environ.get("BENCH_DEBEZIUM_FORMAT", "avro")
HEAP = "512m"
_BYTES = "org.apache.kafka.common.serialization.ByteArraySerializer"
_STRING = "org.apache.kafka.common.serialization.StringSerializer"


def ensure_dist() -> Path:
    from scratch._jars import fetch_unpacked

    return (
        fetch_unpacked(
            f"debezium-server-{VERSION}", f"io.debezium:debezium-server-dist:{VERSION}:tar.gz"
        )
        / "debezium-server"
    )


def create_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, 1, 1, config={"message.timestamp.type": "LogAppendTime"})]
    )
    for f in futures.values():
        f.result()


def _properties(work: Path, pg: Any, db: str, slot: str, prefix: str, s: Any) -> str:
    registry = f"{s.registry.base_url}/apis/registry/v2"
    props = {
        "debezium.sink.type": "kafka",
        "debezium.sink.kafka.producer.bootstrap.servers": s.kafka.bootstrap_servers,
        "debezium.sink.kafka.producer.key.serializer": _BYTES if FORMAT == "avro" else _STRING,
        "debezium.sink.kafka.producer.value.serializer": _BYTES if FORMAT == "avro" else _STRING,
        "debezium.source.connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "debezium.source.offset.storage.file.filename": str(work / "offsets.dat"),
        "debezium.source.offset.flush.interval.ms": "0",
        "debezium.source.database.hostname": pg.host,
        "debezium.source.database.port": str(pg.port),
        "debezium.source.database.user": pg.superuser,
        "debezium.source.database.password": "unused",
        "debezium.source.database.dbname": db,
        "debezium.source.topic.prefix": prefix,
        "debezium.source.table.include.list": "public.orders",
        "debezium.source.plugin.name": "pgoutput",
        "debezium.source.slot.name": slot,
        "debezium.source.publication.name": "bench_ceiling",
        "debezium.source.publication.autocreate.mode": "disabled",
        "debezium.source.snapshot.mode": "no_data",
        "debezium.format.key": FORMAT,
        "debezium.format.value": FORMAT,
        "quarkus.http.port": "0",
    }
    for part in ("key", "value") if FORMAT == "avro" else ():
        props[f"debezium.format.{part}.apicurio.registry.url"] = registry
        props[f"debezium.format.{part}.apicurio.registry.auto-register"] = "true"
        props[f"debezium.format.{part}.apicurio.registry.find-latest"] = "true"
    return "".join(f"{k}={v}\n" for k, v in props.items())


class DebeziumServer:
    def __init__(self, work: Path, pg: Any, db: str, slot: str, prefix: str, s: Any) -> None:
        from scratch._common import find_binary

        dist = ensure_dist()
        work.mkdir(parents=True, exist_ok=True)
        (work / "config").mkdir(exist_ok=True)
        (work / "config" / "application.properties").write_text(
            _properties(work, pg, db, slot, prefix, s)
        )
        runner = next(dist.glob("debezium-server-dist-*-runner.jar"))
        self.log = work / "debezium.log"
        self._out = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                find_binary("java", ["/usr/bin/java"]),
                f"-Xmx{HEAP}",
                "-cp",
                f"{runner}:{dist / 'conf'}:{dist / 'lib'}/*",
                "io.debezium.server.Main",
            ],
            cwd=work,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"debezium server exited ({self.log}):\n{tail}")

    def stop(self) -> ProcStats | None:
        stats = proc_stats(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        return stats


def wait_count(obs: Any, topic: str, want: int, dbz: DebeziumServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while obs.count(topic) < want:
        dbz.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"debezium: {obs.count(topic)} of {want} records on {topic}")
        time.sleep(0.25)
