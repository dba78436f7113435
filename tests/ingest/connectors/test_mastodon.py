"""Mastodon through a loopback instance: status mapping, REST catch-up with min_id, the SSE hashtag stream,
reconnects that catch up without duplicates, and a restarted worker."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from schemas import Mention, Topics
from services.ingest import IngestSettings
from services.ingest.connectors import ResponseTooLarge, status_fields
from services.ingest.connectors.streams import SseDecoder
from services.ingest.sources import SourceWorker
from tests.helpers import latest_by_key, read_all
from tests.ingest.connectors.conftest import eventually, listening, sample, source_runner
from tests.ingest.connectors.social import MastodonInstance, status, status_id
from tests.ingest.connectors.web import Reply, WebServer

NOW = datetime(2025, 3, 5, tzinfo=UTC)
TIMELINE = "/api/v1/timelines/tag/acme"


def test_statuses_become_mentions() -> None:
    reply = status(7, in_reply_to_id=status_id(6), language="fr-CA")
    m = Mention.model_validate(status_fields(reply, "mastodon.example", "#acme", NOW).fields)
    assert m.id == f"mastodon:mastodon.example:{status_id(7)}"
    assert (m.source, m.site, m.url) == ("mastodon", "mastodon.example", "https://mastodon.example/@jane/7")
    assert m.text == "Loving my #acme X7 & more"
    assert m.lang == "fr"
    assert (m.author.handle, m.author.name, m.author.followers) == ("jane@mastodon.example", "Jane", 1200)
    assert m.author.id == "mastodon:jane@mastodon.example"
    assert (m.engagement.likes, m.engagement.shares, m.engagement.comments) == (5, 3, 2)
    assert m.parent_id == f"mastodon:mastodon.example:{status_id(6)}"
    assert m.published_at == datetime(2025, 3, 5, 10, tzinfo=UTC)
    assert m.query == "#acme"

    remote = status(8, account={"acct": "bob@other.example", "followers_count": 3, "display_name": ""})
    r = Mention.model_validate(status_fields(remote, "mastodon.example", "#acme", NOW).fields)
    assert (r.author.handle, r.author.name) == ("bob@other.example", None)
    boost = status(9, reblog=status(3))
    assert status_fields(boost, "mastodon.example", "#acme", NOW).fields["id"].endswith(status_id(3))  # type: ignore[index]
    warned = status(10, spoiler_text="Acme rant", content="<p>long story</p>")
    assert status_fields(warned, "h", "#acme", NOW).fields["text"] == "Acme rant\n\nlong story"  # type: ignore[index]

    for broken in (status(11, id="abc"), status(12, id=None), ["not", "a", "status"]):
        candidate = status_fields(broken, "mastodon.example", "#acme", NOW)
        assert candidate.fields is None and candidate.problem


@pytest.fixture
def instance(web: WebServer) -> Iterator[MastodonInstance]:
    mastodon = MastodonInstance(web)
    yield mastodon
    mastodon.close()


def mastodon_source(web: WebServer, **extra: Any) -> dict[str, Any]:
    return {"type": "mastodon", "instance": web.url("/"), "hashtags": ["#Acme"], "interval": 0.2, **extra}


async def raw_ids(bootstrap: str, topic: str) -> list[str]:
    return [k.decode() for k, _, _ in await read_all(bootstrap, topic) if k is not None]


def ids(*numbers: int) -> list[str]:
    return sorted(f"mastodon:127.0.0.1:{status_id(n)}" for n in numbers)


async def cursor_of(bootstrap: str, topic: str) -> dict[str, Any]:
    [value] = [v for v in (await latest_by_key(bootstrap, topic)).values() if v is not None]
    return orjson.loads(value)  # type: ignore[no-any-return]


@pytest.mark.kafka
async def test_rest_polling_takes_the_latest_page_then_pages_forward_with_min_id(
    web: WebServer, instance: MastodonInstance, source_settings: IngestSettings, bootstrap: str
) -> None:
    instance.post(*(status(n) for n in range(1, 46)), stream=False)
    topics = Topics(source_settings.topic_prefix)
    async with source_runner(source_settings, listening(mastodon_source(web, streaming=False))) as runner:
        [worker] = runner.workers
        await eventually(lambda: worker.polls >= 1, 10, what="a first poll")
        assert [r.query for r in web.hits(TIMELINE)] == [{"limit": "40"}]  # the first run: the latest page only
        assert sorted(await raw_ids(bootstrap, topics.mentions_raw)) == ids(*range(6, 46))

        # 46 is not a valid mention (counted, skipped); 55 new statuses are more than a page.
        instance.post(status(46, created_at="yesterday"), *(status(n) for n in range(47, 101)), stream=False)
        await eventually(lambda: worker.status.produced == 40 + 54, 10, what="the new statuses")
        await eventually(lambda: web.hits(TIMELINE)[-1].query.get("min_id") == status_id(100), 10, what="a poll")
        asked = [min_id for min_id, _ in itertools.groupby(r.query.get("min_id") for r in web.hits(TIMELINE))]
        assert asked[:4] == [None, status_id(45), status_id(85), status_id(100)]
        labels = {"source_id": worker.connector.source_id, "type": "mastodon"}
        assert sample(runner, "ecoute_ingest_source_refused_total", **labels, reason="invalid") == 1
    got = await raw_ids(bootstrap, topics.mentions_raw)
    assert len(got) == len(set(got))
    assert sorted(got) == ids(*range(6, 46), *range(47, 101))
    assert await cursor_of(bootstrap, topics.ingest_checkpoints) == {"tags": {"acme": status_id(100)}}


@pytest.mark.kafka
async def test_stream_reconnects_catch_up_through_rest_without_duplicates(
    web: WebServer, instance: MastodonInstance, source_settings: IngestSettings, bootstrap: str
) -> None:
    instance.post(*(status(n) for n in range(1, 4)), stream=False)
    topics = Topics(source_settings.topic_prefix)
    async with source_runner(source_settings, listening(mastodon_source(web))) as runner:
        [worker] = runner.workers
        labels = {"source_id": worker.connector.source_id, "type": "mastodon"}
        await eventually(lambda: instance.open_streams() and worker.status.produced == 3, 10, what="catch-up")
        [stream] = instance.open_streams()
        assert stream.tag == "acme"

        instance.post(status(4), status(5))  # live, through the stream only
        instance.send(stream, b"event: update\ndata: {not json\n\n")  # counted, skipped
        instance.send(stream, b"event: delete\ndata: 1234\n\n")  # not a new status: ignored
        await eventually(lambda: worker.status.produced == 5, 10, what="live statuses")
        assert len(web.hits(TIMELINE)) == 1  # they came by the stream
        assert sample(runner, "ecoute_ingest_source_refused_total", **labels, reason="invalid") == 1

        # The instance goes away: the stream ends and reconnecting fails for a while (backing off)…
        instance.stream_reply = Reply(503, b"restarting")
        instance.drop(stream)
        await eventually(
            lambda: sample(runner, "ecoute_ingest_source_errors_total", **labels, kind="http_status") >= 2,
            10,
            what="failed reconnects",
        )
        # …statuses posted meanwhile reach only the timeline; the new stream replays two of them again.
        instance.post(status(6), status(7), stream=False)
        instance.replay_on_open = [status(6), status(7)]
        instance.stream_reply = None
        await eventually(lambda: len(instance.open_streams()) == 1, 10, what="the stream back")
        await eventually(lambda: worker.status.produced == 7, 10, what="the missed statuses")
        assert web.hits(TIMELINE)[-1].query == {"limit": "40", "min_id": status_id(5)}
        instance.post(status(8))
        await eventually(lambda: worker.status.produced == 8, 10, what="live again")
        assert sample(runner, "ecoute_ingest_source_errors_total", **labels, kind="connect") >= 1  # the drop
    got = await raw_ids(bootstrap, topics.mentions_raw)
    assert len(got) == len(set(got))
    assert sorted(got) == ids(*range(1, 9))


@pytest.mark.kafka
async def test_a_restarted_worker_catches_up_from_its_checkpoint(
    web: WebServer, instance: MastodonInstance, source_settings: IngestSettings, bootstrap: str
) -> None:
    instance.post(status(1), status(2), stream=False)
    topics = Topics(source_settings.topic_prefix)
    config = listening(mastodon_source(web))

    def streaming(worker: SourceWorker) -> bool:
        return bool(instance.open_streams()) and worker.status.produced == 2

    async with source_runner(source_settings, config) as runner:
        await eventually(lambda: streaming(runner.workers[0]), 10, what="the first worker streaming")
        instance.post(status(3))
        await eventually(lambda: runner.workers[0].status.produced == 3, 10, what="a live status")
    instance.post(status(4), status(5), stream=False)  # while no worker runs

    async with source_runner(source_settings, config) as runner:
        await eventually(lambda: runner.workers[0].status.produced == 2, 10, what="the catch-up")
        assert web.hits(TIMELINE)[-1].query["min_id"] == status_id(3)
        await eventually(lambda: any(not s.closed.is_set() for s in instance.streams), 10, what="a stream")
        instance.post(status(6))
        await eventually(lambda: runner.workers[0].status.produced == 3, 10, what="live again")
    got = await raw_ids(bootstrap, topics.mentions_raw)
    assert len(got) == len(set(got))
    assert sorted(got) == ids(*range(1, 7))
    assert await cursor_of(bootstrap, topics.ingest_checkpoints) == {"tags": {"acme": status_id(6)}}


def test_server_sent_events_are_decoded_across_chunks_and_line_endings() -> None:
    decoder = SseDecoder(max_event_bytes=64)
    stream = b':thump\r\nevent: update\r\ndata: {"a":\r\ndata: 1}\r\n\r\nevent: delete\ndata: 9\n\ndata: plain\r\r\n'
    events = [e for i in range(0, len(stream), 7) for e in decoder.feed(stream[i : i + 7])]
    assert [(e.event, e.data) for e in events] == [("update", '{"a":\n1}'), ("delete", "9"), ("message", "plain")]
    with pytest.raises(ResponseTooLarge):
        decoder.feed(b"data: " + b"x" * 100)  # one event may not grow without end
