"""Reddit posts and comments matching a query, from Reddit's JSON listings: `{type: reddit, query, subreddits}`.

`GET {base_url}/search.json?q=…&sort=new&type=link|comment&limit=100&after=…` (or `/r/<sub>/search.json` with
`restrict_sr=1` per configured subreddit) returns a Listing, newest first; `after` pages towards older things.
Each (subreddit, kind) feed walks its pages until it reaches what an earlier run saw (`since`, the newest
`created_utc` second, with the fullnames sent at that second). After every page the cursor keeps the run's
`after` token, so a restarted worker resumes the walk where it stopped, neither re-sending nor skipping.

With `oauth: {client_id, client_secret}` the connector gets an application token (client-credentials grant,
`POST {base_url}/api/v1/access_token`) and sends bearer requests to `oauth_base_url`. Reddit's rate-limit
headers (`x-ratelimit-remaining`, `x-ratelimit-reset`) are honoured: when the allowance is spent, the next request
waits for the reset (or the poll ends and the source resumes later).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, field_validator

from schemas import EcouteConfig
from schemas.config import Seconds
from schemas.models import MAX_TEXT_CHARS
from services.ingest.connectors.base import Batch, Candidate, ContentRefused, SourceOptions, derived_id
from services.ingest.connectors.checkpoints import Cursor
from services.ingest.connectors.fetch import FetchedResponse, HTTPStatusError, RateLimited, SafeFetcher
from services.ingest.connectors.streams import GuardedHTTP, json_body
from services.ingest.connectors.text import clean_links, clip

logger = logging.getLogger(__name__)

WEB = "https://www.reddit.com"
_FULLNAME = re.compile(r"^t[13]_[a-z0-9]{1,16}$")
_SUBREDDIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{1,20}$")
# A token is renewed this many seconds before it expires.
TOKEN_MARGIN = 60.0


class RedditOAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    client_id: str = Field(min_length=1, max_length=200)
    client_secret: SecretStr


class RedditOptions(SourceOptions):
    type: str = "reddit"
    query: str = Field(min_length=1, max_length=512)
    # Search inside these subreddits only (one listing each); empty: all of Reddit.
    subreddits: list[str] = Field(default_factory=list, max_length=50)
    base_url: HttpUrl = HttpUrl(WEB)
    oauth_base_url: HttpUrl = HttpUrl("https://oauth.reddit.com")
    oauth: RedditOAuth | None = None
    interval: Seconds = 120.0
    comments: bool = True  # search comments as well as posts
    limit: int = Field(100, ge=1, le=100)
    # Pages of one feed per poll; a longer walk goes on at the next poll from its saved `after`.
    max_pages: int = Field(10, ge=1, le=100)
    # How far back the very first run looks.
    lookback: Seconds = 86400.0
    # Waiting for x-ratelimit-reset longer than this ends the poll instead (the source resumes later).
    max_rate_wait: Seconds = 60.0

    @field_validator("subreddits")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        names = [v.strip().removeprefix("/").removeprefix("r/") for v in value]
        for name in names:
            if not _SUBREDDIT.match(name):
                raise ValueError(f"{name!r} is not a subreddit name")
        return names


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _count(value: Any) -> int:
    number = _number(value)
    return max(0, int(number)) if number is not None else 0


def thing_fields(child: Any, query: str, now: datetime) -> tuple[Candidate, int | None]:
    """One listing child (t3 post or t1 comment) → mention/1 fields, and its created second."""
    if not isinstance(child, dict) or not isinstance(child.get("data"), dict):
        return Candidate("?", None, "listing child is not a {kind, data} object"), None
    kind, data = child.get("kind"), child["data"]
    name = data.get("name") or (f"{kind}_{data.get('id')}" if data.get("id") else None)
    ref = str(name)[:200]
    if kind not in ("t1", "t3"):
        return Candidate(ref, None, f"kind {kind!r} is neither a post (t3) nor a comment (t1)"), None
    if not isinstance(name, str) or not _FULLNAME.match(name) or not name.startswith(kind):
        return Candidate(ref, None, f"bad fullname {name!r}"), None
    created = _number(data.get("created_utc"))
    if created is None:
        return Candidate(ref, None, f"created_utc is not a number: {data.get('created_utc')!r}"), None
    subreddit = data.get("subreddit")
    permalink = data.get("permalink")
    author = data.get("author")
    has_author = isinstance(author, str) and author and author != "[deleted]"
    post = kind == "t3"
    title = data.get("title") if post and isinstance(data.get("title"), str) else None
    body = data.get("selftext") if post else data.get("body")
    text = body if isinstance(body, str) and body.strip() else (title or "")
    link_id = data.get("link_id") if not post else name
    parent = data.get("parent_id") if not post else None
    fields: dict[str, Any] = {
        "id": f"reddit:{name}",
        "source": "reddit",
        "url": f"{WEB}{permalink}" if isinstance(permalink, str) and permalink.startswith("/") else None,
        "site": f"reddit.com/r/{subreddit}" if isinstance(subreddit, str) and subreddit else "reddit.com",
        "published_at": datetime.fromtimestamp(created, UTC),
        "fetched_at": now,
        "author": ({"id": f"reddit:{author}", "handle": author, "url": f"{WEB}/user/{author}"} if has_author else {}),
        "title": clip(title, 4096),
        "text": clip(text, MAX_TEXT_CHARS),
        "thread_id": f"reddit:{link_id}" if isinstance(link_id, str) and link_id else None,
        "parent_id": f"reddit:{parent}" if isinstance(parent, str) and parent else None,
        "engagement": {
            "likes": _count(data.get("score")),
            "comments": _count(data.get("num_comments")) if post else 0,
        },
        "query": query,
        # A link post points to its `url`; a self post's `url` is its own permalink.
        "links": clean_links([data.get("url")]) if post and data.get("is_self") is False else [],
    }
    return Candidate(ref, fields), int(created)


def listing_children(data: Any) -> tuple[list[Any], str | None]:
    """A Listing's children and its `after` token; ContentRefused for any other shape."""
    if not isinstance(data, dict) or data.get("kind") != "Listing" or not isinstance(data.get("data"), dict):
        raise ContentRefused("malformed", "Reddit answer is not a Listing")
    children, after = data["data"].get("children"), data["data"].get("after")
    if not isinstance(children, list) or (after is not None and not isinstance(after, str)):
        raise ContentRefused("malformed", "Reddit Listing without a children list")
    return children, after or None


class RedditConnector:
    type: ClassVar[str] = "reddit"

    def __init__(self, options: RedditOptions) -> None:
        self.options = options
        self.base_url = str(options.base_url).rstrip("/")
        self.oauth_base_url = str(options.oauth_base_url).rstrip("/")
        subs = ",".join(sorted(s.lower() for s in options.subreddits))
        self.source_id = options.id or derived_id("reddit", self.base_url, options.query, subs)
        self.interval = options.interval
        kinds = ["link", "comment"] if options.comments else ["link"]
        targets: list[str | None] = [*options.subreddits] or [None]
        self.feeds = [(sub, kind) for sub in targets for kind in kinds]
        self._token: str | None = None
        self._token_expires = 0.0
        self._not_before = 0.0  # monotonic time before which Reddit said no more requests

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], config: EcouteConfig | None = None) -> RedditConnector:
        return cls(RedditOptions.model_validate(dict(raw)))

    def describe(self) -> str:
        where = ", ".join(f"r/{s}" for s in self.options.subreddits) or "all of Reddit"
        return f"{self.base_url} query={self.options.query!r} in {where}"

    def listing_url(self, subreddit: str | None, kind: str, after: str | None) -> str:
        base = self.oauth_base_url if self.options.oauth else self.base_url
        path = f"/r/{subreddit}/search.json" if subreddit else "/search.json"
        params = {"q": self.options.query, "sort": "new", "t": "all", "type": kind, "limit": str(self.options.limit)}
        if subreddit:
            params["restrict_sr"] = "1"
        params["raw_json"] = "1"  # text as written, not HTML-escaped
        if after:
            params["after"] = after
        return str(httpx.URL(f"{base}{path}", params=params))

    async def poll(self, cursor: Cursor | None, fetcher: SafeFetcher) -> AsyncIterator[Batch]:
        feeds: dict[str, Any] = dict((cursor or {}).get("feeds") or {})
        for subreddit, kind in self.feeds:
            key = f"{subreddit or '*'}:{kind}"
            async for batch in self._walk(key, subreddit, kind, feeds, fetcher):
                yield batch

    async def _walk(
        self, key: str, subreddit: str | None, kind: str, feeds: dict[str, Any], fetcher: SafeFetcher
    ) -> AsyncIterator[Batch]:
        state = feeds.get(key) or {}
        since = int(state.get("since") or time.time() - self.options.lookback)
        since_ids = {str(i) for i in state.get("since_ids") or []}
        run = state.get("run") or {}
        newest: int | None = run.get("newest")
        newest_ids = {str(i) for i in run.get("newest_ids") or []}
        after: str | None = run.get("after")
        sent: set[str] = set()

        def save(done: bool) -> Cursor:
            feeds[key] = {
                "since": since,
                "since_ids": sorted(since_ids),
                "run": None if done else {"newest": newest, "newest_ids": sorted(newest_ids), "after": after},
            }
            return {"feeds": dict(feeds)}

        for _ in range(self.options.max_pages):
            data = json_body(await self._get(self.listing_url(subreddit, kind, after), fetcher))
            children, next_after = listing_children(data)
            now = datetime.now(UTC)
            fresh: list[Candidate] = []
            reached = False
            for child in children:
                candidate, at = thing_fields(child, self.options.query, now)
                if candidate.fields is None or at is None:
                    fresh.append(candidate)
                    continue
                mention_id = candidate.fields["id"]
                if at < since or (at == since and mention_id in since_ids):
                    reached = True  # older than the cursor: an earlier run sent the rest
                    continue
                if mention_id in sent:
                    continue
                sent.add(mention_id)
                fresh.append(candidate)
                if newest is None or at > newest:
                    newest, newest_ids = at, {mention_id}
                elif at == newest:
                    newest_ids.add(mention_id)
            after = next_after
            done = reached or not children or after is None
            if done and newest is not None:
                since_ids = since_ids | newest_ids if newest == since else newest_ids
                since = newest
            if done:
                newest, newest_ids, after = None, set(), None
            yield Batch(fresh, save(done), fetched=len(children))
            if done:
                return
        logger.info(
            "%s: %s has more than %d pages; the walk goes on next poll", self.describe(), key, self.options.max_pages
        )

    async def _get(self, url: str, fetcher: SafeFetcher) -> FetchedResponse:
        for attempt in (1, 2):
            await self._respect_rate_limit()
            headers = {"accept": "application/json"}
            if self.options.oauth:
                headers["authorization"] = f"bearer {await self._bearer(fetcher)}"
            try:
                response = await fetcher.get(url, headers)
            except HTTPStatusError as exc:
                if exc.status == 401 and self.options.oauth and attempt == 1:
                    logger.info("%s: token refused; asking for a new one", self.describe())
                    self._token = None
                    continue
                raise
            self._note_rate_limit(response)
            return response
        raise AssertionError("unreachable")

    async def _respect_rate_limit(self) -> None:
        wait = self._not_before - time.monotonic()
        if wait <= 0:
            return
        if wait > self.options.max_rate_wait:
            raise RateLimited(f"{self.describe()}: Reddit's rate limit resets in {wait:.0f}s", None, wait)
        logger.info("%s: rate limit spent; waiting %.1fs for its reset", self.describe(), wait)
        await asyncio.sleep(wait)

    def _note_rate_limit(self, response: FetchedResponse) -> None:
        try:
            remaining = float(response.headers.get("x-ratelimit-remaining", "inf"))
            reset = float(response.headers.get("x-ratelimit-reset", "0"))
        except ValueError:
            return
        if remaining < 1 and math.isfinite(reset) and reset > 0:
            self._not_before = time.monotonic() + reset

    async def _bearer(self, fetcher: SafeFetcher) -> str:
        oauth = self.options.oauth
        assert oauth is not None
        if self._token is not None and time.monotonic() < self._token_expires - TOKEN_MARGIN:
            return self._token
        async with GuardedHTTP(fetcher) as http:
            response = await http.post_form(
                f"{self.base_url}/api/v1/access_token",
                {"grant_type": "client_credentials"},
                auth=(oauth.client_id, oauth.client_secret.get_secret_value()),
            )
        body = json_body(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ContentRefused("malformed", "Reddit token answer without access_token")
        expires = _number(body.get("expires_in")) or 3600.0
        self._token, self._token_expires = token, time.monotonic() + expires
        logger.info("%s: got an application token valid %.0fs", self.describe(), expires)
        return token
