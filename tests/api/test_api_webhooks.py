"""Webhooks over real HTTP and real Kafka: signed JSON and Slack bodies, brand filter, retries with backoff,
delivery status, history not delivered, a restart that resumes retries without delivering twice, and the
sender's refusals (private address, redirect)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ecoute.brokers import TansuBroker
from schemas import Topics, WebhookConfig, ensure_topics, to_dict, utc_now
from services.api.settings import ApiSettings
from services.api.webhooks import (
    WebhookSender,
    new_delivery,
    parse_networks,
    render_body,
)
from tests.api.api_factories import alert
from tests.api.api_server import ApiServer
from tests.api.test_api_kafka import metric, producer, send_alerts, wait_ready
from tests.api.webhook_receiver import WebhookReceiver
from tests.helpers import async_wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("clean_env")]

ADMIN = "webhook-admin-key"
SECRET = "whsec-test-0123"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(secret=SECRET, fail_first=2).start()
    yield server
    server.stop()


def hook_settings(bootstrap: str, prefix: str, tmp_path: Path, hooks: str, **extra: Any) -> ApiSettings:
    config = tmp_path / "ecoute.yaml"
    config.write_text(
        f"""
brands:
  acme: {{query: acme}}
  globex: {{query: globex}}
fetch:
  allow_networks: ["127.0.0.0/8"]
api_keys:
  - {{key: {ADMIN}, role: admin, brands: ["*"]}}
webhooks:
{hooks}
""",
        encoding="utf-8",
    )
    fast: dict[str, Any] = {"webhook_backoff_seconds": 0.2, "webhook_backoff_max_seconds": 0.5}
    return ApiSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, config=config, **{**fast, **extra})


async def dispatcher_ready(server: ApiServer, within: float = 20) -> None:
    async def ready() -> bool:
        return bool(server.app.state.dispatcher.ready)

    await async_wait_until(ready, within, what="the webhook dispatcher to own the alerts partitions")


async def deliveries(http: httpx.AsyncClient, **params: str) -> dict[str, dict[str, Any]]:
    response = await http.get("/v1/webhooks/deliveries", params=params)
    assert response.status_code == 200, response.text
    return {d["alert_id"] + " " + d["format"]: d for d in response.json()}


async def test_new_alerts_are_signed_retried_and_reported(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any, receiver: WebhookReceiver
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    now = utc_now()
    async with producer(bootstrap) as client:
        await send_alerts(client, topics, alert("acme", "history", now))  # before the API: not news
    hooks = (
        f'  - {{url: "{receiver.url("/hook")}", format: json, secret: {SECRET}, brands: [acme]}}\n'
        f'  - {{url: "{receiver.url("/slack")}", format: slack, brands: [globex]}}\n'
    )
    server: ApiServer = serve_api(hook_settings(bootstrap, topic_prefix, tmp_path, hooks))
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        await wait_ready(http)
        await dispatcher_ready(server)
        a1, g1, i1 = alert("acme", "a1", now), alert("globex", "g1", now), alert("initech", "i1", now)
        async with producer(bootstrap) as client:
            await send_alerts(client, topics, a1, g1, i1)

        async def both_delivered() -> bool:
            found = await deliveries(http, status="delivered")
            return {"a1 json", "g1 slack"} <= set(found)

        await async_wait_until(both_delivered, 20, what="a1 and g1 to be delivered")
        found = await deliveries(http)
        assert set(found) == {"a1 json", "g1 slack"}  # no history, no initech (no webhook for it)
        assert (found["a1 json"]["attempts"], found["a1 json"]["last_status_code"]) == (3, 200)
        assert found["a1 json"]["target"] == f"http://127.0.0.1:{receiver.port}/…"
        assert found["g1 slack"]["attempts"] == 3 and found["g1 slack"]["delivered_at"] is not None

        sent = receiver.for_alert("a1")
        assert [(r.path, r.status, r.headers["x-ecoute-attempt"]) for r in sent] == [
            ("/hook", 500, "1"),
            ("/hook", 500, "2"),
            ("/hook", 200, "3"),
        ]
        assert all(r.signed_ok for r in sent)  # X-Ecoute-Signature checks with the secret
        assert sent[-1].json == to_dict(a1) and sent[-1].headers["content-type"] == "application/json"
        slack = receiver.for_alert("g1")[-1]
        assert slack.path == "/slack" and slack.signed_ok is None  # no secret configured: not signed
        assert "globex" in slack.json["text"] and slack.json["blocks"][0]["type"] == "header"
        assert receiver.for_alert("history") == [] and receiver.for_alert("i1") == []

        text = (await http.get("/metrics")).text
        assert metric(text, "ecoute_api_webhook_deliveries_total", outcome="delivered") == 2
        assert metric(text, "ecoute_api_webhook_deliveries_total", outcome="retry") == 4
        assert metric(text, "ecoute_api_webhook_pending") == 0


async def test_a_restart_resumes_pending_retries_and_never_delivers_twice(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any, receiver: WebhookReceiver
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    hooks = f'  - {{url: "{receiver.url()}", format: json, secret: {SECRET}, brands: ["*"]}}\n'
    # Retries 1.5–3 s apart: the first API stops between two attempts.
    settings = hook_settings(
        bootstrap, topic_prefix, tmp_path, hooks, webhook_backoff_seconds=3.0, webhook_backoff_max_seconds=3.0
    )
    first: ApiServer = serve_api(settings)
    await dispatcher_ready(first)
    a1 = alert("acme", "a1", utc_now())
    async with producer(bootstrap) as client:
        await send_alerts(client, topics, a1)

    async def first_attempt_recorded() -> bool:
        ledger = first.app.state.dispatcher.ledger.values()
        return any(d.attempts == 1 for d in ledger) and len(receiver.for_alert("a1")) == 1

    await async_wait_until(first_attempt_recorded, 20, what="the first (failed) attempt")
    first.stop()
    before = [(d.status, d.attempts) for d in first.app.state.dispatcher.ledger.values()]
    assert before == [("pending", 1)]

    second: ApiServer = serve_api(settings)
    async with httpx.AsyncClient(base_url=second.url, timeout=10, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        await wait_ready(http)

        async def delivered() -> bool:
            return "a1 json" in await deliveries(http, status="delivered")

        await async_wait_until(delivered, 30, what="a1 to be delivered after the restart")
        state = (await deliveries(http))["a1 json"]
        assert (state["status"], state["attempts"]) == ("delivered", 3)
    second.stop()

    # A third start reads the delivered state back: a1 is not sent again, a new alert is.
    third: ApiServer = serve_api(settings)
    await dispatcher_ready(third)
    async with producer(bootstrap) as client:
        await send_alerts(client, topics, alert("acme", "a2", utc_now()))
    async with httpx.AsyncClient(base_url=third.url, timeout=10, headers={"Authorization": f"Bearer {ADMIN}"}) as http:

        async def a2_delivered() -> bool:
            return "a2 json" in await deliveries(http, status="delivered")

        await async_wait_until(a2_delivered, 30, what="a2 to be delivered")
        assert (await deliveries(http))["a1 json"]["attempts"] == 3
    statuses = [r.status for r in receiver.for_alert("a1")]
    assert statuses == [500, 500, 200]  # one success, never repeated
    assert [r.status for r in receiver.for_alert("a2")] == [500, 500, 200]


async def test_sender_refuses_private_addresses_and_redirects(receiver: WebhookReceiver) -> None:
    receiver.fixed["/moved"] = (302, {"location": receiver.url("/hook")})
    receiver.fixed["/gone"] = (410, {})
    receiver.fail_first = 0
    item = alert("acme", "s1", utc_now())
    loopback = parse_networks(["127.0.0.0/8"])

    async def post(url: str, allow: Any, secret: str | None = SECRET) -> Any:
        hook = WebhookConfig(url=url, secret=secret)
        sender = WebhookSender(allow, timeout=5)
        try:
            return await sender.post(hook, render_body(item, hook.format), new_delivery(item, hook, 0, utc_now()))
        finally:
            await sender.aclose()

    async with asyncio.timeout(20):
        ok = await post(receiver.url("/hook"), loopback)
        assert (ok.delivered, ok.status_code) == (True, 200)
        # A host name that resolves to loopback, with no allow-list: refused before connecting, for good.
        refused = await post(receiver.url("/hook", host="localhost"), ())
        assert not refused.delivered and refused.permanent and "loopback" in (refused.error or "")
        moved = await post(receiver.url("/moved"), loopback)
        assert (moved.delivered, moved.status_code, moved.permanent) == (False, 302, False)
        assert "not followed" in (moved.error or "")
        gone = await post(receiver.url("/gone"), loopback)
        assert (gone.status_code, gone.permanent) == (410, True)
    # Only the allowed request and the two answered on purpose reached the server: the redirect was not followed.
    assert [r.path for r in receiver.received] == ["/hook", "/moved", "/gone"]


@pytest.fixture(params=["tansu", "kafka"])
def any_broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """The embedded broker `ecoute run` starts (Tansu: no idempotent producers) and Apache Kafka."""
    if request.param == "kafka":
        yield request.getfixturevalue("kafka").bootstrap_servers
        return
    broker = TansuBroker().start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


async def test_webhooks_deliver_signed_on_the_embedded_broker_and_on_kafka(
    any_broker: str, topic_prefix: str, tmp_path: Path, serve_api: Any, receiver: WebhookReceiver
) -> None:
    # Every producer follows ECOUTE_KAFKA_IDEMPOTENCE=auto (schemas.producers): the dispatcher's and the
    # ack writer's start on Tansu too, which refuses idempotent producers.
    receiver.fail_first = 0
    topics = Topics(topic_prefix)
    await ensure_topics(any_broker, topics, partitions=1)
    hooks = f'  - {{url: "{receiver.url("/hook")}", format: json, secret: {SECRET}, brands: [acme]}}\n'
    server: ApiServer = serve_api(hook_settings(any_broker, topic_prefix, tmp_path, hooks, partitions=1))
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        await wait_ready(http)
        # Tansu holds a group join for a while before it assigns partitions.
        await dispatcher_ready(server, within=60)
        a1 = alert("acme", "a1", utc_now())
        async with producer(any_broker) as client:
            await send_alerts(client, topics, a1)

        async def delivered() -> bool:
            return "a1 json" in await deliveries(http, status="delivered")

        await async_wait_until(delivered, 30, what="a1 to be delivered and its state read back")
        sent = receiver.for_alert("a1")
        assert [(r.path, r.status, r.signed_ok) for r in sent] == [("/hook", 200, True)]
        assert sent[0].json == to_dict(a1)
        acked = await http.post("/v1/alerts/a1/ack", json={"by": "jane"})
        assert (acked.status_code, acked.json()["acked_by"]) == (200, "jane"), acked.text
