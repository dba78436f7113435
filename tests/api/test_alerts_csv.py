"""GET /v1/alerts?format=csv over real HTTP with alerts read from a real Kafka topic: the same alerts as the
JSON answer, acks included, read back with the csv module; a formula-like message is kept as text."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas import Topics, ensure_topics, utc_now
from services.api.csvexport import ALERT_COLUMNS
from services.api.views import floor_minute
from tests.api.api_factories import MINUTE, alert
from tests.api.api_server import ApiServer
from tests.api.test_api_access import ACME, ADMIN, bearer, keyed_settings
from tests.api.test_api_kafka import producer, send_alerts, wait_ready
from tests.helpers import async_wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("clean_env")]


def rows_of(answer: httpx.Response) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"].startswith("attachment; filename=")
    return list(csv.DictReader(io.StringIO(answer.content.decode("utf-8"), newline="")))


async def test_alerts_as_csv(bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    m0 = floor_minute(utc_now())
    sent = [
        alert("acme", "a-1", m0 - 3 * MINUTE, kind="volume_spike", observed=64, baseline=4.25, threshold=11.5),
        alert("acme", "a-2", m0 - 2 * MINUTE, kind="keyword", message='=HYPERLINK("http://evil.example") boycott'),
        alert("globex", "g-1", m0 - MINUTE, kind="negative_surge", severity="critical", baseline=-0.5),
    ]
    async with producer(bootstrap) as client:
        await send_alerts(client, topics, *sent)
    server: ApiServer = serve_api(keyed_settings(bootstrap, topic_prefix, tmp_path))

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await wait_ready(http)
        ack = await http.post("/v1/alerts/a-1/ack", json={"by": "jane@acme.example"}, headers=bearer(ADMIN))
        assert ack.status_code == 200

        async def acked() -> bool:
            found = (await http.get("/v1/alerts", headers=bearer(ADMIN))).json()
            return any(a["id"] == "a-1" and a["acked"] for a in found)

        await async_wait_until(acked, 20, what="the ack to show")
        as_json = (await http.get("/v1/alerts", headers=bearer(ADMIN))).json()
        answer = await http.get("/v1/alerts", params={"format": "csv"}, headers=bearer(ADMIN))
        rows = rows_of(answer)
        assert answer.headers["content-disposition"] == 'attachment; filename="all-alerts.csv"'
        assert list(rows[0]) == list(ALERT_COLUMNS)
        assert [r["id"] for r in rows] == [a["id"] for a in as_json] == ["g-1", "a-2", "a-1"]
        by_id = {a.id: a for a in sent}
        for row in rows:
            item = by_id[row["id"]]
            assert (row["brand"], row["kind"], row["severity"]) == (item.brand, item.kind, item.severity)
            assert datetime.fromisoformat(row["created_at"]) == item.created_at
            assert datetime.fromisoformat(row["window_start"]) == item.window.start
            assert datetime.fromisoformat(row["window_end"]) == item.window.end
            assert float(row["observed"]) == item.observed and float(row["baseline"]) == item.baseline
            assert float(row["threshold"]) == item.threshold
        a1, a2, g1 = (next(r for r in rows if r["id"] == name) for name in ("a-1", "a-2", "g-1"))
        assert (a1["acked"], a1["acked_by"]) == ("true", "jane@acme.example") and a1["acked_at"]
        assert (a2["acked"], a2["acked_by"], a2["acked_at"]) == ("false", "", "")
        assert a2["message"] == "'" + sent[1].message
        assert g1["baseline"] == "-0.5"  # a number of ours is not taken for a formula

        # The brand filter, the limit and the key's brands apply as in JSON.
        acme = rows_of(await http.get("/v1/alerts", params={"format": "csv", "brand": "acme"}, headers=bearer(ACME)))
        assert [r["id"] for r in acme] == ["a-2", "a-1"]
        only = rows_of(await http.get("/v1/alerts", params={"format": "csv", "limit": 1}, headers=bearer(ACME)))
        assert [r["id"] for r in only] == ["a-2"]
        hidden = await http.get("/v1/alerts", params={"format": "csv", "brand": "globex"}, headers=bearer(ACME))
        assert hidden.status_code == 404
        bad = await http.get("/v1/alerts", params={"format": "pdf"}, headers=bearer(ADMIN))
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "format"]
