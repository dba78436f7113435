"""Negative surge, influencer and crisis-keyword alerts travel ingest → analyzer → alerts topic → API,
with their evidence, on a whole Écoute whose config sets keyword terms and short warm-ups."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.analyzer.alerts import alert_id
from tests.e2e.conftest import API_HEADERS, API_KEY, Stack, running_stack
from tests.helpers import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CONFIG = f"""
api_keys:
  - {{key: {API_KEY}, role: admin, brands: ["*"]}}
brands:
  acme:
    query: 'acme OR "#acme"'
  globex:
    query: globex
    alerts:
      keywords: {{enabled: false}}
topics:
  support: [support, "customer service"]
  security: ["data breach", password]
alerts:
  negative_surge: {{window: 5m, baseline: 2h, threshold: 0.5, min_negative: 5, margin: 0.1, warmup: 10m}}
  keywords: {{terms: [boycott, lawsuit, "data breach"], cooldown: 30m}}
  influencer: {{min_followers: 10000}}
"""


@pytest.fixture
def rules_stack(bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Stack]:
    """The e2e `stack`, with this module's alert rules in its config."""
    with running_stack(bootstrap, topic_prefix, tmp_path, CONFIG) as stack:
        yield stack


def mention(mention_id: str, text: str, published: datetime, followers: int = 120, **author: Any) -> dict[str, Any]:
    return {
        "id": mention_id,
        "source": "mastodon",
        "text": text,
        "url": f"https://example.org/{mention_id.replace(':', '/')}",
        "published_at": published.isoformat(),
        "author": {"id": f"id-{mention_id}", "followers": followers, **author},
    }


def alerts(stack: Stack) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.api_url}/v1/alerts", headers=API_HEADERS, timeout=5)
    response.raise_for_status()
    return list(response.json())


def test_negative_surge_influencer_and_keyword_alerts_reach_the_api(rules_stack: Stack) -> None:
    stack = rules_stack
    vader = SentimentIntensityAnalyzer()
    now = datetime.now(UTC).replace(microsecond=0)
    # Twenty calm, positive minutes well before now: the warm-up and the tone baseline.
    calm = [
        mention(f"calm:{i}", "I love acme, their support is great!", now - timedelta(minutes=30 - i)) for i in range(20)
    ]
    stack.post_mentions(calm)
    wait_until(lambda: stack.kpis("acme", "24h")["mentions"] == 20, timeout=30, what="the baseline to be counted")
    assert alerts(stack) == []

    angry = [mention(f"angry:{i}", "acme support is terrible, I hate it. Awful!", now) for i in range(5)]
    star = mention("star:1", "Boycott acme now: their support is a disgrace", now, followers=50_000, handle="@bigvoice")
    breach = mention("breach:1", "acme had a data breach and lost my password, awful", now)
    burst = [*angry, star, breach]
    for m in burst:
        assert vader.polarity_scores(m["text"])["compound"] <= -0.05, m["text"]
    stack.post_mentions(burst)

    def all_kinds() -> list[dict[str, Any]] | None:
        found = alerts(stack)
        kinds = {a["kind"] for a in found}
        keywords = {a["evidence"]["terms"][0] for a in found if a["kind"] == "keyword"}
        return found if {"negative_surge", "influencer"} <= kinds and keywords == {"boycott", "data breach"} else None

    found = wait_until(all_kinds, timeout=30, what="negative_surge, influencer and keyword alerts")
    assert found is not None
    assert {a["brand"] for a in found} == {"acme"}
    burst_urls = {m["url"] for m in burst}

    # Negative surge: every scored mention of the last 5 minutes is negative; usually none.
    [surge] = [a for a in found if a["kind"] == "negative_surge"]
    assert surge["observed"] == 1.0 and surge["baseline"] == 0.0 and surge["threshold"] == 0.5
    assert surge["severity"] == "critical"
    assert surge["evidence"]["sample_mentions"] and set(surge["evidence"]["sample_mentions"]) <= burst_urls
    assert "support" in surge["evidence"]["topics"]
    assert "boycott" in surge["evidence"]["terms"]
    assert surge["evidence"]["authors"]

    # Influencer: one alert for the one mention by an author with ≥ 10,000 followers.
    [influencer] = [a for a in found if a["kind"] == "influencer"]
    assert influencer["id"] == alert_id("acme", "influencer", "star:1")
    assert (influencer["observed"], influencer["threshold"]) == (50_000, 10_000)
    assert influencer["severity"] == "warning"  # negative, under 10× the threshold
    assert influencer["evidence"]["authors"] == ["@bigvoice"]
    assert influencer["evidence"]["sample_mentions"] == [star["url"]]
    assert influencer["evidence"]["terms"] == ["boycott"]

    # Keywords: one alert per crisis term, with the mention that carries it.
    minute = int(now.timestamp()) // 60 * 60
    keyword = {a["evidence"]["terms"][0]: a for a in found if a["kind"] == "keyword"}
    assert keyword["boycott"]["id"] == alert_id("acme", "keyword", f"boycott|{minute}")
    assert keyword["boycott"]["evidence"]["sample_mentions"] == [star["url"]]
    assert keyword["boycott"]["evidence"]["authors"] == ["@bigvoice"]
    assert keyword["boycott"]["severity"] == "critical"  # an influencer wrote it
    assert keyword["data breach"]["evidence"]["sample_mentions"] == [breach["url"]]
    assert keyword["data breach"]["evidence"]["topics"] == ["security"]
    assert keyword["data breach"]["severity"] == "warning"
    assert stack.analyzer_metric("ecoute_alerts_fired_total", '{brand="acme",kind="keyword"}') == 2.0
