"""Bluesky through a loopback Jetstream websocket: brand-term filtering, cursor rewind with (did, rkey) dedupe on
reconnect and restart, malformed events, and the address guard on the websocket URL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas import EcouteConfig, Mention, Topics
from services.ingest import IngestSettings
from services.ingest.connectors import BlueskyConnector, query_terms, term_pattern
from services.ingest.connectors.bluesky import event_fields
from tests.helpers import latest_by_key, read_all
from tests.ingest.connectors.conftest import LOOPBACK, eventually, sample, source_runner
from tests.ingest.connectors.social import Jetstream, post_event, rkey

NOW = datetime(2025, 3, 5, tzinfo=UTC)
BRANDS: dict[str, dict[str, Any]] = {
    "acme": {"query": '(acme OR "#acme" OR @acme) AND NOT "acme corp layoffs"'},
    "globex": {"query": ["globex", "Globex Corporation"]},
}


def test_terms_come_from_the_brand_queries() -> None:
    assert query_terms(BRANDS["acme"]["query"]) == ["acme", "#acme", "@acme"]
    assert query_terms("(acme OR acmé) AND NOT (layoffs OR strike) AND -spam widget* lang:fr") == [
        "acme",
        "acmé",
        "widget*",
    ]
    assert term_pattern(["widget*"]).search("Widgets!")  # type: ignore[union-attr]
    config = EcouteConfig.model_validate({"brands": BRANDS})
    connector = BlueskyConnector.from_config({"type": "bluesky", "url": "wss://jet.example/subscribe"}, config)
    assert connector.terms == ["acme", "#acme", "@acme", "globex", "Globex Corporation"]
    pattern = connector.pattern
    assert pattern is not None
    for text in ("I love my Acme phone", "#ACME!", "cc @acme.bsky.social", "globex\ncorporation", "(globex)"):
        assert pattern.search(text), text
    for text in ("acmeville", "subacme", "glob ex", ""):
        assert not pattern.search(text), text
    assert term_pattern([" ", "#"]) is None


def test_urls_must_be_websockets() -> None:
    for url in ("https://jet.example/subscribe", "file:///etc/passwd", "ws://user:pw@jet.example/", "ws:///x"):
        with pytest.raises(ValidationError):
            BlueskyConnector.from_config({"type": "bluesky", "url": url}, None)
    connector = BlueskyConnector.from_config({"type": "bluesky", "url": "wss://jet.example/subscribe?compress=false"})
    assert connector.subscribe_url(1_700_000_000_000_000) == (
        "wss://jet.example/subscribe?compress=false&wantedCollections=app.bsky.feed.post&cursor=1700000000000000"
    )


def test_post_commits_become_mentions() -> None:
    root = "at://did:plc:bob/app.bsky.feed.post/3kroot"
    event = post_event(1, 1_741_168_800_000_000, reply={"root": {"uri": root}, "parent": {"uri": root}})
    m = Mention.model_validate(event_fields(event, event["commit"]["record"], "Acme", NOW).fields)
    assert m.id == f"bluesky:did:plc:alice:{rkey(1)}"
    assert m.url == f"https://bsky.app/profile/did:plc:alice/post/{rkey(1)}"
    assert (m.source, m.site, m.lang, m.query) == ("bluesky", "bsky.app", "en", "Acme")
    assert m.text == "I love my Acme phone"
    assert m.published_at == datetime(2025, 3, 5, 10, tzinfo=UTC)
    assert (m.thread_id, m.parent_id) == ("bluesky:did:plc:bob:3kroot", "bluesky:did:plc:bob:3kroot")
    assert m.author.id == "bluesky:did:plc:alice" and m.author.url == "https://bsky.app/profile/did:plc:alice"


@pytest.fixture
async def jetstream() -> AsyncIterator[Jetstream]:
    server = Jetstream()
    async with server.running():
        yield server


def listening(source: dict[str, Any], allow: list[str] | None = None) -> EcouteConfig:
    return EcouteConfig.model_validate(
        {"brands": BRANDS, "sources": [source], "fetch": {"allow_networks": LOOPBACK if allow is None else allow}}
    )


def bluesky_source(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "bluesky", "url": url, "interval": 0.2, "rewind": 2, **extra}


def ids(*numbers: int) -> list[str]:
    return sorted(f"bluesky:did:plc:alice:{rkey(n)}" for n in numbers)


async def raw_ids(bootstrap: str, topic: str) -> list[str]:
    return [k.decode() for k, _, _ in await read_all(bootstrap, topic) if k is not None]


async def cursor_of(bootstrap: str, topic: str) -> dict[str, Any]:
    [value] = [v for v in (await latest_by_key(bootstrap, topic)).values() if v is not None]
    return orjson.loads(value)  # type: ignore[no-any-return]


def firehose(t0: int) -> list[dict[str, Any] | bytes]:
    """Posts that match (1, 3, 9) among everything else a Jetstream sends, 0.1 s apart."""
    step = 100_000
    delete = post_event(5, t0 + 5 * step)
    delete["commit"] = {"rev": "x", "operation": "delete", "collection": "app.bsky.feed.post", "rkey": rkey(1)}
    like = post_event(6, t0 + 6 * step, text="acme")
    like["commit"]["collection"] = "app.bsky.feed.like"
    reply = {"root": {"uri": f"at://did:plc:alice/app.bsky.feed.post/{rkey(1)}"}}
    return [
        post_event(1, t0 + 1 * step),
        post_event(2, t0 + 2 * step, text="nothing to see"),
        post_event(3, t0 + 3 * step, text="#Globex rocks", langs=["fr"]),
        delete,
        like,
        b'{"did": "did:plc:x", "time_us": oops',
        post_event(8, t0 + 8 * step, text="acmeville is a town"),
        post_event(9, t0 + 9 * step, text="Replying about ACME support", reply=reply),
        {"did": "did:plc:alice", "time_us": t0 + 10 * step, "kind": "identity", "identity": {"handle": "a.bsky"}},
    ]


@pytest.mark.kafka
async def test_filtered_posts_and_a_reconnect_with_rewound_cursor_and_no_duplicates(
    jetstream: Jetstream, source_settings: IngestSettings, bootstrap: str
) -> None:
    t0 = int(time.time() * 1_000_000)
    topics = Topics(source_settings.topic_prefix)
    async with source_runner(source_settings, listening(bluesky_source(jetstream.url()))) as runner:
        [worker] = runner.workers
        labels = {"source_id": worker.connector.source_id, "type": "bluesky"}
        await eventually(lambda: jetstream.connections, 10, what="a connection")
        path, query = jetstream.connections[0]
        assert (path, query) == ("/subscribe", {"wantedCollections": ["app.bsky.feed.post"]})  # no cursor yet

        jetstream.publish(*firehose(t0))
        await eventually(lambda: worker.status.produced == 3, 10, what="the matching posts")
        assert sample(runner, "ecoute_ingest_source_refused_total", **labels, reason="invalid") == 1  # malformed
        assert sample(runner, "ecoute_ingest_source_fetched_total", **labels) == 9
        saved = await cursor_of(bootstrap, topics.ingest_checkpoints)
        assert saved["time_us"] == t0 + 1_000_000

        # A post Jetstream delivers late (older time_us), then the connection drops: the reconnect rewinds the
        # cursor by 2 s, so the late post comes, and the three already sent come again and are dropped.
        jetstream.events.append(post_event(11, t0 + 4 * 100_000, text="late acme post"))
        jetstream.drop()
        await eventually(lambda: len(jetstream.connections) == 2, 10, what="a reconnect")
        assert jetstream.connections[1][1]["cursor"] == [str(t0 + 1_000_000 - 2_000_000)]
        await eventually(lambda: worker.status.produced == 4, 10, what="the late post")
        jetstream.publish(post_event(12, t0 + 2_000_000, text="acme again"))
        await eventually(lambda: worker.status.produced == 5, 10, what="a live post after the reconnect")
        assert sample(runner, "ecoute_ingest_source_errors_total", **labels, kind="connect") == 1  # the quick drop
    got = await raw_ids(bootstrap, topics.mentions_raw)
    assert len(got) == len(set(got))
    assert sorted(got) == ids(1, 3, 9, 11, 12)
    final = await cursor_of(bootstrap, topics.ingest_checkpoints)
    assert final["time_us"] == t0 + 2_000_000
    assert set(final["recent"]) == {f"did:plc:alice/{rkey(n)}" for n in (1, 3, 9, 11, 12)}  # all within 2 s


@pytest.mark.kafka
async def test_a_restarted_worker_resumes_from_its_cursor_without_duplicates(
    jetstream: Jetstream, source_settings: IngestSettings, bootstrap: str
) -> None:
    t0 = int(time.time() * 1_000_000)
    topics = Topics(source_settings.topic_prefix)
    config = listening(bluesky_source(jetstream.url()))
    async with source_runner(source_settings, config) as runner:
        await eventually(lambda: jetstream.connections, 10, what="a connection")
        jetstream.publish(post_event(1, t0), post_event(2, t0 + 100_000, text="no brand here"))
        await eventually(lambda: runner.workers[0].status.produced == 1, 10, what="the first post")
    saved = await cursor_of(bootstrap, topics.ingest_checkpoints)
    assert saved["recent"] == {f"did:plc:alice/{rkey(1)}": t0}
    # While no worker runs, Jetstream records more posts (one of them older than the saved cursor).
    jetstream.events += [post_event(3, t0 + 50_000, text="acme, a bit late"), post_event(4, t0 + 200_000)]
    async with source_runner(source_settings, config) as runner:
        await eventually(lambda: runner.workers[0].status.produced == 2, 10, what="what was missed")
        assert jetstream.connections[-1][1]["cursor"] == [str(saved["time_us"] - 2_000_000)]
    got = await raw_ids(bootstrap, topics.mentions_raw)
    assert len(got) == len(set(got))
    assert sorted(got) == ids(1, 3, 4)


@pytest.mark.kafka
async def test_websocket_addresses_are_guarded_like_http(
    jetstream: Jetstream, source_settings: IngestSettings, bootstrap: str
) -> None:
    forbidden = jetstream.url(host="127.0.0.2")  # loopback, but outside the allowed 127.0.0.1/32
    config = listening(bluesky_source(forbidden), allow=["127.0.0.1/32"])
    async with source_runner(source_settings, config) as runner:
        [worker] = runner.workers
        labels = {"source_id": worker.connector.source_id, "type": "bluesky", "reason": "forbidden_address"}
        await eventually(
            lambda: sample(runner, "ecoute_ingest_source_refused_total", **labels) >= 2, 10, what="refusals"
        )
        assert "fetch.allow_networks" in str(worker.status.last_error)
    assert jetstream.connections == []
