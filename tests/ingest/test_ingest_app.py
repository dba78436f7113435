"""POST /v1/mentions and friends against the real broker: what lands in mentions.raw, and what never does."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from ecoute.brokers import TansuBroker
from schemas import Mention, Topics, load
from services.ingest import IngestSettings, build_settings, create_app
from tests.ingest.ingest_support import ReadTopic, keys, mention, running

pytestmark = pytest.mark.kafka


async def sentinel_then_read(client: httpx.AsyncClient, reader: ReadTopic, topic: str) -> list[str]:
    """Post a valid mention after refused requests and read up to it: what else is there was produced."""
    response = await client.post("/v1/mentions", json=mention("sentinel"))
    assert response.status_code == 202, response.text
    return keys(await reader(topic, until=lambda rs: "test:sentinel" in keys(rs)))


async def test_single_mention_lands_keyed_by_id(
    ingest: httpx.AsyncClient, ingest_settings: IngestSettings, reader: ReadTopic
) -> None:
    sent = mention("one", engagement={"likes": 3}, author={"handle": "ann", "followers": 12})
    response = await ingest.post("/v1/mentions", json=sent)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1}

    topic = Topics(ingest_settings.topic_prefix).mentions_raw
    [record] = await reader(topic, until=lambda rs: len(rs) >= 1)
    assert record.key == b"test:one"
    got = load(Mention, record.value)
    assert got.id == "test:one"
    assert got.text == "acme mention one"
    assert got.source == "reddit"
    assert got.engagement.likes == 3
    assert got.author.followers == 12
    # fetched_at is stamped by ingest when the client leaves it out.
    assert abs((got.fetched_at - datetime.now(UTC)).total_seconds()) < 60
    assert orjson.loads(record.value)["schema"] == "mention/1"


async def test_array_lands_whole_and_keeps_given_fetched_at(
    ingest: httpx.AsyncClient, ingest_settings: IngestSettings, reader: ReadTopic
) -> None:
    batch = [mention(i) for i in range(250)]
    batch[7]["fetched_at"] = "2024-05-01T10:00:00+02:00"
    del batch[8]["source"]
    response = await ingest.post("/v1/mentions", json=batch)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 250}

    topic = Topics(ingest_settings.topic_prefix).mentions_raw
    records = await reader(topic, until=lambda rs: len(rs) >= 250)
    assert sorted(keys(records)) == sorted(f"test:{i}" for i in range(250))
    by_key = {r.key.decode(): load(Mention, r.value) for r in records}
    assert by_key["test:7"].fetched_at == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert by_key["test:8"].source == "webhook"  # an HTTP push that does not say where it comes from


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (b'{"id": "x", "text": ', 422, "malformed JSON"),
        (b'"just a string"', 422, "JSON object or an array"),
        (
            orjson.dumps([mention(0), mention(1), mention(2), mention(3, engagement={"likes": "many"})]),
            422,
            "[3].engagement.likes: Input should be a valid integer",
        ),
        (orjson.dumps([mention(0), {"text": "no id"}]), 422, "[1].id: Field required"),
        (orjson.dumps([{"id": "test:no-text"}, mention(1)]), 422, "[0].text: Field required"),
        (orjson.dumps(mention(0, id=42)), 422, "id: Input should be a valid string"),
        (orjson.dumps(mention(0, published_at="yesterday-ish")), 422, "published_at: Input should be a valid datetime"),
        (orjson.dumps([mention(i) for i in range(1001)]), 413, "1001 > 1000"),
    ],
    ids=["malformed", "scalar", "wrong-type", "missing-id", "missing-text", "id-not-string", "bad-date", "over-1000"],
)
async def test_refused_bodies_name_the_problem_and_produce_nothing(
    ingest: httpx.AsyncClient,
    ingest_settings: IngestSettings,
    reader: ReadTopic,
    body: bytes,
    status: int,
    expected: str,
) -> None:
    response = await ingest.post("/v1/mentions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert expected in response.json()["detail"]

    produced = await sentinel_then_read(ingest, reader, Topics(ingest_settings.topic_prefix).mentions_raw)
    assert produced == ["test:sentinel"]


async def test_every_bad_item_is_listed(ingest: httpx.AsyncClient) -> None:
    response = await ingest.post("/v1/mentions", json=[mention(0), {"id": 1}, mention(2, lang="english")])
    assert response.status_code == 422
    fields = {(e["index"], e["field"]) for e in response.json()["errors"]}
    assert fields == {(1, "id"), (1, "text"), (2, "lang")}


async def test_body_over_limit_is_refused_before_it_is_read(
    ingest: httpx.AsyncClient, ingest_settings: IngestSettings, reader: ReadTopic
) -> None:
    big = orjson.dumps([mention(i, text="x" * 20_000) for i in range(60)])
    assert len(big) > ingest_settings.max_body_bytes
    declared = await ingest.post("/v1/mentions", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert "limit" in declared.json()["detail"]

    # Without Content-Length (chunked), the read stops at the limit instead of buffering the rest.
    chunks_read = 0

    async def chunked() -> AsyncIterator[bytes]:
        nonlocal chunks_read
        for start in range(0, 50 * len(big), 64 * 1024):
            chunks_read += 1
            yield (big * 50)[start : start + 64 * 1024]

    streamed = await ingest.post("/v1/mentions", content=chunked(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert chunks_read < 50 * len(big) // (64 * 1024)

    produced = await sentinel_then_read(ingest, reader, Topics(ingest_settings.topic_prefix).mentions_raw)
    assert produced == ["test:sentinel"]


async def test_account_metrics_are_keyed_brand_platform_metric(
    ingest: httpx.AsyncClient, ingest_settings: IngestSettings, reader: ReadTopic
) -> None:
    readings = [
        {"brand": "acme", "platform": "mastodon", "metric": "followers", "value": 1520, "at": "2025-01-01T00:00:00Z"},
        {"brand": "acme", "platform": "youtube", "metric": "subscribers", "value": 88.5},
    ]
    response = await ingest.post("/v1/metrics", json=readings)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2}
    refused = await ingest.post("/v1/metrics", json={"brand": "acme", "platform": "x", "metric": "followers"})
    assert refused.status_code == 422
    assert "value: Field required" in refused.json()["detail"]

    topic = Topics(ingest_settings.topic_prefix).metrics_accounts
    records = await reader(topic, until=lambda rs: len(rs) >= 2)
    values = {r.key.decode(): orjson.loads(r.value) for r in records}
    assert set(values) == {"acme|mastodon|followers", "acme|youtube|subscribers"}
    assert values["acme|mastodon|followers"]["value"] == 1520
    assert values["acme|mastodon|followers"]["schema"] == "account-metric/1"
    assert values["acme|youtube|subscribers"]["at"]  # stamped when absent


async def test_healthz_and_metrics(ingest: httpx.AsyncClient) -> None:
    health = await ingest.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["kafka"] is True

    assert (await ingest.post("/v1/mentions", json=[mention(1), mention(2, source="rss")])).status_code == 202
    assert (await ingest.post("/v1/mentions", json=[mention(3), {"id": "bad"}])).status_code == 422
    assert (await ingest.post("/v1/mentions", content=b"{nope")).status_code == 422

    text = (await ingest.get("/metrics")).text
    assert 'ecoute_ingest_mentions_received_total{source="reddit"} 2.0' in text
    assert 'ecoute_ingest_mentions_received_total{source="rss"} 1.0' in text
    assert 'ecoute_ingest_mentions_refused_total{reason="invalid",source="webhook"} 1.0' in text
    assert 'ecoute_ingest_mentions_refused_total{reason="batch_invalid",source="reddit"} 1.0' in text
    assert 'ecoute_ingest_mentions_refused_total{reason="malformed_json",source="webhook"} 1.0' in text
    assert "ecoute_ingest_mentions_produced_total{topic=" in text
    assert 'mentions.raw"} 2.0' in text
    # Present from the start (a fresh topic's first produce may be retried once: NotLeaderForPartition).
    assert "ecoute_ingest_produce_retries_total " in text
    assert "ecoute_ingest_unavailable_total 0.0" in text
    assert 'ecoute_ingest_request_seconds_count{method="POST",route="/v1/mentions",status="202"} 1.0' in text
    assert 'ecoute_ingest_request_seconds_count{method="POST",route="/v1/mentions",status="422"} 2.0' in text


async def test_broker_too_slow_gives_503_with_retry_after(ingest_settings: IngestSettings) -> None:
    # The real broker cannot acknowledge within a microsecond: the request must not wait, nor claim success.
    settings = ingest_settings.model_copy(update={"send_timeout": 1e-6})
    registry = CollectorRegistry()
    async with running(create_app(settings, registry=registry)) as client:
        response = await client.post("/v1/mentions", json=[mention(1), mention(2)])
        assert response.status_code == 503
        assert response.headers["retry-after"] == str(settings.retry_after)
        assert "retry" in response.json()["detail"]
        assert registry.get_sample_value("ecoute_ingest_unavailable_total") == 1
        topic = Topics(settings.topic_prefix).mentions_raw
        assert registry.get_sample_value("ecoute_ingest_produce_errors_total", {"topic": topic}) == 2
        assert (
            registry.get_sample_value(
                "ecoute_ingest_mentions_refused_total", {"source": "reddit", "reason": "unavailable"}
            )
            == 2
        )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("broker", ["refusing", "silent"])
async def test_unreachable_broker_starts_unhealthy_and_answers_503(
    clean_env: None, topic_prefix: str, tmp_path: object, broker: str
) -> None:
    silent_server: asyncio.Server | None = None
    accepted: list[asyncio.StreamWriter] = []
    if broker == "silent":
        # Accepts TCP connections and never answers: the worst case for a client's start-up.
        silent_server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
        port = silent_server.sockets[0].getsockname()[1]
    else:
        port = closed_port()
    settings = build_settings(
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
        topic_prefix=topic_prefix,
        config=f"{tmp_path}/absent.yaml",
        kafka_startup_wait=1.0,
        kafka_reconnect_interval=0.5,
    )
    registry = CollectorRegistry()
    began = time.monotonic()
    try:
        async with running(create_app(settings, registry=registry)) as client:
            assert time.monotonic() - began < 5, "start-up must not wait for an unreachable broker"
            health = await client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["kafka"] is False
            response = await client.post("/v1/mentions", json=mention(1))
            assert response.status_code == 503
            assert int(response.headers["retry-after"]) > 0
            assert "retry" in response.json()["detail"].lower()
            # Validation still comes first: a bad request is a 422 even while Kafka is down.
            assert (await client.post("/v1/mentions", json={"id": "x"})).status_code == 422
            assert registry.get_sample_value("ecoute_ingest_unavailable_total") == 1
        assert time.monotonic() - began < 15, "shutdown must not hang on an unreachable broker"
    finally:
        if silent_server is not None:
            for writer in accepted:
                writer.close()
            silent_server.close()
            await silent_server.wait_closed()


async def test_broker_lost_after_start_gives_503_not_a_hang(clean_env: None, topic_prefix: str, tmp_path: Path) -> None:
    # A broker of this test's own (the embedded one, ready in milliseconds) that it can stop:
    # the session broker is shared and stays up.
    broker = TansuBroker().start()
    try:
        settings = build_settings(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            topic_prefix=topic_prefix,
            partitions=1,
            config=tmp_path / "absent.yaml",
            send_timeout=1.5,
        )
        registry = CollectorRegistry()
        async with running(create_app(settings, registry=registry)) as client:
            assert (await client.post("/v1/mentions", json=mention(1))).status_code == 202
            assert broker.proc is not None
            broker.proc.kill()  # a crash, not a polite stop
            broker.proc.wait(timeout=10)
            began = time.monotonic()
            response = await client.post("/v1/mentions", json=[mention(2), mention(3)])
            assert response.status_code == 503, response.text
            assert time.monotonic() - began < settings.send_timeout + 3
            assert "retry-after" in response.headers
            topic = Topics(settings.topic_prefix).mentions_raw
            assert registry.get_sample_value("ecoute_ingest_produce_errors_total", {"topic": topic}) == 2
            assert registry.get_sample_value("ecoute_ingest_mentions_produced_total", {"topic": topic}) == 1
            health = await client.get("/healthz")
            assert (health.status_code, health.json()["kafka"]) == (503, False)
    finally:
        broker.stop()
