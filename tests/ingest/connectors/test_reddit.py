"""Reddit through a listing server speaking Reddit's JSON: mapping, `after` pagination, rate limits, OAuth, restart."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from schemas import Mention, Topics
from services.ingest import IngestSettings
from services.ingest.connectors import thing_fields
from tests.helpers import latest_by_key, read_all
from tests.ingest.connectors.conftest import eventually, listening, sample, source_runner
from tests.ingest.connectors.social import (
    JSON,
    FormWebServer,
    Posted,
    RedditSearch,
    basic_auth,
    reddit_comment,
    reddit_post,
)
from tests.ingest.connectors.web import Reply, Seen, WebServer

NOW = datetime(2025, 3, 5, tzinfo=UTC)
SUB_SEARCH = "/r/phones/search.json"


def test_posts_and_comments_become_mentions() -> None:
    at = 1_740_823_200
    candidate, created = thing_fields(reddit_post(1, at), "acme", NOW)
    post = Mention.model_validate(candidate.fields)
    assert created == at
    assert post.id == "reddit:t3_p1"
    assert post.url == "https://www.reddit.com/r/phones/comments/p1/acme_x1_review/"
    assert post.site == "reddit.com/r/phones"
    assert (post.title, post.text) == ("Acme X1 review", "My Acme X1 is great & fast")
    assert post.author.handle == "redditor" and post.author.url == "https://www.reddit.com/user/redditor"
    assert (post.engagement.likes, post.engagement.comments) == (42, 7)
    assert (post.thread_id, post.parent_id, post.query) == ("reddit:t3_p1", None, "acme")
    assert post.published_at == datetime.fromtimestamp(at, UTC)

    link_only = Mention.model_validate(thing_fields(reddit_post(2, at, selftext=""), "acme", NOW)[0].fields)
    assert link_only.text == "Acme X2 review"  # a link post: its title is its text

    candidate, _ = thing_fields(reddit_comment(3, at, link="t3_p1", parent="t1_c2"), "acme", NOW)
    comment = Mention.model_validate(candidate.fields)
    assert comment.id == "reddit:t1_c3" and comment.title is None
    assert comment.text == "Acme support never answered me (3)"
    assert (comment.thread_id, comment.parent_id) == ("reddit:t3_p1", "reddit:t1_c2")
    assert comment.engagement.likes == 0  # a negative score is no like

    deleted = Mention.model_validate(thing_fields(reddit_post(4, at, author="[deleted]"), "a", NOW)[0].fields)
    assert deleted.author.handle is None

    for broken in (
        {"kind": "t5", "data": {"name": "t5_x", "created_utc": at}},
        {"kind": "t3", "data": {**reddit_post(5, at)["data"], "created_utc": "yesterday"}},
        {"kind": "t3", "data": {**reddit_post(6, at)["data"], "name": "t3_../../x"}},
        {"kind": "t3"},
        "not an object",
    ):
        candidate, created = thing_fields(broken, "acme", NOW)
        assert candidate.fields is None and candidate.problem and created is None


def reddit_source(web: WebServer, **extra: Any) -> dict[str, Any]:
    return {"type": "reddit", "query": "acme", "base_url": web.url("/"), "interval": 0.3, "limit": 10, **extra}


async def raw_ids(bootstrap: str, topic: str) -> list[str]:
    return [k.decode() for k, _, _ in await read_all(bootstrap, topic) if k is not None]


async def cursor_of(bootstrap: str, topic: str) -> dict[str, Any]:
    values = [v for v in (await latest_by_key(bootstrap, topic)).values() if v is not None]
    assert len(values) == 1
    return orjson.loads(values[0])  # type: ignore[no-any-return]


def ids(things: list[dict[str, Any]]) -> list[str]:
    return sorted(f"reddit:{t['data']['name']}" for t in things)


@pytest.mark.kafka
async def test_listings_are_paged_with_after_and_the_next_poll_takes_only_what_is_new(
    web: WebServer, source_settings: IngestSettings, bootstrap: str
) -> None:
    start = int(time.time()) - 600
    posts = [reddit_post(n, start + n // 2) for n in range(23)]  # two per second: pages split seconds
    comments = [reddit_comment(100 + n, start + n) for n in range(4)]
    elsewhere = [reddit_post(900, start + 5, subreddit="other")]  # outside the configured subreddit
    search = RedditSearch(posts + comments + elsewhere)
    web.route(SUB_SEARCH, search)
    topics = Topics(source_settings.topic_prefix)

    async with source_runner(source_settings, listening(reddit_source(web, subreddits=["r/phones"]))) as runner:
        [worker] = runner.workers
        await eventually(lambda: worker.polls >= 1, 10, what="a first complete poll")
        first = [r.query for r in web.hits(SUB_SEARCH)]
        assert [(q["type"], q.get("after")) for q in first] == [
            ("link", None),
            ("link", "t3_p13"),
            ("link", "t3_p3"),
            ("comment", None),
        ]
        assert all(q["q"] == "acme" and q["sort"] == "new" and q["restrict_sr"] == "1" for q in first)
        assert sorted(await raw_ids(bootstrap, topics.mentions_raw)) == ids(posts + comments)

        late = [reddit_post(50, start + 11), reddit_post(51, start + 20), reddit_comment(150, start + 30)]
        search.things.extend(late)  # p50 shares the newest post's second; the others are newer
        polls = worker.polls
        await eventually(lambda: worker.polls >= polls + 2, 10, what="two more polls")
        got = await raw_ids(bootstrap, topics.mentions_raw)
        assert len(got) == len(set(got))  # nothing twice
        assert sorted(got) == ids(posts + comments + late)  # and nothing missing
        labels = {"source_id": worker.connector.source_id, "type": "reddit"}
        assert sample(runner, "ecoute_ingest_source_produced_total", **labels) == 30
    cursor = await cursor_of(bootstrap, topics.ingest_checkpoints)
    assert cursor["feeds"]["phones:link"] == {"since": start + 20, "since_ids": ["reddit:t3_p51"], "run": None}
    assert cursor["feeds"]["phones:comment"]["since"] == start + 30


@pytest.mark.kafka
async def test_429_5xx_malformed_pages_and_rate_limit_headers(
    web: WebServer, source_settings: IngestSettings, bootstrap: str
) -> None:
    start = int(time.time()) - 600
    posts = [reddit_post(n, start + n) for n in range(12)]
    search = RedditSearch(posts)
    search.script = [
        Reply(429, b"", {"Retry-After": "0"}),  # retried by the fetcher within the poll
        Reply(200, b"<html>we took the site down</html>", {"Content-Type": "text/html"}),  # refused: malformed
        Reply(502, b"bad gateway"),  # retried…
        Reply(503, b"busy"),  # …and still failing: the poll fails and is retried with backoff
    ]
    times: list[float] = []

    def timed(seen: Seen) -> Reply:
        times.append(time.monotonic())
        return search(seen)

    web.route("/search.json", timed)
    topics = Topics(source_settings.topic_prefix)
    source = reddit_source(web, comments=False)

    async with source_runner(source_settings, listening(source)) as runner:
        [worker] = runner.workers
        labels = {"source_id": worker.connector.source_id, "type": "reddit"}
        await eventually(lambda: worker.status.produced == 12, 10, what="the listing after the failures")
        assert sample(runner, "ecoute_ingest_source_refused_total", **labels, reason="malformed") == 1
        assert sample(runner, "ecoute_ingest_source_errors_total", **labels, kind="http_status") == 1
        assert search.script == []  # every scripted answer was served, then the two pages

        # Reddit says the allowance is spent and resets in 1 s: the next request waits for it.
        search.headers = {"x-ratelimit-remaining": "0", "x-ratelimit-used": "100", "x-ratelimit-reset": "1"}
        search.things.append(reddit_post(60, start + 100))
        before = len(times)
        await eventually(lambda: len(times) >= before + 3, 10, what="three rate-limited requests")
        gaps = [b - a for a, b in zip(times[before:], times[before + 1 :], strict=False)]
        assert all(gap >= 0.9 for gap in gaps[:2]), gaps
    got = await raw_ids(bootstrap, topics.mentions_raw)
    assert sorted(got) == ids([*posts, reddit_post(60, start + 100)])


@pytest.mark.kafka
async def test_oauth_application_token_and_its_renewal(source_settings: IngestSettings, bootstrap: str) -> None:
    web = FormWebServer()
    web.start()
    try:
        start = int(time.time()) - 600
        search = RedditSearch([reddit_post(n, start + n) for n in range(3)])
        search.token = "token-1"
        web.route("/oauth/search.json", search)
        tokens = iter(["token-1", "token-2"])

        def token(posted: Posted) -> Reply:
            if basic_auth(posted.headers) != ("my-app", "s3cret") or posted.form != {
                "grant_type": "client_credentials"
            }:
                return Reply(401, b'{"error": "invalid_client"}', JSON)
            body = {"access_token": next(tokens), "token_type": "bearer", "expires_in": 86400, "scope": "*"}
            return Reply(200, orjson.dumps(body), JSON)

        web.post_routes["/api/v1/access_token"] = token
        source = reddit_source(
            web,
            comments=False,
            oauth_base_url=web.url("/oauth"),
            oauth={"client_id": "my-app", "client_secret": "s3cret"},
        )
        topics = Topics(source_settings.topic_prefix)
        async with source_runner(source_settings, listening(source)) as runner:
            [worker] = runner.workers
            await eventually(lambda: worker.polls >= 1, 10, what="a first poll")
            assert [p.path for p in web.posts] == ["/api/v1/access_token"]
            assert {r.headers["authorization"] for r in web.hits("/oauth/search.json")} == {"bearer token-1"}
            assert web.hits("/search.json") == []  # nothing went to the public endpoint

            search.token = "token-2"  # the first token is revoked: a 401, a new token, the same request again
            search.things.append(reddit_post(10, start + 50))
            await eventually(lambda: worker.status.produced == 4, 10, what="the post after the renewal")
            assert len(web.posts) == 2
            assert web.hits("/oauth/search.json")[-1].headers["authorization"] == "bearer token-2"
            assert worker.status.consecutive_failures == 0
        assert sorted(await raw_ids(bootstrap, topics.mentions_raw)) == ids(search.things)
    finally:
        web.stop()


@pytest.mark.kafka
async def test_a_worker_restarted_mid_walk_resumes_from_after(
    web: WebServer, source_settings: IngestSettings, bootstrap: str
) -> None:
    start = int(time.time()) - 600
    posts = [reddit_post(n, start + n // 3) for n in range(25)]
    search = RedditSearch(posts)
    release = threading.Event()
    holding = [True]
    search.hold = lambda seen: release if holding[0] and seen.query.get("after") else None
    web.route("/search.json", search)
    topics = Topics(source_settings.topic_prefix)
    source = reddit_source(web, comments=False)

    async with source_runner(source_settings, listening(source)) as runner:
        # Page 2 is asked for only once page 1 was produced and its checkpoint acknowledged; then we stop.
        await eventually(lambda: any(r.query.get("after") for r in web.hits("/search.json")), 10, what="page 2")
        assert runner.workers[0].committing is False
    holding[0] = False
    release.set()

    newest_first = sorted(posts, key=lambda t: (t["data"]["created_utc"], t["data"]["name"]), reverse=True)
    assert sorted(await raw_ids(bootstrap, topics.mentions_raw)) == ids(newest_first[:10])
    cursor = await cursor_of(bootstrap, topics.ingest_checkpoints)
    assert cursor["feeds"]["*:link"]["run"]["after"] == newest_first[9]["data"]["name"]

    before = len(web.hits("/search.json"))
    async with source_runner(source_settings, listening(source)) as runner:
        await eventually(lambda: runner.workers[0].polls >= 1, 10, what="the resumed walk")
    assert web.hits("/search.json")[before].query["after"] == newest_first[9]["data"]["name"]
    got = await raw_ids(bootstrap, topics.mentions_raw)
    assert len(got) == len(set(got)) == 25
    assert sorted(got) == ids(posts)
    final = await cursor_of(bootstrap, topics.ingest_checkpoints)
    assert final["feeds"]["*:link"]["run"] is None and final["feeds"]["*:link"]["since"] == start + 8
