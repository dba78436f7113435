"""A volume spike travels ingest → analyzer → alerts topic → API list and SSE stream."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import API_HEADERS, Stack
from tests.helpers import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def mention(i: int, published: datetime, kind: str) -> dict[str, Any]:
    return {
        "id": f"{kind}:{i}",
        "text": f"acme {kind} post number {i}, the acme battery again",
        "url": f"https://example.org/{kind}/{i}",
        "published_at": published.isoformat(),
        "author": {"id": f"{kind}-author-{i % 17}", "followers": 100 + i},
    }


def test_volume_spike_reaches_the_api_and_the_sse_stream(stack: Stack) -> None:
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    # 40 quiet minutes, one mention a minute: the warm-up and the baseline.
    baseline = [mention(i, now - timedelta(minutes=45 - i), "calm") for i in range(40)]
    stack.post_mentions(baseline)
    wait_until(lambda: stack.kpis("acme", "24h")["mentions"] == 40, timeout=30, what="the baseline to be counted")
    assert httpx.get(f"{stack.api_url}/v1/alerts", headers=API_HEADERS).json() == []

    received: list[dict[str, Any]] = []
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET", f"{stack.api_url}/v1/alerts/stream", headers=API_HEADERS, timeout=httpx.Timeout(5, read=40)
        ) as stream:
            connected.set()
            event = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "alert":
                    received.append(orjson.loads(line.split(":", 1)[1]))
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10), "the SSE stream did not open"

    spike = [mention(i, now - timedelta(seconds=i % 50), "spike") for i in range(60)]
    stack.post_mentions(spike)
    listener.join(timeout=30)
    assert received, "no alert arrived on the SSE stream within 30 s"
    alert = received[0]
    assert alert["brand"] == "acme" and alert["kind"] == "volume_spike"
    # It fires as soon as the window crosses the threshold, which may be before all 60 are counted.
    assert 20 <= alert["observed"] <= 60 and alert["observed"] > alert["threshold"] >= alert["baseline"]
    assert any(url.startswith("https://example.org/spike/") for url in alert["evidence"]["sample_mentions"])
    listed = wait_until(
        lambda: httpx.get(f"{stack.api_url}/v1/alerts", headers=API_HEADERS).json(), timeout=10, what="the alert list"
    )
    assert [a["id"] for a in listed] == [alert["id"]]
