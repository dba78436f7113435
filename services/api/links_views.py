"""Inbound links and web audience views of the API, for `/love` and the live page.

Inbound links (from mentions.scored): every scored mention of a brand with `owned_domains` goes through
schemas.links.inbound_links; a mention with links to an owned domain is kept as a link sighting (its time is its
`published_at`) for 8 days. Each mention id counts once per brand, whatever the replays. For the last 24 h and
7 days: links (distinct URLs per mention, summed), mentions with links, linking sites (the mention's `site`, else
its URL's host) and authors (id, else handle), each split into new and seen. A linking site (author) is **new** in
a window when its first link Écoute has seen falls in that window: first sightings are remembered longer than the
sightings themselves (100,000 per brand), but only as far back as the views go (the topic's retention, or the
history store's warm start).

Web audience (from metrics.accounts, platform `web`): the web analytics connectors send one reading per
metric and day, `at` = 00:00 UTC of the day, its value the day's total so far (visits, visitors, pageviews,
conversions, `social_visits` and `social_visits:<network>`) or average (visit_duration in seconds, bounce_rate and
conversion_rate in percent). `web_audience` lays the last 7 UTC days side by side with the brand's mentions of
each day, so a spike of mentions can be seen turning into social-referred traffic.

Pure state, like insights_views.py: neither FastAPI nor aiokafka is imported here.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from pydantic import BaseModel, ConfigDict, Field

from schemas import ScoredMention, load, utc_now
from schemas.links import inbound_links, linking_site

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
LINK_RETENTION = timedelta(days=8)
FIRST_SEEN_KEPT = 100_000
SIGHTINGS_PER_BRAND = 100_000
TOP = 10
RECENT = 10

WEB_PLATFORM = "web"
SOCIAL_PREFIX = "social_visits:"
# Daily totals (summed over days) and daily averages (weighted by each day's visits over days).
WEB_TOTALS = ("visits", "visitors", "pageviews", "conversions", "social_visits")
WEB_AVERAGES = ("visit_duration", "bounce_rate")
WEB_DAYS = 7


# -- answers ---------------------------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class LinkWindow(_Answer):
    start: datetime
    end: datetime
    links: int = Field(0, description="links to owned domains (distinct URLs of each mention, summed)")
    mentions: int = Field(0, description="mentions with at least one such link")
    linking_sites: int = 0
    new_linking_sites: int = Field(0, description="sites whose first link seen falls in the window")
    authors: int = 0
    new_authors: int = Field(0, description="authors whose first link seen falls in the window")


class DomainLinks(_Answer):
    domain: str
    links_24h: int = 0
    links_7d: int = 0


class LinkingSite(_Answer):
    site: str
    links: int = Field(description="in the last 7 days")
    mentions: int
    first_seen: datetime = Field(description="its first link Écoute has seen")
    new: bool = Field(description="first_seen in the last 7 days")


class LinkingAuthor(_Answer):
    key: str = Field(description="author id, else handle")
    handle: str | None = None
    name: str | None = None
    url: str | None = None
    links: int
    mentions: int
    first_seen: datetime
    new: bool


class RecentLink(_Answer):
    mention_id: str
    mention_url: str | None = None
    site: str
    author: str | None = None
    at: datetime
    links: list[str]


class InboundLinks(_Answer):
    owned_domains: list[str]
    last_24h: LinkWindow
    last_7d: LinkWindow
    domains: list[DomainLinks] = Field(description="every owned domain, with its links")
    top_sites: list[LinkingSite] = Field(description="linking sites of the last 7 days, most links first")
    top_authors: list[LinkingAuthor] = Field(description="linking authors of the last 7 days, most links first")
    recent: list[RecentLink] = Field(description="the newest mentions with inbound links")


class WebDay(_Answer):
    date: date
    mentions: int = Field(0, description="the brand's mentions that day (UTC)")
    visits: float | None = None
    visitors: float | None = None
    pageviews: float | None = None
    visit_duration: float | None = Field(None, description="average seconds per visit")
    bounce_rate: float | None = Field(None, description="percent of visits")
    conversions: float | None = None
    conversion_rate: float | None = Field(None, description="percent of visits")
    social_visits: float | None = Field(None, description="visits referred by social networks")
    social: dict[str, float] = Field(default_factory=dict, description="social-referred visits per network")
    social_visits_per_mention: float | None = None


class WebTotals(_Answer):
    start: date
    end: date = Field(description="last day (inclusive)")
    mentions: int
    visits: float | None = None
    visitors: float | None = Field(None, description="sum of the daily unique visitors")
    pageviews: float | None = None
    visit_duration: float | None = Field(None, description="average over the days, weighted by visits")
    bounce_rate: float | None = Field(None, description="average over the days, weighted by visits")
    conversions: float | None = None
    conversion_rate: float | None = Field(None, description="conversions / visits × 100")
    social_visits: float | None = None
    social: dict[str, float] = Field(default_factory=dict)
    social_visits_per_mention: float | None = Field(None, description="social_visits / mentions")


class WebAudience(_Answer):
    days: list[WebDay] = Field(description="the last 7 UTC days, oldest first, today (so far) last")
    last_7d: WebTotals


# -- inbound links ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sighting:
    at: datetime
    mention_id: str
    mention_url: str | None
    site: str
    author_key: str | None
    author_handle: str | None
    author_name: str | None
    author_url: str | None
    urls: tuple[str, ...]
    domains: tuple[str, ...]  # the owned domain of each URL, same order


@dataclass(slots=True)
class _BrandLinks:
    ids: dict[str, datetime] = field(default_factory=dict)  # ids of the mentions with links → their time
    sightings: list[_Sighting] = field(default_factory=list)
    first_site: dict[str, datetime] = field(default_factory=dict)
    first_author: dict[str, datetime] = field(default_factory=dict)


def _remember_first(first: dict[str, datetime], key: str, at: datetime) -> None:
    known = first.get(key)
    if known is None or at < known:
        first[key] = at
        if len(first) > FIRST_SEEN_KEPT:  # the oldest first sightings go first
            for old, _ in heapq.nsmallest(len(first) - FIRST_SEEN_KEPT, first.items(), key=lambda kv: kv[1]):
                del first[old]


class LinkViews:
    """Inbound links of the brands with owned domains, rebuilt from mentions.scored at every start."""

    def __init__(
        self,
        owned_domains: Mapping[str, Sequence[str]],
        *,
        clock: Callable[[], datetime] = utc_now,
        retention: timedelta = LINK_RETENTION,
    ) -> None:
        self.owned = {brand: list(domains) for brand, domains in owned_domains.items() if domains}
        self.clock = clock
        self.retention = retention
        self._brands: dict[str, _BrandLinks] = {}

    def owned_domains(self, brand: str) -> list[str]:
        return self.owned.get(brand, [])

    def apply_scored(self, mention: ScoredMention, now: datetime | None = None) -> bool:
        """Count a mention's inbound links once; False if it was counted already, too old, or has none."""
        owned = self.owned.get(mention.brand)
        if not owned:
            return False
        now = now or self.clock()
        if mention.published_at < now - self.retention:
            return False
        state = self._brands.setdefault(mention.brand, _BrandLinks())
        if mention.id in state.ids:
            return False
        links = inbound_links(mention, owned)
        if not links:
            return False  # only mentions with links are remembered: the others cost nothing
        state.ids[mention.id] = mention.published_at
        author = mention.author
        author_key = author.id or author.handle
        sighting = _Sighting(
            at=mention.published_at,
            mention_id=mention.id,
            mention_url=mention.url,
            site=linking_site(mention),
            author_key=author_key,
            author_handle=author.handle,
            author_name=author.name,
            author_url=author.url,
            urls=tuple(link.url for link in links),
            domains=tuple(link.domain for link in links),
        )
        state.sightings.append(sighting)
        _remember_first(state.first_site, sighting.site, sighting.at)
        if author_key:
            _remember_first(state.first_author, author_key, sighting.at)
        if len(state.sightings) > SIGHTINGS_PER_BRAND:
            state.sightings.sort(key=lambda s: s.at)
            for old in state.sightings[: len(state.sightings) - SIGHTINGS_PER_BRAND]:
                state.ids.pop(old.mention_id, None)
            del state.sightings[: len(state.sightings) - SIGHTINGS_PER_BRAND]
        return True

    def apply_record(self, topic: str, key: bytes | None, value: bytes | None, now: datetime | None = None) -> bool:
        if value is None:
            return False
        return self.apply_scored(load(ScoredMention, value), now)

    def evict(self, now: datetime | None = None) -> int:
        """Drop sightings older than the retention (first sightings stay); returns how many went."""
        cutoff = (now or self.clock()) - self.retention
        dropped = 0
        for state in self._brands.values():
            kept = [s for s in state.sightings if s.at >= cutoff]
            dropped += len(state.sightings) - len(kept)
            if len(kept) != len(state.sightings):
                for old in state.sightings:
                    if old.at < cutoff:
                        state.ids.pop(old.mention_id, None)
                state.sightings = kept
        return dropped

    def sizes(self) -> dict[str, int]:
        return {
            "link_sightings": sum(len(s.sightings) for s in self._brands.values()),
            "link_first_seen": sum(len(s.first_site) + len(s.first_author) for s in self._brands.values()),
        }

    def summary(self, brand: str, now: datetime | None = None) -> InboundLinks | None:
        """The brand's inbound links; None when it has no owned domain configured."""
        owned = self.owned.get(brand)
        if not owned:
            return None
        now = now or self.clock()
        state = self._brands.get(brand) or _BrandLinks()
        day_start, week_start = now - DAY, now - WEEK
        day = [s for s in state.sightings if day_start <= s.at <= now]
        week = [s for s in state.sightings if week_start <= s.at <= now]

        def window(sightings: list[_Sighting], start: datetime) -> LinkWindow:
            sites = {s.site for s in sightings}
            authors = {s.author_key for s in sightings if s.author_key}
            return LinkWindow(
                start=start,
                end=now,
                links=sum(len(s.urls) for s in sightings),
                mentions=len(sightings),
                linking_sites=len(sites),
                new_linking_sites=sum(1 for site in sites if state.first_site.get(site, start) >= start),
                authors=len(authors),
                new_authors=sum(1 for a in authors if state.first_author.get(a, start) >= start),
            )

        per_domain: dict[str, list[int]] = {domain: [0, 0] for domain in owned}
        for s in week:
            for domain in s.domains:
                per_domain.setdefault(domain, [0, 0])[1] += 1
                if s.at >= day_start:
                    per_domain[domain][0] += 1

        site_links: dict[str, list[int]] = {}
        author_links: dict[str, list[int]] = {}
        author_identity: dict[str, _Sighting] = {}
        for s in week:
            counts = site_links.setdefault(s.site, [0, 0])
            counts[0] += len(s.urls)
            counts[1] += 1
            if s.author_key:
                counts = author_links.setdefault(s.author_key, [0, 0])
                counts[0] += len(s.urls)
                counts[1] += 1
                latest = author_identity.get(s.author_key)
                if latest is None or s.at >= latest.at:
                    author_identity[s.author_key] = s

        top_sites = heapq.nsmallest(TOP, site_links.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
        top_authors = heapq.nsmallest(TOP, author_links.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
        newest = heapq.nlargest(RECENT, week, key=lambda s: (s.at, s.mention_id))
        return InboundLinks(
            owned_domains=list(owned),
            last_24h=window(day, day_start),
            last_7d=window(week, week_start),
            domains=[DomainLinks(domain=d, links_24h=c[0], links_7d=c[1]) for d, c in per_domain.items()],
            top_sites=[
                LinkingSite(
                    site=site,
                    links=c[0],
                    mentions=c[1],
                    first_seen=state.first_site[site],
                    new=state.first_site[site] >= week_start,
                )
                for site, c in top_sites
            ],
            top_authors=[
                LinkingAuthor(
                    key=key,
                    handle=author_identity[key].author_handle,
                    name=author_identity[key].author_name,
                    url=author_identity[key].author_url,
                    links=c[0],
                    mentions=c[1],
                    first_seen=state.first_author[key],
                    new=state.first_author[key] >= week_start,
                )
                for key, c in top_authors
            ],
            recent=[
                RecentLink(
                    mention_id=s.mention_id,
                    mention_url=s.mention_url,
                    site=s.site,
                    author=s.author_handle or s.author_key,
                    at=s.at,
                    links=list(s.urls),
                )
                for s in newest
            ],
        )


# -- web audience ----------------------------------------------------------------------------------


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def web_audience(
    readings: Mapping[tuple[str, str], Sequence[tuple[datetime, float]]],
    mentions_per_day: Mapping[date, int],
    now: datetime,
) -> WebAudience | None:
    """The last 7 UTC days of the brand's web readings (platform `web`) beside its mentions; None without any.

    `readings`: (platform, metric) → (at, value) sorted by time, as the insight views keep them; a day's
    value is the last reading taken within that UTC day."""
    web = {metric: history for (platform, metric), history in readings.items() if platform == WEB_PLATFORM}
    if not web:
        return None
    today = now.astimezone(UTC).date()
    dates = [today - timedelta(days=n) for n in range(WEB_DAYS - 1, -1, -1)]
    by_day: dict[date, dict[str, float]] = {d: {} for d in dates}
    for metric, history in web.items():
        for at, value in history:
            values = by_day.get(at.astimezone(UTC).date())
            if values is not None:
                values[metric] = value  # sorted by time: the last reading of the day wins
    days = []
    for d in dates:
        values = by_day[d]
        mentions = mentions_per_day.get(d, 0)
        social = {m.removeprefix(SOCIAL_PREFIX): v for m, v in sorted(values.items()) if m.startswith(SOCIAL_PREFIX)}
        social_visits = values.get("social_visits", sum(social.values()) if social else None)
        days.append(
            WebDay(
                date=d,
                mentions=mentions,
                visits=values.get("visits"),
                visitors=values.get("visitors"),
                pageviews=values.get("pageviews"),
                visit_duration=values.get("visit_duration"),
                bounce_rate=values.get("bounce_rate"),
                conversions=values.get("conversions"),
                conversion_rate=values.get("conversion_rate"),
                social_visits=social_visits,
                social=social,
                social_visits_per_mention=(
                    round(social_visits / mentions, 4) if social_visits is not None and mentions else None
                ),
            )
        )

    def total(name: str) -> float | None:
        present = [getattr(d, name) for d in days if getattr(d, name) is not None]
        return sum(present) if present else None

    def weighted(name: str) -> float | None:
        pairs = [(getattr(d, name), d.visits) for d in days if getattr(d, name) is not None and d.visits]
        weight = sum(v for _, v in pairs)
        return round(sum(x * v for x, v in pairs) / weight, 4) if weight else None

    visits, conversions, social_visits = total("visits"), total("conversions"), total("social_visits")
    mentions = sum(d.mentions for d in days)
    networks: dict[str, float] = {}
    for web_day in days:
        for network, value in web_day.social.items():
            networks[network] = networks.get(network, 0.0) + value
    return WebAudience(
        days=days,
        last_7d=WebTotals(
            start=dates[0],
            end=dates[-1],
            mentions=mentions,
            visits=visits,
            visitors=total("visitors"),
            pageviews=total("pageviews"),
            visit_duration=weighted("visit_duration"),
            bounce_rate=weighted("bounce_rate"),
            conversions=conversions,
            conversion_rate=round(conversions / visits * 100, 4) if conversions is not None and visits else None,
            social_visits=social_visits,
            social=dict(sorted(networks.items(), key=lambda kv: (-kv[1], kv[0]))),
            social_visits_per_mention=(
                round(social_visits / mentions, 4) if social_visits is not None and mentions else None
            ),
        ),
    )


__all__ = [
    "DomainLinks",
    "InboundLinks",
    "LinkViews",
    "LinkWindow",
    "LinkingAuthor",
    "LinkingSite",
    "RecentLink",
    "WebAudience",
    "WebDay",
    "WebTotals",
    "day_start",
    "web_audience",
]
