"""Acks, handled marks and the inbox against real Kafka: written once to the compacted actions topic, seen by
another replica and by a restarted API, with the response-time KPI."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from schemas import Topics, dump, ensure_topics, utc_now
from services.api.views import floor_minute
from tests.api.api_factories import MINUTE, alert, scored
from tests.api.api_server import ApiServer
from tests.api.test_api_kafka import producer, send_alerts, settings_for, topic_configs, wait_ready
from tests.helpers import async_wait_until, latest_by_key, read_all

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("clean_env")]


async def test_acks_and_handled_marks_reach_every_replica_and_survive_a_restart(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    now = floor_minute(utc_now()) + timedelta(seconds=30)
    m0 = floor_minute(now)
    async with producer(bootstrap) as client:
        await send_alerts(client, topics, alert("acme", "a1", m0 - 3 * MINUTE), alert("acme", "a2", m0))
        for mention in (
            scored("acme", "q1", m0 - 20 * MINUTE, text="Does anyone know if acme ships to Canada", reach=900),
            scored("acme", "n1", m0 - 10 * MINUTE, label="negative", reach=50),
            scored("acme", "n2", m0 - 5 * MINUTE, label="negative", reach=50),
            scored("acme", "ok", m0, label="positive", reach=10_000),
        ):
            await client.send_and_wait(topics.mentions_scored, dump(mention), key=b"acme")
    settings = settings_for(bootstrap, topic_prefix, tmp_path)
    first: ApiServer = serve_api(settings, clock=lambda: now)
    second: ApiServer = serve_api(settings, clock=lambda: now)

    async with (
        httpx.AsyncClient(base_url=first.url, timeout=10) as one,
        httpx.AsyncClient(base_url=second.url, timeout=10) as two,
    ):
        await wait_ready(one)
        await wait_ready(two)
        inbox = (await one.get("/v1/brands/acme/inbox")).json()
        assert [item["id"] for item in inbox["items"]] == ["q1", "n2", "n1"]  # reach, then recency
        assert inbox["items"][0]["reasons"] == ["question"] and inbox["pending"] == 3
        assert inbox["response_time"] == {
            "brand": "acme",
            "window": "24h",
            "count": 0,
            "median_seconds": None,
            "p90_seconds": None,
        }

        acked = await one.post("/v1/alerts/a1/ack", json={"by": "jane", "note": "calling the press office"})
        assert acked.status_code == 200
        assert (acked.json()["acked"], acked.json()["acked_by"], acked.json()["ack_note"]) == (
            True,
            "jane",
            "calling the press office",
        )
        # Read-your-writes on the replica that took it; the other one learns it from the topic.
        listed = {a["id"]: a for a in (await one.get("/v1/alerts")).json()}
        assert listed["a1"]["acked"] is True and listed["a2"]["acked"] is False
        assert listed["a1"]["acked_at"] == now.isoformat().replace("+00:00", "Z")

        async def replica_sees_ack() -> bool:
            alerts = {a["id"]: a for a in (await two.get("/v1/alerts")).json()}
            return bool(alerts["a1"]["acked"]) and alerts["a1"]["acked_by"] == "jane"

        await async_wait_until(replica_sees_ack, 15, what="the second replica to show the ack")
        again = await two.post("/v1/alerts/a1/ack", json={"by": "someone else"})
        assert again.status_code == 200 and again.json()["acked_by"] == "jane"  # the first ack stands
        assert (await two.post("/v1/alerts/a2/ack")).json()["acked_by"] is None  # the body is optional

        handled = await two.post("/v1/mentions/q1/handled", json={"brand": "acme", "by": "tom"})
        assert handled.status_code == 200
        body = handled.json()
        assert (body["handled"], body["handled_by"], body["response_seconds"]) == (True, "tom", 20 * 60 + 30)

        async def first_inbox_without_q1() -> bool:
            items = (await one.get("/v1/brands/acme/inbox")).json()["items"]
            return [item["id"] for item in items] == ["n2", "n1"]

        await async_wait_until(first_inbox_without_q1, 15, what="the first replica's inbox to drop q1")
        response_time = (await one.get("/v1/brands/acme/response-time")).json()
        assert (response_time["count"], response_time["median_seconds"], response_time["p90_seconds"]) == (
            1,
            1230.0,
            1230.0,
        )

        # Errors: unknown alert or mention, a body without brand.
        assert (await one.post("/v1/alerts/nope/ack")).status_code == 404
        assert (await one.post("/v1/mentions/nope/handled", json={"brand": "acme"})).status_code == 404
        assert (await one.post("/v1/mentions/n1/handled", json={"by": "x"})).status_code == 422
        assert (await one.post("/v1/mentions/n1/handled", json={"brand": "hooli"})).status_code == 404
        assert (await one.post("/v1/alerts/a2/ack", json={"by": 5})).status_code == 422

    # On the topic: one record per action, keyed for compaction, on a compacted topic.
    records = await read_all(bootstrap, topics.alerts_actions)
    assert sorted(key for key, _, _ in records if key is not None) == [b"alert:a1", b"alert:a2", b"mention:acme:q1"]
    latest = await latest_by_key(bootstrap, topics.alerts_actions)
    ack_value = latest[b"alert:a1"]
    assert ack_value is not None and orjson.loads(ack_value)["schema"] == "alert-ack/1"
    configs = await topic_configs(bootstrap, topics.alerts_actions)
    assert configs[topics.alerts_actions]["cleanup.policy"] == "compact"

    # Both replicas gone: a fresh one rebuilds acks, handled marks and the response time from the topics.
    first.stop()
    second.stop()
    restarted: ApiServer = serve_api(settings, clock=lambda: now)
    async with httpx.AsyncClient(base_url=restarted.url, timeout=10) as http:
        await wait_ready(http)
        alerts = {a["id"]: a for a in (await http.get("/v1/alerts")).json()}
        assert (alerts["a1"]["acked_by"], alerts["a2"]["acked"]) == ("jane", True)
        inbox = (await http.get("/v1/brands/acme/inbox")).json()
        assert [item["id"] for item in inbox["items"]] == ["n2", "n1"]
        assert inbox["response_time"]["count"] == 1
