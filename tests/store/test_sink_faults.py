"""`ecoute store` as a process under faults, mentions flowing meanwhile: PostgreSQL stopped and restarted mid-flow,
and the sink killed with SIGKILL three times. Both end with every mention stored exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from ecoute.brokers import free_port
from ecoute.postgres import LocalPostgres
from schemas import Topics, ensure_topics
from tests.helpers import ServiceProcess, produce, wait_until
from tests.store.store_support import count, encoded, mention_records, now, rows

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL = 20_000
CHUNK = 500


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A server of the test's own: it is stopped and restarted."""
    server = LocalPostgres().start()
    try:
        yield server
    finally:
        server.stop()


def store_process(bootstrap: str, prefix: str, url: str, tmp_path: Path) -> tuple[ServiceProcess, str]:
    port = free_port()
    env = {
        "ECOUTE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ECOUTE_TOPIC_PREFIX": prefix,
        "ECOUTE_PARTITIONS": "3",
        "ECOUTE_DATABASE_URL": url,
        "ECOUTE_STORE_METRICS_PORT": str(port),
        "ECOUTE_STORE_COMMIT_INTERVAL": "0.2",
        "ECOUTE_STORE_BATCH_SIZE": "1000",
    }
    return ServiceProcess(["store"], env, tmp_path / "store.log"), f"http://127.0.0.1:{port}/metrics"


async def flow(bootstrap: str, topic: str, mentions: list, pause: float) -> None:
    """Produce the mentions in chunks, a pause between two: the faults happen while they flow."""
    for i in range(0, len(mentions), CHUNK):
        await produce(bootstrap, topic, encoded(mentions[i : i + CHUNK], lambda m: m.brand))
        await asyncio.sleep(pause)


def stored(url: str) -> int:
    try:
        return count(url, "SELECT count(*) FROM mentions")
    except Exception:  # the database is down for a while in these tests
        return -1


def assert_exact(url: str, topic: str) -> None:
    assert count(url, "SELECT count(*) FROM mentions") == TOTAL
    assert count(url, "SELECT count(DISTINCT (brand, id)) FROM mentions") == TOTAL
    offsets = rows(url, "SELECT sum(next_offset) FROM sink_offsets WHERE topic = %s", (topic,))
    assert offsets == [(TOTAL,)]


async def test_postgres_stopped_and_restarted_mid_flow(
    bootstrap: str, topic_prefix: str, own_postgres: LocalPostgres, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, 3)
    url = own_postgres.url
    mentions = mention_records(TOTAL, ["acme", "globex"], now() - timedelta(days=60), timedelta(days=59), seed=9)
    store, metrics_url = store_process(bootstrap, topic_prefix, url, tmp_path)
    store.start()
    try:
        producing = asyncio.create_task(flow(bootstrap, topics.mentions_scored, mentions, pause=0.3))
        await asyncio.to_thread(wait_until, lambda: stored(url) >= 3000, 60, what="3,000 mentions stored")
        own_postgres.stop(remove=False)
        down_at = time.monotonic()
        # Down for 20 s while mentions keep coming; the store waits, alive.
        await asyncio.to_thread(
            wait_until,
            lambda: "ecoute_store_database_up 0.0" in httpx.get(metrics_url, timeout=2).text,
            30,
            what="the store to notice the database is gone",
        )
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
        assert store.proc is not None and store.proc.poll() is None, store.log_tail()
        own_postgres.start()
        await producing
        await asyncio.to_thread(wait_until, lambda: stored(url) == TOTAL, 90, what=f"{TOTAL} mentions stored")
        assert_exact(url, topics.mentions_scored)
        up = await asyncio.to_thread(httpx.get, metrics_url, timeout=2)
        assert "ecoute_store_database_up 1.0" in up.text
        assert "PostgreSQL went away" in store.log_tail(400) or "not reachable" in store.log_tail(400)
    finally:
        store.stop()


async def test_sink_killed_three_times_mid_flow(
    bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, 3)
    mentions = mention_records(TOTAL, ["acme", "globex"], now() - timedelta(days=60), timedelta(days=59), seed=10)
    producing = asyncio.create_task(flow(bootstrap, topics.mentions_scored, mentions, pause=0.2))
    store, _ = store_process(bootstrap, topic_prefix, database_url, tmp_path)
    try:
        for at_least in (2000, 6000, 10000):
            store.start()
            await asyncio.to_thread(
                wait_until, lambda n=at_least: stored(database_url) >= n, 60, what=f"{at_least} mentions stored"
            )
            store.kill()  # SIGKILL: no flush, a transaction may be open
        await producing
        store.start()
        await asyncio.to_thread(wait_until, lambda: stored(database_url) == TOTAL, 90, what=f"{TOTAL} mentions stored")
        assert_exact(database_url, topics.mentions_scored)
    finally:
        store.stop()
