"""Account metrics for the love KPIs: the brand's Mastodon, Bluesky and subreddit numbers onto metrics.accounts."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from schemas import AccountMetric, Topics, load
from services.ingest import IngestProducer, IngestSettings, build_metrics
from services.ingest.connectors import AccountsConnector, CheckpointStore, FetchPolicy, SafeFetcher, parse_networks
from services.ingest.sources import SourceWorker
from tests.helpers import read_all
from tests.ingest.connectors.conftest import LOOPBACK, eventually
from tests.ingest.connectors.web import Reply, WebServer

JSON = {"Content-Type": "application/json"}


def serve_accounts(web: WebServer) -> None:
    web.route(
        "/api/v1/accounts/lookup",
        lambda seen: (
            Reply(200, orjson.dumps({"id": "1", "acct": seen.query["acct"], "followers_count": 1234}), JSON)
            if seen.query.get("acct") == "acme"
            else Reply(404, b'{"error": "Record not found"}', JSON)
        ),
    )
    web.route(
        "/xrpc/app.bsky.actor.getProfile",
        Reply(200, orjson.dumps({"did": "did:plc:acme", "handle": "acme.bsky.social", "followersCount": 567}), JSON),
    )
    web.route(
        "/r/acme/about.json",
        Reply(200, orjson.dumps({"kind": "t5", "data": {"display_name": "acme", "subscribers": 89}}), JSON),
    )


def accounts_source(web: WebServer, **extra: Any) -> dict[str, Any]:
    return {
        "type": "accounts",
        "brand": "acme",
        "interval": 0.3,
        "mastodon": {"instance": web.url("/"), "account": "@acme"},
        "bluesky": {"handle": "acme.bsky.social", "base_url": web.url("/")},
        "reddit": {"subreddit": "acme", "base_url": web.url("/")},
        **extra,
    }


@asynccontextmanager
async def accounts_worker(settings: IngestSettings, raw: dict[str, Any]) -> AsyncIterator[SourceWorker]:
    """A source worker for an accounts source, on its own producer (the YAML `type: accounts` needs schemas)."""
    metrics = build_metrics(CollectorRegistry())
    link = IngestProducer(settings, metrics)
    await link.start()
    fetcher = SafeFetcher(FetchPolicy(allow_networks=parse_networks(LOOPBACK), max_attempts=2, backoff_base=0.05))
    worker = SourceWorker(
        AccountsConnector.from_config(raw),
        link=link,
        store=CheckpointStore(settings.bootstrap, link.topics.ingest_checkpoints, link),
        fetcher=fetcher,
        metrics=metrics,
        settings=settings,
        rng=random.Random(1),
    )
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop()
        await fetcher.aclose()
        await link.stop()


def test_an_accounts_source_needs_a_brand_and_an_account() -> None:
    with pytest.raises(ValidationError, match="at least one of"):
        AccountsConnector.from_config({"type": "accounts", "brand": "acme"})
    with pytest.raises(ValidationError, match="subreddit"):
        AccountsConnector.from_config({"type": "accounts", "brand": "acme", "reddit": {"subreddit": "a/../b"}})


@pytest.mark.kafka
async def test_followers_and_subscribers_land_on_metrics_accounts(
    web: WebServer, source_settings: IngestSettings, bootstrap: str
) -> None:
    serve_accounts(web)
    topic = Topics(source_settings.topic_prefix).metrics_accounts
    async with accounts_worker(source_settings, accounts_source(web)) as worker:
        await eventually(lambda: worker.polls >= 1, 10, what="a poll")
        assert worker.status.state == "ok" and worker.status.produced == 3
    records = await read_all(bootstrap, topic)
    readings = {k.decode(): load(AccountMetric, v) for k, v, _ in records if k is not None and v is not None}
    assert {k: r.value for k, r in readings.items()} == {
        "acme|mastodon|followers": 1234,
        "acme|bluesky|followers": 567,
        "acme|reddit|subscribers": 89,
    }
    assert {r.brand for r in readings.values()} == {"acme"}
    assert next(r.query for r in web.hits("/xrpc/app.bsky.actor.getProfile")) == {"actor": "acme.bsky.social"}


@pytest.mark.kafka
async def test_one_failing_platform_does_not_hold_back_the_others(
    web: WebServer, source_settings: IngestSettings, bootstrap: str
) -> None:
    serve_accounts(web)
    web.route("/xrpc/app.bsky.actor.getProfile", Reply(503, b"down"))
    web.route("/r/acme/about.json", Reply(200, b'{"kind": "t5", "data": {"subscribers": "many"}}', JSON))
    topic = Topics(source_settings.topic_prefix).metrics_accounts
    async with accounts_worker(source_settings, accounts_source(web)) as worker:
        await eventually(lambda: worker.status.consecutive_failures >= 2, 10, what="failing polls")
        assert "HTTP 503" in str(worker.status.last_error)
        registry = worker.metrics.registry
        labels = {"source_id": worker.connector.source_id, "type": "accounts"}
        assert (
            registry.get_sample_value("ecoute_ingest_source_errors_total", {**labels, "kind": "http_status"}) or 0
        ) >= 2
    keys = {k.decode() for k, _, _ in await read_all(bootstrap, topic) if k is not None}
    assert keys == {"acme|mastodon|followers"}  # the reading that worked, every poll
