"""Exact on a 3-node Kafka cluster under faults: the broker leading most of mentions.raw SIGKILLed five times,
an analyzer worker SIGKILLed and a third one started, an API replica SIGKILLed, the whole cluster down for 30 s;
every mention ingest acknowledged is counted once per brand, in both API replicas and in kpi.snapshots."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import orjson
import pytest

from ecoute.brokers import KafkaCluster
from tests.faults.conftest import (
    Corpus,
    Ecoute,
    Poster,
    TotalsMonitor,
    dlq_records,
    leader_of_most,
    produce_raw,
    raise_max_message_bytes,
    snapshot_day_totals,
    wait_fully_replicated,
)
from tests.helpers import ServiceProcess, wait_until

# bench/fault_soak.py runs the same test longer through these variables.
TOTAL = int(os.environ.get("ECOUTE_FAULTS_TOTAL", "50000"))
BROKER_KILLS = max(3, int(os.environ.get("ECOUTE_FAULTS_BROKER_KILLS", "5")))
RATE = 350.0  # mentions/s over HTTP: 50,000 take ~145 s, about as long as the faults
BROKER_DOWN = 3.0  # seconds each killed broker stays down

pytestmark = [
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.timeout(int(os.environ.get("ECOUTE_FAULTS_TIMEOUT", "900"))),
]


@dataclass
class Recovery:
    fault: str
    ingest: float  # kill → first acknowledgement of a batch posted after it
    counted: float  # kill → that batch (and all before it) counted by an API replica

    def line(self) -> str:
        return f"{self.fault:<34} ingest {self.ingest:6.1f} s   counted end to end {self.counted:6.1f} s"


def recovery(fault: str, killed_at: float, poster: Poster, monitor: TotalsMonitor) -> Recovery:
    ack = poster.first_ack_sent_after(killed_at)
    counted = monitor.reached(ack.brand_mentions)
    return Recovery(fault, ack.acked - killed_at, max(counted, ack.acked) - killed_at)


def assert_exact_everywhere(ecoute: Ecoute, expected: dict[str, dict[str, int]], timeout: float = 240.0) -> None:
    """Both API replicas' 24 h KPIs and kpi.snapshots' day totals equal the recount of what was acknowledged."""
    last: dict[str, object] = {}

    def exact() -> bool:
        last.clear()
        for api in ("api-a", "api-b"):
            last[api] = ecoute.kpis(api)
        last["kpi.snapshots"] = snapshot_day_totals(ecoute.cluster.bootstrap_servers, ecoute.topics)
        return all(value == expected for value in last.values())

    try:
        wait_until(exact, timeout, interval=2.0, what="exact counts in both replicas and kpi.snapshots")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nexpected {expected}\nlast {last}") from None


def watch_ready(ecoute: Ecoute, api: ServiceProcess, ready: list[float]) -> None:
    api.wait_http(f"{ecoute.api_url('api-b')}/readyz", timeout=240)
    ready.append(time.monotonic())


def kill_leader(cluster: KafkaCluster, ecoute: Ecoute) -> float:
    """SIGKILL the node leading most partitions of mentions.raw; restart it after BROKER_DOWN seconds."""
    node = leader_of_most(cluster, ecoute.topics.mentions_raw)
    killed_at = time.monotonic()
    cluster.stop_node(node, hard=True)
    time.sleep(BROKER_DOWN)  # the fault itself: the broker stays down this long
    cluster.start_node(node)
    return killed_at


def test_exact_through_broker_worker_and_replica_kills(kafka_cluster: KafkaCluster, ecoute: Ecoute) -> None:
    poster = Poster(ecoute.ingest_url, Corpus(ecoute.topics.prefix.rstrip(".")), rate=RATE)
    poster.minimum = TOTAL
    monitor = TotalsMonitor(ecoute, "api-a")
    recoveries: list[Recovery] = []
    api_ready: list[float] = []
    api_killed_at = 0.0
    started = time.monotonic()
    poster.start()
    monitor.start()
    try:
        wait_until(lambda: poster.acknowledged >= 3_000, 60, what="the flow to start")
        wait_fully_replicated(kafka_cluster)
        plan = ["broker", "analyzer-kill", "broker", "analyzer-add", "broker", "api-kill"]
        plan += ["broker"] * (BROKER_KILLS - 3)
        brokers = 0
        for step in plan:
            if step == "broker":
                brokers += 1
                killed_at = kill_leader(kafka_cluster, ecoute)
                recoveries.append(recovery(f"broker leader SIGKILL #{brokers}", killed_at, poster, monitor))
                wait_fully_replicated(kafka_cluster)
            elif step == "analyzer-kill":
                killed_at = time.monotonic()
                ecoute.processes["analyzer-a"].kill()
                recoveries.append(recovery("analyzer worker SIGKILL", killed_at, poster, monitor))
            elif step == "analyzer-add":
                added_at = time.monotonic()
                ecoute.start_analyzer("analyzer-c")
                recoveries.append(recovery("third analyzer worker joins", added_at, poster, monitor))
            elif step == "api-kill":
                # Restarted at once; it rebuilds its views from the topics while the next faults go on.
                api_killed_at = time.monotonic()
                ecoute.processes["api-b"].kill()
                restarted = ecoute.start_api("api-b")
                watcher = threading.Thread(target=watch_ready, args=(ecoute, restarted, api_ready), daemon=True)
                watcher.start()
            assert poster.error is None, poster.error
        wait_until(lambda: api_ready, 240, what="the restarted API replica to be ready")
        ready = api_ready[0] - api_killed_at
        recoveries.append(Recovery("API replica SIGKILL (ready again)", ready, ready))
        poster.stop_flag.set()
        poster.join(timeout=600)
        assert poster.error is None, poster.error
        assert not poster.is_alive()
        assert poster.acknowledged >= TOTAL
        flow_seconds = time.monotonic() - started
        assert_exact_everywhere(ecoute, poster.expected)
        assert dlq_records(kafka_cluster.bootstrap_servers, ecoute.topics) == []
        for name in ("ingest", "analyzer-b", "analyzer-c", "api-a", "api-b"):
            assert ecoute.processes[name].proc.poll() is None, f"{name} died:\n{ecoute.logs(name)}"  # type: ignore[union-attr]
    finally:
        poster.stop_flag.set()
        poster.minimum = 0
        monitor.stop_flag.set()
        print(f"\n{poster.acknowledged} mentions acknowledged; refusals {poster.refusals}")
        for r in recoveries:
            print(r.line())
    print(f"flow {flow_seconds:.0f} s, exact {time.monotonic() - started:.0f} s after the start")


def poison_records() -> dict[str, list[tuple[bytes, bytes]]]:
    """Invalid JSON, wrong types and a 5 MB text for mentions.raw; the same kinds for kpi.partials."""
    big_text = "acme is great " * 380_000  # ~5.3 MB, over the broker's default 1 MiB and the 100,000-char text cap
    return {
        "mentions.raw": [
            (b"poison:json", b'{"id": "poison:json", "text": "acme'),
            (b"poison:types", orjson.dumps({"id": "poison:types", "text": 42, "author": "acme"})),
            (b"poison:big", orjson.dumps({"id": "poison:big", "text": big_text})),
        ],
        "kpi.partials": [
            (b"acme", b"{not json"),
            (b"acme", orjson.dumps({"brand": 7, "bucket": "yesterday", "mentions": "many"})),
            (b"acme", orjson.dumps({"brand": "acme", "bucket": "2026-01-01T00:00:00Z", "pad": big_text})),
        ],
    }


def test_whole_cluster_down_30s_and_poison_records(kafka_cluster: KafkaCluster, ecoute: Ecoute) -> None:
    """Every node SIGKILLed for 30 s during the flow: ingest answers 503 with Retry-After meanwhile (never 202 for
    a mention that is then lost), and everything acknowledged before and after is counted once. Poison records
    written straight to mentions.raw and kpi.partials before the outage go to the DLQ, each with its original
    bytes and headers, and nothing else does."""
    topics = ecoute.topics
    poison = {getattr(topics, name.replace(".", "_")): records for name, records in poison_records().items()}
    # The broker refuses records over 1 MiB (message.max.bytes): these two topics are raised to 8 MiB for the test.
    raise_max_message_bytes(kafka_cluster, list(poison), 8 * 1024 * 1024)
    poster = Poster(ecoute.ingest_url, Corpus(topics.prefix.rstrip(".")), rate=400.0)
    monitor = TotalsMonitor(ecoute, "api-a")
    poster.start()
    monitor.start()
    try:
        wait_until(lambda: poster.acknowledged >= 2_000, 60, what="the flow to start")
        for topic, records in poison.items():
            produce_raw(kafka_cluster, topic, records)
        wait_until(lambda: poster.acknowledged >= 4_000, 60, what="the flow to go on")
        wait_fully_replicated(kafka_cluster)
        killed_at = time.monotonic()
        for node in kafka_cluster.nodes:
            kafka_cluster.stop_node(node, hard=True)
        acknowledged_at_kill = poster.acknowledged
        time.sleep(30)  # the fault itself: no broker at all for 30 s
        answers_while_down = [status for t, status in list(poster.accepted_during) if t > killed_at + 1]
        for node in kafka_cluster.nodes:
            kafka_cluster.start_node(node)
        restarted_at = time.monotonic()
        # Brokers that are all down acknowledge nothing: the batch in flight at the kill may have been
        # acknowledged just before it, nothing later.
        assert poster.acknowledged <= acknowledged_at_kill + poster.batch
        assert 202 not in answers_while_down, answers_while_down
        assert 503 in answers_while_down and poster.retry_after_seen == {"1"}, (answers_while_down, poster.refusals)
        back = recovery("whole cluster down 30 s", restarted_at, poster, monitor)
        poster.minimum = poster.acknowledged + 5_000
        poster.stop_flag.set()
        poster.join(timeout=600)
        assert poster.error is None, poster.error
        assert_exact_everywhere(ecoute, poster.expected)
        letters = dlq_records(kafka_cluster.bootstrap_servers, topics)
        expected_letters = sorted((topic, key, value) for topic, records in poison.items() for key, value in records)
        # Stage 2 is at-least-once: after the outage it may dead-letter a kpi.partials record again (same source
        # offset); distinct letters are compared.
        got = sorted({(dict(headers)["source.topic"].decode(), key, value) for key, value, headers in letters})
        assert [(t, k, len(v or b"")) for t, k, v in got] == [(t, k, len(v)) for t, k, v in expected_letters]
        assert got == expected_letters
        for _, _, headers in letters:
            names = dict(headers)
            assert {"error", "source.topic", "source.partition", "source.offset"} <= set(names), headers
            assert names["error"] and int(names["source.offset"]) >= 0
    finally:
        poster.stop_flag.set()
        poster.minimum = 0
        monitor.stop_flag.set()
        print(f"\n{poster.acknowledged} mentions acknowledged; refusals {poster.refusals}")
    print(f"after the restart: ingest {back.ingest:.1f} s, counted end to end {back.counted:.1f} s")
