"""Exact under crashes: 300,000 mentions flow through real Apache Kafka while the analyzer is killed
with SIGKILL three times and restarted, or while the broker is frozen longer than a transaction may last;
per-brand counts equal the distinct mentions produced and the sentiment split equals a recount.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from ecoute.brokers import KafkaCluster, free_port
from schemas import Topics, ensure_topics
from services.analyzer.tone import ToneScorer
from tests.analyzer.test_analyzer_kafka import CONFIG, day_totals
from tests.helpers import ServiceProcess, async_wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL = 300_000
DUPLICATES = 20_000
TEMPLATES = [
    "I love my new {b} phone, the camera is amazing!",
    "{b} support was useless, never buying again.",
    "Just saw an ad for {b}.",
    "{b} prices are way too expensive this year :(",
    "Honestly {b} customer service fixed it in 5 minutes. Great job!",
    "Is {b} open on Sundays?",
    "{b} is NOT good. At all.",
    "meh, {b} again",
]


def corpus() -> tuple[list[tuple[bytes, bytes]], dict[str, dict[str, int]]]:
    rng = random.Random(300)
    scorer = ToneScorer()
    label_of: dict[str, str] = {}
    expected: dict[str, dict[str, int]] = {}
    records = []
    for i in range(TOTAL):
        brands = rng.choice([["acme"], ["globex"], ["acme", "globex"]])
        text = rng.choice(TEMPLATES).format(b=" & ".join(brands)) + f" #{i % 97}"
        label = label_of.get(text) or label_of.setdefault(text, scorer.score(text).label)
        for brand in brands:
            counts = expected.setdefault(brand, {"mentions": 0, "positive": 0, "neutral": 0, "negative": 0})
            counts["mentions"] += 1
            counts[label] += 1
        mention = {"id": f"eos:{i}", "text": text, "author": {"id": f"a{i % 5000}", "followers": i % 1000}}
        records.append((mention["id"].encode(), orjson.dumps(mention)))
    # Some mentions come again later (a source re-sending): counted once.
    records.extend(rng.sample(records, DUPLICATES))
    return records, expected


def processed(metrics_url: str) -> float:
    try:
        text = httpx.get(metrics_url, timeout=2).text
    except httpx.HTTPError:
        return 0.0
    match = re.search(r'ecoute_analyzer_mentions_processed_total\{stage="stage1"\} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


class Run:
    """The corpus flowing into mentions.raw while one `ecoute analyzer` at a time works on it."""

    def __init__(self, bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.topics = Topics(topic_prefix)
        self.tmp_path = tmp_path
        self.records, self.expected = corpus()
        config = tmp_path / "ecoute.yaml"
        config.write_text(CONFIG)
        port = free_port()
        self.env = {
            "ECOUTE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ECOUTE_CONFIG": str(config),
            "ECOUTE_TOPIC_PREFIX": topic_prefix,
            "ECOUTE_PARTITIONS": "4",
            "ECOUTE_ANALYZER_APP_ID": f"{topic_prefix}analyzer",
            "ECOUTE_ANALYZER_METRICS_PORT": str(port),
            "ECOUTE_ANALYZER_DATA_DIR": str(tmp_path / "data"),
            "ECOUTE_ANALYZER_SESSION_TIMEOUT": "6",
            "ECOUTE_ANALYZER_TRANSACTION_TIMEOUT": "10",
            "ECOUTE_LOG_LEVEL": "INFO",
        }
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        self.incarnations = 0

    async def flow(self) -> None:
        """Produce the whole corpus in slices, as a live source would, while the analyzer suffers."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
        await producer.start()
        try:
            for start in range(0, len(self.records), 20_000):
                futures = [
                    await producer.send(self.topics.mentions_raw, v, key=k)
                    for k, v in self.records[start : start + 20_000]
                ]
                await asyncio.gather(*futures)
                await asyncio.sleep(0.3)
        finally:
            await producer.stop()

    def analyzer(self) -> ServiceProcess:
        log = self.tmp_path / f"analyzer-{self.incarnations}.log"
        self.incarnations += 1
        return ServiceProcess(["analyzer"], self.env, log).start()

    async def progressed(self, count: int, what: str) -> None:
        async def enough() -> bool:
            return processed(self.metrics_url) >= count

        await async_wait_until(enough, timeout=120, interval=0.2, what=what)

    async def assert_exact(self) -> None:
        last: dict[str, dict[str, int]] = {}

        async def exact() -> bool:
            last.clear()
            last.update(await day_totals(self.bootstrap, self.topics))
            return last == self.expected

        try:
            await async_wait_until(exact, timeout=240, interval=2.0, what="day totals equal to the recount")
        except AssertionError as exc:
            # Say how far it got: counts short of the recount with stage 1 short of the input mean it stalled.
            raise AssertionError(
                f"{exc}: expected {self.expected}, last {last}; stage 1 of the last incarnation processed "
                f"{processed(self.metrics_url):.0f} of {len(self.records)} records (its own count since it started)"
            ) from None


async def test_counts_exact_through_three_kill_9(bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    run = Run(bootstrap, topic_prefix, tmp_path)
    await ensure_topics(bootstrap, run.topics, partitions=4)
    producing = asyncio.create_task(run.flow())
    analyzer = run.analyzer()
    try:
        for kill in range(3):
            # Let this incarnation make real progress, then kill it mid-stream, without a goodbye.
            await run.progressed(25_000, f"progress before kill {kill + 1}")
            analyzer.kill()
            analyzer = run.analyzer()
        await producing
        await run.assert_exact()
    finally:
        producing.cancel()
        analyzer.stop()


async def test_counts_exact_through_a_broker_stall_longer_than_the_transaction_timeout(
    kafka: KafkaCluster, bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The broker frozen for 30 s (a long GC pause, a stalled VM) aborts the open transactions that outlive
    their 10 s timeout and fences their producers; stage 1 must take its partitions back and finish."""
    run = Run(bootstrap, topic_prefix, tmp_path)
    await ensure_topics(bootstrap, run.topics, partitions=4)
    producing = asyncio.create_task(run.flow())
    analyzer = run.analyzer()
    broker = kafka.nodes[0].proc
    assert broker is not None
    try:
        await run.progressed(60_000, "progress before the stall")
        broker.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(30)
        finally:
            broker.send_signal(signal.SIGCONT)
        await producing
        await run.assert_exact()
    finally:
        producing.cancel()
        analyzer.stop()
