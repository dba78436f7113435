"""RSS and Atom: parsing and mapping (pure), hostile XML refused fast, and feeds polled into mentions.raw."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import Mention, Topics, load
from services.ingest import IngestSettings
from services.ingest.connectors import ContentRefused, RssConnector, entry_fields, parse_feed
from services.ingest.connectors.base import sha1
from tests.helpers import latest_by_key, read_all
from tests.ingest.connectors import feeds
from tests.ingest.connectors.conftest import eventually, listening, sample, source_runner
from tests.ingest.connectors.web import Reply, Seen, WebServer

FEED_URL = "https://www.blog.example.com/feed"
NOW = datetime(2025, 3, 5, tzinfo=UTC)


def mapped(document: bytes, url: str = FEED_URL) -> list[dict[str, Any]]:
    feed = parse_feed(document, url)
    lang = feed.feed.get("language", "")[:2] or None
    out = []
    for entry in feed.entries:
        candidate = entry_fields(entry, url, lang, NOW)
        assert candidate.fields is not None, candidate.problem
        out.append(Mention.model_validate(candidate.fields).model_dump())
    return out


def test_rss_20_entries_become_mentions() -> None:
    first, second = mapped(feeds.rss(feeds.rss_item(1), feeds.rss_item(2, guid="post-2")))
    assert first["id"] == "rss:" + sha1("https://www.blog.example.com/posts/1")  # no guid: the link
    assert second["id"] == "rss:" + sha1(f"{FEED_URL}#post-2")  # a bare guid is scoped to its feed
    assert first["source"] == "rss"
    assert first["url"] == "https://www.blog.example.com/posts/1"
    assert first["site"] == "blog.example.com"
    assert first["title"] == "Acme & friends, part 1"
    # The fuller content wins over the description; tags, scripts and &nbsp; are gone.
    assert first["text"] == "Full review 1: the Acme X2 is great.\n\nBattery life is long."
    assert first["author"]["name"] == "Jane Doe"
    assert first["published_at"] == datetime(2025, 3, 1, 9, 1, tzinfo=UTC)
    assert first["fetched_at"] == NOW
    assert first["lang"] == "en"


def test_atom_entries_become_mentions() -> None:
    thread, bare = mapped(feeds.ATOM, "https://forum.example.fr/feed.atom")
    assert thread["id"] == "rss:" + sha1("tag:forum.example.fr,2025:thread-123")  # a URN-like guid is global
    assert thread["title"] == "Le SAV d'Acme ne répond pas"
    assert thread["text"] == "Trois semaines sans réponse du service client."
    assert thread["author"]["name"] == "marie"
    assert thread["author"]["url"] == "https://forum.example.fr/u/marie"
    assert thread["published_at"] == datetime(2025, 3, 2, 10, 0, tzinfo=UTC)
    assert thread["lang"] == "fr"
    assert bare["author"] == {"id": None, "handle": None, "name": None, "followers": None, "url": None}
    assert bare["published_at"] == datetime(2025, 3, 2, 11, 45, tzinfo=UTC)  # no <published>: <updated>


def test_old_feeds_with_a_public_doctype_and_latin1_are_read() -> None:
    [entry] = mapped(feeds.RSS_091, "http://old.example.com/rss")
    assert entry["title"] == "Café news"
    assert entry["published_at"] == NOW  # no date in the entry: when it was fetched


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"<rss><channel><item><title>cut short", "malformed"),
        (b"\x00\x01 not xml at all", "malformed"),
        (b"<html><body><p>Not a feed</p></body></html>", "malformed"),
        (b'{"items": []}', "malformed"),
    ],
)
def test_malformed_documents_are_refused(document: bytes, reason: str) -> None:
    with pytest.raises(ContentRefused) as refused:
        parse_feed(document, FEED_URL)
    assert refused.value.reason == reason


def _refused_within_a_second(document: bytes) -> ContentRefused:
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            parse_feed(document, FEED_URL)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=attempt, daemon=True)
    began = time.monotonic()
    worker.start()
    worker.join(1.0)
    assert not worker.is_alive(), "the hostile document was not refused within 1 s"
    assert time.monotonic() - began < 1.0
    [error] = outcome
    assert isinstance(error, ContentRefused), error
    return error


@pytest.mark.parametrize(
    "make",
    [
        lambda _path: feeds.BILLION_LAUGHS,
        lambda _path: feeds.quadratic_blowup(),
        feeds.xxe,
        feeds.xxe_parameter,
        feeds.external_dtd,
    ],
    ids=["billion-laughs", "quadratic-blowup", "xxe", "xxe-parameter-entity", "external-dtd"],
)
def test_hostile_xml_is_refused_fast_and_reads_no_file(tmp_path: Path, make: Callable[[str], bytes]) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-4f1c")
    # A named pipe: anything that opened it for reading would block, and a writer could see it open.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for target in (str(secret), str(pipe)):
        error = _refused_within_a_second(make(target))
        assert error.reason == "unsafe_xml"
        assert "TOP-SECRET" not in str(error)
    with pytest.raises(OSError) as no_reader:
        os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
    assert no_reader.value.errno == errno.ENXIO  # nobody ever opened the pipe


def test_feeds_with_html_entities_are_accepted() -> None:
    [entry] = mapped(feeds.rss(feeds.rss_item(1).replace("Acme &amp; friends", "Caf&eacute; &hellip; Acme")))
    assert entry["title"] == "Café … Acme, part 1"


# ------------------------------------------------------------------------------------------------ polled into Kafka


class VersionedFeed:
    """A feed document that answers conditional GETs like a real server (ETag and Last-Modified)."""

    def __init__(self, *items: str) -> None:
        self.version = 0
        self.items = list(items)
        self.update()

    def update(self, *more: str) -> None:
        self.items.extend(more)
        self.version += 1
        self.etag = f'"v{self.version}"'
        self.modified = f"Sat, 0{self.version} Mar 2025 10:00:00 GMT"
        self.document = feeds.rss(*self.items)

    def __call__(self, seen: Seen) -> Reply:
        if seen.headers.get("if-none-match") == self.etag:
            return Reply(304, headers={"ETag": self.etag})
        headers = {"ETag": self.etag, "Last-Modified": self.modified, "Content-Type": "application/rss+xml"}
        return Reply(200, self.document, headers)


def ids_of(document_items: list[int]) -> list[str]:
    return ["rss:" + sha1(f"https://www.blog.example.com/posts/{n}") for n in document_items]


@pytest.mark.kafka
async def test_feed_entries_land_once_with_conditional_gets_and_survive_a_restart(
    web: WebServer, source_settings: IngestSettings, bootstrap: str
) -> None:
    feed = VersionedFeed(feeds.rss_item(1), feeds.rss_item(2), feeds.rss_item(3))
    web.route("/feed", feed)
    config = listening({"type": "rss", "url": web.url("/feed"), "interval": 0.2})
    topics = Topics(source_settings.topic_prefix)

    async def raw_keys() -> list[str]:
        return [k.decode() for k, _, _ in await read_all(bootstrap, topics.mentions_raw) if k is not None]

    async with source_runner(source_settings, config) as runner:
        [worker] = runner.workers
        await eventually(lambda: len(web.hits("/feed")) >= 3, 10, what="three polls")
        assert sorted(await raw_keys()) == sorted(ids_of([1, 2, 3]))
        conditional = web.hits("/feed")[1].headers
        assert conditional["if-none-match"] == '"v1"'
        assert conditional["if-modified-since"] == feed.modified

        feed.update(feeds.rss_item(4))
        polls = len(web.hits("/feed"))
        await eventually(lambda: len(web.hits("/feed")) >= polls + 3, 10, what="three more polls")
        assert sorted(await raw_keys()) == sorted(ids_of([1, 2, 3, 4]))

        labels = {"source_id": worker.connector.source_id, "type": "rss"}
        assert sample(runner, "ecoute_ingest_source_produced_total", **labels) == 4
        assert sample(runner, "ecoute_ingest_source_fetched_total", **labels) == 7  # 3, then 4; 304s read nothing
        assert sample(runner, "ecoute_ingest_source_last_success_timestamp_seconds", **labels) > time.time() - 10
        assert runner.status()[worker.connector.source_id]["state"] == "ok"

    [cursor] = (await latest_by_key(bootstrap, topics.ingest_checkpoints)).values()
    assert cursor is not None
    saved = orjson.loads(cursor)
    assert saved["etag"] == '"v2"'
    assert set(ids_of([1, 2, 3, 4])) <= set(saved["seen"])

    # A new worker starts from the checkpoint: its first request is conditional, and nothing is re-sent.
    before = len(web.hits("/feed"))
    feed.update(feeds.rss_item(5))
    async with source_runner(source_settings, config):
        await eventually(lambda: len(web.hits("/feed")) >= before + 2, 10, what="polls after restart")
    assert web.hits("/feed")[before].headers["if-none-match"] == '"v2"'
    keys = await raw_keys()
    assert sorted(keys) == sorted(ids_of([1, 2, 3, 4, 5]))
    records = {k.decode(): load(Mention, v) for k, v, _ in await read_all(bootstrap, topics.mentions_raw) if k and v}
    assert records[ids_of([5])[0]].text.startswith("Full review 5")


@pytest.mark.kafka
async def test_bad_feeds_are_refused_counted_and_never_stop_a_good_one(
    web: WebServer, source_settings: IngestSettings, bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-77aa")
    good = feeds.rss(feeds.rss_item(1), "<item><pubDate>Sat, 01 Mar 2025 09:00:00 GMT</pubDate></item>")
    web.route("/good", Reply(body=good))
    web.route("/bomb", Reply(body=feeds.BILLION_LAUGHS))
    web.route("/quadratic", Reply(body=feeds.quadratic_blowup()))
    web.route("/xxe", Reply(body=feeds.xxe(str(secret))))
    web.route("/malformed", Reply(body=b"<rss><channel><item><title>cut"))
    web.route("/huge", Reply(body=feeds.rss(*(feeds.rss_item(n) for n in range(1, 30))) + b" " * (20 * 1024 * 1024)))
    web.route("/down", Reply(500))
    names = ["good", "bomb", "quadratic", "xxe", "malformed", "huge", "down"]
    config = listening(*({"type": "rss", "url": web.url(f"/{n}"), "interval": 0.3} for n in names))
    topic = Topics(source_settings.topic_prefix).mentions_raw

    with caplog.at_level(logging.INFO, logger="services.ingest"):
        async with source_runner(source_settings, config) as runner:
            workers = {w.connector.describe().rsplit("/", 1)[1]: w for w in runner.workers}

            await eventually(lambda: all(w.polls >= 2 for w in runner.workers), 15, what="every source polled twice")
            status = runner.status()

            def refused(name: str, reason: str) -> float:
                labels = {"source_id": workers[name].connector.source_id, "type": "rss", "reason": reason}
                return sample(runner, "ecoute_ingest_source_refused_total", **labels)

            for name, reason in [
                ("bomb", "unsafe_xml"),
                ("quadratic", "unsafe_xml"),
                ("xxe", "unsafe_xml"),
                ("malformed", "malformed"),
                ("huge", "too_large"),
            ]:
                assert refused(name, reason) >= 2, name
                assert status[workers[name].connector.source_id]["state"] == "failing"
                assert status[workers[name].connector.source_id]["consecutive_failures"] >= 2
            down = {"source_id": workers["down"].connector.source_id, "type": "rss", "kind": "http_status"}
            assert sample(runner, "ecoute_ingest_source_errors_total", **down) >= 2
            assert status[workers["good"].connector.source_id]["state"] == "ok"
            assert refused("good", "invalid") == 1  # the entry with nothing to identify it, once
            assert sample(runner, "ecoute_ingest_mentions_refused_total", source="rss", reason="invalid") == 1

    records = await read_all(bootstrap, topic)
    assert [k for k, _, _ in records] == [ids_of([1])[0].encode()]
    assert "TOP-SECRET" not in orjson.dumps(status).decode()
    assert "TOP-SECRET" not in caplog.text
    assert all(b"TOP-SECRET" not in (v or b"") for _, v, _ in records)
    assert "not a valid mention" in caplog.text
    assert "unsafe XML refused" in caplog.text


def test_source_ids_are_stable_and_derived_from_the_url() -> None:
    one = RssConnector.from_config({"type": "rss", "url": "https://blog.example.com/feed"})
    same = RssConnector.from_config({"type": "rss", "url": "https://blog.example.com/feed", "interval": 60})
    named = RssConnector.from_config({"type": "rss", "url": "https://blog.example.com/feed", "id": "blog"})
    assert one.source_id == same.source_id == "rss:" + sha1("https://blog.example.com/feed")
    assert named.source_id == "blog"
    with pytest.raises(ValueError, match="url"):
        RssConnector.from_config({"type": "rss", "url": "not a url"})
