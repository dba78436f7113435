"""Inbound links and social-referred visits, from a known input through the whole stack to /love and the live page.

Ingest (with a matomo source for acme and a plausible source for globex, both local servers speaking those APIs),
the analyzer and the API run as processes on the real Kafka; mentions with links are posted over HTTP (one of them
twice). `/love` must count the links exactly (per window, domain, linking site and author, new or seen) and show
the web audience of each day beside that day's mentions; the live page in headless Chromium shows the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import API_KEY, Stack, running_stack
from tests.e2e.test_live_page import ARTIFACTS, api_get
from tests.e2e.test_live_page import browser as browser  # the live page's fixture: Debian's Chromium
from tests.helpers import wait_until
from tests.ingest.connectors.analytics import AnalyticsServer, SiteDay

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOKEN = "matomo-e2e-token-4f1c"
KEY = "plausible-e2e-key-77aa"
NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.date()
YESTERDAY = TODAY - timedelta(days=1)


def config(matomo: AnalyticsServer, plausible: AnalyticsServer) -> str:
    return f"""
api_keys:
  - {{key: {API_KEY}, role: admin, brands: ["*"]}}
brands:
  acme:
    query: [acme]
    competitors: [globex]
    owned_domains: [acme.com, blog.acme.com]
  globex:
    query: [globex]
    owned_domains: ["https://www.globex.com/"]
sources:
  - {{type: matomo, url: "{matomo.url}", site_id: 3, token: {TOKEN}, brand: acme, days: 3, interval: 3600}}
  - {{type: plausible, url: "{plausible.url}", site_id: globex.com, key: {KEY}, brand: globex, days: 3, interval: 3600}}
fetch:
  allow_networks: ["127.0.0.0/8"]
"""


def mention(mention_id: str, ago: timedelta, text: str, site: str, author: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "id": mention_id,
        "text": text,
        "site": site,
        "url": f"https://{site}/{mention_id}",
        "published_at": (NOW - ago).isoformat(),
        "author": {"id": author, "handle": author} if author else {},
        **extra,
    }


MENTIONS = [
    mention("l1", timedelta(days=3), "A review of acme: https://acme.com/phone", "techblog.example", "ann"),
    mention(
        "l2",
        timedelta(hours=2),
        "acme update https://acme.com/phone and https://blog.acme.com/launch (again https://acme.com/phone)",
        "techblog.example",
        "ann",
    ),
    mention(
        "l3", timedelta(hours=1), "the acme shop is open", "mastodon.social", "bob", links=["https://shop.acme.com/x"]
    ),
    mention("l4", timedelta(minutes=30), "acme is here: www.acme.com/about.", "news.example", "cat"),
    mention("l5", timedelta(minutes=10), "our acme post https://acme.com/x", "acme.com", "acme"),  # the brand's own
    mention("l6", timedelta(minutes=5), "acme rumours https://example.org/acme", "forum.example", "dan"),
    mention("g1", timedelta(minutes=20), "globex docs https://docs.globex.com/start", "reddit.com/r/phones", "eve"),
]


def site_days() -> tuple[dict[str, SiteDay], dict[str, SiteDay]]:
    matomo = {
        YESTERDAY.isoformat(): SiteDay(
            120, 100, 300, 95, 40, 6, socials={"Mastodon": 30, "Bluesky": 12, "Facebook": 3}
        ),
        TODAY.isoformat(): SiteDay(50, 45, 80, 60, 55, 1, socials={"Mastodon": 20}),
    }
    plausible = {
        TODAY.isoformat(): SiteDay(
            70, 60, 150, 42, 38, 3, sources={"Bluesky": 7, "Google": 40, "Twitter": 5}, goals={"Signup": 3}
        ),
    }
    return matomo, plausible


@pytest.fixture
def servers() -> Iterator[tuple[AnalyticsServer, AnalyticsServer]]:
    matomo_days, plausible_days = site_days()
    with (
        AnalyticsServer("matomo", matomo_days, TOKEN, "3") as matomo,
        AnalyticsServer("plausible", plausible_days, KEY, "globex.com") as plausible,
    ):
        yield matomo, plausible


@pytest.fixture
def love_stack(
    bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    servers: tuple[AnalyticsServer, AnalyticsServer],
    database_url: str,
) -> Iterator[Stack]:
    with running_stack(bootstrap, topic_prefix, tmp_path, config(*servers), database_url) as running:
        yield running


def per_day(brand_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in MENTIONS:
        if m["id"] in brand_ids:
            day = m["published_at"][:10]
            counts[day] = counts.get(day, 0) + 1
    return counts


def test_inbound_links_and_social_visits_counted_exactly_and_shown_on_the_live_page(
    browser: Browser, love_stack: Stack, servers: tuple[AnalyticsServer, AnalyticsServer]
) -> None:
    stack = love_stack
    stack.post_mentions(MENTIONS)
    stack.post_mentions([MENTIONS[1]])  # the same mention again: counted once

    def acme_love() -> dict[str, Any] | None:
        love: dict[str, Any] = api_get(stack, "/v1/brands/acme/love")
        links, web = love["inbound_links"], love["web"]
        ready = links and links["last_7d"]["mentions"] == 4 and web and web["days"][-1]["social_visits"] == 20
        return love if ready and sum(d["mentions"] for d in web["days"]) == 6 else None

    love = wait_until(acme_love, timeout=60, what="acme's links, web readings and mentions in /love")
    links = love["inbound_links"]
    assert links["owned_domains"] == ["acme.com", "blog.acme.com"]
    window = {k: v for k, v in links["last_24h"].items() if k not in ("start", "end")}
    assert window == {
        "links": 4,
        "mentions": 3,
        "linking_sites": 3,
        "new_linking_sites": 2,  # techblog.example first linked 3 days ago
        "authors": 3,
        "new_authors": 2,
    }
    window = {k: v for k, v in links["last_7d"].items() if k not in ("start", "end")}
    assert window == {
        "links": 5,
        "mentions": 4,
        "linking_sites": 3,
        "new_linking_sites": 3,
        "authors": 3,
        "new_authors": 3,
    }
    assert links["domains"] == [
        {"domain": "acme.com", "links_24h": 3, "links_7d": 4},
        {"domain": "blog.acme.com", "links_24h": 1, "links_7d": 1},
    ]
    assert [(s["site"], s["links"], s["mentions"], s["new"]) for s in links["top_sites"]] == [
        ("techblog.example", 3, 2, True),
        ("mastodon.social", 1, 1, True),
        ("news.example", 1, 1, True),
    ]
    assert [(a["key"], a["links"]) for a in links["top_authors"]] == [("ann", 3), ("bob", 1), ("cat", 1)]
    assert [r["mention_id"] for r in links["recent"]] == ["l4", "l3", "l2", "l1"]

    web = love["web"]
    days = {d["date"]: d for d in web["days"]}
    mentions_by_day = per_day(["l1", "l2", "l3", "l4", "l5", "l6"])
    assert {d: days[d]["mentions"] for d in days if days[d]["mentions"]} == mentions_by_day
    today, yesterday = days[TODAY.isoformat()], days[YESTERDAY.isoformat()]
    assert (today["visits"], today["social_visits"], today["social"]) == (50, 20, {"mastodon": 20})
    assert (yesterday["visits"], yesterday["social_visits"]) == (120, 45)
    assert yesterday["social"] == {"bluesky": 12, "facebook": 3, "mastodon": 30}
    assert (today["conversions"], today["bounce_rate"], today["visit_duration"]) == (1, 55, 60)
    week = web["last_7d"]
    assert (week["visits"], week["social_visits"], week["mentions"]) == (170, 65, 6)
    assert week["social"] == {"mastodon": 50, "bluesky": 12, "facebook": 3}
    assert week["social_visits_per_mention"] == round(65 / 6, 4)
    assert love["components"]["inbound_links"] == round(math.log10(1 + 3) / 2, 4)
    assert love["components"]["social_traffic"] == round(math.log10(1 + round(65 / 6, 4)) / 2, 4)

    def globex_love() -> dict[str, Any] | None:
        love: dict[str, Any] = api_get(stack, "/v1/brands/globex/love")
        web = love["web"]
        return love if love["inbound_links"]["last_24h"]["links"] == 1 and web and web["days"][-1]["visits"] else None

    globex = wait_until(globex_love, timeout=30, what="globex's links and Plausible readings")
    assert globex["inbound_links"]["domains"] == [{"domain": "globex.com", "links_24h": 1, "links_7d": 1}]
    g_today = globex["web"]["days"][-1]
    assert (g_today["visits"], g_today["social_visits"], g_today["social"]) == (70, 12, {"bluesky": 7, "twitter": 5})
    assert (g_today["conversions"], g_today["conversion_rate"]) == (3, 5.0)

    matomo, plausible = servers
    assert matomo.errors == [] and plausible.errors == []
    assert all(r.form.get("token_auth") == TOKEN for r in matomo.requests)
    assert {r.headers.get("authorization") for r in plausible.requests} == {f"Bearer {KEY}"}

    # The live page shows the same figures for acme, then for globex.
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(f"{stack.api_url}/#key={API_KEY}")
    page.locator("body[data-ready=true]").wait_for(timeout=10_000)
    page.locator('#links-24h:text-is("4")').wait_for(timeout=10_000)
    assert page.locator("#links-7d").inner_text() == "5"
    assert page.locator("#new-sites-7d").inner_text() == "3"
    assert page.locator("#links-domains").inner_text() == "to acme.com, blog.acme.com"
    sites = page.locator("#links-sites .link-site")
    assert sites.evaluate_all("items => items.map(i => i.dataset.site)") == [
        "techblog.example",
        "mastodon.social",
        "news.example",
    ]
    assert sites.first.locator(".badge-new").inner_text().lower() == "new"
    assert page.locator("#social-visits-7d").inner_text() == "65"
    row = page.locator(f'#web-days tr[data-day="{TODAY.isoformat()}"]')
    assert row.locator(".social-visits").inner_text() == "20"
    assert row.locator("td").first.inner_text() == str(mentions_by_day[TODAY.isoformat()])
    assert "mastodon 20" in row.inner_text()
    yesterday_row = page.locator(f'#web-days tr[data-day="{YESTERDAY.isoformat()}"]')
    assert yesterday_row.locator(".social-visits").inner_text() == "45"
    assert float(page.locator("#love-index").inner_text()) == love["love_index"]
    page.locator("#love").scroll_into_view_if_needed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#love").screenshot(path=str(ARTIFACTS / "live-page-love.png"))

    page.locator('.tile[data-brand="globex"]').click()
    page.locator('#links-domains:text-is("to globex.com")').wait_for(timeout=10_000)
    assert page.locator("#links-24h").inner_text() == "1"
    page.locator('#social-visits-7d:text-is("12")').wait_for(timeout=10_000)
    assert "bluesky 7, twitter 5" in page.locator(f'#web-days tr[data-day="{TODAY.isoformat()}"]').inner_text()

    # The history report (from the store) has the social-referred visits of each day beside its mentions.
    since, until = (TODAY - timedelta(days=3)).isoformat(), (TODAY + timedelta(days=1)).isoformat()

    def acme_report() -> dict[str, Any] | None:
        body: dict[str, Any] = api_get(stack, "/v1/brands/acme/report", since=since, until=until, bucket="day")
        last = body["buckets"][-1]
        return body if last["web"] and last["web"]["social_visits"] == 20 and last["mentions"] else None

    report = wait_until(acme_report, timeout=30, what="the store to hold the mentions and web readings")
    buckets = {b["start"][:10]: b for b in report["buckets"]}
    for day, social, visits in [(TODAY, 20, 50), (YESTERDAY, 45, 120)]:
        bucket = buckets[day.isoformat()]
        assert bucket["mentions"] == mentions_by_day.get(day.isoformat(), 0), day
        assert (bucket["web"]["social_visits"], bucket["web"]["visits"]) == (social, visits), day
    assert buckets[YESTERDAY.isoformat()]["web"]["social"] == {"bluesky": 12, "facebook": 3, "mastodon": 30}
    assert report["totals"]["web"]["social_visits"] == 65

    page.locator('.tile[data-brand="acme"]').click()
    page.fill("#history-since", since)
    page.fill("#history-until", TODAY.isoformat())
    page.select_option("#history-bucket", "day")
    page.click("#history-form button[type=submit]")
    today_row = page.locator(f'#history-rows tr[data-start="{TODAY.isoformat()}"]')
    today_row.locator('td[data-field="social_visits"]:text-is("20")').wait_for(timeout=10_000)
    assert today_row.locator('td[data-field="mentions"]').inner_text() == str(mentions_by_day[TODAY.isoformat()])
    yesterday_history = page.locator(f'#history-rows tr[data-start="{YESTERDAY.isoformat()}"]')
    assert yesterday_history.locator('td[data-field="social_visits"]').inner_text() == "45"
    assert page_errors == [], f"JavaScript errors on the page: {page_errors}"
