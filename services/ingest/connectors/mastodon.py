"""Mastodon public hashtag timelines: `{type: mastodon, instance, hashtags: [acme], streaming: true}`.

Catch-up is REST: `GET {instance}/api/v1/timelines/tag/<tag>?limit=40&min_id=<newest sent>` pages forward (each
page is the statuses just after `min_id`) until nothing is newer; the cursor keeps the newest status id per
hashtag (ids are numeric strings that sort as numbers). The first run takes the latest page only.

With `streaming: true` a poll is one session: the hashtag streams (`GET /api/v1/streaming/hashtag?tag=<tag>`,
server-sent events, `event: update` + a status in `data:`) are opened first, then the REST catch-up runs, then
live statuses follow; statuses already sent in the session (the catch-up and the stream overlap) are dropped.
A stream that ends ends the session; the next one catches up through REST from the checkpoint, so nothing
between the two is lost. A session that breaks quickly counts as a failure, so reconnects back off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import orjson
from pydantic import Field, HttpUrl, SecretStr, field_validator

from schemas import EcouteConfig
from schemas.config import Seconds
from schemas.models import MAX_TEXT_CHARS
from services.ingest.connectors.base import Batch, Candidate, ContentRefused, SourceOptions, derived_id
from services.ingest.connectors.checkpoints import Cursor
from services.ingest.connectors.fetch import FetchConnectError, FetchError, SafeFetcher
from services.ingest.connectors.streams import GuardedHTTP, ServerSentEvent, json_body
from services.ingest.connectors.text import clean_links, clip, links_in_html, strip_html

logger = logging.getLogger(__name__)

_TAG = re.compile(r"^\w{1,100}$")
_STATUS_ID = re.compile(r"^[0-9]{1,30}$")
_LANG = re.compile(r"^([a-z]{2})(?:[-_].*)?$")
# Live statuses are gathered this long (or up to STREAM_BATCH of them) before one produce.
STREAM_LINGER = 0.2
STREAM_BATCH = 200
# Ids sent in one session, kept to drop the overlap of catch-up and stream.
SENT_WINDOW = 50_000


class MastodonOptions(SourceOptions):
    type: str = "mastodon"
    instance: HttpUrl
    hashtags: list[str] = Field(min_length=1, max_length=20)
    streaming: bool = True
    # Some instances require a token for public timelines and streams.
    access_token: SecretStr | None = None
    # Between REST polls (streaming: false), or before reconnecting after a session ended normally.
    interval: Seconds = 60.0
    limit: int = Field(40, ge=1, le=40)
    # Catch-up pages per hashtag and poll; more comes next poll.
    max_pages: int = Field(20, ge=1, le=500)
    # A streaming session ends after this long and the next one catches up first.
    session: Seconds = 900.0
    # A session shorter than this that the server ended counts as a failure (so reconnects back off).
    min_session: Seconds = 10.0
    # No byte (Mastodon sends a heartbeat every 15 s) for this long: the stream is taken as dead.
    idle_timeout: Seconds = 60.0

    @field_validator("hashtags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        tags = [v.strip().removeprefix("#").lower() for v in value]
        for tag in tags:
            if not _TAG.match(tag):
                raise ValueError(f"{tag!r} is not a hashtag")
        return list(dict.fromkeys(tags))


def status_key(status_id: str) -> int:
    return int(status_id)


def _status_links(status: dict[str, Any]) -> list[str]:
    """The pages a status links to: its content's anchors (not @mentions or #hashtags) and its preview card."""
    content = status.get("content") if isinstance(status.get("content"), str) else ""
    card = status.get("card")
    return clean_links([*links_in_html(content), card.get("url") if isinstance(card, dict) else None])


def status_fields(status: Any, host: str, query: str, now: datetime) -> Candidate:
    """One Mastodon status (REST or stream) → mention/1 fields."""
    if not isinstance(status, dict):
        return Candidate("?", None, "status is not an object")
    if isinstance(status.get("reblog"), dict):  # a boost: the boosted status is the conversation
        status = status["reblog"]
    status_id = status.get("id")
    ref = str(status_id)[:200]
    if not isinstance(status_id, str) or not _STATUS_ID.match(status_id):
        return Candidate(ref, None, f"status id {status_id!r} is not a numeric string")
    account = status.get("account") if isinstance(status.get("account"), dict) else {}
    acct = account.get("acct")
    handle = (acct if "@" in acct else f"{acct}@{host}") if isinstance(acct, str) and acct else None
    followers = account.get("followers_count")
    spoiler = strip_html(status.get("spoiler_text") if isinstance(status.get("spoiler_text"), str) else "")
    content = strip_html(status.get("content") if isinstance(status.get("content"), str) else "")
    text = f"{spoiler}\n\n{content}" if spoiler and content else spoiler or content
    lang = status.get("language")
    match = _LANG.match(lang.lower()) if isinstance(lang, str) else None
    url = status.get("url") or status.get("uri")
    parent = status.get("in_reply_to_id")
    fields: dict[str, Any] = {
        "id": f"mastodon:{host}:{status_id}",
        "source": "mastodon",
        "url": url if isinstance(url, str) and url.startswith(("http://", "https://")) else None,
        "site": host,
        "published_at": status.get("created_at"),
        "fetched_at": now,
        "author": (
            {
                "id": f"mastodon:{handle}",
                "handle": handle,
                "name": account.get("display_name") or None,
                "followers": followers if isinstance(followers, int) and followers >= 0 else None,
                "url": account.get("url"),
            }
            if handle
            else {}
        ),
        "text": clip(text, MAX_TEXT_CHARS),
        "lang": match.group(1) if match else None,
        "parent_id": f"mastodon:{host}:{parent}" if isinstance(parent, str) and parent else None,
        "engagement": {
            "likes": status.get("favourites_count") or 0,
            "shares": status.get("reblogs_count") or 0,
            "comments": status.get("replies_count") or 0,
        },
        "query": query,
        "links": _status_links(status),
    }
    return Candidate(ref, fields)


class MastodonConnector:
    type: ClassVar[str] = "mastodon"

    def __init__(self, options: MastodonOptions) -> None:
        self.options = options
        self.instance = str(options.instance).rstrip("/")
        self.host = httpx.URL(self.instance).host.lower()
        self.source_id = options.id or derived_id("mastodon", self.instance, ",".join(sorted(options.hashtags)))
        self.interval = options.interval

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], config: EcouteConfig | None = None) -> MastodonConnector:
        return cls(MastodonOptions.model_validate(dict(raw)))

    def describe(self) -> str:
        tags = " ".join(f"#{t}" for t in self.options.hashtags)
        return f"{self.instance} {tags}{' (streaming)' if self.options.streaming else ''}"

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json"}
        if self.options.access_token is not None:
            headers["authorization"] = f"Bearer {self.options.access_token.get_secret_value()}"
        return headers

    def timeline_url(self, tag: str, min_id: str | None) -> str:
        params = {"limit": str(self.options.limit)}
        if min_id is not None:
            params["min_id"] = min_id
        return str(httpx.URL(f"{self.instance}/api/v1/timelines/tag/{quote(tag)}", params=params))

    def stream_url(self, tag: str) -> str:
        return str(httpx.URL(f"{self.instance}/api/v1/streaming/hashtag", params={"tag": tag}))

    async def poll(self, cursor: Cursor | None, fetcher: SafeFetcher) -> AsyncIterator[Batch]:
        newest: dict[str, str] = {str(k): str(v) for k, v in ((cursor or {}).get("tags") or {}).items()}
        sent: dict[str, None] = {}  # insertion-ordered, trimmed to SENT_WINDOW
        if not self.options.streaming:
            for tag in self.options.hashtags:
                async for batch in self._catch_up(tag, newest, sent, fetcher):
                    yield batch
            return
        async for batch in self._session(newest, sent, fetcher):
            yield batch

    def _cursor(self, newest: dict[str, str]) -> Cursor:
        return {"tags": dict(newest)}

    def _take(self, candidate: Candidate, tag: str, newest: dict[str, str], sent: dict[str, None]) -> bool:
        """Whether a valid status is new in this session; moves the hashtag's newest id forward."""
        assert candidate.fields is not None
        mention_id = candidate.fields["id"]
        status_id = mention_id.rsplit(":", 1)[1]
        if tag not in newest or status_key(status_id) > status_key(newest[tag]):
            newest[tag] = status_id
        if mention_id in sent:
            return False
        sent[mention_id] = None
        if len(sent) > SENT_WINDOW:
            del sent[next(iter(sent))]
        return True

    async def _catch_up(
        self, tag: str, newest: dict[str, str], sent: dict[str, None], fetcher: SafeFetcher
    ) -> AsyncIterator[Batch]:
        first_run = tag not in newest
        for _page in range(self.options.max_pages):
            min_id = newest.get(tag)
            response = await fetcher.get(self.timeline_url(tag, min_id), self._headers())
            statuses = json_body(response)
            if not isinstance(statuses, list):
                raise ContentRefused("malformed", f"{response.url}: a timeline answer is not a list of statuses")
            now = datetime.now(UTC)
            fresh: list[Candidate] = []
            for status in statuses:
                candidate = status_fields(status, self.host, f"#{tag}", now)
                if candidate.fields is None:
                    fresh.append(candidate)
                    continue
                status_id = candidate.fields["id"].rsplit(":", 1)[1]
                if min_id is not None and status_key(status_id) <= status_key(min_id):
                    continue  # a server that ignored min_id
                if self._take(candidate, tag, newest, sent):
                    fresh.append(candidate)
            moved = newest.get(tag) != min_id
            yield Batch(fresh, self._cursor(newest), fetched=len(statuses), save=moved or bool(fresh))
            if first_run or not moved or len(statuses) < self.options.limit:
                return
        logger.info("%s: #%s has more than %d pages to catch up; more next poll", self.describe(), tag, _page + 1)

    async def _session(
        self, newest: dict[str, str], sent: dict[str, None], fetcher: SafeFetcher
    ) -> AsyncIterator[Batch]:
        began = time.monotonic()
        queue: asyncio.Queue[tuple[str, ServerSentEvent | BaseException | None]] = asyncio.Queue(maxsize=10_000)
        loop = asyncio.get_running_loop()
        # Each stream settles its future once it answered 200 (None) or failed before that (the error).
        opened: dict[str, asyncio.Future[BaseException | None]] = {
            t: loop.create_future() for t in self.options.hashtags
        }
        async with GuardedHTTP(fetcher) as http:
            readers = [
                asyncio.create_task(self._read_stream(http, tag, queue, opened[tag]), name=f"mastodon-{tag}")
                for tag in self.options.hashtags
            ]
            try:
                # Streams first, so what is posted during the catch-up waits in the queue instead of being missed.
                for tag in self.options.hashtags:
                    error = await opened[tag]
                    if error is not None:
                        raise error
                for tag in self.options.hashtags:
                    async for batch in self._catch_up(tag, newest, sent, fetcher):
                        yield batch
                ended: str | None = None
                failure: BaseException | None = None
                while ended is None:
                    left = self.options.session - (time.monotonic() - began)
                    if left <= 0:
                        logger.info("%s: session of %.0fs over; reconnecting", self.describe(), self.options.session)
                        return
                    items: list[tuple[str, ServerSentEvent]] = []
                    try:
                        async with asyncio.timeout(left):
                            tag, item = await queue.get()
                    except TimeoutError:
                        continue
                    deadline = time.monotonic() + STREAM_LINGER
                    while True:
                        if isinstance(item, ServerSentEvent):
                            items.append((tag, item))
                        else:
                            ended = f"#{tag} stream {'ended' if item is None else f'failed: {item}'}"
                            failure = item
                            break
                        if len(items) >= STREAM_BATCH:
                            break
                        try:
                            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                                tag, item = await queue.get()
                        except TimeoutError:
                            break
                    if items:
                        yield self._live_batch(items, newest, sent)
                lasted = time.monotonic() - began
                if isinstance(failure, FetchError):
                    raise failure
                if failure is not None or lasted < self.options.min_session:
                    raise FetchConnectError(f"{self.describe()}: {ended} after {lasted:.1f}s")
                logger.info("%s: %s after %.0fs; reconnecting", self.describe(), ended, lasted)
            finally:
                for reader in readers:
                    reader.cancel()
                for reader in readers:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader

    async def _read_stream(
        self,
        http: GuardedHTTP,
        tag: str,
        queue: asyncio.Queue[tuple[str, ServerSentEvent | BaseException | None]],
        opened: asyncio.Future[BaseException | None],
    ) -> None:
        headers = self._headers()
        headers.pop("accept")
        try:
            async with http.event_stream(self.stream_url(tag), headers, self.options.idle_timeout) as events:
                opened.set_result(None)
                logger.info("%s: #%s stream open", self.describe(), tag)
                async for event in events:
                    if event.event == "update":
                        await queue.put((tag, event))
            if not opened.done():
                opened.set_result(FetchConnectError(f"{self.describe()}: #{tag} stream closed before it opened"))
            await queue.put((tag, None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not opened.done():
                opened.set_result(exc)
            await queue.put((tag, exc))

    def _live_batch(
        self, items: list[tuple[str, ServerSentEvent]], newest: dict[str, str], sent: dict[str, None]
    ) -> Batch:
        now = datetime.now(UTC)
        fresh: list[Candidate] = []
        for tag, event in items:
            try:
                status = orjson.loads(event.data)
            except orjson.JSONDecodeError as exc:
                fresh.append(Candidate(f"#{tag} event", None, f"update event without a JSON status: {exc}"))
                continue
            candidate = status_fields(status, self.host, f"#{tag}", now)
            if candidate.fields is None or self._take(candidate, tag, newest, sent):
                fresh.append(candidate)
        return Batch(fresh, self._cursor(newest), fetched=len(items))
