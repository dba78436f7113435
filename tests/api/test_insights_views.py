"""The pure insight views: time series, influence relays, sources, share of voice, love KPIs, emerging terms."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import AccountMetric, Kpi, ScoredMention
from services.api.insights_views import MAX_POINTS, Insights, brand_term_words, extract_terms, floor_minute

NOW = datetime(2025, 3, 14, 12, 34, 56, tzinfo=UTC)
M0 = floor_minute(NOW)  # 12:34, the current (partial) minute
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
COMPOUND = {"positive": 0.6, "neutral": 0.0, "negative": -0.6, "unscored": 0.0}


def mention(
    brand: str,
    mention_id: str,
    at: datetime,
    *,
    author: str | dict[str, Any] | None = "alice",
    label: str = "neutral",
    compound: float | None = None,
    reach: int = 0,
    likes: int = 0,
    shares: int = 0,
    comments: int = 0,
    text: str = "hello",
    **extra: Any,
) -> ScoredMention:
    fields: dict[str, Any] = {
        "id": mention_id,
        "source": "simulate",
        "text": text,
        "published_at": at,
        "author": author if isinstance(author, dict) else {"id": author, "handle": f"@{author}"} if author else {},
        "brand": brand,
        "sentiment": {
            "compound": COMPOUND[label] if compound is None else compound,
            "pos": 0.0,
            "neu": 1.0,
            "neg": 0.0,
            "label": label,
        },
        "reach": reach,
        "engagement": {"likes": likes, "shares": shares, "comments": comments},
    }
    fields.update(extra)
    return ScoredMention.model_validate(fields)


def snapshot(brand: str, start: datetime, window: str = "1m", **counters: Any) -> Kpi:
    length = {"1m": MINUTE, "1h": HOUR, "1d": DAY}[window]
    return Kpi.model_validate({"brand": brand, "window": window, "start": start, "end": start + length, **counters})


def reading(brand: str, platform: str, metric: str, value: float, at: datetime) -> AccountMetric:
    return AccountMetric(brand=brand, platform=platform, metric=metric, value=value, at=at)


def fixed_insights(competitors: dict[str, list[str]] | None = None, **options: Any) -> Insights:
    return Insights(competitors, clock=lambda: NOW, **options)


# -- terms -----------------------------------------------------------------------------------------


def test_terms_are_lowercased_words_and_hashtags_without_stop_words_urls_handles_or_numbers() -> None:
    text = (
        "L'amour du #Produit, it's GREAT! https://x.example/z?q=1 @bob 2024 ok aujourd'hui Acme's "
        "qu'il est beau — the service client était là 4-2 a"
    )
    # "du", "it's", "ok", "qu'il" (→ il), "est", "the", "était", "là" are stop words; "a" is too short.
    assert extract_terms(text) == {
        "amour",
        "#produit",
        "great",
        "aujourd'hui",
        "acme",
        "beau",
        "service",
        "client",
    }


def test_brand_terms_cover_words_hashtags_handles_phrases_and_wildcards() -> None:
    assert brand_term_words("#Acme") == ({"acme"}, set())
    assert brand_term_words("@acme") == ({"acme"}, set())
    assert brand_term_words('"acme corp"') == ({"acme", "corp"}, set())
    assert brand_term_words("acme*") == (set(), {"acme"})


# -- time series -----------------------------------------------------------------------------------


def test_timeseries_defaults_to_the_last_hour_of_minutes_dense_and_replacing_snapshots() -> None:
    insights = fixed_insights({"acme": []})
    assert insights.apply_kpi(snapshot("acme", M0, mentions=1))
    assert insights.apply_kpi(
        snapshot(
            "acme",
            M0,
            mentions=5,
            positive=2,
            neutral=1,
            negative=1,
            unscored=1,
            sentiment_sum=0.3,
            engagement={"likes": 3, "shares": 1, "comments": 2},
            reach=700,
        )
    )
    insights.apply_kpi(snapshot("acme", M0 - 59 * MINUTE, mentions=2, positive=2, sentiment_sum=1.2))
    insights.apply_kpi(snapshot("acme", M0 - 60 * MINUTE, mentions=9, neutral=9))
    assert not insights.apply_kpi(snapshot("acme", M0 - 60 * MINUTE, window="1d", mentions=99))

    series = insights.timeseries("acme", "1m")
    assert (series.since, series.until, len(series.points)) == (M0 - 59 * MINUTE, M0 + MINUTE, 60)
    assert [p.start for p in series.points] == [M0 - (59 - i) * MINUTE for i in range(60)]
    first, last = series.points[0], series.points[-1]
    assert (first.mentions, first.positive, first.sentiment_avg) == (2, 2, 0.6)
    assert last.model_dump(mode="json") == {
        "start": "2025-03-14T12:34:00Z",
        "mentions": 5,  # the second snapshot of 12:34 replaced the first
        "positive": 2,
        "neutral": 1,
        "negative": 1,
        "unscored": 1,
        "sentiment_avg": 0.075,  # 0.3 over the 4 scored mentions, not the 5
        "engagement": {"likes": 3, "shares": 1, "comments": 2},
        "reach": 700,
    }
    assert sum(p.mentions for p in series.points[1:-1]) == 0
    assert all(p.sentiment_avg is None for p in series.points[1:-1])

    explicit = insights.timeseries("acme", "1m", since=M0 - 60 * MINUTE + timedelta(seconds=30), until=M0 - 58 * MINUTE)
    assert [(p.start, p.mentions) for p in explicit.points] == [(M0 - 60 * MINUTE, 9), (M0 - 59 * MINUTE, 2)]

    assert insights.delete_kpi("acme", "1m", M0)
    assert insights.timeseries("acme", "1m").points[-1].mentions == 0


def test_timeseries_of_hours_and_the_bounds_on_points() -> None:
    insights = fixed_insights()
    h0 = M0.replace(minute=0)  # 12:00
    insights.apply_kpi(snapshot("acme", h0, window="1h", mentions=100, negative=100, sentiment_sum=-25.0))
    insights.apply_kpi(snapshot("acme", h0 - HOUR, window="1h", mentions=50))
    series = insights.timeseries("acme", "1h")
    assert (series.since, series.until, len(series.points)) == (h0 - 23 * HOUR, h0 + HOUR, 24)
    assert [(p.mentions, p.sentiment_avg) for p in series.points[-2:]] == [(50, None), (100, -0.25)]

    # until given: the default since is 24 hours before the end of the bucket holding it.
    until = h0 - HOUR + timedelta(minutes=30)
    shifted = insights.timeseries("acme", "1h", until=until)
    assert (shifted.since, shifted.until) == (h0 - 24 * HOUR, h0)
    assert shifted.points[-1].mentions == 50

    end = M0 + MINUTE
    assert len(insights.timeseries("acme", "1m", since=end - MAX_POINTS * MINUTE, until=end).points) == 1500
    with pytest.raises(ValueError, match="1501 points of 1m"):
        insights.timeseries("acme", "1m", since=end - (MAX_POINTS + 1) * MINUTE, until=end)
    with pytest.raises(ValueError, match="since must be before until"):
        insights.timeseries("acme", "1m", since=M0, until=M0)
    # Naive times are UTC.
    naive = insights.timeseries("acme", "1h", since=datetime(2025, 3, 14, 11, 0), until=datetime(2025, 3, 14, 13, 0))
    assert [p.mentions for p in naive.points] == [50, 100]


def test_old_snapshots_are_refused_and_evicted() -> None:
    insights = fixed_insights()
    assert not insights.apply_kpi(snapshot("acme", M0 - 25 * HOUR - MINUTE, mentions=1))
    assert insights.apply_kpi(snapshot("acme", M0 - 25 * HOUR, mentions=1))
    assert insights.apply_kpi(snapshot("acme", M0 - 30 * DAY, window="1h", mentions=1))
    assert insights.evict(NOW) == 0
    assert insights.evict(NOW + MINUTE) == 1  # the 1m snapshot of 25 h ago
    assert insights.evict(NOW + 2 * DAY) == 1  # the 1h snapshot is kept 31 days
    assert insights.sizes()["series_points"] == 0


# -- influence relays ------------------------------------------------------------------------------


def test_authors_are_ranked_by_reach_plus_ten_times_engagement_within_the_window() -> None:
    insights = fixed_insights()
    feed = [
        mention(
            "acme", "m1", M0 - 10 * MINUTE, author="alice", label="positive", reach=1000, likes=5, shares=1, comments=4
        ),
        mention(
            "acme",
            "m2",
            M0 - 2 * MINUTE + timedelta(seconds=5),
            author={
                "id": "alice",
                "handle": "@alice",
                "name": "Alice B",
                "followers": 1200,
                "url": "https://a.example",
            },
            label="negative",
            reach=1200,
        ),
        mention("acme", "m3", M0 - 30 * MINUTE, author="bob", reach=50, likes=300),
        mention("acme", "m4", M0 - 60 * MINUTE, author="carol", label="positive", reach=100_000),
        mention("acme", "m5", M0 - 1440 * MINUTE, author="dave", reach=1_000_000),
        mention("acme", "m6", M0, author=None, reach=5_000_000),  # no author: counted in sources only
        mention("globex", "m7", M0, author="eve", reach=9_000_000),
    ]
    assert all(insights.apply_scored(m) for m in feed)
    # The same mention again (a replay) changes nothing, even with other numbers.
    assert not insights.apply_scored(mention("acme", "m1", M0 - 10 * MINUTE, author="alice", reach=10**9))

    hour = insights.authors("acme", "1h")
    assert (hour.start, hour.end) == (M0 - 59 * MINUTE, M0 + MINUTE)
    assert [(a.key, a.score) for a in hour.authors] == [("bob", 50 + 3000), ("alice", 2200 + 100)]
    alice = hour.authors[1].model_dump(mode="json")
    assert alice == {
        "key": "alice",
        "id": "alice",
        "handle": "@alice",
        "name": "Alice B",  # identity of the latest mention
        "url": "https://a.example",
        "followers": 1200,
        "mentions": 2,
        "engagement": 10,
        "reach": 2200,
        "positive_share": 0.5,
        "negative_share": 0.5,
        "last_seen": "2025-03-14T12:32:05Z",
        "score": 2300,
    }
    day = insights.authors("acme", "24h", limit=2)
    assert [(a.key, a.score, a.mentions) for a in day.authors] == [("carol", 100_000, 1), ("bob", 3050, 1)]
    assert [a.key for a in insights.authors("acme", "24h").authors] == ["carol", "bob", "alice"]  # dave: 24h ago
    assert insights.authors("hooli", "24h").authors == []


def test_author_ties_go_to_more_mentions_then_the_latest_then_the_key() -> None:
    insights = fixed_insights()
    insights.apply_scored(mention("acme", "1", M0 - 3 * MINUTE, author="zed"))
    insights.apply_scored(mention("acme", "2", M0 - 3 * MINUTE, author="amy"))
    insights.apply_scored(mention("acme", "3", M0 - 1 * MINUTE, author="max"))
    insights.apply_scored(mention("acme", "4", M0 - 9 * MINUTE, author="old"))
    insights.apply_scored(mention("acme", "5", M0 - 8 * MINUTE, author="old"))
    assert [a.key for a in insights.authors("acme", "1h").authors] == ["old", "max", "amy", "zed"]


# -- sources ---------------------------------------------------------------------------------------


def test_sources_rank_sites_and_source_types_with_their_sentiment() -> None:
    insights = fixed_insights()
    insights.apply_scored(
        mention(
            "acme",
            "a",
            M0,
            label="positive",
            compound=0.5,
            reach=10,
            likes=2,
            site="Reddit.com/r/Phones",
            source="reddit",
        )
    )
    insights.apply_scored(
        mention(
            "acme",
            "b",
            M0,
            label="negative",
            compound=-0.4,
            reach=5,
            comments=1,
            url="https://www.Example.com/p/1",
            source="rss",
        )
    )
    insights.apply_scored(
        mention("acme", "c", M0, label="unscored", reach=20, shares=3, site="reddit.com/r/phones", source="reddit")
    )
    insights.apply_scored(mention("acme", "d", M0 - 61 * MINUTE, label="neutral", source="webhook"))

    hour = insights.sources("acme", "1h")
    assert hour.mentions == 3
    assert [s.model_dump() for s in hour.sites] == [
        {
            "name": "reddit.com/r/phones",
            "mentions": 2,
            "share": 0.6667,
            "engagement": 5,
            "reach": 30,
            "positive": 1,
            "neutral": 0,
            "negative": 0,
            "sentiment_avg": 0.5,  # the unscored mention does not dilute it
        },
        {
            "name": "example.com",
            "mentions": 1,
            "share": 0.3333,
            "engagement": 1,
            "reach": 5,
            "positive": 0,
            "neutral": 0,
            "negative": 1,
            "sentiment_avg": -0.4,
        },
    ]
    assert [(s.name, s.mentions) for s in hour.source_types] == [("reddit", 2), ("rss", 1)]

    day = insights.sources("acme", "24h", limit=2)
    assert day.mentions == 4
    # example.com and unknown both have one mention: more engagement ranks first.
    assert [(s.name, s.mentions, s.share) for s in day.sites] == [
        ("reddit.com/r/phones", 2, 0.5),
        ("example.com", 1, 0.25),
    ]
    assert [s.name for s in insights.sources("acme", "24h").sites] == ["reddit.com/r/phones", "example.com", "unknown"]
    assert [(s.name, s.sentiment_avg) for s in day.source_types] == [("reddit", 0.5), ("rss", -0.4)]


# -- share of voice --------------------------------------------------------------------------------


def test_share_of_voice_of_each_competitor_group() -> None:
    insights = fixed_insights({"acme": ["globex", "initech", "acme"], "globex": ["acme"], "solo": []})
    insights.apply_scored(mention("acme", "1", M0, label="positive"))
    insights.apply_scored(mention("acme", "2", M0 - 5 * MINUTE, label="negative"))
    insights.apply_scored(mention("acme", "3", M0 - 2 * HOUR, label="positive"))
    insights.apply_scored(mention("globex", "1", M0, label="positive"))

    day = insights.share_of_voice("24h")
    assert [g.brand for g in day.groups] == ["acme", "globex", "solo"]
    acme = day.groups[0]
    assert (acme.mentions, acme.positive) == (4, 3)
    assert [(m.brand, m.mentions, m.share, m.positive, m.positive_share, m.negative) for m in acme.members] == [
        ("acme", 3, 0.75, 2, 0.6667, 1),
        ("globex", 1, 0.25, 1, 0.3333, 0),
        ("initech", 0, 0.0, 0, 0.0, 0),
    ]
    assert [(m.brand, m.share) for m in day.groups[1].members] == [("globex", 0.25), ("acme", 0.75)]
    solo = day.groups[2]
    assert (solo.mentions, solo.members[0].share, solo.members[0].positive_share) == (0, None, None)

    hour = insights.share_of_voice("1h", ["acme"])
    assert [(m.brand, m.mentions, m.share, m.positive_share) for m in hour.groups[0].members] == [
        ("acme", 2, 0.6667, 0.5),
        ("globex", 1, 0.3333, 0.5),
        ("initech", 0, 0.0, 0.0),
    ]


# -- love ------------------------------------------------------------------------------------------


def feed_love(insights: Insights) -> None:
    for item in (
        reading("acme", "mastodon", "followers", 900, NOW - 8 * DAY - HOUR),
        reading("acme", "mastodon", "followers", 1000, NOW - 7 * DAY - HOUR),
        reading("acme", "mastodon", "followers", 1030, NOW - DAY - HOUR),
        reading("acme", "mastodon", "followers", 1040, NOW - 2 * HOUR),
        reading("acme", "newsletter", "subscribers", 500, NOW - 3 * DAY),
        reading("acme", "newsletter", "subscribers", 520, NOW - HOUR),
        reading("acme", "web", "inbound_links", 40, NOW - 10 * DAY),
        reading("acme", "web", "inbound_links", 42, NOW - 6 * HOUR),
    ):
        assert insights.apply_account_metric(item), item
    for i, (label, likes, shares, comments) in enumerate(
        [("positive", 10, 2, 1), ("positive", 10, 2, 1), ("positive", 10, 2, 1), ("negative", 0, 0, 1)]
    ):
        insights.apply_scored(
            mention("acme", f"m{i}", M0 - i * HOUR, label=label, likes=likes, shares=shares, comments=comments)
        )
    # A day ago: outside the last 24 h.
    insights.apply_scored(mention("acme", "old", M0 - 1440 * MINUTE, label="negative", likes=10_000))


def test_love_kpis_with_changes_over_one_and_seven_days_and_the_index() -> None:
    insights = fixed_insights({"acme": []})
    feed_love(insights)
    love = insights.love("acme").model_dump(mode="json")
    assert love["accounts"] == [
        {
            "platform": "mastodon",
            "metric": "followers",
            "kind": "audience",
            "value": 1040.0,
            "at": "2025-03-14T10:34:56Z",
            "change_1d": 10.0,
            "change_1d_pct": 0.9709,
            "change_7d": 40.0,
            "change_7d_pct": 4.0,
        },
        {
            "platform": "newsletter",
            "metric": "subscribers",
            "kind": "audience",
            "value": 520.0,
            "at": "2025-03-14T11:34:56Z",
            "change_1d": 20.0,
            "change_1d_pct": 4.0,
            "change_7d": None,  # no reading 7 days old
            "change_7d_pct": None,
        },
        {
            "platform": "web",
            "metric": "inbound_links",
            "kind": "links",
            "value": 42.0,
            "at": "2025-03-14T06:34:56Z",
            "change_1d": 2.0,
            "change_1d_pct": 5.0,
            "change_7d": 2.0,  # the 10-day-old reading is the one in force 7 days ago
            "change_7d_pct": 5.0,
        },
    ]
    assert love["totals"] == {
        "followers": {"value": 1040.0, "change_1d": 10.0, "change_7d": 40.0},
        "subscribers": {"value": 520.0, "change_1d": 20.0, "change_7d": None},
        "inbound_links": {"value": 42.0, "change_1d": 2.0, "change_7d": 2.0},
    }
    assert love["audience"] == {"value": 1560.0, "change_1d": 30.0, "change_7d": 40.0}
    assert love["engagement_24h"] == {
        "start": "2025-03-13T12:35:00Z",
        "end": "2025-03-14T12:35:00Z",
        "mentions": 4,
        "likes": 30,
        "shares": 6,
        "comments": 4,
        "per_mention": 10.0,
        "positive": 3,
        "negative": 1,
    }
    # audience: followers grew 4 % in 7 days (the newsletter has no 7-day reading) → 0.5 + 5 × 0.04;
    # engagement: log10(1 + 10) / 2; positive share: 3 / (3 + 1).
    assert love["components"] == {
        "audience_growth": 0.7,
        "engagement": 0.5207,
        "positive_share": 0.75,
        "inbound_links": None,  # no owned domains
        "social_traffic": None,  # no web analytics readings
    }
    assert love["love_index"] == round(100 * (0.4 * 0.7 + 0.3 * 0.5207 + 0.3 * 0.75), 1) == 66.1


def test_love_index_uses_the_components_it_has_and_is_null_without_any() -> None:
    insights = fixed_insights({"acme": [], "quiet": []})
    insights.apply_scored(mention("acme", "1", M0, label="negative", likes=99))
    love = insights.love("acme")
    assert (love.components.audience_growth, love.components.engagement, love.components.positive_share) == (
        None,
        1.0,
        0.0,
    )
    assert love.love_index == 50.0  # (0.3 × 1 + 0.3 × 0) / 0.6
    quiet = insights.love("quiet")
    assert (quiet.love_index, quiet.audience, quiet.accounts, quiet.engagement_24h.per_mention) == (
        None,
        None,
        [],
        None,
    )
    # Growth is clamped: +20 % a week is 1, −20 % is 0.
    for brand, end_value, expected in (("up", 120, 1.0), ("down", 80, 0.0)):
        insights.apply_account_metric(reading(brand, "x", "fans", 100, NOW - 7 * DAY))
        insights.apply_account_metric(reading(brand, "x", "fans", end_value, NOW))
        assert insights.love(brand).components.audience_growth == expected
        assert insights.love(brand).love_index == expected * 100


def test_account_history_is_bounded_in_time_and_size_and_readings_replace_at_the_same_time() -> None:
    insights = fixed_insights(readings_per_key=3)
    assert insights.apply_account_metric(reading("acme", "x", "followers", 10, NOW - 9 * DAY))
    assert insights.apply_account_metric(reading("acme", "x", "followers", 11, NOW - 8 * DAY - HOUR))
    # Older than both the retention and the reading in force at its start: useless.
    assert not insights.apply_account_metric(reading("acme", "x", "followers", 9, NOW - 10 * DAY))
    assert insights.apply_account_metric(reading("acme", "x", "followers", 12, NOW - DAY))
    assert insights.apply_account_metric(reading("acme", "x", "followers", 13, NOW - HOUR))
    assert insights.apply_account_metric(reading("acme", "x", "followers", 14, NOW - HOUR))  # replaces 13
    assert insights.sizes()["account_readings"] == 3
    followers = insights.love("acme").accounts[0]
    assert (followers.value, followers.change_1d, followers.change_7d) == (14.0, 2.0, 3.0)
    assert insights.apply_account_metric(reading("acme", "x", "followers", 15, NOW))
    assert insights.sizes()["account_readings"] == 3  # at most 3 per key: 11 went
    assert insights.evict(NOW + 8 * DAY) == 1  # 12 is the one in force 8 days before, 14 and 15 are newer
    assert insights.delete_account_metric("acme", "x", "followers")
    assert insights.love("acme").accounts == []


# -- trends ----------------------------------------------------------------------------------------


def test_emerging_terms_rise_against_the_previous_day() -> None:
    insights = fixed_insights({"acme": []})
    last_hour = [
        ("L1", "Acme battery RECALL announced #acme screen price acmephone", ["acme"]),
        ("L2", "acme battery recall announced, the screen! acmephone", ["acme*"]),
        ("L3", "Battery recall announced by @acme price acmephone", ["@acme"]),
        ("L4", "battery recall announced: price price https://acme.example/recall", ["acme"]),
    ]
    for i, (mention_id, text, matched) in enumerate(last_hour):
        insights.apply_scored(mention("acme", mention_id, M0 - (i * 19) * MINUTE, text=text, matched=matched))
    for i in range(120):  # the 24 h before the last hour: 48 × battery, 72 × price
        text = "battery life" if i < 48 else "price"
        insights.apply_scored(mention("acme", f"B{i}", M0 - (60 + i * 12) * MINUTE, text=text))
    # Counted in neither period: older than the baseline, or published in the future.
    insights.apply_scored(mention("acme", "old", M0 - 1500 * MINUTE, text="recall recall"))
    insights.apply_scored(mention("acme", "future", M0 + MINUTE, text="recall"))

    trends = insights.trends("acme")
    assert (trends.start, trends.end, trends.baseline_start) == (M0 - 59 * MINUTE, M0 + MINUTE, M0 - 1499 * MINUTE)
    assert [t.model_dump() for t in trends.terms] == [
        {"term": "announced", "count_last_hour": 4, "baseline_per_hour": 0.0, "score": 5.0},
        {"term": "recall", "count_last_hour": 4, "baseline_per_hour": 0.0, "score": 5.0},
        {"term": "battery", "count_last_hour": 4, "baseline_per_hour": 2.0, "score": round(5 / 3, 4)},
    ]
    # price: 3 in the last hour against 3 an hour before (score 1, not rising); screen: 2 < the minimum 3;
    # acme, #acme and acmephone (acme*) are brand terms; "the", "by" are stop words.
    assert [t.term for t in insights.trends("acme", limit=1).terms] == ["announced"]
    assert insights.trends("hooli").terms == []

    # Eviction forgets the terms of dropped buckets: a day later, the old baseline is gone.
    later = NOW + DAY
    insights.evict(later)
    for i in range(3):
        insights.apply_scored(mention("acme", f"N{i}", floor_minute(later) - i * MINUTE, text="battery"), later)
    assert [(t.term, t.baseline_per_hour, t.score) for t in insights.trends("acme", now=later).terms] == [
        ("battery", round(4 / 24, 4), round(4 / (4 / 24 + 1), 4))  # L1..L4 are now the baseline
    ]


def test_eviction_bounds_mentions_to_25_hours_and_forgets_their_ids() -> None:
    insights = fixed_insights()
    assert not insights.apply_scored(mention("acme", "too-old", M0 - 1501 * MINUTE))
    assert insights.apply_scored(mention("acme", "edge", M0 - 1500 * MINUTE, text="alpha"))
    assert insights.apply_scored(mention("acme", "now", M0, text="beta"))
    assert insights.sizes()["insight_mention_ids"] == 2
    assert insights.evict(NOW) == 0
    assert insights.evict(NOW + MINUTE) == 1
    assert insights.sizes() == {
        "insight_buckets": 1,
        "insight_mention_ids": 1,
        "series_points": 0,
        "account_readings": 0,
    }
    assert insights.has_brand("acme") and insights.brands() == ["acme"]


def test_from_config_reads_competitor_groups() -> None:
    from schemas import EcouteConfig

    config = EcouteConfig.model_validate(
        {"brands": {"acme": {"query": "acme", "competitors": ["globex"]}, "globex": {"query": "globex"}}}
    )
    insights = Insights.from_config(config, clock=lambda: NOW)
    assert insights.voice_groups() == [("acme", "globex"), ("globex",)]
    assert insights.brands() == ["acme", "globex"]
    assert Insights.from_config(None).brands() == []
    assert math.isclose(insights.clock().timestamp(), NOW.timestamp())


def test_windows_from_running_totals_equal_a_recount_after_evictions() -> None:
    rng = random.Random(7)
    insights = fixed_insights()
    fed: list[ScoredMention] = []
    for i in range(600):
        at = NOW - timedelta(minutes=rng.randrange(0, 1500)) + timedelta(minutes=rng.choice([0, 0, 0, 2]))
        item = mention(
            "acme",
            f"r{i}",
            at,
            author=f"a{rng.randrange(40)}",
            label=rng.choice(["positive", "neutral", "negative", "unscored"]),
            reach=rng.randrange(1000),
            likes=rng.randrange(5),
            site=f"s{rng.randrange(7)}.example",
            text=rng.choice(["alpha beta", "beta gamma", "gamma delta"]),
        )
        fed.append(item)
        insights.apply_scored(item)
    for now in (NOW, NOW + 3 * HOUR):
        insights.evict(now)
        for window, minutes in (("1h", 60), ("24h", 1440)):
            start = M0 + (now - NOW) - (minutes - 1) * MINUTE
            inside = [m for m in fed if start <= floor_minute(m.published_at) < start + minutes * MINUTE]
            expected: dict[str, tuple[int, int, int]] = {}
            for m in inside:
                n, reach, likes = expected.get(m.author.id or "", (0, 0, 0))
                expected[m.author.id or ""] = (n + 1, reach + m.reach, likes + m.engagement.likes)
            got = {
                a.key: (a.mentions, a.reach, a.engagement) for a in insights.authors("acme", window, 100, now).authors
            }
            assert got == expected, (now, window)
            sites = insights.sources("acme", window, 100, now)
            assert sites.mentions == len(inside)
            assert sum(s.mentions for s in sites.sites) == len(inside)


def test_a_brand_over_its_cap_loses_its_oldest_minutes_first() -> None:
    insights = fixed_insights(mentions_per_brand=3)
    for i in range(3):
        insights.apply_scored(mention("acme", f"m{i}", M0 - (3 - i) * MINUTE, author=f"a{i}"))
    insights.apply_scored(mention("acme", "m3", M0, author="a3"))
    assert [a.key for a in insights.authors("acme", "1h").authors] == ["a3", "a2", "a1"]
    # One minute alone may exceed the cap (a burst stays countable).
    for i in range(4, 9):
        insights.apply_scored(mention("acme", f"m{i}", M0, author=f"a{i}"))
    assert insights.sizes()["insight_mention_ids"] == 6
    assert insights.sources("acme", "1h").mentions == 6
