"""Hacker News through an Algolia-shaped search server: mapping, pagination, and a restart mid-run."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from schemas import Mention, Topics
from services.ingest import IngestSettings
from services.ingest.connectors import hit_fields
from tests.helpers import latest_by_key, read_all
from tests.ingest.connectors.conftest import eventually, listening, sample, source_runner
from tests.ingest.connectors.web import Reply, Seen, WebServer

NOW = datetime(2025, 3, 5, tzinfo=UTC)
SEARCH = "/api/v1/search_by_date"
_FILTER = re.compile(r"^created_at_i(>=|<=|>|<|=)(\d+)$")


def story(object_id: int, at: int, **extra: Any) -> dict[str, Any]:
    return {
        "created_at": datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "title": f"Acme launches X{object_id}",
        "url": f"https://acme.example/news/{object_id}",
        "author": "pg",
        "points": 120,
        "story_text": None,
        "comment_text": None,
        "num_comments": 45,
        "story_id": None,
        "story_title": None,
        "story_url": None,
        "parent_id": None,
        "created_at_i": at,
        "_tags": ["story", "author_pg", f"story_{object_id}"],
        "objectID": str(object_id),
        **extra,
    }


def comment(object_id: int, at: int, story_id: int = 39000001, parent_id: int | None = None) -> dict[str, Any]:
    return {
        "created_at": datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "title": None,
        "url": None,
        "author": "dang",
        "points": None,
        "story_text": None,
        "comment_text": f"I think <i>Acme</i> support is slow &amp; unhelpful ({object_id}).<p>Second paragraph.",
        "num_comments": None,
        "story_id": story_id,
        "story_title": "Acme launches X2",
        "story_url": "https://acme.example/x2",
        "parent_id": parent_id or story_id,
        "created_at_i": at,
        "_tags": ["comment", "author_dang", f"story_{story_id}"],
        "objectID": str(object_id),
    }


class Algolia:
    """search_by_date over a list of hits: numericFilters, newest first, page/hitsPerPage/nbPages."""

    def __init__(self, hits: list[dict[str, Any]]) -> None:
        self.hits = list(hits)
        self.hold: Callable[[Seen], threading.Event | None] = lambda _seen: None

    def __call__(self, seen: Seen) -> Reply:
        selected = list(self.hits)
        for condition in filter(None, seen.query.get("numericFilters", "").split(",")):
            match = _FILTER.match(condition)
            assert match, condition
            op, value = match.group(1), int(match.group(2))
            selected = [h for h in selected if _compare(h["created_at_i"], op, value)]
        selected.sort(key=lambda h: (h["created_at_i"], int(h["objectID"])), reverse=True)
        per_page, page = int(seen.query.get("hitsPerPage", "20")), int(seen.query.get("page", "0"))
        body = {
            "hits": selected[page * per_page : (page + 1) * per_page],
            "nbHits": len(selected),
            "page": page,
            "nbPages": math.ceil(len(selected) / per_page),
            "hitsPerPage": per_page,
            "exhaustiveNbHits": True,
            "query": seen.query.get("query", ""),
            "params": "",
            "processingTimeMS": 1,
        }
        return Reply(200, orjson.dumps(body), {"Content-Type": "application/json"}, hold=self.hold(seen))


def _compare(left: int, op: str, right: int) -> bool:
    return {
        ">=": left >= right,
        "<=": left <= right,
        ">": left > right,
        "<": left < right,
        "=": left == right,
    }[op]


def test_stories_and_comments_become_mentions() -> None:
    at = 1_740_823_200
    s = Mention.model_validate(hit_fields(story(39000001, at), "acme", NOW).fields)
    assert s.id == "hackernews:39000001"
    assert s.url == "https://acme.example/news/39000001"
    assert s.site == "news.ycombinator.com"
    assert s.title == "Acme launches X39000001"
    assert s.text == "Acme launches X39000001"  # a link story: its title is its text
    assert (s.engagement.likes, s.engagement.comments) == (120, 45)
    assert s.author.handle == "pg" and s.author.url == "https://news.ycombinator.com/user?id=pg"
    assert s.published_at == datetime.fromtimestamp(at, UTC)
    assert (s.thread_id, s.parent_id, s.query) == ("hackernews:39000001", None, "acme")

    c = Mention.model_validate(hit_fields(comment(39000007, at, parent_id=39000005), "acme", NOW).fields)
    assert c.url == "https://news.ycombinator.com/item?id=39000007"
    assert c.title is None
    assert c.text == "I think Acme support is slow & unhelpful (39000007).\nSecond paragraph."
    assert (c.thread_id, c.parent_id) == ("hackernews:39000001", "hackernews:39000005")
    assert (c.engagement.likes, c.engagement.comments) == (0, 0)

    ask = Mention.model_validate(hit_fields(story(3, at, url=None, story_text="<p>Ask HN: Acme?</p>"), "a", NOW).fields)
    assert (ask.url, ask.text) == ("https://news.ycombinator.com/item?id=3", "Ask HN: Acme?")

    for broken in (
        {**story(4, at), "created_at_i": "yesterday"},
        {k: v for k, v in story(5, at).items() if k != "objectID"},
    ):
        candidate = hit_fields(broken, "acme", NOW)
        assert candidate.fields is None and candidate.problem


def corpus(count: int, start: int) -> list[dict[str, Any]]:
    """`count` hits, newest first by id, two or three per second so pages split seconds."""
    hits = []
    for n in range(count):
        at = start + n // 3
        hits.append(story(39000100 + n, at) if n % 4 == 0 else comment(39000100 + n, at))
    return hits


def expected(hits: list[dict[str, Any]]) -> list[str]:
    return sorted(f"hackernews:{h['objectID']}" for h in hits)


def hn_source(web: WebServer, **extra: Any) -> dict[str, Any]:
    return {
        "type": "hackernews",
        "query": "acme",
        "base_url": web.url("/"),
        "interval": 0.3,
        "hits_per_page": 10,
        **extra,
    }


async def raw_ids(bootstrap: str, topic: str) -> list[str]:
    return [k.decode() for k, _, _ in await read_all(bootstrap, topic) if k is not None]


async def cursor_of(bootstrap: str, topic: str) -> dict[str, Any] | None:
    values = list((await latest_by_key(bootstrap, topic)).values())
    return orjson.loads(values[0]) if values and values[0] is not None else None


@pytest.mark.kafka
async def test_pages_are_walked_and_the_next_poll_takes_only_what_is_new(
    web: WebServer, source_settings: IngestSettings, bootstrap: str
) -> None:
    start = int(time.time()) - 600
    hits = corpus(26, start)
    algolia = Algolia(hits)
    web.route(SEARCH, algolia)
    topics = Topics(source_settings.topic_prefix)

    async with source_runner(source_settings, listening(hn_source(web))) as runner:
        [worker] = runner.workers
        await eventually(lambda: worker.polls >= 1, 10, what="a first complete poll")
        first_run = [r.query for r in web.hits(SEARCH)]
        assert [q["page"] for q in first_run] == ["0", "1", "2"]
        assert {q["tags"] for q in first_run} == {"(story,comment)"}
        assert {q["query"] for q in first_run} == {"acme"}
        assert {q["hitsPerPage"] for q in first_run} == {"10"}
        assert all(q["numericFilters"].startswith("created_at_i>=") for q in first_run)
        assert sorted(await raw_ids(bootstrap, topics.mentions_raw)) == expected(hits)

        newest = start + 25 // 3
        late = [comment(39000900, newest), story(39000901, newest + 5)]  # same second as the newest, and newer
        algolia.hits.extend(late)
        polls = worker.polls
        await eventually(lambda: worker.polls >= polls + 2, 10, what="two more polls")
        assert web.hits(SEARCH)[-1].query["numericFilters"] == f"created_at_i>={newest + 5}"
        ids = await raw_ids(bootstrap, topics.mentions_raw)
        assert sorted(ids) == expected(hits + late)  # every hit once: no duplicate, no gap
        labels = {"source_id": worker.connector.source_id, "type": "hackernews"}
        assert sample(runner, "ecoute_ingest_source_produced_total", **labels) == 28
    cursor = await cursor_of(bootstrap, topics.ingest_checkpoints)
    assert cursor == {"since": newest + 5, "since_ids": ["hackernews:39000901"], "run": None}


@pytest.mark.kafka
async def test_a_worker_restarted_mid_run_neither_resends_nor_skips(
    web: WebServer, source_settings: IngestSettings, bootstrap: str
) -> None:
    start = int(time.time()) - 600
    hits = corpus(26, start)  # hits 8, 9 and 10 (newest first) share a second: page 0 ends inside it
    algolia = Algolia(hits)
    release = threading.Event()
    holding = [True]
    algolia.hold = lambda seen: release if holding[0] and seen.query.get("page") == "1" else None
    web.route(SEARCH, algolia)
    topics = Topics(source_settings.topic_prefix)

    async with source_runner(source_settings, listening(hn_source(web))) as runner:
        # The page-1 request arrives only once page 0 was produced and its checkpoint acknowledged.
        await eventually(lambda: any(r.query.get("page") == "1" for r in web.hits(SEARCH)), 10, what="page 1")
        assert runner.workers[0].committing is False
    holding[0] = False
    release.set()

    page_zero = sorted(hits, key=lambda h: (h["created_at_i"], int(h["objectID"])), reverse=True)[:10]
    assert sorted(await raw_ids(bootstrap, topics.mentions_raw)) == expected(page_zero)
    cursor = await cursor_of(bootstrap, topics.ingest_checkpoints)
    assert cursor is not None and cursor["run"] is not None
    boundary = page_zero[-1]["created_at_i"]
    assert cursor["run"]["upper"] == boundary
    assert cursor["run"]["upper_ids"] == sorted(
        f"hackernews:{h['objectID']}" for h in page_zero if h["created_at_i"] == boundary
    )

    before = len(web.hits(SEARCH))
    async with source_runner(source_settings, listening(hn_source(web))) as runner:
        await eventually(lambda: runner.workers[0].polls >= 1, 10, what="the resumed run")
    resumed = web.hits(SEARCH)[before]
    assert resumed.query["page"] == "0"
    assert f"created_at_i<={boundary}" in resumed.query["numericFilters"]
    ids = await raw_ids(bootstrap, topics.mentions_raw)
    assert len(ids) == len(set(ids)) == 26
    assert sorted(ids) == expected(hits)
    final = await cursor_of(bootstrap, topics.ingest_checkpoints)
    assert final is not None and final["run"] is None and final["since"] == start + 8
