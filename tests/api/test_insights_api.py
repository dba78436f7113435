"""The insight routes over real HTTP (uvicorn in a thread): answers, 404 for unknown or hidden brands, 422s."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request

from services.api.insights import router
from services.api.insights_views import Insights
from services.api.views import Views
from tests.api.api_server import ApiServer
from tests.api.test_insights_views import DAY, M0, MINUTE, NOW, feed_love, mention, snapshot

Serve = Callable[..., httpx.Client]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """serve(insights, **state) → an HTTP client of a tiny app mounting the insight router."""
    servers: list[ApiServer] = []
    clients: list[httpx.Client] = []

    def start(insights: Insights, **state: Any) -> httpx.Client:
        app = FastAPI()
        app.include_router(router)
        app.state.insights = insights
        for name, value in state.items():
            setattr(app.state, name, value)
        server = ApiServer(app).start()
        servers.append(server)
        client = httpx.Client(base_url=server.url, timeout=10)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def fed_insights() -> Insights:
    insights = Insights({"acme": ["globex"], "globex": []}, clock=lambda: NOW)
    insights.apply_kpi(snapshot("acme", M0, mentions=4, positive=3, negative=1, sentiment_sum=1.0, reach=90))
    feed_love(insights)
    insights.apply_scored(
        mention("acme", "r1", M0, author="bob", label="positive", reach=500, likes=7, site="news.example", source="rss")
    )
    insights.apply_scored(mention("globex", "g1", M0, label="negative"))
    for i in range(3):
        insights.apply_scored(mention("acme", f"t{i}", M0 - i * MINUTE, text="Outage at the data center"))
    return insights


def test_every_route_answers_from_the_insights(serve: Serve) -> None:
    http = serve(fed_insights())

    series = http.get("/v1/brands/acme/timeseries", params={"bucket": "1m"})
    assert series.status_code == 200
    body = series.json()
    assert (body["since"], body["until"], len(body["points"])) == ("2025-03-14T11:35:00Z", "2025-03-14T12:35:00Z", 60)
    assert body["points"][-1] == {
        "start": "2025-03-14T12:34:00Z",
        "mentions": 4,
        "positive": 3,
        "neutral": 0,
        "negative": 1,
        "unscored": 0,
        "sentiment_avg": 0.25,
        "engagement": {"likes": 0, "shares": 0, "comments": 0},
        "reach": 90,
    }
    ranged = http.get(
        "/v1/brands/acme/timeseries",
        params={"bucket": "1m", "since": "2025-03-14T13:33:30+01:00", "until": "2025-03-14T12:35:00Z"},
    ).json()
    assert [(p["start"], p["mentions"]) for p in ranged["points"]] == [
        ("2025-03-14T12:33:00Z", 0),
        ("2025-03-14T12:34:00Z", 4),
    ]

    authors = http.get("/v1/brands/acme/authors", params={"window": "1h", "limit": 1}).json()
    assert authors["ranking"] == "score = reach + 10 × engagement"
    assert [(a["key"], a["score"], a["mentions"]) for a in authors["authors"]] == [("bob", 570, 1)]

    sources = http.get("/v1/brands/acme/sources", params={"window": "1h"}).json()
    assert sources["mentions"] == 5  # r1, t0..t2 and feed_love's m0
    assert [(s["name"], s["mentions"], s["share"]) for s in sources["sites"]] == [
        ("unknown", 4, 0.8),
        ("news.example", 1, 0.2),
    ]
    assert [(s["name"], s["mentions"]) for s in sources["source_types"]] == [("simulate", 4), ("rss", 1)]

    voice = http.get("/v1/share-of-voice", params={"window": "1h"}).json()
    assert [g["brand"] for g in voice["groups"]] == ["acme", "globex"]
    assert [(m["brand"], m["mentions"], m["share"]) for m in voice["groups"][0]["members"]] == [
        ("acme", 5, 0.8333),
        ("globex", 1, 0.1667),
    ]
    only = http.get("/v1/share-of-voice", params={"brand": "globex"}).json()
    assert [[m["brand"] for m in g["members"]] for g in only["groups"]] == [["globex"]]

    love = http.get("/v1/brands/acme/love").json()
    # feed_love's mentions plus r1 (positive, 7 likes) and t0..t2 (neutral): 8 mentions, 47 interactions.
    assert love["engagement_24h"]["mentions"] == 8
    assert round(math.log10(1 + 47 / 8) / 2, 4) == 0.4186
    assert love["components"] == {
        "audience_growth": 0.7,
        "engagement": 0.4186,
        "positive_share": 0.8,
        "inbound_links": None,  # no owned domains
        "social_traffic": None,  # no web analytics readings
    }
    assert love["love_index"] == round(100 * (0.4 * 0.7 + 0.3 * 0.4186 + 0.3 * 0.8), 1) == 64.6

    trends = http.get("/v1/brands/acme/trends").json()
    assert trends["terms"] == [
        {"term": "center", "count_last_hour": 3, "baseline_per_hour": 0.0, "score": 4.0},
        {"term": "data", "count_last_hour": 3, "baseline_per_hour": 0.0, "score": 4.0},
        {"term": "outage", "count_last_hour": 3, "baseline_per_hour": 0.0, "score": 4.0},
    ]
    assert [t["term"] for t in http.get("/v1/brands/acme/trends", params={"limit": 2}).json()["terms"]] == [
        "center",
        "data",
    ]


BRAND_PATHS = ("timeseries", "authors", "sources", "love", "trends")


def test_unknown_brands_are_404_and_bad_parameters_422(serve: Serve) -> None:
    http = serve(fed_insights(), views=Views(configured_brands=["initech"]))
    for path in BRAND_PATHS:
        response = http.get(f"/v1/brands/hooli/{path}")
        assert (response.status_code, response.json()) == (404, {"detail": "unknown brand 'hooli'"}), path
        # A brand only the main views know (configured there, no data yet) answers, empty.
        assert http.get(f"/v1/brands/initech/{path}").status_code == 200, path
    assert http.get("/v1/share-of-voice", params={"brand": "hooli"}).status_code == 404
    assert http.get("/v1/brands/initech/love").json()["love_index"] is None

    for path, param in (
        ("/v1/brands/acme/timeseries?bucket=5m", "bucket"),
        ("/v1/brands/acme/timeseries?since=yesterday", "since"),
        ("/v1/brands/acme/authors?window=5m", "window"),
        ("/v1/brands/acme/authors?limit=0", "limit"),
        ("/v1/brands/acme/sources?limit=101", "limit"),
        ("/v1/brands/acme/trends?limit=-1", "limit"),
        ("/v1/share-of-voice?window=7d", "window"),
    ):
        response = http.get(path)
        assert response.status_code == 422, path
        assert response.json()["detail"][0]["loc"] == ["query", param], path

    too_many = http.get("/v1/brands/acme/timeseries", params={"bucket": "1h", "since": (NOW - 70 * DAY).isoformat()})
    assert too_many.status_code == 422  # 12:00 seventy days ago to 13:00 today: 70 × 24 + 1 hours
    assert too_many.json() == {"detail": "1681 points of 1h between since and until; at most 1500: narrow the range"}
    backwards = http.get(
        "/v1/brands/acme/timeseries", params={"since": "2025-03-14T12:00:00Z", "until": "2025-03-14T11:00:00Z"}
    )
    assert (backwards.status_code, backwards.json()) == (422, {"detail": "since must be before until"})


def test_the_brand_guard_hides_brands_from_a_caller(serve: Serve) -> None:
    asked: list[tuple[str, str]] = []

    def guard(request: Request, brand: str) -> None:
        key = request.headers.get("x-api-key", "")
        asked.append((key, brand))
        if not key:
            raise HTTPException(status_code=401, detail="an API key is needed")
        if key == "acme-only" and brand != "acme":
            raise HTTPException(status_code=404, detail=f"unknown brand '{brand}'")

    http = serve(fed_insights(), brand_guard=guard)
    acme_only = {"x-api-key": "acme-only"}
    for path in BRAND_PATHS:
        assert http.get(f"/v1/brands/acme/{path}", headers=acme_only).status_code == 200, path
        hidden = http.get(f"/v1/brands/globex/{path}", headers=acme_only)
        assert (hidden.status_code, hidden.json()) == (404, {"detail": "unknown brand 'globex'"}), path
        assert http.get(f"/v1/brands/globex/{path}", headers={"x-api-key": "admin"}).status_code == 200, path
        assert http.get(f"/v1/brands/acme/{path}").status_code == 401, path
    assert ("acme-only", "globex") in asked

    # Without ?brand=, only the groups of brands the caller may see (acme's group still names globex).
    voice = http.get("/v1/share-of-voice", headers=acme_only).json()
    assert [(g["brand"], [m["brand"] for m in g["members"]]) for g in voice["groups"]] == [("acme", ["acme", "globex"])]
    assert http.get("/v1/share-of-voice", params={"brand": "globex"}, headers=acme_only).status_code == 404
    assert len(http.get("/v1/share-of-voice", headers={"x-api-key": "admin"}).json()["groups"]) == 2
    assert http.get("/v1/share-of-voice").status_code == 401  # other refusals than 404 are not swallowed


def test_openapi_documents_models_with_examples(serve: Serve) -> None:
    http = serve(fed_insights())
    openapi = http.get("/openapi.json").json()
    expected = {
        "/v1/brands/{brand}/timeseries": "TimeSeries",
        "/v1/brands/{brand}/authors": "TopAuthors",
        "/v1/brands/{brand}/sources": "TopSources",
        "/v1/brands/{brand}/love": "LoveKpis",
        "/v1/brands/{brand}/trends": "Trends",
        "/v1/share-of-voice": "ShareOfVoice",
    }
    for path, model in expected.items():
        operation = openapi["paths"][path]["get"]
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}, path
        assert openapi["components"]["schemas"][model]["examples"], model
        assert "404" in operation["responses"], path
