"""Months of generated history (scored mentions of three brands, account readings, alerts) written to a real
PostgreSQL with the store's own batch writer, and the report figures recounted from the generated input in
plain Python, independently of the SQL and of schemas/history/report.py."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from schemas import AccountMetric, Alert, ScoredMention, dump
from schemas.history import migrate
from services.store.rows import Batch
from services.store.writer import Partitions, write_batch

LABELS = ["positive", "neutral", "negative", "unscored"]
KEEP_ALL = datetime(2000, 1, 1, tzinfo=UTC)  # the writer's retention cutoff: keep every generated row


@dataclass
class History:
    """What was written, to recount from."""

    mentions: list[ScoredMention] = field(default_factory=list)
    readings: list[AccountMetric] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


def generate(start: datetime, days: int, counts: dict[str, int], seed: int = 7) -> History:
    """`counts[brand]` mentions of each brand spread over `days` days from `start` (seconds apart at random),
    daily follower readings and weekly subscriber readings of `acme`, and an alert every ten days."""
    rng = random.Random(seed)
    history = History()
    span = days * 86_400
    for brand, n in counts.items():
        for i in range(n):
            published = start + timedelta(seconds=rng.randrange(span))
            label = rng.choices(LABELS, weights=[5, 3, 3, 1])[0]
            compound = {
                "positive": round(rng.uniform(0.05, 1.0), 4),
                "negative": round(rng.uniform(-1.0, -0.05), 4),
                "neutral": round(rng.uniform(-0.04, 0.04), 4),
                "unscored": 0.0,
            }[label]
            who = rng.randrange(120)
            author: dict[str, Any] = rng.choice(
                [
                    {"id": f"user-{who}", "handle": f"u{who}"},
                    {"handle": f"handle-{who % 40}"},
                    {"name": f"Name {who % 15}"},
                    {},
                ]
            )
            history.mentions.append(
                ScoredMention.model_validate(
                    {
                        "id": f"gen:{brand}:{i}",
                        "source": rng.choice(["rss", "reddit", "mastodon"]),
                        "url": f"https://example.org/{brand}/{i}",
                        "text": f"{brand} post {i} about the battery and the price",
                        "lang": "en",
                        "published_at": published,
                        "author": author,
                        "engagement": {
                            "likes": rng.randrange(60),
                            "shares": rng.randrange(6),
                            "comments": rng.randrange(12),
                        },
                        "brand": brand,
                        "sentiment": {"compound": compound, "pos": 0.0, "neu": 1.0, "neg": 0.0, "label": label},
                        "reach": rng.randrange(5000),
                    }
                )
            )
    followers = 10_000.0
    for day in range(days):
        followers *= 1 + rng.uniform(-0.003, 0.004)
        at = start + timedelta(days=day, hours=9)
        history.readings.append(
            AccountMetric(brand="acme", platform="mastodon", metric="followers", value=round(followers), at=at)
        )
        if day % 7 == 3:
            history.readings.append(
                AccountMetric(brand="acme", platform="newsletter", metric="subscribers", value=500 + 10 * day, at=at)
            )
    for day in range(5, days, 10):
        created = start + timedelta(days=day, hours=14)
        history.alerts.append(
            Alert.model_validate(
                {
                    "id": f"gen-alert-{day}",
                    "brand": "acme",
                    "kind": "volume_spike",
                    "severity": "warning",
                    "window": {"start": created - timedelta(minutes=5), "end": created},
                    "observed": 40,
                    "baseline": 4,
                    "threshold": 12,
                    "message": f"acme: volume spike on day {day}",
                    "created_at": created,
                }
            )
        )
    return history


async def store(url: str, history: History, batch_size: int = 2000) -> None:
    """Migrate the database and write `history` with the store's writer, in batches like the sink's."""
    await migrate(url)
    records: list[tuple[str, bytes, bytes]] = [
        *(("mentions.scored", m.brand.encode(), dump(m)) for m in history.mentions),
        *(("metrics.accounts", f"{r.brand}|{r.platform}|{r.metric}".encode(), dump(r)) for r in history.readings),
        *(("alerts", a.brand.encode(), dump(a)) for a in history.alerts),
    ]
    partitions = Partitions()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for first in range(0, len(records), batch_size):
            batch = Batch()
            for topic, key, value in records[first : first + batch_size]:
                batch.add(topic, key, value)
            await write_batch(conn, batch, KEEP_ALL, partitions)


# ---------------------------------------------------------------------------------------------- recounting


def day_floor(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


FLOORS: dict[str, Callable[[datetime], date]] = {
    "day": day_floor,
    "week": lambda m: day_floor(m) - timedelta(days=day_floor(m).weekday()),
    "month": lambda m: day_floor(m).replace(day=1),
}


def author_of(m: ScoredMention) -> str | None:
    return m.author.id or m.author.handle or m.author.name


def love(growth: float | None, per_mention: float | None, positive: int, negative: int) -> float | None:
    """The README's love index, written out again."""
    parts = []
    if growth is not None:
        parts.append((0.4, round(min(1.0, max(0.0, 0.5 + 5 * growth)), 4)))
    if per_mention is not None:
        parts.append((0.3, round(min(1.0, math.log10(1 + per_mention) / 2), 4)))
    if positive + negative:
        parts.append((0.3, round(positive / (positive + negative), 4)))
    return round(100 * sum(w * c for w, c in parts) / sum(w for w, _ in parts), 1) if parts else None


def expected_figures(
    mentions: Iterable[ScoredMention], competitor_mentions: int, has_competitors: bool, readings: list[AccountMetric]
) -> dict[str, Any]:
    """The report's figures of one bucket or period, counted in Python."""
    own = list(mentions)
    labels = {label: sum(1 for m in own if m.sentiment.label == label) for label in LABELS}
    scored = [m.sentiment.compound for m in own if m.sentiment.label != "unscored"]
    likes = sum(m.engagement.likes for m in own)
    shares = sum(m.engagement.shares for m in own)
    comments = sum(m.engagement.comments for m in own)
    total = likes + shares + comments
    by_key: dict[tuple[str, str], list[AccountMetric]] = defaultdict(list)
    for r in sorted(readings, key=lambda r: r.at):
        by_key[(r.platform, r.metric)].append(r)
    grown = [rs for (_, metric), rs in by_key.items() if metric in {"followers", "subscribers"} and len(rs) >= 2]
    before = sum(rs[0].value for rs in grown)
    growth = (sum(rs[-1].value for rs in grown) - before) / before if grown and before > 0 else None
    voice = len(own) + competitor_mentions
    return {
        "mentions": len(own),
        "sentiment": labels,
        "sentiment_avg": sum(scored) / len(scored) if scored else None,
        "engagement": {"likes": likes, "shares": shares, "comments": comments, "total": total},
        "reach": sum(m.reach for m in own),
        "unique_authors": len({a for a in map(author_of, own) if a}),
        "competitor_mentions": competitor_mentions,
        "share_of_voice": round(len(own) / voice, 4) if has_competitors and voice else None,
        "positive_share": (
            round(labels["positive"] / (labels["positive"] + labels["negative"]), 4)
            if labels["positive"] + labels["negative"]
            else None
        ),
        "love_index": love(growth, total / len(own) if own else None, labels["positive"], labels["negative"]),
        "accounts": {key: rs[-1].value for key, rs in by_key.items()},
    }


def expected_report(
    history: History, brand: str, competitors: list[str], since: datetime, until: datetime, bucket: str
) -> dict[str, Any]:
    """{"buckets": {bucket start date: figures}, "totals": figures, "previous": figures}."""
    floor = FLOORS[bucket]
    previous_since = since - (until - since)

    def within(moment: datetime, lo: datetime, hi: datetime) -> bool:
        return lo <= moment < hi

    def period(lo: datetime, hi: datetime, key: date | None = None) -> dict[str, Any]:
        def keep(moment: datetime) -> bool:
            return within(moment, lo, hi) and (key is None or floor(moment) == key)

        own = [m for m in history.mentions if m.brand == brand and keep(m.published_at)]
        rivals = sum(1 for m in history.mentions if m.brand in competitors and keep(m.published_at))
        readings = [r for r in history.readings if r.brand == brand and keep(r.at)]
        return expected_figures(own, rivals, bool(competitors), readings)

    keys: list[date] = []
    day = since
    while day < until:
        if floor(day) not in keys:
            keys.append(floor(day))
        day += timedelta(days=1)
    if floor(until - timedelta(microseconds=1)) not in keys:
        keys.append(floor(until - timedelta(microseconds=1)))
    return {
        "buckets": {key: period(since, until, key) for key in keys},
        "totals": period(since, until),
        "previous": period(previous_since, since),
    }
