"""Building history records for the store's tests, and reading back what the store kept."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from schemas import AccountMetric, Alert, AlertAck, Kpi, ScoredMention, dump

LABELS = ("positive", "neutral", "negative")


def scored(brand: str, mention_id: str, published_at: datetime, label: str = "positive", **extra: Any) -> ScoredMention:
    compound = {"positive": 0.6, "neutral": 0.0, "negative": -0.6, "unscored": 0.0}[label]
    fields: dict[str, Any] = {
        "id": mention_id,
        "source": "webhook",
        "text": extra.pop("text", f"what people say about {brand} ({mention_id})"),
        "lang": "en",
        "published_at": published_at,
        "brand": brand,
        "author": {"id": extra.pop("author", f"author-{mention_id}"), "followers": 10},
        "sentiment": {"compound": compound, "pos": 0.5, "neu": 0.5, "neg": 0.0, "label": label},
        "topics": extra.pop("topics", []),
        "reach": 10,
    }
    fields.update(extra)
    return ScoredMention.model_validate(fields)


def mention_records(
    count: int, brands: list[str], start: datetime, span: timedelta, seed: int, prefix: str = "m"
) -> list[ScoredMention]:
    """`count` scored mentions spread over `span` from `start`, round-robin over brands, labels drawn."""
    rng = random.Random(seed)
    step = span / max(count, 1)
    return [
        scored(
            brands[i % len(brands)],
            f"{prefix}{i}",
            start + step * i,
            rng.choice(LABELS),
            author=f"a{rng.randrange(50)}",
        )
        for i in range(count)
    ]


def kpi(brand: str, start: datetime, mentions: int) -> Kpi:
    return Kpi.model_validate(
        {
            "brand": brand,
            "window": "1h",
            "start": start,
            "end": start + timedelta(hours=1),
            "mentions": mentions,
            "positive": mentions,
        }
    )


def alert(brand: str, alert_id: str, created_at: datetime) -> Alert:
    return Alert.model_validate(
        {
            "id": alert_id,
            "brand": brand,
            "kind": "volume_spike",
            "severity": "warning",
            "window": {"start": created_at - timedelta(minutes=5), "end": created_at},
            "observed": 40,
            "baseline": 4,
            "threshold": 20,
            "message": "volume spike",
            "created_at": created_at,
        }
    )


def ack(brand: str, alert_id: str, at: datetime) -> AlertAck:
    return AlertAck(alert_id=alert_id, brand=brand, by="cm@example.org", at=at)


def metric(brand: str, value: float, at: datetime) -> AccountMetric:
    return AccountMetric.model_validate(
        {"brand": brand, "platform": "mastodon", "metric": "followers", "value": value, "at": at}
    )


def encoded(messages: list[Any], key: Any) -> list[tuple[bytes | None, bytes]]:
    return [(key(m).encode(), dump(m)) for m in messages]


def now() -> datetime:
    return datetime.now(UTC)


def count(url: str, query: str, params: tuple[Any, ...] = ()) -> int:
    """The first column of the first row; 0 while the tables are not there yet."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('mentions')").fetchone() == (None,):
            return 0
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0


def rows(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]
