"""The live page's history view in headless Chromium (Debian's, driven by Playwright) against a real uvicorn and
a real PostgreSQL holding two generated months: the period and bucket chosen on the page give a table, headline
figures and a chart whose numbers are the ones recounted from the input; the CSV link downloads the same
buckets; the search box lists the period's stored mentions with the matched words marked."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from services.api.app import create_app
from services.api.settings import ApiSettings
from tests.api.api_server import ApiServer
from tests.api.history_data import History, expected_report, generate, store
from tests.e2e.test_live_page import ARTIFACTS
from tests.e2e.test_live_page import browser as browser  # the live page's fixture: Debian's Chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_env")]

KEY = "history-page-key"
CONFIG = f"""
api_keys:
  - {{key: {KEY}, role: admin, brands: ["*"]}}
brands:
  acme: {{query: acme, competitors: [globex]}}
  globex: {{query: globex}}
"""


@dataclass
class Generated:
    history: History
    start: datetime


@pytest.fixture
def generated(database_url: str) -> Generated:
    """Two months of mentions ending five days ago, stored (before the browser: Playwright's sync API holds the
    thread's event loop)."""
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=70)
    history = generate(start, 65, {"acme": 900, "globex": 400}, seed=11)
    asyncio.run(store(database_url, history))
    return Generated(history, start)


@pytest.fixture
def api(generated: Generated, database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    config = tmp_path / "ecoute.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    settings = ApiSettings(
        kafka_bootstrap_servers="127.0.0.1:9",  # no Kafka: the history view reads PostgreSQL only
        topic_prefix="history-page.",
        config=config,
        database_url=database_url,
    )
    server = ApiServer(create_app(settings)).start()
    try:
        yield server
    finally:
        server.stop()


# The table cells (td[data-field]) compared with the recount.
FIELDS = [
    "mentions",
    "positive",
    "neutral",
    "negative",
    "unscored",
    "engagement",
    "reach",
    "unique_authors",
    "share_of_voice",
]


def number(text: str) -> int:
    return int(re.sub(r"[^\d-]", "", text))


def test_history_view_shows_the_report_the_csv_and_search(
    generated: Generated, api: ApiServer, browser: Browser
) -> None:
    history, start = generated.history, generated.start

    page: Page = browser.new_page(viewport={"width": 1440, "height": 1000}, locale="en-US", accept_downloads=True)
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(f"{api.url}/#key={KEY}")
    page.locator("body[data-ready=true]").wait_for(timeout=10_000)
    # The default period (the last 30 days) is shown without asking.
    page.locator("#history[data-state=ready]").wait_for(timeout=10_000)
    assert page.locator("#history-rows tr").count() == 30
    assert page.locator("#history-brand").inner_text() == "· acme"

    # Weeks from day 12 to day 54 (both included, UTC).
    since, until = start + timedelta(days=12), start + timedelta(days=55)
    page.fill("#history-since", since.date().isoformat())
    page.fill("#history-until", (until - timedelta(days=1)).date().isoformat())
    page.select_option("#history-bucket", "week")
    page.click("#history-form button[type=submit]")
    want = expected_report(history, "acme", ["globex"], since, until, "week")
    first, last = (key.isoformat() for key in (next(iter(want["buckets"])), list(want["buckets"])[-1]))
    page.locator(f'#history-rows tr[data-start="{first}"]').wait_for(timeout=10_000)
    page.locator("#history[data-state=ready]").wait_for(timeout=10_000)

    rows = page.locator("#history-rows tr")
    assert rows.count() == len(want["buckets"]) == 7
    assert rows.last.get_attribute("data-start") == last
    for i, (key, expected) in enumerate(want["buckets"].items()):
        row = rows.nth(i)
        assert row.get_attribute("data-start") == key.isoformat()
        shown = {field: row.locator(f'td[data-field="{field}"]').inner_text() for field in FIELDS}
        assert number(shown["mentions"]) == expected["mentions"], key
        for label in ("positive", "neutral", "negative", "unscored"):
            assert number(shown[label]) == expected["sentiment"][label], (key, label)
        assert number(shown["engagement"]) == expected["engagement"]["total"], key
        assert number(shown["reach"]) == expected["reach"], key
        assert number(shown["unique_authors"]) == expected["unique_authors"], key
        # Shown as a whole percent; the exact share is in data-value.
        assert abs(number(shown["share_of_voice"]) - expected["share_of_voice"] * 100) <= 0.5, key
        voice = row.locator('td[data-field="share_of_voice"]').get_attribute("data-value")
        assert float(voice or "nan") == expected["share_of_voice"], key
    assert rows.first.get_attribute("class") == "partial"  # the first week starts before the period

    totals = want["totals"]
    figure = page.locator('#history-totals [data-figure="mentions"]')
    assert number(figure.locator(".figure-value").inner_text()) == totals["mentions"]
    change_pct = (totals["mentions"] - want["previous"]["mentions"]) / want["previous"]["mentions"] * 100
    assert figure.locator(".figure-change").inner_text() == f"{'+' if change_pct > 0 else '−'}{abs(change_pct):.1f} %"
    reach = page.locator('#history-totals [data-figure="reach"] .figure-value').inner_text()
    assert number(reach) == totals["reach"]
    assert page.locator("#history-chart svg .bar").count() == 7
    assert page.locator("#history-chart svg rect.pos").count() == 7
    assert "positive" in (page.locator("#history-chart svg").get_attribute("aria-label") or "")

    # The CSV link: the same weeks, downloaded with the key.
    with page.expect_download(timeout=10_000) as download_info:
        page.click("#history-csv")
    download = download_info.value
    assert re.fullmatch(r"acme-report-week-\d{8}-\d{8}\.csv", download.suggested_filename)
    exported = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert [row["start"][:10] for row in exported] == [key.isoformat() for key in want["buckets"]]
    assert [int(row["mentions"]) for row in exported] == [b["mentions"] for b in want["buckets"].values()]

    # Search within the period: the newest matching mentions first, the matched word marked.
    page.fill("#history-q", "batteries")
    page.click("#history-search button[type=submit]")
    results = page.locator("#history-results .mention")
    results.first.wait_for(timeout=10_000)
    in_period = sorted(
        (m for m in history.mentions if m.brand == "acme" and since <= m.published_at < until),
        key=lambda m: m.published_at,
        reverse=True,
    )
    assert results.count() == 20
    assert [results.nth(i).get_attribute("data-mention-id") for i in range(20)] == [m.id for m in in_period[:20]]
    assert results.first.locator("mark").first.inner_text().lower() == "battery"  # English stemming
    assert page.locator("#history-more").is_visible()
    page.click("#history-more")
    page.wait_for_function("document.querySelectorAll('#history-results .mention').length === 40", timeout=10_000)
    assert results.nth(39).get_attribute("data-mention-id") == in_period[39].id

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky top bar stays at the top of the full-page picture
    box = page.locator("#history").bounding_box()
    assert box is not None
    page.screenshot(path=str(ARTIFACTS / "history-view.png"), full_page=True, clip=box)
    assert page_errors == [], f"JavaScript errors on the page: {page_errors}"
