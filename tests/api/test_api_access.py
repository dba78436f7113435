"""API keys over real HTTP against real Kafka: 401/403/404 answers, brand filtering of lists and of the SSE
stream, open operational endpoints, and the per-key rate limit (429 + Retry-After)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas import Topics, dump, ensure_topics, utc_now
from services.api.settings import ApiSettings
from services.api.views import floor_minute
from tests.api.api_factories import MINUTE, alert, scored
from tests.api.api_server import ApiServer
from tests.api.test_api_kafka import SseReader, metric, producer, send_alerts, wait_ready
from tests.helpers import async_wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("clean_env")]

ADMIN, ACME, GLOBEX = "admin-key-0123", "acme-reader-key", "globex-reader-key"
CONFIG = f"""
brands:
  acme: {{query: acme}}
  globex: {{query: globex}}
  initech: {{query: initech}}
api_keys:
  - {{key: {ADMIN}, role: admin, brands: ["*"]}}
  - {{key: {ACME}, role: read, brands: [acme]}}
  - {{key: {GLOBEX}, role: read, brands: [globex, initech]}}
"""


def keyed_settings(bootstrap: str, prefix: str, tmp_path: Path, **extra: Any) -> ApiSettings:
    config = tmp_path / "ecoute.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return ApiSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, config=config, **extra)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_keys_gate_every_v1_endpoint_and_filter_brands(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    m0 = floor_minute(utc_now())
    async with producer(bootstrap) as client:
        await send_alerts(client, topics, alert("acme", "a-acme", m0 - 2 * MINUTE), alert("globex", "a-globex", m0))
        for mention in (scored("acme", "m-acme", m0), scored("globex", "m-globex", m0, label="negative")):
            await client.send_and_wait(topics.mentions_scored, dump(mention), key=mention.brand.encode())
    server: ApiServer = serve_api(keyed_settings(bootstrap, topic_prefix, tmp_path))

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await wait_ready(http)  # /readyz is open
        for path in ("/healthz", "/metrics", "/", "/openapi.json"):
            assert (await http.get(path)).status_code == 200, path

        # No key, a wrong key, another scheme: 401 with a Bearer challenge.
        v1_paths = [
            "/v1/brands",
            "/v1/brands/acme/kpis",
            "/v1/brands/acme/mentions",
            "/v1/brands/acme/inbox",
            "/v1/brands/acme/response-time",
            "/v1/alerts",
            "/v1/webhooks/deliveries",
        ]
        for path in v1_paths:
            missing = await http.get(path)
            assert missing.status_code == 401, path
            assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await http.get("/v1/brands", headers=bearer("nope"))
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
        assert (await http.get("/v1/brands", headers={"Authorization": f"Basic {ADMIN}"})).status_code == 401
        assert (await http.post("/v1/alerts/a-acme/ack")).status_code == 401
        assert (await http.get("/v1/alerts/stream")).status_code == 401

        # The admin sees everything.
        admin = bearer(ADMIN)
        assert [b["brand"] for b in (await http.get("/v1/brands", headers=admin)).json()] == [
            "acme",
            "globex",
            "initech",
        ]
        assert [a["id"] for a in (await http.get("/v1/alerts", headers=admin)).json()] == ["a-globex", "a-acme"]
        assert (await http.get("/v1/webhooks/deliveries", headers=admin)).json() == []

        # A read key sees its brands only; another brand is a 404 exactly like an unknown one.
        acme = bearer(ACME)
        assert [b["brand"] for b in (await http.get("/v1/brands", headers=acme)).json()] == ["acme"]
        assert [a["id"] for a in (await http.get("/v1/alerts", headers=acme)).json()] == ["a-acme"]
        unknown = await http.get("/v1/brands/hooli/kpis", headers=acme)
        for path in (
            "/v1/brands/globex/kpis",
            "/v1/brands/globex/mentions",
            "/v1/brands/globex/inbox",
            "/v1/brands/globex/response-time",
        ):
            hidden = await http.get(path, headers=acme)
            assert hidden.status_code == 404 and hidden.json() == {"detail": "unknown brand 'globex'"}, path
        assert unknown.status_code == 404 and unknown.json() == {"detail": "unknown brand 'hooli'"}
        assert (await http.get("/v1/alerts", params={"brand": "globex"}, headers=acme)).status_code == 404
        assert (await http.post("/v1/alerts/a-globex/ack", headers=acme)).status_code == 404
        handled = await http.post("/v1/mentions/m-globex/handled", json={"brand": "globex"}, headers=acme)
        assert handled.status_code == 404
        assert (await http.get("/v1/alerts/stream", params={"brand": "globex", "key": ACME})).status_code == 404
        # Admin-only: 403 for a read key.
        forbidden = await http.get("/v1/webhooks/deliveries", headers=acme)
        assert forbidden.status_code == 403 and "admin" in forbidden.json()["detail"]
        assert [b["brand"] for b in (await http.get("/v1/brands", headers=bearer(GLOBEX))).json()] == [
            "globex",
            "initech",
        ]

        # SSE: the key may come as ?key= (EventSource), and the stream carries the key's brands only.
        async def subscribers(n: int) -> bool:
            return metric((await http.get("/metrics")).text, "ecoute_api_sse_clients") == n

        async with asyncio.timeout(30), http.stream("GET", "/v1/alerts/stream", params={"key": ACME}) as stream:
            assert stream.status_code == 200
            await async_wait_until(lambda: subscribers(1), 10, what="the SSE subscriber")
            async with producer(bootstrap) as client:
                await send_alerts(
                    client, Topics(topic_prefix), alert("globex", "g-live", m0), alert("acme", "a-live", m0)
                )
            event = await SseReader(stream).next_event()
            assert event["id"] == "a-live"  # g-live, before it, was not for this key

        text = (await http.get("/metrics")).text
        assert metric(text, "ecoute_api_unauthorized_total", reason="missing") == len(v1_paths) + 3
        assert metric(text, "ecoute_api_unauthorized_total", reason="invalid") == 1


async def test_rate_limit_per_key_answers_429_with_retry_after(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    await ensure_topics(bootstrap, Topics(topic_prefix), partitions=1)
    settings = keyed_settings(bootstrap, topic_prefix, tmp_path, api_rate_limit_per_second=0.2, api_rate_limit_burst=3)
    server: ApiServer = serve_api(settings)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await wait_ready(http)
        statuses = [(await http.get("/v1/brands", headers=bearer(ACME))).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await http.get("/v1/brands/acme/kpis", headers=bearer(ACME))
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 5  # one token every 5 s
        # Another key has its own bucket; the open endpoints are never limited.
        assert (await http.get("/v1/brands", headers=bearer(GLOBEX))).status_code == 200
        assert all([(await http.get("/healthz")).status_code == 200 for _ in range(5)])
        assert metric((await http.get("/metrics")).text, "ecoute_api_rate_limited_total") == 1
