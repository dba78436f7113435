"""Analyzer scaling: one worker, then two workers in the same groups, over a 4-partition mentions.raw.

    .venv/bin/python bench/analyzer_scaling.py [--count 100000] [--broker kafka|tansu] [--rounds 1]

Each run gets fresh topics (a new prefix) and a new app id. Its workers (`ecoute analyzer` processes,
each with its own metrics port and data dir) start first, with nothing to read, and the run waits
until both consumer groups (stage 1's `<app id>-stage1`, stage 2's Faust group `<app id>`) are
stable with every worker in them: a rebalance never falls inside the timing. Then the corpus goes to
mentions.raw — in one Kafka transaction on Apache Kafka, so the workers see it all at once and the
producer is not competing for the CPU while they work — and the rate is the scored mentions the
workers sent, from the first one to the last, by the timestamps the broker keeps for them (as in
bench/analyzer_throughput.py). Their /metrics are read twice a second only to see when they are done
and for the CPU figures: a page every 0.1 s cost the workers and this process a fifth of a core.
Issue 4's target: two workers ≥ 1.6× one worker's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.protocol.admin import DescribeGroupsRequest_v1, DescribeGroupsRequest_v2
from aiokafka.protocol.api import Request

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.analyzer_throughput import CONFIG, processed, produce_corpus, scored_rate  # noqa: E402
from bench.corpus import make_corpus  # noqa: E402
from ecoute.brokers import KafkaCluster, TansuBroker, free_port  # noqa: E402
from schemas import Topics, ensure_topics  # noqa: E402

PARTITIONS = 4
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent not idle so far (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def broker_pids(broker: KafkaCluster | TansuBroker) -> list[int]:
    if isinstance(broker, TansuBroker):
        return [broker.proc.pid] if broker.proc else []
    return [node.proc.pid for node in broker.nodes if node.proc]


@dataclass
class Worker:
    """One `ecoute analyzer` process started by a benchmark."""

    name: str
    proc: subprocess.Popen[bytes]
    metrics_url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"analyzer {self.name} exited with {self.proc.returncode}; see {self.log}")

    def processed(self, stage: str = "stage1") -> float:
        try:
            return processed(self.metrics_url, stage)
        except httpx.HTTPError:
            return 0.0


def start_worker(
    name: str, bootstrap: str, prefix: str, app_id: str, config: str, partitions: int, workdir: Path
) -> Worker:
    """Start `ecoute analyzer` with its own metrics port and data dir; its log goes to workdir/<name>.log."""
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "ecoute.yaml"
    config_path.write_text(config)
    port = free_port()
    env = {
        **os.environ,
        "ECOUTE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ECOUTE_CONFIG": str(config_path),
        "ECOUTE_TOPIC_PREFIX": prefix,
        "ECOUTE_ANALYZER_APP_ID": app_id,
        "ECOUTE_ANALYZER_METRICS_PORT": str(port),
        "ECOUTE_ANALYZER_DATA_DIR": str(home / "data"),
        "ECOUTE_LOG_LEVEL": "WARNING",
        "ECOUTE_PARTITIONS": str(partitions),
    }
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecoute.cli", "analyzer"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Worker(name, proc, f"http://127.0.0.1:{port}/metrics", log)


def stop_workers(workers: Sequence[Worker]) -> None:
    """SIGTERM every worker first (so none waits on a rebalance for the others), then reap each by PID."""
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait(timeout=10)


class DescribeGroupsUpToV2(Request[DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]):  # type: ignore[misc]
    # aiokafka 0.14.0 parses a DescribeGroups v3 answer with the v2 layout (no authorized_operations)
    # and fails on it: ask for v2 at most, which has every field read here.
    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups

    def build(
        self, request_struct_class: type[DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]
    ) -> DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2:
        return request_struct_class(self.groups)


async def group_members(bootstrap: str, groups: Sequence[str]) -> dict[str, tuple[str, list[list[int] | None]]]:
    """Per group: its state and, per member, the partitions it has of the topics it was assigned (None when the
    broker doesn't say: Tansu answers DescribeGroups without the members' assignments)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = []
        for group_id in groups:
            node_id = await admin.find_coordinator(group_id)
            responses.append(await admin._client.send(node_id, DescribeGroupsUpToV2([group_id])))
    finally:
        await admin.close()
    out: dict[str, tuple[str, list[list[int] | None]]] = {}
    for response in responses:
        for group in response.groups:
            _, group_id, state, _, _, members = group[:6]
            assigned: list[list[int] | None] = []
            for member in members:
                raw = member[4]
                parts = ConsumerProtocolMemberAssignment.decode(raw).partitions() if raw else None
                assigned.append(sorted(tp.partition for tp in parts) if parts is not None else None)
            out[group_id] = (state, assigned)
    return out


def wait_settled(bootstrap: str, app_id: str, workers: Sequence[Worker], timeout: float = 180.0) -> float:
    """Wait until stage 1's and stage 2's groups are stable with every worker holding partitions (or, where the
    broker doesn't describe assignments, stable with every worker in them)."""
    groups = [f"{app_id}-stage1", app_id]
    started = time.monotonic()
    deadline = started + timeout
    last: dict[str, tuple[str, list[list[int] | None]]] = {}
    while time.monotonic() < deadline:
        for worker in workers:
            worker.check_alive()
        try:
            last = asyncio.run(group_members(bootstrap, groups))
        except Exception as exc:  # the coordinator may not be there yet: ask again
            last = {"error": (repr(exc), [])}
        if all(
            g in last
            and last[g][0] == "Stable"
            and len(last[g][1]) == len(workers)
            and all(a is None or a for a in last[g][1])
            for g in groups
        ):
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"the groups did not settle within {timeout:.0f} s: {last}")


async def produce_at_once(bootstrap: str, topic: str, corpus: list[dict[str, object]], transactional: bool) -> None:
    """The corpus in one transaction (visible to read_committed readers at its commit), or plainly."""
    if not transactional:
        await produce_corpus(bootstrap, topic, corpus)
        return
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"bench-{uuid.uuid4().hex}",
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        max_batch_size=1 << 20,
        transaction_timeout_ms=300_000,
    )
    await producer.start()
    try:
        async with producer.transaction():
            futures = [await producer.send(topic, orjson.dumps(m), key=str(m["id"]).encode()) for m in corpus]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass
class Timing:
    rate: float
    seconds: float
    per_worker: list[float]
    stage2: float
    settle_seconds: float
    # Cores used over the timed span: by all the workers together, by the broker, by everything else.
    worker_cores: float
    broker_cores: float
    other_cores: float


def time_workers(
    workers: Sequence[Worker], n: int, broker: list[int], timeout: float = 300.0
) -> tuple[float, list[float], tuple[float, float, float]]:
    """Poll the workers' stage-1 counters until they add up to `n`.

    Returns the seconds from the first processed batch seen to the last, the per-worker counts, and the cores
    used over that span by the workers, by the broker, and by anything else on the machine.
    """
    deadline = time.monotonic() + timeout
    first_at = None
    cpu_at_first = (0.0, 0.0, 0.0)
    while time.monotonic() < deadline:
        for worker in workers:
            worker.check_alive()
        counts = [w.processed() for w in workers]
        now = time.perf_counter()
        total = sum(counts)
        if total and first_at is None:
            first_at = now
            cpu_at_first = (
                sum(cpu_seconds(w.pid) for w in workers),
                sum(cpu_seconds(p) for p in broker),
                machine_busy_seconds(),
            )
        if total >= n:
            assert first_at is not None
            seconds = max(now - first_at, 1e-9)
            worker_cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_at_first[0]
            broker_cpu = sum(cpu_seconds(p) for p in broker) - cpu_at_first[1]
            other_cpu = machine_busy_seconds() - cpu_at_first[2] - worker_cpu - broker_cpu
            cores = (worker_cpu / seconds, broker_cpu / seconds, max(0.0, other_cpu) / seconds)
            return seconds, counts, cores
        # Twice a second: each poll costs every worker a /metrics page; the rate itself comes from the
        # broker's timestamps on the scored records (see `run`), not from these polls.
        time.sleep(0.5)
    raise RuntimeError(f"the workers did not process {n} mentions within {timeout:.0f} s")


def run(
    broker: KafkaCluster | TansuBroker,
    transactional: bool,
    corpus: list[dict[str, object]],
    n_workers: int,
    workdir: Path,
) -> Timing:
    broker_bootstrap = broker.bootstrap_servers
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}."
    app_id = f"{prefix}analyzer"
    topics = Topics(prefix)
    asyncio.run(ensure_topics(broker_bootstrap, topics, PARTITIONS))
    workers: list[Worker] = []
    try:
        for i in range(n_workers):
            workers.append(
                start_worker(
                    f"{run_id}-w{i + 1}", broker_bootstrap, prefix, app_id, CONFIG, PARTITIONS, workdir / run_id
                )
            )
        print(f"  {n_workers} worker(s) started (pids {', '.join(str(w.pid) for w in workers)})", flush=True)
        settle = wait_settled(broker_bootstrap, app_id, workers)
        time.sleep(2.0)  # Faust's recovery of the (empty) tables after the assignment
        print(f"  groups stable after {settle:.1f} s; producing {len(corpus)} mentions …", flush=True)
        asyncio.run(produce_at_once(broker_bootstrap, topics.mentions_raw, corpus, transactional))
        seconds, counts, cores = time_workers(workers, len(corpus), broker_pids(broker))
        stage2 = sum(w.processed("stage2") for w in workers)
        isolation = "read_committed" if transactional else "read_uncommitted"
        rate = asyncio.run(scored_rate(broker_bootstrap, topics.mentions_scored, PARTITIONS, isolation))
        return Timing(rate, seconds, counts, stage2, settle, *cores)
    finally:
        stop_workers(workers)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--broker", choices=["kafka", "tansu"], default="kafka")
    parser.add_argument("--rounds", type=int, default=1, help="one-worker / two-worker pairs to run")
    args = parser.parse_args()
    broker = TansuBroker() if args.broker == "tansu" else KafkaCluster()
    broker.start()
    workdir = Path(tempfile.mkdtemp(prefix="ecoute-bench-scaling-"))
    transactional = args.broker == "kafka"  # Tansu has no transactions: the corpus arrives as it is produced
    try:
        corpus = make_corpus(args.count)
        print(f"{args.count} mentions, {PARTITIONS} partitions, {args.broker}; logs in {workdir}", flush=True)
        ratios = []
        for round_ in range(1, args.rounds + 1):
            results = {}
            for n_workers in (1, 2):
                print(f"round {round_}: {n_workers} worker(s)", flush=True)
                timing = run(broker, transactional, corpus, n_workers, workdir)
                results[n_workers] = timing
                shares = " + ".join(f"{c:.0f}" for c in timing.per_worker)
                print(
                    f"  {n_workers} worker(s): {timing.rate:8.0f} mentions/s ({timing.seconds:.1f} s; "
                    f"stage 1 records per worker {shares}; stage 2 read {timing.stage2:.0f} partials; "
                    f"cores used: workers {timing.worker_cores:.2f}, broker {timing.broker_cores:.2f}, "
                    f"the rest of the machine {timing.other_cores:.2f})",
                    flush=True,
                )
            ratio = results[2].rate / results[1].rate
            ratios.append(ratio)
            print(f"round {round_}: two workers / one worker = {ratio:.2f} (target ≥ 1.6)", flush=True)
        print(
            f"ratios: {', '.join(f'{r:.2f}' for r in ratios)}\n"
            f"machine: {platform.machine()}, {os.cpu_count()} cores (broker included), "
            f"Python {platform.python_version()}"
        )
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
