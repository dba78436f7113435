"""Analyzer CPU seconds per mention with 1, 2 and 3 workers on a 3-node Apache Kafka cluster (RF 3, min ISR 2).

    .venv/bin/python bench/analyzer_cpu_cluster.py [--count 60000] [--rounds 1]

On a 2-core machine the rate of several workers is capped by the cores, not by the code (see BENCHMARKS.md,
issue 4), so the honest scaling figure here is the CPU one: what a mention costs the workers, summed over all
of them, as more workers share a 6-partition mentions.raw. Each run gets fresh topics (created at replication
factor 3) and a new app id; its workers start with nothing to read and the run waits until both consumer groups
are stable with every worker holding partitions, then the corpus arrives in one transaction, and the workers' CPU
time (user + system, /proc) is taken from their first processed batch to the last (bench/analyzer_scaling.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.analyzer_scaling import (  # noqa: E402
    broker_pids,
    produce_at_once,
    start_worker,
    stop_workers,
    time_workers,
    wait_settled,
)
from bench.analyzer_throughput import CONFIG  # noqa: E402
from bench.corpus import make_corpus  # noqa: E402
from ecoute.brokers import KafkaCluster  # noqa: E402
from schemas import Topics, ensure_topics  # noqa: E402

PARTITIONS = 6


def run(cluster: KafkaCluster, corpus: list[dict[str, object]], n_workers: int, workdir: Path) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"cpu-{run_id}."
    app_id = f"{prefix}analyzer"
    bootstrap = cluster.bootstrap_servers
    asyncio.run(ensure_topics(bootstrap, Topics(prefix), PARTITIONS, replication=3))
    workers = []
    try:
        for i in range(n_workers):
            workers.append(
                start_worker(f"{run_id}-w{i + 1}", bootstrap, prefix, app_id, CONFIG, PARTITIONS, workdir / run_id)
            )
        settle = wait_settled(bootstrap, app_id, workers)
        time.sleep(2.0)  # Faust's recovery of the (empty) tables after the assignment
        asyncio.run(produce_at_once(bootstrap, Topics(prefix).mentions_raw, corpus, transactional=True))
        seconds, counts, (worker_cores, broker_cores, other_cores) = time_workers(
            workers, len(corpus), broker_pids(cluster)
        )
        worker_cpu = worker_cores * seconds
        return {
            "workers": n_workers,
            "seconds": seconds,
            "rate": len(corpus) / seconds,
            "cpu_us_per_mention": worker_cpu / len(corpus) * 1e6,
            "worker_cores": worker_cores,
            "broker_cores": broker_cores,
            "other_cores": other_cores,
            "settle": settle,
            "shares": " + ".join(f"{c:.0f}" for c in counts),
        }
    finally:
        stop_workers(workers)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    os.environ["ECOUTE_REPLICATION_FACTOR"] = "3"  # the workers create their own topics (seen ids, changelogs)
    cluster = KafkaCluster(size=3).start()
    workdir = Path(tempfile.mkdtemp(prefix="ecoute-bench-cpu-"))
    try:
        corpus = make_corpus(args.count)
        print(
            f"{args.count} mentions, {PARTITIONS} partitions, 3-node Kafka (RF 3, min ISR 2); "
            f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; logs in {workdir}",
            flush=True,
        )
        for round_ in range(1, args.rounds + 1):
            for n_workers in (1, 2, 3):
                r = run(cluster, corpus, n_workers, workdir)
                print(
                    f"round {round_}: {n_workers} worker(s): {r['cpu_us_per_mention']:.0f} µs CPU a mention "
                    f"({r['cpu_us_per_mention'] / 1e6:.6f} s); {r['rate']:.0f} mentions/s over {r['seconds']:.1f} s; "
                    f"stage 1 per worker {r['shares']}; cores: workers {r['worker_cores']:.2f}, "
                    f"brokers {r['broker_cores']:.2f}, rest {r['other_cores']:.2f}",
                    flush=True,
                )
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
