"""Loopback servers speaking the social APIs' real protocols: Reddit listings (and its OAuth token endpoint),
a Mastodon instance (hashtag timeline + server-sent event stream) and a Jetstream websocket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve

from tests.ingest.connectors.web import Reply, Seen, WebServer

JSON = {"Content-Type": "application/json"}


# ---------------------------------------------------------------------------------------------- POST support


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    form: dict[str, str]


class FormWebServer(WebServer):
    """WebServer that also answers POSTs (`post_route(path, handler(Posted) -> Reply)`); GETs as before."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.posts: list[Posted] = []
        self.post_routes: dict[str, Any] = {}
        base: type[BaseHTTPRequestHandler] = self._httpd.RequestHandlerClass  # type: ignore[assignment]
        owner = self

        class Handler(base):  # type: ignore[valid-type,misc]
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                seen = Posted(
                    urlsplit(self.path).path,
                    {k.lower(): v for k, v in self.headers.items()},
                    {k: v[-1] for k, v in parse_qs(body).items()},
                )
                owner.posts.append(seen)
                handler = owner.post_routes.get(seen.path)
                reply = handler(seen) if handler else Reply(404, b"not found")
                self._answer(reply, -1)

        self._httpd.RequestHandlerClass = Handler


def basic_auth(headers: dict[str, str]) -> tuple[str, str] | None:
    value = headers.get("authorization", "")
    if not value.lower().startswith("basic "):
        return None
    user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    return user, password


# ---------------------------------------------------------------------------------------------- Reddit


def reddit_post(n: int, at: int, subreddit: str = "phones", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "t3",
        "data": {
            "id": f"p{n}",
            "name": f"t3_p{n}",
            "title": f"Acme X{n} review",
            "selftext": f"My Acme X{n} is great & fast",
            "subreddit": subreddit,
            "author": "redditor",
            "author_fullname": "t2_abc",
            "permalink": f"/r/{subreddit}/comments/p{n}/acme_x{n}_review/",
            "url": f"https://www.reddit.com/r/{subreddit}/comments/p{n}/acme_x{n}_review/",
            "created_utc": float(at),
            "score": 42,
            "num_comments": 7,
            **extra,
        },
    }


def reddit_comment(
    n: int, at: int, link: str = "t3_p1", parent: str | None = None, subreddit: str = "phones"
) -> dict[str, Any]:
    return {
        "kind": "t1",
        "data": {
            "id": f"c{n}",
            "name": f"t1_c{n}",
            "body": f"Acme support never answered me ({n})",
            "subreddit": subreddit,
            "author": "grumpy",
            "link_id": link,
            "parent_id": parent or link,
            "permalink": f"/r/{subreddit}/comments/{link[3:]}/x/c{n}/",
            "created_utc": float(at),
            "score": -3,
        },
    }


class RedditSearch:
    """`/search.json` and `/r/<sub>/search.json`: sort=new, type=link|comment, limit, `after` (a fullname)."""

    def __init__(self, things: list[dict[str, Any]]) -> None:
        self.things = list(things)
        self.script: list[Reply] = []  # answers served (in order) before the real listing
        self.hold: Any = lambda _seen: None
        self.headers: dict[str, str] = {}
        self.token: str | None = None  # when set, requests need `authorization: bearer <token>`

    def __call__(self, seen: Seen) -> Reply:
        if self.script:
            return self.script.pop(0)
        if self.token is not None and seen.headers.get("authorization") != f"bearer {self.token}":
            return Reply(401, b'{"message": "Unauthorized", "error": 401}', JSON)
        kind = {"link": "t3", "comment": "t1"}[seen.query.get("type", "link")]
        parts = seen.path.split("/")
        subreddit = parts[parts.index("r") + 1] if "r" in parts else None
        selected = [
            t for t in self.things if t["kind"] == kind and (subreddit is None or t["data"]["subreddit"] == subreddit)
        ]
        selected.sort(key=lambda t: (t["data"]["created_utc"], t["data"]["name"]), reverse=True)
        after = seen.query.get("after")
        if after:
            names = [t["data"]["name"] for t in selected]
            selected = selected[names.index(after) + 1 :] if after in names else []
        limit = int(seen.query.get("limit", "25"))
        page = selected[:limit]
        body = {
            "kind": "Listing",
            "data": {
                "after": page[-1]["data"]["name"] if len(selected) > limit else None,
                "dist": len(page),
                "children": page,
                "before": None,
            },
        }
        return Reply(200, orjson.dumps(body), {**JSON, **self.headers}, hold=self.hold(seen))


# ---------------------------------------------------------------------------------------------- Mastodon


def status(n: int, tag: str = "acme", **extra: Any) -> dict[str, Any]:
    return {
        "id": str(110_000_000_000_000_000 + n),
        "created_at": "2025-03-05T10:00:00.000Z",
        "in_reply_to_id": None,
        "sensitive": False,
        "spoiler_text": "",
        "visibility": "public",
        "language": "en",
        "uri": f"https://mastodon.example/users/jane/statuses/{n}",
        "url": f"https://mastodon.example/@jane/{n}",
        "replies_count": 2,
        "reblogs_count": 3,
        "favourites_count": 5,
        "content": (
            f'<p>Loving my <a href="https://mastodon.example/tags/{tag}">#<span>{tag}</span></a> X{n} &amp; more</p>'
        ),
        "reblog": None,
        "account": {
            "id": "1",
            "username": "jane",
            "acct": "jane",
            "display_name": "Jane",
            "followers_count": 1200,
            "url": "https://mastodon.example/@jane",
        },
        "tags": [{"name": tag, "url": f"https://mastodon.example/tags/{tag}"}],
        **extra,
    }


def status_id(n: int) -> str:
    return str(110_000_000_000_000_000 + n)


@dataclass
class _Stream:
    tag: str
    events: queue.Queue[bytes | None] = field(default_factory=queue.Queue)
    closed: threading.Event = field(default_factory=threading.Event)


class MastodonInstance:
    """Hashtag timelines (`min_id`, `since_id`, `max_id`, `limit`, newest first) and the hashtag SSE stream."""

    def __init__(self, web: WebServer) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.streams: list[_Stream] = []
        self.stream_reply: Reply | None = None  # answer stream requests with this instead (e.g. a 503)
        self.replay_on_open: list[dict[str, Any]] = []  # statuses a new stream sends first (overlapping REST)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        web.route("/api/v1/streaming/hashtag", self.stream)
        for tag in ("acme", "globex"):
            web.route(f"/api/v1/timelines/tag/{tag}", self.timeline)

    def close(self) -> None:
        self._stopping.set()
        for stream in self.streams:
            stream.events.put(None)

    def timeline(self, seen: Seen) -> Reply:
        tag = seen.path.rsplit("/", 1)[1]
        with self._lock:
            selected = [s for s in self.statuses if any(t["name"] == tag for t in s["tags"])]
        selected.sort(key=lambda s: int(s["id"]))
        limit = int(seen.query.get("limit", "20"))
        if "min_id" in seen.query:  # the page just after min_id
            page = [s for s in selected if int(s["id"]) > int(seen.query["min_id"])][:limit]
        else:
            if "since_id" in seen.query:
                selected = [s for s in selected if int(s["id"]) > int(seen.query["since_id"])]
            page = selected[-limit:]
        return Reply(200, orjson.dumps(list(reversed(page))), JSON)

    def post(self, *statuses: dict[str, Any], stream: bool = True) -> None:
        """Publish statuses: in the timelines, and on the open streams of their hashtags."""
        with self._lock:
            self.statuses.extend(statuses)
        if stream:
            for s in statuses:
                for open_stream in self.open_streams():
                    if any(t["name"] == open_stream.tag for t in s["tags"]):
                        self.send(open_stream, b"event: update\ndata: " + orjson.dumps(s) + b"\n\n")

    def open_streams(self) -> list[_Stream]:
        return [s for s in self.streams if not s.closed.is_set()]

    def send(self, stream: _Stream, raw: bytes) -> None:
        stream.events.put(raw)

    def drop(self, stream: _Stream) -> None:
        """The server ends this stream (as on a restart of the instance)."""
        stream.events.put(None)
        stream.closed.set()

    def stream(self, seen: Seen) -> Reply:
        if self.stream_reply is not None:
            return self.stream_reply
        opened = _Stream(seen.query["tag"])
        self.streams.append(opened)

        replay = [b"event: update\ndata: " + orjson.dumps(s) + b"\n\n" for s in self.replay_on_open]

        def chunks() -> Iterator[bytes]:
            yield b":)\n"
            yield from replay
            while not self._stopping.is_set():
                try:
                    item = opened.events.get(timeout=0.5)
                except queue.Empty:
                    yield b":thump\n"
                    continue
                if item is None:
                    break
                yield item
            opened.closed.set()

        return Reply(200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}, chunks=chunks())


# ---------------------------------------------------------------------------------------------- Jetstream


def post_event(
    n: int, time_us: int, text: str = "I love my Acme phone", did: str = "did:plc:alice", **record: Any
) -> dict[str, Any]:
    return {
        "did": did,
        "time_us": time_us,
        "kind": "commit",
        "commit": {
            "rev": f"3l{n:010d}",
            "operation": "create",
            "collection": "app.bsky.feed.post",
            "rkey": f"3k{n:011d}",
            "record": {
                "$type": "app.bsky.feed.post",
                "text": text,
                "createdAt": "2025-03-05T10:00:00.000Z",
                "langs": ["en"],
                **record,
            },
            "cid": f"bafyrei{n:020d}",
        },
    }


def rkey(n: int) -> str:
    return f"3k{n:011d}"


class Jetstream:
    """A websocket server on loopback replaying `events` from the `cursor` a client asks for (time_us ≥ cursor).

    After the replay a connection stays open and gets what `publish` sends, until `drop()` closes it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any] | bytes] = []
        self.connections: list[tuple[str, dict[str, list[str]]]] = []  # path, query of each connection
        self._open: list[tuple[ServerConnection, asyncio.Queue[bytes | None]]] = []
        self.port = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Jetstream]:
        async with serve(self._serve, "127.0.0.1", 0) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self
            for _, pending in self._open:
                pending.put_nowait(None)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"ws://{host}:{self.port}/subscribe"

    async def _serve(self, websocket: ServerConnection) -> None:
        parts = urlsplit(websocket.request.path if websocket.request else "/")
        query = parse_qs(parts.query)
        self.connections.append((parts.path, query))
        cursor = int(query["cursor"][0]) if "cursor" in query else None
        pending: asyncio.Queue[bytes | None] = asyncio.Queue()
        for event in self.events:
            at = event.get("time_us") if isinstance(event, dict) else None
            # Without a cursor Jetstream streams live events only; with one it replays from there.
            if cursor is not None and (not isinstance(at, int) or at >= cursor):
                pending.put_nowait(event if isinstance(event, bytes) else orjson.dumps(event))
        self._open.append((websocket, pending))
        while True:
            item = await pending.get()
            if item is None:
                await websocket.close()
                return
            await websocket.send(item.decode())

    def publish(self, *events: dict[str, Any] | bytes) -> None:
        self.events.extend(events)
        for _, pending in self._open:
            for event in events:
                pending.put_nowait(event if isinstance(event, bytes) else orjson.dumps(event))

    def drop(self) -> None:
        """Close every open connection (after what was already queued for it)."""
        for _, pending in self._open:
            pending.put_nowait(None)
        self._open.clear()
