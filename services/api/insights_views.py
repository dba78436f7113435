"""Insight views of the API: time series, influence relays, sources, share of voice, love KPIs, emerging terms.

Pure state, like views.py: the Kafka consumer feeds kpi/1 snapshots, scored mentions and account metrics in,
the router in insights.py asks questions; neither FastAPI nor aiokafka is imported here. Every `apply_*`
is idempotent, so replaying the topics from their beginning rebuilds the same answers.

Windows and memory
  - `1h` and `24h` are rolling windows of 60 and 1,440 one-minute buckets, the current (partial) minute
    included, as for `/kpis`. A mention belongs to the minute of its `published_at`; a mention id is
    counted once per brand (the first copy wins).
  - Mentions are not kept: each minute bucket holds tallies per author, site, source type and term, so
    memory follows the number of distinct authors/sites/terms per minute, plus the mention ids (for
    deduplication); about 1 kB per mention measured. Running totals of all buckets make a 24 h answer
    cost the buckets *outside* the window. Buckets older than 25 h are dropped by `evict` (and never
    accepted); a brand with more than `mentions_per_brand` (100,000) mentions in 25 h loses its oldest
    minutes first.
  - kpi/1 snapshots: 1m kept 25 h, 1h kept 31 days; the latest snapshot of a (brand, window, start)
    replaces the earlier one. Account readings: 8 days (plus the one reading in force 8 days ago), at most
    10,000 per (brand, platform, metric).

Influence of an author (ranking of `/authors`)
    score = reach + 10 × engagement
  reach: the sum, over the author's mentions in the window, of each mention's reach (the author's followers
  when posting) — potential impressions; engagement: likes + shares + comments those mentions received.
  One interaction weighs as much as ten potential impressions. Ties: more mentions, later last seen, key.

Sites and source types (`/sources`) are ranked by mentions, then engagement, then reach, then name.
`sentiment_avg` everywhere is the mean compound score of the *scored* mentions (unscored ones excluded).

Love index (0–100, `/love`; the formula is schemas/love.py, shared with the history reports)
    love = 100 × Σ wᵢ·cᵢ / Σ wᵢ, over the components that can be computed, rounded to one decimal:
    - audience growth, w = 0.4: c = clamp(0.5 + 5·g, 0, 1), where g is the relative change over 7 days of
      the summed audience (latest readings of `followers`, `fans`, `subscribers`, `members` metrics on every
      platform, counting the keys that have a reading 7 days ago): +10 %/week → 1, flat → 0.5, −10 % → 0;
    - engagement, w = 0.3: c = min(1, log10(1 + e) / 2), e = (likes + shares + comments) per mention over
      the last 24 h: 0 → 0, 9 → 0.5, 99 and more → 1;
    - positive share, w = 0.3: c = positive / (positive + negative) mentions over the last 24 h.
  null when no component can be computed (no audience history, no mention).

Emerging terms (`/trends`)
  Terms are the lowercased words and #hashtags of a mention's title and text (its first 5,000 characters),
  URLs and @handles removed, English and French stop words removed, French elisions (l', d', qu'…) and
  English possessives ('s) stripped, words shorter than 2 letters or made of digits dropped, and brand
  terms (the brand's name and the words of the terms its mentions matched; `acme*` drops words starting
  with acme) removed. A term counts once per mention.
    score = (count_last_hour + 1) / (baseline_per_hour + 1)
  count_last_hour: mentions with the term in the last 60 minute buckets; baseline_per_hour: mentions with
  it in the 24 h before those, divided by 24. Only terms with count_last_hour ≥ 3 and score > 1 are listed,
  highest score first (then higher count, then the term).
"""

from __future__ import annotations

import bisect
import heapq
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from schemas import AccountMetric, EcouteConfig, Kpi, ScoredMention, load, utc_now
from schemas.love import AUDIENCE_METRICS, LOVE_FORMULA, audience_growth, love_score
from schemas.models import KpiEngagement
from services.api.links_views import WEB_PLATFORM, InboundLinks, LinkViews, WebAudience, web_audience
from services.api.views import MINUTE, floor_minute, window_bounds

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

InsightWindow = Literal["1h", "24h"]
INSIGHT_WINDOWS: tuple[str, ...] = get_args(InsightWindow)
SeriesBucket = Literal["1m", "1h"]
BUCKET_LENGTH: dict[str, timedelta] = {"1m": MINUTE, "1h": HOUR}
DEFAULT_POINTS = {"1m": 60, "1h": 24}  # since defaults to the last hour of minutes / the last day of hours
MAX_POINTS = 1500

MENTION_RETENTION = timedelta(hours=25)
SERIES_RETENTION: dict[str, timedelta] = {"1m": timedelta(hours=25), "1h": timedelta(days=31)}
ACCOUNT_RETENTION = timedelta(days=8)
READINGS_PER_KEY = 10_000
MENTIONS_PER_BRAND = 100_000

INFLUENCE_ENGAGEMENT_WEIGHT = 10
TREND_MIN_COUNT = 3
TREND_SMOOTHING = 1.0
TREND_TEXT_CHARS = 5_000
BRAND_TERMS_KEPT = 1_000

LINK_METRICS = frozenset({"inbound_links", "backlinks", "links"})

TOPIC_MENTIONS_SCORED = "mentions.scored"
TOPIC_KPI_SNAPSHOTS = "kpi.snapshots"
TOPIC_METRICS_ACCOUNTS = "metrics.accounts"

MetricKind = Literal["audience", "links", "web", "other"]


class BadRecord(ValueError):
    """A record the insight views cannot use; the message says why."""


def floor_bucket(moment: datetime, bucket: str) -> datetime:
    floored = floor_minute(moment)
    return floored.replace(minute=0) if bucket == "1h" else floored


def as_utc(moment: datetime) -> datetime:
    """A naive time is taken as UTC (query parameters without an offset)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ratio(part: float, whole: float, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


# -- terms -----------------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOP_WORDS_EN = _words(
    """
    a about above after again against all also am an and any are aren't as at be because been before being
    below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during
    each even ever every few for from further get gets got had hadn't has hasn't have haven't having he he'd
    he'll he's her here here's hers herself him himself his how how's however i i'd i'll i'm i've if in into is
    isn't it it's its itself just let's like may me might more most much must mustn't my myself near need no nor
    not now of off oh ok okay on once one only or other ought our ours ourselves out over own rt same shall shan't
    she she'd she'll she's should shouldn't since so some still such than that that's the their theirs them
    themselves then there there's these they they'd they'll they're they've this those though through thus to
    too under until up upon us very via was wasn't we we'd we'll we're we've were weren't what what's when
    when's where where's whether which while who who's whom whose why why's will with within without won't
    would wouldn't yes yet you you'd you'll you're you've your yours yourself yourselves amp http https www com
    """
)

STOP_WORDS_FR = _words(
    """
    à a afin ai aie aient aies ait alors as au aucun aucune aupres auprès aussi autre autres aux avaient avais
    avait avant avec avez aviez avions avoir avons ayant bah beaucoup bien c ça car ce ceci cela celle celles
    celui cependant certain certaines certains ces cet cette ceux chaque chez ci comme comment d dans de des
    depuis donc dont du elle elles en encore entre es est et étaient étais était étant été être eu eux fait
    faire fois font hors il ils j je jusqu l la là le les leur leurs lui m ma mais me même mêmes mes moi moins
    mon n ne ni non nos notre nous on ont or ou où par parce pas peu peut plus pour pourquoi qu quand que quel
    quelle quelles quels qui quoi s sa sans se sera serait ses si sien son sont sous suis sur t ta tandis te
    tes toi ton tous tout toute toutes très trop tu un une vers voici voilà vos votre vous vu y
    """
)

STOP_WORDS = STOP_WORDS_EN | STOP_WORDS_FR
ELISIONS = frozenset({"l", "d", "j", "m", "n", "s", "t", "c", "qu", "jusqu", "lorsqu", "puisqu", "quoiqu"})

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_TOKEN = re.compile(r"[#@]?[^\W_](?:[\w'’-]*[^\W_])?")


def extract_terms(text: str) -> set[str]:
    """The distinct candidate terms of a text (stop words removed; brand terms are removed by the caller)."""
    terms: set[str] = set()
    for raw in _TOKEN.findall(_URL.sub(" ", text[:TREND_TEXT_CHARS].lower())):
        if raw.startswith("@"):
            continue  # a handle names an author, not a subject
        token = raw.replace("’", "'")
        hashtag = token.startswith("#")
        word = token[1:] if hashtag else token
        if "'" in word:
            head, _, tail = word.partition("'")
            if head in ELISIONS:
                word = tail
            elif tail == "s":
                word = head
        word = word.strip("'-")
        if len(word) < 2 or word.replace("'", "").replace("-", "").isdigit():
            continue
        if hashtag:
            terms.add("#" + word)
        elif word not in STOP_WORDS:
            terms.add(word)
    return terms


def brand_term_words(term: str) -> tuple[set[str], set[str]]:
    """Words and wildcard prefixes a brand term covers.

    '#Acme' → {acme}; '"acme corp"' → {acme, corp}; 'acme*' → prefix acme.
    """
    words: set[str] = set()
    prefixes: set[str] = set()
    for part in term.lower().replace('"', " ").split():
        part = part.lstrip("#@").strip("'’-")
        if part.endswith("*"):
            if len(part) > 1:
                prefixes.add(part.rstrip("*"))
        elif part:
            words.add(part)
    return words, prefixes


# -- tallies ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    """Counters of mentions (of one author, site, source type or brand) — all of them add up."""

    mentions: int = 0
    positive: int = 0
    neutral: int = 0
    negative: int = 0
    compound_sum: float = 0.0
    likes: int = 0
    shares: int = 0
    comments: int = 0
    reach: int = 0

    @property
    def scored(self) -> int:
        return self.positive + self.neutral + self.negative

    @property
    def engagement(self) -> int:
        return self.likes + self.shares + self.comments

    def add_mention(self, mention: ScoredMention, reach: int) -> None:
        self.mentions += 1
        label = mention.sentiment.label
        if label == "positive":
            self.positive += 1
        elif label == "neutral":
            self.neutral += 1
        elif label == "negative":
            self.negative += 1
        if label != "unscored":
            self.compound_sum += mention.sentiment.compound
        self.likes += mention.engagement.likes
        self.shares += mention.engagement.shares
        self.comments += mention.engagement.comments
        self.reach += reach

    def merge(self, other: _Tally, sign: int = 1) -> None:
        """Add (sign 1) or take away (sign -1) another tally."""
        self.mentions += sign * other.mentions
        self.positive += sign * other.positive
        self.neutral += sign * other.neutral
        self.negative += sign * other.negative
        self.compound_sum += sign * other.compound_sum
        self.likes += sign * other.likes
        self.shares += sign * other.shares
        self.comments += sign * other.comments
        self.reach += sign * other.reach

    def copy(self) -> _Tally:
        copied = _Tally()
        copied.merge(self)
        return copied

    def sentiment_avg(self) -> float | None:
        return round(self.compound_sum / self.scored, 4) if self.scored else None


@dataclass(slots=True)
class _AuthorTally:
    """An author's mentions in a bucket, with the identity seen on their latest mention."""

    key: str
    last_seen: datetime
    id: str | None = None
    handle: str | None = None
    name: str | None = None
    url: str | None = None
    followers: int | None = None
    tally: _Tally = field(default_factory=_Tally)

    def see(self, mention: ScoredMention) -> None:
        if mention.published_at >= self.last_seen:
            author = mention.author
            self.last_seen = mention.published_at
            self.id, self.handle, self.name, self.url = author.id, author.handle, author.name, author.url
            self.followers = author.followers if author.followers is not None else mention.reach

    def merge(self, other: _AuthorTally, sign: int = 1) -> None:
        """Add or take away another tally of the same author; the identity follows the latest one added."""
        self.tally.merge(other.tally, sign)
        if sign > 0 and other.last_seen >= self.last_seen:
            self.last_seen = other.last_seen
            self.id, self.handle, self.name, self.url = other.id, other.handle, other.name, other.url
            self.followers = other.followers

    def copy(self) -> _AuthorTally:
        copied = _AuthorTally(self.key, self.last_seen, self.id, self.handle, self.name, self.url, self.followers)
        copied.tally.merge(self.tally)
        return copied


@dataclass(slots=True)
class _Bucket:
    """Tallies of a brand's scored mentions: of one minute, of a window, or of everything kept."""

    ids: list[str] = field(default_factory=list)
    tally: _Tally = field(default_factory=_Tally)
    authors: dict[str, _AuthorTally] = field(default_factory=dict)
    sites: dict[str, _Tally] = field(default_factory=dict)
    source_types: dict[str, _Tally] = field(default_factory=dict)
    terms: Counter[str] = field(default_factory=Counter)

    def add(self, mention: ScoredMention, reach: int, author_key: str | None, site: str, terms: list[str]) -> None:
        self.tally.add_mention(mention, reach)
        if author_key:
            author = self.authors.get(author_key)
            if author is None:
                author = self.authors[author_key] = _AuthorTally(author_key, mention.published_at)
            author.see(mention)
            author.tally.add_mention(mention, reach)
        site_tally = self.sites.get(site)
        if site_tally is None:
            site_tally = self.sites[site] = _Tally()
        site_tally.add_mention(mention, reach)
        type_tally = self.source_types.get(mention.source)
        if type_tally is None:
            type_tally = self.source_types[mention.source] = _Tally()
        type_tally.add_mention(mention, reach)
        self.terms.update(terms)

    def merge(self, other: _Bucket, sign: int = 1, terms: bool = True) -> None:
        """Add (sign 1) or take away (sign -1) another bucket's tallies (not its ids); emptied entries go."""
        self.tally.merge(other.tally, sign)
        for key, author in other.authors.items():
            mine = self.authors.get(key)
            if mine is None:
                if sign > 0:
                    self.authors[key] = author.copy()
            else:
                mine.merge(author, sign)
                if mine.tally.mentions <= 0:
                    del self.authors[key]
        for mine_by_name, theirs_by_name in ((self.sites, other.sites), (self.source_types, other.source_types)):
            for name, tally in theirs_by_name.items():
                known = mine_by_name.get(name)
                if known is None:
                    if sign > 0:
                        mine_by_name[name] = tally.copy()
                else:
                    known.merge(tally, sign)
                    if known.mentions <= 0:
                        del mine_by_name[name]
        if not terms:
            return
        if sign > 0:
            self.terms.update(other.terms)
        else:
            for term, count in other.terms.items():
                left = self.terms[term] - count
                if left > 0:
                    self.terms[term] = left
                else:
                    del self.terms[term]


@dataclass(slots=True)
class _BrandMentions:
    buckets: dict[datetime, _Bucket] = field(default_factory=dict)
    ids: dict[str, datetime] = field(default_factory=dict)  # mention id -> its bucket, for deduplication
    totals: _Bucket = field(default_factory=_Bucket)  # the sum of every bucket: a 24 h window is totals − the rest
    brand_words: set[str] = field(default_factory=set)
    brand_prefixes: set[str] = field(default_factory=set)

    def is_brand_term(self, term: str) -> bool:
        word = term.lstrip("#")
        return word in self.brand_words or any(word.startswith(prefix) for prefix in self.brand_prefixes)


@dataclass(slots=True)
class _Point:
    """The counters of one kpi/1 snapshot that a chart needs."""

    mentions: int
    positive: int
    neutral: int
    negative: int
    unscored: int
    sentiment_sum: float
    likes: int
    shares: int
    comments: int
    reach: int


def site_of(mention: ScoredMention) -> str:
    """The mention's site (domain or community); else the host of its URL without `www.`; else 'unknown'."""
    if mention.site:
        return mention.site.strip().lower()
    if mention.url:
        host = (urlsplit(mention.url).hostname or "").lower()
        if host:
            return host.removeprefix("www.")
    return "unknown"


# -- answers ---------------------------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class TimePoint(_Answer):
    start: datetime = Field(description="start of the bucket")
    mentions: int = 0
    positive: int = 0
    neutral: int = 0
    negative: int = 0
    unscored: int = 0
    sentiment_avg: float | None = Field(None, description="mean compound of the scored mentions; null if none")
    engagement: KpiEngagement = Field(default_factory=KpiEngagement)
    reach: int = 0


class TimeSeries(_Answer):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "brand": "acme",
                    "bucket": "1h",
                    "since": "2025-03-14T11:00:00Z",
                    "until": "2025-03-14T13:00:00Z",
                    "points": [
                        {
                            "start": "2025-03-14T11:00:00Z",
                            "mentions": 42,
                            "positive": 20,
                            "neutral": 15,
                            "negative": 5,
                            "unscored": 2,
                            "sentiment_avg": 0.2315,
                            "engagement": {"likes": 310, "shares": 41, "comments": 57},
                            "reach": 128000,
                        },
                        {
                            "start": "2025-03-14T12:00:00Z",
                            "mentions": 0,
                            "positive": 0,
                            "neutral": 0,
                            "negative": 0,
                            "unscored": 0,
                            "sentiment_avg": None,
                            "engagement": {"likes": 0, "shares": 0, "comments": 0},
                            "reach": 0,
                        },
                    ],
                }
            ]
        },
    )

    brand: str
    bucket: SeriesBucket
    since: datetime = Field(description="start of the first bucket (inclusive)")
    until: datetime = Field(description="end of the last bucket (exclusive)")
    points: list[TimePoint] = Field(description="one point per bucket, oldest first; buckets without data are zeros")


class InfluenceAuthor(_Answer):
    key: str = Field(description="author id, or handle when the source gives no id")
    id: str | None = None
    handle: str | None = None
    name: str | None = None
    url: str | None = None
    followers: int | None = Field(None, description="followers on the author's latest mention in the window")
    mentions: int
    engagement: int = Field(description="likes + shares + comments of the author's mentions")
    reach: int = Field(description="sum of the reach of the author's mentions (potential impressions)")
    positive_share: float | None = Field(None, description="positive mentions / mentions")
    negative_share: float | None = Field(None, description="negative mentions / mentions")
    last_seen: datetime
    score: int = Field(description="reach + 10 × engagement")


class TopAuthors(_Answer):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "brand": "acme",
                    "window": "24h",
                    "start": "2025-03-13T12:35:00Z",
                    "end": "2025-03-14T12:35:00Z",
                    "ranking": "score = reach + 10 × engagement",
                    "authors": [
                        {
                            "key": "mastodon:109",
                            "id": "mastodon:109",
                            "handle": "@jane@mastodon.social",
                            "name": "Jane",
                            "url": "https://mastodon.social/@jane",
                            "followers": 52000,
                            "mentions": 3,
                            "engagement": 180,
                            "reach": 156000,
                            "positive_share": 0.6667,
                            "negative_share": 0.0,
                            "last_seen": "2025-03-14T12:01:13Z",
                            "score": 157800,
                        }
                    ],
                }
            ]
        },
    )

    brand: str
    window: InsightWindow
    start: datetime
    end: datetime
    ranking: str = f"score = reach + {INFLUENCE_ENGAGEMENT_WEIGHT} × engagement"
    authors: list[InfluenceAuthor]


class SourceStats(_Answer):
    name: str = Field(description="site (domain or community) or source type")
    mentions: int
    share: float | None = Field(None, description="mentions / the brand's mentions in the window")
    engagement: int
    reach: int
    positive: int
    neutral: int
    negative: int
    sentiment_avg: float | None = None


class TopSources(_Answer):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "brand": "acme",
                    "window": "1h",
                    "start": "2025-03-14T11:36:00Z",
                    "end": "2025-03-14T12:35:00Z",
                    "mentions": 12,
                    "sites": [
                        {
                            "name": "reddit.com/r/phones",
                            "mentions": 8,
                            "share": 0.6667,
                            "engagement": 95,
                            "reach": 4100,
                            "positive": 2,
                            "neutral": 4,
                            "negative": 2,
                            "sentiment_avg": -0.0125,
                        }
                    ],
                    "source_types": [
                        {
                            "name": "reddit",
                            "mentions": 8,
                            "share": 0.6667,
                            "engagement": 95,
                            "reach": 4100,
                            "positive": 2,
                            "neutral": 4,
                            "negative": 2,
                            "sentiment_avg": -0.0125,
                        }
                    ],
                }
            ]
        },
    )

    brand: str
    window: InsightWindow
    start: datetime
    end: datetime
    mentions: int = Field(description="the brand's mentions in the window")
    sites: list[SourceStats]
    source_types: list[SourceStats]


class VoiceMember(_Answer):
    brand: str
    mentions: int
    share: float | None = Field(None, description="mentions / the group's mentions; null if the group has none")
    positive: int
    positive_share: float | None = Field(None, description="positive mentions / the group's positive mentions")
    negative: int


class VoiceGroup(_Answer):
    brand: str = Field(description="the brand whose competitor group this is (listed first)")
    mentions: int = Field(description="the group's mentions")
    positive: int = Field(description="the group's positive mentions")
    members: list[VoiceMember]


class ShareOfVoice(_Answer):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "window": "24h",
                    "start": "2025-03-13T12:35:00Z",
                    "end": "2025-03-14T12:35:00Z",
                    "groups": [
                        {
                            "brand": "acme",
                            "mentions": 400,
                            "positive": 100,
                            "members": [
                                {
                                    "brand": "acme",
                                    "mentions": 300,
                                    "share": 0.75,
                                    "positive": 60,
                                    "positive_share": 0.6,
                                    "negative": 30,
                                },
                                {
                                    "brand": "globex",
                                    "mentions": 100,
                                    "share": 0.25,
                                    "positive": 40,
                                    "positive_share": 0.4,
                                    "negative": 10,
                                },
                            ],
                        }
                    ],
                }
            ]
        },
    )

    window: InsightWindow
    start: datetime
    end: datetime
    groups: list[VoiceGroup]


class AccountReading(_Answer):
    platform: str
    metric: str
    kind: MetricKind = Field(
        description="audience (followers, fans, subscribers, members), links, web (platform web: daily figures), other"
    )
    value: float = Field(description="latest reading")
    at: datetime = Field(description="time of the latest reading")
    change_1d: float | None = Field(None, description="latest − the reading in force 24 h ago; null without one")
    change_1d_pct: float | None = Field(None, description="change_1d / that reading × 100")
    change_7d: float | None = None
    change_7d_pct: float | None = None


class MetricTotal(_Answer):
    value: float = Field(description="sum of the latest readings of every platform")
    change_1d: float | None = Field(None, description="sum of the changes of the platforms that have one")
    change_7d: float | None = None


class EngagementDay(_Answer):
    start: datetime
    end: datetime
    mentions: int
    likes: int
    shares: int
    comments: int
    per_mention: float | None = Field(None, description="(likes + shares + comments) / mentions")
    positive: int
    negative: int


class LoveComponents(_Answer):
    audience_growth: float | None = Field(None, description="clamp(0.5 + 5 × 7-day audience growth, 0, 1)")
    engagement: float | None = Field(None, description="min(1, log10(1 + engagement per mention) / 2)")
    positive_share: float | None = Field(None, description="positive / (positive + negative), last 24 h")
    inbound_links: float | None = Field(None, description="min(1, log10(1 + new linking sites over 7 days) / 2)")
    social_traffic: float | None = Field(
        None, description="min(1, log10(1 + social-referred visits per mention over 7 days) / 2)"
    )


class LoveKpis(_Answer):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "brand": "acme",
                    "at": "2025-03-14T12:34:56Z",
                    "accounts": [
                        {
                            "platform": "mastodon",
                            "metric": "followers",
                            "kind": "audience",
                            "value": 10500,
                            "at": "2025-03-14T12:00:00Z",
                            "change_1d": 100,
                            "change_1d_pct": 0.9615,
                            "change_7d": 500,
                            "change_7d_pct": 5.0,
                        }
                    ],
                    "totals": {"followers": {"value": 10500, "change_1d": 100, "change_7d": 500}},
                    "audience": {"value": 10500, "change_1d": 100, "change_7d": 500},
                    "engagement_24h": {
                        "start": "2025-03-13T12:35:00Z",
                        "end": "2025-03-14T12:35:00Z",
                        "mentions": 20,
                        "likes": 150,
                        "shares": 20,
                        "comments": 10,
                        "per_mention": 9.0,
                        "positive": 12,
                        "negative": 4,
                    },
                    "components": {"audience_growth": 0.75, "engagement": 0.5, "positive_share": 0.75},
                    "love_index": 67.5,
                    "formula": LOVE_FORMULA,
                }
            ]
        },
    )

    brand: str
    at: datetime = Field(description="the time the answer was computed for")
    accounts: list[AccountReading] = Field(description="every (platform, metric) of the brand")
    totals: dict[str, MetricTotal] = Field(description="per metric name, summed over platforms")
    audience: MetricTotal | None = Field(None, description="all audience metrics summed; null without any")
    engagement_24h: EngagementDay
    components: LoveComponents
    love_index: float | None = Field(None, description="0–100; null when no component can be computed")
    formula: str = LOVE_FORMULA
    inbound_links: InboundLinks | None = Field(None, description="links to the owned domains; null without any")
    web: WebAudience | None = Field(None, description="web analytics of the last 7 days beside the mentions")


class EmergingTerm(_Answer):
    term: str
    count_last_hour: int = Field(description="mentions with the term in the last 60 minutes")
    baseline_per_hour: float = Field(description="mentions with the term in the 24 h before, per hour")
    score: float = Field(description="(count_last_hour + 1) / (baseline_per_hour + 1)")


class Trends(_Answer):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "brand": "acme",
                    "start": "2025-03-14T11:35:00Z",
                    "end": "2025-03-14T12:35:00Z",
                    "baseline_start": "2025-03-13T11:35:00Z",
                    "min_count": 3,
                    "terms": [
                        {"term": "recall", "count_last_hour": 14, "baseline_per_hour": 0.125, "score": 13.3333},
                        {"term": "#battery", "count_last_hour": 5, "baseline_per_hour": 1.0, "score": 3.0},
                    ],
                }
            ]
        },
    )

    brand: str
    start: datetime = Field(description="start of the last hour (inclusive)")
    end: datetime = Field(description="end of the last hour (exclusive)")
    baseline_start: datetime = Field(description="start of the 24 h baseline, which ends at `start`")
    min_count: int = TREND_MIN_COUNT
    terms: list[EmergingTerm]


# -- the views -------------------------------------------------------------------------------------


class Insights:
    """Series, influence, sources, share of voice, love and trends, rebuilt from the topics at every start."""

    def __init__(
        self,
        competitors: Mapping[str, Sequence[str]] | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        mention_retention: timedelta = MENTION_RETENTION,
        account_retention: timedelta = ACCOUNT_RETENTION,
        readings_per_key: int = READINGS_PER_KEY,
        mentions_per_brand: int = MENTIONS_PER_BRAND,
    ) -> None:
        """`competitors`: every configured brand → its competitors (the configuration's `brands:`)."""
        self.clock = clock
        self.mention_retention = mention_retention
        self.account_retention = account_retention
        self.readings_per_key = readings_per_key
        self.mentions_per_brand = mentions_per_brand
        self._competitors: dict[str, tuple[str, ...]] = {
            brand: tuple(dict.fromkeys(c for c in rivals if c != brand))
            for brand, rivals in (competitors or {}).items()
        }
        self._seen: set[str] = set()
        self._mentions: dict[str, _BrandMentions] = {}
        # brand -> window (1m | 1h) -> start -> point of the latest snapshot
        self._series: dict[str, dict[str, dict[datetime, _Point]]] = {}
        # brand -> (platform, metric) -> readings (at, value), sorted by time
        self._accounts: dict[str, dict[tuple[str, str], list[tuple[datetime, float]]]] = {}
        # Inbound links of the brands with owned domains (services/api/links_views.py), fed by their own sink.
        self.links: LinkViews | None = None

    @classmethod
    def from_config(cls, config: EcouteConfig | None, *, clock: Callable[[], datetime] = utc_now) -> Insights:
        """Insights of the configured brands and their competitor groups (none without a configuration)."""
        competitors = {name: brand.competitors for name, brand in config.brands.items()} if config else {}
        return cls(competitors, clock=clock)

    # -- brands ----------------------------------------------------------------------------------

    def brands(self) -> list[str]:
        return sorted(set(self._competitors) | self._seen)

    def has_brand(self, brand: str) -> bool:
        return brand in self._competitors or brand in self._seen

    # -- feeding ---------------------------------------------------------------------------------

    def _mention_cutoff(self, now: datetime) -> datetime:
        return floor_minute(now) - self.mention_retention

    def apply_scored(self, mention: ScoredMention, now: datetime | None = None) -> bool:
        """Count a scored mention once; False if it was already counted or is older than the retention."""
        brand = mention.brand
        self._seen.add(brand)
        now = now or self.clock()
        if mention.published_at < self._mention_cutoff(now):
            return False
        state = self._mentions.get(brand)
        if state is None:
            state = self._mentions[brand] = _BrandMentions()
            state.brand_words.update(brand_term_words(brand)[0])
        if mention.id in state.ids:
            return False
        start = floor_minute(mention.published_at)
        bucket = state.buckets.get(start)
        if bucket is None:
            bucket = state.buckets[start] = _Bucket()
        state.ids[mention.id] = start
        bucket.ids.append(mention.id)

        mention_words: set[str] = set()
        mention_prefixes: set[str] = set()
        for term in mention.matched:
            words, prefixes = brand_term_words(term)
            mention_words |= words
            mention_prefixes |= prefixes
        if len(state.brand_words) + len(state.brand_prefixes) < BRAND_TERMS_KEPT:
            state.brand_words |= mention_words
            state.brand_prefixes |= mention_prefixes
        text = f"{mention.title}\n{mention.text}" if mention.title else mention.text
        # Interned: the same author, site or term is one string however many buckets count it.
        terms = [
            sys.intern(term)
            for term in extract_terms(text)
            if term.lstrip("#") not in mention_words
            and not any(term.lstrip("#").startswith(p) for p in mention_prefixes)
        ]
        author_key = mention.author.id or mention.author.handle
        facts = (
            mention.reach or (mention.author.followers or 0),
            sys.intern(author_key) if author_key else None,
            sys.intern(site_of(mention)),
            terms,
        )
        bucket.add(mention, *facts)
        state.totals.add(mention, *facts)
        # A brand over its cap loses its oldest minutes first (never the last one: a burst stays countable).
        while len(state.ids) > self.mentions_per_brand and len(state.buckets) > 1:
            self._drop_bucket(state, min(state.buckets))
        return True

    def apply_kpi(self, kpi: Kpi, now: datetime | None = None) -> bool:
        """Keep a 1m or 1h snapshot, replacing an earlier one of the same start; False if not kept."""
        self._seen.add(kpi.brand)
        retention = SERIES_RETENTION.get(kpi.window)
        if retention is None or kpi.start < floor_minute(now or self.clock()) - retention:
            return False
        self._series.setdefault(kpi.brand, {}).setdefault(kpi.window, {})[kpi.start] = _Point(
            mentions=kpi.mentions,
            positive=kpi.positive,
            neutral=kpi.neutral,
            negative=kpi.negative,
            unscored=kpi.unscored,
            sentiment_sum=float(kpi.sentiment_sum),
            likes=kpi.engagement.likes,
            shares=kpi.engagement.shares,
            comments=kpi.engagement.comments,
            reach=kpi.reach,
        )
        return True

    def delete_kpi(self, brand: str, window: str, start: datetime) -> bool:
        """A tombstone on the compacted kpi.snapshots: forget that snapshot."""
        return self._series.get(brand, {}).get(window, {}).pop(start, None) is not None

    def apply_account_metric(self, reading: AccountMetric, now: datetime | None = None) -> bool:
        """Add a reading to its (brand, platform, metric) history; one at the same time is replaced.

        False if the reading is too old to matter: older than the retention and than the newest reading
        before it (the one reading older than the retention kept is the value in force at its start).
        """
        self._seen.add(reading.brand)
        cutoff = (now or self.clock()) - self.account_retention
        history = self._accounts.setdefault(reading.brand, {}).setdefault((reading.platform, reading.metric), [])
        value = float(reading.value)
        position = bisect.bisect_left(history, (reading.at,))
        if position < len(history) and history[position][0] == reading.at:
            history[position] = (reading.at, value)
        else:
            history.insert(position, (reading.at, value))
        _trim_history(history, cutoff, self.readings_per_key)
        return (reading.at, value) in history

    def delete_account_metric(self, brand: str, platform: str, metric: str) -> bool:
        """A tombstone on the compacted metrics.accounts: that account metric is retired."""
        return self._accounts.get(brand, {}).pop((platform, metric), None) is not None

    def apply_record(self, topic: str, key: bytes | None, value: bytes | None, now: datetime | None = None) -> bool:
        """Decode and apply one Kafka record of `topic` (its unprefixed name).

        Raises BadRecord or pydantic.ValidationError (naming the field) for a record it cannot use.
        """
        if topic == TOPIC_MENTIONS_SCORED:
            if value is None:
                raise BadRecord("empty value")
            return self.apply_scored(load(ScoredMention, value), now)
        if topic == TOPIC_KPI_SNAPSHOTS:
            if value is not None:
                return self.apply_kpi(load(Kpi, value), now)
            brand, window, start = _split_key(key, "brand|window|start")
            try:
                moment = as_utc(datetime.fromisoformat(start.replace("Z", "+00:00")))
            except ValueError as exc:
                raise BadRecord(f"tombstone key {start!r}: bad start: {exc}") from exc
            return self.delete_kpi(brand, window, moment)
        if topic == TOPIC_METRICS_ACCOUNTS:
            if value is not None:
                return self.apply_account_metric(load(AccountMetric, value), now)
            return self.delete_account_metric(*_split_key(key, "brand|platform|metric"))
        raise BadRecord(f"the insight views do not read topic {topic!r}")

    def evict(self, now: datetime | None = None) -> int:
        """Drop mention buckets, snapshots and readings older than their retention; returns how many went."""
        now = now or self.clock()
        dropped = 0
        cutoff = self._mention_cutoff(now)
        for state in self._mentions.values():
            for start in [s for s in state.buckets if s < cutoff]:
                self._drop_bucket(state, start)
                dropped += 1
        for windows in self._series.values():
            for window, points in windows.items():
                floor = floor_minute(now) - SERIES_RETENTION[window]
                for start in [s for s in points if s < floor]:
                    del points[start]
                    dropped += 1
        account_cutoff = now - self.account_retention
        for metrics in self._accounts.values():
            for name in list(metrics):
                before = len(metrics[name])
                _trim_history(metrics[name], account_cutoff, self.readings_per_key)
                dropped += before - len(metrics[name])
                if not metrics[name]:
                    del metrics[name]
        return dropped

    @staticmethod
    def _drop_bucket(state: _BrandMentions, start: datetime) -> None:
        bucket = state.buckets.pop(start)
        for mention_id in bucket.ids:
            del state.ids[mention_id]
        state.totals.merge(bucket, -1)

    def sizes(self) -> dict[str, int]:
        """How much the insight views hold (for logs and /readyz)."""
        return {
            "insight_buckets": sum(len(s.buckets) for s in self._mentions.values()),
            "insight_mention_ids": sum(len(s.ids) for s in self._mentions.values()),
            "series_points": sum(len(p) for w in self._series.values() for p in w.values()),
            "account_readings": sum(len(h) for m in self._accounts.values() for h in m.values()),
        }

    # -- queries ---------------------------------------------------------------------------------

    def _tally(self, brand: str, start: datetime, end: datetime) -> _Tally:
        """The brand's counters in [start, end), without the per-author, per-site and per-term detail."""
        total = _Tally()
        state = self._mentions.get(brand)
        if state is not None:
            for bucket_start, bucket in state.buckets.items():
                if start <= bucket_start < end:
                    total.merge(bucket.tally)
        return total

    def _window(self, brand: str, start: datetime, end: datetime, terms: bool = False) -> _Bucket:
        """The tallies of the brand's buckets in [start, end): their sum, or the totals minus the others."""
        window = _Bucket()
        state = self._mentions.get(brand)
        if state is None:
            return window
        inside = [bucket for bucket_start, bucket in state.buckets.items() if start <= bucket_start < end]
        if len(inside) <= len(state.buckets) - len(inside):
            for bucket in inside:
                window.merge(bucket, terms=terms)
        else:
            window.merge(state.totals, terms=terms)
            for bucket_start, bucket in state.buckets.items():
                if not start <= bucket_start < end:
                    window.merge(bucket, -1, terms=terms)
        return window

    def timeseries(
        self,
        brand: str,
        bucket: SeriesBucket,
        since: datetime | None = None,
        until: datetime | None = None,
        now: datetime | None = None,
    ) -> TimeSeries:
        """One point per bucket whose start is in [since floored to the bucket, until); zeros where no snapshot.

        until defaults to the end of the current bucket; since to 60 minutes (1m) or 24 hours (1h) before
        the end of the bucket holding until.

        Raises ValueError if since is not before until or if that makes more than MAX_POINTS points.
        """
        if bucket not in BUCKET_LENGTH:
            raise ValueError(f"unknown bucket {bucket!r}; use 1m or 1h")
        length = BUCKET_LENGTH[bucket]
        end = as_utc(until) if until is not None else floor_bucket(now or self.clock(), bucket) + length
        if since is None:
            last_end = floor_bucket(end, bucket)
            if last_end < end:
                last_end += length
            first = last_end - DEFAULT_POINTS[bucket] * length
        else:
            first = floor_bucket(as_utc(since), bucket)
        if first >= end:
            raise ValueError("since must be before until")
        count = math.ceil((end - first) / length)
        if count > MAX_POINTS:
            raise ValueError(
                f"{count} points of {bucket} between since and until; at most {MAX_POINTS}: narrow the range"
            )
        stored = self._series.get(brand, {}).get(bucket, {})
        points = []
        for index in range(count):
            start = first + index * length
            point = stored.get(start)
            if point is None:
                points.append(TimePoint(start=start))
                continue
            scored = point.positive + point.neutral + point.negative
            points.append(
                TimePoint(
                    start=start,
                    mentions=point.mentions,
                    positive=point.positive,
                    neutral=point.neutral,
                    negative=point.negative,
                    unscored=point.unscored,
                    sentiment_avg=round(point.sentiment_sum / scored, 4) if scored else None,
                    engagement=KpiEngagement(likes=point.likes, shares=point.shares, comments=point.comments),
                    reach=point.reach,
                )
            )
        return TimeSeries(brand=brand, bucket=bucket, since=first, until=first + count * length, points=points)

    def authors(self, brand: str, window: InsightWindow, limit: int = 20, now: datetime | None = None) -> TopAuthors:
        """The brand's influence relays in the window, by score = reach + 10 × engagement."""
        start, end = window_bounds(window, now or self.clock())
        merged = self._window(brand, start, end).authors

        def score(author: _AuthorTally) -> int:
            return author.tally.reach + INFLUENCE_ENGAGEMENT_WEIGHT * author.tally.engagement

        ranked = heapq.nsmallest(
            limit, merged.values(), key=lambda a: (-score(a), -a.tally.mentions, -a.last_seen.timestamp(), a.key)
        )
        return TopAuthors(
            brand=brand,
            window=window,
            start=start,
            end=end,
            authors=[
                InfluenceAuthor(
                    key=a.key,
                    id=a.id,
                    handle=a.handle,
                    name=a.name,
                    url=a.url,
                    followers=a.followers,
                    mentions=a.tally.mentions,
                    engagement=a.tally.engagement,
                    reach=a.tally.reach,
                    positive_share=_ratio(a.tally.positive, a.tally.mentions),
                    negative_share=_ratio(a.tally.negative, a.tally.mentions),
                    last_seen=a.last_seen,
                    score=score(a),
                )
                for a in ranked
            ],
        )

    def sources(self, brand: str, window: InsightWindow, limit: int = 20, now: datetime | None = None) -> TopSources:
        """The brand's top sites and source types in the window, by mentions, engagement, reach, name."""
        start, end = window_bounds(window, now or self.clock())
        window_tallies = self._window(brand, start, end)
        total = window_tallies.tally

        def top(tallies: dict[str, _Tally]) -> list[SourceStats]:
            ranked = heapq.nsmallest(
                limit, tallies.items(), key=lambda kv: (-kv[1].mentions, -kv[1].engagement, -kv[1].reach, kv[0])
            )
            return [
                SourceStats(
                    name=name,
                    mentions=t.mentions,
                    share=_ratio(t.mentions, total.mentions),
                    engagement=t.engagement,
                    reach=t.reach,
                    positive=t.positive,
                    neutral=t.neutral,
                    negative=t.negative,
                    sentiment_avg=t.sentiment_avg(),
                )
                for name, t in ranked
            ]

        return TopSources(
            brand=brand,
            window=window,
            start=start,
            end=end,
            mentions=total.mentions,
            sites=top(window_tallies.sites),
            source_types=top(window_tallies.source_types),
        )

    def voice_groups(self, brand: str | None = None) -> list[tuple[str, ...]]:
        """Competitor groups: each configured brand followed by its competitors (only `brand`'s if given)."""
        owners = [brand] if brand is not None else sorted(self._competitors)
        return [(owner, *self._competitors.get(owner, ())) for owner in owners]

    def share_of_voice(
        self, window: InsightWindow, owners: Iterable[str] | None = None, now: datetime | None = None
    ) -> ShareOfVoice:
        """Each member's share of its group's mentions and positive mentions in the window.

        `owners`: the brands whose groups to answer (default: every configured brand).
        """
        start, end = window_bounds(window, now or self.clock())
        groups: list[VoiceGroup] = []
        for owner in sorted(self._competitors) if owners is None else owners:
            members = (owner, *self._competitors.get(owner, ()))
            tallies = {member: self._tally(member, start, end) for member in members}
            mentions = sum(t.mentions for t in tallies.values())
            positive = sum(t.positive for t in tallies.values())
            groups.append(
                VoiceGroup(
                    brand=owner,
                    mentions=mentions,
                    positive=positive,
                    members=[
                        VoiceMember(
                            brand=member,
                            mentions=t.mentions,
                            share=_ratio(t.mentions, mentions),
                            positive=t.positive,
                            positive_share=_ratio(t.positive, positive),
                            negative=t.negative,
                        )
                        for member, t in tallies.items()
                    ],
                )
            )
        return ShareOfVoice(window=window, start=start, end=end, groups=groups)

    def love(self, brand: str, now: datetime | None = None) -> LoveKpis:
        """Audience readings with their 1- and 7-day changes, the last day's engagement, and the love index."""
        now = now or self.clock()
        accounts: list[AccountReading] = []
        totals: dict[str, list[AccountReading]] = {}
        audience_now = audience_week_ago = 0.0
        for (platform, metric), history in sorted(self._accounts.get(brand, {}).items()):
            at, value = history[-1]
            day_ago = _value_at(history, now - DAY)
            week_ago = _value_at(history, now - 7 * DAY)
            kind: MetricKind = (
                "audience"
                if metric.lower() in AUDIENCE_METRICS
                else "links"
                if metric.lower() in LINK_METRICS
                else "web"
                if platform == WEB_PLATFORM
                else "other"
            )
            reading = AccountReading(
                platform=platform,
                metric=metric,
                kind=kind,
                value=value,
                at=at,
                change_1d=None if day_ago is None else value - day_ago,
                change_1d_pct=None if not day_ago else round((value - day_ago) / day_ago * 100, 4),
                change_7d=None if week_ago is None else value - week_ago,
                change_7d_pct=None if not week_ago else round((value - week_ago) / week_ago * 100, 4),
            )
            accounts.append(reading)
            totals.setdefault(metric, []).append(reading)
            if kind == "audience" and week_ago is not None:
                audience_now += value
                audience_week_ago += week_ago

        start, end = window_bounds("24h", now)
        day = self._tally(brand, start, end)
        per_mention = day.engagement / day.mentions if day.mentions else None

        links = self.links.summary(brand, now) if self.links is not None else None
        web = web_audience(self._accounts.get(brand, {}), self._mentions_per_day(brand, now), now)
        score = love_score(
            audience_growth(audience_week_ago, audience_now),
            per_mention,
            day.positive,
            day.negative,
            new_linking_sites=links.last_7d.new_linking_sites if links is not None else None,
            social_visits_per_mention=web.last_7d.social_visits_per_mention if web is not None else None,
        )
        components = LoveComponents(
            audience_growth=score.audience_growth,
            engagement=score.engagement,
            positive_share=score.positive_share,
            inbound_links=score.inbound_links,
            social_traffic=score.social_traffic,
        )
        audience_readings = [r for r in accounts if r.kind == "audience"]
        return LoveKpis(
            brand=brand,
            at=now,
            accounts=accounts,
            totals={metric: _sum_readings(readings) for metric, readings in totals.items()},
            audience=_sum_readings(audience_readings) if audience_readings else None,
            engagement_24h=EngagementDay(
                start=start,
                end=end,
                mentions=day.mentions,
                likes=day.likes,
                shares=day.shares,
                comments=day.comments,
                per_mention=None if per_mention is None else round(per_mention, 4),
                positive=day.positive,
                negative=day.negative,
            ),
            components=components,
            love_index=score.index,
            inbound_links=links,
            web=web,
        )

    def _mentions_per_day(self, brand: str, now: datetime) -> dict[date, int]:
        """The brand's mentions per UTC day over the last 8 days: from the 1h snapshots, else the minute tallies."""
        since = floor_bucket(now, "1h") - 8 * DAY
        per_day: dict[date, int] = {}
        for start, point in self._series.get(brand, {}).get("1h", {}).items():
            if start >= since:
                per_day[start.date()] = per_day.get(start.date(), 0) + point.mentions
        if per_day:
            return per_day
        state = self._mentions.get(brand)
        for start, bucket in state.buckets.items() if state is not None else ():
            per_day[start.date()] = per_day.get(start.date(), 0) + bucket.tally.mentions
        return per_day

    def trends(self, brand: str, limit: int = 20, now: datetime | None = None) -> Trends:
        """Terms whose frequency in the last hour rose most against the 24 h before it."""
        start, end = window_bounds("1h", now or self.clock())
        baseline_start = start - DAY
        state = self._mentions.get(brand)
        terms: list[EmergingTerm] = []
        if state is not None:
            last_hour: Counter[str] = Counter()
            outside: Counter[str] = Counter()  # counted in the totals but in neither period
            for bucket_start, bucket in state.buckets.items():
                if start <= bucket_start < end:
                    last_hour.update(bucket.terms)
                elif bucket_start < baseline_start or bucket_start >= end:
                    outside.update(bucket.terms)
            for term, count in last_hour.items():
                if count < TREND_MIN_COUNT or state.is_brand_term(term):
                    continue
                baseline = (state.totals.terms[term] - count - outside[term]) / 24
                score = (count + TREND_SMOOTHING) / (baseline + TREND_SMOOTHING)
                if score > 1:
                    terms.append(
                        EmergingTerm(
                            term=term,
                            count_last_hour=count,
                            baseline_per_hour=round(baseline, 4),
                            score=round(score, 4),
                        )
                    )
        terms.sort(key=lambda t: (-t.score, -t.count_last_hour, t.term))
        return Trends(brand=brand, start=start, end=end, baseline_start=baseline_start, terms=terms[:limit])


def _split_key(key: bytes | None, shape: str) -> tuple[str, str, str]:
    text = (key or b"").decode("utf-8", errors="replace")
    parts = text.split("|")
    if len(parts) != 3 or not all(parts):
        raise BadRecord(f"tombstone with a key that is not {shape}: {text!r}")
    return parts[0], parts[1], parts[2]


def _trim_history(history: list[tuple[datetime, float]], cutoff: datetime, capacity: int) -> None:
    # Keep the newest reading older than the cutoff: it is the value in force at the cutoff (7-day changes).
    old = bisect.bisect_left(history, (cutoff,))
    drop = max(old - 1, len(history) - capacity, 0)
    if drop:
        del history[:drop]


def _value_at(history: list[tuple[datetime, float]], moment: datetime) -> float | None:
    """The reading in force at `moment`: the latest one taken at or before it; None if none is that old."""
    position = bisect.bisect_right(history, (moment, math.inf))
    return history[position - 1][1] if position else None


def _sum_readings(readings: list[AccountReading]) -> MetricTotal:
    day = [r.change_1d for r in readings if r.change_1d is not None]
    week = [r.change_7d for r in readings if r.change_7d is not None]
    return MetricTotal(
        value=sum(r.value for r in readings),
        change_1d=sum(day) if day else None,
        change_7d=sum(week) if week else None,
    )
