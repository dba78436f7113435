"""Period reports of a brand from the history store: per day, week or month, and over the whole period against
the period of the same length just before it. The API's `/report` and the weekly digest both call
`brand_report`; what they show comes from here.

Buckets are calendar days, ISO weeks (Monday 00:00) and months in UTC, as PostgreSQL's `date_trunc(…, 'UTC')`
cuts them, every bucket that meets [since, until) listed (zeros where nothing happened); the first and last
may be partial (`partial`), their figures counting only what falls in the range.

Per bucket, and over the period:
  - mentions, sentiment split (positive, neutral, negative, unscored), `sentiment_avg` the mean compound score of
    the scored ones, `positive_share` = positive / (positive + negative);
  - engagement (likes, shares, comments, their total), reach (sum of the mentions' reach), unique authors
    (distinct `author`: the author's id, else handle, else name; over the period, not a sum of the buckets);
  - share of voice: mentions / (mentions + the competitors' mentions), competitors from the brand's config;
    null without competitors or without any mention of the group;
  - the love index (schemas/love.py): audience growth from the first to the last reading in the bucket of each
    audience account metric read twice or more in it, engagement per mention, positive share;
  - account metrics: the last reading of every (platform, metric) in the bucket;
  - web audience (`web`, from the web analytics sources' daily readings of platform `web`): visits and
    social-referred visits summed over the bucket's days (in all and per network), beside its mentions, and the
    social visits per mention, which is the love index's social traffic component.

Each query reads its table once for both periods (one grouped query per table, GROUPING SETS for the buckets
and the totals), whatever the number of buckets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast, get_args

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from schemas.love import LOVE_FORMULA, audience_growth, is_audience, love_score
from schemas.models import Alert, ScoredMention

ReportBucket = Literal["day", "week", "month"]
REPORT_BUCKETS: tuple[str, ...] = get_args(ReportBucket)
MAX_BUCKETS = 1000
# The figures compared with the previous period, in the order reports list them.
HEADLINE_FIGURES = (
    "mentions",
    "positive_share",
    "sentiment_avg",
    "engagement",
    "reach",
    "unique_authors",
    "share_of_voice",
    "love_index",
)

Conn = psycopg.AsyncConnection[Any]


class ReportRangeError(ValueError):
    """A period that cannot be reported; `parameter` names the query parameter at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


# ---------------------------------------------------------------------------------------------- buckets


def bucket_floor(moment: datetime, bucket: str) -> datetime:
    """The start of the UTC day, ISO week (Monday) or month holding `moment` (date_trunc in UTC)."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "day":
        return day
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    if bucket == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown bucket {bucket!r}; expected one of {', '.join(REPORT_BUCKETS)}")


def bucket_after(start: datetime, bucket: str) -> datetime:
    """The start of the bucket that follows the one starting at `start`."""
    if bucket == "day":
        return start + timedelta(days=1)
    if bucket == "week":
        return start + timedelta(days=7)
    if bucket == "month":
        if start.month < 12:
            return start.replace(month=start.month + 1)
        if start.year == datetime.max.year:
            raise OverflowError("the month after December 9999 is out of range")
        return start.replace(year=start.year + 1, month=1)
    raise ValueError(f"unknown bucket {bucket!r}; expected one of {', '.join(REPORT_BUCKETS)}")


def bucket_starts(since: datetime, until: datetime, bucket: str, limit: int | None = None) -> list[datetime]:
    """The starts of the buckets that meet [since, until); ReportRangeError past `limit` of them."""
    starts: list[datetime] = []
    start = bucket_floor(since, bucket)
    while start < until:
        if limit is not None and len(starts) >= limit:
            raise ReportRangeError(
                "bucket",
                f"the period from {since.isoformat()} to {until.isoformat()} makes more than {limit} {bucket} buckets;"
                " choose a larger bucket or a shorter period",
            )
        starts.append(start)
        start = bucket_after(start, bucket)
    return starts


@dataclass(frozen=True)
class ReportPeriod:
    """The period of a report, its buckets, and the period of the same length before it."""

    since: datetime
    until: datetime
    bucket: ReportBucket
    starts: list[datetime]
    previous_since: datetime

    @property
    def previous_until(self) -> datetime:
        return self.since


def report_period(since: datetime, until: datetime, bucket: str, max_buckets: int = MAX_BUCKETS) -> ReportPeriod:
    """Check a period (ReportRangeError naming the parameter at fault) and cut it into buckets."""
    if bucket not in REPORT_BUCKETS:
        raise ReportRangeError("bucket", f"unknown bucket {bucket!r}; expected one of {', '.join(REPORT_BUCKETS)}")
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if since >= until:
        raise ReportRangeError("since", f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    try:
        previous_since = since - (until - since)
    except OverflowError as exc:
        raise ReportRangeError("since", "the previous period (as long, before since) starts before year 1") from exc
    try:
        starts = bucket_starts(since, until, bucket, max_buckets)
    except OverflowError as exc:
        raise ReportRangeError("until", f"the last {bucket} bucket ends after year 9999") from exc
    return ReportPeriod(since, until, cast(ReportBucket, bucket), starts, previous_since)


# ---------------------------------------------------------------------------------------------- the report


class _Figures(BaseModel):
    model_config = ConfigDict(frozen=True)


class SentimentSplit(_Figures):
    positive: int = 0
    neutral: int = 0
    negative: int = 0
    unscored: int = 0


class Engagement(_Figures):
    likes: int = 0
    shares: int = 0
    comments: int = 0
    total: int = Field(0, description="likes + shares + comments")


class LoveFigures(_Figures):
    audience: float | None = Field(
        None, description="summed last readings of the audience metrics read twice or more in the bucket"
    )
    audience_growth_rate: float | None = Field(
        None, description="relative change of that audience from its first to its last readings in the bucket"
    )
    engagement_per_mention: float | None = None
    audience_growth: float | None = Field(None, description="component: clamp(0.5 + 5 × growth, 0, 1)")
    engagement: float | None = Field(None, description="component: min(1, log10(1 + engagement per mention) / 2)")
    positive_share: float | None = Field(None, description="component: positive / (positive + negative)")
    social_traffic: float | None = Field(
        None, description="component: min(1, log10(1 + social visits per mention) / 2); null without web readings"
    )
    index: float | None = Field(None, description="0–100; null when no component can be computed")


class AccountValue(_Figures):
    platform: str
    metric: str
    value: float = Field(description="the last reading in the bucket (or period)")
    at: datetime = Field(description="when it was read")


class WebFigures(_Figures):
    visits: float | None = Field(None, description="visits of the bucket's days, summed")
    social_visits: float | None = Field(None, description="visits referred by social networks, summed")
    social: dict[str, float] = Field(default_factory=dict, description="social-referred visits per network")
    social_visits_per_mention: float | None = Field(None, description="social_visits / mentions")


class PeriodFigures(_Figures):
    mentions: int = 0
    sentiment: SentimentSplit = Field(default_factory=SentimentSplit)
    sentiment_avg: float | None = Field(None, description="mean compound score of the scored mentions")
    positive_share: float | None = Field(None, description="positive / (positive + negative)")
    engagement: Engagement = Field(default_factory=Engagement)
    reach: int = 0
    unique_authors: int = 0
    competitor_mentions: int = Field(0, description="mentions of the brand's competitors")
    share_of_voice: float | None = Field(None, description="mentions / (mentions + competitor_mentions)")
    love: LoveFigures = Field(default_factory=LoveFigures)
    accounts: list[AccountValue] = Field(default_factory=list)
    web: WebFigures | None = Field(None, description="web audience of the days in the bucket; null without any")


class BucketFigures(PeriodFigures):
    start: datetime = Field(description="the bucket's start (UTC day, ISO week or month)")
    end: datetime = Field(description="the next bucket's start")
    partial: bool = Field(False, description="the bucket reaches out of the report's period (figures count in it)")


class Change(_Figures):
    current: int | float | None
    previous: int | float | None
    change: int | float | None = Field(None, description="current − previous")
    change_pct: float | None = Field(None, description="change / previous × 100; null when previous is 0 or null")


class Report(BaseModel):
    model_config = ConfigDict(frozen=True)

    brand: str
    since: datetime
    until: datetime = Field(description="exclusive")
    bucket: ReportBucket
    competitors: list[str]
    previous_since: datetime = Field(description="start of the previous period (same length, ending at since)")
    previous_until: datetime
    buckets: list[BucketFigures]
    totals: PeriodFigures
    previous: PeriodFigures
    changes: dict[str, Change] = Field(description=f"per headline figure: {', '.join(HEADLINE_FIGURES)}")
    love_formula: str = LOVE_FORMULA
    top_mentions: list[ScoredMention] | None = Field(None, description="by engagement, when asked for")
    alerts: list[Alert] | None = Field(None, description="the alerts of the period, newest first, when asked for")


# ---------------------------------------------------------------------------------------------- SQL

# `cur` tells the period (true: the report's, false: the previous one); `bucket` is null for the previous
# period, so its per-bucket group is its total again. GROUPING(bucket) = 1 marks a period's total.
_MENTION_FIGURES = """
SELECT GROUPING(bucket) AS whole, cur, bucket,
       count(*) FILTER (WHERE own) AS mentions,
       count(*) FILTER (WHERE own AND label = 'positive') AS positive,
       count(*) FILTER (WHERE own AND label = 'neutral') AS neutral,
       count(*) FILTER (WHERE own AND label = 'negative') AS negative,
       count(*) FILTER (WHERE own AND label NOT IN ('positive', 'neutral', 'negative')) AS unscored,
       avg(compound) FILTER (WHERE own AND label <> 'unscored') AS sentiment_avg,
       coalesce(sum(likes) FILTER (WHERE own), 0)::bigint AS likes,
       coalesce(sum(shares) FILTER (WHERE own), 0)::bigint AS shares,
       coalesce(sum(comments) FILTER (WHERE own), 0)::bigint AS comments,
       coalesce(sum(reach) FILTER (WHERE own), 0)::bigint AS reach,
       count(DISTINCT author) FILTER (WHERE own) AS unique_authors,
       count(*) FILTER (WHERE NOT own) AS competitor_mentions
FROM (
    SELECT brand = %(brand)s AS own, published_at >= %(since)s AS cur,
           CASE WHEN published_at >= %(since)s THEN date_trunc(%(unit)s, published_at, 'UTC') END AS bucket,
           label, compound, likes, shares, comments, reach, author
    FROM mentions
    WHERE brand = ANY(%(brands)s) AND published_at >= %(previous)s AND published_at < %(until)s
) AS m
GROUP BY GROUPING SETS ((cur, bucket), (cur))
"""

_ACCOUNT_FIGURES = """
SELECT GROUPING(bucket) AS whole, cur, bucket, platform, metric,
       count(*) AS readings,
       (array_agg(value ORDER BY at))[1] AS first_value,
       (array_agg(value ORDER BY at DESC))[1] AS last_value,
       max(at) AS last_at,
       sum(value) AS total
FROM (
    SELECT at >= %(since)s AS cur,
           CASE WHEN at >= %(since)s THEN date_trunc(%(unit)s, at, 'UTC') END AS bucket,
           platform, metric, at, value
    FROM account_metrics
    WHERE brand = %(brand)s AND at >= %(previous)s AND at < %(until)s
) AS a
GROUP BY GROUPING SETS ((cur, bucket, platform, metric), (cur, platform, metric))
"""

_TOP_MENTIONS = """
SELECT doc FROM mentions
WHERE brand = %(brand)s AND published_at >= %(since)s AND published_at < %(until)s
ORDER BY likes + shares + comments DESC, published_at DESC, id
LIMIT %(limit)s
"""

_ALERTS = """
SELECT doc FROM alerts
WHERE brand = %(brand)s AND created_at >= %(since)s AND created_at < %(until)s
ORDER BY created_at DESC, id
LIMIT %(limit)s
"""


# ---------------------------------------------------------------------------------------------- assembling


@dataclass
class MentionCounts:
    """One row of the mentions query: a bucket's (or a period's) counts."""

    mentions: int = 0
    positive: int = 0
    neutral: int = 0
    negative: int = 0
    unscored: int = 0
    sentiment_avg: float | None = None
    likes: int = 0
    shares: int = 0
    comments: int = 0
    reach: int = 0
    unique_authors: int = 0
    competitor_mentions: int = 0


@dataclass(frozen=True)
class AccountReadings:
    """A (platform, metric)'s readings in a bucket (or a period): how many, the first and the last."""

    platform: str
    metric: str
    readings: int
    first_value: float
    last_value: float
    last_at: datetime
    total: float | None = None  # the sum of its readings (web analytics readings are one per day)


@dataclass
class _Cell:
    counts: MentionCounts = field(default_factory=MentionCounts)
    accounts: list[AccountReadings] = field(default_factory=list)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def figures(counts: MentionCounts, accounts: Sequence[AccountReadings], has_competitors: bool) -> dict[str, Any]:
    """The figures of a bucket or a period from its counts and account readings (the fields of PeriodFigures)."""
    engagement = counts.likes + counts.shares + counts.comments
    voice_total = counts.mentions + counts.competitor_mentions
    grown = [a for a in accounts if is_audience(a.metric) and a.readings >= 2]
    audience_before = sum(a.first_value for a in grown)
    audience_after = sum(a.last_value for a in grown)
    growth = audience_growth(audience_before, audience_after) if grown else None
    per_mention = engagement / counts.mentions if counts.mentions else None
    web = web_figures(accounts, counts.mentions)
    score = love_score(
        growth,
        per_mention,
        counts.positive,
        counts.negative,
        social_visits_per_mention=web.social_visits_per_mention if web is not None else None,
    )
    scored_polar = counts.positive + counts.negative
    return {
        "mentions": counts.mentions,
        "sentiment": SentimentSplit(
            positive=counts.positive, neutral=counts.neutral, negative=counts.negative, unscored=counts.unscored
        ),
        "sentiment_avg": _round(counts.sentiment_avg),
        "positive_share": round(counts.positive / scored_polar, 4) if scored_polar else None,
        "engagement": Engagement(likes=counts.likes, shares=counts.shares, comments=counts.comments, total=engagement),
        "reach": counts.reach,
        "unique_authors": counts.unique_authors,
        "competitor_mentions": counts.competitor_mentions,
        "share_of_voice": round(counts.mentions / voice_total, 4) if has_competitors and voice_total else None,
        "love": LoveFigures(
            audience=audience_after if grown else None,
            audience_growth_rate=_round(growth, 6),
            engagement_per_mention=_round(per_mention),
            audience_growth=score.audience_growth,
            engagement=score.engagement,
            positive_share=score.positive_share,
            social_traffic=score.social_traffic,
            index=score.index,
        ),
        "accounts": [
            AccountValue(platform=a.platform, metric=a.metric, value=a.last_value, at=a.last_at)
            for a in sorted(accounts, key=lambda a: (a.platform, a.metric))
        ],
        "web": web,
    }


WEB_PLATFORM = "web"
SOCIAL_PREFIX = "social_visits:"


def web_figures(accounts: Sequence[AccountReadings], mentions: int) -> WebFigures | None:
    """Visits and social-referred visits of a bucket from the daily web readings (platform web); None without."""
    totals = {
        a.metric: a.total if a.total is not None else a.last_value
        for a in accounts
        if a.platform == WEB_PLATFORM
        and (a.metric in ("visits", "social_visits") or a.metric.startswith(SOCIAL_PREFIX))
    }
    if not totals:
        return None
    social = {m.removeprefix(SOCIAL_PREFIX): v for m, v in sorted(totals.items()) if m.startswith(SOCIAL_PREFIX)}
    social_visits = totals.get("social_visits", sum(social.values()) if social else None)
    return WebFigures(
        visits=totals.get("visits"),
        social_visits=social_visits,
        social=social,
        social_visits_per_mention=round(social_visits / mentions, 4)
        if social_visits is not None and mentions
        else None,
    )


def headline(figures: PeriodFigures, name: str) -> float | None:
    """A headline figure of a period, by its name in HEADLINE_FIGURES."""
    if name == "engagement":
        return figures.engagement.total
    if name == "love_index":
        return figures.love.index
    value: float | None = getattr(figures, name)
    return value


def change(current: float | None, previous: float | None) -> Change:
    """The change of a figure against the previous period, absolute and in percent of the previous value."""
    delta = None if current is None or previous is None else round(current - previous, 4)
    pct = None if delta is None or not previous else round(delta / previous * 100, 2)
    return Change(current=current, previous=previous, change=delta, change_pct=pct)


def changes(current: PeriodFigures, previous: PeriodFigures) -> dict[str, Change]:
    return {name: change(headline(current, name), headline(previous, name)) for name in HEADLINE_FIGURES}


def assemble(
    brand: str,
    competitors: Sequence[str],
    period: ReportPeriod,
    mention_rows: Sequence[tuple[Any, ...]],
    account_rows: Sequence[tuple[Any, ...]],
) -> Report:
    """The report from the rows of the two grouped queries (pure: the tests feed it rows)."""
    cells: dict[datetime, _Cell] = {start: _Cell() for start in period.starts}
    totals, previous = _Cell(), _Cell()

    def cell_of(whole: int, cur: bool, bucket: datetime | None) -> _Cell | None:
        if whole:
            return totals if cur else previous
        if not cur or bucket is None:
            return None  # the previous period's single "bucket" repeats its total
        return cells.get(bucket.astimezone(UTC))

    for whole, cur, bucket, *counts in mention_rows:
        target = cell_of(whole, cur, bucket)
        if target is not None:
            target.counts = MentionCounts(*counts)
    for whole, cur, bucket, platform, metric, readings, first_value, last_value, last_at, *total in account_rows:
        target = cell_of(whole, cur, bucket)
        if target is not None:
            summed = float(total[0]) if total and total[0] is not None else None
            target.accounts.append(
                AccountReadings(platform, metric, readings, float(first_value), float(last_value), last_at, summed)
            )

    has_competitors = bool(competitors)
    buckets = []
    for start, cell in cells.items():
        end = bucket_after(start, period.bucket)
        buckets.append(
            BucketFigures(
                start=start,
                end=end,
                partial=start < period.since or end > period.until,
                **figures(cell.counts, cell.accounts, has_competitors),
            )
        )
    current_figures = PeriodFigures(**figures(totals.counts, totals.accounts, has_competitors))
    previous_figures = PeriodFigures(**figures(previous.counts, previous.accounts, has_competitors))
    return Report(
        brand=brand,
        since=period.since,
        until=period.until,
        bucket=period.bucket,
        competitors=list(competitors),
        previous_since=period.previous_since,
        previous_until=period.previous_until,
        buckets=buckets,
        totals=current_figures,
        previous=previous_figures,
        changes=changes(current_figures, previous_figures),
    )


async def brand_report(
    conn: Conn,
    brand: str,
    competitors: Sequence[str],
    since: datetime,
    until: datetime,
    bucket: str,
    *,
    top_mentions: int = 0,
    alerts: int = 0,
    max_buckets: int = MAX_BUCKETS,
) -> Report:
    """The brand's report over [since, until) per `bucket` (day | week | month), with the change against the
    period of the same length before it; `top_mentions` / `alerts`: how many of each to include (0: none, and
    the fields stay null). ReportRangeError for a period that cannot be reported."""
    period = report_period(since, until, bucket, max_buckets)
    others = [c for c in dict.fromkeys(competitors) if c != brand]
    params = {
        "brand": brand,
        "brands": [brand, *others],
        "since": period.since,
        "until": period.until,
        "previous": period.previous_since,
        "unit": period.bucket,
    }
    mention_rows = await (await conn.execute(_MENTION_FIGURES, params)).fetchall()
    account_rows = await (await conn.execute(_ACCOUNT_FIGURES, params)).fetchall()
    report = assemble(brand, others, period, mention_rows, account_rows)
    extra: dict[str, Any] = {}
    window = {"brand": brand, "since": period.since, "until": period.until}
    if top_mentions > 0:
        cur = await conn.execute(_TOP_MENTIONS, {**window, "limit": top_mentions})
        extra["top_mentions"] = [ScoredMention.model_validate(doc) for (doc,) in await cur.fetchall()]
    if alerts > 0:
        cur = await conn.execute(_ALERTS, {**window, "limit": alerts})
        extra["alerts"] = [Alert.model_validate(doc) for (doc,) in await cur.fetchall()]
    return report.model_copy(update=extra) if extra else report


# ---------------------------------------------------------------------------------------------- flat rows (CSV)

BUCKET_COLUMNS = (
    "start",
    "end",
    "partial",
    "mentions",
    "positive",
    "neutral",
    "negative",
    "unscored",
    "sentiment_avg",
    "positive_share",
    "likes",
    "shares",
    "comments",
    "engagement",
    "reach",
    "unique_authors",
    "competitor_mentions",
    "share_of_voice",
    "audience",
    "audience_growth_rate",
    "engagement_per_mention",
    "love_audience_growth",
    "love_engagement",
    "love_positive_share",
    "love_index",
    "visits",
    "social_visits",
    "social_visits_per_mention",
)


def account_columns(report: Report) -> list[tuple[str, str]]:
    """Every (platform, metric) read in any bucket of the report, sorted."""
    return sorted({(a.platform, a.metric) for b in report.buckets for a in b.accounts})


def bucket_header(report: Report) -> list[str]:
    """The CSV header: BUCKET_COLUMNS, then one `<platform>.<metric>` column per account metric."""
    return [*BUCKET_COLUMNS, *(f"{platform}.{metric}" for platform, metric in account_columns(report))]


def bucket_rows(report: Report) -> Iterator[list[Any]]:
    """One flat row per bucket, in bucket_header's order (None where a figure is null)."""
    keys = account_columns(report)
    for b in report.buckets:
        readings = {(a.platform, a.metric): a.value for a in b.accounts}
        yield [
            b.start,
            b.end,
            b.partial,
            b.mentions,
            b.sentiment.positive,
            b.sentiment.neutral,
            b.sentiment.negative,
            b.sentiment.unscored,
            b.sentiment_avg,
            b.positive_share,
            b.engagement.likes,
            b.engagement.shares,
            b.engagement.comments,
            b.engagement.total,
            b.reach,
            b.unique_authors,
            b.competitor_mentions,
            b.share_of_voice,
            b.love.audience,
            b.love.audience_growth_rate,
            b.love.engagement_per_mention,
            b.love.audience_growth,
            b.love.engagement,
            b.love.positive_share,
            b.love.index,
            b.web.visits if b.web else None,
            b.web.social_visits if b.web else None,
            b.web.social_visits_per_mention if b.web else None,
            *(readings.get(key) for key in keys),
        ]


__all__ = [
    "BUCKET_COLUMNS",
    "HEADLINE_FIGURES",
    "MAX_BUCKETS",
    "REPORT_BUCKETS",
    "AccountReadings",
    "AccountValue",
    "BucketFigures",
    "Change",
    "Engagement",
    "LoveFigures",
    "MentionCounts",
    "PeriodFigures",
    "Report",
    "ReportBucket",
    "ReportPeriod",
    "ReportRangeError",
    "SentimentSplit",
    "WebFigures",
    "assemble",
    "brand_report",
    "bucket_after",
    "bucket_floor",
    "bucket_header",
    "bucket_rows",
    "bucket_starts",
    "change",
    "changes",
    "figures",
    "headline",
    "report_period",
    "web_figures",
]
