"""Pydantic models of Écoute's Kafka messages: mention/1, scored-mention/1, kpi-partial/1, kpi/1,
alert/1, account-metric/1, alert-ack/1, mention-handled/1, webhook-delivery/1, content-item/1.

Messages are JSON serialised with orjson (`dump`), and read back with pydantic's JSON parser
(`load`), which names the offending field when a message is refused. The JSON Schema files next to
this module are exported from these models by `python -m schemas.export` and checked by the tests.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

SOURCES = ("rss", "reddit", "mastodon", "bluesky", "hackernews", "webhook", "simulate", "replay")
Source = Literal["rss", "reddit", "mastodon", "bluesky", "hackernews", "webhook", "simulate", "replay"]
SentimentLabel = Literal["positive", "neutral", "negative", "unscored"]
KpiWindow = Literal["1m", "1h", "1d"]
AlertKind = Literal["volume_spike", "volume_drop", "negative_surge", "influencer", "keyword", "sentiment_drop"]
Severity = Literal["info", "warning", "critical"]

MAX_TEXT_CHARS = 100_000
MAX_LINKS = 256


def as_utc(value: datetime) -> datetime:
    # A naive timestamp is taken as UTC; an aware one is converted so every message speaks UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
Count = Annotated[StrictInt, Field(ge=0)]
ShortStr = Annotated[StrictStr, Field(max_length=2048)]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=False)


class Author(_Message):
    id: ShortStr | None = None
    handle: ShortStr | None = None
    name: ShortStr | None = None
    followers: Count | None = None
    url: ShortStr | None = None


class Engagement(_Message):
    likes: Count = 0
    shares: Count = 0
    comments: Count = 0
    views: Count = 0


class PostRef(_Message):
    """A post on its platform by reference (AT Protocol's strong ref: its at:// URI and the CID of its record)."""

    uri: ShortStr
    cid: ShortStr


class ReplyRef(_Message):
    """What a reply to this mention points at on its platform: the thread's first post and this one."""

    root: PostRef
    parent: PostRef


class Mention(_Message):
    """mention/1: one piece of conversation found on a source."""

    schema_: Literal["mention/1"] = Field("mention/1", alias="schema")
    id: Annotated[StrictStr, Field(min_length=1, max_length=512)]
    source: Source = "webhook"
    url: ShortStr | None = None
    site: ShortStr | None = None
    published_at: UtcDatetime = Field(default_factory=utc_now)
    fetched_at: UtcDatetime = Field(default_factory=utc_now)
    author: Author = Field(default_factory=Author)
    title: Annotated[StrictStr, Field(max_length=4096)] | None = None
    text: Annotated[StrictStr, Field(max_length=MAX_TEXT_CHARS)]
    lang: Annotated[StrictStr, Field(pattern=r"^[a-z]{2}$")] | None = None
    thread_id: ShortStr | None = None
    parent_id: ShortStr | None = None
    engagement: Engagement = Field(default_factory=Engagement)
    query: ShortStr | None = None
    reply_ref: ReplyRef | None = Field(
        None, description="Bluesky: the root and parent refs a reply to this post carries (its own uri and cid)"
    )
    links: list[ShortStr] = Field(
        default_factory=list,
        max_length=MAX_LINKS,
        description="URLs the mention links to (its HTML anchors, link facets, a story's URL); see schemas/links.py",
    )


class Sentiment(_Message):
    compound: StrictFloat | StrictInt
    pos: StrictFloat | StrictInt
    neu: StrictFloat | StrictInt
    neg: StrictFloat | StrictInt
    label: SentimentLabel


class ScoredMention(Mention):
    """scored-mention/1: a mention as seen for one matched brand."""

    schema_: Literal["scored-mention/1"] = Field("scored-mention/1", alias="schema")  # type: ignore[assignment]
    brand: StrictStr
    sentiment: Sentiment
    topics: list[StrictStr] = Field(default_factory=list)
    matched: list[StrictStr] = Field(default_factory=list)
    reach: Count = 0
    scored_at: UtcDatetime = Field(default_factory=utc_now)


class KpiEngagement(_Message):
    likes: Count = 0
    shares: Count = 0
    comments: Count = 0


class KpiCounters(_Message):
    """The counters shared by kpi-partial/1 and kpi/1; all of them add up across partials."""

    mentions: Count = 0
    positive: Count = 0
    neutral: Count = 0
    negative: Count = 0
    unscored: Count = 0
    sentiment_sum: StrictFloat | StrictInt = 0.0
    engagement: KpiEngagement = Field(default_factory=KpiEngagement)
    reach: Count = 0
    unique_authors: Count = 0
    topics: dict[str, Count] = Field(default_factory=dict)
    sources: dict[str, Count] = Field(default_factory=dict)


class Origin(_Message):
    partition: Count
    first_offset: Count
    last_offset: Count


class FlaggedMention(_Message):
    """A mention a per-mention alert rule (influencer, keyword) acts on, as stage 1 tells stage 2."""

    id: StrictStr
    url: ShortStr | None = None
    author: ShortStr | None = Field(None, description="the author's handle, else id, else name")
    followers: Count = 0
    label: SentimentLabel = "unscored"
    topics: list[StrictStr] = Field(default_factory=list)
    terms: list[StrictStr] = Field(default_factory=list, description="crisis terms of the keyword rule found in it")


class KpiPartial(KpiCounters):
    """kpi-partial/1: one stage-1 batch's counters for one (brand, minute)."""

    schema_: Literal["kpi-partial/1"] = Field("kpi-partial/1", alias="schema")
    brand: StrictStr
    bucket: UtcDatetime
    authors: list[StrictStr] = Field(default_factory=list, description="distinct author ids seen in this partial")
    samples: list[StrictStr] = Field(default_factory=list, description="a few mention URLs, evidence for alerts")
    negative_samples: list[StrictStr] = Field(
        default_factory=list, description="a few URLs of negative mentions, evidence for tone alerts"
    )
    influencers: list[FlaggedMention] = Field(
        default_factory=list,
        description="mentions by authors with the influencer rule's followers, most followed first",
    )
    keywords: list[FlaggedMention] = Field(
        default_factory=list, description="mentions with crisis terms of the keyword rule (`terms` says which)"
    )
    origin: Origin


class Kpi(KpiCounters):
    """kpi/1: a brand's totals for one tumbling window."""

    schema_: Literal["kpi/1"] = Field("kpi/1", alias="schema")
    brand: StrictStr
    window: KpiWindow
    start: UtcDatetime
    end: UtcDatetime
    updated_at: UtcDatetime = Field(default_factory=utc_now)


class AlertWindow(_Message):
    start: UtcDatetime
    end: UtcDatetime


class Evidence(_Message):
    terms: list[StrictStr] = Field(default_factory=list)
    topics: list[StrictStr] = Field(default_factory=list)
    authors: list[StrictStr] = Field(default_factory=list)
    sample_mentions: list[StrictStr] = Field(default_factory=list)


class Alert(_Message):
    """alert/1: something a community manager should look at now."""

    schema_: Literal["alert/1"] = Field("alert/1", alias="schema")
    id: StrictStr
    brand: StrictStr
    kind: AlertKind
    severity: Severity
    window: AlertWindow
    observed: StrictFloat | StrictInt
    baseline: StrictFloat | StrictInt
    threshold: StrictFloat | StrictInt
    message: StrictStr
    evidence: Evidence = Field(default_factory=Evidence)
    created_at: UtcDatetime = Field(default_factory=utc_now)


def _finite(value: float) -> float:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Name = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[^|\s][^|]*$")]


class AccountMetric(BaseModel):
    """account-metric/1: one reading of an account's number (followers, subscribers, inbound links…).

    Keyed `brand|platform|metric` on the compacted metrics.accounts topic, so `|` is not allowed in the parts.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_: Literal["account-metric/1"] = Field("account-metric/1", alias="schema")
    brand: Name
    platform: Name
    metric: Name
    value: Annotated[StrictInt | StrictFloat, AfterValidator(_finite)]
    at: UtcDatetime = Field(default_factory=utc_now)

    @property
    def key(self) -> str:
        return f"{self.brand}|{self.platform}|{self.metric}"


ContentPlatform = Literal["mastodon", "bluesky", "rss"]
MAX_EXCERPT_CHARS = 500


class ContentItem(BaseModel):
    """content-item/1: one reading of a post of the brand's own channels (its Mastodon or Bluesky account, its
    blog's feed): the reactions it had at `at`, and the channel's followers then.

    Keyed `brand|platform|id` on the compacted content.items topic. A count the channel does not expose (likes
    on a blog) is null, not 0.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_: Literal["content-item/1"] = Field("content-item/1", alias="schema")
    brand: Name
    platform: ContentPlatform
    id: Annotated[StrictStr, Field(min_length=1, max_length=512, pattern=r"^[^|\s]+$")] = Field(
        description="stable and platform-qualified, as mention ids: `mastodon:<host>:<status id>`, "
        "`bluesky:<did>:<rkey>`, `rss:<sha1 of guid>`"
    )
    channel: ShortStr = Field(description="the owned channel: `acme@mastodon.social`, `acme.bsky.social`, a feed URL")
    url: ShortStr | None = None
    published_at: UtcDatetime
    title: Annotated[StrictStr, Field(max_length=4096)] | None = None
    text: Annotated[StrictStr, Field(max_length=MAX_EXCERPT_CHARS)] = Field("", description="an excerpt")
    comments: Count | None = Field(None, description="replies or comments")
    reposts: Count | None = Field(None, description="reblogs, reposts")
    likes: Count | None = Field(None, description="favourites, likes")
    followers: Count | None = Field(None, description="the channel's followers at `at` (null for a feed)")
    at: UtcDatetime = Field(default_factory=utc_now)

    @property
    def key(self) -> str:
        return f"{self.brand}|{self.platform}|{self.id}"


M = TypeVar("M", bound=BaseModel)


def dump(message: BaseModel) -> bytes:
    """Serialise a message to JSON bytes with orjson (RFC 3339 timestamps, `schema` by its alias)."""
    return orjson.dumps(message.model_dump(by_alias=True))


def to_dict(message: BaseModel) -> dict[str, Any]:
    return message.model_dump(by_alias=True, mode="json")


def describe_error(exc: Exception) -> str:
    """A record's problem in one line: each invalid field with pydantic's message, or the error itself."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors())
    return str(exc)


def load(model: type[M], raw: bytes | str) -> M:
    """Parse and validate JSON bytes; raises pydantic.ValidationError naming the bad field."""
    return model.model_validate_json(raw)


# --- what the API writes: acks and handled marks (alerts.actions), webhook deliveries (webhooks.deliveries) ---

Who = Annotated[StrictStr, Field(max_length=128, description="who did it (free text: a name or an e-mail)")]
Note = Annotated[StrictStr, Field(max_length=2000)]


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class AlertAck(_Action):
    """alert-ack/1: someone has seen an alert and taken it in hand (alerts.actions, key `alert:<id>`)."""

    schema_: Literal["alert-ack/1"] = Field("alert-ack/1", alias="schema")
    alert_id: StrictStr
    brand: StrictStr
    by: Who | None = None
    note: Note | None = None
    at: UtcDatetime = Field(default_factory=utc_now)


class MentionHandled(_Action):
    """mention-handled/1: a mention of the inbox has been answered, or needs no answer
    (alerts.actions, key `mention:<brand>:<id>`)."""

    schema_: Literal["mention-handled/1"] = Field("mention-handled/1", alias="schema")
    mention_id: StrictStr
    brand: StrictStr
    by: Who | None = None
    note: Note | None = None
    at: UtcDatetime = Field(default_factory=utc_now)
    published_at: UtcDatetime | None = Field(None, description="the mention's, for the response-time KPI")


OutreachKind = Literal["reply", "follow"]
OutreachState = Literal["pending", "sent"]


class Outreach(_Action):
    """outreach/1: a reply posted to a mention, or an author followed, from the inbox with the brand's account
    (alerts.actions, key `reply:<brand>:<request id>` or `follow:<brand>:<request id>`).

    `pending` is written before the platform is called (with Bluesky's record key and createdAt), `sent` once the
    platform took it (with the platform's id and URL of the post or follow)."""

    schema_: Literal["outreach/1"] = Field("outreach/1", alias="schema")
    kind: OutreachKind
    state: OutreachState
    request_id: StrictStr
    brand: StrictStr
    platform: Literal["mastodon", "bluesky"]
    by: Who | None = None
    key_id: StrictStr | None = Field(None, description="the API key that sent it (a fingerprint, never the key)")
    at: UtcDatetime = Field(default_factory=utc_now)
    digest: StrictStr = Field(description="SHA-256 of the request (a reused request id with another body is refused)")
    mention_id: StrictStr | None = None
    author: StrictStr | None = Field(None, description="reply: the author answered; follow: the author followed")
    text: Annotated[StrictStr, Field(max_length=5000)] | None = None
    rkey: StrictStr | None = Field(None, description="Bluesky: the record key, made from the request id")
    created_at: UtcDatetime | None = Field(None, description="Bluesky: the record's createdAt")
    post_id: StrictStr | None = Field(None, description="the platform's id: Mastodon status/account id, at:// URI")
    cid: StrictStr | None = None
    url: StrictStr | None = None


DeliveryStatus = Literal["pending", "delivered", "failed"]
WebhookFormat = Literal["json", "slack"]


class WebhookDelivery(BaseModel):
    """webhook-delivery/1: the state of one alert's delivery to one webhook (webhooks.deliveries, key = `id`)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_: Literal["webhook-delivery/1"] = Field("webhook-delivery/1", alias="schema")
    id: StrictStr = Field(description="`<alert id>|<webhook id>`")
    alert_id: StrictStr
    brand: StrictStr
    kind: StrictStr
    webhook: StrictStr = Field(description="webhook id (a digest of format and URL)")
    target: StrictStr = Field(description="scheme and host of the URL (the path may be a secret)")
    format: WebhookFormat
    status: DeliveryStatus
    attempts: int = Field(0, ge=0)
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: UtcDatetime | None = Field(None, description="when the next attempt is due; null once final")
    alert_created_at: UtcDatetime
    updated_at: UtcDatetime
    delivered_at: UtcDatetime | None = None
    partition: int = Field(0, ge=0, description="partition of the alert on the alerts topic (who retries it)")
    alert: Alert | None = Field(None, description="kept while pending, to retry after a restart")


MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    "mention.v1": Mention,
    "scored-mention.v1": ScoredMention,
    "kpi-partial.v1": KpiPartial,
    "kpi.v1": Kpi,
    "alert.v1": Alert,
    "account-metric.v1": AccountMetric,
    "alert-ack.v1": AlertAck,
    "mention-handled.v1": MentionHandled,
    "webhook-delivery.v1": WebhookDelivery,
    "outreach.v1": Outreach,
    "content-item.v1": ContentItem,
}
