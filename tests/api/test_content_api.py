"""GET /v1/brands/{brand}/content end to end: the owned connector polls loopback Mastodon, Bluesky and blog
servers into a real Kafka, the API reads content.items, and the ranking, 24 h changes and rates it answers are
recomputed here from the servers' known posts."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from schemas import ContentItem, Topics, dump, ensure_topics
from services.api.settings import ApiSettings
from services.ingest import build_settings
from tests.api.test_api_kafka import wait_ready
from tests.ingest.connectors.conftest import eventually, source_runner
from tests.ingest.connectors.test_owned import DID, Channels, T, rss_id
from tests.ingest.connectors.web import WebServer

pytestmark = [pytest.mark.kafka]

ADMIN, GLOBEX_READER = "admin-key-0123456789", "globex-key-0123456789"
MASTODON, BLUESKY = "acme@127.0.0.1", "acme.bsky.social"


def api_config(path: Path) -> Path:
    path.write_text(
        "brands:\n  acme:\n    query: acme\n  globex:\n    query: globex\n"
        f"api_keys:\n  - {{key: {ADMIN}, role: admin}}\n  - {{key: {GLOBEX_READER}, role: read, brands: [globex]}}\n",
        encoding="utf-8",
    )
    return path


def per_1k(value: float | None, followers: int | None) -> float | None:
    return None if value is None or not followers else value / followers * 1000


async def test_owned_posts_are_ranked_with_their_changes_and_rates(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    web = WebServer().start()
    try:
        channels = Channels(web)
        feed_url = channels.feed_url
        older = channels.mastodon.post("acme", 5, now - timedelta(days=3), replies=10, reblogs=2, favourites=50)
        older_key = f"mastodon:127.0.0.1:{older['id']}"
        # Its readings of yesterday are on the topic already (as an earlier poll left them).
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for hours, counts in ((30, (1, 1, 30)), (25, (8, 2, 45))):
                reading = ContentItem(
                    brand="acme",
                    platform="mastodon",
                    id=older_key,
                    channel=MASTODON,
                    published_at=now - timedelta(days=3),
                    comments=counts[0],
                    reposts=counts[1],
                    likes=counts[2],
                    followers=2400,
                    at=now - timedelta(hours=hours),
                )
                await producer.send_and_wait(topics.content_items, dump(reading), key=reading.key.encode())
        finally:
            await producer.stop()
        settings = build_settings(
            kafka_bootstrap_servers=bootstrap, topic_prefix=topic_prefix, partitions=2, config=tmp_path / "absent.yaml"
        )
        async with source_runner(settings, channels.config(interval=60)) as runner:
            [worker] = runner.workers
            await eventually(lambda: worker.polls >= 1, 30, what="a poll of the owned channels")
            assert worker.status.state == "ok", worker.status.last_error
    finally:
        web.stop()

    # What the servers held: (id, platform, channel, published, comments, reposts, likes, followers, change 24 h).
    blog = [rss_id(f"https://blog.acme.example/{n}") for n in (1, 2, 3, 4)]
    posts = [
        (older_key, "mastodon", MASTODON, now - timedelta(days=3), 10, 2, 50, 2500, (10 - 8, 2 - 2, 50 - 45)),
        (f"mastodon:127.0.0.1:{channels.toot1['id']}", "mastodon", MASTODON, T, 4, 7, 31, 2500, (4, 7, 31)),
        (
            f"mastodon:127.0.0.1:{channels.toot2['id']}",
            "mastodon",
            MASTODON,
            T + timedelta(hours=1),
            0,
            1,
            3,
            2500,
            (0, 1, 3),
        ),
        (f"bluesky:{DID}:3kaaa1", "bluesky", BLUESKY, T, 2, 5, 40, 800, (2, 5, 40)),
        (f"bluesky:{DID}:3kaaa3", "bluesky", BLUESKY, T + timedelta(hours=2), 1, 0, 6, 800, (1, 0, 6)),
        (blog[0], "rss", feed_url, T, 5, None, None, None, (5, None, None)),
        (blog[1], "rss", feed_url, T + timedelta(minutes=1), 2, None, None, None, (2, None, None)),
        (blog[2], "rss", feed_url, T + timedelta(minutes=2), 3, None, None, None, (3, None, None)),
        (blog[3], "rss", feed_url, T + timedelta(minutes=3), None, None, None, None, (None, None, None)),
    ]

    def ranked(value: Any) -> list[str]:
        """Highest first, unknown last, newest first among equals."""
        keyed = [(value(p) is None, -(value(p) or 0), -p[3].timestamp(), p[0]) for p in posts]
        return [key[3] for key in sorted(keyed)]

    api = serve_api(
        ApiSettings(
            kafka_bootstrap_servers=bootstrap, topic_prefix=topic_prefix, config=api_config(tmp_path / "api.yaml")
        )
    )
    admin = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=api.url, timeout=10, headers=admin) as http:
        await wait_ready(http)
        answer = (await http.get("/v1/brands/acme/content", params={"limit": 100})).json()
        assert answer["total"] == len(posts) and answer["sort"] == "engagement" and answer["platform"] is None
        assert [i["id"] for i in answer["items"]] == ranked(lambda p: sum(c or 0 for c in p[4:7]))
        items = {i["id"]: i for i in answer["items"]}
        for item_id, platform, channel, published, comments, reposts, likes, followers, change in posts:
            item = items[item_id]
            assert (item["platform"], item["channel"], datetime.fromisoformat(item["published_at"])) == (
                platform,
                channel,
                published,
            )
            assert (item["comments"], item["reposts"], item["likes"], item["followers"]) == (
                comments,
                reposts,
                likes,
                followers,
            )
            assert tuple(item["change_24h"].values()) == change, item_id
            assert item["rates"] == {
                "conversation": comments,
                "amplification": reposts,
                "applause": likes,
                "conversation_per_1k_followers": per_1k(comments, followers),
                "amplification_per_1k_followers": per_1k(reposts, followers),
                "applause_per_1k_followers": per_1k(likes, followers),
            }

        for sort, column in (("conversation", 4), ("amplification", 5), ("applause", 6)):
            got = (await http.get("/v1/brands/acme/content", params={"sort": sort, "limit": 100})).json()
            assert [i["id"] for i in got["items"]] == ranked(lambda p, c=column: p[c]), sort
        recent = (await http.get("/v1/brands/acme/content", params={"sort": "recent", "limit": 3})).json()
        assert [i["id"] for i in recent["items"]] == ranked(lambda p: p[3].timestamp())[:3]

        channels_answer = {c["channel"]: c for c in answer["channels"]}
        assert set(channels_answer) == {MASTODON, BLUESKY, feed_url}
        for channel, followers in ((MASTODON, 2500), (BLUESKY, 800), (feed_url, None)):
            mine = [p for p in posts if p[2] == channel]
            totals = channels_answer[channel]
            assert (totals["posts"], totals["followers"]) == (len(mine), followers)
            for column, count, rate in (
                (4, "comments", "conversation"),
                (5, "reposts", "amplification"),
                (6, "likes", "applause"),
            ):
                known = [p[column] for p in mine if p[column] is not None]
                average = sum(known) / len(known) if known else None
                assert totals[count] == (sum(known) if known else None)
                assert totals["rates"][rate] == average
                assert totals["rates"][f"{rate}_per_1k_followers"] == per_1k(average, followers)

        sky = (await http.get("/v1/brands/acme/content", params={"platform": "bluesky"})).json()
        assert [i["platform"] for i in sky["items"]] == ["bluesky", "bluesky"]
        assert [c["channel"] for c in sky["channels"]] == [BLUESKY]

        # The ranking as a spreadsheet: a row per post, in the same order, unknown counts as empty cells.
        sheet = await http.get(
            "/v1/brands/acme/content", params={"format": "csv", "sort": "conversation", "limit": 100}
        )
        assert sheet.headers["content-type"] == "text/csv; charset=utf-8"
        assert sheet.headers["content-disposition"] == 'attachment; filename="acme-content.csv"'
        rows = list(csv.DictReader(io.StringIO(sheet.text)))
        assert [r["id"] for r in rows] == ranked(lambda p: p[4])
        by_id = {r["id"]: r for r in rows}
        assert (by_id[older_key]["comments"], by_id[older_key]["comments_change_24h"]) == ("10", "2")
        assert by_id[older_key]["conversation_per_1k_followers"] == str(per_1k(10, 2500))
        assert (by_id[blog[0]]["comments"], by_id[blog[0]]["likes"], by_id[blog[0]]["followers"]) == ("5", "", "")
        assert by_id[blog[0]]["title"] == "Slashdot style"

        # Bad parameters name themselves; unknown or hidden brands are 404; no key is 401.
        for params, field in (
            ({"sort": "likes"}, "sort"),
            ({"limit": 0}, "limit"),
            ({"platform": "myspace"}, "platform"),
        ):
            bad = await http.get("/v1/brands/acme/content", params=params)
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", field]
        assert (await http.get("/v1/brands/nobody/content")).status_code == 404
        hidden = await http.get("/v1/brands/acme/content", headers={"authorization": f"Bearer {GLOBEX_READER}"})
        assert hidden.status_code == 404
        quiet = await http.get("/v1/brands/globex/content", headers={"authorization": f"Bearer {GLOBEX_READER}"})
        assert quiet.status_code == 200 and quiet.json()["items"] == [] and quiet.json()["total"] == 0
        assert (await http.get("/v1/brands/acme/content", headers={"authorization": ""})).status_code == 401
