"""The API against the real Kafka broker: views built from the topics, rebuilt after a restart, live updates,
malformed records skipped, SSE alerts, readiness, 404/422 answers and metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas import Alert, Kpi, Topics, dump, ensure_topics, to_dict, utc_now
from services.api.settings import ApiSettings
from services.api.views import floor_minute
from tests.api.api_factories import MINUTE, alert, kpi, scored
from tests.api.api_server import ApiServer
from tests.helpers import async_wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("clean_env")]


def kpi_key(snapshot: Kpi) -> bytes:
    return f"{snapshot.brand}|{snapshot.window}|{snapshot.start.isoformat()}".encode()


@asynccontextmanager
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def send_kpis(client: AIOKafkaProducer, topics: Topics, *snapshots: Kpi) -> None:
    for snapshot in snapshots:
        await client.send_and_wait(topics.kpi_snapshots, dump(snapshot), key=kpi_key(snapshot))


async def send_alerts(client: AIOKafkaProducer, topics: Topics, *alerts: Alert) -> None:
    for item in alerts:
        await client.send_and_wait(topics.alerts, dump(item), key=item.brand.encode())


def settings_for(bootstrap: str, prefix: str, tmp_path: Path, **extra: Any) -> ApiSettings:
    config = tmp_path / "ecoute.yaml"
    config.write_text("brands:\n  globex:\n    query: globex\n", encoding="utf-8")
    return ApiSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, config=config, **extra)


async def topic_configs(bootstrap: str, *names: str) -> dict[str, dict[str, str]]:
    """Each topic's configs, as the broker describes them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        await admin.close()
    # resources: (error_code, error_message, resource_type, resource_name, [(name, value, …), …])
    return {res[3]: {entry[0]: entry[1] for entry in res[4]} for response in described for res in response.resources}


async def wait_ready(client: httpx.AsyncClient) -> None:
    async def ready() -> bool:
        return (await client.get("/readyz")).status_code == 200

    await async_wait_until(ready, 30, what="/readyz to answer 200")


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text exposition, None if absent."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


async def snapshot_answers(client: httpx.AsyncClient) -> dict[str, Any]:
    """Everything the API answers about the test data, for comparing two app instances."""
    answers: dict[str, Any] = {"brands": (await client.get("/v1/brands")).json()}
    for window in ("1m", "5m", "1h", "24h"):
        answers[f"kpis {window}"] = (await client.get("/v1/brands/acme/kpis", params={"window": window})).json()
    answers["mentions"] = (await client.get("/v1/brands/acme/mentions", params={"limit": 500})).json()
    answers["alerts"] = (await client.get("/v1/alerts")).json()
    return answers


async def test_views_are_built_from_the_topics_and_rebuilt_after_restart(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    now = floor_minute(utc_now()) + timedelta(seconds=30)
    m0 = floor_minute(now)

    def bucket(start: datetime, n: int, **extra: Any) -> Kpi:
        return kpi("acme", start, mentions=n, positive=n, sentiment_sum=0.5 * n, reach=10 * n, **extra)

    async with producer(bootstrap) as client:
        # Malformed records come first: each must be skipped without hiding the good ones after it.
        await client.send_and_wait(topics.kpi_snapshots, b"{not json", key=b"acme|1m|garbage")
        await client.send_and_wait(topics.kpi_snapshots, orjson.dumps({"brand": "acme", "window": "1m"}), key=b"k")
        await client.send_and_wait(topics.mentions_scored, b'{"schema": "scored-mention/1", "id": "x"}', key=b"acme")
        await client.send_and_wait(topics.alerts, b"[]", key=b"acme")
        await send_kpis(
            client,
            topics,
            bucket(m0, 1),
            bucket(m0, 4, topics={"pricing": 2}, sources={"rss": 4}),  # replaces the line above
            bucket(m0 - 3 * MINUTE, 10, topics={"pricing": 1}, sources={"reddit": 10}),
            bucket(m0 - 30 * MINUTE, 100),
            bucket(m0 - 3 * 60 * MINUTE, 1000),
            bucket(m0 - 30 * 60 * MINUTE, 10_000),  # older than the 25 h kept
            kpi("acme", m0.replace(minute=0), window="1h", mentions=99_999),  # hourly: not part of rolling sums
        )
        for mention in (
            scored("acme", "m1", m0 - 2 * MINUTE, author="alice", label="positive"),
            scored("acme", "m2", m0 - MINUTE, author="bob", label="negative"),
            scored("acme", "m3", m0, author="alice", label="neutral"),
            scored("acme", "m4", m0 - 20 * MINUTE, author="carol", label="positive"),
            scored("acme", "m2", m0 - MINUTE, author="bob", label="negative"),  # replayed
        ):
            await client.send_and_wait(topics.mentions_scored, dump(mention), key=b"acme")
        a1 = alert("acme", "a1", m0 - 10 * MINUTE)
        a2 = alert("globex", "a2", m0 - 5 * MINUTE, kind="volume_spike")
        await send_alerts(client, topics, a1, a2, a1)  # a1 replayed

    settings = settings_for(bootstrap, topic_prefix, tmp_path)
    server = serve_api(settings, clock=lambda: now)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await wait_ready(http)
        ready = (await http.get("/readyz")).json()
        assert ready["ready"] is True and ready["waiting_for"] == []

        hour = (await http.get("/v1/brands/acme/kpis")).json()  # 1h by default
        assert hour["window"] == "1h"
        assert (hour["mentions"], hour["positive"], hour["negative"], hour["reach"]) == (114, 114, 0, 1140)
        assert hour["sentiment_avg"] == pytest.approx(0.5)
        assert hour["topics"] == {"pricing": 3}
        assert hour["sources"] == {"rss": 4, "reddit": 10}
        assert hour["unique_authors"] == 3
        assert hour["start"] == (m0 - 59 * MINUTE).isoformat().replace("+00:00", "Z")
        assert hour["end"] == (m0 + MINUTE).isoformat().replace("+00:00", "Z")
        totals = {}
        for window in ("1m", "5m", "1h", "24h"):
            body = (await http.get("/v1/brands/acme/kpis", params={"window": window})).json()
            totals[window] = (body["mentions"], body["unique_authors"])
        assert totals == {"1m": (4, 1), "5m": (14, 2), "1h": (114, 3), "24h": (1114, 3)}

        mentions = (await http.get("/v1/brands/acme/mentions")).json()
        assert [m["id"] for m in mentions] == ["m3", "m2", "m1", "m4"]
        assert mentions[0]["schema"] == "scored-mention/1" and mentions[0]["brand"] == "acme"
        positive = (await http.get("/v1/brands/acme/mentions", params={"sentiment": "positive"})).json()
        assert [m["id"] for m in positive] == ["m1", "m4"]
        two = (await http.get("/v1/brands/acme/mentions", params={"limit": 2})).json()
        assert [m["id"] for m in two] == ["m3", "m2"]

        alerts = (await http.get("/v1/alerts")).json()
        assert [a["id"] for a in alerts] == ["a2", "a1"]
        assert alerts[1] == {**to_dict(a1), "acked": False, "acked_at": None, "acked_by": None, "ack_note": None}
        assert [a["id"] for a in (await http.get("/v1/alerts", params={"brand": "acme"})).json()] == ["a1"]
        assert [a["id"] for a in (await http.get("/v1/alerts", params={"limit": 1})).json()] == ["a2"]

        brands = {b["brand"]: b for b in (await http.get("/v1/brands")).json()}
        assert sorted(brands) == ["acme", "globex"]
        assert brands["globex"]["configured"] is True and brands["globex"]["kpis"]["mentions"] == 0
        assert brands["acme"]["configured"] is False and brands["acme"]["kpis"]["mentions"] == 114

        metrics = (await http.get("/metrics")).text
        assert metric(metrics, "ecoute_api_view_records_total", topic="kpi.snapshots") == 7
        assert metric(metrics, "ecoute_api_view_records_total", topic="mentions.scored") == 5
        assert metric(metrics, "ecoute_api_view_records_total", topic="alerts") == 3
        assert metric(metrics, "ecoute_api_view_bad_records_total", topic="kpi.snapshots") == 2
        assert metric(metrics, "ecoute_api_view_bad_records_total", topic="mentions.scored") == 1
        assert metric(metrics, "ecoute_api_view_bad_records_total", topic="alerts") == 1

        # Live: a later malformed record is skipped and the good update after it replaces the bucket.
        async with producer(bootstrap) as client:
            await client.send_and_wait(topics.kpi_snapshots, b"\xff\xfe", key=kpi_key(bucket(m0, 1)))
            await send_kpis(client, topics, bucket(m0, 6))

        async def current_minute_is_six() -> bool:
            response = await http.get("/v1/brands/acme/kpis", params={"window": "1m"})
            return bool(response.json()["mentions"] == 6)

        await async_wait_until(current_minute_is_six, 20, what="the live update of the bucket")
        assert (await http.get("/v1/brands/acme/kpis", params={"window": "1h"})).json()["mentions"] == 116
        first = await snapshot_answers(http)
    server.stop()

    # A fresh instance rebuilds the same answers from the topics alone.
    restarted = serve_api(settings, clock=lambda: now)
    async with httpx.AsyncClient(base_url=restarted.url, timeout=10) as http:
        await wait_ready(http)
        assert await snapshot_answers(http) == first


async def test_errors_are_404_for_unknown_brands_and_422_for_bad_parameters(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    await ensure_topics(bootstrap, Topics(topic_prefix), partitions=1)
    server: ApiServer = serve_api(settings_for(bootstrap, topic_prefix, tmp_path))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await wait_ready(http)
        for path in ("/v1/brands/hooli/kpis", "/v1/brands/hooli/mentions", "/v1/alerts?brand=hooli"):
            response = await http.get(path)
            assert response.status_code == 404, path
            assert response.json() == {"detail": "unknown brand 'hooli'"}
        assert (await http.get("/v1/alerts/stream", params={"brand": "hooli"})).status_code == 404
        for path, param in (
            ("/v1/brands/globex/kpis?window=2m", "window"),
            ("/v1/brands/globex/mentions?limit=0", "limit"),
            ("/v1/brands/globex/mentions?limit=501", "limit"),
            ("/v1/brands/globex/mentions?sentiment=angry", "sentiment"),
            ("/v1/alerts?limit=0", "limit"),
        ):
            response = await http.get(path)
            assert response.status_code == 422, path
            assert response.json()["detail"][0]["loc"] == ["query", param]
        # The configured brand is known before any data: zero counts, not 404.
        body = (await http.get("/v1/brands/globex/kpis", params={"window": "24h"})).json()
        assert (body["mentions"], body["sentiment_avg"], body["unique_authors"]) == (0, None, 0)
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        page = await http.get("/")
        assert page.status_code == 200 and '<script src="/static/app.js" defer></script>' in page.text
        assert (await http.get("/static/app.js")).status_code == 200
        openapi = (await http.get("/openapi.json")).json()
        kpis_schema = openapi["paths"]["/v1/brands/{brand}/kpis"]["get"]["responses"]["200"]
        assert kpis_schema["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RollingKpi"}
        metrics = (await http.get("/metrics")).text
        # Latency is labelled by route template, never by the raw path (brand names would explode it).
        labels = {"method": "GET", "status": "404"}
        assert metric(metrics, "ecoute_api_request_seconds_count", route="/v1/brands/{brand}/kpis", **labels) == 1
        assert metric(metrics, "ecoute_api_request_seconds_count", route="/v1/brands/{brand}/mentions", **labels) == 1
        assert "/v1/brands/hooli" not in metrics


async def test_readiness_waits_for_the_topics_without_creating_them(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    topics = Topics(topic_prefix)
    server: ApiServer = serve_api(settings_for(bootstrap, topic_prefix, tmp_path))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

        async def waiting_for_topics() -> list[str]:
            response = await http.get("/readyz")
            assert response.status_code == 503
            return [w for w in response.json()["waiting_for"] if w.startswith("topic ")]

        waiting = await async_wait_until(waiting_for_topics, 20, what="/readyz to name the missing topics")
        assert f"topic {topics.kpi_snapshots} to exist" in waiting
        assert (await http.get("/healthz")).status_code == 200
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            # Only the API's own compacted topics were created; the pipeline's are not auto-created.
            assert sorted(t for t in await admin.list_topics() if t.startswith(topic_prefix)) == [
                f"{topic_prefix}alerts.actions",
                f"{topic_prefix}webhooks.deliveries",
            ]
        finally:
            await admin.close()
        own = await topic_configs(bootstrap, topics.alerts_actions, topics.webhooks_deliveries)
        assert {name: configs["cleanup.policy"] for name, configs in own.items()} == {
            topics.alerts_actions: "compact",
            topics.webhooks_deliveries: "compact",
        }

        await ensure_topics(bootstrap, topics, partitions=3)
        # The pipeline's topics, with their own configs: metrics.accounts is compacted yet keeps 8 days of
        # readings, so the love KPI's 1- and 7-day changes survive a restart of the API.
        pipeline = await topic_configs(bootstrap, *topics.all())
        assert {name for name, configs in pipeline.items() if configs["cleanup.policy"] == "compact"} == {
            topics.kpi_snapshots,
            topics.ingest_checkpoints,
            topics.metrics_accounts,
            topics.alerts_actions,
            topics.webhooks_deliveries,
            topics.content_items,
        }
        assert pipeline[topics.metrics_accounts]["min.compaction.lag.ms"] == str(8 * 24 * 3600 * 1000)
        assert pipeline[topics.content_items]["min.compaction.lag.ms"] == str(8 * 24 * 3600 * 1000)
        assert pipeline[topics.kpi_snapshots]["min.compaction.lag.ms"] == "0"
        async with producer(bootstrap) as client:
            await send_kpis(client, topics, kpi("acme", floor_minute(utc_now()), mentions=5))
        await wait_ready(http)

        async def acme_counted() -> bool:
            response = await http.get("/v1/brands/acme/kpis", params={"window": "5m"})
            return response.status_code == 200 and response.json()["mentions"] == 5

        await async_wait_until(acme_counted, 20, what="the first snapshot to be counted")


class SseReader:
    """Reads an SSE response into events (dicts of field -> value) and comment lines, in order."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next_event(self) -> dict[str, str]:
        event: dict[str, str] = {}
        async for line in self.lines:
            if line == "":
                if event:
                    return event
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(":")
            event[name] = value[1:] if value.startswith(" ") else value
        raise AssertionError(f"the stream ended; last partial event {event!r}")


async def test_sse_streams_new_alerts_with_filter_resume_and_heartbeats(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    base = floor_minute(utc_now())
    old = alert("acme", "old", base - 10 * MINUTE)
    async with producer(bootstrap) as client:
        await send_alerts(client, topics, old)
    server: ApiServer = serve_api(settings_for(bootstrap, topic_prefix, tmp_path, sse_ping_seconds=0.3))

    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10, read=15)) as http, asyncio.timeout(60):
        await wait_ready(http)

        async def subscribers(n: int) -> bool:
            return metric((await http.get("/metrics")).text, "ecoute_api_sse_clients") == n

        async with (
            http.stream("GET", "/v1/alerts/stream") as every,
            http.stream("GET", "/v1/alerts/stream", params={"brand": "globex"}) as globex_only,
        ):
            assert every.status_code == 200 and every.headers["content-type"].startswith("text/event-stream")
            await async_wait_until(lambda: subscribers(2), 10, what="two SSE subscribers")
            fresh = alert("acme", "fresh", base, kind="negative_surge")
            for_globex = alert("globex", "g1", base + MINUTE)
            async with producer(bootstrap) as client:
                await send_alerts(client, topics, fresh, old, for_globex)  # `old` replayed: not new

            reader = SseReader(every)
            first = await reader.next_event()
            assert (first["event"], first["id"]) == ("alert", "fresh")  # history is not streamed
            assert orjson.loads(first["data"]) == to_dict(fresh)
            second = await reader.next_event()
            assert second["id"] == "g1"
            globex_event = await SseReader(globex_only).next_event()
            assert globex_event["id"] == "g1"  # the acme alert before it was filtered out
            assert any(c.startswith(": ping") for c in reader.comments) or await _sees_ping(reader)

        # Resuming with Last-Event-ID replays what came after that alert, then goes on live.
        async with http.stream("GET", "/v1/alerts/stream", headers={"Last-Event-ID": "old"}) as resumed:
            reader = SseReader(resumed)
            assert [(await reader.next_event())["id"] for _ in range(2)] == ["fresh", "g1"]
        await async_wait_until(lambda: subscribers(0), 10, what="closed streams to unsubscribe")


async def _sees_ping(reader: SseReader) -> bool:
    """Waits (bounded by the test's timeout) for a heartbeat comment on an otherwise idle stream."""
    async for line in reader.lines:
        if line.startswith(": ping"):
            return True
    return False


async def test_the_views_lag_is_reported_per_topic_and_falls_to_zero_once_caught_up(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    # Written in transactions, as stage 1 writes: the commit markers take offsets the views never apply.
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic_prefix}lag-test")
    await client.start()
    try:
        minute = floor_minute(utc_now())
        for chunk in range(3):
            async with client.transaction():
                for i in range(1000):
                    mention = scored("globex", f"m-{chunk}-{i}", minute)
                    await client.send(topics.mentions_scored, dump(mention), key=f"m-{chunk}-{i}".encode())
    finally:
        await client.stop()
    server = serve_api(settings_for(bootstrap, topic_prefix, tmp_path))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

        async def lag() -> float | None:
            return metric((await http.get("/metrics")).text, "ecoute_api_view_lag", topic="mentions.scored")

        # Reported after the first fetch, then every 5 s: the first figure still has most of the 3,000 ahead.
        first = await async_wait_until(lag, 30, interval=0.05, what="the views' lag to be reported")
        assert first is not None and 1000 < first <= 3000

        async def caught_up() -> bool:
            return await lag() == 0

        await async_wait_until(caught_up, 30, what="the lag to fall to 0")
        text = (await http.get("/metrics")).text
        assert metric(text, "ecoute_api_view_records_total", topic="mentions.scored") == 3000
        for name in ("kpi.snapshots", "alerts", "alerts.actions", "webhooks.deliveries"):
            assert metric(text, "ecoute_api_view_lag", topic=name) == 0
