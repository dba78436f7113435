"""The API's in-memory views of the Kafka topics, and the queries it answers from them.

Pure state: the Kafka consumer feeds records in, the HTTP layer asks questions; neither is imported
here, so every rule (rolling windows, replacement of snapshots, eviction, author counts, the inbox, acks,
response times) is tested alone. Every `apply_*` is idempotent, so replaying a topic from its beginning
rebuilds the same answers; records of different topics may arrive in any order (an ack before its alert).
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
from collections import Counter
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from schemas import Alert, Kpi, ScoredMention, utc_now
from schemas.models import KpiEngagement, SentimentLabel
from services.api.actions import (
    AckRemoved,
    Action,
    AlertAck,
    HandledRemoved,
    MentionHandled,
    Outreach,
    OutreachRemoved,
)

RollingWindow = Literal["1m", "5m", "1h", "24h"]
ROLLING_WINDOWS: tuple[str, ...] = get_args(RollingWindow)
WINDOW_MINUTES: dict[str, int] = {"1m": 1, "5m": 5, "1h": 60, "24h": 1440}
MINUTE = timedelta(minutes=1)
# At most this many (brand, window) JSON answers are cached (every brand seen is a handful of keys).
KPI_JSON_KEPT = 10_000


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


InboxReason = Literal["negative", "question"]
RESPONSE_TIME_WINDOW = timedelta(hours=24)

# Questions without a question mark: a question word first (after any @handles), English or French.
_EN_WH = frozenset({"what", "why", "how", "when", "where", "who", "whom", "whose", "which"})
_EN_AUX = frozenset(
    {"is", "are", "am", "was", "were", "do", "does", "did", "can", "could", "should", "would", "will", "shall"}
    | {"may", "might", "has", "have", "had", "isn't", "aren't", "doesn't", "don't", "didn't", "won't", "can't"}
)
# An auxiliary opens a question only when a subject follows ("Do you…", not "Do not buy…").
_EN_SUBJECTS = frozenset(
    {"i", "you", "we", "they", "he", "she", "it", "there", "anyone", "anybody", "someone", "somebody", "this"}
    | {"that", "these", "those", "my", "your", "our", "their", "his", "her", "its", "the", "a", "an", "any"}
)
_FR_WORDS = frozenset(
    {"pourquoi", "comment", "combien", "quand", "où", "quel", "quelle", "quels", "quelles", "lequel", "laquelle"}
    | {"lesquels", "lesquelles", "quoi", "qui", "est-ce", "qu'est-ce", "qu’est-ce"}
)
# Inversion: "Avez-vous…", "Peut-on…", "Y a-t-il…".
_FR_INVERSION = re.compile(r"^[\wàâçéèêëîïôûùüÿœ']+-(?:t-)?(?:je|tu|il|elle|on|nous|vous|ils|elles)$")
_WORD = re.compile(r"[\w'’-]+")


def is_question(text: str, lang: str | None = None) -> bool:
    """A question mark anywhere, or a question word first (English unless lang is fr, French unless lang is en)."""
    if "?" in text or "？" in text or "¿" in text:
        return True
    words = [w.lower().strip("-'’") for w in _WORD.findall(" ".join(t for t in text.split() if not t.startswith("@")))]
    words = [w for w in words if w]
    if not words:
        return False
    first = words[0]
    if lang != "fr" and (first in _EN_WH or (first in _EN_AUX and len(words) > 1 and words[1] in _EN_SUBJECTS)):
        return True
    if lang != "en":
        if first in _FR_WORDS or (first == "y" and len(words) > 1 and words[1].startswith("a-t-")):
            return True
        if _FR_INVERSION.match(first):
            return True
        if first in ("est", "qu") and len(words) > 1 and words[1] in ("ce", "est-ce"):
            return True
    return False


def answer_reasons(mention: ScoredMention) -> list[InboxReason]:
    """Why a mention needs an answer: it is negative, and/or it asks something. Empty: it needs none."""
    reasons: list[InboxReason] = []
    if mention.sentiment.label == "negative":
        reasons.append("negative")
    if is_question(mention.text, mention.lang) or (mention.title is not None and "?" in mention.title):
        reasons.append("question")
    return reasons


class AlertView(Alert):
    """alert/1 with what people did about it (acked by whom, when)."""

    acked: bool = False
    acked_at: datetime | None = None
    acked_by: str | None = None
    ack_note: str | None = None


class InboxItem(ScoredMention):
    """A scored mention that needs an answer, and why."""

    reasons: list[InboxReason] = Field(default_factory=list)


class ResponseTime(BaseModel):
    """How fast the brand's inbox is answered: published_at → handled, over mentions handled in the window."""

    brand: str
    window: Literal["24h"] = "24h"
    count: int = Field(0, description="mentions handled in the window (with a known published_at)")
    median_seconds: float | None = Field(None, description="null without handled mentions")
    p90_seconds: float | None = Field(None, description="90th percentile (nearest rank); null without data")


class Inbox(BaseModel):
    brand: str
    pending: int = Field(description="mentions that need an answer and are not handled (kept ones)")
    items: list[InboxItem] = Field(description="the biggest reach first, then the most recent")
    response_time: ResponseTime


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

    def get(self, mention_id: str) -> ScoredMention | None:
        return self._by_id.get(mention_id)

    def remove(self, mention_id: str) -> bool:
        old = self._by_id.pop(mention_id, None)
        if old is None:
            return False
        del self._keys[bisect.bisect_left(self._keys, (old.published_at, old.id))]
        return True

    def all(self) -> list[ScoredMention]:
        return list(self._by_id.values())

    def __len__(self) -> int:
        return len(self._keys)


class Views:
    """Brands, rolling KPIs, recent mentions and alerts, rebuilt from the topics at every start."""

    def __init__(
        self,
        *,
        configured_brands: Iterable[str] = (),
        mentions_per_brand: int = 500,
        inbox_per_brand: int = 1000,
        alerts_kept: int = 10_000,
        retention: timedelta = timedelta(hours=25),
    ) -> None:
        self.mentions_per_brand = mentions_per_brand
        self.inbox_per_brand = inbox_per_brand
        self.alerts_kept = alerts_kept
        self.retention = retention
        self._configured = frozenset(configured_brands)
        self._seen: set[str] = set()
        # brand -> minute start -> the latest kpi/1 snapshot of that 1m bucket
        self._buckets: dict[str, dict[datetime, Kpi]] = {}
        # brand -> author id -> published_at of that author's latest mention
        self._authors: dict[str, dict[str, datetime]] = {}
        # brand -> minute -> authors whose latest mention falls in it (unique_authors without a scan)
        self._author_minutes: dict[str, dict[datetime, int]] = {}
        # brand -> a number that moves whenever an answer of `kpis` may change (besides the minute rolling over)
        self._kpi_versions: dict[str, int] = {}
        # (brand, window) -> (version, current minute, the JSON answer of `kpis`)
        self._kpi_json: dict[tuple[str, str], tuple[int, datetime, bytes]] = {}
        self._mentions: dict[str, _BrandMentions] = {}
        self._alerts: dict[str, Alert] = {}
        self._alert_order: list[tuple[datetime, str]] = []
        # brand -> mentions that need an answer (kept apart, so chatter does not push them out)
        self._inbox: dict[str, _BrandMentions] = {}
        self._acks: dict[str, AlertAck] = {}
        self._handled: dict[tuple[str, str], MentionHandled] = {}

    # -- feeding ---------------------------------------------------------------------------------

    def _cutoff(self, now: datetime | None) -> datetime:
        return floor_minute(now or utc_now()) - self.retention

    def _kpis_changed(self, brand: str) -> None:
        self._kpi_versions[brand] = self._kpi_versions.get(brand, 0) + 1

    def _see_author(self, brand: str, author: str, published_at: datetime) -> None:
        """Move the author's latest sighting forward; the per-minute counts change only across minutes."""
        authors = self._authors.setdefault(brand, {})
        last = authors.get(author)
        if last is not None and published_at <= last:
            return
        authors[author] = published_at
        minute = floor_minute(published_at)
        old_minute = floor_minute(last) if last is not None else None
        if minute == old_minute:
            return
        counts = self._author_minutes.setdefault(brand, {})
        if old_minute is not None:
            left = counts[old_minute] - 1
            if left:
                counts[old_minute] = left
            else:
                del counts[old_minute]
        counts[minute] = counts.get(minute, 0) + 1
        self._kpis_changed(brand)

    def apply_kpi(self, kpi: Kpi, now: datetime | None = None) -> bool:
        """Keep a 1m snapshot, replacing any earlier one of the same bucket; False if not kept."""
        self._seen.add(kpi.brand)
        if kpi.window != "1m" or kpi.start < self._cutoff(now):
            return False  # hourly/daily snapshots are not needed for rolling totals
        self._buckets.setdefault(kpi.brand, {})[kpi.start] = kpi
        self._kpis_changed(kpi.brand)
        return True

    def delete_kpi(self, brand: str, window: str, start: datetime) -> bool:
        """A tombstone on the compacted topic: forget that snapshot."""
        if window != "1m" or self._buckets.get(brand, {}).pop(start, None) is None:
            return False
        self._kpis_changed(brand)
        return True

    def apply_scored(self, mention: ScoredMention, now: datetime | None = None) -> bool:
        """Record a scored mention; True if it changed the list of recent mentions."""
        brand = mention.brand
        self._seen.add(brand)
        author = mention.author.id or mention.author.handle
        if author and mention.published_at >= self._cutoff(now):
            self._see_author(brand, author, mention.published_at)
        if answer_reasons(mention):
            inbox = self._inbox.get(brand)
            if inbox is None:
                inbox = self._inbox[brand] = _BrandMentions(self.inbox_per_brand)
            inbox.add(mention)
        else:
            inbox = self._inbox.get(brand)
            if inbox is not None:
                inbox.remove(mention.id)  # re-scored so that it no longer needs an answer
        recent = self._mentions.get(brand)
        if recent is None:
            recent = self._mentions[brand] = _BrandMentions(self.mentions_per_brand)
        return recent.add(mention)

    def apply_action(self, action: Action) -> bool:
        """Apply an ack, a handled mark or the tombstone of one; True if it changed anything."""
        if isinstance(action, AlertAck):
            changed = self._acks.get(action.alert_id) != action
            self._acks[action.alert_id] = action
            return changed
        if isinstance(action, MentionHandled):
            key = (action.brand, action.mention_id)
            changed = self._handled.get(key) != action
            self._handled[key] = action
            return changed
        if isinstance(action, AckRemoved):
            return self._acks.pop(action.alert_id, None) is not None
        if isinstance(action, HandledRemoved):
            return self._handled.pop((action.brand, action.mention_id), None) is not None
        if isinstance(action, Outreach | OutreachRemoved):
            return False  # replies and follows are engage.py's (a sink of the same records)
        raise TypeError(f"not an action: {action!r}")

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
        for brand, buckets in self._buckets.items():
            old = [start for start in buckets if start < cutoff]
            for start in old:
                del buckets[start]
            dropped += len(old)
            if old:
                self._kpis_changed(brand)
        for brand, authors in self._authors.items():
            gone = [author for author, seen in authors.items() if seen < cutoff]
            for author in gone:
                del authors[author]
            dropped += len(gone)
            counts = self._author_minutes.get(brand, {})
            for minute in [minute for minute in counts if minute < cutoff]:
                del counts[minute]
            if gone:
                self._kpis_changed(brand)
        # Old marks whose alert or mention the views no longer keep serve nothing (the topic still has them).
        stale_acks = [key for key, ack in self._acks.items() if ack.at < cutoff and key not in self._alerts]
        for key in stale_acks:
            del self._acks[key]
        stale_marks = [
            key
            for key, mark in self._handled.items()
            if mark.at < cutoff and self.find_mention(mark.brand, mark.mention_id) is None
        ]
        for mark_key in stale_marks:
            del self._handled[mark_key]
        return dropped + len(stale_acks) + len(stale_marks)

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
        unique_authors = sum(n for minute, n in self._author_minutes.get(brand, {}).items() if minute >= start)
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

    def kpis_json(self, brand: str, window: str, now: datetime | None = None) -> bytes:
        """`kpis` as JSON bytes, computed again only once the brand's data has changed or the minute rolled over.

        Exact: the answer depends only on the brand's buckets, its per-minute author counts and the current
        minute, and every change of the first two moves the brand's version.
        """
        current = floor_minute(now or utc_now())
        version = self._kpi_versions.get(brand, 0)
        cached = self._kpi_json.get((brand, window))
        if cached is not None and cached[0] == version and cached[1] == current:
            return cached[2]
        answer = self.kpis(brand, window, current).model_dump_json().encode()
        if len(self._kpi_json) < KPI_JSON_KEPT or (brand, window) in self._kpi_json:
            self._kpi_json[(brand, window)] = (version, current, answer)
        return answer

    def mentions(self, brand: str, limit: int = 50, sentiment: SentimentLabel | None = None) -> list[ScoredMention]:
        """The brand's newest mentions (by published_at) first, optionally of one sentiment."""
        recent = self._mentions.get(brand)
        return recent.newest(limit, sentiment) if recent is not None else []

    def alerts(self, brand: str | None = None, limit: int = 100, visible: Collection[str] | None = None) -> list[Alert]:
        """Alerts, newest (by created_at) first, optionally of one brand and/or among `visible` brands."""
        found: list[Alert] = []
        for _, alert_id in reversed(self._alert_order):
            alert = self._alerts[alert_id]
            if (brand is None or alert.brand == brand) and (visible is None or alert.brand in visible):
                found.append(alert)
                if len(found) >= limit:
                    break
        return found

    def alert(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    def alerts_after(
        self, alert_id: str, brand: str | None = None, visible: Collection[str] | None = None
    ) -> list[Alert]:
        """Alerts created after the given one, oldest first (SSE resumption with Last-Event-ID)."""
        last = self._alerts.get(alert_id)
        if last is None:
            return []
        position = bisect.bisect_right(self._alert_order, (last.created_at, last.id))
        later = [self._alerts[key[1]] for key in self._alert_order[position:]]
        return [
            alert
            for alert in later
            if (brand is None or alert.brand == brand) and (visible is None or alert.brand in visible)
        ]

    def ack(self, alert_id: str) -> AlertAck | None:
        return self._acks.get(alert_id)

    def alert_view(self, alert: Alert) -> AlertView:
        """The alert with its ack, if any."""
        ack = self._acks.get(alert.id)
        fields = dict(alert)
        if ack is not None:
            fields.update(acked=True, acked_at=ack.at, acked_by=ack.by, ack_note=ack.note)
        return AlertView.model_construct(**fields)

    # -- inbox -----------------------------------------------------------------------------------

    def find_mention(self, brand: str, mention_id: str) -> ScoredMention | None:
        """A kept mention of the brand (recent list or inbox)."""
        for store in (self._inbox.get(brand), self._mentions.get(brand)):
            if store is not None:
                found = store.get(mention_id)
                if found is not None:
                    return found
        return None

    def kept_mentions(self, brand: str) -> tuple[int, int]:
        """How many mentions the brand's recent list and its inbox hold (each is full at its capacity)."""
        recent, inbox = self._mentions.get(brand), self._inbox.get(brand)
        return len(recent) if recent is not None else 0, len(inbox) if inbox is not None else 0

    def handled(self, brand: str, mention_id: str) -> MentionHandled | None:
        return self._handled.get((brand, mention_id))

    def inbox(self, brand: str, limit: int = 50, now: datetime | None = None) -> Inbox:
        """Mentions that need an answer and are not handled yet, biggest reach first, then the most recent."""
        waiting = [
            mention
            for mention in (self._inbox[brand].all() if brand in self._inbox else [])
            if (brand, mention.id) not in self._handled
        ]
        waiting.sort(key=lambda m: (m.reach, m.published_at, m.id), reverse=True)
        items = [
            InboxItem.model_construct(**dict(mention), reasons=answer_reasons(mention)) for mention in waiting[:limit]
        ]
        return Inbox(brand=brand, pending=len(waiting), items=items, response_time=self.response_time(brand, now))

    def response_time(self, brand: str, now: datetime | None = None) -> ResponseTime:
        """Median and p90 of published_at → handled over the mentions handled in the last 24 hours."""
        end = now or utc_now()
        start = end - RESPONSE_TIME_WINDOW
        durations = sorted(
            max(0.0, (mark.at - mark.published_at).total_seconds())
            for (mark_brand, _), mark in self._handled.items()
            if mark_brand == brand and mark.published_at is not None and start < mark.at <= end
        )
        if not durations:
            return ResponseTime(brand=brand)
        p90 = durations[max(0, math.ceil(0.9 * len(durations)) - 1)]
        return ResponseTime(
            brand=brand, count=len(durations), median_seconds=statistics.median(durations), p90_seconds=p90
        )

    def sizes(self) -> dict[str, int]:
        """How much each view holds (for logs and /readyz)."""
        return {
            "brands": len(self.brands()),
            "kpi_buckets": sum(len(b) for b in self._buckets.values()),
            "authors": sum(len(a) for a in self._authors.values()),
            "mentions": sum(len(m) for m in self._mentions.values()),
            "alerts": len(self._alerts),
            "inbox": sum(len(m) for m in self._inbox.values()),
            "acks": len(self._acks),
            "handled": len(self._handled),
        }
