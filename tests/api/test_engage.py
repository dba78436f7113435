"""Replies and follows from the inbox, against a loopback server speaking Mastodon's REST API and Bluesky's XRPC,
with real Kafka for alerts.actions: the right payloads reach each platform once (a retried request id posts
nothing more, on any replica), roles and brand scoping, the handled mark and response time, platform errors, and
the credentials nowhere but in the requests to the platform."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from schemas import Topics, dump, ensure_topics, utc_now
from services.api.settings import ApiSettings
from tests.api.api_factories import scored
from tests.api.api_server import ApiServer
from tests.api.fake_social import FakeSocial
from tests.api.history_data import History, store
from tests.api.test_api_kafka import metric, producer, wait_ready
from tests.helpers import async_wait_until, latest_by_key

pytestmark = [pytest.mark.kafka, pytest.mark.usefixtures("clean_env")]

TOKEN = "mastodon-token-s3cret-0123456789"
APP_PASSWORD = "abcd-efgh-ijkl-mnop"
HANDLE = "acme.bsky.example"
KEYS = {"responder": "k-responder-acme", "read": "k-read-acme", "globex": "k-responder-globex", "admin": "k-admin"}
SECRETS = (TOKEN, APP_PASSWORD, "jwt-access-1", "jwt-refresh-1", *KEYS.values())

MASTO_ID = "mastodon:social.example:111000"
MASTO_URL = "https://social.example/@jane/111000"
SKY_DID, SKY_RKEY = "did:plc:bob", "3kbobpost0001"
SKY_ID = f"bluesky:{SKY_DID}:{SKY_RKEY}"
ROOT = {"uri": "at://did:plc:carol/app.bsky.feed.post/3kroot0000001", "cid": "bafyreiroot"}
PARENT = {"uri": f"at://{SKY_DID}/app.bsky.feed.post/{SKY_RKEY}", "cid": "bafyreibobpost"}
SKY_BARE_ID = "bluesky:did:plc:dan:3kdanpost0001"  # no reply_ref kept: found through getRecord


@pytest.fixture
def fake() -> Iterator[FakeSocial]:
    server = FakeSocial(token=TOKEN, handle=HANDLE, password=APP_PASSWORD).start()
    server.known_statuses[MASTO_URL] = "9001"
    server.known_accounts["jane@social.example"] = "4242"
    server.handles["bob.bsky.example"] = SKY_DID
    # Dan's post, already on the network (another repo), which the PDS can read.
    server.records[("did:plc:dan", "app.bsky.feed.post", "3kdanpost0001")] = {
        "uri": "at://did:plc:dan/app.bsky.feed.post/3kdanpost0001",
        "cid": "bafyreidanpost",
        "value": {"$type": "app.bsky.feed.post", "text": "acme?", "reply": {"root": ROOT, "parent": ROOT}},
    }
    yield server
    server.stop()


def write_config(tmp_path: Path, fake: FakeSocial) -> Path:
    config = {
        "brands": {
            "acme": {
                "query": "acme",
                "accounts": {
                    "mastodon": {"instance": fake.url, "token": TOKEN},
                    "bluesky": {"service": fake.url, "handle": HANDLE, "app_password": APP_PASSWORD},
                },
            },
            "globex": {"query": "globex"},
        },
        "fetch": {"allow_networks": ["127.0.0.0/8"]},
        "api_keys": [
            {"key": KEYS["responder"], "role": "responder", "brands": ["acme"]},
            {"key": KEYS["read"], "role": "read", "brands": ["acme"]},
            {"key": KEYS["globex"], "role": "responder", "brands": ["globex"]},
            {"key": KEYS["admin"], "role": "admin", "brands": ["*"]},
        ],
    }
    path = tmp_path / "ecoute.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def seed(bootstrap: str, topics: Topics) -> None:
    now = utc_now()
    mentions = [
        scored(
            "acme",
            MASTO_ID,
            now - timedelta(minutes=10),
            label="negative",
            source="mastodon",
            url=MASTO_URL,
            site="social.example",
            author="jane@social.example",
        ),
        scored(
            "acme",
            SKY_ID,
            now - timedelta(minutes=20),
            label="negative",
            source="bluesky",
            lang="en",
            author=f"bluesky:{SKY_DID}",
            reply_ref={"root": ROOT, "parent": PARENT},
        ),
        scored("acme", SKY_BARE_ID, now - timedelta(minutes=30), label="negative", source="bluesky"),
        scored("acme", "rss:abc", now - timedelta(minutes=5), label="negative", source="rss"),
        scored("globex", "mastodon:social.example:5", now, label="negative", source="mastodon"),
    ]
    async with producer(bootstrap) as client:
        for mention in mentions:
            await client.send_and_wait(topics.mentions_scored, dump(mention), key=mention.brand.encode())


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


@asynccontextmanager
async def start_api(serve_api: Any, bootstrap: str, prefix: str, config: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = ApiSettings(
        kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, config=config, engage_timeout_seconds=1.5
    )
    server: ApiServer = serve_api(settings)
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        await wait_ready(client)
        yield client


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


async def test_reply_and_follow_reach_both_platforms_once(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any, fake: FakeSocial, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    await seed(bootstrap, topics)
    config = write_config(tmp_path, fake)
    answers: list[str] = []
    async with start_api(serve_api, bootstrap, topic_prefix, config) as api:
        headers = {**auth("responder"), "Idempotency-Key": "r-masto-1"}
        accounts = await api.get("/v1/brands/acme/accounts", headers=auth("read"))
        assert accounts.status_code == 200 and accounts.json()["can_respond"] is False
        assert [a["platform"] for a in accounts.json()["accounts"]] == ["mastodon", "bluesky"]
        answers.append(accounts.text)

        # Mastodon: the post lives on another instance, found through the brand's instance by its URL.
        first = await api.post(
            f"/v1/mentions/{MASTO_ID}/reply", json={"text": "Sorry! DM us?", "by": "jo"}, headers=headers
        )
        assert first.status_code == 200, first.text
        answers.append(first.text)
        body = first.json()
        assert body["platform"] == "mastodon" and body["post_id"] == "200000" and body["by"] == "jo"
        assert body["text"] == "@jane@social.example Sorry! DM us?"
        [post] = fake.posts_to("/api/v1/statuses")
        assert post.body == {"status": "@jane@social.example Sorry! DM us?", "in_reply_to_id": "9001"}
        assert post.headers["authorization"] == f"Bearer {TOKEN}"
        assert post.headers["idempotency-key"] == "ecoute-acme-r-masto-1"
        search = next(c for c in fake.calls if c.path == "/api/v2/search")
        assert search.query == {"q": MASTO_URL, "type": "statuses", "resolve": "true", "limit": "1"}

        again = await api.post(
            f"/v1/mentions/{MASTO_ID}/reply", json={"text": "Sorry! DM us?", "by": "jo"}, headers=headers
        )
        assert again.status_code == 200 and again.json() == body
        assert again.headers["idempotent-replayed"] == "true"
        assert len(fake.posts_to("/api/v1/statuses")) == 1
        other = await api.post(f"/v1/mentions/{MASTO_ID}/reply", json={"text": "Something else"}, headers=headers)
        assert other.status_code == 409 and "already used" in other.json()["detail"]
        assert len(fake.posts_to("/api/v1/statuses")) == 1

        # Bluesky, with the reply ref the Jetstream connector keeps.
        sky = await api.post(
            f"/v1/mentions/{SKY_ID}/reply",
            json={"text": "We are on it", "request_id": "r-sky-1"},
            headers=auth("responder"),
        )
        assert sky.status_code == 200, sky.text
        answers.append(sky.text)
        [session] = fake.posts_to("/xrpc/com.atproto.server.createSession")
        assert session.body == {"identifier": HANDLE, "password": APP_PASSWORD}
        [create] = fake.posts_to("/xrpc/com.atproto.repo.createRecord")
        assert create.headers["authorization"] == "Bearer jwt-access-1"
        assert create.body["repo"] == fake.did and create.body["collection"] == "app.bsky.feed.post"
        assert re.fullmatch(r"[2-7a-z]{13}", create.body["rkey"])  # a TID
        record = create.body["record"]
        assert record["$type"] == "app.bsky.feed.post" and record["text"] == "We are on it"
        assert record["reply"] == {"root": ROOT, "parent": PARENT} and record["langs"] == ["en"]
        made = fake.records[(fake.did, "app.bsky.feed.post", create.body["rkey"])]
        assert sky.json()["post_id"] == made["uri"] and sky.json()["cid"] == made["cid"]
        assert sky.json()["url"] == f"https://bsky.app/profile/{fake.did}/post/{create.body['rkey']}"
        retry = await api.post(
            f"/v1/mentions/{SKY_ID}/reply",
            json={"text": "We are on it", "request_id": "r-sky-1"},
            headers=auth("responder"),
        )
        assert retry.json() == sky.json() and len(fake.posts_to("/xrpc/com.atproto.repo.createRecord")) == 1

        # Bluesky, a post known only by its id: its record (and thread root) read through the PDS.
        bare = await api.post(f"/v1/mentions/{SKY_BARE_ID}/reply", json={"text": "Hi Dan"}, headers=auth("admin"))
        assert bare.status_code == 200, bare.text
        reply_ref = fake.posts_to("/xrpc/com.atproto.repo.createRecord")[-1].body["record"]["reply"]
        assert reply_ref == {
            "root": ROOT,
            "parent": {"uri": "at://did:plc:dan/app.bsky.feed.post/3kdanpost0001", "cid": "bafyreidanpost"},
        }

        # Follows: the author ids of mentions work as they are.
        follow = await api.post("/v1/authors/mastodon/mastodon:jane@social.example/follow", headers=auth("responder"))
        assert follow.status_code == 200, follow.text
        assert follow.json()["post_id"] == "4242" and fake.follows == ["4242"]
        assert fake.posts_to("/api/v1/accounts/4242/follow")[0].headers["authorization"] == f"Bearer {TOKEN}"
        sky_follow = await api.post(
            "/v1/authors/bluesky/bob.bsky.example/follow",
            json={"brand": "acme", "request_id": "f-1"},
            headers=auth("responder"),
        )
        assert sky_follow.status_code == 200, sky_follow.text
        follow_record = fake.posts_to("/xrpc/com.atproto.repo.createRecord")[-1].body
        assert follow_record["collection"] == "app.bsky.graph.follow"
        assert (
            follow_record["record"]["subject"] == SKY_DID
            and follow_record["record"]["$type"] == "app.bsky.graph.follow"
        )
        again_follow = await api.post(
            "/v1/authors/bluesky/bob.bsky.example/follow",
            json={"brand": "acme"},
            headers={**auth("responder"), "Idempotency-Key": "f-1"},
        )
        assert again_follow.json() == sky_follow.json()
        assert (
            len(
                [
                    c
                    for c in fake.posts_to("/xrpc/com.atproto.repo.createRecord")
                    if c.body["collection"] == "app.bsky.graph.follow"
                ]
            )
            == 1
        )
        answers += [follow.text, sky_follow.text]

        # The answered mentions left the inbox; their response times count.
        inbox = (await api.get("/v1/brands/acme/inbox", headers=auth("read"))).json()
        assert [item["id"] for item in inbox["items"]] == ["rss:abc"]
        times = (await api.get("/v1/brands/acme/response-time", headers=auth("read"))).json()
        assert times["count"] == 3 and 590 < times["median_seconds"] < 1300
        assert 570 < body["response_seconds"] < 700

    # Who sent what is on alerts.actions (compacted): the sent records and the handled marks.
    records = {
        k.decode(): orjson.loads(v)
        for k, v in (await latest_by_key(bootstrap, topics.alerts_actions)).items()
        if k is not None and v is not None
    }
    sent = records["reply:acme:r-masto-1"]
    assert sent["schema"] == "outreach/1" and sent["state"] == "sent" and sent["by"] == "jo"
    assert sent["key_id"].startswith("key-") and sent["post_id"] == "200000" and sent["mention_id"] == MASTO_ID
    assert records[f"mention:acme:{MASTO_ID}"]["by"] == "jo"
    assert records[f"mention:acme:{SKY_ID}"]["by"].startswith("responder key-")
    assert records["follow:acme:f-1"]["state"] == "sent"
    # The credentials went only to the platform: not in answers, records or logs.
    for text in (*answers, *(orjson.dumps(r).decode() for r in records.values()), caplog.text):
        assert_no_secret(text)


async def test_a_retry_on_another_replica_is_answered_from_the_topic(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any, fake: FakeSocial
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    await seed(bootstrap, topics)
    config = write_config(tmp_path, fake)
    headers = {**auth("responder"), "Idempotency-Key": "r-2"}
    async with (
        start_api(serve_api, bootstrap, topic_prefix, config) as one,
        start_api(serve_api, bootstrap, topic_prefix, config) as two,
    ):
        first = await one.post(f"/v1/mentions/{SKY_ID}/reply", json={"text": "Thanks"}, headers=headers)
        assert first.status_code == 200, first.text

        # Had the second replica not read the record yet, the platform would keep the retry from posting: the record
        # key made from the request id is taken, and that record is the answer (Mastodon: the Idempotency-Key).
        second = await two.post(f"/v1/mentions/{SKY_ID}/reply", json={"text": "Thanks"}, headers=headers)
        assert second.status_code == 200, second.text
        assert [second.json()[k] for k in ("post_id", "cid", "url")] == [
            first.json()[k] for k in ("post_id", "cid", "url")
        ]
        masto = {**auth("responder"), "Idempotency-Key": "r-3"}
        first_masto = await one.post(f"/v1/mentions/{MASTO_ID}/reply", json={"text": "Hello"}, headers=masto)
        second_masto = await two.post(f"/v1/mentions/{MASTO_ID}/reply", json={"text": "Hello"}, headers=masto)
        assert first_masto.status_code == second_masto.status_code == 200
        assert first_masto.json()["post_id"] == second_masto.json()["post_id"]

        async def replayed() -> bool:
            again = await two.post(f"/v1/mentions/{SKY_ID}/reply", json={"text": "Thanks"}, headers=headers)
            return (
                again.headers.get("idempotent-replayed") == "true"
                and again.json()["post_id"] == first.json()["post_id"]
            )

        await async_wait_until(replayed, 15, what="the second replica to answer from alerts.actions")
        # Whether the second replica had read the record yet or not: one post, one status.
        assert len([r for (repo, _, _), r in fake.records.items() if repo == fake.did]) == 1
        assert len(fake.statuses) == 1


async def test_roles_brands_and_platform_errors(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any, fake: FakeSocial
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    await seed(bootstrap, topics)
    config = write_config(tmp_path, fake)
    async with start_api(serve_api, bootstrap, topic_prefix, config) as api:
        reply = f"/v1/mentions/{MASTO_ID}/reply"
        denied = await api.post(reply, json={"text": "hi"}, headers=auth("read"))
        assert denied.status_code == 403 and "responder" in denied.json()["detail"]
        assert (await api.post("/v1/authors/bluesky/did:plc:bob/follow", headers=auth("read"))).status_code == 403
        # A brand the key may not see is unknown, and so are its mentions.
        assert (await api.post(reply, json={"text": "hi", "brand": "acme"}, headers=auth("globex"))).status_code == 404
        assert (await api.post(reply, json={"text": "hi"}, headers=auth("globex"))).status_code == 404
        hidden = await api.post(
            "/v1/authors/bluesky/did:plc:bob/follow", json={"brand": "acme"}, headers=auth("globex")
        )
        assert hidden.status_code == 404
        # globex has no account; an RSS mention has no reply API; a blank text names the field.
        no_account = await api.post(
            "/v1/mentions/mastodon:social.example:5/reply", json={"text": "hi"}, headers=auth("globex")
        )
        assert no_account.status_code == 422 and "accounts.mastodon" in no_account.json()["detail"]
        rss = await api.post("/v1/mentions/rss:abc/reply", json={"text": "hi"}, headers=auth("responder"))
        assert rss.status_code == 422 and "rss" in rss.json()["detail"]
        blank = await api.post(reply, json={"text": "  "}, headers=auth("responder"))
        assert blank.status_code == 422 and blank.json()["detail"][0]["loc"] == ["body", "text"]
        bad_platform = await api.post("/v1/authors/twitter/jane/follow", headers=auth("responder"))
        assert bad_platform.status_code == 422 and bad_platform.json()["detail"][0]["loc"] == ["path", "platform"]
        assert fake.calls == []  # nothing reached the platforms

        # The platform refuses (4xx): 422 with its words; nothing recorded as sent, the mention still waits.
        too_long = await api.post(
            reply, json={"text": "x" * 600}, headers={**auth("responder"), "Idempotency-Key": "e1"}
        )
        assert too_long.status_code == 422 and "character limit of 500" in too_long.json()["detail"]
        # Down (5xx): 502.
        fake.forced["/api/v1/statuses"] = [(503, {"error": "Service Unavailable"})]
        down = await api.post(reply, json={"text": "hello"}, headers={**auth("responder"), "Idempotency-Key": "e2"})
        assert down.status_code == 502
        inbox = (await api.get("/v1/brands/acme/inbox", headers=auth("read"))).json()
        assert MASTO_ID in [item["id"] for item in inbox["items"]]
        assert fake.statuses == []

        # Too slow (the post went through, the answer did not come in time): 504; the retry posts nothing more.
        fake.delay_once["/api/v1/statuses"] = 3.0
        slow = await api.post(reply, json={"text": "hello"}, headers={**auth("responder"), "Idempotency-Key": "e3"})
        assert slow.status_code == 504 and "same request id" in slow.json()["detail"]
        retried = await api.post(reply, json={"text": "hello"}, headers={**auth("responder"), "Idempotency-Key": "e3"})
        assert retried.status_code == 200 and len(fake.statuses) == 1
        assert retried.json()["post_id"] == fake.statuses[0]["id"]

        fake.delay_once["/xrpc/com.atproto.repo.createRecord"] = 3.0
        sky_headers = {**auth("responder"), "Idempotency-Key": "e4"}
        slow_sky = await api.post(f"/v1/mentions/{SKY_ID}/reply", json={"text": "hello"}, headers=sky_headers)
        assert slow_sky.status_code == 504
        sky_retry = await api.post(f"/v1/mentions/{SKY_ID}/reply", json={"text": "hello"}, headers=sky_headers)
        assert sky_retry.status_code == 200, sky_retry.text
        posts = [r for (repo, collection, _), r in fake.records.items() if repo == fake.did]
        assert len(posts) == 1 and sky_retry.json()["post_id"] == posts[0]["uri"]
        exposition = (await api.get("/metrics")).text
        counts = {
            (platform, outcome): metric(
                exposition, "ecoute_api_outreach_total", platform=platform, kind="reply", outcome=outcome
            )
            for platform, outcome in [
                ("mastodon", "refused"),
                ("mastodon", "unavailable"),
                ("mastodon", "timeout"),
                ("mastodon", "sent"),
                ("bluesky", "timeout"),
                ("bluesky", "sent"),
            ]
        }
        assert set(counts.values()) == {1.0}, counts

    records = await latest_by_key(bootstrap, topics.alerts_actions)
    states = {k.decode(): orjson.loads(v)["state"] for k, v in records.items() if k and k.startswith(b"reply:")}
    assert states == {
        "reply:acme:e1": "pending",
        "reply:acme:e2": "pending",
        "reply:acme:e3": "sent",
        "reply:acme:e4": "sent",
    }


async def test_a_mention_older_than_the_views_is_answered_from_the_history_store(
    bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any, fake: FakeSocial, database_url: str
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=2)
    old = scored(
        "acme",
        "mastodon:social.example:99",
        utc_now() - timedelta(days=3),
        label="negative",
        source="mastodon",
        url="https://social.example/@jane/99",
        author="jane@social.example",
    )
    await store(database_url, History(mentions=[old]))
    fake.known_statuses["https://social.example/@jane/99"] = "7007"
    settings = ApiSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=topic_prefix,
        config=write_config(tmp_path, fake),
        database_url=database_url,
    )
    server: ApiServer = serve_api(settings)
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as api:
        await wait_ready(api)
        hidden = await api.post(f"/v1/mentions/{old.id}/reply", json={"text": "hi"}, headers=auth("globex"))
        assert hidden.status_code == 404  # another brand's stored mention stays unknown
        answer = await api.post(
            f"/v1/mentions/{old.id}/reply", json={"text": "Late, sorry!"}, headers=auth("responder")
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["brand"] == "acme" and 3 * 86400 - 60 < answer.json()["response_seconds"] < 3 * 86400 + 60
    assert [(s["in_reply_to_id"], s["content"]) for s in fake.statuses] == [
        ("7007", "<p>@jane@social.example Late, sorry!</p>")
    ]
