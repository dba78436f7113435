"""Analyzer throughput on one worker, next to a scoring-only loop over the same texts.

    .venv/bin/python bench/analyzer_throughput.py [--count 50000] [--broker tansu|kafka]

Produces the corpus to a fresh mentions.raw, then times, in one run:
  1. scoring only: VADER over every text, nothing else;
  2. a plain loop: aiokafka getmany + decode + VADER + in-memory per-brand counts;
  3. the analyzer: `ecoute analyzer` (both stages, every KPI table), from its first scored mention
     to the last, by the timestamps the broker keeps for them.
Prints mentions/s for each and the ratios, and for the plain loop and the analyzer also mentions per
second of their own CPU time (all threads): on a shared machine that figure moves less with what else
runs. Results go to BENCHMARKS.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import make_corpus  # noqa: E402
from ecoute.brokers import KafkaCluster, TansuBroker, free_port  # noqa: E402
from schemas import Topics, ensure_topics  # noqa: E402
from services.analyzer.tone import ToneScorer  # noqa: E402

CONFIG = """brands:
  acme: {query: 'acme OR "#acme"'}
  globex: {query: [globex]}
topics:
  pricing: [price, prices, expensive]
  support: [support, "customer service"]
  product: [battery, camera, screen, update]
"""


def scoring_only(texts: list[str]) -> float:
    scorer = ToneScorer()
    started = time.perf_counter()
    for text in texts:
        scorer.score(text)
    return len(texts) / (time.perf_counter() - started)


async def produce_corpus(bootstrap: str, topic: str, corpus: list[dict[str, object]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = [await producer.send(topic, orjson.dumps(m), key=str(m["id"]).encode()) for m in corpus]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def plain_loop(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    """Mentions per second of wall time, and per second of this process's CPU time."""
    scorer = ToneScorer()
    counts: dict[tuple[str, str], int] = {}
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"plain-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    seen = 0
    started = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if started is None and batch:
                started, cpu_started = time.perf_counter(), time.process_time()
            for messages in batch.values():
                for message in messages:
                    mention = orjson.loads(message.value)
                    text = mention["text"]
                    label = scorer.score(text).label
                    brand = "acme" if "acme" in text else "globex"
                    counts[(brand, label)] = counts.get((brand, label), 0) + 1
                    seen += 1
    finally:
        await consumer.stop()
    assert started is not None
    return n / (time.perf_counter() - started), n / (time.process_time() - cpu_started)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processed(metrics_url: str, stage: str) -> float:
    # Uncompressed: gzipping the page would take the worker's CPU (and GIL) while it is being timed.
    text = httpx.get(metrics_url, timeout=2, headers={"Accept-Encoding": "identity"}).text
    match = re.search(rf'ecoute_analyzer_mentions_processed_total\{{stage="{stage}"\}} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


async def scored_rate(bootstrap: str, topic: str, partitions: int, isolation_level: str = "read_uncommitted") -> float:
    """Scored mentions per second, from the broker timestamps (CreateTime, set when the analyzer
    sends them) of everything on `topic`: those after the first send over the time to the last.
    With Kafka transactions, read `read_committed`, or an aborted attempt's records would count too."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation_level)
    await consumer.start()
    stamps: list[int] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=50_000)).values():
                stamps.extend(r.timestamp for r in records)
    finally:
        await consumer.stop()
    first, last = min(stamps), max(stamps)
    return sum(1 for t in stamps if t > first) / max((last - first) / 1000, 1e-3)


def analyzer_rate(bootstrap: str, prefix: str, n: int, partitions: int, workdir: Path) -> tuple[float, float, float]:
    """Scored mentions per second of wall time and per second of the worker's CPU time; stage 2's records."""
    config = workdir / "ecoute.yaml"
    config.write_text(CONFIG)
    port = free_port()
    env = {
        **os.environ,
        "ECOUTE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ECOUTE_CONFIG": str(config),
        "ECOUTE_TOPIC_PREFIX": prefix,
        "ECOUTE_ANALYZER_APP_ID": f"{prefix}analyzer",
        "ECOUTE_ANALYZER_METRICS_PORT": str(port),
        "ECOUTE_ANALYZER_DATA_DIR": str(workdir / "data"),
        "ECOUTE_LOG_LEVEL": "WARNING",
        "ECOUTE_PARTITIONS": str(partitions),
    }
    log = open(workdir / "analyzer.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecoute.cli", "analyzer"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}/metrics"
    first: tuple[float, float] | None = None  # (processed, CPU seconds) at the first poll that saw work
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"analyzer exited with {proc.returncode}; see {workdir / 'analyzer.log'}")
            try:
                count = processed(url, "stage1")
            except httpx.HTTPError:
                count = 0.0
            cpu = cpu_seconds(proc.pid)
            if first is None and count > 0:
                first = (count, cpu)
            if count >= n:
                assert first is not None
                cpu_rate = (count - first[0]) / max(cpu - first[1], 1e-3)
                stage2 = processed(url, "stage2")
                return asyncio.run(scored_rate(bootstrap, Topics(prefix).mentions_scored, partitions)), cpu_rate, stage2
            time.sleep(0.5)  # rarely: the rate comes from the output records' timestamps, not from here
        raise RuntimeError("analyzer did not finish within 600 s")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--broker", choices=["tansu", "kafka"], default="tansu")
    parser.add_argument("--partitions", type=int, default=1)
    args = parser.parse_args()
    broker = TansuBroker() if args.broker == "tansu" else KafkaCluster()
    broker.start()
    workdir = Path(tempfile.mkdtemp(prefix="ecoute-bench-"))
    try:
        prefix = f"bench-{uuid.uuid4().hex[:8]}."
        topics = Topics(prefix)
        corpus = make_corpus(args.count)
        texts = [str(m["text"]) for m in corpus]
        asyncio.run(ensure_topics(broker.bootstrap_servers, topics, args.partitions))
        print(f"producing {args.count} mentions to {topics.mentions_raw} ({args.broker}) …", flush=True)
        asyncio.run(produce_corpus(broker.bootstrap_servers, topics.mentions_raw, corpus))
        score_rate = scoring_only(texts)
        print(f"scoring only   {score_rate:10.0f} mentions/s", flush=True)
        plain_rate, plain_cpu = asyncio.run(plain_loop(broker.bootstrap_servers, topics.mentions_raw, args.count))
        print(f"plain loop     {plain_rate:10.0f} mentions/s, {plain_cpu:8.0f} per CPU second", flush=True)
        bootstrap = broker.bootstrap_servers
        rate, cpu_rate, stage2_records = analyzer_rate(bootstrap, prefix, args.count, args.partitions, workdir)
        print(
            f"analyzer       {rate:10.0f} mentions/s, {cpu_rate:8.0f} per CPU second"
            f" (stage 2 read {stage2_records:.0f} partials)",
            flush=True,
        )
        print(
            f"ratios: analyzer/scoring {rate / score_rate:.2f}, analyzer/plain loop {rate / plain_rate:.2f},"
            f" per CPU second {cpu_rate / plain_cpu:.2f}\n"
            f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        )
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
