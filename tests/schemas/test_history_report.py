"""The pure parts of period reports: UTC buckets, period checks, figures from counts, changes, assembling rows
into a report (empty buckets included), flat CSV rows; and the shared love formula."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.history.report import (
    BUCKET_COLUMNS,
    AccountReadings,
    MentionCounts,
    ReportRangeError,
    assemble,
    bucket_after,
    bucket_floor,
    bucket_header,
    bucket_rows,
    bucket_starts,
    change,
    figures,
    report_period,
)
from schemas.love import love_score


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_buckets_are_utc_days_iso_weeks_and_months() -> None:
    # 2025-03-14 was a Friday; 00:30 in Paris (+01:00) is still the 13th in UTC.
    friday = utc(2025, 3, 14, 17, 45)
    assert bucket_floor(friday, "day") == utc(2025, 3, 14)
    assert bucket_floor(friday, "week") == utc(2025, 3, 10)
    assert bucket_floor(friday, "month") == utc(2025, 3, 1)
    assert bucket_floor(datetime(2025, 3, 14, 0, 30, tzinfo=timezone(timedelta(hours=1))), "day") == utc(2025, 3, 13)
    assert bucket_after(utc(2024, 12, 1), "month") == utc(2025, 1, 1)
    assert bucket_after(utc(2025, 1, 1), "month") == utc(2025, 2, 1)
    assert bucket_after(utc(2025, 3, 10), "week") == utc(2025, 3, 17)
    with pytest.raises(ValueError, match="unknown bucket"):
        bucket_floor(friday, "hour")


def test_bucket_starts_cover_the_period_and_stop_at_the_cap() -> None:
    assert bucket_starts(utc(2025, 1, 30, 12), utc(2025, 3, 1), "month") == [utc(2025, 1, 1), utc(2025, 2, 1)]
    assert bucket_starts(utc(2025, 1, 30, 12), utc(2025, 3, 1, 0, 0, 1), "month")[-1] == utc(2025, 3, 1)
    assert len(bucket_starts(utc(2025, 1, 1), utc(2025, 1, 8), "day")) == 7
    assert bucket_starts(utc(2025, 3, 12), utc(2025, 3, 20), "week") == [utc(2025, 3, 10), utc(2025, 3, 17)]
    assert len(bucket_starts(utc(2025, 1, 1), utc(2025, 1, 11), "day", limit=10)) == 10
    with pytest.raises(ReportRangeError) as caught:
        bucket_starts(utc(2025, 1, 1), utc(2025, 1, 11, 0, 0, 1), "day", limit=10)
    assert caught.value.parameter == "bucket" and "more than 10 day buckets" in str(caught.value)


def test_report_period_names_the_parameter_at_fault() -> None:
    period = report_period(utc(2025, 3, 1), utc(2025, 3, 31), "week")
    assert period.previous_since == utc(2025, 1, 30) and period.previous_until == utc(2025, 3, 1)
    assert period.starts[0] == utc(2025, 2, 24)
    for since, until, bucket, parameter in [
        (utc(2025, 3, 2), utc(2025, 3, 1), "day", "since"),
        (utc(2025, 3, 1), utc(2025, 3, 1), "day", "since"),
        (utc(2025, 3, 1), utc(2025, 3, 2), "hour", "bucket"),
        (utc(1, 1, 2), utc(5000, 1, 1), "month", "since"),  # the previous period would start before year 1
        (utc(2000, 1, 1), utc(2025, 1, 1), "day", "bucket"),
        (utc(9999, 12, 30), utc(9999, 12, 31, 12), "day", "until"),  # its bucket would end in year 10000
        (utc(9999, 12, 30), utc(9999, 12, 31, 12), "month", "until"),
    ]:
        with pytest.raises(ReportRangeError) as caught:
            report_period(since, until, bucket)
        assert caught.value.parameter == parameter, (since, until, bucket)


def test_figures_from_counts() -> None:
    counts = MentionCounts(
        mentions=10,
        positive=6,
        neutral=1,
        negative=2,
        unscored=1,
        sentiment_avg=0.123456,
        likes=70,
        shares=10,
        comments=10,
        reach=1234,
        unique_authors=7,
        competitor_mentions=30,
    )
    readings = [
        AccountReadings("mastodon", "followers", 3, 1000.0, 1050.0, utc(2025, 3, 3)),
        AccountReadings("newsletter", "Subscribers", 2, 500.0, 450.0, utc(2025, 3, 4)),
        AccountReadings("youtube", "subscribers", 1, 9999.0, 9999.0, utc(2025, 3, 4)),  # once: no growth from it
        AccountReadings("web", "inbound_links", 4, 10.0, 90.0, utc(2025, 3, 2)),  # not audience
    ]
    got = figures(counts, readings, has_competitors=True)
    assert got["sentiment_avg"] == 0.1235
    assert got["positive_share"] == 0.75
    assert got["share_of_voice"] == 0.25
    assert got["engagement"].total == 90
    love = got["love"]
    assert love.audience == 1500.0 and love.audience_growth_rate == 0.0
    assert love.engagement_per_mention == 9.0
    assert (love.audience_growth, love.engagement, love.positive_share) == (0.5, 0.5, 0.75)
    assert love.index == round(100 * (0.4 * 0.5 + 0.3 * 0.5 + 0.3 * 0.75), 1) == 57.5
    assert [(a.platform, a.value) for a in got["accounts"]] == [
        ("mastodon", 1050.0),
        ("newsletter", 450.0),
        ("web", 90.0),
        ("youtube", 9999.0),
    ]
    alone = figures(counts, [], has_competitors=False)
    assert alone["share_of_voice"] is None
    assert (alone["love"].audience_growth, alone["love"].index) == (
        None,
        round(100 * (0.3 * 0.5 + 0.3 * 0.75) / 0.6, 1),
    )
    empty = figures(MentionCounts(), [], has_competitors=True)
    assert (empty["share_of_voice"], empty["positive_share"], empty["sentiment_avg"], empty["love"].index) == (
        None,
        None,
        None,
        None,
    )


def test_changes_absolute_and_percent() -> None:
    assert change(120, 100).model_dump() == {"current": 120, "previous": 100, "change": 20, "change_pct": 20.0}
    assert change(0.5, 0.4).change == 0.1 and change(0.5, 0.4).change_pct == 25.0
    assert change(5, 0).model_dump() == {"current": 5, "previous": 0, "change": 5, "change_pct": None}
    assert change(None, 3).change is None and change(3, None).change_pct is None


def test_assemble_lists_empty_buckets_and_separates_the_periods() -> None:
    period = report_period(utc(2025, 3, 1, 12), utc(2025, 3, 5), "day")
    mention_rows = [
        # whole, cur, bucket, then MentionCounts' fields in order
        (0, True, utc(2025, 3, 2), 4, 2, 1, 1, 0, 0.25, 3, 2, 1, 100, 3, 4),
        (0, True, utc(2025, 3, 4), 1, 0, 0, 1, 0, -0.5, 0, 0, 0, 10, 1, 0),
        (1, True, None, 5, 2, 1, 2, 0, 0.1, 3, 2, 1, 110, 3, 4),
        (0, False, None, 2, 1, 1, 0, 0, 0.3, 1, 1, 1, 20, 2, 2),  # the previous period's total, twice
        (1, False, None, 2, 1, 1, 0, 0, 0.3, 1, 1, 1, 20, 2, 2),
    ]
    account_rows = [
        (0, True, utc(2025, 3, 2), "mastodon", "followers", 2, 100.0, 110.0, utc(2025, 3, 2, 20)),
        (1, True, None, "mastodon", "followers", 2, 100.0, 110.0, utc(2025, 3, 2, 20)),
    ]
    report = assemble("acme", ["globex"], period, mention_rows, account_rows)
    assert [(b.start.day, b.mentions, b.partial) for b in report.buckets] == [
        (1, 0, True),
        (2, 4, False),
        (3, 0, False),
        (4, 1, False),
    ]
    assert report.buckets[0].sentiment.model_dump() == {"positive": 0, "neutral": 0, "negative": 0, "unscored": 0}
    assert report.buckets[1].share_of_voice == 0.5 and report.buckets[1].love.audience_growth_rate == 0.1
    assert (report.totals.mentions, report.previous.mentions) == (5, 2)
    assert report.changes["mentions"].change == 3 and report.changes["unique_authors"].change == 1
    assert report.top_mentions is None and report.alerts is None

    header = bucket_header(report)
    assert header == [*BUCKET_COLUMNS, "mastodon.followers"]
    rows = list(bucket_rows(report))
    assert len(rows) == 4 and all(len(row) == len(header) for row in rows)
    second = dict(zip(header, rows[1], strict=True))
    assert (second["start"], second["mentions"], second["engagement"], second["mastodon.followers"]) == (
        utc(2025, 3, 2),
        4,
        6,
        110.0,
    )
    assert dict(zip(header, rows[0], strict=True))["mastodon.followers"] is None


def test_love_score_is_the_live_views_formula() -> None:
    # The numbers of tests/api/test_insights_api.py's /love answer.
    score = love_score(0.04, 47 / 8, 4, 1)
    assert (score.audience_growth, score.engagement, score.positive_share, score.index) == (0.7, 0.4186, 0.8, 64.6)
    assert love_score(None, None, 0, 0).index is None
    assert love_score(-1.0, 1000.0, 0, 0) == love_score(-0.5, 99.0, 0, 0)  # both clamped: 0 and 1
    assert love_score(None, 0.0, 0, 3).index == 0.0
