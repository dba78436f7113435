"""The brand's web audience from its self-hosted web analytics: `{type: matomo, …}` or `{type: plausible, …}`.

Each poll reads one figure per metric and UTC day — the days not read yet (the last `days` on the first poll),
yesterday again (its late visits) and today so far — and sends them to `metrics.accounts` as account-metric/1
readings of platform `web`, `at` = 00:00 UTC of the day (a day read again replaces its reading):

  visits, visitors, pageviews, conversions                    the day's totals
  visit_duration (seconds), bounce_rate, conversion_rate (%)  the day's averages, as the tool computes them
  social_visits, social_visits:<network>                      visits referred by social networks, in all and
                                                              per network (mastodon, bluesky, reddit, twitter…)

Matomo (Reporting API): `POST {url}/index.php?module=API&method=…&idSite=…&period=day&date=YYYY-MM-DD&format=JSON`
with `token_auth` as a POST field (never in the URL, so never in a log); methods VisitsSummary.get (nb_visits,
nb_uniq_visitors, avg_time_on_site, bounce_rate "42%"), Actions.get (nb_pageviews), Referrers.getSocials (rows of
`label`, `nb_visits`) and Goals.get (nb_conversions, conversion_rate "6.5%").

Plausible (Stats API v1): `GET {url}/api/v1/stats/aggregate?site_id=…&period=day&date=…&metrics=visitors,visits,
pageviews,visit_duration,bounce_rate` (`results.<metric>.value`), `/api/v1/stats/breakdown?property=visit:source`
(rows of `source`, `visits`; the social networks among them) and `?property=event:goal&metrics=visitors,events`
(conversions: the visitors who completed each goal, summed; conversion rate: those over the day's visitors),
with `Authorization: Bearer <key>`.

Requests go through the fetch guard (`fetch.allow_networks` for a server on a private network); failed attempts
(timeouts, 429, 5xx) are retried with backoff, and a failed poll makes the source back off like any other.
Site days are the tool's (the site's time zone): set the site to UTC for days that line up with Écoute's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, ClassVar

import httpx
from pydantic import Field, HttpUrl, SecretStr

from schemas import EcouteConfig
from schemas.config import Seconds
from services.ingest.connectors.base import Batch, ContentRefused, SourceOptions, derived_id
from services.ingest.connectors.checkpoints import Cursor
from services.ingest.connectors.fetch import (
    FetchConnectError,
    FetchedResponse,
    FetchTimeout,
    HTTPStatusError,
    SafeFetcher,
)
from services.ingest.connectors.streams import GuardedHTTP, json_body

logger = logging.getLogger(__name__)

PLATFORM = "web"
SOCIAL_PREFIX = "social_visits:"
BRAND_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"

# Social networks by the names the tools give their referrers (lowercased); anything else is not social.
SOCIAL_NETWORKS: dict[str, str] = {
    "facebook": "facebook",
    "fb": "facebook",
    "instagram": "instagram",
    "twitter": "twitter",
    "x": "twitter",
    "t.co": "twitter",
    "linkedin": "linkedin",
    "reddit": "reddit",
    "mastodon": "mastodon",
    "bluesky": "bluesky",
    "bsky": "bluesky",
    "bsky.app": "bluesky",
    "threads": "threads",
    "youtube": "youtube",
    "pinterest": "pinterest",
    "tiktok": "tiktok",
    "tumblr": "tumblr",
    "hacker news": "hackernews",
    "news.ycombinator.com": "hackernews",
    "vkontakte": "vk",
    "vk": "vk",
    "telegram": "telegram",
    "whatsapp": "whatsapp",
    "discord": "discord",
    "xing": "xing",
    "lemmy": "lemmy",
}
_SLUG = re.compile(r"[^a-z0-9]+")


def network_of(label: str, *, social_only: bool) -> str | None:
    """'Facebook' → 'facebook', 'Hacker News' → 'hackernews', 'mastodon.social' → 'mastodon'; for a source that
    is no known network, its slug (`social_only=False`: Matomo's getSocials lists only social networks) or None."""
    name = label.strip().lower()
    for prefix in ("www.", "m.", "l.", "lm."):
        name = name.removeprefix(prefix)
    if name in SOCIAL_NETWORKS:
        return SOCIAL_NETWORKS[name]
    base = name.split(".")[0] if "." in name else name
    if base in SOCIAL_NETWORKS and base not in ("x", "t"):
        return SOCIAL_NETWORKS[base]
    if "mastodon" in name:
        return "mastodon"
    if social_only:
        return None
    slug = _SLUG.sub("-", name).strip("-")
    return slug[:100] or None


def _number(value: Any, what: str) -> float:
    """A JSON number, or a percentage string ("42%", "42.5 %"), as a float; ContentRefused otherwise."""
    if isinstance(value, bool):
        raise ContentRefused("malformed", f"{what}: {value!r} is not a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().rstrip("%").strip())
        except ValueError:
            pass
    raise ContentRefused("malformed", f"{what}: {value!r} is not a number")


class WebAnalyticsOptions(SourceOptions):
    brand: str = Field(min_length=1, max_length=64, pattern=BRAND_PATTERN)
    url: HttpUrl
    interval: Seconds = 3600.0
    days: int = Field(7, ge=1, le=92, description="days read on the first poll")
    goals: bool = True


class MatomoOptions(WebAnalyticsOptions):
    type: str = "matomo"
    site_id: int = Field(ge=1)
    token: SecretStr


class PlausibleOptions(WebAnalyticsOptions):
    type: str = "plausible"
    site_id: str = Field(min_length=1, max_length=253)
    key: SecretStr


DayFigures = dict[str, float]


class _WebAnalytics:
    """What both tools share: which days to read, the cursor, and readings out of a day's figures."""

    type: ClassVar[str]
    options: WebAnalyticsOptions

    def __init__(self, options: WebAnalyticsOptions, site: str, clock: Any = None) -> None:
        self.options = options
        self.base = str(options.url).rstrip("/")
        self.source_id = options.id or derived_id(self.type, self.base, site, options.brand)
        self.interval = options.interval
        self.clock = clock or (lambda: datetime.now(UTC))

    def describe(self) -> str:
        return f"{self.type} {self.base} site {self.site} for {self.options.brand}"

    @property
    def site(self) -> str:
        raise NotImplementedError

    def days_to_read(self, cursor: Cursor | None, today: date) -> list[date]:
        """Every day after the last one read to the end (at most `days`), yesterday again, and today."""
        first = today - timedelta(days=self.options.days - 1)
        done = (cursor or {}).get("done")
        if isinstance(done, str):
            with contextlib.suppress(ValueError):
                first = max(first, min(date.fromisoformat(done) + timedelta(days=1), today - timedelta(days=1)))
        return [first + timedelta(days=n) for n in range((today - first).days + 1)]

    def readings(self, day: date, figures: DayFigures) -> list[dict[str, Any]]:
        at = datetime.combine(day, time(), tzinfo=UTC)
        return [
            {"brand": self.options.brand, "platform": PLATFORM, "metric": metric, "value": value, "at": at}
            for metric, value in figures.items()
        ]

    async def read_day(self, day: date, fetcher: SafeFetcher) -> DayFigures:
        raise NotImplementedError

    async def poll(self, cursor: Cursor | None, fetcher: SafeFetcher) -> AsyncIterator[Batch]:
        today = self.clock().astimezone(UTC).date()
        done = (cursor or {}).get("done")
        for day in self.days_to_read(cursor, today):
            figures = await self.read_day(day, fetcher)
            if day < today:
                done = day.isoformat() if not isinstance(done, str) or done < day.isoformat() else done
            yield Batch(
                [],
                {"done": done} if done else {},
                fetched=1,
                save=bool(done),
                account_metrics=self.readings(day, figures),
            )


def _social_figures(visits_by_network: Mapping[str, float]) -> DayFigures:
    figures: DayFigures = {"social_visits": float(sum(visits_by_network.values()))}
    for network, visits in sorted(visits_by_network.items()):
        figures[SOCIAL_PREFIX + network] = visits
    return figures


class MatomoConnector(_WebAnalytics):
    type: ClassVar[str] = "matomo"
    options: MatomoOptions

    @property
    def site(self) -> str:
        return str(self.options.site_id)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], config: EcouteConfig | None = None) -> MatomoConnector:
        options = MatomoOptions.model_validate(dict(raw))
        _check_brand(options.brand, config)
        return cls(options, str(options.site_id))

    async def call(self, method: str, day: date, fetcher: SafeFetcher) -> Any:
        """One Reporting API method for one day; the token goes as a POST field."""
        params = {
            "module": "API",
            "method": method,
            "idSite": str(self.options.site_id),
            "period": "day",
            "date": day.isoformat(),
            "format": "JSON",
        }
        url = str(httpx.URL(f"{self.base}/index.php", params=params))
        form = {"token_auth": self.options.token.get_secret_value()}
        attempt = 0
        async with GuardedHTTP(fetcher) as http:
            while True:
                attempt += 1
                try:
                    response = await http.post_form(url, form)
                    break
                except (FetchTimeout, FetchConnectError, HTTPStatusError) as exc:
                    retryable = not isinstance(exc, HTTPStatusError) or exc.status == 429 or exc.status >= 500
                    if not retryable or attempt >= fetcher.policy.max_attempts:
                        raise
                    delay = fetcher.backoff(attempt)
                    logger.info("%s: %s failed (%s); retrying in %.2fs", self.describe(), method, exc, delay)
                    await asyncio.sleep(delay)
        data = json_body(response)
        if isinstance(data, dict) and data.get("result") == "error":
            raise ContentRefused("refused", f"Matomo {method}: {str(data.get('message'))[:300]}")
        return data

    async def read_day(self, day: date, fetcher: SafeFetcher) -> DayFigures:
        summary = _matomo_row(await self.call("VisitsSummary.get", day, fetcher), "VisitsSummary.get")
        actions = _matomo_row(await self.call("Actions.get", day, fetcher), "Actions.get")
        socials = await self.call("Referrers.getSocials", day, fetcher)
        if not isinstance(socials, list):
            raise ContentRefused("malformed", f"Matomo Referrers.getSocials: expected a list of rows, not {socials!r}")
        figures: DayFigures = {
            "visits": _number(summary.get("nb_visits", 0), "nb_visits"),
            "visitors": _number(summary.get("nb_uniq_visitors", 0), "nb_uniq_visitors"),
            "pageviews": _number(actions.get("nb_pageviews", 0), "nb_pageviews"),
            "visit_duration": _number(summary.get("avg_time_on_site", 0), "avg_time_on_site"),
            "bounce_rate": _number(summary.get("bounce_rate", 0), "bounce_rate"),
        }
        if self.options.goals:
            goals = _matomo_row(await self.call("Goals.get", day, fetcher), "Goals.get")
            figures["conversions"] = _number(goals.get("nb_conversions", 0), "nb_conversions")
            figures["conversion_rate"] = _number(goals.get("conversion_rate", 0), "conversion_rate")
        by_network: dict[str, float] = {}
        for row in socials:
            if not isinstance(row, dict) or not isinstance(row.get("label"), str):
                raise ContentRefused("malformed", f"Matomo Referrers.getSocials: a row without a label: {row!r}")
            network = network_of(row["label"], social_only=False)
            if network:
                by_network[network] = by_network.get(network, 0.0) + _number(row.get("nb_visits", 0), "nb_visits")
        return {**figures, **_social_figures(by_network)}


def _matomo_row(data: Any, method: str) -> dict[str, Any]:
    """A Matomo report of one day: an object (an empty list when the day has no data)."""
    if data == []:
        return {}
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        return data[0]
    if not isinstance(data, dict):
        raise ContentRefused("malformed", f"Matomo {method}: expected an object, not {str(data)[:200]}")
    return data


class PlausibleConnector(_WebAnalytics):
    type: ClassVar[str] = "plausible"
    options: PlausibleOptions

    @property
    def site(self) -> str:
        return self.options.site_id

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], config: EcouteConfig | None = None) -> PlausibleConnector:
        options = PlausibleOptions.model_validate(dict(raw))
        _check_brand(options.brand, config)
        return cls(options, options.site_id)

    async def get(self, path: str, params: dict[str, str], fetcher: SafeFetcher) -> Any:
        url = str(httpx.URL(f"{self.base}{path}", params={"site_id": self.options.site_id, **params}))
        headers = {"authorization": f"Bearer {self.options.key.get_secret_value()}", "accept": "application/json"}
        response: FetchedResponse = await fetcher.get(url, headers)
        data = json_body(response)
        if not isinstance(data, dict) or "results" not in data:
            raise ContentRefused("malformed", f"Plausible {path}: no results in {str(data)[:200]}")
        return data["results"]

    async def read_day(self, day: date, fetcher: SafeFetcher) -> DayFigures:
        when = {"period": "day", "date": day.isoformat()}
        totals = await self.get(
            "/api/v1/stats/aggregate",
            {**when, "metrics": "visitors,visits,pageviews,visit_duration,bounce_rate"},
            fetcher,
        )
        if not isinstance(totals, dict):
            raise ContentRefused("malformed", "Plausible aggregate: results is not an object")

        def value(metric: str) -> float:
            entry = totals.get(metric)
            raw = entry.get("value") if isinstance(entry, dict) else entry
            return 0.0 if raw is None else _number(raw, f"results.{metric}.value")

        figures: DayFigures = {
            name: value(name) for name in ("visits", "visitors", "pageviews", "visit_duration", "bounce_rate")
        }
        sources = await self.get(
            "/api/v1/stats/breakdown",
            {**when, "property": "visit:source", "metrics": "visits", "limit": "1000"},
            fetcher,
        )
        by_network: dict[str, float] = {}
        for row in _rows(sources, "visit:source"):
            if not isinstance(row.get("source"), str):
                continue
            network = network_of(row["source"], social_only=True)
            if network:
                by_network[network] = by_network.get(network, 0.0) + _number(row.get("visits", 0), "visits")
        if self.options.goals:
            goals = await self.get(
                "/api/v1/stats/breakdown", {**when, "property": "event:goal", "metrics": "visitors,events"}, fetcher
            )
            conversions = sum(_number(row.get("visitors", 0), "visitors") for row in _rows(goals, "event:goal"))
            figures["conversions"] = conversions
            visitors = figures["visitors"]
            figures["conversion_rate"] = round(conversions / visitors * 100, 2) if visitors else 0.0
        return {**figures, **_social_figures(by_network)}


def _rows(results: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(results, list) or not all(isinstance(row, dict) for row in results):
        raise ContentRefused("malformed", f"Plausible breakdown by {what}: results is not a list of objects")
    return results


def _check_brand(brand: str, config: EcouteConfig | None) -> None:
    if config is not None and config.brands and brand not in config.brands:
        logger.warning("web analytics source: brand %r is not among the configured brands", brand)


__all__ = [
    "SOCIAL_NETWORKS",
    "MatomoConnector",
    "MatomoOptions",
    "PlausibleConnector",
    "PlausibleOptions",
    "network_of",
]
