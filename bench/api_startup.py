"""API start-up with a million scored mentions: replaying mentions.scored vs loading the views from the history store.

    .venv/bin/python bench/api_startup.py [--mentions 1000000] [--spreads 24h,90d] [--runs 2] [--brands 5]

Starts Apache Kafka (ecoute.brokers.KafkaCluster, one node) and PostgreSQL (ecoute.postgres.LocalPostgres). For
each spread, on topics of their own: --mentions scored mentions about --brands brands, published evenly over the
spread up to now (24h: every one inside the views' 25 h; 90d: most of them older, so the store hands over only
the last day's), produced to mentions.scored (4 partitions, record i to partition i mod 4, so each record's
offset is known; no compression, batches of up to 1 MiB), and written to the store with its writer
(services/store/writer.write_batch, batches of 5,000 with the next offset of every partition, as the sink does).
Then `ecoute api` is started as a process --runs times each way, alternately: without ECOUTE_DATABASE_URL (it
replays the topic) and with it (it loads the store, then reads Kafka from the stored offsets). Each run: the
time from process start to /healthz 200 (imports, app) and to /readyz 200 (views ready), and the process's peak
RSS (VmHWM) and CPU time once ready, the CPU time Kafka and PostgreSQL (all their processes) spent meanwhile,
and the machine's 1-minute load average then (the machine is shared); the
views' sizes of both ways are compared (each store run with the replay run just before it). Not a test; the
figures go to BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ecoute.brokers import KafkaCluster, free_port  # noqa: E402
from ecoute.postgres import LocalPostgres  # noqa: E402
from schemas import ScoredMention, Topics, ensure_topics, load  # noqa: E402
from schemas.history import migrate  # noqa: E402
from services.store.rows import Batch  # noqa: E402
from services.store.writer import Partitions, write_batch  # noqa: E402

PARTITIONS = 4
CHUNK = 5000
MIB = 1024 * 1024
KEEP_ALL = datetime(2000, 1, 1, tzinfo=UTC)
SPREADS = {"24h": timedelta(hours=24), "90d": timedelta(days=90)}
TEXTS = [
    "{b} support answered in 2 minutes, impressed!",
    "the new {b} update drains my battery like crazy :(",
    "{b} prices went up again, way too expensive",
    "{b} delivery was late AGAIN. not happy at all",
    "loving the {b} camera, photos look amazing",
    "is {b} down for anyone else?",
    "{b} customer service is the worst, never again",
    "switched from {b} and I don't miss it",
    "{b} is fine I guess, nothing special",
    "Pourquoi {b} ne répond jamais au service client ?",
]
LABELS = [
    "positive",
    "negative",
    "negative",
    "negative",
    "positive",
    "neutral",
    "negative",
    "neutral",
    "neutral",
    "negative",
]
WORDS = [
    "battery",
    "camera",
    "screen",
    "price",
    "delivery",
    "refund",
    "app",
    "update",
    "store",
    "order",
    "shipping",
    "warranty",
    "charger",
    "case",
]


def scored_mention(i: int, brand: str, published: datetime, rng: random.Random) -> bytes:
    """One scored-mention/1 record, as stage 1 writes it (built as a dict: a million pydantic models would take
    longer than the rest of the set-up)."""
    pick = rng.randrange(len(TEXTS))
    text = TEXTS[pick].format(b=brand) + " " + " ".join(rng.sample(WORDS, 3))
    label = LABELS[pick]
    compound = {"positive": 0.62, "negative": -0.55, "neutral": 0.0}[label]
    stamp = published.isoformat().replace("+00:00", "Z")
    author = f"u{rng.randrange(50_000)}"
    return orjson.dumps(
        {
            "schema": "scored-mention/1",
            "id": f"bench:{i}",
            "source": "simulate",
            "url": f"https://forum{i % 50}.example/t/{i}",
            "site": f"forum{i % 50}.example",
            "published_at": stamp,
            "fetched_at": stamp,
            "author": {"id": author, "handle": author, "followers": rng.randrange(20_000)},
            "text": text,
            "lang": "fr" if pick == 9 else "en",
            "engagement": {"likes": rng.randrange(50), "shares": rng.randrange(5), "comments": rng.randrange(5)},
            "brand": brand,
            "sentiment": {"compound": compound, "pos": 0.3, "neu": 0.5, "neg": 0.2, "label": label},
            "topics": ["pricing"] if pick == 2 else [],
            "matched": [brand],
            "reach": rng.randrange(20_000),
            "scored_at": stamp,
        }
    )


async def fill(bootstrap: str, url: str, prefix: str, n: int, brands: list[str], spread: timedelta) -> dict[str, float]:
    """Produce n mentions to <prefix>mentions.scored and write the same to the store with their offsets."""
    topics = Topics(prefix)
    await ensure_topics(bootstrap, topics, PARTITIONS, 1)
    await migrate(url)
    rng = random.Random(7)
    end = datetime.now(UTC)
    step = spread / n
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,  # in order per partition: record i is at offset i // PARTITIONS
        linger_ms=20,
        max_batch_size=1 * MIB,
        max_request_size=4 * MIB,
    )
    await producer.start()
    produce_s = store_s = 0.0
    partitions = Partitions()
    try:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            for first in range(0, n, CHUNK):
                last = min(n, first + CHUNK)
                values = [
                    scored_mention(i, brands[i % len(brands)], end - spread + step * (i + 1), rng)
                    for i in range(first, last)
                ]
                if first == 0:
                    load(ScoredMention, values[0])  # the hand-built records are valid ones
                started = time.perf_counter()
                sent = [
                    await producer.send(
                        topics.mentions_scored, value, key=brands[i % len(brands)].encode(), partition=i % PARTITIONS
                    )
                    for i, value in zip(range(first, last), values, strict=True)
                ]
                await asyncio.gather(*sent)
                produce_s += time.perf_counter() - started
                started = time.perf_counter()
                batch = Batch()
                for i, value in zip(range(first, last), values, strict=True):
                    batch.add("mentions.scored", brands[i % len(brands)].encode(), value)
                for p in range(PARTITIONS):
                    batch.offsets[(topics.mentions_scored, p)] = (last - p + PARTITIONS - 1) // PARTITIONS
                await write_batch(conn, batch, KEEP_ALL, partitions)
                store_s += time.perf_counter() - started
                if (last // CHUNK) % 40 == 0:
                    print(f"    {last:,} mentions in Kafka and the store", flush=True)
            await conn.execute("ANALYZE mentions")
    finally:
        await producer.stop()
    return {"produce_s": produce_s, "store_s": store_s}


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat); with `children`, that of its children too,
    the ended ones it has waited for (a PostgreSQL backend, once its connection closed) and the live ones."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                child = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(child[1]) == pid:
                ticks += sum(int(n) for n in child[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def start_api(env: dict[str, str], log: Path) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    """Start `ecoute api`, wait for /readyz 200; the timings, peak RSS and what it answered."""
    url = f"http://127.0.0.1:{env['ECOUTE_API_PORT']}"
    started = time.monotonic()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecoute.cli", "api"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    healthy: float | None = None
    deadline = started + 900
    with httpx.Client(base_url=url, timeout=5) as client:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the API exited with {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the API was not ready within 900 s; see {log}")
            try:
                if healthy is None and client.get("/healthz").status_code == 200:
                    healthy = time.monotonic() - started
                ready = client.get("/readyz")
                if ready.status_code == 200:
                    ready_s = time.monotonic() - started
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        result = {
            "healthy_s": healthy or ready_s,
            "ready_s": ready_s,
            "peak_rss": peak_rss(proc.pid),
            "cpu_s": cpu_seconds(proc.pid),
            "load": float(Path("/proc/loadavg").read_text().split()[0]),
            "views": ready.json()["views"],
            "metrics": client.get("/metrics").text,
        }
    return result, proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def counter(text: str, name: str, topic: str) -> int:
    found = re.search(rf'^{name}\{{topic="{re.escape(topic)}"\}} (\S+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def machine(kafka_lib: str) -> list[str]:
    cpu = "unknown CPU"
    found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    cpu = found.group(1) if found else cpu
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    memory = f", {int(mem.group(1)) / MIB:.0f} GiB" if mem else ""
    return [
        f"{platform.system()} {platform.release()}, {platform.machine()}, {os.cpu_count()} CPUs ({cpu}){memory}",
        f"Python {platform.python_version()}, psycopg {psycopg.__version__}, Kafka {kafka_lib}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mentions", type=int, default=1_000_000)
    parser.add_argument("--spreads", default="24h,90d", help="comma-separated, among " + ", ".join(SPREADS))
    parser.add_argument("--runs", type=int, default=2, help="starts of the API each way, alternately")
    parser.add_argument("--brands", type=int, default=5)
    args = parser.parse_args()
    spreads = [s.strip() for s in args.spreads.split(",") if s.strip()]
    for spread in spreads:
        if spread not in SPREADS:
            parser.error(f"--spreads: unknown spread {spread!r}; use {', '.join(SPREADS)}")
    brands = [f"brand{i}" for i in range(args.brands)]
    workdir = Path(tempfile.mkdtemp(prefix="ecoute-bench-startup-"))
    config = workdir / "ecoute.yaml"
    config.write_text("brands:\n" + "".join(f"  {b}: {{query: {b}}}\n" for b in brands), encoding="utf-8")
    kafka_lib = next((p.name for p in (ROOT / "deploy/kafka/lib").glob("kafka_2.13-*.jar")), "?")

    print(f"$ {shlex.join([sys.executable.replace(str(ROOT) + '/', ''), *sys.argv])}")
    for line in machine(kafka_lib):
        print(f"  {line}")
    kafka = KafkaCluster(size=1, heap="1g").start()
    postgres = LocalPostgres().start()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for spread in spreads:
            prefix = f"bench-startup-{spread}-{uuid.uuid4().hex[:6]}."
            url = postgres.create_database(f"bench_{spread}_{uuid.uuid4().hex[:6]}")
            print(f"\n{spread}: {args.mentions:,} mentions over {spread} about {len(brands)} brands", flush=True)
            filled = asyncio.run(fill(kafka.bootstrap_servers, url, prefix, args.mentions, brands, SPREADS[spread]))
            print(f"  produced in {filled['produce_s']:.0f} s, stored in {filled['store_s']:.0f} s", flush=True)
            base_env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("ECOUTE_")},
                "ECOUTE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "ECOUTE_TOPIC_PREFIX": prefix,
                "ECOUTE_CONFIG": str(config),
                "ECOUTE_LOG_LEVEL": "INFO",
            }
            runs: dict[str, list[dict[str, Any]]] = {"replay": [], "store": []}
            for run in range(args.runs):
                for mode in ("replay", "store"):
                    env = {**base_env, "ECOUTE_API_PORT": str(free_port())}
                    if mode == "store":
                        env["ECOUTE_DATABASE_URL"] = url
                    servers = (kafka.nodes[0].proc.pid, postgres.proc.pid)
                    before = [cpu_seconds(pid, children=True) for pid in servers]
                    result, proc = start_api(env, workdir / f"api-{spread}-{mode}-{run}.log")
                    after = [cpu_seconds(pid, children=True) for pid in servers]
                    result["kafka_cpu_s"], result["postgres_cpu_s"] = (
                        b - a for a, b in zip(before, after, strict=True)
                    )
                    stop(proc)
                    result["store_rows"] = counter(
                        result["metrics"], "ecoute_api_view_store_rows_total", "mentions.scored"
                    )
                    result["kafka_records"] = counter(
                        result["metrics"], "ecoute_api_view_records_total", "mentions.scored"
                    )
                    runs[mode].append(result)
                    print(
                        f"  {mode:6} run {run + 1}: healthy {result['healthy_s']:5.1f} s,"
                        f" ready {result['ready_s']:6.1f} s (CPU: API {result['cpu_s']:5.1f} s, Kafka"
                        f" {result['kafka_cpu_s']:4.1f} s, PostgreSQL {result['postgres_cpu_s']:4.1f} s),"
                        f" peak RSS {result['peak_rss'] / MIB:5.0f} MiB, load {result['load']:4.1f};"
                        f" mentions from the store {result['store_rows']:,}, from Kafka {result['kafka_records']:,}",
                        flush=True,
                    )
            # Each store run against the replay run just before it: the 25 h window slides between runs (with
            # the 90d spread, ~8 mentions a minute leave it), so runs minutes apart differ by that much.
            print(f"  views: {runs['replay'][0]['views']}")
            for run, (replayed, stored) in enumerate(zip(runs["replay"], runs["store"], strict=True)):
                differ = {
                    name: (replayed["views"].get(name), stored["views"].get(name))
                    for name in replayed["views"].keys() | stored["views"].keys()
                    if replayed["views"].get(name) != stored["views"].get(name)
                }
                print(f"  run {run + 1}: " + (f"views differ (replay, store): {differ}" if differ else "same views"))
            results[spread] = runs
    finally:
        postgres.stop()
        kafka.stop()

    print("\nsummary (median of the runs; ratio = replay / store)")
    for spread, runs in results.items():
        ready = {mode: statistics.median(r["ready_s"] for r in found) for mode, found in runs.items()}
        rss = {mode: statistics.median(r["peak_rss"] for r in found) for mode, found in runs.items()}
        cpu = {
            mode: statistics.median(r["cpu_s"] + r["kafka_cpu_s"] + r["postgres_cpu_s"] for r in found)
            for mode, found in runs.items()
        }
        print(
            f"  {spread}: ready {ready['replay']:.1f} s → {ready['store']:.1f} s"
            f" ({ready['replay'] / ready['store']:.1f}×),"
            f" CPU (API + Kafka + PostgreSQL) {cpu['replay']:.1f} s → {cpu['store']:.1f} s,"
            f" peak RSS {rss['replay'] / MIB:.0f} → {rss['store'] / MIB:.0f} MiB"
            f" ({rss['replay'] / rss['store']:.2f}×)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
