"""The community manager's live page in headless Chromium, against the whole stack on the real Kafka.

Debian's Chromium (/usr/bin/chromium) driven by Playwright for Python with that system browser (no
`playwright install`). The page asks for a key (a wrong one from the URL fragment is refused), shows the
brand tiles with the API's counts, marks an inbox mention handled, shows a volume spike pushed through
ingest in its live alert feed within 5 s, and acks it; the API agrees. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.conftest import API_HEADERS, API_KEY, Stack
from tests.helpers import tool_missing, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ALERT_WITHIN_SECONDS = 5.0


@pytest.fixture
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        tool_missing("Playwright for Python is not installed (.venv/bin/pip install playwright)")
    if not CHROMIUM.exists():
        tool_missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def mention(mention_id: str, published: datetime, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": mention_id,
        "text": text,
        "url": f"https://example.org/{mention_id.replace(':', '/')}",
        "published_at": published.isoformat(),
        **extra,
    }


def api_get(stack: Stack, path: str, **params: Any) -> Any:
    response = httpx.get(f"{stack.api_url}{path}", params=params, headers=API_HEADERS, timeout=5)
    response.raise_for_status()
    return response.json()


def sse_clients(stack: Stack) -> float:
    text = httpx.get(f"{stack.api_url}/metrics", timeout=5).text
    match = re.search(r"^ecoute_api_sse_clients (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_live_page_shows_a_spike_alert_live_and_acks_it(browser: Browser, stack: Stack) -> None:
    page: Page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))

    # A wrong key in the URL fragment: the page tries it, and asks for another one.
    page.goto(f"{stack.api_url}/#key=not-a-key")
    page.locator("#key-dialog[open]").wait_for(timeout=5000)
    assert "invalid API key" in page.locator("#key-error").inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-page-key.png"))
    assert "#key" not in page.url, "the key must leave the address bar once read"
    page.fill("#key-input", API_KEY)
    page.click("#key-form button[type=submit]")
    page.locator("body[data-ready=true]").wait_for(timeout=10_000)
    assert page.evaluate("localStorage.getItem('ecoute.apiKey')") == API_KEY
    assert not page.locator("#key-dialog").is_visible()
    assert page.locator(".tile").evaluate_all("tiles => tiles.map(t => t.dataset.brand)") == ["acme", "globex"]
    page.locator("#stream-status[data-state=live]").wait_for(timeout=10_000)
    wait_until(lambda: sse_clients(stack) >= 1, timeout=10, what="the page's SSE stream to be open on the API")

    # 40 quiet minutes (the alert rule's warm-up and baseline), and a question that needs an answer.
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    calm = [
        mention(
            f"calm:{i}",
            now - timedelta(minutes=45 - i),
            f"acme calm post number {i}, the acme battery and its price again",
            author={"id": f"calm-author-{i % 17}", "handle": f"calm{i % 17}", "followers": 100 + i},
        )
        for i in range(40)
    ]
    question = mention(
        "ask:1",
        now - timedelta(minutes=20),
        "Does anyone know why my acme phone battery dies so fast?",
        author={"id": "t2_jane", "handle": "jane", "followers": 900},
    )
    stack.post_mentions([*calm, question])
    wait_until(lambda: stack.kpis("acme", "1h")["mentions"] == 41, timeout=30, what="the baseline to be counted")

    # The tile shows the API's count (the page refreshes every few seconds); the charts and lists fill in.
    acme_tile = page.locator('.tile[data-brand="acme"]')
    acme_tile.locator(".tile-mentions").filter(has_text=re.compile(r"^41$")).wait_for(timeout=10_000)
    page.locator('#topics .hbar-label:text-is("pricing")').wait_for(timeout=10_000)
    page.locator("#authors th").filter(has_text="@calm").first.wait_for(timeout=10_000)
    assert page.locator("#volume-chart svg .bar rect.vol").count() >= 20

    # The question is in the inbox; "Mark handled" takes it out, on the page and in the API.
    item = page.locator('#inbox .mention[data-mention-id="ask:1"]')
    item.wait_for(timeout=10_000)
    assert "question" in item.locator(".chips").inner_text()
    item.get_by_role("button", name=re.compile("Mark the mention by @jane handled")).click()
    item.wait_for(state="detached", timeout=5000)
    inbox = api_get(stack, "/v1/brands/acme/inbox")
    assert "ask:1" not in [m["id"] for m in inbox["items"]]
    assert inbox["response_time"]["count"] == 1

    # The spike: within 5 s of posting it, the alert is in the live feed (pushed over SSE).
    assert page.locator("#alert-feed .alert").count() == 0
    spike = [
        mention(f"spike:{i}", now - timedelta(seconds=i % 50), f"acme spike post number {i}, the acme battery again")
        for i in range(60)
    ]
    posted = time.monotonic()
    stack.post_mentions(spike)
    alert_item = page.locator('#alert-feed .alert[data-kind="volume_spike"]')
    alert_item.wait_for(timeout=ALERT_WITHIN_SECONDS * 1000)
    seen_after = time.monotonic() - posted
    assert seen_after < ALERT_WITHIN_SECONDS
    assert page.locator("#stream-status").get_attribute("data-state") == "live"
    alert_id = alert_item.get_attribute("data-alert-id")
    assert alert_id and alert_item.get_attribute("data-brand") == "acme"
    assert alert_item.get_attribute("data-acked") == "false"
    assert "acme" in alert_item.locator(".alert-message").inner_text()
    sample = alert_item.locator(".samples a").first.get_attribute("href", timeout=1000)
    assert sample is not None and sample.startswith("https://example.org/spike/")
    assert "1 open" in page.locator("#alerts-count").inner_text()

    # Ack from the page; the API shows it acked.
    alert_item.get_by_role("button", name=re.compile("^Acknowledge")).click()
    page.locator(f'#alert-feed .alert[data-alert-id="{alert_id}"][data-acked="true"]').wait_for(timeout=5000)
    assert "Acknowledged" in alert_item.locator(".alert-actions").inner_text()
    (listed,) = [a for a in api_get(stack, "/v1/alerts") if a["id"] == alert_id]
    assert listed["acked"] is True and listed["acked_at"]

    # The tile caught up with the spike, then the record of how it looks.
    total = stack.kpis("acme", "1h")["mentions"]
    acme_tile.locator(".tile-mentions").filter(has_text=re.compile(rf"^{total}$")).wait_for(timeout=10_000)
    page.locator("#volume-chart .marker").first.wait_for(timeout=5000)  # the alert, marked where it fired
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "live-page.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / "live-page-narrow.png"), full_page=True)
    assert page_errors == [], f"JavaScript errors on the page: {page_errors}"
    print(f"alert shown {seen_after:.2f} s after the spike was posted")
