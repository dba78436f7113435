"""Records of the history topics → rows of the history tables. Pure: no Kafka, no database.

`Batch` gathers what one transaction writes; every topic's records are turned into rows as they are read
(validated with the shared models: a record that is not valid raises, and the sink skips it and counts it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas import AccountMetric, Alert, AlertAck, ContentItem, Kpi, MentionHandled, ScoredMention, load
from schemas.models import Outreach

MENTIONS_SCORED = "mentions.scored"
KPI_SNAPSHOTS = "kpi.snapshots"
ALERTS = "alerts"
ACTIONS = "alerts.actions"
METRICS_ACCOUNTS = "metrics.accounts"
CONTENT_ITEMS = "content.items"
# The topics the store keeps, by their unprefixed names.
HISTORY_TOPICS = (MENTIONS_SCORED, KPI_SNAPSHOTS, ALERTS, ACTIONS, METRICS_ACCOUNTS, CONTENT_ITEMS)

MENTION_COLUMNS = (
    "brand",
    "id",
    "published_at",
    "source",
    "site",
    "url",
    "author",
    "author_handle",
    "reach",
    "lang",
    "label",
    "compound",
    "topics",
    "likes",
    "shares",
    "comments",
    "title",
    "body",
    "doc",
)
KPI_COLUMNS = (
    "brand",
    "window_name",
    "start",
    "end",
    "mentions",
    "positive",
    "neutral",
    "negative",
    "sentiment_sum",
    "likes",
    "shares",
    "comments",
    "reach",
    "unique_authors",
    "updated_at",
    "doc",
)
ALERT_COLUMNS = ("id", "brand", "kind", "severity", "created_at", "window_start", "window_end", "message", "doc")
CONTENT_COLUMNS = (
    "brand",
    "platform",
    "item_id",
    "at",
    "channel",
    "published_at",
    "url",
    "comments",
    "reposts",
    "likes",
    "followers",
    "doc",
)


class BadRecord(ValueError):
    """A record the store cannot keep; the message says why."""


def author_key(mention: ScoredMention) -> str | None:
    """Who a mention counts as for unique authors: the author's id, else handle, else name."""
    author = mention.author
    return author.id or author.handle or author.name


def _clean(text: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL characters; JSON may.
    return None if text is None else text.replace("\x00", "")


def mention_row(mention: ScoredMention, doc: bytes) -> tuple[Any, ...]:
    return (
        mention.brand,
        mention.id,
        mention.published_at,
        mention.source,
        _clean(mention.site),
        _clean(mention.url),
        _clean(author_key(mention)),
        _clean(mention.author.handle),
        mention.reach,
        mention.lang,
        mention.sentiment.label,
        float(mention.sentiment.compound),
        [_clean(t) for t in mention.topics],
        mention.engagement.likes,
        mention.engagement.shares,
        mention.engagement.comments,
        _clean(mention.title),
        _clean(mention.text) or "",
        _json_text(doc),
    )


def _json_text(doc: bytes) -> str:
    # jsonb refuses the \u0000 escape; everything else goes as received.
    text = doc.decode("utf-8")
    return text.replace("\\u0000", "") if "\\u0000" in text else text


def kpi_row(kpi: Kpi, doc: bytes) -> tuple[Any, ...]:
    return (
        kpi.brand,
        kpi.window,
        kpi.start,
        kpi.end,
        kpi.mentions,
        kpi.positive,
        kpi.neutral,
        kpi.negative,
        float(kpi.sentiment_sum),
        kpi.engagement.likes,
        kpi.engagement.shares,
        kpi.engagement.comments,
        kpi.reach,
        kpi.unique_authors,
        kpi.updated_at,
        _json_text(doc),
    )


def alert_row(alert: Alert, doc: bytes) -> tuple[Any, ...]:
    return (
        alert.id,
        alert.brand,
        alert.kind,
        alert.severity,
        alert.created_at,
        alert.window.start,
        alert.window.end,
        alert.message,
        _json_text(doc),
    )


def content_row(item: ContentItem, doc: bytes) -> tuple[Any, ...]:
    return (
        item.brand,
        item.platform,
        item.id,
        item.at,
        _clean(item.channel),
        item.published_at,
        _clean(item.url),
        item.comments,
        item.reposts,
        item.likes,
        item.followers,
        _json_text(doc),
    )


@dataclass
class Batch:
    """Rows for one transaction, and the Kafka positions it brings the store to."""

    mentions: list[tuple[Any, ...]] = field(default_factory=list)
    # Latest per key wins (the topics are compacted, records arrive in offset order within a partition).
    kpis: dict[tuple[str, str, datetime], tuple[Any, ...]] = field(default_factory=dict)
    alerts: list[tuple[Any, ...]] = field(default_factory=list)
    # key -> (brand, kind, at, doc), or None for a tombstone
    actions: dict[str, tuple[str, str, datetime, str] | None] = field(default_factory=dict)
    accounts: dict[tuple[str, str, str, datetime], float] = field(default_factory=dict)
    # (brand, platform, item id, at) -> content_readings row; a reading read twice is kept once.
    contents: dict[tuple[str, str, str, datetime], tuple[Any, ...]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    records: int = 0
    skipped: int = 0

    def __len__(self) -> int:
        return self.records

    def add(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Add one record of `topic` (unprefixed); BadRecord if it cannot be kept."""
        if topic == MENTIONS_SCORED:
            if value is None:
                raise BadRecord("empty value")
            self.mentions.append(mention_row(load(ScoredMention, value), value))
        elif topic == KPI_SNAPSHOTS:
            # A tombstone retires a snapshot from the live topic; history keeps it.
            if value is not None:
                kpi = load(Kpi, value)
                self.kpis[(kpi.brand, kpi.window, kpi.start)] = kpi_row(kpi, value)
        elif topic == ALERTS:
            if value is None:
                raise BadRecord("empty value")
            self.alerts.append(alert_row(load(Alert, value), value))
        elif topic == ACTIONS:
            self._add_action(key, value)
        elif topic == METRICS_ACCOUNTS:
            if value is not None:
                metric = load(AccountMetric, value)
                self.accounts[(metric.brand, metric.platform, metric.metric, metric.at)] = float(metric.value)
        elif topic == CONTENT_ITEMS:
            # A tombstone retires a post from the live topic; its readings stay in history.
            if value is not None:
                item = load(ContentItem, value)
                self.contents[(item.brand, item.platform, item.id, item.at)] = content_row(item, value)
        else:
            raise BadRecord(f"topic {topic!r} is not kept in history")

    def _add_action(self, key: bytes | None, value: bytes | None) -> None:
        text = (key or b"").decode("utf-8", errors="replace")
        kind, _, rest = text.partition(":")
        if kind not in ("alert", "mention", "reply", "follow") or not rest:
            raise BadRecord(f"action key {text!r} is neither alert:<id>, mention:<brand>:<id> nor reply|follow:<…>")
        if value is None:
            self.actions[text] = None
            return
        if kind in ("reply", "follow"):  # outreach/1: a reply or follow from the inbox, pending or sent
            outreach = load(Outreach, value)
            self.actions[text] = (outreach.brand, kind, outreach.at, _json_text(value))
            return
        action = load(AlertAck, value) if kind == "alert" else load(MentionHandled, value)
        self.actions[text] = (action.brand, "ack" if kind == "alert" else "handled", action.at, _json_text(value))
