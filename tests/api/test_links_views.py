"""Inbound links and web audience of /love, counted exactly from known scored mentions and readings (pure views)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import AccountMetric, ScoredMention
from services.api.insights_views import Insights
from services.api.links_views import LinkViews

NOW = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)
OWNED = {"acme": ["acme.com", "blog.acme.com"]}


def scored(mention_id: str, text: str, at: datetime, **fields: Any) -> ScoredMention:
    return ScoredMention.model_validate(
        {
            "id": mention_id,
            "text": text,
            "brand": "acme",
            "published_at": at.isoformat(),
            "sentiment": {"compound": 0.5, "pos": 0.5, "neu": 0.5, "neg": 0.0, "label": "positive"},
            **fields,
        }
    )


def feed(views: LinkViews) -> None:
    old = NOW - timedelta(days=3)
    views.apply_scored(scored("m1", "see https://acme.com/a", old, site="blog.one", author={"id": "a1"}), NOW)
    views.apply_scored(
        scored(
            "m2",
            "two links https://acme.com/b https://blog.acme.com/c and https://acme.com/b again",
            NOW - timedelta(hours=2),
            site="blog.one",
            author={"id": "a1", "handle": "@one"},
        ),
        NOW,
    )
    views.apply_scored(scored("m3", "nothing here https://example.org", NOW - timedelta(hours=1), site="blog.two"), NOW)
    views.apply_scored(
        scored(
            "m4",
            "kept by the connector",
            NOW - timedelta(minutes=5),
            site="mastodon.social",
            author={"id": "a2"},
            links=["https://shop.acme.com/x"],
        ),
        NOW,
    )
    views.apply_scored(scored("m5", "our own https://acme.com/z", NOW, site="acme.com"), NOW)  # self link


def test_inbound_links_per_window_domain_site_and_author_new_and_seen() -> None:
    views = LinkViews(OWNED, clock=lambda: NOW)
    feed(views)
    # Replays count nothing twice.
    feed(views)
    summary = views.summary("acme", NOW)
    assert summary is not None
    assert summary.last_24h.model_dump(exclude={"start", "end"}) == {
        "links": 3,
        "mentions": 2,
        "linking_sites": 2,
        "new_linking_sites": 1,  # blog.one first linked 3 days ago: seen; mastodon.social is new
        "authors": 2,
        "new_authors": 1,
    }
    assert summary.last_7d.model_dump(exclude={"start", "end"}) == {
        "links": 4,
        "mentions": 3,
        "linking_sites": 2,
        "new_linking_sites": 2,
        "authors": 2,
        "new_authors": 2,
    }
    assert [(d.domain, d.links_24h, d.links_7d) for d in summary.domains] == [
        ("acme.com", 2, 3),
        ("blog.acme.com", 1, 1),
    ]
    assert [(s.site, s.links, s.mentions, s.new) for s in summary.top_sites] == [
        ("blog.one", 3, 2, True),
        ("mastodon.social", 1, 1, True),
    ]
    assert [(a.key, a.handle, a.links) for a in summary.top_authors] == [("a1", "@one", 3), ("a2", None, 1)]
    assert [r.mention_id for r in summary.recent] == ["m4", "m2", "m1"]
    assert views.summary("globex", NOW) is None


def test_a_site_seen_before_the_week_is_not_new_even_once_its_old_links_are_evicted() -> None:
    views = LinkViews(OWNED, clock=lambda: NOW)
    views.apply_scored(scored("old", "https://acme.com", NOW - timedelta(days=7, hours=12), site="s"), NOW)
    views.apply_scored(scored("new", "https://acme.com/2", NOW - timedelta(hours=1), site="s"), NOW)
    assert views.evict(NOW + timedelta(days=1)) == 1
    summary = views.summary("acme", NOW)
    assert summary is not None
    assert (summary.last_7d.linking_sites, summary.last_7d.new_linking_sites) == (1, 0)
    # The evicted mention is forgotten for deduplication too, but too old to be counted again.
    late = NOW + timedelta(days=1)
    assert (
        views.apply_scored(scored("old", "https://acme.com", NOW - timedelta(days=7, hours=12), site="s"), late)
        is False
    )


def reading(metric: str, value: float, day: int) -> AccountMetric:
    at = datetime(2026, 12, day, tzinfo=UTC)
    return AccountMetric(brand="acme", platform="web", metric=metric, value=value, at=at)


def test_love_shows_inbound_links_and_web_audience_beside_mentions_and_weighs_them_in() -> None:
    insights = Insights({"acme": []}, clock=lambda: NOW)
    insights.links = LinkViews(OWNED, clock=lambda: NOW)
    for index in range(4):  # 4 mentions today, 1 positive each
        mention = scored(f"t{index}", "acme https://acme.com/p", NOW - timedelta(minutes=index), site=f"site{index}")
        insights.apply_scored(mention, NOW)
        insights.links.apply_scored(mention, NOW)
    for metric, value in [("visits", 100), ("social_visits", 36), ("social_visits:mastodon", 30)]:
        insights.apply_account_metric(reading(metric, value, 4), NOW)
    insights.apply_account_metric(reading("social_visits:bluesky", 6, 4), NOW)
    insights.apply_account_metric(reading("visits", 50, 3), NOW)
    insights.apply_account_metric(reading("bounce_rate", 40, 4), NOW)
    insights.apply_account_metric(reading("bounce_rate", 70, 3), NOW)

    love = insights.love("acme", NOW)
    assert love.inbound_links is not None and love.inbound_links.last_7d.new_linking_sites == 4
    assert love.web is not None
    today = love.web.days[-1]
    assert (str(today.date), today.mentions, today.visits, today.social_visits) == ("2026-12-04", 4, 100, 36)
    assert today.social == {"bluesky": 6, "mastodon": 30}
    assert today.social_visits_per_mention == 9.0
    assert love.web.last_7d.visits == 150 and love.web.last_7d.bounce_rate == 50.0  # (40·100 + 70·50) / 150
    assert love.web.last_7d.social == {"mastodon": 30, "bluesky": 6}
    # engagement 0 → 0; positive share 1; inbound links log10(5)/2; social traffic log10(10)/2 = 0.5
    assert love.components.engagement == 0.0 and love.components.positive_share == 1.0
    assert love.components.inbound_links == 0.3495 and love.components.social_traffic == 0.5
    assert love.love_index == round(100 * (0.3 * 0 + 0.3 * 1 + 0.2 * 0.3495 + 0.2 * 0.5) / 1.0, 1)
    assert [a.kind for a in love.accounts if a.platform == "web"] == ["web"] * 5


def test_without_owned_domains_or_web_readings_the_index_is_as_before() -> None:
    insights = Insights({"acme": []}, clock=lambda: NOW)
    insights.links = LinkViews({}, clock=lambda: NOW)
    insights.apply_scored(scored("x", "acme", NOW), NOW)
    love = insights.love("acme", NOW)
    assert love.inbound_links is None and love.web is None
    assert love.components.inbound_links is None and love.components.social_traffic is None
    assert love.love_index == round(100 * (0.3 * 0 + 0.3 * 1) / 0.6, 1)
