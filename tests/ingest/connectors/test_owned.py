"""Owned content: the brand's Mastodon and Bluesky accounts and blog feed, polled from loopback servers speaking
those APIs, produce content-item/1 readings to content.items and followers to metrics.accounts on a real Kafka."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import AccountMetric, ConfigError, ContentItem, EcouteConfig, Topics, load, load_config
from services.ingest import IngestSettings
from services.ingest.connectors import FetchPolicy, SafeFetcher, parse_networks
from services.ingest.connectors.owned import OwnedConnector, owned_connectors
from services.ingest.sources import SourceRunner
from tests.helpers import read_all
from tests.ingest.connectors.conftest import LOOPBACK, eventually, sample, source_runner
from tests.ingest.connectors.owned_servers import BlueskyAppView, MastodonAccounts, blog_feed
from tests.ingest.connectors.web import Reply, WebServer

DID = "did:plc:acmeacmeacme"
T = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)


def rss_id(guid: str) -> str:
    return "rss:" + hashlib.sha1(guid.encode()).hexdigest()


class Channels:
    """The three fake channels of the brand `acme` on one loopback web server."""

    def __init__(self, web: WebServer) -> None:
        self.web = web
        self.mastodon = MastodonAccounts(web)
        self.mastodon.add_account("acme", "7", followers=2500)
        self.toot1 = self.mastodon.post("acme", 1, T, replies=4, reblogs=7, favourites=31)
        self.toot2 = self.mastodon.post("acme", 2, T + timedelta(hours=1), replies=0, reblogs=1, favourites=3)
        # Neither a reply nor a boost is the brand's content: the connector asks the instance to leave them out.
        self.mastodon.post("acme", 3, T, replies=0, reblogs=0, favourites=90, in_reply_to_id="5")
        self.mastodon.post("acme", 4, T, replies=0, reblogs=0, favourites=90, reblog={"id": "9"})
        self.bluesky = BlueskyAppView(web)
        self.bluesky.add_profile(DID, "acme.bsky.social", followers=800)
        self.skeet1 = self.bluesky.post(DID, "3kaaa1", T, replies=2, reposts=5, likes=40, text="Bluesky launch")
        self.bluesky.repost_of_other(DID, "did:plc:someoneelse", "3kzzz9", T + timedelta(minutes=5))
        self.bluesky.reply_post(DID, "3kaaa2", T + timedelta(minutes=6))
        self.skeet2 = self.bluesky.post(DID, "3kaaa3", T + timedelta(hours=2), replies=1, reposts=0, likes=6)
        self.feed_url = blog_feed(
            web,
            [
                {"n": 1, "title": "Slashdot style", "published": T, "slash": 5},
                {"n": 2, "title": "Threaded", "published": T + timedelta(minutes=1), "thr": 2},
                {"n": 3, "title": "Comment feed", "published": T + timedelta(minutes=2), "comments_feed": list("abc")},
                {"n": 4, "title": "Silent", "published": T + timedelta(minutes=3)},
            ],
        )

    def owned(self, **extra: Any) -> dict[str, Any]:
        return {
            "mastodon": [{"instance": self.web.url("/"), "account": "@acme"}],
            "bluesky": [{"handle": "acme.bsky.social", "base_url": self.web.url("/")}],
            "rss": [self.feed_url],
            **extra,
        }

    def config(self, **extra: Any) -> EcouteConfig:
        return EcouteConfig.model_validate(
            {
                "brands": {"acme": {"query": "acme", "owned": self.owned(**extra)}, "globex": {"query": "globex"}},
                "fetch": {"allow_networks": LOOPBACK},
            }
        )


@pytest.fixture
def channels(web: WebServer) -> Channels:
    return Channels(web)


async def content_items(bootstrap: str, settings: IngestSettings) -> dict[str, ContentItem]:
    records = await read_all(bootstrap, Topics(settings.topic_prefix).content_items)
    latest: dict[str, ContentItem] = {}
    for key, value, _ in records:
        assert key is not None and value is not None
        item = load(ContentItem, value)
        assert key.decode() == item.key
        latest[item.key] = item
    return latest


def counts(item: ContentItem) -> tuple[int | None, int | None, int | None, int | None]:
    return item.comments, item.reposts, item.likes, item.followers


def worker_of(runner: SourceRunner) -> Any:
    [worker] = [w for w in runner.workers if w.connector.type == "owned"]
    return worker


# ---------------------------------------------------------------------------------------------- config


def test_a_bad_owned_channel_is_a_config_error_naming_it(tmp_path: Path) -> None:
    bad = {
        "handle and did": ("bluesky: [{handle: acme.bsky.social, did: 'did:plc:x'}]", "owned.bluesky.0: Value error"),
        "no channel": ("interval: 5m", "owned: Value error, owned needs at least one channel"),
        "not an account": ("mastodon: [{instance: 'https://m.example', account: 'ac me'}]", "owned.mastodon.0.account"),
        "not a URL": ("rss: ['blog.example.com/feed']", "owned.rss.0"),
        "no instance": ("mastodon: [{account: acme}]", "owned.mastodon.0.instance: Field required"),
        "unknown key": ("twitter: [acme]", "owned.twitter: Extra inputs are not permitted"),
        "twice": (
            "rss: ['https://b.example/feed', 'https://b.example/feed']",
            "owned: Value error, the same rss channel is listed twice",
        ),
    }
    for name, (owned, message) in bad.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(f"brands:\n  acme:\n    query: acme\n    owned: {{{owned}}}\n", encoding="utf-8")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert f"brands.acme.{message}" in str(caught.value), (name, str(caught.value))

    good = tmp_path / "good.yaml"
    good.write_text(
        "brands:\n  acme:\n    query: acme\n    owned:\n"
        "      mastodon: [{instance: 'https://mastodon.social', account: '@acme'}]\n"
        "      bluesky: [{did: 'did:plc:abc123'}]\n"
        "      rss: ['https://blog.acme.example/feed']\n"
        "      interval: 10m\n",
        encoding="utf-8",
    )
    [connector] = owned_connectors(load_config(good))
    assert (connector.source_id, connector.interval, connector.channels.posts) == ("owned:acme", 600.0, 40)
    assert connector.describe() == (
        "owned channels of acme: mastodon acme on mastodon.social, bluesky did:plc:abc123, "
        "feed https://blog.acme.example/feed"
    )


# ---------------------------------------------------------------------------------------------- Kafka


@pytest.mark.kafka
async def test_owned_posts_become_content_readings_and_followers_account_metrics(
    channels: Channels, source_settings: IngestSettings, bootstrap: str
) -> None:
    async with source_runner(source_settings, channels.config(interval=60)) as runner:
        worker = worker_of(runner)
        await eventually(lambda: worker.polls >= 1, 20, what="a poll of the owned channels")
        assert worker.status.state == "ok", worker.status.last_error
        assert worker.status.produced == 8 + 2  # 8 posts, 2 follower readings
    items = await content_items(bootstrap, source_settings)
    host = "127.0.0.1"
    toot1, toot2 = (f"acme|mastodon|mastodon:{host}:{s['id']}" for s in (channels.toot1, channels.toot2))
    skeet1, skeet2 = f"acme|bluesky|bluesky:{DID}:3kaaa1", f"acme|bluesky|bluesky:{DID}:3kaaa3"
    blog = [f"acme|rss|{rss_id(f'https://blog.acme.example/{n}')}" for n in (1, 2, 3, 4)]
    assert {k: counts(v) for k, v in items.items()} == {
        toot1: (4, 7, 31, 2500),
        toot2: (0, 1, 3, 2500),
        skeet1: (2, 5, 40, 800),
        skeet2: (1, 0, 6, 800),
        blog[0]: (5, None, None, None),  # slash:comments
        blog[1]: (2, None, None, None),  # thr:total
        blog[2]: (3, None, None, None),  # the entries of its wfw:commentRss feed
        blog[3]: (None, None, None, None),  # nothing said: unknown, not 0
    }
    first = items[toot1]
    assert (first.brand, first.channel, first.published_at, first.url) == (
        "acme",
        f"acme@{host}",
        T,
        channels.toot1["url"],
    )
    assert first.text == "Our new X2 is out acme.example/x2"
    assert (items[skeet1].channel, items[skeet1].url, items[skeet1].text) == (
        "acme.bsky.social",
        "https://bsky.app/profile/acme.bsky.social/post/3kaaa1",
        "Bluesky launch",
    )
    assert (items[blog[0]].title, items[blog[0]].url, items[blog[0]].channel) == (
        "Slashdot style",
        "https://blog.acme.example/1",
        channels.feed_url,
    )
    assert items[blog[3]].published_at == T + timedelta(minutes=3)
    assert len({item.at for item in items.values()}) == 1  # one poll, one reading time

    metrics = {
        k.decode(): load(AccountMetric, v).value
        for k, v, _ in await read_all(bootstrap, Topics(source_settings.topic_prefix).metrics_accounts)
        if k is not None and v is not None
    }
    assert metrics == {"acme|mastodon|followers": 2500, "acme|bluesky|followers": 800}

    # What was asked: the account's own statuses without replies and boosts; the author feed without replies.
    [statuses] = channels.web.hits("/api/v1/accounts/7/statuses")
    assert statuses.query == {"limit": "40", "exclude_replies": "true", "exclude_reblogs": "true"}
    assert channels.web.hits("/api/v1/accounts/lookup")[0].query == {"acct": "acme"}
    [feed] = channels.web.hits("/xrpc/app.bsky.feed.getAuthorFeed")
    assert feed.query == {"actor": DID, "limit": "40", "filter": "posts_no_replies"}


@pytest.mark.kafka
async def test_a_channel_down_backs_off_without_holding_back_the_others(
    channels: Channels, source_settings: IngestSettings, bootstrap: str
) -> None:
    channels.mastodon.statuses_reply = Reply(503, b"down for maintenance")
    async with source_runner(source_settings, channels.config(interval=0.3)) as runner:
        worker = worker_of(runner)
        await eventually(lambda: worker.status.consecutive_failures >= 2, 20, what="failing polls")
        assert worker.status.state == "failing" and "HTTP 503" in str(worker.status.last_error)
        labels = {"source_id": "owned:acme", "type": "owned"}
        assert sample(runner, "ecoute_ingest_source_errors_total", **labels, kind="http_status") >= 2
        items = await content_items(bootstrap, source_settings)
        assert {item.platform for item in items.values()} == {"bluesky", "rss"}
        # The failing platform's followers are not sent (a partial sum would read as a drop), the others' are.
        keys = {
            k.decode()
            for k, _, _ in await read_all(bootstrap, Topics(source_settings.topic_prefix).metrics_accounts)
            if k is not None
        }
        assert keys == {"acme|bluesky|followers"}

        # Back up: the next poll reads it, with the counts of now.
        channels.mastodon.react(channels.toot1, replies_count=6)
        channels.mastodon.statuses_reply = None
        await eventually(lambda: worker.status.state == "ok", 20, what="the channel to recover")
    items = await content_items(bootstrap, source_settings)
    assert counts(items[f"acme|mastodon|mastodon:127.0.0.1:{channels.toot1['id']}"]) == (6, 7, 31, 2500)


# ---------------------------------------------------------------------------------------------- paging


@pytest.fixture
def fetcher() -> Iterator[SafeFetcher]:
    yield SafeFetcher(FetchPolicy(allow_networks=parse_networks(LOOPBACK), max_attempts=1))


async def test_more_posts_than_a_page_are_read_page_by_page(channels: Channels, fetcher: SafeFetcher) -> None:
    for n in range(10, 53):  # 43 more statuses: 45 in all
        channels.mastodon.post("acme", n, T + timedelta(minutes=n), replies=n, reblogs=0, favourites=0)
    for n in range(10, 130):  # 120 more posts (and the repost and reply): 124 feed entries
        channels.bluesky.post(DID, f"3kb{n:04d}", T + timedelta(minutes=n), replies=0, reposts=0, likes=n)
    config = channels.config(posts=50)
    [connector] = owned_connectors(config)
    assert isinstance(connector, OwnedConnector)
    try:
        [batch] = [b async for b in connector.poll(None, fetcher)]
    finally:
        await fetcher.aclose()
    by_platform: dict[str, list[dict[str, Any]]] = {}
    for item in batch.content_items:
        by_platform.setdefault(item["platform"], []).append(item)
    assert len(by_platform["mastodon"]) == 45  # 40 + 5; fewer than asked for: the account has no more
    pages = [(h.query["limit"], h.query.get("max_id")) for h in channels.web.hits("/api/v1/accounts/7/statuses")]
    assert pages[:2] == [("40", None), ("10", str(111_000_000_000_000_000 + 13))]
    # The author feed's 50 newest entries (filtered by the server) are read; none is a repost or a reply.
    assert len(by_platform["bluesky"]) == 50
    assert [h.query["limit"] for h in channels.web.hits("/xrpc/app.bsky.feed.getAuthorFeed")] == ["50"]
    assert all(item["id"].startswith(f"bluesky:{DID}:3kb") for item in by_platform["bluesky"])
    assert len(by_platform["rss"]) == 4
