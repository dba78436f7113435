"""The fault suite's parts: a 3-node Apache Kafka cluster (KRaft, RF 3, min.insync.replicas 2) started only
for these tests, and an Écoute on it as separate processes (ingest, analyzer workers, API replicas), fed over
HTTP by a client that retries refused batches with the same ids."""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from ecoute.brokers import KafkaCluster, KafkaNode, free_port
from schemas import Topics
from services.analyzer.tone import ToneScorer
from tests.e2e.conftest import API_HEADERS, CONFIG, TEMPLATES
from tests.helpers import ServiceProcess, read_all, wait_until

BRANDS = ("acme", "globex")
COUNTERS = ("mentions", "positive", "neutral", "negative")


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three combined broker+controller nodes; started once, for the fault tests only. Their data and logs stay
    in pytest's temporary directory, to read after a failure."""
    cluster = KafkaCluster(size=3, base_dir=tmp_path_factory.mktemp("kafka-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def restart_stopped_nodes(cluster: KafkaCluster) -> None:
    for node in cluster.nodes:
        if node.proc is None or node.proc.poll() is not None:
            cluster.start_node(node)


# --- the cluster's state -----------------------------------------------------------------------


async def _describe(bootstrap: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        return list(await admin.describe_topics())
    finally:
        await admin.close()


def describe(cluster: KafkaCluster) -> list[dict[str, Any]]:
    return asyncio.run(asyncio.wait_for(_describe(cluster.bootstrap_servers), timeout=15))


def leader_of_most(cluster: KafkaCluster, topic: str) -> KafkaNode:
    """The node leading most partitions of `topic` (the admin client's describe_topics)."""
    counts: dict[int, int] = {}
    for described in describe(cluster):
        if described["topic"] == topic:
            for partition in described["partitions"]:
                counts[partition["leader"]] = counts.get(partition["leader"], 0) + 1
    leader = max(counts, key=lambda node_id: counts[node_id])
    return next(node for node in cluster.nodes if node.node_id == leader)


def fully_replicated(cluster: KafkaCluster) -> bool:
    """Every partition of every topic (internal ones too) has a leader and all three replicas in sync."""
    topics = describe(cluster)
    return bool(topics) and all(
        p["leader"] >= 0 and len(p["isr"]) == len(cluster.nodes) for t in topics for p in t["partitions"]
    )


def wait_fully_replicated(cluster: KafkaCluster, timeout: float = 90.0) -> None:
    wait_until(lambda: fully_replicated(cluster), timeout, interval=0.5, what="every replica back in sync")


# --- the mentions ------------------------------------------------------------------------------


class Corpus:
    """Mention i is always the same mention (a retry re-sends the same ids); its brands and tone label are
    known up front (the label recounted with the analyzer's own scorer, cached per text)."""

    def __init__(self, prefix: str, seed: int = 13) -> None:
        self.prefix = prefix
        self.seed = seed
        self._scorer = ToneScorer()
        self._labels: dict[str, str] = {}

    def mention(self, i: int) -> tuple[dict[str, Any], list[str], str]:
        rng = random.Random(self.seed * 1_000_003 + i)
        brands = rng.choice([["acme"], ["globex"], ["acme", "globex"], []])
        subject = " and ".join(brands) or "Acmeville"
        text = rng.choice(TEMPLATES).format(b=subject) + f" #{i % 53}"
        label = self._labels.get(text)
        if label is None:
            label = self._labels[text] = self._scorer.score(text).label
        mention = {
            "id": f"{self.prefix}:{i}",
            "source": rng.choice(["rss", "reddit", "mastodon", "webhook"]),
            "url": f"https://example.org/{self.prefix}/{i}",
            "text": text,
            "author": {"id": f"author-{rng.randrange(500)}", "followers": rng.randrange(3000)},
            "engagement": {"likes": rng.randrange(20), "shares": rng.randrange(3), "comments": 1},
        }
        return mention, brands, label


def empty_counts() -> dict[str, dict[str, int]]:
    return {brand: dict.fromkeys(COUNTERS, 0) for brand in BRANDS}


@dataclass
class Ack:
    sent: float  # when the request that was acknowledged went out (monotonic)
    acked: float
    brand_mentions: int  # counted brand mentions acknowledged up to and including this batch


class Poster(threading.Thread):
    """Posts batches of mentions at a steady rate; a refused batch (503, timeout, no connection) is sent again,
    same ids, after Retry-After, until acknowledged. Only acknowledged mentions are expected in the counts."""

    def __init__(self, url: str, corpus: Corpus, rate: float, batch: int = 250, start_at: int = 0) -> None:
        super().__init__(daemon=True, name="fault-poster")
        self.url = url
        self.corpus = corpus
        self.rate = rate
        self.batch = batch
        self.next_index = start_at
        self.expected = empty_counts()
        self.acks: list[Ack] = []
        self.refusals: dict[str, int] = {}
        self.accepted_during: list[tuple[float, int]] = []  # (time, status) of every answer
        self.retry_after_seen: set[str] = set()
        self.minimum = 0  # keep posting until at least this many are acknowledged…
        self.stop_flag = threading.Event()  # …and this is set
        self.error: BaseException | None = None
        self.deadline = time.monotonic() + 900

    @property
    def acknowledged(self) -> int:
        return self.next_index

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        interval = self.batch / self.rate
        next_due = time.monotonic()
        with httpx.Client(timeout=15) as client:
            while not (self.stop_flag.is_set() and self.next_index >= self.minimum):
                if time.monotonic() > self.deadline:
                    raise AssertionError("the poster ran past its deadline")
                next_due = max(next_due + interval, time.monotonic() - interval)
                pause = next_due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                start = self.next_index
                items = [self.corpus.mention(i) for i in range(start, start + self.batch)]
                body = orjson.dumps([m for m, _, _ in items])
                sent = self._post_until_acknowledged(client, body, len(items))
                for _, brands, label in items:
                    for brand in brands:
                        self.expected[brand]["mentions"] += 1
                        self.expected[brand][label] += 1
                self.next_index = start + self.batch
                total = sum(c["mentions"] for c in self.expected.values())
                self.acks.append(Ack(sent, time.monotonic(), total))

    def _post_until_acknowledged(self, client: httpx.Client, body: bytes, n: int) -> float:
        """Post until a 202; returns when the acknowledged request went out."""
        while True:
            sent = time.monotonic()
            try:
                response = client.post(
                    f"{self.url}/v1/mentions", content=body, headers={"Content-Type": "application/json"}
                )
            except httpx.HTTPError as exc:
                self._refused(type(exc).__name__)
                time.sleep(0.5)
                continue
            self.accepted_during.append((time.monotonic(), response.status_code))
            if response.status_code == 202:
                assert response.json() == {"accepted": n}, response.text
                return sent
            assert response.status_code == 503, f"{response.status_code}: {response.text}"
            retry_after = response.headers.get("Retry-After")
            assert retry_after is not None, "a 503 without Retry-After"
            self.retry_after_seen.add(retry_after)
            self._refused("503")
            time.sleep(min(float(retry_after), 2.0))

    def _refused(self, why: str) -> None:
        self.refusals[why] = self.refusals.get(why, 0) + 1

    def first_ack_sent_after(self, moment: float, timeout: float = 120.0) -> Ack:
        def found() -> Ack | None:
            return next((a for a in list(self.acks) if a.sent > moment), None)

        return wait_until(found, timeout, interval=0.1, what="ingest to acknowledge a batch posted after the fault")


# --- the services ------------------------------------------------------------------------------


@dataclass
class Ecoute:
    """Écoute's services as processes on the cluster: one ingest, analyzer workers and API replicas."""

    cluster: KafkaCluster
    workdir: Path
    env: dict[str, str]
    topics: Topics
    ingest_url: str
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    incarnations: dict[str, int] = field(default_factory=dict)

    def start(self, name: str, command: str, extra: dict[str, str] | None = None) -> ServiceProcess:
        n = self.incarnations[name] = self.incarnations.get(name, -1) + 1
        process = ServiceProcess([command], {**self.env, **(extra or {})}, self.workdir / f"{name}-{n}.log")
        self.processes[name] = process.start()
        return process

    def start_analyzer(self, name: str) -> ServiceProcess:
        port = self.ports.setdefault(name, free_port())
        return self.start(
            name,
            "analyzer",
            {"ECOUTE_ANALYZER_METRICS_PORT": str(port), "ECOUTE_ANALYZER_DATA_DIR": str(self.workdir / name)},
        )

    def start_api(self, name: str) -> ServiceProcess:
        port = self.ports.setdefault(name, free_port())
        return self.start(name, "api", {"ECOUTE_API_PORT": str(port)})

    def api_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def kpis(self, api: str, window: str = "24h") -> dict[str, dict[str, int]]:
        out = {}
        with httpx.Client(timeout=5, headers=API_HEADERS) as client:
            for brand in BRANDS:
                response = client.get(f"{self.api_url(api)}/v1/brands/{brand}/kpis", params={"window": window})
                response.raise_for_status()
                kpi = response.json()
                out[brand] = {name: int(kpi[name]) for name in COUNTERS}
        return out

    def processed(self, analyzer: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.ports[analyzer]}/metrics", timeout=2).text
        match = re.search(r'ecoute_analyzer_mentions_processed_total\{stage="stage1"\} ([0-9.e+]+)', text)
        return float(match.group(1)) if match else 0.0

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop()

    def logs(self, name: str) -> str:
        process = self.processes.get(name)
        return process.log_tail(40) if process is not None else ""


class TotalsMonitor(threading.Thread):
    """Samples one API replica's 24 h mention total (all brands) every quarter second, to time recoveries."""

    def __init__(self, ecoute: Ecoute, api: str) -> None:
        super().__init__(daemon=True, name=f"fault-monitor-{api}")
        self.ecoute = ecoute
        self.api = api
        self.samples: list[tuple[float, int]] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                counts = self.ecoute.kpis(self.api)
                self.samples.append((time.monotonic(), sum(c["mentions"] for c in counts.values())))
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            self.stop_flag.wait(0.25)

    def reached(self, total: int, timeout: float = 180.0) -> float:
        """When the replica first showed at least `total` (waits for it)."""

        def first() -> float | None:
            return next((t for t, n in list(self.samples) if n >= total), None)

        return wait_until(first, timeout, interval=0.1, what=f"{self.api} to count {total} brand mentions")


def snapshot_day_totals(bootstrap: str, topics: Topics) -> dict[str, dict[str, int]]:
    """Per-brand totals of the newest 1d snapshots on kpi.snapshots (a compacted topic's converged state)."""

    async def read() -> dict[str, dict[str, int]]:
        latest = {key: value for key, value, _ in await read_all(bootstrap, topics.kpi_snapshots)}
        totals = empty_counts()
        for key, value in latest.items():
            if key is None or value is None or b"|1d|" not in key:
                continue
            kpi = orjson.loads(value)
            for name in COUNTERS:
                totals.setdefault(kpi["brand"], dict.fromkeys(COUNTERS, 0))[name] += kpi[name]
        return totals

    return asyncio.run(read())


def dlq_records(bootstrap: str, topics: Topics) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """What readers of the DLQ see: committed records only (stage 1 writes its letters in transactions)."""
    return asyncio.run(read_all(bootstrap, topics.mentions_dlq, isolation_level="read_committed"))


def raise_max_message_bytes(cluster: KafkaCluster, names: list[str], size: int) -> None:
    """Let `names` take records up to `size` bytes (the broker's default is 1 MiB), as an operator would for
    producers of large records; the analyzer creates mentions.dlq large enough for their dead letters."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def alter() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers, request_timeout_ms=10_000)
        await admin.start()
        try:
            resources = [
                ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": str(size)})
                for name in names
            ]
            for response in await admin.alter_configs(resources):
                for error_code, message, *_ in response.resources:
                    assert error_code == 0, message
        finally:
            await admin.close()

    asyncio.run(alter())


def produce_raw(cluster: KafkaCluster, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Write records straight to a topic (not through ingest), up to 8 MiB each, acknowledged by all replicas."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=cluster.bootstrap_servers, acks="all", max_request_size=8 * 1024 * 1024
        )
        await producer.start()
        try:
            for key, value in records:
                await (await producer.send(topic, value, key=key))
        finally:
            await producer.stop()

    asyncio.run(send())


@pytest.fixture
def ecoute(kafka_cluster: KafkaCluster, tmp_path: Path) -> Iterator[Ecoute]:
    """Ingest, two analyzer workers (one app id) and two API replicas on the cluster, with topics of their own
    created by the services at replication factor 3. Every process is stopped by its PID at the end."""
    restart_stopped_nodes(kafka_cluster)  # a failed test before this one may have left a node down
    prefix = f"fault-{uuid.uuid4().hex[:8]}."
    config = tmp_path / "ecoute.yaml"
    config.write_text(CONFIG)
    ingest_port = free_port()
    env = {
        "ECOUTE_KAFKA_BOOTSTRAP_SERVERS": kafka_cluster.bootstrap_servers,
        "ECOUTE_CONFIG": str(config),
        "ECOUTE_TOPIC_PREFIX": prefix,
        "ECOUTE_PARTITIONS": "6",
        "ECOUTE_REPLICATION_FACTOR": "3",
        "ECOUTE_INGEST_PORT": str(ingest_port),
        "ECOUTE_RETRY_AFTER": "1",
        "ECOUTE_INGEST_SOURCES": "false",
        "ECOUTE_ANALYZER_APP_ID": f"{prefix}analyzer",
        "ECOUTE_ANALYZER_SESSION_TIMEOUT": "6",
        "ECOUTE_ANALYZER_TRANSACTION_TIMEOUT": "10",
        "ECOUTE_LOG_LEVEL": "INFO",
    }
    stack = Ecoute(kafka_cluster, tmp_path, env, Topics(prefix), f"http://127.0.0.1:{ingest_port}")
    try:
        stack.start("ingest", "ingest").wait_http(f"{stack.ingest_url}/healthz", timeout=90)
        stack.start_analyzer("analyzer-a")
        stack.start_analyzer("analyzer-b")
        for api in ("api-a", "api-b"):
            stack.start_api(api)
        for api in ("api-a", "api-b"):
            stack.processes[api].wait_http(f"{stack.api_url(api)}/readyz", timeout=90)
        yield stack
    finally:
        stack.stop_all()
