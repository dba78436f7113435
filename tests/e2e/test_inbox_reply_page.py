"""The live page's inbox replies and follows with the brand's account, in headless Chromium: the API on real
Kafka, the platforms a loopback server speaking Mastodon's REST API and Bluesky's XRPC (tests/api/fake_social.py).
A responder key sees Reply and Follow on a Mastodon mention; the reply reaches the fake once, in the post's thread
and naming the author, the mention leaves the inbox; a read-only key sees no such buttons."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from schemas import Topics, ensure_topics
from services.api.app import create_app
from services.api.settings import ApiSettings
from tests.api.api_server import ApiServer
from tests.api.fake_social import FakeSocial
from tests.api.test_engage import APP_PASSWORD, HANDLE, KEYS, MASTO_ID, SECRETS, TOKEN, seed, write_config
from tests.e2e.test_live_page import ARTIFACTS, browser  # noqa: F401  (the Chromium fixture)
from tests.helpers import wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.usefixtures("clean_env")]


def in_thread(work: Coroutine[Any, Any, object]) -> None:
    """Run a coroutine to its end on a loop of its own (the test's thread may already have one running)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(work)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive() and not errors, errors


@pytest.fixture
def api(bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[tuple[ApiServer, FakeSocial]]:
    fake = FakeSocial(token=TOKEN, handle=HANDLE, password=APP_PASSWORD)
    fake.start()
    fake.known_statuses["https://social.example/@jane/111000"] = "9001"
    fake.known_accounts["jane@social.example"] = "4242"
    topics = Topics(topic_prefix)
    in_thread(ensure_topics(bootstrap, topics, partitions=2))
    in_thread(seed(bootstrap, topics))
    settings = ApiSettings(
        kafka_bootstrap_servers=bootstrap, topic_prefix=topic_prefix, config=write_config(tmp_path, fake)
    )
    server = ApiServer(create_app(settings)).start()
    wait_until(lambda: httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200, 30, what="the API views")
    try:
        yield server, fake
    finally:
        server.stop()
        fake.stop()


def test_the_inbox_replies_and_follows_with_the_brand_account(
    browser: Browser,  # noqa: F811
    api: tuple[ApiServer, FakeSocial],
) -> None:
    server, fake = api
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.goto(f"{server.url}/#key={KEYS['responder']}")
    page.locator("body[data-ready=true]").wait_for(timeout=15_000)
    item = page.locator(f".mention[data-mention-id='{MASTO_ID}']")
    item.wait_for(timeout=10_000)
    # An RSS mention has nothing to reply with; the Mastodon one has both buttons.
    assert page.locator(".mention[data-mention-id='rss:abc'] .reply-form").count() == 0
    item.get_by_role("button", name="Reply to @jane@social.example on mastodon").click()
    item.locator("textarea.reply-text").fill("Sorry about that, could you DM us?")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "inbox-reply.png"))
    item.get_by_role("button", name="Send reply").click()
    item.locator(".action-status", has_text="Replied").wait_for(timeout=10_000)
    assert [(s["in_reply_to_id"], s["content"]) for s in fake.statuses] == [
        ("9001", "<p>@jane@social.example Sorry about that, could you DM us?</p>")
    ]
    reply_link = item.locator(".action-status a")
    assert reply_link.get_attribute("href") == fake.statuses[0]["url"]

    item.get_by_role("button", name="Follow @jane@social.example on mastodon").click()
    item.locator(".action-status", has_text="Following @jane@social.example").wait_for(timeout=10_000)
    assert fake.follows == ["4242"]

    # The answered mention is gone from the inbox after the next refresh, here and in the API.
    page.locator(f".mention[data-mention-id='{MASTO_ID}']").wait_for(state="detached", timeout=15_000)
    inbox = httpx.get(
        f"{server.url}/v1/brands/acme/inbox", headers={"Authorization": f"Bearer {KEYS['read']}"}, timeout=5
    ).json()
    assert MASTO_ID not in [m["id"] for m in inbox["items"]]
    html = page.content()
    assert not [secret for secret in SECRETS if secret != KEYS["responder"] and secret in html]
    assert page_errors == []

    # A read-only key sees the inbox without Reply or Follow.
    reader = browser.new_page(viewport={"width": 1440, "height": 1000})
    reader.goto(f"{server.url}/#key={KEYS['read']}")
    reader.locator("body[data-ready=true]").wait_for(timeout=15_000)
    reader.locator(".mention").first.wait_for(timeout=10_000)
    assert reader.get_by_role("button", name="Send reply").count() == 0
    assert reader.locator("button", has_text="Follow").count() == 0
    assert reader.locator("button", has_text="Mark handled").count() >= 1
