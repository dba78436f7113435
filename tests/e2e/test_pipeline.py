"""End to end on real Apache Kafka: mentions pushed over HTTP come out of the API as exact counts."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from schemas import Topics
from tests.e2e.conftest import API_HEADERS, Stack, make_corpus, merge
from tests.helpers import produce, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
BRANDS = ["acme", "globex"]


def settled(stack: Stack, records_in: int) -> bool:
    """Stage 1 has handled `records_in` records and stage 2 every partial stage 1 sent."""
    stage1 = stack.analyzer_metric("ecoute_analyzer_mentions_processed_total", '{stage="stage1"}')
    sent = stack.analyzer_metric("ecoute_analyzer_partials_total", '{direction="out"}')
    stage2 = stack.analyzer_metric("ecoute_analyzer_mentions_processed_total", '{stage="stage2"}')
    return stage1 >= records_in and stage2 >= sent


def test_http_to_api_exact_counts_duplicates_dlq_and_api_restart(stack: Stack, topic_prefix: str) -> None:
    corpus = make_corpus(1000, seed=11)
    started = time.monotonic()
    stack.post_mentions(corpus.mentions)
    wait_until(lambda: stack.split(BRANDS) == corpus.expected, timeout=30, what=f"API counts {corpus.expected}")
    assert time.monotonic() - started < 30

    # The same 1,000 again: every copy is dropped. Wait until the analyzer has read them all.
    stack.post_mentions(corpus.mentions)
    wait_until(lambda: settled(stack, 2000), timeout=30, what="the analyzer to read the duplicates")
    assert stack.analyzer_metric("ecoute_analyzer_duplicates_total") == 1000
    assert stack.split(BRANDS) == corpus.expected

    # Poison straight onto mentions.raw next to good mentions: the poison is dead-lettered, the good counted.
    topics = Topics(topic_prefix)
    good = make_corpus(50, seed=12)
    poison = [(b"p1", b"{oops"), (b"p2", orjson.dumps({"id": "p2"})), (b"p3", orjson.dumps({"id": 3, "text": "acme"}))]
    records = [(str(m["id"]).encode(), orjson.dumps(m)) for m in good.mentions]

    asyncio.run(
        produce(stack.env["ECOUTE_KAFKA_BOOTSTRAP_SERVERS"], topics.mentions_raw, records[:25] + poison + records[25:])
    )
    expected = merge(corpus.expected, good.expected)
    wait_until(lambda: stack.split(BRANDS) == expected, timeout=30, what=f"API counts {expected}")
    wait_until(lambda: settled(stack, 2053), timeout=30, what="the analyzer to read the poison")
    assert (
        stack.analyzer_metric("ecoute_analyzer_dlq_total", '{reason="json",topic="' + topics.mentions_raw + '"}') == 1
    )
    assert (
        stack.analyzer_metric("ecoute_analyzer_dlq_total", '{reason="schema",topic="' + topics.mentions_raw + '"}') == 2
    )

    # The API restarted rebuilds the same answers from the topics.
    before = {b: stack.kpis(b, "24h") for b in BRANDS}
    mentions_before = httpx.get(
        f"{stack.api_url}/v1/brands/acme/mentions", params={"limit": 20}, headers=API_HEADERS
    ).json()
    assert stack.stop("api") == 0
    stack.start("api").wait_http(f"{stack.api_url}/readyz")
    after = {b: stack.kpis(b, "24h") for b in BRANDS}
    for brand in BRANDS:
        for name in ("mentions", "positive", "neutral", "negative", "reach", "engagement", "topics", "sources"):
            assert after[brand][name] == before[brand][name], (brand, name)
        assert after[brand]["mentions"] == expected[brand]["mentions"]
    assert (
        httpx.get(f"{stack.api_url}/v1/brands/acme/mentions", params={"limit": 20}, headers=API_HEADERS).json()
        == mentions_before
    )


def test_unknown_brand_and_bad_parameters(stack: Stack) -> None:
    assert httpx.get(f"{stack.api_url}/v1/brands/hooli/kpis", headers=API_HEADERS).status_code == 404
    assert httpx.get(f"{stack.api_url}/v1/brands/acme/kpis").status_code == 401  # the config defines a key
    assert (
        httpx.get(f"{stack.api_url}/v1/brands/acme/kpis", params={"window": "2m"}, headers=API_HEADERS).status_code
        == 422
    )
    refused = httpx.post(f"{stack.ingest_url}/v1/mentions", json={"id": "x", "text": 5})
    assert refused.status_code == 422 and "text" in refused.text
