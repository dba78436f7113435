"""API start-up from the history store: the views load the store's rows (one PostgreSQL snapshot) and read Kafka
only from the offsets stored with them; their answers are those of an API that replays every topic. A store
that is down or not migrated leaves the API to the replay, still right."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from ecoute.brokers import free_port
from schemas import AccountMetric, Topics, dump, ensure_topics, utc_now
from schemas.history import migrate
from services.api.actions import AlertAck, MentionHandled, ack_key, action_key, encode_action
from services.api.settings import ApiSettings
from services.api.views import floor_minute
from services.store.rows import HISTORY_TOPICS, Batch
from services.store.writer import Partitions, write_batch
from tests.api.api_factories import MINUTE, alert, kpi, scored
from tests.api.test_api_kafka import metric, wait_ready
from tests.helpers import async_wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("clean_env")]

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
KEEP_ALL = datetime(2000, 1, 1, tzinfo=UTC)
BRANDS = ("acme", "globex", "umbrella")
# The topics these tests feed (the store keeps others too, which the views then read from Kafka in full).
FED = ["mentions.scored", "kpi.snapshots", "alerts", "alerts.actions", "metrics.accounts"]
Record = tuple[str, bytes | None, bytes | None]  # (unprefixed topic, key, value)


def history(now: datetime) -> tuple[list[Record], list[Record]]:
    """Records of every topic the store keeps, in the order they are produced: (first part, the rest).

    Built so that each rule of the views shows: mentions over four days (the recent lists and inboxes, small in
    these tests, keep older ones than 25 h; umbrella has only old ones), 1m/1h/1d snapshots inside and outside
    their horizons and one replaced later, a brand known only from an old snapshot, more alerts than kept, acks
    and handled marks with tombstones, and account readings over ten days."""
    m0 = floor_minute(now)
    first: list[Record] = []
    rest: list[Record] = []
    authors = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
    texts = [
        "{b} is great, love the new app",
        "Why is {b} so slow today?",
        "{b} support never answers, awful",
        "just bought {b} headphones, the price was fine",
        "Comment annuler mon abonnement {b}",
        "{b} customer service was helpful",
    ]
    mentions: list[Any] = []
    for brand, count, span in (("acme", 90, 4 * DAY), ("globex", 40, 4 * DAY), ("umbrella", 12, 4 * DAY)):
        for i in range(count):
            published = m0 - span * (i / count) - (timedelta(hours=30) if brand == "umbrella" else timedelta())
            text = texts[i % len(texts)].format(b=brand)
            label = "negative" if "awful" in text else "positive" if "great" in text or "helpful" in text else "neutral"
            mentions.append(
                scored(
                    brand,
                    f"{brand}-{i}",
                    published,
                    author=authors[(i * 3) % len(authors)],
                    label=label,
                    text=text,
                    lang="fr" if text.startswith("Comment") else "en",
                    topics=["pricing"] if "price" in text else [],
                    matched=[brand],
                    reach=100 * (i % 7),
                    engagement={"likes": i % 5, "shares": i % 3, "comments": i % 2},
                    site=f"forum{i % 3}.example",
                    url=f"https://forum{i % 3}.example/{brand}/{i}",
                )
            )
    mentions.sort(key=lambda m: (m.published_at, m.id))  # the order the analyzer would have scored them in
    cut = len(mentions) * 2 // 3
    for index, mention in enumerate(mentions):
        (first if index < cut else rest).append(("mentions.scored", mention.brand.encode(), dump(mention)))
    rest.append(("mentions.scored", mentions[5].brand.encode(), dump(mentions[5])))  # a replayed one

    def snapshot(brand: str, start: datetime, window: str, n: int) -> Record:
        item = kpi(brand, start, window, mentions=n, positive=n // 2, negative=n // 4, sentiment_sum=0.1 * n, reach=n)
        return ("kpi.snapshots", f"{brand}|{window}|{start.isoformat()}".encode(), dump(item))

    for brand in ("acme", "globex"):
        for i in range(30):
            first.append(snapshot(brand, m0 - (90 - i) * MINUTE, "1m", i + 1))
            rest.append(snapshot(brand, m0 - (60 - 2 * i) * MINUTE, "1m", 2 * i + 1))
        first.append(snapshot(brand, m0 - 26 * HOUR, "1m", 500))  # older than the 25 h kept
        for h in range(0, 40 * 24, 12):
            (first if h > 24 else rest).append(snapshot(brand, m0.replace(minute=0) - h * HOUR, "1h", h + 3))
        first.append(snapshot(brand, m0.replace(hour=0, minute=0) - DAY, "1d", 1000))
    first.append(snapshot("acme", m0 - 10 * MINUTE, "1m", 77))
    rest.append(snapshot("acme", m0 - 10 * MINUTE, "1m", 78))  # replaces the one above
    first.append(snapshot("initech", m0.replace(minute=0) - 40 * DAY, "1h", 9))  # known from this only

    alerts = [alert(BRANDS[i % 2], f"a{i}", m0 - (20 - i) * 10 * MINUTE) for i in range(12)]
    for i, item in enumerate(alerts):
        (first if i < 8 else rest).append(("alerts", item.brand.encode(), dump(item)))

    def ack(alert_index: int, by: str, at: datetime) -> Record:
        item = AlertAck(alert_id=f"a{alert_index}", brand=BRANDS[alert_index % 2], by=by, note="on it", at=at)
        return ("alerts.actions", action_key(item), encode_action(item))

    def handled(mention_index: int, at: datetime) -> Record:
        target = mentions[mention_index]
        item = MentionHandled(
            mention_id=target.id, brand=target.brand, by="cm", at=at, published_at=target.published_at
        )
        return ("alerts.actions", action_key(item), encode_action(item))

    first += [ack(6, "zoe", m0 - 50 * MINUTE), ack(7, "yan", m0 - 40 * MINUTE), ack(11, "early", m0 - 30 * MINUTE)]
    first.append(("alerts.actions", ack_key("a7"), None))  # un-acked before the store took it
    first += [handled(len(mentions) - k, m0 - k * MINUTE) for k in (3, 4, 9)]
    rest += [ack(9, "xia", m0 - 5 * MINUTE), ("alerts.actions", ack_key("a6"), None), handled(len(mentions) - 1, m0)]

    for brand, base in (("acme", 10_000), ("globex", 4_000)):
        for h in range(0, 10 * 24, 12):
            reading = AccountMetric(
                brand=brand, platform="x", metric="followers", value=base + 10 * (240 - h), at=m0 - h * HOUR
            )
            record = ("metrics.accounts", reading.key.encode(), dump(reading))
            (rest if h < 24 else first).append(record)
    return first, rest


async def produce(bootstrap: str, topics: Topics, records: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [await producer.send(f"{topics.prefix}{topic}", value, key=key) for topic, key, value in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def sink_what_kafka_holds(bootstrap: str, topics: Topics, partition_count: int, url: str) -> dict[str, int]:
    """What the store sink does, in one batch: read every stored topic up to its end, write the rows and each
    partition's next offset in one transaction. Returns the records stored per topic."""
    await migrate(url)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    batch = Batch()
    stored: Counter[str] = Counter()
    try:
        partitions = [
            TopicPartition(f"{topics.prefix}{name}", p) for name in HISTORY_TOPICS for p in range(partition_count)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        left = {tp for tp, end in ends.items() if end > 0}
        async with asyncio.timeout(30):
            while left:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for record in records:
                        if record.offset >= ends[tp]:
                            break
                        name = record.topic[len(topics.prefix) :]
                        batch.add(name, record.key, record.value)
                        batch.offsets[(record.topic, record.partition)] = record.offset + 1
                        stored[name] += 1
                    if await consumer.position(tp) >= ends[tp]:
                        left.discard(tp)
    finally:
        await consumer.stop()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await write_batch(conn, batch, KEEP_ALL, Partitions())
    return dict(stored)


async def delete_stored_records(bootstrap: str, url: str, topic_names: list[str]) -> int:
    """Delete from Kafka every record of these (non-compacted) topics below the offsets the store holds."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT topic, partition, next_offset FROM sink_offsets WHERE topic = ANY(%s)", (topic_names,)
        )
        offsets = {TopicPartition(t, p): o for t, p, o in await cur.fetchall()}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before_offset=o) for tp, o in offsets.items()})
    finally:
        await admin.close()
    return sum(offsets.values())


def settings_for(bootstrap: str, prefix: str, tmp_path: Path, **extra: Any) -> ApiSettings:
    config = tmp_path / "ecoute.yaml"
    config.write_text("brands:\n  acme:\n    query: acme\n    competitors: [globex]\n", encoding="utf-8")
    return ApiSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        config=config,
        mentions_per_brand=20,
        inbox_per_brand=8,
        alerts_kept=6,
        **extra,
    )


async def answers(client: httpx.AsyncClient, now: datetime) -> dict[str, Any]:
    """Everything the API answers about the test data (for comparing two API instances)."""

    async def get(path: str, **params: Any) -> Any:
        response = await client.get(path, params=params)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    found: dict[str, Any] = {"brands": await get("/v1/brands")}
    found["alerts"] = await get("/v1/alerts", limit=100)
    found["share of voice"] = await get("/v1/share-of-voice")
    found["views"] = (await get("/readyz"))["views"]
    for brand in (*BRANDS, "initech"):
        base = f"/v1/brands/{brand}"
        for window in ("1m", "5m", "1h", "24h"):
            found[f"{brand} kpis {window}"] = await get(f"{base}/kpis", window=window)
        found[f"{brand} mentions"] = await get(f"{base}/mentions", limit=100)
        found[f"{brand} inbox"] = await get(f"{base}/inbox", limit=100)
        found[f"{brand} response time"] = await get(f"{base}/response-time")
        day_ago, month_ago = floor_minute(now) - 24 * HOUR, floor_minute(now) - 32 * DAY
        found[f"{brand} series 1m"] = await get(f"{base}/timeseries", bucket="1m", since=day_ago.isoformat())
        found[f"{brand} series 1h"] = await get(f"{base}/timeseries", bucket="1h", since=month_ago.isoformat())
        found[f"{brand} love"] = await get(f"{base}/love")
        found[f"{brand} authors"] = await get(f"{base}/authors", window="24h", limit=100)
        found[f"{brand} sources"] = await get(f"{base}/sources", window="24h", limit=100)
        found[f"{brand} trends"] = await get(f"{base}/trends", limit=100)
    return found


def rounded(answer: Any) -> Any:
    """Floats to 9 decimals: sums of the same floats in another order (the views keep buckets in the order they
    came, and a replay interleaves partitions as they are fetched) differ in their last bits."""
    if isinstance(answer, float):
        return round(answer, 9)
    if isinstance(answer, dict):
        return {key: rounded(value) for key, value in answer.items()}
    if isinstance(answer, list):
        return [rounded(value) for value in answer]
    return answer


async def answers_of(url: str, now: datetime) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        await wait_ready(client)
        found: dict[str, Any] = rounded(await answers(client, now))
        return found


async def metrics_of(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return (await client.get("/metrics")).text


def counted(text: str, name: str, topics: list[str]) -> dict[str, float]:
    return {topic: metric(text, name, topic=topic) or 0.0 for topic in topics}


async def test_views_start_from_the_store_and_read_kafka_after_its_offsets_only(
    bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path, serve_api: Any
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    now = floor_minute(utc_now()) + timedelta(seconds=30)
    first, rest = history(now)
    await produce(bootstrap, topics, first)
    stored = await sink_what_kafka_holds(bootstrap, topics, 2, database_url)
    assert sum(stored.values()) == len(first)
    await produce(bootstrap, topics, rest)

    replayed = serve_api(settings_for(bootstrap, topic_prefix, tmp_path), clock=lambda: now)
    expected = await answers_of(replayed.url, now)
    # The data shows what it is meant to: old mentions in the lists, more alerts than kept, acks, readings.
    assert len(expected["umbrella mentions"]) == 12 and expected["umbrella inbox"]["pending"] > 0
    assert len(expected["globex mentions"]) == 20 and expected["globex mentions"][-1]["published_at"] < (
        now - 30 * HOUR
    ).isoformat().replace("+00:00", "Z")
    assert sum(expected[f"{brand} response time"]["count"] for brand in BRANDS) == 4  # handled marks
    assert [a["id"] for a in expected["alerts"]] == ["a11", "a10", "a9", "a8", "a7", "a6"]
    assert [a["acked_by"] for a in expected["alerts"]] == ["early", None, "xia", None, None, None]
    assert "initech" in [b["brand"] for b in expected["brands"]]
    assert expected["acme love"]["audience"]
    assert expected["acme kpis 24h"]["mentions"] > 0 and expected["acme series 1h"]["points"]

    # mentions.scored and alerts lose in Kafka what the store holds (the compacted topics cannot): the API with
    # the store cannot have read those records from Kafka.
    deleted = await delete_stored_records(bootstrap, database_url, [topics.mentions_scored, topics.alerts])
    assert deleted == stored["mentions.scored"] + stored["alerts"]
    warm = serve_api(settings_for(bootstrap, topic_prefix, tmp_path, database_url=database_url), clock=lambda: now)
    assert await answers_of(warm.url, now) == expected

    names = FED
    text = await metrics_of(warm.url)
    from_kafka = Counter(topic for topic, _, _ in rest)
    assert counted(text, "ecoute_api_view_records_total", names) == {n: float(from_kafka[n]) for n in names}
    from_store = counted(text, "ecoute_api_view_store_rows_total", names)
    assert from_store["alerts"] == 6 and from_store["alerts.actions"] == 5  # alerts_kept; rows of the table
    assert 0 < from_store["mentions.scored"] <= stored["mentions.scored"]
    replay_text = await metrics_of(replayed.url)
    assert counted(replay_text, "ecoute_api_view_records_total", names) == {
        n: float(stored.get(n, 0) + from_kafka[n]) for n in names
    }
    assert sum(counted(replay_text, "ecoute_api_view_store_rows_total", names).values()) == 0

    # It then follows Kafka live, like any replica.
    late = scored("globex", "late-1", now, text="Is globex down?", label="negative")
    await produce(bootstrap, topics, [("mentions.scored", b"globex", dump(late))])
    async with httpx.AsyncClient(base_url=warm.url, timeout=10) as client:

        async def shows_late() -> bool:
            newest = (await client.get("/v1/brands/globex/mentions", params={"limit": 1})).json()
            return bool(newest and newest[0]["id"] == "late-1")

        await async_wait_until(shows_late, 20, what="the live mention in the warm-started API")


@pytest.mark.parametrize("store", ["down", "not migrated"])
async def test_a_store_that_cannot_be_read_leaves_the_api_to_the_replay(
    store: str, bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path, serve_api: Any
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    now = floor_minute(utc_now()) + timedelta(seconds=30)
    first, rest = history(now)
    await produce(bootstrap, topics, first + rest)
    url = f"postgresql://ecoute@127.0.0.1:{free_port()}/history" if store == "down" else database_url

    replayed = serve_api(settings_for(bootstrap, topic_prefix, tmp_path), clock=lambda: now)
    fallback = serve_api(settings_for(bootstrap, topic_prefix, tmp_path, database_url=url), clock=lambda: now)
    expected = await answers_of(replayed.url, now)
    assert await answers_of(fallback.url, now) == expected
    text = await metrics_of(fallback.url)
    names = FED
    assert counted(text, "ecoute_api_view_records_total", names) == {
        n: float(c) for n, c in Counter(t for t, _, _ in first + rest).items()
    }
    assert sum(counted(text, "ecoute_api_view_store_rows_total", names).values()) == 0


async def test_offsets_past_a_partitions_end_mean_another_log_so_it_is_read_whole(
    bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path, serve_api: Any
) -> None:
    """The store was written from a log the topic no longer is (recreated, or an embedded broker that restarted
    empty): the views get the store's rows and every record of the new log."""
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=1)
    now = floor_minute(utc_now()) + timedelta(seconds=30)
    before = [scored("acme", f"old-{i}", now - (10 + i) * MINUTE) for i in range(5)]
    after = [scored("acme", f"new-{i}", now - i * MINUTE) for i in range(3)]
    await migrate(database_url)
    batch = Batch()
    for mention in before:
        batch.add("mentions.scored", b"acme", dump(mention))
    batch.offsets[(topics.mentions_scored, 0)] = 10_000
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await write_batch(conn, batch, KEEP_ALL, Partitions())
    await produce(bootstrap, topics, [("mentions.scored", b"acme", dump(m)) for m in after])

    warm = serve_api(settings_for(bootstrap, topic_prefix, tmp_path, database_url=database_url), clock=lambda: now)
    async with httpx.AsyncClient(base_url=warm.url, timeout=10) as client:
        await wait_ready(client)
        shown = (await client.get("/v1/brands/acme/mentions", params={"limit": 100})).json()
        text = (await client.get("/metrics")).text
    assert [m["id"] for m in shown] == ["new-0", "new-1", "new-2", *(m.id for m in before)]
    assert metric(text, "ecoute_api_view_store_rows_total", topic="mentions.scored") == 5
    assert metric(text, "ecoute_api_view_records_total", topic="mentions.scored") == 3
