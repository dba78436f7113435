"""Analyzer memory with 100 brands and a day of mentions: does the worker's RSS stay bounded?

    .venv/bin/python bench/analyzer_memory.py [--counts 200000 400000] [--broker kafka|tansu]
    .venv/bin/python bench/analyzer_memory.py --in-process --counts 100000 [--tracemalloc]  # what holds it

For each count: a fresh mentions.raw gets that many posts about 100 brands (`brandNN OR "#brandNN"`),
published evenly over the last 24 hours (oldest first, so stage 2 fills and prunes 1m, 1h and 1d
buckets as a live stream would) by up to --authors distinct authors. Then one `ecoute analyzer`
reads it all while its RSS is sampled every 0.5 s (/proc/PID/status), until stage 1 has processed
every mention and stage 2 every partial. Issue 4's target: peak RSS under 512 MiB; it must not grow
with the mentions read.

--in-process runs pipeline.Stage1 and Stage2 in this process instead (no broker, no Faust), as the
worker does: a seen-ids set per input partition, a dict of buckets, a state per brand. It prints the
size of each of those structures (and, with --tracemalloc, the biggest allocation sites).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import re
import sys
import tempfile
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.analyzer_scaling import Worker, produce_at_once, start_worker, stop_workers, wait_settled  # noqa: E402
from bench.corpus import brand_names, brands_config, make_corpus  # noqa: E402
from ecoute.brokers import KafkaCluster, TansuBroker  # noqa: E402
from schemas import Topics, ensure_topics  # noqa: E402

PARTITIONS = 4
BRANDS = 100
MIB = 1024 * 1024


def corpus_for(n: int, authors: int) -> list[dict[str, Any]]:
    return make_corpus(n, brands=brand_names(BRANDS), authors=authors, span=timedelta(days=1))


# --- the worker as a process -----------------------------------------------------------------------


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in bytes; (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    return int(values.get("VmRSS", 0)) * 1024, int(values.get("VmHWM", 0)) * 1024


def metric(worker: Worker, name: str, labels: str) -> float:
    try:
        text = httpx.get(worker.metrics_url, timeout=2).text
    except httpx.HTTPError:
        return 0.0
    match = re.search(rf"{re.escape(name)}\{{{re.escape(labels)}\}} ([0-9.e+]+)", text)
    return float(match.group(1)) if match else 0.0


def worker_peak(broker: KafkaCluster | TansuBroker, n: int, authors: int, workdir: Path) -> dict[str, float]:
    """Run one analyzer on fresh topics, give it n mentions, return its RSS figures (bytes).

    The worker starts on empty topics, so its idle RSS is the figure once its groups are stable; the
    peak is the kernel's high-water mark (VmHWM), which no sampling interval can miss.
    """
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    app_id = f"{prefix}analyzer"
    topics = Topics(prefix)
    asyncio.run(ensure_topics(broker.bootstrap_servers, topics, PARTITIONS))
    corpus = corpus_for(n, authors)
    distinct = len({m["author"]["id"] for m in corpus})
    config = brands_config(brand_names(BRANDS))
    worker = start_worker(f"mem-{n}", broker.bootstrap_servers, prefix, app_id, config, PARTITIONS, workdir)
    samples: list[tuple[float, int]] = []
    try:
        wait_settled(broker.bootstrap_servers, app_id, [worker])
        time.sleep(2.0)
        idle_rss, _ = rss(worker.pid)
        print(
            f"  idle RSS {idle_rss / MIB:.0f} MiB; producing {n} mentions ({distinct} distinct authors) …", flush=True
        )
        # In one transaction on Apache Kafka: the worker reads it all as a backlog, the worst case.
        asyncio.run(
            produce_at_once(broker.bootstrap_servers, topics.mentions_raw, corpus, isinstance(broker, KafkaCluster))
        )
        del corpus
        started = time.monotonic()
        deadline = started + 900
        stage1_done_at = None
        while time.monotonic() < deadline:
            worker.check_alive()
            now = time.monotonic() - started
            samples.append((now, rss(worker.pid)[0]))
            if metric(worker, "ecoute_analyzer_mentions_processed_total", 'stage="stage1"') >= n:
                stage1_done_at = stage1_done_at or now
                partials_out = metric(worker, "ecoute_analyzer_partials_total", 'direction="out"')
                stage2 = metric(worker, "ecoute_analyzer_mentions_processed_total", 'stage="stage2"')
                if stage2 >= partials_out > 0:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the analyzer did not finish within 900 s; see {worker.log}")
        end_rss, hwm = rss(worker.pid)
        sampled = max(current for _, current in samples)
        at_stage1_done = max(c for t, c in samples if t <= stage1_done_at)
        print(
            f"  stage 1 done after {stage1_done_at:.0f} s (RSS up to {at_stage1_done / MIB:.0f} MiB), "
            f"stage 2 after {now:.0f} s ({partials_out:.0f} partials)",
            flush=True,
        )
        return {"idle": idle_rss, "peak": max(sampled, hwm), "end": end_rss, "seconds": now}
    finally:
        stop_workers([worker])


# --- the same work in this process -----------------------------------------------------------------


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes held by a tree of dicts, lists, sets, tuples and scalars (each object counted once)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(deep_size(item, seen) for item in obj)
    return size


def batches(corpus: list[dict[str, Any]], size: int) -> Iterator[tuple[int, list[Any]]]:
    """Per input partition (by key hash, as the producer spreads them), batches of `size` raw records."""
    from services.analyzer.pipeline import RawRecord

    pending: dict[int, list[RawRecord]] = {p: [] for p in range(PARTITIONS)}
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    for mention in corpus:
        key = str(mention["id"]).encode()
        partition = zlib.crc32(key) % PARTITIONS
        pending[partition].append(RawRecord(partition, offsets[partition], key, orjson.dumps(mention)))
        offsets[partition] += 1
        if len(pending[partition]) == size:
            yield partition, pending[partition]
            pending[partition] = []
    for partition, records in pending.items():
        if records:
            yield partition, records


def in_process(n: int, authors: int, workdir: Path, trace: bool) -> None:
    from schemas import load_config
    from services.analyzer.pipeline import Stage1, Stage2, new_brand_state, parse_partial

    config_path = workdir / "ecoute.yaml"
    config_path.write_text(brands_config(brand_names(BRANDS)))
    config = load_config(config_path)
    stage1, stage2 = Stage1(config), Stage2(config)
    corpus = corpus_for(n, authors)
    if trace:
        tracemalloc.start(1)  # slows the run down several times
    seen: dict[int, set[str]] = {p: set() for p in range(PARTITIONS)}  # scoring.py's `_seen`
    buckets: dict[str, Any] = {}  # the kpi-buckets table
    states: dict[str, dict[str, Any]] = {}  # the brand-state table
    started = time.perf_counter()
    partials = 0
    for partition, records in batches(corpus, 1000):
        result = stage1.process(records, seen[partition].__contains__)
        seen[partition].update(mention_id for _, mention_id, _ in result.new_ids)
        by_brand: dict[str, list[dict[str, Any]]] = {}
        for partial in result.partials:
            by_brand.setdefault(partial["brand"], []).append(parse_partial(orjson.dumps(partial)))
        for brand, items in by_brand.items():
            state = states.setdefault(brand, new_brand_state())
            stage2.apply(brand, items, state, buckets)
            partials += len(items)
    seconds = time.perf_counter() - started
    del corpus
    snapshot = tracemalloc.take_snapshot() if trace else None
    windows: dict[str, list[int]] = {}
    authors_kept: dict[str, int] = {}
    for key, bucket in buckets.items():
        window = key.split("|")[1]
        windows.setdefault(window, []).append(deep_size(bucket))
        authors_kept[window] = authors_kept.get(window, 0) + len(bucket["authors"])
    print(f"{n} mentions, {partials} partials, {seconds:.0f} s; RSS now {rss(os.getpid())[0] / MIB:.0f} MiB")
    print(f"  stage 1 seen-ids sets:   {sum(len(s) for s in seen.values()):>8} ids  {deep_size(seen) / MIB:8.1f} MiB")
    for window, sizes in sorted(windows.items()):
        print(
            f"  {window} buckets: {len(sizes):>6} kept, {authors_kept[window]:>8} author ids  "
            f"{sum(sizes) / MIB:8.1f} MiB (largest {max(sizes) / 1024:.0f} KiB)"
        )
    print(f"  brand states:            {len(states):>8}      {deep_size(states) / MIB:8.1f} MiB")
    if snapshot is None:
        return
    tracemalloc.stop()
    print("  tracemalloc, biggest allocation sites:")
    for stat in snapshot.statistics("lineno")[:10]:
        frame = stat.traceback[0]
        print(f"    {stat.size / MIB:7.1f} MiB {stat.count:>8} blocks  {frame.filename}:{frame.lineno}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", type=int, nargs="+", default=[200_000, 400_000])
    parser.add_argument("--authors", type=int, default=1_000_000, help="authors drawn from (most are distinct)")
    parser.add_argument("--broker", choices=["kafka", "tansu"], default="kafka")
    parser.add_argument("--in-process", action="store_true", help="Stage1/Stage2 here, with a memory breakdown")
    parser.add_argument("--tracemalloc", action="store_true", help="with --in-process: also the allocation sites")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ecoute-bench-memory-"))
    if args.in_process:
        for n in args.counts:
            in_process(n, args.authors, workdir, args.tracemalloc)
        return 0
    broker = TansuBroker() if args.broker == "tansu" else KafkaCluster()
    broker.start()
    results: dict[int, dict[str, float]] = {}
    try:
        print(f"{BRANDS} brands, a day of mentions, {PARTITIONS} partitions, {args.broker}; logs in {workdir}")
        for n in args.counts:
            print(f"{n} mentions:", flush=True)
            results[n] = worker_peak(broker, n, args.authors, workdir)
            r = results[n]
            print(
                f"  RSS idle {r['idle'] / MIB:.0f} MiB, peak {r['peak'] / MIB:.0f} MiB, at the end "
                f"{r['end'] / MIB:.0f} MiB; peak per 100k mentions {r['peak'] / MIB / (n / 100_000):.0f} MiB",
                flush=True,
            )
    finally:
        broker.stop()
    counts = sorted(results)
    for low, high in itertools.pairwise(counts):
        growth = (results[high]["peak"] - results[low]["peak"]) / MIB / ((high - low) / 100_000)
        print(f"peak growth {low} → {high}: {growth:+.1f} MiB per 100k more mentions")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (broker included), Python {platform.python_version()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
