"""Schemathesis against the API (ASGI, in process) with an admin key and data read from real Kafka topics:
every documented operation, a bounded number of generated requests each; no 5xx, and every answer (status,
content type, headers, body) matches the OpenAPI document."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ecoute.brokers import KafkaCluster
from ecoute.postgres import LocalPostgres
from schemas import Topics, dump, ensure_topics, utc_now
from schemas.history import migrate
from services.api.app import create_app
from services.api.settings import ApiSettings
from services.api.views import floor_minute
from tests.api.api_factories import MINUTE, alert, kpi, scored
from tests.api.test_api_kafka import kpi_key, producer

pytestmark = [pytest.mark.kafka]

ADMIN = "schemathesis-admin-key"
MAX_EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


async def load_data(bootstrap: str, topics: Topics) -> None:
    await ensure_topics(bootstrap, topics, partitions=2)
    m0 = floor_minute(utc_now())
    async with producer(bootstrap) as client:
        for i in range(5):
            snapshot = kpi("acme", m0 - i * MINUTE, mentions=3, positive=1, negative=2, sentiment_sum=-0.5)
            await client.send_and_wait(topics.kpi_snapshots, dump(snapshot), key=kpi_key(snapshot))
        for mention in (
            scored("acme", "reddit:t1_q", m0, text="Is acme open on Sundays?", reach=40),
            scored("acme", "rss:n", m0 - MINUTE, label="negative", reach=400),
            scored("globex", "hn:1", m0, label="positive"),
        ):
            await client.send_and_wait(topics.mentions_scored, dump(mention), key=mention.brand.encode())
        for item in (alert("acme", "a1", m0 - 2 * MINUTE), alert("globex", "g1", m0, kind="volume_spike")):
            await client.send_and_wait(topics.alerts, dump(item), key=item.brand.encode())


@pytest.fixture(scope="module")
def api_app(
    kafka: KafkaCluster, postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FastAPI]:
    """The API with an admin key and a webhook configured, its views caught up with the loaded topics, and a
    history store (migrated, empty), so the history routes answer rather than 503."""
    prefix = f"test-{uuid.uuid4().hex[:10]}."
    asyncio.run(load_data(kafka.bootstrap_servers, Topics(prefix)))
    database_url = postgres.create_database(f"schemathesis_{uuid.uuid4().hex[:10]}")
    asyncio.run(migrate(database_url))
    config: Path = tmp_path_factory.mktemp("schemathesis") / "ecoute.yaml"
    config.write_text(
        f"brands:\n  acme: {{query: acme}}\n  globex: {{query: globex}}\n"
        f"api_keys:\n  - {{key: {ADMIN}, role: admin, brands: ['*']}}\n"
        "webhooks:\n  - {url: 'https://hooks.example/x', secret: s, brands: [acme]}\n",
        encoding="utf-8",
    )
    app = create_app(
        ApiSettings(
            kafka_bootstrap_servers=kafka.bootstrap_servers,
            topic_prefix=prefix,
            config=config,
            api_rate_limit_per_second=0,
            sse_ping_seconds=0.2,
            database_url=database_url,
        )
    )
    with asgi.get_client(app) as client:  # starts the lifespan (the Kafka consumer), kept until shutdown_lifespans
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the API views did not catch up within 30 s"
            time.sleep(0.2)
    try:
        yield app
    finally:
        asgi.shutdown_lifespans()


def explicit_cases(operation: Any) -> list[dict[str, Any]]:
    """Known-good requests on the loaded data, so the answers with content are checked, not only the 404s."""
    path = operation.path
    if "{brand}" in path:
        return [{"path_parameters": {"brand": brand}} for brand in ("acme", "globex")]
    if path.endswith("/ack"):
        return [
            {"path_parameters": {"alert_id": "a1"}, "body": {"by": "jane"}},
            {"path_parameters": {"alert_id": "g1"}},
        ]
    if path.endswith("/handled"):
        return [{"path_parameters": {"mention_id": "reddit:t1_q"}, "body": {"brand": "acme", "by": "tom"}}]
    if path.endswith("/reply"):  # a Reddit mention: no account to answer with (422)
        return [{"path_parameters": {"mention_id": "reddit:t1_q"}, "body": {"text": "Thanks!", "brand": "acme"}}]
    if path.endswith("/follow"):  # no brand has an account here (422)
        return [{"path_parameters": {"platform": "mastodon", "author_id": "jane@social.example"}, "body": {}}]
    if path == "/v1/alerts":
        return [{}, {"query": {"brand": "acme", "limit": 1}}]
    if path == "/v1/webhooks/deliveries":
        return [{}, {"query": {"status": "pending"}}]
    return [{}]


def test_every_operation_answers_within_its_schema(api_app: FastAPI) -> None:
    # The pytest plugin's lazy loader (`from_fixture`) does not run on pytest 9, so each operation is driven
    # with Hypothesis here; every operation runs even if one fails, and all failures are reported together.
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12, [op.label for op in operations]
    failures: dict[str, str] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN}"}, checks=CHECKS, timeout=2)

        try:
            for explicit in explicit_cases(operation):
                operation.Case(**explicit).call_and_validate(
                    headers={"Authorization": f"Bearer {ADMIN}"}, checks=CHECKS, timeout=2
                )
            call()
        except Exception as exc:
            failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{error}" for label, error in failures.items())
