"""Web audience from Matomo and Plausible onto metrics.accounts, against local servers speaking their APIs."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from schemas import AccountMetric, Topics, load
from services.ingest import IngestSettings
from services.ingest.connectors import FetchPolicy, ForbiddenAddress, SafeFetcher, parse_networks
from services.ingest.connectors.webanalytics import MatomoConnector, PlausibleConnector, network_of
from tests.helpers import read_all
from tests.ingest.connectors.analytics import AnalyticsServer, SiteDay
from tests.ingest.connectors.conftest import LOOPBACK, eventually, listening, source_runner

TOKEN = "matomo-token-0123456789abcdef"
KEY = "plausible-key-very-secret"
TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)


def site_days() -> dict[str, SiteDay]:
    return {
        YESTERDAY.isoformat(): SiteDay(
            visits=120,
            visitors=100,
            pageviews=300,
            visit_duration=95,
            bounce_rate=40,
            conversions=6,
            socials={"Mastodon": 30, "Bluesky": 12, "Facebook": 3},
            sources={"Mastodon": 30, "Bluesky": 12, "Facebook": 3, "Google": 50, "Direct / None": 25},
            goals={"Signup": 4, "Newsletter": 2},
        ),
        TODAY.isoformat(): SiteDay(
            visits=50,
            visitors=45,
            pageviews=80,
            visit_duration=60,
            bounce_rate=55,
            conversions=1,
            socials={"Mastodon": 20},
            sources={"mastodon.social": 20, "DuckDuckGo": 9},
            goals={"Signup": 1},
        ),
    }


def expected(kind: str) -> dict[tuple[str, date], float]:
    """What metrics.accounts must hold per (metric, day) for the last 3 days (the first one has no data)."""
    first = TODAY - timedelta(days=2)
    zero = {"visits": 0, "visitors": 0, "pageviews": 0, "visit_duration": 0, "bounce_rate": 0, "social_visits": 0}
    zero |= {"conversions": 0, "conversion_rate": 0}
    out = {(metric, first): float(value) for metric, value in zero.items()}
    for day, figures in (
        (YESTERDAY, {"visits": 120, "visitors": 100, "pageviews": 300, "visit_duration": 95, "bounce_rate": 40}),
        (TODAY, {"visits": 50, "visitors": 45, "pageviews": 80, "visit_duration": 60, "bounce_rate": 55}),
    ):
        out |= {(metric, day): float(value) for metric, value in figures.items()}
    out |= {("conversions", YESTERDAY): 6.0, ("conversions", TODAY): 1.0}
    if kind == "matomo":  # Goals.get's rate: converted visits / visits
        out |= {("conversion_rate", YESTERDAY): 5.0, ("conversion_rate", TODAY): 2.0}
    else:  # converted visitors / visitors
        out |= {("conversion_rate", YESTERDAY): 6.0, ("conversion_rate", TODAY): round(1 / 45 * 100, 2)}
    out |= {
        ("social_visits", YESTERDAY): 45.0,
        ("social_visits:mastodon", YESTERDAY): 30.0,
        ("social_visits:bluesky", YESTERDAY): 12.0,
        ("social_visits:facebook", YESTERDAY): 3.0,
        ("social_visits", TODAY): 20.0,
        ("social_visits:mastodon", TODAY): 20.0,
    }
    return out


def source(kind: str, server: AnalyticsServer) -> dict[str, object]:
    secret = {"token": TOKEN, "site_id": 7} if kind == "matomo" else {"key": KEY, "site_id": "acme.com"}
    return {"type": kind, "url": server.url, "brand": "acme", "days": 3, "interval": 30, **secret}


def server_for(kind: str, secret: str | None = None) -> AnalyticsServer:
    right = TOKEN if kind == "matomo" else KEY
    return AnalyticsServer(kind, site_days(), secret or right, "7" if kind == "matomo" else "acme.com")


@pytest.mark.kafka
@pytest.mark.parametrize("kind", ["matomo", "plausible"])
async def test_daily_web_audience_and_social_visits_land_on_metrics_accounts(
    kind: str, source_settings: IngestSettings, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    topic = Topics(source_settings.topic_prefix).metrics_accounts
    with server_for(kind) as server:
        async with source_runner(source_settings, listening(source(kind, server))) as runner:
            worker = runner.workers[0]
            await eventually(lambda: worker.polls >= 1, 20, what="a poll")
            assert worker.status.state == "ok", worker.status.last_error
        assert server.errors == []
        if kind == "matomo":
            assert {r.method for r in server.requests} == {"POST"}
            assert all(r.form == {"token_auth": TOKEN} and "token_auth" not in r.query for r in server.requests)
            methods = {r.query["method"] for r in server.requests}
            assert methods == {"VisitsSummary.get", "Actions.get", "Referrers.getSocials", "Goals.get"}
        else:
            assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}
            assert {r.path for r in server.requests} == {"/api/v1/stats/aggregate", "/api/v1/stats/breakdown"}
        asked = sorted({r.query["date"] for r in server.requests})
        assert asked == [(TODAY - timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    readings = [load(AccountMetric, v) for _, v, _ in await read_all(bootstrap, topic) if v is not None]
    got = {(r.metric, r.at.date()): float(r.value) for r in readings}
    assert got == expected(kind)
    assert {(r.brand, r.platform) for r in readings} == {("acme", "web")}
    assert all(r.at.time() == datetime.min.time() and r.at.tzinfo is not None for r in readings)
    secret = TOKEN if kind == "matomo" else KEY
    assert secret not in caplog.text
    assert secret not in str(runner.status())


@pytest.mark.kafka
@pytest.mark.parametrize("kind", ["matomo", "plausible"])
async def test_a_wrong_token_fails_the_source_without_showing_the_token(
    kind: str, source_settings: IngestSettings, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    topic = Topics(source_settings.topic_prefix).metrics_accounts
    with server_for(kind, secret="the-right-one") as server:
        async with source_runner(source_settings, listening(source(kind, server))) as runner:
            worker = runner.workers[0]
            await eventually(lambda: worker.status.consecutive_failures >= 1, 20, what="a failed poll")
            error = str(worker.status.last_error)
            assert ("view' access" in error) if kind == "matomo" else ("401" in error)
    assert [v for _, v, _ in await read_all(bootstrap, topic)] == []
    secret = TOKEN if kind == "matomo" else KEY
    assert secret not in caplog.text and secret not in error


async def test_later_polls_read_yesterday_again_and_today_only() -> None:
    with server_for("plausible") as server:
        connector = PlausibleConnector.from_config(source("plausible", server))
        fetcher = SafeFetcher(FetchPolicy(allow_networks=parse_networks(LOOPBACK), max_attempts=1))
        try:
            batches = [b async for b in connector.poll({"done": (TODAY - timedelta(days=1)).isoformat()}, fetcher)]
        finally:
            await fetcher.aclose()
        assert sorted({r.query["date"] for r in server.requests}) == [YESTERDAY.isoformat(), TODAY.isoformat()]
        assert [b.cursor for b in batches] == [{"done": YESTERDAY.isoformat()}] * 2


async def test_a_server_outside_the_allowed_networks_is_refused() -> None:
    with server_for("matomo") as server:
        connector = MatomoConnector.from_config(source("matomo", server))
        fetcher = SafeFetcher(FetchPolicy(allow_networks=()))
        try:
            with pytest.raises(ForbiddenAddress):
                [b async for b in connector.poll(None, fetcher)]
        finally:
            await fetcher.aclose()
        assert server.requests == []


def test_options_name_the_bad_field_and_hide_the_secrets() -> None:
    with pytest.raises(ValidationError) as caught:
        MatomoConnector.from_config({"type": "matomo", "url": "https://stats.acme.com", "brand": "acme", "site_id": 1})
    assert [e["loc"] for e in caught.value.errors()] == [("token",)]
    with pytest.raises(ValidationError, match="site_id"):
        PlausibleConnector.from_config(
            {"type": "plausible", "url": "https://plausible.io", "brand": "acme", "key": "k"}
        )
    connector = MatomoConnector.from_config(
        {"type": "matomo", "url": "https://stats.acme.com", "brand": "acme", "site_id": 3, "token": TOKEN}
    )
    assert TOKEN not in repr(connector.options) and TOKEN not in connector.describe()


def test_referrer_names_become_network_names() -> None:
    assert [network_of(x, social_only=True) for x in ("Facebook", "X", "Hacker News", "mastodon.social", "Google")] == [
        "facebook",
        "twitter",
        "hackernews",
        "mastodon",
        None,
    ]
    assert network_of("Some Network", social_only=False) == "some-network"
