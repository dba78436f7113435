"""The history report's web audience: social-referred visits beside the mentions of each bucket, on real PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import psycopg

from schemas import AccountMetric, ScoredMention
from schemas.history.report import BUCKET_COLUMNS, brand_report, bucket_header, bucket_rows
from tests.api.history_data import History, store

DAY0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday


def scored(n: int, at: datetime) -> ScoredMention:
    return ScoredMention.model_validate(
        {
            "id": f"w{n}",
            "text": "acme",
            "brand": "acme",
            "published_at": at.isoformat(),
            "sentiment": {"compound": 0.0, "pos": 0.0, "neu": 1.0, "neg": 0.0, "label": "neutral"},
        }
    )


def web(metric: str, day: int, value: float) -> AccountMetric:
    return AccountMetric(brand="acme", platform="web", metric=metric, value=value, at=DAY0 + timedelta(days=day))


async def test_social_visits_are_summed_per_bucket_next_to_the_mentions(database_url: str) -> None:
    history = History()
    # Mentions: 2 on day 0, 4 on day 1, 1 on day 8 (the next week).
    for n, day in enumerate([0, 0, 1, 1, 1, 1, 8]):
        history.mentions.append(scored(n, DAY0 + timedelta(days=day, hours=10)))
    for day, visits, mastodon, bluesky in [(0, 100, 10, 2), (1, 300, 40, 8), (8, 50, 5, 0)]:
        history.readings += [
            web("visits", day, visits),
            web("social_visits", day, mastodon + bluesky),
            web("social_visits:mastodon", day, mastodon),
            web("social_visits:bluesky", day, bluesky),
        ]
    history.readings.append(AccountMetric(brand="acme", platform="web", metric="inbound_links", value=7, at=DAY0))
    await store(database_url, history)

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        daily = await brand_report(conn, "acme", [], DAY0, DAY0 + timedelta(days=14), "day")
        weekly = await brand_report(conn, "acme", [], DAY0, DAY0 + timedelta(days=14), "week")

    by_day = {b.start.day: b for b in daily.buckets}
    assert by_day[2].web is not None and by_day[3].web is not None
    assert (by_day[2].mentions, by_day[2].web.visits, by_day[2].web.social_visits) == (2, 100, 12)
    assert (by_day[3].mentions, by_day[3].web.social_visits, by_day[3].web.social) == (
        4,
        48,
        {"bluesky": 8, "mastodon": 40},
    )
    assert by_day[3].web.social_visits_per_mention == 12.0
    assert by_day[4].web is None  # no reading that day
    first_week, second_week = weekly.buckets
    assert first_week.web is not None and second_week.web is not None
    assert (first_week.mentions, first_week.web.visits, first_week.web.social_visits) == (6, 400, 60)
    assert first_week.web.social == {"bluesky": 10, "mastodon": 50}
    assert first_week.love.social_traffic == round(math.log10(1 + 10.0) / 2, 4)
    assert (second_week.mentions, second_week.web.social_visits, second_week.web.social_visits_per_mention) == (
        1,
        5,
        5.0,
    )
    assert weekly.totals.web is not None and weekly.totals.web.social_visits == 65

    header = bucket_header(weekly)
    assert header[: len(BUCKET_COLUMNS)] == list(BUCKET_COLUMNS)
    first = dict(zip(header, next(bucket_rows(weekly)), strict=True))
    assert (first["mentions"], first["visits"], first["social_visits"], first["social_visits_per_mention"]) == (
        6,
        400,
        60,
        10.0,
    )
