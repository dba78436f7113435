"""`GET /v1/brands/{brand}/report` over real HTTP (uvicorn) on a real PostgreSQL holding three generated months:
every bucket's figures per day, week and month equal the ones recounted from the input, the change against the
previous period, CSV equal to JSON, defaults, 422s naming the parameter, 404 for hidden and unknown brands, 503
without a database or with one that is down."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ecoute.brokers import free_port
from ecoute.postgres import LocalPostgres
from services.api.app import create_app
from services.api.settings import ApiSettings
from tests.api.api_server import ApiServer
from tests.api.history_data import History, expected_report, generate, store

pytestmark = pytest.mark.usefixtures("clean_env")

ADMIN, INITECH = "history-admin-key", "history-initech-key"
CONFIG = f"""
brands:
  acme: {{query: acme, competitors: [globex]}}
  globex: {{query: globex}}
  initech: {{query: initech}}
api_keys:
  - {{key: {ADMIN}, role: admin, brands: ["*"]}}
  - {{key: {INITECH}, role: read, brands: [initech]}}
"""
DAYS = 92
COUNTS = {"acme": 3000, "globex": 1500, "initech": 400}
# No Kafka here: the report reads PostgreSQL only (the live views retry a closed port in the background).
NO_KAFKA = "127.0.0.1:9"


def api_settings(tmp_path: Path, database_url: str | None) -> ApiSettings:
    config = tmp_path / "ecoute.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return ApiSettings(
        kafka_bootstrap_servers=NO_KAFKA, topic_prefix="history-test.", config=config, database_url=database_url
    )


class Stored:
    def __init__(self, history: History, start: datetime, http: httpx.Client) -> None:
        self.history = history
        self.start = start
        self.http = http


@pytest.fixture(scope="module")
def stored(postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    """Three months of mentions (and account readings, alerts) ending a few days ago, and an API serving them."""
    url = postgres.create_database(f"test_report_{uuid.uuid4().hex[:10]}")
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS + 3)
    history = generate(start, DAYS, COUNTS)
    asyncio.run(store(url, history))
    # The API's sessions in another time zone than UTC: buckets must still be UTC days, weeks and months.
    in_new_york = f"{url}{'&' if '?' in url else '?'}options=-c%20TimeZone%3DAmerica/New_York"
    server = ApiServer(create_app(api_settings(tmp_path_factory.mktemp("report"), in_new_york))).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
            yield Stored(history, start, http)
    finally:
        server.stop()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def report(stored: Stored, brand: str = "acme", **params: Any) -> dict[str, Any]:
    response = stored.http.get(f"/v1/brands/{brand}/report", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_figures(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    for name in ("mentions", "reach", "unique_authors", "competitor_mentions", "share_of_voice", "positive_share"):
        assert got[name] == want[name], f"{where}: {name} {got[name]} != {want[name]}"
    assert got["sentiment"] == want["sentiment"], where
    assert got["engagement"] == want["engagement"], where
    if want["sentiment_avg"] is None:
        assert got["sentiment_avg"] is None, where
    else:
        assert got["sentiment_avg"] == pytest.approx(want["sentiment_avg"], abs=1.5e-4), where
    assert got["love"]["index"] == pytest.approx(want["love_index"], abs=0.11), where
    assert {(a["platform"], a["metric"]): a["value"] for a in got["accounts"]} == want["accounts"], where


@pytest.mark.parametrize("bucket", ["day", "week", "month"])
def test_every_bucket_matches_the_input_recounted(stored: Stored, bucket: str) -> None:
    # A period starting mid-day and ending at a midnight: partial edge buckets; the previous period reaches
    # back before the first mention.
    since = stored.start + timedelta(days=40, hours=7, minutes=30)
    until = stored.start + timedelta(days=DAYS)
    started = time.perf_counter()
    body = report(stored, since=rfc3339(since), until=rfc3339(until), bucket=bucket)
    took = time.perf_counter() - started
    want = expected_report(stored.history, "acme", ["globex"], since, until, bucket)

    assert (body["brand"], body["bucket"], body["competitors"]) == ("acme", bucket, ["globex"])
    assert (body["since"], body["until"]) == (rfc3339(since), rfc3339(until))
    assert body["previous_since"] == rfc3339(since - (until - since))
    starts = [date.fromisoformat(b["start"][:10]) for b in body["buckets"]]
    assert starts == list(want["buckets"]), "every bucket of the period, in order, empty ones included"
    assert all(b["start"].endswith("T00:00:00Z") for b in body["buckets"])
    assert body["buckets"][0]["partial"] is True
    assert [b["partial"] for b in body["buckets"][1:-1]] == [False] * (len(starts) - 2)
    for got, (key, expected) in zip(body["buckets"], want["buckets"].items(), strict=True):
        assert_figures(got, expected, f"{bucket} {key}")
    assert_figures(body["totals"], want["totals"], "totals")
    assert_figures(body["previous"], want["previous"], "previous period")
    assert sum(b["mentions"] for b in body["buckets"]) == body["totals"]["mentions"] > 1000

    changes = body["changes"]
    current, previous = want["totals"]["mentions"], want["previous"]["mentions"]
    assert changes["mentions"] == {
        "current": current,
        "previous": previous,
        "change": current - previous,
        "change_pct": round((current - previous) / previous * 100, 2),
    }
    assert changes["reach"]["change"] == want["totals"]["reach"] - want["previous"]["reach"]
    assert changes["unique_authors"]["change"] == want["totals"]["unique_authors"] - want["previous"]["unique_authors"]
    assert changes["engagement"]["current"] == want["totals"]["engagement"]["total"]
    assert changes["share_of_voice"]["change"] == pytest.approx(
        want["totals"]["share_of_voice"] - want["previous"]["share_of_voice"], abs=1e-4
    )
    assert set(changes) == {
        "mentions",
        "positive_share",
        "sentiment_avg",
        "engagement",
        "reach",
        "unique_authors",
        "share_of_voice",
        "love_index",
    }
    print(f"report of {len(starts)} {bucket} buckets over {COUNTS['acme'] + COUNTS['globex']} mentions: {took:.3f} s")


def test_a_brand_without_competitors_has_no_share_of_voice(stored: Stored) -> None:
    since, until = stored.start, stored.start + timedelta(days=DAYS)
    body = report(stored, "initech", since=rfc3339(since), until=rfc3339(until), bucket="month")
    want = expected_report(stored.history, "initech", [], since, until, "month")
    assert body["competitors"] == []
    for got, (key, expected) in zip(body["buckets"], want["buckets"].items(), strict=True):
        assert_figures(got, expected, f"initech {key}")
        assert got["share_of_voice"] is None
    assert body["totals"]["mentions"] == COUNTS["initech"]


def parse_cell(text: str) -> Any:
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text)
    except ValueError:
        return text


def test_csv_has_a_row_per_bucket_equal_to_the_json(stored: Stored) -> None:
    params = {
        "since": rfc3339(stored.start + timedelta(days=3, hours=5)),
        "until": rfc3339(stored.start + timedelta(days=80)),
        "bucket": "week",
    }
    body = report(stored, **params)
    response = stored.http.get("/v1/brands/acme/report", params={**params, "format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="acme-report-week-')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(body["buckets"]) > 10
    assert list(rows[0])[-2:] == ["mastodon.followers", "newsletter.subscribers"]
    for row, bucket in zip(rows, body["buckets"], strict=True):
        flat = {
            "start": bucket["start"],
            "end": bucket["end"],
            "partial": bucket["partial"],
            "mentions": bucket["mentions"],
            **bucket["sentiment"],
            "sentiment_avg": bucket["sentiment_avg"],
            "positive_share": bucket["positive_share"],
            **{k: v for k, v in bucket["engagement"].items() if k != "total"},
            "engagement": bucket["engagement"]["total"],
            "reach": bucket["reach"],
            "unique_authors": bucket["unique_authors"],
            "competitor_mentions": bucket["competitor_mentions"],
            "share_of_voice": bucket["share_of_voice"],
            "audience": bucket["love"]["audience"],
            "audience_growth_rate": bucket["love"]["audience_growth_rate"],
            "engagement_per_mention": bucket["love"]["engagement_per_mention"],
            "love_audience_growth": bucket["love"]["audience_growth"],
            "love_engagement": bucket["love"]["engagement"],
            "love_positive_share": bucket["love"]["positive_share"],
            "love_index": bucket["love"]["index"],
            "visits": None,  # no web analytics readings in this history
            "social_visits": None,
            "social_visits_per_mention": None,
            "mastodon.followers": None,
            "newsletter.subscribers": None,
        }
        for account in bucket["accounts"]:
            flat[f"{account['platform']}.{account['metric']}"] = account["value"]
        assert set(row) == set(flat)
        for name, value in flat.items():
            cell = parse_cell(row[name])
            if isinstance(value, str):
                assert cell == value, name
            else:
                assert cell == value, f"{bucket['start']} {name}: csv {row[name]!r}, json {value!r}"


def test_defaults_top_mentions_and_alerts(stored: Stored) -> None:
    before = datetime.now(UTC)
    body = report(stored, top_mentions=5, alerts=50)
    until = datetime.fromisoformat(body["until"])
    assert before <= until <= datetime.now(UTC)
    assert datetime.fromisoformat(body["since"]) == until - timedelta(days=30)
    assert body["bucket"] == "day" and len(body["buckets"]) == 31

    since = until - timedelta(days=30)
    acme = [m for m in stored.history.mentions if m.brand == "acme" and since <= m.published_at < until]
    want_top = sorted(
        acme,
        key=lambda m: (
            -(m.engagement.likes + m.engagement.shares + m.engagement.comments),
            -m.published_at.timestamp(),
        ),
    )[:5]
    assert [m["id"] for m in body["top_mentions"]] == [m.id for m in want_top]
    want_alerts = sorted(
        (a for a in stored.history.alerts if since <= a.created_at < until), key=lambda a: a.created_at
    )
    assert [a["id"] for a in body["alerts"]] == [a.id for a in reversed(want_alerts)]
    assert want_alerts, "the default period holds generated alerts"
    assert report(stored)["top_mentions"] is None  # not asked for


def problems(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [".".join(str(p) for p in item["loc"]) for item in response.json()["detail"]]


def test_bad_parameters_answer_422_naming_them(stored: Stored) -> None:
    path = "/v1/brands/acme/report"
    get = stored.http.get
    assert problems(get(path, params={"since": "2025-03-02T00:00:00Z", "until": "2025-03-01T00:00:00Z"})) == [
        "query.since"
    ]
    assert problems(get(path, params={"since": "2025-03-01T00:00:00Z", "until": "2025-03-01T00:00:00Z"})) == [
        "query.since"
    ]
    too_many = get(path, params={"since": "2020-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z", "bucket": "day"})
    assert problems(too_many) == ["query.bucket"]
    assert "more than 1000 day buckets" in too_many.json()["detail"][0]["msg"]
    assert problems(get(path, params={"bucket": "hour"})) == ["query.bucket"]
    assert problems(get(path, params={"since": "yesterday"})) == ["query.since"]
    assert problems(get(path, params={"until": "0001-01-01T00:00:00Z"})) == ["query.until"]
    assert problems(get(path, params={"until": "9999-12-31T12:00:00Z", "bucket": "month"})) == ["query.until"]
    assert problems(get(path, params={"since": "0001-01-02T00:00:00Z", "until": "0001-03-01T00:00:00Z"})) == [
        "query.since"
    ]
    assert problems(get(path, params={"format": "xml"})) == ["query.format"]
    assert problems(get(path, params={"top_mentions": "1000"})) == ["query.top_mentions"]
    # The same period in months is fine.
    months = get(path, params={"since": "2020-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z", "bucket": "month"})
    assert months.json()["buckets"][0]["start"] == "2020-01-01T00:00:00Z"


def test_hidden_and_unknown_brands_are_404(stored: Stored) -> None:
    initech = {"Authorization": f"Bearer {INITECH}"}
    hidden = stored.http.get("/v1/brands/acme/report", headers=initech)
    assert hidden.status_code == 404 and hidden.json() == {"detail": "unknown brand 'acme'"}
    assert stored.http.get("/v1/brands/acme/report", headers=initech, params={"format": "csv"}).status_code == 404
    assert stored.http.get("/v1/brands/initech/report", headers=initech).status_code == 200
    assert stored.http.get("/v1/brands/nobody/report").status_code == 404
    assert stored.http.get("/v1/brands/acme/report", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_503_without_a_database_or_with_one_that_is_down(serve_api: Any, tmp_path: Path) -> None:
    none = serve_api(api_settings(tmp_path, None))
    answer = httpx.get(f"{none.url}/v1/brands/acme/report", headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 503 and "ECOUTE_DATABASE_URL" in answer.json()["detail"]

    down = serve_api(api_settings(tmp_path, f"postgresql://ecoute@127.0.0.1:{free_port()}/nothing?connect_timeout=1"))
    started = time.monotonic()
    answer = httpx.get(f"{down.url}/v1/brands/acme/report", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert "cannot be reached" in answer.json()["detail"]
    assert time.monotonic() - started < 15


def test_503_naming_the_store_when_the_database_has_no_tables_yet(
    serve_api: Any, tmp_path: Path, database_url: str
) -> None:
    """A database no store has migrated yet: the history routes say what to start, not a 500."""
    api = serve_api(api_settings(tmp_path, database_url))
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for path, params in (("report", {}), ("mentions/search", {"q": "acme"})):
        answer = httpx.get(f"{api.url}/v1/brands/acme/{path}", headers=admin, params=params, timeout=30)
        assert answer.status_code == 503, (path, answer.text)
        assert "ecoute store" in answer.json()["detail"]
        assert answer.headers["retry-after"] == "5"
