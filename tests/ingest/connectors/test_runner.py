"""The source runner inside the ingest app: isolation of failing sources, /healthz per source, metrics."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from schemas import ConfigError, Topics
from services.ingest import IngestSettings, create_app
from services.ingest.connectors import CONNECTORS, derived_id
from tests.helpers import async_wait_until, read_all
from tests.ingest.connectors.conftest import listening
from tests.ingest.connectors.feeds import rss, rss_item
from tests.ingest.connectors.web import Reply, WebServer
from tests.ingest.ingest_support import running

pytestmark = pytest.mark.kafka

# A source type without a connector yet (None once every type has one).
UNSUPPORTED = next((t for t in ("bluesky", "mastodon", "reddit") if t not in CONNECTORS), None)


async def test_a_failing_source_never_stops_the_others_and_healthz_tells_which(
    web: WebServer, source_settings: IngestSettings, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    web.route("/feed", Reply(body=rss(rss_item(1), rss_item(2))))
    web.route("/broken", Reply(503, headers={"Retry-After": "0"}))
    forbidden = f"http://127.0.0.2:{web.port}/feed"  # loopback, but outside the allowed 127.0.0.1/32
    config = listening(
        {"type": "rss", "url": web.url("/broken"), "interval": 0.2},
        {"type": "rss", "url": forbidden, "interval": 0.2},
        {"type": "rss", "url": web.url("/feed"), "interval": 0.2},
        {"type": "rss"},  # no url: misconfigured, reported, skipped
        *(
            [{"type": UNSUPPORTED, "url": "wss://a.example/"}, {"type": UNSUPPORTED, "url": "wss://b.example/"}]
            * bool(UNSUPPORTED)
        ),
        allow=["127.0.0.1/32"],
    )
    registry = CollectorRegistry()
    good, broken, refused = (derived_id("rss", u) for u in (web.url("/feed"), web.url("/broken"), forbidden))
    with caplog.at_level(logging.INFO, logger="services.ingest"):
        async with running(create_app(source_settings, registry=registry, config=config)) as client:

            async def health() -> dict[str, dict[str, object]]:
                body = (await client.get("/healthz")).json()
                return body["sources"]  # type: ignore[no-any-return]

            sources: dict[str, dict[str, object]] = {}

            async def settled() -> bool:
                nonlocal sources
                sources = await health()
                return (
                    sources[good]["state"] == "ok"
                    and all(int(sources[s]["consecutive_failures"]) >= 2 for s in (broken, refused))  # type: ignore[call-overload]
                )

            await async_wait_until(settled, 15, interval=0.1, what="sources to settle")
            metrics_text = (await client.get("/metrics")).text

    assert sources[good]["last_error"] is None
    assert sources[good]["produced"] == 2
    assert sources[good]["target"] == web.url("/feed")
    assert sources[broken]["state"] == "failing"
    assert "HTTP 503" in str(sources[broken]["last_error"])
    assert sources[broken]["last_success"] is None
    assert sources[refused]["state"] == "failing"
    assert "fetch.allow_networks" in str(sources[refused]["last_error"])
    assert sources["sources[3]"]["state"] == "misconfigured"
    assert "url" in str(sources["sources[3]"]["last_error"])
    if UNSUPPORTED:  # said once per type, and the others kept running
        assert len([r for r in caplog.records if "not yet supported" in r.getMessage()]) == 1

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert value("ecoute_ingest_source_produced_total", source_id=good, type="rss") == 2
    assert value("ecoute_ingest_source_last_success_timestamp_seconds", source_id=good, type="rss") > time.time() - 30
    assert value("ecoute_ingest_source_errors_total", source_id=broken, type="rss", kind="http_status") >= 2
    assert value("ecoute_ingest_source_refused_total", source_id=refused, type="rss", reason="forbidden_address") >= 2
    assert value("ecoute_ingest_source_consecutive_failures", source_id=broken, type="rss") >= 2
    assert f'ecoute_ingest_source_fetched_total{{source_id="{good}",type="rss"}}' in metrics_text

    keys = [k for k, _, _ in await read_all(bootstrap, Topics(source_settings.topic_prefix).mentions_raw)]
    assert len(keys) == len(set(keys)) == 2  # the good feed's entries, once


async def test_a_bad_allow_network_is_a_config_error(source_settings: IngestSettings) -> None:
    config = listening({"type": "rss", "url": "https://blog.example.com/feed"}, allow=["localhost"])
    with pytest.raises(ConfigError, match="allow_networks"):
        async with running(create_app(source_settings, config=config)):
            pass
