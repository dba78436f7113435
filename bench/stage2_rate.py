"""Stage 2's input rate against the mention rate: one analyzer worker fed live at R, then at 10×R.

    .venv/bin/python bench/stage2_rate.py [--rate 500] [--factor 10] [--seconds 30] [--brands 10]
        [--partitions 4] [--warmup 5] [--broker kafka|tansu] [--rounds 1]

Each round gets fresh topics and a fresh app id. One `ecoute analyzer` worker starts on them (a config
with --brands made-up brands, `bench/corpus.py`) and the round waits until its groups are stable. Then
this process produces mentions to mentions.raw at a steady rate — R per second for --seconds, then
R × --factor for --seconds, without a pause — paced in 5 ms ticks, each mention published "now" with a
fresh id, as a live stream would bring them. Meanwhile it reads the worker's /metrics every second.

Per phase, over its steady window (the phase minus its first --warmup seconds and its last one):
- mentions/s produced (acknowledged by the broker) and read by stage 1 (`processed{stage="stage1"}`);
- whether stage 1 kept up: its rate within 5% of the produced rate, and its backlog (produced minus
  processed) not growing by more than one second of input over the window;
- kpi-partial records/s into stage 2: counted on the kpi.partials topic by their timestamps (set by
  stage 1 when it sends them, read_committed, after the worker has stopped), and, as a check, the
  records stage 2 took in (`processed{stage="stage2"}`);
- the stage-1 commits those partials came from (distinct origin partition and first offset) and
  their mean size in bytes.

Issue 4, item 9b: at 10× the mentions, stage 2's records/s stay within 1.2× (printed as the ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.analyzer_scaling import (  # noqa: E402
    Worker,
    broker_pids,
    cpu_seconds,
    machine_busy_seconds,
    start_worker,
    stop_workers,
    wait_settled,
)
from bench.corpus import brand_names, brands_config, make_corpus  # noqa: E402
from ecoute.brokers import KafkaCluster, TansuBroker  # noqa: E402
from schemas import Topics, ensure_topics  # noqa: E402

POOL = 20_000  # distinct posts cycled through (each sent with a fresh id and publication time)
TICK = 0.005  # the producer's pacing step, seconds
TAIL = 1.0  # seconds at the end of each phase left out of its window


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- what is sampled every second ----------------------------------------------------------------


@dataclass
class Sample:
    at: float  # wall clock (time.time()), like the broker timestamps
    values: dict[str, float]


def read_metrics(text: str) -> dict[str, float]:
    """The worker's counters and gauges this benchmark follows, by short name."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "ecoute_analyzer_mentions_processed_total":
                out[f"processed_{labels['stage']}"] = sample.value
            elif sample.name == "ecoute_analyzer_partials_total":
                out[f"partials_{labels['direction']}"] = sample.value
            elif sample.name == "ecoute_analyzer_consumer_lag":
                key = "lag_raw" if labels["topic"].endswith("mentions.raw") else "lag_partials"
                out[key] = out.get(key, 0.0) + sample.value
    return out


def value_at(samples: Sequence[Sample], key: str, at: float) -> float:
    """A sampled series at time `at`, linearly interpolated between the two samples around it."""
    before = [s for s in samples if s.at <= at]
    after = [s for s in samples if s.at >= at]
    if not before or not after:
        edge = (before or after)[-1 if before else 0]
        return edge.values.get(key, 0.0)
    lo, hi = before[-1], after[0]
    a, b = lo.values.get(key, 0.0), hi.values.get(key, 0.0)
    return a if hi.at == lo.at else a + (b - a) * (at - lo.at) / (hi.at - lo.at)


@dataclass
class Counts:
    """What the producer has sent and the broker has acknowledged so far."""

    sent: int = 0
    acked: int = 0
    failed: int = 0

    def on_ack(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.failed += 1
        else:
            self.acked += 1


@dataclass
class Phase:
    rate: float
    seconds: float
    start: float = 0.0  # wall clock
    end: float = 0.0


@dataclass
class Run:
    phases: list[Phase]
    samples: list[Sample] = field(default_factory=list)
    partials: list[tuple[float, int, int, int]] = field(default_factory=list)  # (at, partition, first offset, bytes)
    drain_seconds: float | None = None  # from the last mention sent until stage 1 had read them all
    stage2_drain_seconds: float | None = None  # … until stage 2 had taken every partial sent


# --- producing and sampling ----------------------------------------------------------------------


async def produce_phases(
    bootstrap: str,
    topic: str,
    pool: list[dict[str, Any]],
    run_id: str,
    phases: list[Phase],
    counts: Counts,
    check_alive: Callable[[], None],
) -> None:
    """Send at each phase's rate in turn: every tick, as many mentions as are due by then."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    i = 0
    try:
        for phase in phases:
            phase.start = time.time()
            started = time.perf_counter()
            sent = 0
            while (elapsed := time.perf_counter() - started) < phase.seconds:
                check_alive()  # a waitpid per tick: cheap
                due = int(phase.rate * elapsed) - sent
                if due > 0:
                    now = datetime.now(UTC).isoformat()
                    for _ in range(due):
                        mention = {**pool[i % len(pool)], "id": f"rate:{run_id}:{i}", "published_at": now}
                        future = await producer.send(topic, orjson.dumps(mention), key=mention["id"].encode())
                        future.add_done_callback(counts.on_ack)
                        i += 1
                    sent += due
                    counts.sent += due
                await asyncio.sleep(TICK)
            phase.end = time.time()
            log(f"    {phase.rate:.0f}/s for {phase.seconds:.0f} s: {sent} sent")
        await producer.flush()
    finally:
        await producer.stop()


async def sample_worker(worker: Worker, broker: list[int], counts: Counts, run: Run, stop: asyncio.Event) -> None:
    """Every second: the worker's metrics, the producer's counts and the CPU time of each party."""
    me = os.getpid()
    async with httpx.AsyncClient(timeout=2, headers={"Accept-Encoding": "identity"}) as client:
        while not stop.is_set():
            worker.check_alive()
            try:
                values = read_metrics((await client.get(worker.metrics_url)).text)
            except httpx.HTTPError:
                values = {}
            values |= {
                "sent": counts.sent,
                "acked": counts.acked,
                "cpu_worker": cpu_seconds(worker.pid),
                "cpu_broker": sum(cpu_seconds(p) for p in broker),
                "cpu_bench": cpu_seconds(me),
                "cpu_busy": machine_busy_seconds(),
            }
            run.samples.append(Sample(time.time(), values))
            if run.samples and len(run.samples) % 10 == 0:
                log(
                    f"    t={run.samples[-1].at - run.samples[0].at:5.0f} s  acked {counts.acked:>8}  "
                    f"stage 1 {values.get('processed_stage1', 0):>8.0f}  "
                    f"stage 2 {values.get('processed_stage2', 0):>6.0f}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


async def live(
    bootstrap: str, topic: str, worker: Worker, broker: list[int], pool: list[dict[str, Any]], run: Run, drain: float
) -> None:
    counts = Counts()
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sample_worker(worker, broker, counts, run, stop))
    try:
        await produce_phases(bootstrap, topic, pool, uuid.uuid4().hex[:8], run.phases, counts, worker.check_alive)
        if counts.failed:
            raise RuntimeError(f"{counts.failed} mentions were not acknowledged by the broker")
        # Drain: until stage 1 has read everything and stage 2 every partial sent so far.
        ended = time.time()
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and not sampler.done():
            last = run.samples[-1].values if run.samples else {}
            if last.get("processed_stage1", 0) >= counts.acked and run.drain_seconds is None:
                run.drain_seconds = run.samples[-1].at - ended
            if run.drain_seconds is not None and last.get("processed_stage2", 0) >= last.get("partials_out", 1):
                run.stage2_drain_seconds = run.samples[-1].at - ended
                break
            await asyncio.sleep(0.5)
    finally:
        stop.set()
        await sampler  # raises if the worker died


async def read_partials(bootstrap: str, topic: str, partitions: int) -> list[tuple[float, int, int, int]]:
    """Every committed kpi-partial on `topic`: (timestamp in s, origin partition, origin first offset, bytes)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    out: list[tuple[float, int, int, int]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        idle_polls = 0
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end] and idle_polls < 5:
            batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            idle_polls = 0 if batch else idle_polls + 1
            for records in batch.values():
                for record in records:
                    origin = orjson.loads(record.value or b"{}").get("origin", {})
                    out.append(
                        (
                            record.timestamp / 1000,
                            origin.get("partition", -1),
                            origin.get("first_offset", -1),
                            len(record.value or b""),
                        )
                    )
    finally:
        await consumer.stop()
    return out


# --- one round -----------------------------------------------------------------------------------


def run_round(
    broker: KafkaCluster | TansuBroker, args: argparse.Namespace, pool: list[dict[str, Any]], workdir: Path
) -> Run:
    bootstrap = broker.bootstrap_servers
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}."
    app_id = f"{prefix}analyzer"
    topics = Topics(prefix)
    asyncio.run(ensure_topics(bootstrap, topics, args.partitions))
    config = brands_config(brand_names(args.brands))
    run = Run([Phase(args.rate, args.seconds), Phase(args.rate * args.factor, args.seconds)])
    worker = start_worker(f"{run_id}-w1", bootstrap, prefix, app_id, config, args.partitions, workdir / run_id)
    try:
        log(f"  worker started (pid {worker.pid}, log {worker.log})")
        settle = wait_settled(bootstrap, app_id, [worker])
        time.sleep(2.0)  # Faust's recovery of the (empty) tables after the assignment
        log(f"  groups stable after {settle:.1f} s; producing …")
        asyncio.run(live(bootstrap, topics.mentions_raw, worker, broker_pids(broker), pool, run, args.drain))
    finally:
        stop_workers([worker])  # stage 1 commits what it has read before leaving
    run.partials = asyncio.run(read_partials(bootstrap, topics.kpi_partials, args.partitions))
    return run


@dataclass
class PhaseResult:
    rate: float
    window: float
    produced: float  # mentions/s acknowledged by the broker
    stage1: float  # mentions/s read by stage 1
    backlog: tuple[float, float]  # produced minus processed at the window's start and end
    lag_max: float  # the largest stage-1 lag the worker reported in the window
    stage2_lag_max: float  # the same for stage 2 (kpi.partials records not yet read)
    partials: float  # kpi-partial records/s on the topic
    stage2: float  # records/s stage 2 took in
    commits: float  # stage-1 commits/s that carried partials
    partial_bytes: float  # mean size of a partial
    cores: tuple[float, float, float, float]  # worker, broker, this benchmark, the rest

    @property
    def kept_up(self) -> bool:
        return self.stage1 >= 0.95 * self.produced and self.backlog[1] - self.backlog[0] <= self.produced


def phase_result(run: Run, phase: Phase, warmup: float) -> PhaseResult:
    # The window ends a second before the phase does: counters are sampled every second, and a value
    # interpolated across the change of rate would mix the two phases.
    lo, hi = phase.start + warmup, phase.end - TAIL
    seconds = hi - lo

    def rate(key: str) -> float:
        return (value_at(run.samples, key, hi) - value_at(run.samples, key, lo)) / seconds

    def backlog(at: float) -> float:
        return value_at(run.samples, "acked", at) - value_at(run.samples, "processed_stage1", at)

    inside = [p for p in run.partials if lo <= p[0] < hi]
    window = [s.values for s in run.samples if lo <= s.at <= hi]
    busy, worker, broker, bench = (rate(k) for k in ("cpu_busy", "cpu_worker", "cpu_broker", "cpu_bench"))
    return PhaseResult(
        rate=phase.rate,
        window=seconds,
        produced=rate("acked"),
        stage1=rate("processed_stage1"),
        backlog=(backlog(lo), backlog(hi)),
        lag_max=max((v.get("lag_raw", 0.0) for v in window), default=0.0),
        stage2_lag_max=max((v.get("lag_partials", 0.0) for v in window), default=0.0),
        partials=len(inside) / seconds,
        stage2=rate("processed_stage2"),
        commits=len({(p[1], p[2]) for p in inside}) / seconds,
        partial_bytes=sum(p[3] for p in inside) / max(len(inside), 1),
        cores=(worker, broker, bench, max(0.0, busy - worker - broker - bench)),
    )


def report(results: list[PhaseResult], drain: float | None, stage2_drain: float | None) -> None:
    for r in results:
        state = "kept up" if r.kept_up else "FELL BEHIND"
        print(
            f"  {r.rate:.0f}/s for a {r.window:.0f} s window:\n"
            f"    mentions   produced {r.produced:7.0f}/s, stage 1 read {r.stage1:7.0f}/s — {state} "
            f"(backlog {r.backlog[0]:.0f} → {r.backlog[1]:.0f}, reported lag ≤ {r.lag_max:.0f})\n"
            f"    partials   {r.partials:6.1f}/s on the topic = {r.commits:.1f} stage-1 commits/s × "
            f"{r.partials / max(r.commits, 1e-9):.1f} partials, {r.partial_bytes / 1024:.1f} KiB each; "
            f"stage 2 took {r.stage2:6.1f}/s "
            f"(its lag ≤ {r.stage2_lag_max:.0f})\n"
            f"    cores      worker {r.cores[0]:.2f}, broker {r.cores[1]:.2f}, producer {r.cores[2]:.2f}, "
            f"the rest of the machine {r.cores[3]:.2f}",
            flush=True,
        )
    low, high = results[0], results[-1]

    def ratio(a: float, b: float) -> str:
        return f"×{a / max(b, 1e-9):.2f}"

    caught_up = f"caught up {drain:.1f} s after the last mention" if drain is not None else "never caught up"
    caught_up += f", stage 2 {stage2_drain:.1f} s after" if stage2_drain is not None else ", stage 2 never"
    print(
        f"  mentions read {ratio(high.stage1, low.stage1)} (produced {ratio(high.produced, low.produced)}) → stage 2 "
        f"input {ratio(high.partials, low.partials)} on the topic ({ratio(high.stage2, low.stage2)} by stage 2's "
        f"counter); target ≤ 1.2; stage 1 {caught_up}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=500, help="mentions/s in the first phase")
    parser.add_argument("--factor", type=float, default=10, help="the second phase's rate, as a multiple of --rate")
    parser.add_argument("--seconds", type=float, default=30, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=5, help="seconds at the start of each phase left out")
    parser.add_argument("--brands", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--drain", type=float, default=60, help="at most this long for the worker to catch up")
    parser.add_argument("--broker", choices=["kafka", "tansu"], default="kafka")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if args.warmup + TAIL >= args.seconds:
        parser.error(f"--seconds must be longer than --warmup + {TAIL:g}")
    workdir = Path(tempfile.mkdtemp(prefix="ecoute-bench-stage2-"))
    pool = make_corpus(POOL, brands=brand_names(args.brands))
    broker = TansuBroker() if args.broker == "tansu" else KafkaCluster()
    log(f"{args.brands} brands, {args.partitions} partitions, {args.broker}; logs in {workdir}")
    ratios = []
    try:
        broker.start()
        for round_ in range(1, args.rounds + 1):
            log(f"round {round_}:")
            run = run_round(broker, args, pool, workdir)
            results = [phase_result(run, phase, args.warmup) for phase in run.phases]
            print(f"round {round_}:", flush=True)
            report(results, run.drain_seconds, run.stage2_drain_seconds)
            ratios.append(results[-1].partials / max(results[0].partials, 1e-9))
    finally:
        broker.stop()
    print(
        f"stage 2 input ratio (×{args.factor:g} mentions): {', '.join(f'{r:.2f}' for r in ratios)}\n"
        f"machine: {platform.machine()}, {os.cpu_count()} cores (broker included), Python {platform.python_version()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
