"""The history sink against a real Kafka broker and a real PostgreSQL: every record stored once, offsets in
the same transaction, aborted transactions and poison records never stored, a restart resumes where it was."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from schemas import Topics, dump, ensure_topics, to_dict
from services.store.metrics import StoreMetrics
from services.store.settings import StoreSettings
from services.store.sink import HistorySink
from tests.helpers import async_wait_until, produce, read_all
from tests.store.store_support import ack, alert, count, encoded, kpi, mention_records, metric, now, rows

pytestmark = [pytest.mark.kafka]


class RunningSink:
    def __init__(self, settings: StoreSettings) -> None:
        self.registry = CollectorRegistry()
        self.sink = HistorySink(settings, StoreMetrics.build(self.registry))
        self.task = asyncio.create_task(self.sink.run())

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def stop(self) -> None:
        self.sink.stop()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
def settings(bootstrap: str, topic_prefix: str, database_url: str) -> StoreSettings:
    return StoreSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=topic_prefix,
        partitions=3,
        database_url=database_url,
        store_metrics_port=0,
        store_commit_interval=0.2,
        store_batch_size=500,
    )


@pytest.fixture
async def topics(settings: StoreSettings) -> AsyncIterator[Topics]:
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings.bootstrap, topics, settings.partitions)
    yield topics


async def test_every_history_topic_is_stored_once_and_a_restart_resumes(
    settings: StoreSettings, topics: Topics, database_url: str
) -> None:
    start = now() - timedelta(days=80)
    mentions = mention_records(3000, ["acme", "globex"], start, timedelta(days=79), seed=3)
    await produce(settings.bootstrap, topics.mentions_scored, encoded(mentions, lambda m: m.brand))
    snapshots = [kpi("acme", start + timedelta(hours=h), h + 1) for h in range(48)]
    # The same snapshot twice (an update): the newest one is kept.
    snapshots.append(kpi("acme", start, 99))
    await produce(settings.bootstrap, topics.kpi_snapshots, encoded(snapshots, lambda k: f"{k.brand}|1h|{k.start}"))
    alerts = [alert("acme", f"al-{i}", start + timedelta(days=i)) for i in range(10)]
    await produce(settings.bootstrap, topics.alerts, encoded(alerts, lambda a: a.brand))
    acks = [ack("acme", f"al-{i}", start + timedelta(days=i, minutes=5)) for i in range(4)]
    await produce(settings.bootstrap, topics.alerts_actions, encoded(acks, lambda a: f"alert:{a.alert_id}"))
    readings = [metric("acme", 100 + d, start + timedelta(days=d)) for d in range(30)]
    await produce(
        settings.bootstrap, topics.metrics_accounts, encoded(readings, lambda r: f"{r.brand}|{r.platform}|{r.metric}")
    )

    sink = RunningSink(settings)
    try:
        await async_wait_until(
            lambda: asyncio.to_thread(count, database_url, "SELECT count(*) FROM account_metrics"),
            30,
            what="account metrics stored",
        )
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: count(database_url, "SELECT count(*) FROM mentions") == 3000),
            30,
            what="3,000 mentions stored",
        )
    finally:
        await sink.stop()

    assert count(database_url, "SELECT count(*) FROM mentions") == 3000
    assert count(database_url, "SELECT count(DISTINCT (brand, id)) FROM mentions") == 3000
    by_label = dict(rows(database_url, "SELECT label, count(*) FROM mentions GROUP BY label"))
    assert by_label == {label: sum(1 for m in mentions if m.sentiment.label == label) for label in by_label}
    assert count(database_url, "SELECT count(*) FROM kpi_snapshots") == 48
    assert rows(database_url, "SELECT mentions FROM kpi_snapshots WHERE start = %s", (start,)) == [(99,)]
    assert count(database_url, "SELECT count(*) FROM alerts") == 10
    assert count(database_url, "SELECT count(*) FROM actions WHERE kind = 'ack'") == 4
    assert count(database_url, "SELECT count(*) FROM account_metrics") == 30
    # Months of data went to monthly partitions.
    assert count(database_url, "SELECT count(DISTINCT tableoid) FROM mentions") >= 3
    # The offsets stored are the ends of the topics: nothing is left to read.
    stored = dict(
        ((topic, part), offset)
        for topic, part, offset in rows(database_url, "SELECT topic, partition, next_offset FROM sink_offsets")
    )
    assert sum(o for (t, _), o in stored.items() if t == topics.mentions_scored) == 3000

    # More records, and a second incarnation: it resumes from the stored offsets (the first 3,000 are not read
    # again), and the tombstone of an ack deletes it.
    more = mention_records(500, ["acme"], now() - timedelta(hours=3), timedelta(hours=2), seed=4, prefix="n")
    await produce(settings.bootstrap, topics.mentions_scored, encoded(more, lambda m: m.brand))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
    await producer.start()
    await producer.send_and_wait(topics.alerts_actions, None, key=b"alert:al-0")
    await producer.stop()
    second = RunningSink(settings)
    try:
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: count(database_url, "SELECT count(*) FROM mentions") == 3500),
            30,
            what="3,500 mentions stored",
        )
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: count(database_url, "SELECT count(*) FROM actions") == 3),
            30,
            what="the ack's tombstone applied",
        )
    finally:
        await second.stop()
    assert second.metric("ecoute_store_records_total", topic="mentions.scored") == 500
    assert count(database_url, "SELECT count(DISTINCT (brand, id)) FROM mentions") == 3500


async def test_aborted_transactions_and_poison_records_are_not_stored(
    settings: StoreSettings, topics: Topics, database_url: str
) -> None:
    good = mention_records(100, ["acme"], now() - timedelta(hours=5), timedelta(hours=4), seed=5)
    aborted = mention_records(50, ["acme"], now() - timedelta(hours=5), timedelta(hours=4), seed=6, prefix="x")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, transactional_id=f"{settings.topic_prefix}tx")
    await producer.start()
    try:
        await producer.begin_transaction()
        for m in aborted:
            await producer.send(topics.mentions_scored, dump(m), key=b"acme")
        await producer.abort_transaction()
    finally:
        await producer.stop()
    # The aborted records are in the log (a read_uncommitted reader sees them); a read_committed one does not.
    assert len(await read_all(settings.bootstrap, topics.mentions_scored)) == 50
    poison: list[tuple[bytes | None, bytes]] = [
        (b"acme", b"{not json"),
        (b"acme", b'{"schema": "scored-mention/1", "id": 7, "text": "wrong type"}'),
    ]
    await produce(settings.bootstrap, topics.mentions_scored, poison + encoded(good, lambda m: m.brand))
    sink = RunningSink(settings)
    try:
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: count(database_url, "SELECT count(*) FROM mentions") == 100),
            30,
            what="the 100 valid mentions stored",
        )
        await async_wait_until(
            lambda: asyncio.to_thread(
                lambda: sink.metric("ecoute_store_bad_records_total", topic="mentions.scored") == 2
            ),
            10,
            what="two poison records counted",
        )
    finally:
        await sink.stop()
    assert count(database_url, "SELECT count(*) FROM mentions WHERE id LIKE 'x%%'") == 0
    assert count(database_url, "SELECT count(*) FROM mentions") == 100


async def test_a_record_postgres_refuses_is_skipped_alone(
    settings: StoreSettings, topics: Topics, database_url: str
) -> None:
    """A valid message PostgreSQL cannot hold (a like count beyond bigint) fails its batch; the batch is then
    stored one record at a time, and only that record is left out (counted)."""
    good = mention_records(200, ["acme"], now() - timedelta(hours=5), timedelta(hours=4), seed=7)
    # Written by another producer than the analyzer (orjson itself refuses integers beyond 64 bits).
    huge = to_dict(good[100]) | {"id": "huge", "engagement": {"likes": 10**20, "shares": 0, "comments": 0, "views": 0}}
    records = [
        *encoded(good[:100], lambda m: m.brand),
        (b"acme", json.dumps(huge).encode()),
        *encoded(good[100:], lambda m: m.brand),
    ]
    await produce(settings.bootstrap, topics.mentions_scored, records)
    sink = RunningSink(settings)
    try:
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: count(database_url, "SELECT count(*) FROM mentions") == 200),
            30,
            what="the 200 storable mentions stored",
        )
        await async_wait_until(
            lambda: asyncio.to_thread(
                lambda: sink.metric("ecoute_store_bad_records_total", topic="mentions.scored") == 1
            ),
            10,
            what="the refused record counted",
        )
        offsets = await asyncio.to_thread(
            rows, database_url, "SELECT sum(next_offset) FROM sink_offsets WHERE topic = %s", (topics.mentions_scored,)
        )
        assert offsets == [(201,)]
    finally:
        await sink.stop()
    assert count(database_url, "SELECT count(*) FROM mentions WHERE id = 'huge'") == 0
