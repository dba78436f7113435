"""The owned-content view: readings of the brand's posts, ranked, with the 24 h change and Kaushik's rates
recomputed here from the known input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import ContentItem, dump
from services.api.content_views import TOPIC_CONTENT_ITEMS, BadContentRecord, ContentViews

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
MASTODON = "acme@mastodon.example"
BLUESKY = "acme.bsky.social"
FEED = "https://blog.acme.example/feed"


def reading(item_id: str, platform: str, published: datetime, at: datetime, **counts: Any) -> ContentItem:
    channel = {"mastodon": MASTODON, "bluesky": BLUESKY, "rss": FEED}[platform]
    return ContentItem.model_validate(
        {
            "brand": counts.pop("brand", "acme"),
            "platform": platform,
            "id": item_id,
            "channel": channel,
            "url": f"https://example/{item_id}",
            "published_at": published,
            "text": f"post {item_id}",
            "at": at,
            **counts,
        }
    )


# (id, platform, published, [(reading time, comments, reposts, likes, followers)])
POSTS: list[tuple[str, str, datetime, list[tuple[datetime, int | None, int | None, int | None, int | None]]]] = [
    (
        "mastodon:m:1",
        "mastodon",
        NOW - 3 * D,
        [(NOW - 30 * H, 2, 3, 10, 2000), (NOW - 25 * H, 3, 4, 12, 2000), (NOW - H, 5, 9, 40, 2500)],
    ),
    ("mastodon:m:2", "mastodon", NOW - 2 * H, [(NOW - H, 1, 0, 7, 2500)]),
    ("mastodon:m:3", "mastodon", NOW - 5 * D, [(NOW - H, 0, 2, 2, 2500)]),
    ("bluesky:did:plc:a:3k1", "bluesky", NOW - 10 * H, [(NOW - H / 2, 4, 1, 20, 400)]),
    ("rss:aaa", "rss", NOW - 2 * D, [(NOW - H, 7, None, None, None)]),
    ("rss:bbb", "rss", NOW - D, [(NOW - H, None, None, None, None)]),
]


def fed() -> ContentViews:
    views = ContentViews(["acme", "quiet"], clock=lambda: NOW)
    for item_id, platform, published, readings in POSTS:
        for at, comments, reposts, likes, followers in readings:
            item = reading(
                item_id, platform, published, at, comments=comments, reposts=reposts, likes=likes, followers=followers
            )
            assert views.apply_record(TOPIC_CONTENT_ITEMS, item.key.encode(), dump(item), NOW)
    other = reading("mastodon:g:1", "mastodon", NOW - H, NOW, brand="globex", comments=99, reposts=99, likes=99)
    views.apply(other)
    return views


def latest(item_id: str) -> tuple[int | None, int | None, int | None, int | None]:
    [readings] = [r for i, _, _, r in POSTS if i == item_id]
    return readings[-1][1:]


def per_1k(value: float | None, followers: int | None) -> float | None:
    return None if value is None or not followers else value / followers * 1000


def test_posts_rank_by_each_sort_with_unknown_counts_last() -> None:
    views = fed()

    def order(sort: str, **options: Any) -> list[str]:
        return [e.id for e in views.ranking("acme", sort, **options).items]  # type: ignore[arg-type]

    def engagement(item_id: str) -> int:
        return sum(v or 0 for v in latest(item_id)[:3])

    by_engagement = sorted((i for i, *_ in POSTS), key=lambda i: -engagement(i))
    assert (
        order("engagement")
        == by_engagement
        == [
            "mastodon:m:1",
            "bluesky:did:plc:a:3k1",
            "mastodon:m:2",
            "rss:aaa",
            "mastodon:m:3",
            "rss:bbb",
        ]
    )
    assert order("conversation") == [
        "rss:aaa",
        "mastodon:m:1",
        "bluesky:did:plc:a:3k1",
        "mastodon:m:2",
        "mastodon:m:3",
        "rss:bbb",  # no count: last
    ]
    # Blogs have no reposts: last, the newest first among them.
    assert order("amplification") == [
        "mastodon:m:1",
        "mastodon:m:3",
        "bluesky:did:plc:a:3k1",
        "mastodon:m:2",
        "rss:bbb",
        "rss:aaa",
    ]
    assert order("applause")[:4] == ["mastodon:m:1", "bluesky:did:plc:a:3k1", "mastodon:m:2", "mastodon:m:3"]
    published = {i: p for i, _, p, _ in POSTS}
    assert order("recent") == sorted(published, key=lambda i: published[i], reverse=True)
    assert order("engagement", limit=2) == by_engagement[:2]
    assert order("engagement", platform="rss") == ["rss:aaa", "rss:bbb"]
    ranking = views.ranking("acme", "engagement", limit=2)
    assert (ranking.total, ranking.at, ranking.brand) == (6, NOW, "acme")
    assert views.ranking("globex").total == 1 and views.ranking("quiet").total == 0


def test_counts_changes_and_rates_are_exact() -> None:
    entries = {e.id: e for e in fed().ranking("acme", limit=100).items}
    for item_id, _, _, readings in POSTS:
        entry = entries[item_id]
        comments, reposts, likes, followers = latest(item_id)
        assert (entry.comments, entry.reposts, entry.likes, entry.followers) == (comments, reposts, likes, followers)
        assert entry.updated_at == readings[-1][0]
        rates = entry.rates
        assert (rates.conversation, rates.amplification, rates.applause) == (comments, reposts, likes)
        assert rates.conversation_per_1k_followers == per_1k(comments, followers)
        assert rates.amplification_per_1k_followers == per_1k(reposts, followers)
        assert rates.applause_per_1k_followers == per_1k(likes, followers)
    # Against the reading at or before 24 h ago; 0 for a post published since; unknown for an older one not seen then.
    change = {i: (e.change_24h.comments, e.change_24h.reposts, e.change_24h.likes) for i, e in entries.items()}
    assert change == {
        "mastodon:m:1": (5 - 3, 9 - 4, 40 - 12),
        "mastodon:m:2": (1, 0, 7),
        "mastodon:m:3": (None, None, None),
        "bluesky:did:plc:a:3k1": (4, 1, 20),
        "rss:aaa": (None, None, None),
        "rss:bbb": (None, None, None),
    }
    first = entries["mastodon:m:1"]
    assert first.rates.conversation_per_1k_followers == 2.0  # 5 comments, 2,500 followers
    assert first.engagement == 54


def test_channel_totals_average_per_post_and_per_1000_followers() -> None:
    channels = {c.channel: c for c in fed().ranking("acme").channels}
    assert list(channels) == [BLUESKY, MASTODON, FEED]  # by platform, then channel
    toots = [latest(i) for i, platform, _, _ in POSTS if platform == "mastodon"]
    mastodon = channels[MASTODON]
    assert (mastodon.posts, mastodon.followers) == (3, 2500)
    assert (mastodon.comments, mastodon.reposts, mastodon.likes) == tuple(sum(t[k] for t in toots) for k in range(3))
    for k, rate in enumerate(("conversation", "amplification", "applause")):
        average = sum(t[k] for t in toots) / 3
        assert getattr(mastodon.rates, rate) == average
        assert getattr(mastodon.rates, f"{rate}_per_1k_followers") == average / 2500 * 1000
    blog = channels[FEED]
    # Only the post whose feed gives a count counts; a feed has no reposts, likes or followers.
    assert (blog.posts, blog.comments, blog.reposts, blog.likes, blog.followers) == (2, 7, None, None, None)
    assert (blog.rates.conversation, blog.rates.conversation_per_1k_followers) == (7.0, None)
    sky = channels[BLUESKY]
    assert (sky.rates.applause, sky.rates.applause_per_1k_followers) == (20.0, 20 / 400 * 1000)
    # A platform filter keeps its channels only.
    assert [c.channel for c in fed().ranking("acme", platform="bluesky").channels] == [BLUESKY]


def test_replays_tombstones_and_bad_records() -> None:
    views = fed()
    sizes = views.sizes()
    assert sizes == {"content_items": 7, "content_readings": 9}
    item_id, platform, published, readings = POSTS[0]
    at, comments, reposts, likes, followers = readings[-1]
    again = reading(
        item_id, platform, published, at, comments=comments, reposts=reposts, likes=likes, followers=followers
    )
    views.apply(again)
    assert views.sizes() == sizes  # the same reading twice counts once
    # An older reading arriving late does not replace the latest counts.
    views.apply(reading(item_id, platform, published, NOW - 26 * H, comments=1, reposts=1, likes=1, followers=10))
    assert views.ranking("acme").items[0].comments == 5

    assert views.apply_record(TOPIC_CONTENT_ITEMS, f"acme|mastodon|{item_id}".encode(), None, NOW)
    assert item_id not in [e.id for e in views.ranking("acme", limit=100).items]
    assert not views.apply_record(TOPIC_CONTENT_ITEMS, b"acme|mastodon|unknown", None, NOW)
    with pytest.raises(BadContentRecord, match="brand\\|platform\\|id"):
        views.apply_record(TOPIC_CONTENT_ITEMS, b"no-pipes", None, NOW)
    with pytest.raises(ValidationError, match="published_at"):
        views.apply_record(TOPIC_CONTENT_ITEMS, b"acme|rss|x", b'{"brand": "acme", "platform": "rss", "id": "x"}', NOW)
    with pytest.raises(ValidationError, match="platform"):
        views.apply_record(
            TOPIC_CONTENT_ITEMS,
            b"k",
            b'{"brand": "acme", "platform": "myspace", "id": "x", "channel": "c", "published_at": "2026-01-01T00:00Z"}',
            NOW,
        )
    assert views.has_brand("quiet") and views.has_brand("globex") and not views.has_brand("nobody")


def test_old_readings_are_dropped_but_the_baseline_of_the_change_stays() -> None:
    views = ContentViews(clock=lambda: NOW, readings_kept=timedelta(hours=30), items_per_brand=3)
    published = NOW - 10 * D
    for hours in range(100, -1, -5):  # a reading every 5 h, 100 h ago to now: 21 readings
        views.apply(reading("mastodon:m:1", "mastodon", published, NOW - hours * H, comments=100 - hours))
    # Kept: the 30 h before the latest reading, and the newest reading before them.
    assert views.sizes()["content_readings"] == 8
    [entry] = views.ranking("acme").items
    assert entry.change_24h.comments == 100 - (100 - 25)
    for n in range(4):
        views.apply(reading(f"mastodon:m:{n + 2}", "mastodon", NOW - n * H, NOW, comments=n))
    dropped = views.evict(NOW + 10 * H)
    # The post published first goes (3 kept per brand), and the readings past 30 h before now.
    assert [e.id for e in views.ranking("acme", "recent").items] == ["mastodon:m:2", "mastodon:m:3", "mastodon:m:4"]
    assert dropped == 2 + 2  # two readings of the first post, then two posts
