"""A scratch Apache Kafka broker: KRaft, one node that is both broker and controller.

The broker runs from the jars on Maven Central (``org.apache.kafka:kafka_2.13`` and its runtime
dependencies, plus log4j2 so it can log), fetched once with ``mvn`` into
``$CDC_SCRATCH_CACHE/kafka-VERSION/libs`` (default ``~/.cache/cdc-scratch``). CI fetches them
ahead of time with ``python -m scratch.kafka fetch``.

Each server gets a temporary directory holding ``server.properties``, the log4j2 config, the
KRaft metadata log and the topic data, ``server.log`` (Kafka's own log) and ``kafka.out`` (the
JVM's stdout/stderr). It listens on 127.0.0.1 only: a PLAINTEXT broker listener on a free port
(``bootstrap_servers``) and a controller listener on another. ``stop()``/``start()`` keep both
ports and all data. Internal topics have replication factor 1 and few partitions so the first
consumer group is quick to form.

JVM start-up dominates the start time, so the first broker started with a given jar cache writes
a class-data-sharing archive (``kafka-classes.jsa`` next to ``libs/``, see scratch._jvm) when it
stops; later brokers start from it in about half the time (~4-6 s instead of ~14 s on two
cores). ``python -m scratch.kafka fetch`` makes both the jar cache and the archive.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from scratch._common import find_binary, free_port, port_open, scratch_dir
from scratch._jars import cache_root, fetch_jars
from scratch._jvm import JvmServer, cds_flags

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
STARTUP_TIMEOUT = 90.0
SHUTDOWN_TIMEOUT = 60.0
HEAP = "512m"
_STARTED = "Kafka Server started"  # logged by KafkaRaftServer once the broker serves requests


def ensure_kafka_jars(version: str = KAFKA_VERSION) -> Path:
    """Fetch the broker's jars from Maven Central unless cached; return the directory of jars."""
    return fetch_jars(
        f"kafka-{version}",
        [
            ("org.apache.kafka", "kafka_2.13", version),
            ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
            ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
        ],
    )


def cds_archive(libs: Path) -> Path:
    return libs.parent / "kafka-classes.jsa"


def prepare_kafka() -> Path:
    """Fetch the jars and, by starting and stopping a broker once, write the class-data-sharing
    archive that makes later JVM starts faster. For CI setup; return the jars directory."""
    libs = ensure_kafka_jars()
    if not cds_archive(libs).is_file():
        with tempfile.TemporaryDirectory(prefix="cdc-kafka-prepare-") as tmp:
            start_kafka(Path(tmp)).stop()
    return libs


def _cluster_id() -> str:
    """A random Kafka Uuid in its string form (url-safe base64, no padding, not starting with -)."""
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


_LOG4J2 = """\
status = warn
name = cdc-scratch-kafka
shutdownHook = disable
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.storage.name = org.apache.kafka.storage.internals.log
logger.storage.level = WARN
logger.coordinator.name = org.apache.kafka.coordinator
logger.coordinator.level = WARN
logger.ulog.name = kafka.log.UnifiedLog
logger.ulog.level = WARN
"""


@dataclass
class KafkaServer(JvmServer):
    """A running single-node KRaft broker; clients use ``bootstrap_servers``.

    ``stop()`` is a controlled shutdown (SIGTERM; SIGKILL after SHUTDOWN_TIMEOUT s) that keeps the
    data and both ports; ``kill()`` is a crash: the broker recovers its logs on the next
    ``start()``.
    """

    base_dir: Path
    port: int
    controller_port: int
    libs: Path
    java: str
    host: str = "127.0.0.1"
    heap: str = HEAP
    _log_offset: int = field(default=0, repr=False)

    process_name = "kafka"
    startup_timeout = STARTUP_TIMEOUT
    shutdown_timeout = SHUTDOWN_TIMEOUT

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.base_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        """Kafka's own log (log4j2)."""
        return self.base_dir / "server.log"

    @property
    def out_file(self) -> Path:
        """The JVM's stdout and stderr."""
        return self.base_dir / "kafka.out"

    @property
    def cds_archive(self) -> Path:
        """The class-data-sharing archive of the broker's classes, next to the cached jars."""
        return cds_archive(self.libs)

    def _java(self, main: str, *args: str) -> list[str]:
        dump = self._cds_dump if main == "kafka.Kafka" else None  # the tools only map it
        return [
            self.java,
            *cds_flags(self.cds_archive, dump),
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.base_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.base_dir}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def format_storage(self, cluster_id: str) -> None:
        """Format the KRaft metadata log (once, before the first start)."""
        proc = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(self.config_file),
                "--ignore-formatted",
            ),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{proc.stdout}\n{proc.stderr}")

    @property
    def _output(self) -> Path:
        return self.out_file

    @property
    def _cwd(self) -> Path:
        return self.base_dir

    def _argv(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.config_file))

    def _before_start(self) -> None:
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        super()._before_start()

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        with open(self.log_file, "rb") as f:
            f.seek(self._log_offset)
            return _STARTED.encode() in f.read()

    def _waiting_for(self) -> str:
        return f"kafka on port {self.port} ({self.log_file})"

    def _logs(self) -> list[tuple[str, Path]]:
        return [("", self.out_file), ("", self.log_file)]


def _properties(data_dir: Path, port: int, controller_port: int) -> dict[str, str]:
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After a kill -9 the restarted broker can only register once the controller has timed
        # out the dead one's session (default 9 s).
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "500",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "168",
        "log.segment.bytes": "268435456",
        "message.max.bytes": "8388608",
        "replica.fetch.max.bytes": "8388608",
    }


def start_kafka(
    base_dir: Path | None = None,
    *,
    port: int | None = None,
    settings: dict[str, str] | None = None,
    heap: str = HEAP,
) -> KafkaServer:
    """Format a KRaft log and start a single-node broker+controller on free 127.0.0.1 ports.

    ``settings`` are extra or overriding ``server.properties`` entries.
    """
    libs = ensure_kafka_jars()
    java = find_binary("java", ["/usr/bin/java"])
    base_dir = scratch_dir(base_dir, "cdc-kafka-")
    port = port or free_port()
    controller_port = free_port(other_than=port)
    server = KafkaServer(
        base_dir=base_dir,
        port=port,
        controller_port=controller_port,
        libs=libs,
        java=java,
        heap=heap,
    )
    props = _properties(server.data_dir, port, controller_port)
    props.update(settings or {})
    server.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (base_dir / "log4j2.properties").write_text(_LOG4J2.format(log=server.log_file))
    server.format_storage(_cluster_id())
    server.start()
    return server


def main(argv: list[str]) -> int:
    """``python -m scratch.kafka fetch``: jars and CDS archive (CI setup); ``run``: a broker."""
    if argv[:1] == ["fetch"]:
        print(prepare_kafka())
        return 0
    if argv[:1] == ["run"]:
        with start_kafka() as server:
            print(f"kafka {KAFKA_VERSION} at {server.bootstrap_servers}; {server.base_dir}")
            server.wait()
        return 0
    print(
        "usage: python -m scratch.kafka fetch|run\n"
        f"  jars cache: {cache_root()} (env CDC_SCRATCH_CACHE)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
