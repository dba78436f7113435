"""The brand's own posts ranked by their reactions: a pure view of content.items (content-item/1 readings).

Rates follow Avinash Kaushik's definitions. Per post: conversation = comments, amplification = reposts,
applause = likes; a channel's rate is the average over its posts. Per follower: that rate divided by the channel's
followers at the time of the reading, × 1,000 (per thousand followers, so the numbers read well). A count the
channel does not expose (likes on a blog) is null, and so is every rate built on it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from schemas import ContentItem, load, utc_now
from schemas.models import ContentPlatform

TOPIC_CONTENT_ITEMS = "content.items"
ContentSort = Literal["engagement", "conversation", "amplification", "applause", "recent"]
COUNTS = ("comments", "reposts", "likes")
# Readings older than this are dropped (the newest of them stays: the baseline of the 24 h change).
READINGS_KEPT = timedelta(hours=48)
# Posts kept per brand (the most recently published); a brand's channels list their latest posts only.
ITEMS_PER_BRAND = 2000
PER_FOLLOWERS = 1000
DAY = timedelta(days=1)


class BadContentRecord(ValueError):
    """A content.items record the view cannot use (the message says why)."""


# ---------------------------------------------------------------------------------------------- answers


class Counts(BaseModel):
    comments: int | None = Field(None, description="replies or comments (null: the channel does not say)")
    reposts: int | None = Field(None, description="reblogs, reposts (null on a blog)")
    likes: int | None = Field(None, description="favourites, likes (null on a blog)")


class Rates(BaseModel):
    """Kaushik's rates: per post, and per 1,000 followers of the channel."""

    conversation: float | None = Field(None, description="comments per post")
    amplification: float | None = Field(None, description="reposts per post")
    applause: float | None = Field(None, description="likes per post")
    conversation_per_1k_followers: float | None = Field(
        None, description="comments per post ÷ the channel's followers × 1,000"
    )
    amplification_per_1k_followers: float | None = Field(
        None, description="reposts per post ÷ the channel's followers × 1,000"
    )
    applause_per_1k_followers: float | None = Field(
        None, description="likes per post ÷ the channel's followers × 1,000"
    )


class ContentEntry(BaseModel):
    id: str = Field(description="the post id, as a mention id: `mastodon:<host>:<id>`, `bluesky:<did>:<rkey>`, `rss:…`")
    platform: ContentPlatform
    channel: str = Field(description="the owned channel: `acme@mastodon.social`, `acme.bsky.social`, a feed URL")
    url: str | None
    title: str | None
    text: str = Field(description="an excerpt")
    published_at: datetime
    updated_at: datetime = Field(description="when the counts were read")
    comments: int | None
    reposts: int | None
    likes: int | None
    engagement: int = Field(description="comments + reposts + likes (the known ones)")
    change_24h: Counts = Field(
        description="each count minus its value 24 h ago (0 for a post published since); null when not known"
    )
    followers: int | None = Field(description="the channel's followers when the counts were read (null for a blog)")
    rates: Rates


class ChannelTotals(BaseModel):
    platform: ContentPlatform
    channel: str
    followers: int | None = Field(description="the channel's latest follower count (null for a blog)")
    posts: int = Field(description="posts of the channel tracked")
    comments: int | None
    reposts: int | None
    likes: int | None
    rates: Rates = Field(description="averages per post (over the posts with that count) and per 1,000 followers")


class ContentRanking(BaseModel):
    brand: str
    sort: ContentSort
    platform: ContentPlatform | None
    at: datetime = Field(description="when the ranking was made (the 24 h change is against 24 h before this)")
    total: int = Field(description="posts matching (before `limit`)")
    items: list[ContentEntry]
    channels: list[ChannelTotals]


# ---------------------------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class _Reading:
    at: datetime
    comments: int | None
    reposts: int | None
    likes: int | None
    followers: int | None


@dataclass
class _Item:
    latest: ContentItem
    readings: list[_Reading] = field(default_factory=list)  # sorted by `at`

    def add(self, item: ContentItem) -> None:
        reading = _Reading(item.at, item.comments, item.reposts, item.likes, item.followers)
        if not self.readings or reading.at > self.readings[-1].at:  # the usual case: the next poll's reading
            self.readings.append(reading)
            self.latest = item
            return
        ats = [r.at for r in self.readings]
        index = bisect.bisect_left(ats, reading.at)
        if index < len(self.readings) and self.readings[index].at == reading.at:
            self.readings[index] = reading  # the same reading again (a replay)
        else:
            self.readings.insert(index, reading)
        if item.at >= self.latest.at:
            self.latest = item

    def trim(self, before: datetime) -> int:
        """Drop readings older than `before`, keeping the newest of them (a baseline for the change)."""
        if len(self.readings) < 2 or self.readings[1].at >= before:
            return 0
        older = bisect.bisect_left([r.at for r in self.readings], before)
        if older <= 1:
            return 0
        del self.readings[: older - 1]
        return older - 1

    def at_or_before(self, when: datetime) -> _Reading | None:
        index = bisect.bisect_right([r.at for r in self.readings], when)
        return self.readings[index - 1] if index else None


def _per_follower(rate: float | None, followers: int | None) -> float | None:
    if rate is None or not followers:
        return None
    return rate / followers * PER_FOLLOWERS


def _rates(comments: float | None, reposts: float | None, likes: float | None, followers: int | None) -> Rates:
    return Rates(
        conversation=comments,
        amplification=reposts,
        applause=likes,
        conversation_per_1k_followers=_per_follower(comments, followers),
        amplification_per_1k_followers=_per_follower(reposts, followers),
        applause_per_1k_followers=_per_follower(likes, followers),
    )


def _change(item: _Item, now: datetime) -> Counts:
    latest = item.latest
    then = item.at_or_before(now - DAY)
    published_since = latest.published_at >= now - DAY
    changes: dict[str, int | None] = {}
    for name in COUNTS:
        current: int | None = getattr(latest, name)
        if then is not None:
            before: int | None = getattr(then, name)
        else:
            before = 0 if published_since else None  # a post starts at 0; an older one we did not see then
        changes[name] = current - before if current is not None and before is not None else None
    return Counts.model_validate(changes)


def _sort_value(entry: ContentEntry, sort: ContentSort) -> float | None:
    if sort == "engagement":
        return entry.engagement
    if sort == "recent":
        return entry.published_at.timestamp()
    return {"conversation": entry.comments, "amplification": entry.reposts, "applause": entry.likes}[sort]


class ContentViews:
    """Each brand's owned posts with their readings over time, from content.items."""

    def __init__(
        self,
        configured_brands: Iterable[str] = (),
        clock: Callable[[], datetime] = utc_now,
        readings_kept: timedelta = READINGS_KEPT,
        items_per_brand: int = ITEMS_PER_BRAND,
    ) -> None:
        self.configured = set(configured_brands)
        self.clock = clock
        self.readings_kept = readings_kept
        self.items_per_brand = items_per_brand
        self._items: dict[str, dict[tuple[str, str], _Item]] = {}

    # -- records ---------------------------------------------------------------------------------

    def apply_record(self, topic: str, key: bytes | None, value: bytes | None, now: datetime | None = None) -> bool:
        """A content.items record: a reading (ValidationError when it is not a content-item/1) or a tombstone
        (the post is forgotten). Returns whether the view changed."""
        if topic != TOPIC_CONTENT_ITEMS:
            raise BadContentRecord(f"not a topic of this view: {topic}")
        if value is None:
            parts = (key or b"").decode("utf-8", errors="replace").split("|")
            if len(parts) != 3:
                raise BadContentRecord(f"tombstone key {key!r} is not brand|platform|id")
            brand, platform, item_id = parts
            return self._items.get(brand, {}).pop((platform, item_id), None) is not None
        self.apply(load(ContentItem, value))
        return True

    def apply(self, item: ContentItem) -> None:
        items = self._items.setdefault(item.brand, {})
        held = items.get((item.platform, item.id))
        if held is None:
            held = items[(item.platform, item.id)] = _Item(item)
        held.add(item)
        held.trim(held.latest.at - self.readings_kept)

    def evict(self, now: datetime | None = None) -> int:
        """Drop readings past `readings_kept` and the oldest posts of a brand over `items_per_brand`."""
        now = now or self.clock()
        dropped = 0
        for items in self._items.values():
            for item in items.values():
                dropped += item.trim(now - self.readings_kept)
            if len(items) > self.items_per_brand:
                oldest = sorted(items, key=lambda k: (items[k].latest.published_at, k))
                for key in oldest[: len(items) - self.items_per_brand]:
                    del items[key]
                    dropped += 1
        return dropped

    def sizes(self) -> dict[str, int]:
        items = [item for brand in self._items.values() for item in brand.values()]
        return {"content_items": len(items), "content_readings": sum(len(i.readings) for i in items)}

    def has_brand(self, brand: str) -> bool:
        return brand in self.configured or bool(self._items.get(brand))

    # -- answers ---------------------------------------------------------------------------------

    def entry(self, item: _Item, now: datetime) -> ContentEntry:
        latest = item.latest
        return ContentEntry(
            id=latest.id,
            platform=latest.platform,
            channel=latest.channel,
            url=latest.url,
            title=latest.title,
            text=latest.text,
            published_at=latest.published_at,
            updated_at=latest.at,
            comments=latest.comments,
            reposts=latest.reposts,
            likes=latest.likes,
            engagement=sum(getattr(latest, name) or 0 for name in COUNTS),
            change_24h=_change(item, now),
            followers=latest.followers,
            rates=_rates(latest.comments, latest.reposts, latest.likes, latest.followers),
        )

    def ranking(
        self,
        brand: str,
        sort: ContentSort = "engagement",
        limit: int = 20,
        platform: ContentPlatform | None = None,
        now: datetime | None = None,
    ) -> ContentRanking:
        now = now or self.clock()
        held = [i for i in self._items.get(brand, {}).values() if platform is None or i.latest.platform == platform]
        entries = [self.entry(item, now) for item in held]

        def order(entry: ContentEntry) -> tuple[bool, float, float, str]:
            value = _sort_value(entry, sort)
            # Unknown counts last; then the highest first, the newest first among equals.
            return (value is None, -(value or 0), -entry.published_at.timestamp(), entry.id)

        entries.sort(key=order)
        return ContentRanking(
            brand=brand,
            sort=sort,
            platform=platform,
            at=now,
            total=len(entries),
            items=entries[:limit],
            channels=self.channel_totals(held),
        )

    @staticmethod
    def channel_totals(items: list[_Item]) -> list[ChannelTotals]:
        channels: dict[tuple[str, str], list[ContentItem]] = {}
        for item in items:
            channels.setdefault((item.latest.platform, item.latest.channel), []).append(item.latest)
        totals: list[ChannelTotals] = []
        for (_, channel), posts in sorted(channels.items()):
            newest = max(posts, key=lambda p: p.at)
            followers = newest.followers
            sums: dict[str, int | None] = {}
            averages: dict[str, float | None] = {}
            for name in COUNTS:
                known = [getattr(p, name) for p in posts if getattr(p, name) is not None]
                sums[name] = sum(known) if known else None
                averages[name] = sum(known) / len(known) if known else None
            totals.append(
                ChannelTotals(
                    platform=newest.platform,
                    channel=channel,
                    followers=followers,
                    posts=len(posts),
                    comments=sums["comments"],
                    reposts=sums["reposts"],
                    likes=sums["likes"],
                    rates=_rates(averages["comments"], averages["reposts"], averages["likes"], followers),
                )
            )
        return totals
