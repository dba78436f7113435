"""The history keeps the readings of the brands' own posts (content.items) on a real Kafka and PostgreSQL: every
reading once, in monthly partitions, tombstones not applied, a malformed record skipped and counted."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from schemas import ContentItem, Topics
from services.store.settings import StoreSettings
from tests.helpers import async_wait_until, produce
from tests.store.store_support import count, encoded, now, rows
from tests.store.test_sink_kafka import RunningSink, settings, topics

pytestmark = [pytest.mark.kafka]
__all__ = ["settings", "topics"]  # fixtures shared with the sink's tests


def reading(item_id: str, platform: str, hours_ago: float, comments: int | None, **extra: object) -> ContentItem:
    at = now().replace(microsecond=0) - timedelta(hours=hours_ago)
    return ContentItem.model_validate(
        {
            "brand": "acme",
            "platform": platform,
            "id": item_id,
            "channel": {"mastodon": "acme@mastodon.example", "rss": "https://blog.acme.example/feed"}[platform],
            "url": f"https://acme.example/{item_id}",
            "published_at": now().replace(microsecond=0) - timedelta(days=40),
            "comments": comments,
            "reposts": None if platform == "rss" else 3,
            "likes": None if platform == "rss" else 30,
            "followers": None if platform == "rss" else 2500,
            "at": at,
            **extra,
        }
    )


async def test_content_readings_are_stored_once_each(
    settings: StoreSettings, topics: Topics, database_url: str
) -> None:
    toot = [reading("mastodon:mastodon.example:1", "mastodon", h, comments=1000 - h) for h in range(0, 24 * 40, 24)]
    post = [reading("rss:abc", "rss", h, comments=h) for h in (1, 2)]
    records = encoded([*toot, *post, toot[0]], lambda r: r.key)  # the newest toot reading twice: a replay
    records.append((toot[0].key.encode(), b'{"schema": "content-item/1", "brand": "acme"}'))  # no platform, no id
    await produce(settings.bootstrap, topics.content_items, records)
    await produce(settings.bootstrap, topics.content_items, [(post[0].key.encode(), None)])  # type: ignore[list-item]

    sink = RunningSink(settings)
    try:
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: count(database_url, "SELECT count(*) FROM content_readings") == 42),
            30,
            what="the 42 readings stored",
        )
        await async_wait_until(
            lambda: asyncio.to_thread(
                lambda: sink.metric("ecoute_store_bad_records_total", topic="content.items") == 1
            ),
            10,
            what="the malformed record counted",
        )
    finally:
        await sink.stop()

    stored = rows(
        database_url,
        "SELECT platform, item_id, at, comments, reposts, likes, followers, channel, doc->>'schema'"
        " FROM content_readings ORDER BY item_id, at",
    )
    expected = sorted(
        (
            (r.platform, r.id, r.at, r.comments, r.reposts, r.likes, r.followers, r.channel, "content-item/1")
            for r in [*toot, *post]
        ),
        key=lambda row: (row[1], row[2]),
    )
    assert stored == expected
    # 40 days of daily readings span two or three months, each in its own partition.
    months = {(r.at.year, r.at.month) for r in toot}
    assert count(database_url, "SELECT count(DISTINCT tableoid) FROM content_readings") == len(
        months | {(post[0].at.year, post[0].at.month)}
    )
