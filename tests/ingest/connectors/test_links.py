"""The links each connector keeps on a mention (`links`), from the shapes the real APIs send."""

from __future__ import annotations

from datetime import UTC, datetime

import feedparser

from schemas import Mention
from services.ingest.connectors.bluesky import event_fields
from services.ingest.connectors.hackernews import hit_fields
from services.ingest.connectors.mastodon import status_fields
from services.ingest.connectors.reddit import thing_fields
from services.ingest.connectors.rss import entry_fields

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


def valid(fields: dict[str, object] | None) -> Mention:
    assert fields is not None
    return Mention.model_validate(fields)


def test_mastodon_keeps_page_anchors_and_the_card_not_mentions_or_hashtags() -> None:
    status = {
        "id": "1101",
        "created_at": "2026-12-04T11:00:00.000Z",
        "content": (
            '<p>Love <a href="https://acme.com/launch" rel="nofollow noopener" target="_blank">'
            '<span class="invisible">https://</span>acme.com/launch</a> by '
            '<span class="h-card"><a href="https://mastodon.social/@acme" class="u-url mention">@<span>acme</span></a>'
            '</span> <a href="https://mastodon.social/tags/acme" class="mention hashtag" rel="tag">#<span>acme</span>'
            "</a>"
            "</p>"
        ),
        "account": {"acct": "jane", "followers_count": 3},
        "card": {"url": "https://blog.acme.com/post", "title": "Post"},
    }
    m = valid(status_fields(status, "mastodon.social", "acme", NOW).fields)
    assert m.links == ["https://acme.com/launch", "https://blog.acme.com/post"]


def test_bluesky_keeps_link_facets_and_the_external_embed() -> None:
    event = {"did": "did:plc:abc", "time_us": 1_700_000_000_000_000, "commit": {"rkey": "3k", "cid": "bafy"}}
    record = {
        "$type": "app.bsky.feed.post",
        "text": "acme ships acme.com/new",
        "createdAt": "2026-12-04T11:00:00Z",
        "facets": [
            {
                "index": {"byteStart": 11, "byteEnd": 23},
                "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://acme.com/new"}],
            },
            {
                "index": {"byteStart": 0, "byteEnd": 4},
                "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "x"}],
            },
        ],
        "embed": {"$type": "app.bsky.embed.external", "external": {"uri": "https://shop.acme.com/", "title": "Shop"}},
    }
    m = valid(event_fields(event, record, "acme", NOW).fields)
    assert m.links == ["https://acme.com/new", "https://shop.acme.com/"]


def test_rss_keeps_the_anchors_of_the_content_not_the_entry_itself() -> None:
    feed = feedparser.parse(
        b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item>
        <title>Review</title><link>https://reviews.example/acme</link><guid>https://reviews.example/acme</guid>
        <description>&lt;p&gt;See &lt;a href="https://acme.com/x"&gt;the maker&lt;/a&gt; and
        &lt;a href="https://reviews.example/acme"&gt;this page&lt;/a&gt;&lt;/p&gt;</description>
        </item></channel></rss>"""
    )
    m = valid(entry_fields(feed.entries[0], "https://reviews.example/feed", None, NOW).fields)
    assert m.links == ["https://acme.com/x"]


def test_hacker_news_story_links_to_its_url_and_a_comment_to_its_anchors() -> None:
    story = {"objectID": "1", "created_at_i": 1_700_000_000, "title": "Acme", "url": "https://acme.com/blog/x"}
    comment = {
        "objectID": "2",
        "created_at_i": 1_700_000_000,
        "_tags": ["comment"],
        "comment_text": 'I like <a href="https:&#x2F;&#x2F;blog.acme.com&#x2F;y" rel="nofollow">this</a>',
    }
    assert valid(hit_fields(story, "acme", NOW).fields).links == ["https://acme.com/blog/x"]
    assert valid(hit_fields(comment, "acme", NOW).fields).links == ["https://blog.acme.com/y"]


def test_reddit_link_post_links_to_its_url_a_self_post_does_not() -> None:
    base = {"subreddit": "phones", "created_utc": 1_700_000_000.0, "author": "u1", "title": "acme"}
    link = {"kind": "t3", "data": {**base, "name": "t3_a", "is_self": False, "url": "https://acme.com/p"}}
    own = {"kind": "t3", "data": {**base, "name": "t3_b", "is_self": True, "url": "https://www.reddit.com/r/x"}}
    assert valid(thing_fields(link, "acme", NOW)[0].fields).links == ["https://acme.com/p"]
    assert valid(thing_fields(own, "acme", NOW)[0].fields).links == []
