"""The insight views fed from real topics of the Apache Kafka broker: decoding of every record kind, tombstones,
replays and malformed records, then the answers over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI
from pydantic import ValidationError

from schemas import Topics, dump, ensure_topics
from services.api.insights import router
from services.api.insights_views import (
    TOPIC_KPI_SNAPSHOTS,
    TOPIC_MENTIONS_SCORED,
    TOPIC_METRICS_ACCOUNTS,
    BadRecord,
    Insights,
)
from tests.api.api_server import ApiServer
from tests.api.test_insights_views import DAY, HOUR, M0, MINUTE, NOW, mention, reading, snapshot

pytestmark = [pytest.mark.kafka]

PARTITIONS = 2


async def read_into(insights: Insights, bootstrap: str, topics: Topics) -> tuple[int, int]:
    """Read the three topics from the beginning to their current end into `insights`; (applied, refused)."""
    names = {
        topics.mentions_scored: TOPIC_MENTIONS_SCORED,
        topics.kpi_snapshots: TOPIC_KPI_SNAPSHOTS,
        topics.metrics_accounts: TOPIC_METRICS_ACCOUNTS,
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for topic in names for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        applied = refused = 0
        deadline = time.monotonic() + 20
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            assert time.monotonic() < deadline, "could not read the topics to their end in 20 s"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:
                        insights.apply_record(names[record.topic], record.key, record.value, NOW)
                        applied += 1
                    except (BadRecord, ValidationError):
                        refused += 1
        return applied, refused
    finally:
        await consumer.stop()


@pytest.fixture
def server() -> Iterator[list[ApiServer]]:
    servers: list[ApiServer] = []
    yield servers
    for started in servers:
        started.stop()


async def test_records_from_the_topics_feed_every_insight(
    bootstrap: str, topic_prefix: str, server: list[ApiServer]
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=PARTITIONS)
    hits = [
        mention(
            "acme", "m1", M0, author="bob", label="positive", reach=400, likes=6, site="forum.example", text="Recall!"
        ),
        mention("acme", "m2", M0 - MINUTE, author="amy", label="negative", reach=100, text="recall of the batteries"),
        mention("acme", "m3", M0 - 2 * MINUTE, author="bob", label="positive", reach=400, text="a RECALL #acme"),
        mention("globex", "g1", M0, author="eve", label="neutral"),
    ]
    kept = snapshot("acme", M0, mentions=3, positive=2, negative=1, sentiment_sum=0.5, reach=900)
    retired = snapshot("acme", M0 - MINUTE, mentions=7)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for item in [*hits, hits[0]]:  # m1 twice: a replayed record
            await producer.send_and_wait(topics.mentions_scored, dump(item), key=item.brand.encode())
        for kpi in (snapshot("acme", M0, mentions=1), kept, retired):
            key = f"{kpi.brand}|{kpi.window}|{kpi.start.isoformat()}".encode()
            await producer.send_and_wait(topics.kpi_snapshots, dump(kpi), key=key)
        await producer.send_and_wait(topics.kpi_snapshots, None, key=f"acme|1m|{retired.start.isoformat()}".encode())
        for item in (
            reading("acme", "youtube", "subscribers", 2000, NOW - 7 * DAY - HOUR),
            reading("acme", "youtube", "subscribers", 2100, NOW - HOUR),
            reading("acme", "web", "inbound_links", 10, NOW - HOUR),
        ):
            await producer.send_and_wait(topics.metrics_accounts, dump(item), key=item.key.encode())
        await producer.send_and_wait(topics.metrics_accounts, None, key=b"acme|web|inbound_links")
        await producer.send_and_wait(topics.metrics_accounts, b'{"brand": "acme", "platform": "x"}', key=b"acme|x|y")
        await producer.send_and_wait(topics.kpi_snapshots, None, key=b"not-a-snapshot-key")
    finally:
        await producer.stop()

    insights = Insights({"acme": ["globex"]}, clock=lambda: NOW)
    assert await read_into(insights, bootstrap, topics) == (13, 2)

    app = FastAPI()
    app.include_router(router)
    app.state.insights = insights
    server.append(ApiServer(app).start())
    async with httpx.AsyncClient(base_url=server[0].url, timeout=10) as http:
        points = (await http.get("/v1/brands/acme/timeseries", params={"bucket": "1m"})).json()["points"]
        assert [(p["mentions"], p["sentiment_avg"], p["reach"]) for p in points[-2:]] == [
            (0, None, 0),
            (3, 0.1667, 900),
        ]

        authors = (await http.get("/v1/brands/acme/authors", params={"window": "1h"})).json()["authors"]
        assert [(a["key"], a["mentions"], a["reach"], a["engagement"], a["score"]) for a in authors] == [
            ("bob", 2, 800, 6, 860),  # m1 counted once although it was produced twice
            ("amy", 1, 100, 0, 100),
        ]
        sites = (await http.get("/v1/brands/acme/sources", params={"window": "1h"})).json()["sites"]
        assert [(s["name"], s["mentions"]) for s in sites] == [("unknown", 2), ("forum.example", 1)]

        groups = (await http.get("/v1/share-of-voice", params={"window": "1h"})).json()["groups"]
        assert [(m["brand"], m["mentions"], m["share"]) for m in groups[0]["members"]] == [
            ("acme", 3, 0.75),
            ("globex", 1, 0.25),
        ]

        love = (await http.get("/v1/brands/acme/love")).json()
        assert [(a["platform"], a["metric"], a["value"], a["change_7d"]) for a in love["accounts"]] == [
            ("youtube", "subscribers", 2100.0, 100.0)  # the inbound links were retired by their tombstone
        ]
        assert love["components"]["audience_growth"] == 0.75  # +5 % in 7 days

        trends = (await http.get("/v1/brands/acme/trends")).json()["terms"]
        assert trends == [{"term": "recall", "count_last_hour": 3, "baseline_per_hour": 0.0, "score": 4.0}]
