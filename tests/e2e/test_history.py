"""The history end to end: mentions of three past months pushed over HTTP, every service restarted, then the
search, report and CSV answers match counts computed here from the input."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import API_HEADERS, CONFIG, make_corpus, running_stack
from tests.helpers import wait_until
from tests.store.store_support import count

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DAYS = 90
SUPPORT = re.compile(r"\bsupport\b", re.IGNORECASE)


def month(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def search_all(api_url: str, brand: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a search, following next_cursor."""
    found: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(timeout=10, headers=API_HEADERS) as client:
        for _ in range(1000):
            page = client.get(
                f"{api_url}/v1/brands/{brand}/mentions/search",
                params={**params, "limit": 200, **({"cursor": cursor} if cursor else {})},
            )
            assert page.status_code == 200, page.text
            body = page.json()
            found.extend(body["mentions"])
            cursor = body["next_cursor"]
            if cursor is None:
                return found
    raise AssertionError("more than 1,000 pages")


def test_three_months_of_history_survive_a_restart_of_every_service(
    bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    corpus = make_corpus(1200, seed=41, prefix="hist")
    expected_months: dict[str, Counter[tuple[datetime, str]]] = {"acme": Counter(), "globex": Counter()}
    for i, mention in enumerate(corpus.mentions):
        published = now - timedelta(days=DAYS) + timedelta(seconds=i * DAYS * 86400 // len(corpus.mentions))
        mention["published_at"] = published.isoformat()
    with running_stack(bootstrap, topic_prefix, tmp_path, CONFIG, database_url=database_url) as stack:
        stack.post_mentions(corpus.mentions)
        total = sum(split["mentions"] for split in corpus.expected.values())
        wait_until(
            lambda: count(database_url, "SELECT count(*) FROM mentions") == total,
            timeout=90,
            what=f"{total} mentions in the history",
        )
        # What the analyzer decided (brand, label) is read back once, from the history itself, and compared with
        # the corpus' own recount (VADER in the test): then every answer below is checked against the input.
        for brand in ("acme", "globex"):
            labels = Counter(m["sentiment"]["label"] for m in search_all(stack.api_url, brand))
            assert {k: labels[k] for k in ("positive", "neutral", "negative")} == {
                k: corpus.expected[brand][k] for k in ("positive", "neutral", "negative")
            }
        # Every service restarted: ingest, analyzer, API and store.
        for name in ("store", "api", "analyzer", "ingest"):
            assert stack.stop(name) == 0
        stack.start("ingest").wait_http(f"{stack.ingest_url}/healthz")
        stack.start("analyzer")
        stack.start("api").wait_http(f"{stack.api_url}/readyz")
        stack.start("store").wait_http(f"http://127.0.0.1:{stack.env['ECOUTE_STORE_METRICS_PORT']}/metrics")
        # More mentions after the restart, and the earlier ones posted again (ids already seen): counted once.
        later = make_corpus(200, seed=42, prefix="hist-later")
        stack.post_mentions(later.mentions + corpus.mentions[:100])
        later_total = sum(split["mentions"] for split in later.expected.values())
        wait_until(
            lambda: count(database_url, "SELECT count(*) FROM mentions") == total + later_total,
            timeout=90,
            what=f"{total + later_total} mentions in the history",
        )

        searched = {brand: search_all(stack.api_url, brand) for brand in ("acme", "globex")}
        for brand, mentions in searched.items():
            assert len(mentions) == corpus.expected[brand]["mentions"] + later.expected.get(brand, {}).get(
                "mentions", 0
            )
            assert len({m["id"] for m in mentions}) == len(mentions), "a mention twice in the history"
            published = [m["published_at"] for m in mentions]
            assert published == sorted(published, reverse=True), "newest first"
            for m in mentions:
                if m["id"].startswith("hist:"):
                    expected_months[brand][
                        (month(datetime.fromisoformat(m["published_at"])), m["sentiment"]["label"])
                    ] += 1
        for brand in ("acme", "globex"):
            with_support = [m for m in searched[brand] if SUPPORT.search(m["text"])]
            hits = search_all(stack.api_url, brand, q="support")
            assert sorted(m["id"] for m in hits) == sorted(m["id"] for m in with_support)
            old = [m for m in with_support if m["id"].startswith("hist:")]
            label, _ = Counter(m["sentiment"]["label"] for m in old).most_common(1)[0]
            filtered = search_all(stack.api_url, brand, q="support", until=now.isoformat(), sentiment=label)
            assert sorted(m["id"] for m in filtered) == sorted(m["id"] for m in old if m["sentiment"]["label"] == label)
            assert 0 < len(filtered) < len(hits)

        # The monthly report of the three months: volume and sentiment split per month, as counted here.
        since = month(now - timedelta(days=DAYS))
        with httpx.Client(timeout=30, headers=API_HEADERS) as client:
            for brand in ("acme", "globex"):
                params = {"since": since.isoformat(), "until": now.isoformat(), "bucket": "month"}
                report = client.get(f"{stack.api_url}/v1/brands/{brand}/report", params=params)
                assert report.status_code == 200, report.text
                body = report.json()
                for bucket in body["buckets"]:
                    start = datetime.fromisoformat(bucket["start"])
                    for label in ("positive", "neutral", "negative"):
                        assert bucket["sentiment"][label] == expected_months[brand][(start, label)], (
                            brand,
                            start,
                            label,
                        )
                    assert bucket["mentions"] == sum(
                        expected_months[brand][(start, lb)] for lb in ("positive", "neutral", "negative", "unscored")
                    )
                assert body["totals"]["mentions"] == corpus.expected[brand]["mentions"]
                # The CSV export says the same, row by row.
                exported = client.get(f"{stack.api_url}/v1/brands/{brand}/report", params={**params, "format": "csv"})
                assert exported.status_code == 200
                assert exported.headers["content-type"].startswith("text/csv")
                rows = list(csv.DictReader(io.StringIO(exported.text)))
                assert [int(r["mentions"]) for r in rows] == [b["mentions"] for b in body["buckets"]]
                search_csv = client.get(
                    f"{stack.api_url}/v1/brands/{brand}/mentions/search",
                    params={"q": "support", "format": "csv", "limit": 200},
                )
                assert search_csv.status_code == 200
                csv_rows = list(csv.DictReader(io.StringIO(search_csv.text)))
                assert len(csv_rows) == min(200, sum(1 for m in searched[brand] if SUPPORT.search(m["text"])))
