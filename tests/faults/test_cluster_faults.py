"""Exact on a 3-node Kafka cluster under faults: the broker leading most of mentions.raw SIGKILLed five times,
an analyzer worker SIGKILLed and a third one started, an API replica SIGKILLed, the whole cluster down for 30 s;
every mention ingest acknowledged is counted once per brand, in both API replicas and in kpi.snapshots."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from ecoute.brokers import KafkaCluster
from tests.faults.conftest import (
    Corpus,
    Ecoute,
    Poster,
    TotalsMonitor,
    dlq_records,
    leader_of_most,
    snapshot_day_totals,
    wait_fully_replicated,
)
from tests.helpers import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(600)]

TOTAL = 50_000
RATE = 500.0  # mentions/s over HTTP: the flow outlasts the faults
BROKER_DOWN = 4.0  # seconds each killed broker stays down
BROKER_KILLS = 5


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
    started = time.monotonic()
    poster.start()
    monitor.start()
    try:
        wait_until(lambda: poster.acknowledged >= 3_000, 60, what="the flow to start")
        wait_fully_replicated(kafka_cluster)
        plan = ["broker", "analyzer-kill", "broker", "analyzer-add", "broker", "api-kill", "broker", "broker"]
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
                killed_at = time.monotonic()
                ecoute.processes["api-b"].kill()
                ecoute.start_api("api-b").wait_http(f"{ecoute.api_url('api-b')}/readyz", timeout=120)
                ready = time.monotonic() - killed_at
                recoveries.append(Recovery("API replica SIGKILL (ready again)", ready, ready))
            assert poster.error is None, poster.error
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


def test_whole_cluster_down_30s(kafka_cluster: KafkaCluster, ecoute: Ecoute) -> None:
    """Every node SIGKILLed for 30 s during the flow: ingest answers 503 with Retry-After meanwhile (never 202
    for a mention that is then lost), and everything acknowledged before and after is counted once."""
    poster = Poster(ecoute.ingest_url, Corpus(ecoute.topics.prefix.rstrip(".")), rate=400.0)
    monitor = TotalsMonitor(ecoute, "api-a")
    poster.start()
    monitor.start()
    try:
        wait_until(lambda: poster.acknowledged >= 4_000, 60, what="the flow to start")
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
        # Nothing can be acknowledged by brokers that are all down: a batch already in flight at the kill may
        # have been acknowledged just before it, nothing later.
        assert poster.acknowledged <= acknowledged_at_kill + poster.batch
        assert 202 not in answers_while_down, answers_while_down
        assert 503 in answers_while_down and poster.retry_after_seen == {"1"}, (answers_while_down, poster.refusals)
        back = recovery("whole cluster down 30 s", restarted_at, poster, monitor)
        poster.minimum = poster.acknowledged + 5_000
        poster.stop_flag.set()
        poster.join(timeout=600)
        assert poster.error is None, poster.error
        assert_exact_everywhere(ecoute, poster.expected)
        assert dlq_records(kafka_cluster.bootstrap_servers, ecoute.topics) == []
    finally:
        poster.stop_flag.set()
        poster.minimum = 0
        monitor.stop_flag.set()
        print(f"\n{poster.acknowledged} mentions acknowledged; refusals {poster.refusals}")
    print(f"after the restart: ingest {back.ingest:.1f} s, counted end to end {back.counted:.1f} s")
