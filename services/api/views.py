"""The API's in-memory views of the Kafka topics, and the queries it answers from them.

Pure state: the Kafka consumer feeds records in, the HTTP layer asks questions; neither is imported
here, so every rule (rolling windows, replacement of snapshots, eviction, author counts) is tested alone.
Every `apply_*` is idempotent, so replaying a topic from its beginning rebuilds the same answers.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from schemas import Alert, Kpi, ScoredMention, utc_now
from schemas.models import KpiEngagement, SentimentLabel

RollingWindow = Literal["1m", "5m", "1h", "24h"]
ROLLING_WINDOWS: tuple[str, ...] = get_args(RollingWindow)
WINDOW_MINUTES: dict[str, int] = {"1m": 1, "5m": 5, "1h": 60, "24h": 1440}
MINUTE = timedelta(minutes=1)


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of a rolling window: the last N minute buckets, the current partial one included."""
    current = floor_minute(now)
    return current - (WINDOW_MINUTES[window] - 1) * MINUTE, current + MINUTE


class RollingKpi(BaseModel):
    """A brand's totals over a rolling window (kpi/1 counters, summed over 1-minute buckets)."""

    model_config = ConfigDict(frozen=True)

    brand: str
    window: RollingWindow
    start: datetime = Field(description="first minute bucket counted (inclusive)")
    end: datetime = Field(description="end of the current minute bucket (exclusive)")
    mentions: int = 0
    positive: int = 0
    neutral: int = 0
    negative: int = 0
    unscored: int = 0
    sentiment_sum: float = 0.0
    sentiment_avg: float | None = Field(None, description="sentiment_sum / mentions; null without mentions")
    engagement: KpiEngagement = Field(default_factory=KpiEngagement)
    reach: int = 0
    topics: dict[str, int] = Field(default_factory=dict)
    sources: dict[str, int] = Field(default_factory=dict)
    unique_authors: int = Field(0, description="distinct authors whose last mention falls in the window")
    updated_at: datetime | None = Field(None, description="latest update of a bucket counted; null if none")


class _BrandMentions:
    """The newest `capacity` scored mentions of one brand, ordered by (published_at, id), deduplicated by id."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: list[tuple[datetime, str]] = []
        self._by_id: dict[str, ScoredMention] = {}

    def add(self, mention: ScoredMention) -> bool:
        key = (mention.published_at, mention.id)
        old = self._by_id.get(mention.id)
        if old is not None:
            old_key = (old.published_at, old.id)
            del self._keys[bisect.bisect_left(self._keys, old_key)]
            del self._by_id[mention.id]
        elif len(self._keys) >= self.capacity and key < self._keys[0]:
            return False  # older than everything kept
        bisect.insort(self._keys, key)
        self._by_id[mention.id] = mention
        while len(self._keys) > self.capacity:
            _, dropped = self._keys.pop(0)
            del self._by_id[dropped]
        return True

    def newest(self, limit: int, sentiment: SentimentLabel | None) -> list[ScoredMention]:
        found: list[ScoredMention] = []
        for _, mention_id in reversed(self._keys):
            mention = self._by_id[mention_id]
            if sentiment is None or mention.sentiment.label == sentiment:
                found.append(mention)
                if len(found) >= limit:
                    break
        return found

    def __len__(self) -> int:
        return len(self._keys)


class Views:
    """Brands, rolling KPIs, recent mentions and alerts, rebuilt from the topics at every start."""

    def __init__(
        self,
        *,
        configured_brands: Iterable[str] = (),
        mentions_per_brand: int = 500,
        alerts_kept: int = 10_000,
        retention: timedelta = timedelta(hours=25),
    ) -> None:
        self.mentions_per_brand = mentions_per_brand
        self.alerts_kept = alerts_kept
        self.retention = retention
        self._configured = frozenset(configured_brands)
        self._seen: set[str] = set()
        # brand -> minute start -> the latest kpi/1 snapshot of that 1m bucket
        self._buckets: dict[str, dict[datetime, Kpi]] = {}
        # brand -> author id -> published_at of that author's latest mention
        self._authors: dict[str, dict[str, datetime]] = {}
        self._mentions: dict[str, _BrandMentions] = {}
        self._alerts: dict[str, Alert] = {}
        self._alert_order: list[tuple[datetime, str]] = []

    # -- feeding ---------------------------------------------------------------------------------

    def _cutoff(self, now: datetime | None) -> datetime:
        return floor_minute(now or utc_now()) - self.retention

    def apply_kpi(self, kpi: Kpi, now: datetime | None = None) -> bool:
        """Keep a 1m snapshot, replacing any earlier one of the same bucket; False if not kept."""
        self._seen.add(kpi.brand)
        if kpi.window != "1m" or kpi.start < self._cutoff(now):
            return False  # hourly/daily snapshots are not needed for rolling totals
        self._buckets.setdefault(kpi.brand, {})[kpi.start] = kpi
        return True

    def delete_kpi(self, brand: str, window: str, start: datetime) -> bool:
        """A tombstone on the compacted topic: forget that snapshot."""
        if window != "1m":
            return False
        return self._buckets.get(brand, {}).pop(start, None) is not None

    def apply_scored(self, mention: ScoredMention, now: datetime | None = None) -> bool:
        """Record a scored mention; True if it changed the list of recent mentions."""
        brand = mention.brand
        self._seen.add(brand)
        author = mention.author.id or mention.author.handle
        if author and mention.published_at >= self._cutoff(now):
            authors = self._authors.setdefault(brand, {})
            last = authors.get(author)
            if last is None or mention.published_at > last:
                authors[author] = mention.published_at
        recent = self._mentions.get(brand)
        if recent is None:
            recent = self._mentions[brand] = _BrandMentions(self.mentions_per_brand)
        return recent.add(mention)

    def apply_alert(self, alert: Alert) -> bool:
        """Keep an alert; True only the first time its id is seen (a replayed alert has the same id)."""
        self._seen.add(alert.brand)
        old = self._alerts.get(alert.id)
        if old is not None:
            del self._alert_order[bisect.bisect_left(self._alert_order, (old.created_at, old.id))]
        self._alerts[alert.id] = alert
        bisect.insort(self._alert_order, (alert.created_at, alert.id))
        while len(self._alert_order) > self.alerts_kept:
            _, dropped = self._alert_order.pop(0)
            del self._alerts[dropped]
        return old is None

    def evict(self, now: datetime | None = None) -> int:
        """Drop minute buckets and author sightings older than the retention; returns how many went."""
        cutoff = self._cutoff(now)
        dropped = 0
        for buckets in self._buckets.values():
            old = [start for start in buckets if start < cutoff]
            for start in old:
                del buckets[start]
            dropped += len(old)
        for authors in self._authors.values():
            gone = [author for author, seen in authors.items() if seen < cutoff]
            for author in gone:
                del authors[author]
            dropped += len(gone)
        return dropped

    # -- queries ---------------------------------------------------------------------------------

    def brands(self) -> list[str]:
        """Brands of the configuration and brands met in the data, sorted."""
        return sorted(self._configured | self._seen)

    def has_brand(self, brand: str) -> bool:
        return brand in self._configured or brand in self._seen

    def is_configured(self, brand: str) -> bool:
        return brand in self._configured

    def kpis(self, brand: str, window: str, now: datetime | None = None) -> RollingKpi:
        """Totals of the 1m buckets in the rolling window ending with the current (partial) minute."""
        if window not in WINDOW_MINUTES:
            raise ValueError(f"unknown window {window!r}; use one of {', '.join(ROLLING_WINDOWS)}")
        start, end = window_bounds(window, now or utc_now())
        mentions = positive = neutral = negative = unscored = reach = 0
        likes = shares = comments = 0
        sentiment_sum = 0.0
        topics: Counter[str] = Counter()
        sources: Counter[str] = Counter()
        updated_at: datetime | None = None
        for bucket_start, kpi in self._buckets.get(brand, {}).items():
            if bucket_start < start:
                continue
            mentions += kpi.mentions
            positive += kpi.positive
            neutral += kpi.neutral
            negative += kpi.negative
            unscored += kpi.unscored
            sentiment_sum += kpi.sentiment_sum
            likes += kpi.engagement.likes
            shares += kpi.engagement.shares
            comments += kpi.engagement.comments
            reach += kpi.reach
            topics.update(kpi.topics)
            sources.update(kpi.sources)
            if updated_at is None or kpi.updated_at > updated_at:
                updated_at = kpi.updated_at
        unique_authors = sum(1 for seen in self._authors.get(brand, {}).values() if seen >= start)
        return RollingKpi(
            brand=brand,
            window=window,
            start=start,
            end=end,
            mentions=mentions,
            positive=positive,
            neutral=neutral,
            negative=negative,
            unscored=unscored,
            sentiment_sum=sentiment_sum,
            sentiment_avg=sentiment_sum / mentions if mentions else None,
            engagement=KpiEngagement(likes=likes, shares=shares, comments=comments),
            reach=reach,
            topics=dict(topics),
            sources=dict(sources),
            unique_authors=unique_authors,
            updated_at=updated_at,
        )

    def mentions(self, brand: str, limit: int = 50, sentiment: SentimentLabel | None = None) -> list[ScoredMention]:
        """The brand's newest mentions (by published_at) first, optionally of one sentiment."""
        recent = self._mentions.get(brand)
        return recent.newest(limit, sentiment) if recent is not None else []

    def alerts(self, brand: str | None = None, limit: int = 100) -> list[Alert]:
        """Alerts, newest (by created_at) first, optionally of one brand."""
        found: list[Alert] = []
        for _, alert_id in reversed(self._alert_order):
            alert = self._alerts[alert_id]
            if brand is None or alert.brand == brand:
                found.append(alert)
                if len(found) >= limit:
                    break
        return found

    def alert(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    def alerts_after(self, alert_id: str, brand: str | None = None) -> list[Alert]:
        """Alerts created after the given one, oldest first (SSE resumption with Last-Event-ID)."""
        last = self._alerts.get(alert_id)
        if last is None:
            return []
        position = bisect.bisect_right(self._alert_order, (last.created_at, last.id))
        later = [self._alerts[key[1]] for key in self._alert_order[position:]]
        return [alert for alert in later if brand is None or alert.brand == brand]

    def sizes(self) -> dict[str, int]:
        """How much each view holds (for logs and /readyz)."""
        return {
            "brands": len(self.brands()),
            "kpi_buckets": sum(len(b) for b in self._buckets.values()),
            "authors": sum(len(a) for a in self._authors.values()),
            "mentions": sum(len(m) for m in self._mentions.values()),
            "alerts": len(self._alerts),
        }
