"""`ecoute run` with one source of each type (rss, hackernews, reddit, mastodon, bluesky, accounts), each pointed
at a loopback server speaking its API: the mentions they carry fill the API's counts, every source reports ok."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from ecoute.brokers import free_port
from tests.e2e.conftest import API_HEADERS, API_KEY
from tests.helpers import ServiceProcess, wait_until
from tests.ingest.connectors.social import JSON, Jetstream, MastodonInstance, RedditSearch, post_event, status
from tests.ingest.connectors.web import Reply, Seen, WebServer

pytestmark = [pytest.mark.slow]
BRANDS = ["acme", "globex"]
_FILTER = re.compile(r"^created_at_i(>=|<=|>|<|=)(\d+)$")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# ------------------------------------------------------------------------------------------------ RSS


def rss_feed(entries: list[tuple[str, str, float]]) -> bytes:
    """An RSS 2.0 document; entries are (guid, text, published)."""
    items = "".join(
        f"""
    <item>
      <title>{text}</title>
      <link>https://blog.example.com/posts/{guid}</link>
      <guid isPermaLink="false">{guid}</guid>
      <pubDate>{format_datetime(datetime.fromtimestamp(at, UTC), usegmt=True)}</pubDate>
      <description><![CDATA[<p>{text}</p>]]></description>
    </item>"""
        for guid, text, at in entries
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel>
  <title>Example Tech Blog</title><link>https://blog.example.com/</link>
  <description>Reviews and news</description><language>en-us</language>{items}
</channel></rss>
""".encode()


# ------------------------------------------------------------------------------------------------ Hacker News


def hn_hit(object_id: int, at: int, text: str, *, comment: bool = False) -> dict[str, Any]:
    return {
        "created_at": iso(at),
        "title": None if comment else text,
        "url": None if comment else f"https://news.example/{object_id}",
        "author": "pg",
        "points": None if comment else 10,
        "story_text": None,
        "comment_text": text if comment else None,
        "num_comments": None if comment else 3,
        "story_id": 39000001 if comment else None,
        "parent_id": 39000001 if comment else None,
        "created_at_i": at,
        "_tags": ["comment" if comment else "story", "author_pg"],
        "objectID": str(object_id),
    }


def algolia(hits: list[dict[str, Any]]) -> Any:
    """search_by_date: `created_at_i` numericFilters, newest first, one page."""
    compare = {
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
        "=": lambda a, b: a == b,
    }

    def answer(seen: Seen) -> Reply:
        selected = list(hits)
        for condition in filter(None, seen.query.get("numericFilters", "").split(",")):
            match = _FILTER.match(condition)
            assert match, condition
            op, value = match.group(1), int(match.group(2))
            selected = [h for h in selected if compare[op](h["created_at_i"], value)]
        selected.sort(key=lambda h: (h["created_at_i"], int(h["objectID"])), reverse=True)
        body = {"hits": selected, "nbHits": len(selected), "page": 0, "nbPages": 1, "hitsPerPage": 100}
        return Reply(200, orjson.dumps(body), JSON)

    return answer


# ------------------------------------------------------------------------------------------------ Reddit


def reddit_thing(kind: str, n: int, at: int, text: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": f"x{n}",
        "name": f"{kind}_x{n}",
        "subreddit": "phones",
        "author": "redditor",
        "permalink": f"/r/phones/comments/x{n}/thread/",
        "created_utc": float(at),
        "score": 4,
    }
    if kind == "t3":
        data.update(title=text, selftext=text, num_comments=2)
    else:
        data.update(body=text, link_id="t3_x1", parent_id="t3_x1")
    return {"kind": kind, "data": data}


# ------------------------------------------------------------------------------------------------ Jetstream


@contextmanager
def jetstream_thread(jet: Jetstream) -> Iterator[asyncio.AbstractEventLoop]:
    """The Jetstream fixture (an asyncio websocket server) on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        async with jet.running():
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="jetstream", daemon=True)
    thread.start()
    assert ready.wait(10), "the Jetstream server did not start"
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


# ------------------------------------------------------------------------------------------------ the test


def expected_counts(texts_by_source: dict[str, list[str]]) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Mentions per brand and per brand and source type, from which brand names each served text carries."""
    totals = dict.fromkeys(BRANDS, 0)
    sources: dict[str, dict[str, int]] = {b: {} for b in BRANDS}
    for source, texts in texts_by_source.items():
        for text in texts:
            for brand in BRANDS:
                if re.search(rf"(?<!\w){brand}(?!\w)", text, re.IGNORECASE):
                    totals[brand] += 1
                    sources[brand][source] = sources[brand].get(source, 0) + 1
    return totals, sources


def test_one_source_of_each_type_fills_the_api(tmp_path: Path, clean_env: None) -> None:
    now = int(time.time())
    web = WebServer().start()
    mastodon = MastodonInstance(web)  # hashtag timelines (REST) of #acme and #globex
    jet = Jetstream()
    try:
        # RSS: 3 entries.
        rss_texts = ["Acme ships the X3 phone", "Hands-on with the acme X3 camera", "Globex opens a new store"]
        web.route(
            "/feed.xml",
            Reply(
                200,
                rss_feed([(f"post-{i}", t, now - 600 - i * 60) for i, t in enumerate(rss_texts)]),
                {"Content-Type": "application/rss+xml"},
            ),
        )
        # Hacker News: 2 stories and a comment (one of them names both brands).
        hn_hits = [
            hn_hit(41000001, now - 900, "Acme launches its X3"),
            hn_hit(41000002, now - 800, "Globex support is slow and unhelpful", comment=True),
            hn_hit(41000003, now - 700, "Acme vs Globex: which phone to buy"),
        ]
        web.route("/api/v1/search_by_date", algolia(hn_hits))
        hn_texts = [h["title"] or h["comment_text"] for h in hn_hits]
        # Reddit: 2 posts and a comment.
        reddit_things = [
            reddit_thing("t3", 1, now - 1200, "My Acme X3 is great"),
            reddit_thing("t3", 2, now - 1100, "Globex prices went up again"),
            reddit_thing("t1", 3, now - 1000, "Acme customer service answered in minutes"),
        ]
        web.route("/search.json", RedditSearch(reddit_things))
        reddit_texts = [str(t["data"].get("selftext") or t["data"].get("body")) for t in reddit_things]
        # Mastodon: 3 statuses.
        toots = [
            status(1, "acme", created_at=iso(now - 500)),
            status(2, "acme", created_at=iso(now - 400)),
            status(3, "globex", created_at=iso(now - 300)),
        ]
        mastodon.post(*toots, stream=False)
        mastodon_texts = [f"#{s['tags'][0]['name']}" for s in toots]
        # Bluesky (Jetstream): 3 posts naming a brand, one that names none (filtered out before producing).
        bluesky_texts = ["I love my Acme phone", "Globex delivery was late again", "acme X3 or nothing", "Nice weather"]
        base_us = now * 1_000_000
        posts = [
            post_event(i, base_us + i * 1000, text=t, createdAt=iso(now - 200 + i))
            for i, t in enumerate(bluesky_texts, start=1)
        ]
        # Accounts: the brand's own audience on Mastodon, Bluesky and its subreddit.
        web.route(
            "/api/v1/accounts/lookup",
            lambda seen: (
                Reply(200, orjson.dumps({"id": "1", "acct": "acme", "followers_count": 1234}), JSON)
                if seen.query.get("acct") == "acme"
                else Reply(404, b'{"error": "Record not found"}', JSON)
            ),
        )
        web.route(
            "/xrpc/app.bsky.actor.getProfile",
            Reply(
                200, orjson.dumps({"did": "did:plc:acme", "handle": "acme.bsky.social", "followersCount": 567}), JSON
            ),
        )
        web.route(
            "/r/acme/about.json",
            Reply(200, orjson.dumps({"kind": "t5", "data": {"display_name": "acme", "subscribers": 89}}), JSON),
        )
        totals, by_source = expected_counts(
            {
                "rss": rss_texts,
                "hackernews": hn_texts,
                "reddit": reddit_texts,
                "mastodon": mastodon_texts,
                "bluesky": bluesky_texts,
            }
        )
        assert totals == {"acme": 10, "globex": 6}  # what the servers above carry

        with jetstream_thread(jet) as jet_loop:
            base = web.url("/").rstrip("/")
            sources: list[dict[str, Any]] = [
                {"type": "rss", "url": f"{base}/feed.xml", "interval": 1},
                {"type": "hackernews", "query": "acme", "base_url": base, "interval": 1},
                {"type": "reddit", "query": "acme OR globex", "base_url": base, "interval": 1},
                {
                    "type": "mastodon",
                    "instance": base,
                    "hashtags": ["acme", "globex"],
                    "streaming": False,
                    "interval": 1,
                },
                {"type": "bluesky", "url": jet.url(), "rewind": 5, "session": 2, "interval": 0.5},
                {
                    "type": "accounts",
                    "brand": "acme",
                    "interval": 2,
                    "mastodon": {"instance": base, "account": "acme"},
                    "bluesky": {"handle": "acme.bsky.social", "base_url": base},
                    "reddit": {"subreddit": "acme", "base_url": base},
                },
            ]
            config = {
                "api_keys": [{"key": API_KEY, "role": "admin", "brands": ["*"]}],
                "brands": {
                    "acme": {"query": ["acme", "#acme"], "competitors": ["globex"]},
                    "globex": {"query": ["globex", "#globex"], "competitors": ["acme"]},
                },
                "sources": sources,
                "fetch": {"allow_networks": ["127.0.0.0/8"]},
            }
            config_path = tmp_path / "ecoute.yaml"
            config_path.write_bytes(orjson.dumps(config))  # JSON is YAML
            ingest_port, api_port, metrics_port = free_port(), free_port(), free_port()
            pg_dir = Path(tempfile.mkdtemp(prefix="ecoute-sources-pg-"))
            env = {k: v for k, v in os.environ.items() if not k.startswith("ECOUTE_")}
            env |= {
                "ECOUTE_CONFIG": str(config_path),
                "ECOUTE_INGEST_PORT": str(ingest_port),
                "ECOUTE_API_PORT": str(api_port),
                "ECOUTE_ANALYZER_METRICS_PORT": str(metrics_port),
                "ECOUTE_ANALYZER_DATA_DIR": str(tmp_path / "analyzer"),
                # A history of the test's own (not the machine's ~/.local or /var/lib one, whose mentions the API
                # would load), outside pytest's private tmp_path, which the postgres user may not enter.
                "ECOUTE_POSTGRES_DATA_DIR": str(pg_dir / "data"),
                "ECOUTE_STORE_METRICS_PORT": str(free_port()),
                "ECOUTE_LOG_LEVEL": "INFO",
            }
            ingest_url, api_url = f"http://127.0.0.1:{ingest_port}", f"http://127.0.0.1:{api_port}"
            run = ServiceProcess(["run"], env, tmp_path / "run.log")
            run.env = env  # no ECOUTE_KAFKA_BOOTSTRAP_SERVERS: the embedded broker is started
            run.start()
            try:
                run.wait_http(f"{api_url}/readyz", timeout=60)
                run.wait_http(f"{ingest_url}/healthz", timeout=20)
                # Jetstream sends live events to a subscriber without a cursor: publish once it is connected.
                wait_until(lambda: jet.connections, timeout=20, what="a Jetstream subscriber")
                jet_loop.call_soon_threadsafe(jet.publish, *posts)

                def kpis() -> dict[str, tuple[int, dict[str, int]]]:
                    out = {}
                    for brand in BRANDS:
                        response = httpx.get(
                            f"{api_url}/v1/brands/{brand}/kpis",
                            params={"window": "24h"},
                            headers=API_HEADERS,
                            timeout=5,
                        )
                        response.raise_for_status()
                        body = response.json()
                        out[brand] = (body["mentions"], body["sources"])
                    return out

                expected = {brand: (totals[brand], by_source[brand]) for brand in BRANDS}
                wait_until(lambda: kpis() == expected, timeout=40, what=f"API counts {expected}")

                def source_states() -> dict[str, str]:
                    body = httpx.get(f"{ingest_url}/healthz", timeout=5).json()
                    return {s["type"]: s["state"] for s in body.get("sources", {}).values()}

                every_type = {s["type"]: "ok" for s in sources}
                wait_until(lambda: source_states() == every_type, timeout=20, what=f"every source ok {every_type}")

                def love() -> dict[tuple[str, str], float]:
                    response = httpx.get(f"{api_url}/v1/brands/acme/love", headers=API_HEADERS, timeout=5)
                    response.raise_for_status()
                    return {(a["platform"], a["metric"]): a["value"] for a in response.json()["accounts"]}

                readings = {
                    ("mastodon", "followers"): 1234,
                    ("bluesky", "followers"): 567,
                    ("reddit", "subscribers"): 89,
                }
                wait_until(lambda: love() == readings, timeout=20, what=f"love readings {readings}")
                # Polling went on meanwhile (short intervals, checkpoints): still exactly the served mentions.
                assert kpis() == expected
            finally:
                code = run.stop(signal.SIGINT, timeout=60)
                shutil.rmtree(pg_dir, ignore_errors=True)
        log = run.log_path.read_text()
        assert code == 0, log[-3000:]
    finally:
        mastodon.close()
        web.stop()
