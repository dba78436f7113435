"""A whole Écoute (ingest, analyzer, API as separate processes) on the session's Apache Kafka."""

from __future__ import annotations

import contextlib
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from ecoute.brokers import free_port
from tests.helpers import ServiceProcess

API_KEY = "e2e-admin-key"
# Every /v1 call of the API needs this key (Authorization: Bearer …); see `API_HEADERS`.
API_HEADERS = {"Authorization": f"Bearer {API_KEY}"}
CONFIG = f"""
api_keys:
  - {{key: {API_KEY}, role: admin, brands: ["*"]}}
brands:
  acme:
    query: 'acme OR "#acme" OR @acme'
    competitors: [globex]
  globex:
    query: [globex, "#globex"]
    competitors: [acme]
topics:
  pricing: [price, prices, expensive, cheap]
  support: [support, "customer service"]
alerts:
  volume_spike: {{window: 5m, baseline: 2h, sigma: 3, min_mentions: 20, warmup: 20m, cooldown: 30m}}
"""

TEMPLATES = [
    "I love my new {b} phone, the camera is amazing!",
    "{b} support was useless, never buying again.",
    "Just saw an ad for {b} on the metro.",
    "{b} prices are way too expensive this year :(",
    "Honestly {b} customer service fixed it in 5 minutes. Great job!",
    "Is {b} open on Sundays?",
    "{b} is NOT good. At all. 😡",
    "Not bad, {b}, not bad at all",
    "Shoutout to #{b} for the fast delivery 🙌",
]


@dataclass
class Corpus:
    mentions: list[dict[str, Any]]
    expected: dict[str, dict[str, int]] = field(default_factory=dict)


def vader_label(text: str, analyzer: SentimentIntensityAnalyzer) -> str:
    compound = analyzer.polarity_scores(text)["compound"]
    return "positive" if compound >= 0.05 else "negative" if compound <= -0.05 else "neutral"


def make_corpus(n: int, seed: int, prefix: str = "e2e") -> Corpus:
    """n mentions with a known brand set each; the expected split is recounted with VADER itself."""
    rng = random.Random(seed)
    analyzer = SentimentIntensityAnalyzer()
    corpus = Corpus([])
    for i in range(n):
        brands = rng.choice([["acme"], ["globex"], ["acme", "globex"], []])
        subject = " and ".join(b.capitalize() if rng.random() < 0.3 else b for b in brands) or "Acmeville"
        text = rng.choice(TEMPLATES).format(b=subject)
        corpus.mentions.append(
            {
                "id": f"{prefix}:{seed}:{i}",
                "source": rng.choice(["rss", "reddit", "mastodon", "webhook"]),
                "url": f"https://example.org/{prefix}/{seed}/{i}",
                "text": text,
                "author": {"id": f"author-{rng.randrange(200)}", "followers": rng.randrange(3000)},
                "engagement": {"likes": rng.randrange(20), "shares": rng.randrange(3), "comments": 1},
            }
        )
        label = vader_label(text, analyzer)
        for brand in brands:
            counts = corpus.expected.setdefault(brand, {"mentions": 0, "positive": 0, "neutral": 0, "negative": 0})
            counts["mentions"] += 1
            counts[label] += 1
    return corpus


def merge(*expected: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for counts in expected:
        for brand, c in counts.items():
            into = out.setdefault(brand, {"mentions": 0, "positive": 0, "neutral": 0, "negative": 0})
            for name, n in c.items():
                into[name] += n
    return out


@dataclass
class Stack:
    env: dict[str, str]
    workdir: Path
    ingest_url: str
    api_url: str
    analyzer_metrics_url: str
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def start(self, name: str) -> ServiceProcess:
        log = self.workdir / f"{name}-{len([p for p in self.workdir.iterdir() if p.name.startswith(name)])}.log"
        process = ServiceProcess([name], self.env, log).start()
        self.processes[name] = process
        return process

    def stop(self, name: str) -> int | None:
        return self.processes[name].stop()

    def post_mentions(self, mentions: list[dict[str, Any]], batch: int = 250) -> None:
        with httpx.Client(timeout=30) as client:
            for i in range(0, len(mentions), batch):
                response = client.post(f"{self.ingest_url}/v1/mentions", json=mentions[i : i + batch])
                assert response.status_code == 202, response.text
                assert response.json() == {"accepted": len(mentions[i : i + batch])}

    def kpis(self, brand: str, window: str = "1h") -> dict[str, Any]:
        response = httpx.get(
            f"{self.api_url}/v1/brands/{brand}/kpis", params={"window": window}, headers=API_HEADERS, timeout=5
        )
        response.raise_for_status()
        return dict(response.json())

    def split(self, brands: list[str], window: str = "1h") -> dict[str, dict[str, int]]:
        out = {}
        for brand in brands:
            k = self.kpis(brand, window)
            out[brand] = {name: k[name] for name in ("mentions", "positive", "neutral", "negative")}
        return out

    def analyzer_metric(self, name: str, labels: str = "") -> float:
        text = httpx.get(self.analyzer_metrics_url, timeout=5).text
        match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0


@contextlib.contextmanager
def running_stack(
    bootstrap: str, topic_prefix: str, tmp_path: Path, config_text: str, database_url: str | None = None
) -> Iterator[Stack]:
    """Ingest, analyzer and API as processes on the session's Kafka, with `config_text` as their config; with
    `database_url`, the history store too (and the API reads the history)."""
    config = tmp_path / "ecoute.yaml"
    config.write_text(config_text)
    ingest_port, api_port, metrics_port = free_port(), free_port(), free_port()
    env = {
        "ECOUTE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ECOUTE_CONFIG": str(config),
        "ECOUTE_TOPIC_PREFIX": topic_prefix,
        "ECOUTE_PARTITIONS": "3",
        "ECOUTE_INGEST_PORT": str(ingest_port),
        "ECOUTE_API_PORT": str(api_port),
        "ECOUTE_ANALYZER_METRICS_PORT": str(metrics_port),
        "ECOUTE_ANALYZER_APP_ID": f"{topic_prefix}analyzer",
        "ECOUTE_ANALYZER_DATA_DIR": str(tmp_path / "analyzer"),
        "ECOUTE_ANALYZER_SESSION_TIMEOUT": "6",
        "ECOUTE_LOG_LEVEL": "WARNING",
    }
    if database_url is not None:
        env.update(
            {
                "ECOUTE_DATABASE_URL": database_url,
                "ECOUTE_STORE_METRICS_PORT": str(free_port()),
                "ECOUTE_STORE_COMMIT_INTERVAL": "0.3",
            }
        )
    stack = Stack(
        env,
        tmp_path,
        f"http://127.0.0.1:{ingest_port}",
        f"http://127.0.0.1:{api_port}",
        f"http://127.0.0.1:{metrics_port}/metrics",
    )
    try:
        stack.start("ingest").wait_http(f"{stack.ingest_url}/healthz")
        stack.start("analyzer")
        stack.start("api").wait_http(f"{stack.api_url}/readyz")
        if database_url is not None:
            stack.start("store").wait_http(f"http://127.0.0.1:{env['ECOUTE_STORE_METRICS_PORT']}/metrics")
        yield stack
    finally:
        for process in stack.processes.values():
            process.stop()


@pytest.fixture
def stack(bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(bootstrap, topic_prefix, tmp_path, CONFIG) as running:
        yield running
