"""Search of the stored mentions over real HTTP (uvicorn) against a real PostgreSQL: English and French
stemming, every filter, keyset pages that return each match once, newest first, CSV exports read back with the
csv module, the 422s, 404 for a hidden brand, 503 without a store. Expected answers are computed here from
the corpus itself, not from the database."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from ecoute.brokers import free_port
from schemas import ScoredMention, dump, utc_now
from schemas.history import migrate
from services.api import history, history_search
from services.api.history_search import SearchFilter
from services.api.settings import ApiSettings
from services.store.rows import Batch
from services.store.writer import Partitions, write_batch
from tests.api.api_server import ApiServer

pytestmark = pytest.mark.usefixtures("clean_env")

ADMIN, GLOBEX_ONLY = "history-admin-key", "history-globex-key"
CONFIG = f"""
brands:
  acme: {{query: acme}}
  globex: {{query: globex}}
api_keys:
  - {{key: {ADMIN}, role: admin, brands: ["*"]}}
  - {{key: {GLOBEX_ONLY}, role: read, brands: [globex]}}
"""
AUTH = {"Authorization": f"Bearer {ADMIN}"}

# Texts and what each matches: "phone" (phone, phones through English stemming), "prix", "élev" (élevé,
# élevés through French stemming), "service client" (a French phrase), "expensive".
EN_TEXTS: list[tuple[str, set[str]]] = [
    ("My {b} phones keep crashing after the update", {"phone"}),
    ("{b} support was helpful today", set()),
    ("The new {b} phone is too expensive", {"phone", "expensive"}),
    ("Battery life of the {b} laptop is great", set()),
    ("Is {b} open on Sundays?", set()),
]
FR_TEXTS: list[tuple[str, set[str]]] = [
    ("Les prix {b} sont trop élevés", {"prix", "élev"}),
    ("Le service client {b} est lent", {"service client"}),
    ("Mon téléphone {b} est super", set()),
    ("{b} baisse ses prix cette semaine", {"prix"}),
]
LABELS = ("positive", "neutral", "negative", "unscored")
SOURCES = ("rss", "reddit", "mastodon", "bluesky", "hackernews")


@dataclass(frozen=True)
class Stored:
    mention: ScoredMention
    keys: frozenset[str]

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.mention.published_at, self.mention.id)


def mention(
    brand: str,
    mention_id: str,
    at: datetime,
    text: str,
    lang: str | None = "en",
    label: str = "neutral",
    source: str = "rss",
    topics: Iterable[str] = (),
    author: dict[str, str] | None = None,
) -> ScoredMention:
    return ScoredMention.model_validate(
        {
            "id": mention_id,
            "source": source,
            "url": f"https://example.org/{mention_id}",
            "text": text,
            "lang": lang,
            "published_at": at,
            "author": author or {"id": "u0", "handle": "user0"},
            "brand": brand,
            "sentiment": {
                "compound": {"positive": 0.6, "negative": -0.6}.get(label, 0.0),
                "pos": 0.0,
                "neu": 1.0,
                "neg": 0.0,
                "label": label,
            },
            "topics": list(topics),
        }
    )


def corpus(end: datetime) -> list[Stored]:
    """acme: 240 mentions over 90 days (a third French, pairs sharing a timestamp); globex: 60 in between;
    a few odd ones (Spanish, formula-like and HTML-like texts); initech: stored, not configured."""
    out: list[Stored] = []
    for brand, count, offset in (("acme", 240, timedelta(0)), ("globex", 60, timedelta(hours=4))):
        at = end
        for i in range(count):
            if i % 10 != 5:  # every tenth shares the previous one's timestamp: the id breaks the tie
                at = end - offset - timedelta(hours=9 * i)
            french = i % 3 == 0
            texts = FR_TEXTS if french else EN_TEXTS
            text, keys = texts[i % len(texts)]
            topics = set()
            if keys & {"prix", "expensive"}:
                topics.add("pricing")
            if "phone" in keys:
                topics.add("product")
            who = i % 7
            item = mention(
                brand,
                f"sim:{brand}-{i:04d}",
                at,
                text.format(b=brand),
                lang="fr" if french else "en",
                label=LABELS[i % 4],
                source=SOURCES[i % 5],
                topics=sorted(topics),
                # The last author has no id: the author column holds the handle.
                author={"id": f"u{who}", "handle": f"user{who}"} if who < 6 else {"handle": "user6"},
            )
            out.append(Stored(item, frozenset(keys)))
    odd = [
        ("sim:acme-es", "Mi {b} phone es barato", "es", {"phone"}),  # no stemming: the word as it is
        ("sim:acme-formula", '=HYPERLINK("http://evil.example","{b} phone")', "en", {"phone"}),
        ("sim:acme-html", "<script>alert(1)</script> {b} phones & more", "en", {"phone"}),
    ]
    for n, (mention_id, text, lang, keys) in enumerate(odd):
        item = mention("acme", mention_id, end - timedelta(days=30, minutes=n), text.format(b="acme"), lang=lang)
        out.append(Stored(item, frozenset(keys)))
    # Older than the search's first two time windows (30 and 120 days), so its last one has rows too.
    for n, days in enumerate((200, 300)):
        item = mention("acme", f"sim:acme-old{n}", end - timedelta(days=days), "Old acme phones", label="negative")
        out.append(Stored(item, frozenset({"phone"})))
    for n in range(3):
        out.append(
            Stored(mention("initech", f"sim:initech-{n}", end - timedelta(days=n), "initech phone"), frozenset())
        )
    return out


async def store(url: str, mentions: Iterable[ScoredMention]) -> None:
    """Write the mentions as the sink does: scored-mention/1 records → rows → one transaction."""
    batch = Batch()
    for mention in mentions:
        batch.add("mentions.scored", mention.brand.encode(), dump(mention))
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await write_batch(conn, batch, datetime(2000, 1, 1, tzinfo=UTC), Partitions())


def settings(tmp_path: Path, database_url: str | None) -> ApiSettings:
    config = tmp_path / "ecoute.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    # No broker: the live views keep retrying in the background; the history routes do not need them.
    return ApiSettings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix="t.", config=config, database_url=database_url
    )


@pytest.fixture
async def loaded(database_url: str, tmp_path: Path, serve_api: Callable[..., ApiServer]) -> tuple[str, list[Stored]]:
    """(API base URL, the corpus stored in a fresh database)."""
    await migrate(database_url)
    end = utc_now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    data = corpus(end)
    await store(database_url, [s.mention for s in data])
    server = serve_api(settings(tmp_path, database_url))
    return server.url, data


def expected(data: list[Stored], brand: str = "acme", keep: Callable[[Stored], bool] = lambda s: True) -> list[str]:
    """Ids of the brand's mentions that `keep` selects, newest first (published_at, then id, descending)."""
    chosen = [s for s in data if s.mention.brand == brand and keep(s)]
    return [s.mention.id for s in sorted(chosen, key=lambda s: s.order, reverse=True)]


async def page_through(http: httpx.AsyncClient, brand: str, limit: int, **params: Any) -> tuple[list[str], int]:
    """Every id the search returns, following next_cursor; and how many pages it took."""
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = await http.get(f"/v1/brands/{brand}/mentions/search", params=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages += 1
        assert body["brand"] == brand and body["count"] == len(body["mentions"]) <= limit
        ids += [m["id"] for m in body["mentions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages
        assert body["count"] == limit  # only a full page may have a next one
        assert pages < 1000


async def test_paging_returns_each_match_once_newest_first(loaded: tuple[str, list[Stored]]) -> None:
    url, data = loaded
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:
        everything = expected(data)
        ids, pages = await page_through(http, "acme", 7)
        assert ids == everything and len(set(ids)) == len(ids) == 245
        assert pages == -(-245 // 7)  # the last page says so itself, no empty page after it

        # The default page is 50; a page of exactly the remaining rows ends with next_cursor null.
        first = (await http.get("/v1/brands/acme/mentions/search")).json()
        assert first["count"] == 50 and first["query"] is None and first["next_cursor"]
        assert [m["id"] for m in first["mentions"]] == everything[:50]
        record = first["mentions"][0]
        assert record["schema"] == "scored-mention/1" and record["brand"] == "acme" and record["headline"] is None
        ids, pages = await page_through(http, "acme", 49)
        assert (ids, pages) == (everything, 5)

        # globex only sees its own mentions, and the not-configured initech is found in the store.
        assert (await page_through(http, "globex", 200))[0] == expected(data, "globex")
        assert (await page_through(http, "initech", 2, q="phone"))[0] == [
            "sim:initech-0",
            "sim:initech-1",
            "sim:initech-2",
        ]


async def test_english_and_french_stemming(loaded: tuple[str, list[Stored]]) -> None:
    url, data = loaded
    cases = {
        "phone": lambda s: "phone" in s.keys,
        # English stems both to phone; the Spanish mention (no stemming) has the word "phone" only.
        "phones": lambda s: "phone" in s.keys and s.mention.lang != "es",
        "prix": lambda s: "prix" in s.keys,
        "élevé": lambda s: "élev" in s.keys,  # "élevés" in the texts
        '"service client"': lambda s: "service client" in s.keys,
        "phone -expensive": lambda s: "phone" in s.keys and "expensive" not in s.keys,
        "prix OR phone": lambda s: bool(s.keys & {"prix", "phone"}),
        "nothingmatchesthis": lambda s: False,
    }
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:
        for q, keep in cases.items():
            ids, _ = await page_through(http, "acme", 30, q=q)
            assert ids == expected(data, keep=keep), q
        # Sanity of the corpus itself: these are real sets, English and French ones.
        assert len(expected(data, keep=cases["phone"])) > 40 and len(expected(data, keep=cases["prix"])) > 20

        found = (await http.get("/v1/brands/acme/mentions/search", params={"q": "phone", "limit": 200})).json()
        headlines = {m["id"]: m["headline"] for m in found["mentions"]}
        assert "<mark>phones</mark>" in headlines["sim:acme-0005"]
        assert "<mark>phone</mark>" in headlines["sim:acme-0002"]
        # The text is escaped before highlighting: the headline is safe to show as HTML.
        html = headlines["sim:acme-html"]
        assert "&lt;/script&gt;" in html and "<script>" not in html and "</script>" not in html
        assert "<mark>phones</mark> &amp; more" in html
        french = (await http.get("/v1/brands/acme/mentions/search", params={"q": "prix élevé"})).json()
        assert french["query"] == "prix élevé"
        assert "<mark>prix</mark>" in french["mentions"][0]["headline"]
        assert "<mark>élevés</mark>" in french["mentions"][0]["headline"]


async def test_every_filter(loaded: tuple[str, list[Stored]]) -> None:
    url, data = loaded
    acme = sorted((s for s in data if s.mention.brand == "acme"), key=lambda s: s.order)
    since, until = acme[40].mention.published_at, acme[200].mention.published_at
    cases: list[tuple[dict[str, str], Callable[[Stored], bool]]] = [
        ({"since": since.isoformat(), "until": until.isoformat()}, lambda s: since <= s.mention.published_at < until),
        # The same instants in another offset are the same bounds.
        (
            {"since": since.astimezone(ZoneInfo("Europe/Paris")).isoformat(), "until": until.isoformat()},
            lambda s: since <= s.mention.published_at < until,
        ),
        ({"since": since.isoformat()}, lambda s: s.mention.published_at >= since),
        ({"until": until.isoformat()}, lambda s: s.mention.published_at < until),
        ({"sentiment": "negative"}, lambda s: s.mention.sentiment.label == "negative"),
        ({"sentiment": "unscored"}, lambda s: s.mention.sentiment.label == "unscored"),
        ({"source": "reddit"}, lambda s: s.mention.source == "reddit"),
        ({"lang": "fr"}, lambda s: s.mention.lang == "fr"),
        ({"lang": "FR"}, lambda s: s.mention.lang == "fr"),
        ({"author": "u3"}, lambda s: s.mention.author.id == "u3"),
        ({"author": "user3"}, lambda s: s.mention.author.handle == "user3"),
        ({"author": "@user3"}, lambda s: s.mention.author.handle == "user3"),
        ({"author": "user6"}, lambda s: s.mention.author.handle == "user6"),
        ({"topic": "pricing"}, lambda s: "pricing" in s.mention.topics),
        (
            {"q": "prix", "sentiment": "positive", "since": since.isoformat()},
            lambda s: "prix" in s.keys and s.mention.sentiment.label == "positive" and s.mention.published_at >= since,
        ),
        (
            {"q": "phone", "source": "mastodon", "author": "user1", "topic": "product", "lang": "en"},
            lambda s: (
                "phone" in s.keys
                and s.mention.source == "mastodon"
                and s.mention.author.handle == "user1"
                and "product" in s.mention.topics
                and s.mention.lang == "en"
            ),
        ),
    ]
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:
        for params, keep in cases:
            ids, _ = await page_through(http, "acme", 25, **params)
            want = expected(data, keep=keep)
            assert ids == want, params
            assert want or params.get("author") == "user6", f"empty expectation proves nothing: {params}"


def read_csv(answer: httpx.Response) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(answer.content.decode("utf-8"), newline="")))


async def test_csv_export(loaded: tuple[str, list[Stored]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, data = loaded
    by_id = {s.mention.id: s.mention for s in data}
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:
        answer = await http.get("/v1/brands/acme/mentions/search", params={"q": "phone", "format": "csv"})
        assert answer.headers["content-disposition"] == 'attachment; filename="acme-mentions.csv"'
        rows = read_csv(answer)
        assert [r["id"] for r in rows] == expected(data, keep=lambda s: "phone" in s.keys)
        assert list(rows[0]) == list(history_search.CSV_COLUMNS)
        for row in rows:
            mention = by_id[row["id"]]
            assert datetime.fromisoformat(row["published_at"]) == mention.published_at
            assert (row["brand"], row["source"], row["lang"], row["sentiment"]) == (
                "acme",
                mention.source,
                mention.lang,
                mention.sentiment.label,
            )
            assert float(row["compound"]) == mention.sentiment.compound
            assert row["topics"] == "; ".join(mention.topics)
            assert row["author_handle"] == (mention.author.handle or "")
            # Texts that a spreadsheet would evaluate are marked as text; the rest are as written.
            if mention.text.startswith("="):
                assert row["text"] == "'" + mention.text
            else:
                assert row["text"] == mention.text
        assert any(row["text"].startswith("'=HYPERLINK") for row in rows)

        # limit caps the export; a cursor starts it where a JSON page ended; the filters apply.
        first = (await http.get("/v1/brands/acme/mentions/search", params={"limit": 10})).json()
        after = read_csv(
            await http.get(
                "/v1/brands/acme/mentions/search", params={"format": "csv", "cursor": first["next_cursor"], "limit": 15}
            )
        )
        assert [r["id"] for r in after] == expected(data)[10:25]
        french = read_csv(
            await http.get(
                "/v1/brands/acme/mentions/search",
                params={
                    "format": "csv",
                    "lang": "fr",
                    "since": "2000-01-01T00:00:00Z",
                    "until": "2100-01-01T00:00:00Z",
                },
            )
        )
        assert [r["id"] for r in french] == expected(data, keep=lambda s: s.mention.lang == "fr")

        # An export longer than one database read is read in keyset chunks: still each row once, in order.
        monkeypatch.setattr(history_search, "EXPORT_CHUNK", 7)
        rows = read_csv(await http.get("/v1/brands/acme/mentions/search", params={"format": "csv"}))
        assert [r["id"] for r in rows] == expected(data)
        rows = read_csv(await http.get("/v1/brands/acme/mentions/search", params={"format": "csv", "limit": 21}))
        assert [r["id"] for r in rows] == expected(data)[:21]
        rows = read_csv(await http.get("/v1/brands/acme/mentions/search", params={"format": "csv", "limit": 23}))
        assert [r["id"] for r in rows] == expected(data)[:23]
        empty = read_csv(await http.get("/v1/brands/acme/mentions/search", params={"format": "csv", "q": "zzzz"}))
        assert empty == []


BOTH = ("json", "csv")


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_bad_input_is_a_422_naming_the_parameter(loaded: tuple[str, list[Stored]]) -> None:
    url, _ = loaded
    json_only = ("json",)
    bad: list[tuple[dict[str, Any], str, tuple[str, ...]]] = [
        ({"cursor": "not a cursor!"}, "cursor", BOTH),
        ({"cursor": _cursor(b"hello")}, "cursor", BOTH),
        ({"cursor": _cursor(b'["2025-03-01T00:00:00", "x"]')}, "cursor", BOTH),  # no offset
        ({"cursor": _cursor(b'["yesterday", "x"]')}, "cursor", BOTH),
        ({"cursor": _cursor(b'{"a": 1}')}, "cursor", BOTH),
        ({"cursor": _cursor(b"\xff\xfe")}, "cursor", BOTH),
        ({"since": "2025-03-02T00:00:00Z", "until": "2025-03-01T00:00:00Z"}, "until", BOTH),
        ({"since": "2025-03-02"}, "since", BOTH),  # RFC 3339 needs a time and an offset
        ({"since": "2025-03-02T10:00:00"}, "since", BOTH),
        ({"until": "last week"}, "until", BOTH),
        ({"sentiment": "angry"}, "sentiment", BOTH),
        ({"source": "myspace"}, "source", BOTH),
        ({"lang": "french"}, "lang", BOTH),
        ({"limit": 201}, "limit", json_only),
        ({"limit": 0}, "limit", BOTH),
        ({"limit": "many"}, "limit", BOTH),
        ({"limit": history_search.EXPORT_MAX_ROWS + 1}, "limit", BOTH),
        ({"format": "xlsx"}, "format", json_only),
        ({"q": "phone\x00"}, "q", BOTH),
        ({"q": "x" * 501}, "q", BOTH),
        ({"author": "bob\x00"}, "author", BOTH),
        ({"topic": "\x00"}, "topic", BOTH),
    ]
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:
        for params, name, formats in bad:
            for fmt in formats:
                answer = await http.get("/v1/brands/acme/mentions/search", params={"format": fmt, **params})
                assert answer.status_code == 422, (params, fmt, answer.text)
                problems = answer.json()["detail"]
                assert any(p["loc"] == ["query", name] and p["msg"] for p in problems), (params, problems)
        # Odd but valid queries are searched (web search syntax never fails to parse): nothing found, no error.
        for q in ('"', "(", "!!!", "a & b | !c", "-", "<->", "'", "\\"):
            answer = await http.get("/v1/brands/acme/mentions/search", params={"q": q})
            assert answer.status_code == 200, (q, answer.text)
        # The far ends of time are valid bounds and positions.
        for params in (
            {"until": "0001-01-10T00:00:00Z"},
            {"since": "0001-01-01T00:00:00+14:00", "until": "9999-12-31T23:59:59-14:00"},
            {"cursor": history_search.encode_cursor(datetime(1, 1, 2, tzinfo=UTC), "x"), "q": "phone"},
            {"cursor": history_search.encode_cursor(datetime(9999, 12, 31, tzinfo=UTC), "x")},
        ):
            for fmt in BOTH:
                answer = await http.get("/v1/brands/acme/mentions/search", params={**params, "format": fmt})
                assert answer.status_code == 200, (params, answer.text)
        # A JSON page of 201 is refused; an export of 201 rows is not.
        answer = await http.get("/v1/brands/acme/mentions/search", params={"format": "csv", "limit": 201})
        assert len(read_csv(answer)) == 201


async def test_hidden_and_unknown_brands_are_404(loaded: tuple[str, list[Stored]]) -> None:
    url, _ = loaded
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        globex_key = {"Authorization": f"Bearer {GLOBEX_ONLY}"}
        assert (await http.get("/v1/brands/globex/mentions/search", headers=globex_key)).status_code == 200
        for brand in ("acme", "initech", "hooli"):
            for fmt in ("json", "csv"):
                answer = await http.get(
                    f"/v1/brands/{brand}/mentions/search", params={"format": fmt, "q": "phone"}, headers=globex_key
                )
                assert answer.status_code == 404 and answer.json() == {"detail": f"unknown brand '{brand}'"}
        for fmt in ("json", "csv"):
            unknown = await http.get("/v1/brands/hooli/mentions/search", params={"format": fmt}, headers=AUTH)
            assert unknown.status_code == 404
        assert (await http.get("/v1/brands/acme/mentions/search")).status_code == 401


async def test_503_without_a_store_or_when_it_is_unreachable(
    tmp_path: Path, serve_api: Callable[..., ApiServer]
) -> None:
    none = serve_api(settings(tmp_path, None))
    # Nothing listens on this port: the pool cannot connect, the request gives up after the pool's timeout.
    down = serve_api(settings(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/ecoute?connect_timeout=2"))
    async with httpx.AsyncClient(timeout=30, headers=AUTH) as http:
        for fmt in ("json", "csv"):
            answer = await http.get(f"{none.url}/v1/brands/acme/mentions/search", params={"format": fmt})
            assert answer.status_code == 503 and "ECOUTE_DATABASE_URL" in answer.json()["detail"]
        for fmt in ("json", "csv"):
            answer = await http.get(f"{down.url}/v1/brands/acme/mentions/search", params={"q": "x", "format": fmt})
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == str(history.RETRY_AFTER_SECONDS)
            assert "cannot be reached" in answer.json()["detail"]
        # Validation still comes first.
        answer = await http.get(f"{down.url}/v1/brands/acme/mentions/search", params={"sentiment": "x"})
        assert answer.status_code == 422


def test_time_windows_cover_the_range_once() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    search = SearchFilter(brand="acme", q="x")
    day = timedelta(days=1)
    assert history_search.time_windows(search, None, now) == [
        (now - 30 * day, None),
        (now - 120 * day, now - 30 * day),
        (None, now - 120 * day),
    ]
    # From the newest instant the search may return: until, or the cursor, whichever is older.
    until = now - 10 * day
    bounded = SearchFilter(brand="acme", q="x", until=until)
    assert history_search.time_windows(bounded, (now - 50 * day, "id"), now)[0] == (now - 80 * day, None)
    assert history_search.time_windows(bounded, (now - 5 * day, "id"), now)[0] == (until - 30 * day, None)
    # since cuts the windows short: the last one is open below (the query applies since itself).
    recent = SearchFilter(brand="acme", since=now - 45 * day)
    assert history_search.time_windows(recent, None, now) == [(now - 30 * day, None), (None, now - 30 * day)]
    assert history_search.time_windows(SearchFilter(brand="acme", since=now - day), None, now) == [(None, None)]
    # Near the first instant a datetime can hold, no window starts before it.
    first = datetime(1, 1, 20, tzinfo=UTC)
    assert history_search.time_windows(SearchFilter(brand="acme", until=first), None, now) == [(None, None)]
