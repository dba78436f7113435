"""The KPI hot path (services/api/hotpath.py): which requests it answers itself, and that its answers are the
framework's — the same API served with and without it, over real HTTP from the same Kafka topics, answers
every request of a matrix byte for byte the same (status, headers, body) and counts the same metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from schemas import Topics, dump, ensure_topics
from schemas.config import ApiKey
from services.api.auth import AccessGuard, KeyRing, RateLimiter
from services.api.hotpath import KpisHotPath, kpis_brand, kpis_window
from services.api.settings import ApiSettings
from services.api.views import Views, floor_minute
from tests.api.api_factories import MINUTE, kpi, scored
from tests.api.api_server import ApiServer
from tests.api.test_api_kafka import producer, send_kpis, wait_ready

NOW = datetime(2025, 3, 14, 12, 34, 56, tzinfo=UTC)
ADMIN, ACME = "hot-admin-key", "hot-acme-key"
CONFIG = f"""
brands:
  acme: {{query: acme}}
  globex: {{query: globex}}
api_keys:
  - {{key: {ADMIN}, role: admin, brands: ["*"]}}
  - {{key: {ACME}, role: read, brands: [acme]}}
"""


# ---------------------------------------------------------------------------------------------- which requests


def test_the_path_and_window_are_read_as_the_route_reads_them() -> None:
    assert kpis_brand("/v1/brands/acme/kpis") == "acme"
    assert kpis_brand("/v1/brands/a b/kpis") == "a b"  # the path arrives percent-decoded
    for other in ("/v1/brands//kpis", "/v1/brands/a/b/kpis", "/v1/brands/acme/kpis/", "/v1/brands/acme/mentions"):
        assert kpis_brand(other) is None, other
    assert kpis_window(b"") == "1h"
    assert kpis_window(b"window=5m") == "5m"
    assert kpis_window(b"window=1m&window=24h") == "24h"  # the last one wins, as in FastAPI
    assert kpis_window(b"other=1&window=%31m") == "1m"
    assert kpis_window(b"other=1") == "1h"
    for invalid in (b"window=", b"window=2m", b"window=1H", b"window=24h&window=x"):
        assert kpis_window(invalid) is None, invalid


class Call:
    """One request sent straight to an ASGI app, with what it answered."""

    def __init__(self, method: str, path: str, query: bytes = b"", key: str | None = ADMIN) -> None:
        headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
        self.scope: Scope = {
            "type": "http",
            "method": method,
            "path": path,
            "root_path": "",
            "query_string": query,
            "headers": headers,
        }
        self.sent: list[Message] = []

    async def run(self, app: Any) -> int:
        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            self.sent.append(message)

        await app(self.scope, receive, send)
        status: int = self.sent[0]["status"]
        return status


class Framework:
    """Stands for the rest of the stack behind the middleware: it answers 599 and records what reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def test_the_hot_path_answers_the_kpi_route_and_passes_everything_else_on_uncharged() -> None:
    views = Views(configured_brands=["acme", "globex"])
    views.apply_kpi(kpi("acme", floor_minute(NOW), mentions=3), NOW)
    limiter = RateLimiter(rate=1.0, burst=100, clock=lambda: 0.0)  # time stands still: no refill
    keys = [ApiKey(key=ADMIN, role="admin", brands=["*"]), ApiKey(key=ACME, role="read", brands=["acme"])]
    framework = Framework()
    route = object()
    hot = KpisHotPath(framework, views, AccessGuard(KeyRing(keys), limiter), lambda: NOW, route)  # type: ignore[arg-type]

    answered = Call("GET", "/v1/brands/acme/kpis", b"window=5m")
    assert await answered.run(hot) == 200
    assert answered.sent[1]["body"] == views.kpis_json("acme", "5m", NOW)
    assert dict(answered.sent[0]["headers"])[b"content-type"] == b"application/json"
    assert answered.scope["route"] is route  # so the latency histogram labels it with the route template
    assert await Call("GET", "/v1/brands/globex/kpis", key=ACME).run(hot) == 404
    assert await Call("GET", "/v1/brands/acme/kpis", key=None).run(hot) == 401
    assert await Call("GET", "/v1/brands/acme/kpis", key="wrong").run(hot) == 401
    assert framework.paths == []
    tokens = limiter._buckets  # one admin and one acme request charged so far (unknown keys are never charged)
    charged = {key_id: bucket.tokens for key_id, bucket in tokens.items()}
    assert sorted(charged.values()) == [99.0, 99.0]

    passed = [
        Call("GET", "/v1/brands/acme/kpis", b"window=2m"),  # 422 is the framework's
        Call("GET", "/v1/brands/acme/kpis", b"window="),
        Call("HEAD", "/v1/brands/acme/kpis"),
        Call("GET", "/v1/brands/acme/kpis/"),
        Call("GET", "/v1/brands/acme/mentions"),
        Call("GET", "/v1/brands"),
    ]
    for call in passed:
        assert await call.run(hot) == 599, call.scope
    assert framework.paths == [call.scope["path"] for call in passed]
    assert {key_id: bucket.tokens for key_id, bucket in tokens.items()} == charged  # not charged twice


# ---------------------------------------------------------------------------------------------- same answers


def hot_settings(bootstrap: str, prefix: str, tmp_path: Path, **extra: Any) -> ApiSettings:
    config = tmp_path / "ecoute.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return ApiSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, config=config, **extra)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# (method, path with query, headers): everything a client may send to the route, right or wrong.
MATRIX: list[tuple[str, str, Any, int]] = [
    ("GET", "/v1/brands/acme/kpis", {}, 401),
    ("GET", "/v1/brands/acme/kpis", bearer("wrong-key"), 401),
    ("GET", "/v1/brands/acme/kpis", {"Authorization": f"Basic {ADMIN}"}, 401),
    ("GET", "/v1/brands/acme/kpis", {"Authorization": "Bearer"}, 401),
    ("GET", "/v1/brands/acme/kpis", {"Authorization": f"bearer {ADMIN}"}, 200),
    ("GET", "/v1/brands/acme/kpis", [("Authorization", "Bearer wrong-key"), ("Authorization", f"Bearer {ADMIN}")], 401),
    ("GET", "/v1/brands/acme/kpis", bearer(ADMIN), 200),
    ("GET", "/v1/brands/acme/kpis?window=1m", bearer(ADMIN), 200),
    ("GET", "/v1/brands/acme/kpis?window=5m", bearer(ADMIN), 200),
    ("GET", "/v1/brands/acme/kpis?window=1h", bearer(ACME), 200),
    ("GET", "/v1/brands/acme/kpis?window=24h", bearer(ACME), 200),
    ("GET", "/v1/brands/acme/kpis?window=1m&window=24h", bearer(ADMIN), 200),
    ("GET", "/v1/brands/acme/kpis?other=1", bearer(ADMIN), 200),
    ("GET", "/v1/brands/acme/kpis?window=2m", bearer(ADMIN), 422),
    ("GET", "/v1/brands/acme/kpis?window=2m", {}, 401),
    ("GET", "/v1/brands/acme/kpis?window=", bearer(ADMIN), 422),
    ("GET", "/v1/brands/globex/kpis", bearer(ADMIN), 200),
    ("GET", "/v1/brands/globex/kpis", bearer(ACME), 404),
    ("GET", "/v1/brands/hooli/kpis", bearer(ADMIN), 404),
    ("GET", "/v1/brands/hooli/kpis", {}, 401),
    ("GET", "/v1/brands/ac%20me/kpis", bearer(ADMIN), 200),
    ("GET", "/v1/brands/%C3%A9coute/kpis", bearer(ADMIN), 404),
    ("GET", "/v1/brands/acme/kpis/", bearer(ADMIN), 307),
    ("HEAD", "/v1/brands/acme/kpis", bearer(ADMIN), 405),
    ("POST", "/v1/brands/acme/kpis", bearer(ADMIN), 405),
]
COMPARED_HEADERS = ("content-type", "content-length", "www-authenticate", "retry-after", "location", "allow")


async def answers(url: str, requests: list[tuple[str, str, Any, int]]) -> list[tuple[Any, ...]]:
    found = []
    async with httpx.AsyncClient(base_url=url, timeout=10, follow_redirects=False) as http:
        await wait_ready(http)
        for method, path, headers, _ in requests:
            response = await http.request(method, path, headers=headers)
            kept = {name: response.headers.get(name) for name in COMPARED_HEADERS}
            if kept["location"]:
                kept["location"] = kept["location"].removeprefix(url)  # the servers' ports differ
            found.append((method, path, response.status_code, kept, response.content))
    return found


async def request_metrics(url: str) -> list[str]:
    """The samples counting requests and refusals (latency sums and buckets vary; counts must not)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    counted = ("ecoute_api_request_seconds_count", "ecoute_api_unauthorized_total", "ecoute_api_rate_limited_total")
    # /readyz is polled until ready, as often as each server needs
    return sorted(line for line in text.splitlines() if line.startswith(counted) and 'route="/readyz"' not in line)


@pytest.mark.kafka
@pytest.mark.usefixtures("clean_env")
async def test_with_and_without_the_hot_path_the_api_answers_the_same(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    m0 = floor_minute(NOW)
    async with producer(bootstrap) as client:
        await send_kpis(
            client,
            topics,
            kpi("acme", m0, mentions=4, positive=3, negative=1, sentiment_sum=1.2, topics={"pricing": 2}),
            kpi("acme", m0 - 3 * MINUTE, mentions=2, neutral=2, sources={"rss": 2}),
            kpi("acme", m0 - 30 * MINUTE, mentions=7, positive=7, reach=900),
        )
        for mention in (scored("acme", "m-1", m0, author="ann"), scored("ac me", "m-2", m0, author="bob")):
            await client.send_and_wait(topics.mentions_scored, dump(mention), key=mention.brand.encode())

    settings = hot_settings(bootstrap, topic_prefix, tmp_path)
    hot = serve_api(settings, clock=lambda: NOW)
    plain: ApiServer = serve_api(settings, clock=lambda: NOW, kpis_hot_path=False)
    hot_answers, plain_answers = await answers(hot.url, MATRIX), await answers(plain.url, MATRIX)
    for hot_answer, plain_answer in zip(hot_answers, plain_answers, strict=True):
        assert hot_answer == plain_answer
    assert [answer[2] for answer in hot_answers] == [status for *_, status in MATRIX]
    last_wins = next(a[4] for a in hot_answers if a[1] == "/v1/brands/acme/kpis?window=1m&window=24h")
    assert b'"window":"24h"' in last_wins
    assert await request_metrics(hot.url) == await request_metrics(plain.url)


@pytest.mark.kafka
@pytest.mark.usefixtures("clean_env")
async def test_with_and_without_the_hot_path_the_rate_limit_answers_429_the_same(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    await ensure_topics(bootstrap, Topics(topic_prefix), partitions=1)
    settings = hot_settings(bootstrap, topic_prefix, tmp_path, api_rate_limit_per_second=0.2, api_rate_limit_burst=3)
    servers = [serve_api(settings, clock=lambda: NOW), serve_api(settings, clock=lambda: NOW, kpis_hot_path=False)]
    requests = [("GET", "/v1/brands/acme/kpis", bearer(ACME), 200)] * 3 + [
        ("GET", "/v1/brands/acme/kpis", bearer(ACME), 429),
        ("GET", "/v1/brands/acme/kpis", bearer(ADMIN), 200),  # another key, another bucket
    ]
    hot_answers, plain_answers = [await answers(server.url, requests) for server in servers]
    assert [a[2] for a in hot_answers] == [a[2] for a in plain_answers] == [status for *_, status in requests]
    limited = hot_answers[3]
    assert 1 <= int(limited[3]["retry-after"]) <= 5  # one token every 5 s
    assert limited[3:] == plain_answers[3][3:]
    assert await request_metrics(servers[0].url) == await request_metrics(servers[1].url)
