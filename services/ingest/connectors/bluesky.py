"""Bluesky posts from a Jetstream websocket: `{type: bluesky, url: wss://jetstream…/subscribe}`.

Jetstream sends every commit of the network as JSON (`{"did", "time_us", "kind": "commit", "commit": {"operation":
"create", "collection": "app.bsky.feed.post", "rkey", "record": {...}}}`). Only new posts that contain one of the
brands' terms (taken from the brands' queries in the config, plus the source's own `terms`) become mentions:
the analyzer does the real matching, this only keeps the firehose out of Kafka.

The cursor is Jetstream's `time_us` of the last event read, saved after the mentions before it were acknowledged
(with every batch that produced something, otherwise every `checkpoint_every` seconds). A session reconnects with
the cursor rewound by `rewind` seconds, because Jetstream's order is only roughly by time; the posts sent in that
window are kept in the cursor by (did, rkey) and dropped when they come again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from pydantic import Field, field_validator
from websockets.exceptions import ConnectionClosed

from schemas import EcouteConfig
from schemas.config import Seconds
from schemas.models import MAX_TEXT_CHARS
from services.ingest.connectors.base import Batch, Candidate, SourceOptions, derived_id
from services.ingest.connectors.checkpoints import Cursor
from services.ingest.connectors.fetch import FetchConnectError, FetchError, SafeFetcher
from services.ingest.connectors.streams import check_ws_url, open_websocket
from services.ingest.connectors.text import clean_links, clip

logger = logging.getLogger(__name__)

POST = "app.bsky.feed.post"
SITE = "bsky.app"
_DID = re.compile(r"^did:[a-z]+:[A-Za-z0-9._:%-]{1,2000}$")
_RKEY = re.compile(r"^[A-Za-z0-9._:~-]{1,512}$")
_LANG = re.compile(r"^([a-z]{2})(?:-.*)?$")
_AT_URI = re.compile(r"^at://([^/]+)/app\.bsky\.feed\.post/([^/?#]+)$")
# Query words that are operators, not terms.
_OPERATORS = frozenset({"and", "or", "not", "near"})
_FILTER = re.compile(r"^(lang|source|site|author):\S+$", re.IGNORECASE)
_QUERY_TOKEN = re.compile(r'"([^"]*)"|(\()|(\))|([^\s()"]+)')
# Posts are gathered this long (or up to BATCH_EVENTS events) before one produce.
LINGER = 0.3
BATCH_EVENTS = 5000


class BlueskyOptions(SourceOptions):
    type: str = "bluesky"
    url: str = Field(min_length=6, max_length=2048)
    wanted_collections: list[str] = Field(default_factory=lambda: [POST], min_length=1)
    # Terms to look for besides the brands' query terms.
    terms: list[str] = Field(default_factory=list)
    # Before reconnecting after a session ended normally.
    interval: Seconds = 1.0
    # Reconnect this many seconds before the saved cursor; posts seen in that window are dropped by (did, rkey).
    rewind: Seconds = 5.0
    # How often the cursor is saved while no post matched.
    checkpoint_every: Seconds = 5.0
    # A session ends after this long (and the next one resumes from the cursor).
    session: Seconds = 900.0
    # A session shorter than this that the server ended counts as a failure (so reconnects back off).
    min_session: Seconds = 10.0
    # No message for this long: the connection is taken as dead.
    idle_timeout: Seconds = 60.0

    @field_validator("url")
    @classmethod
    def _websocket(cls, value: str) -> str:
        try:
            check_ws_url(value)
        except FetchError as exc:  # not a ValueError: say it as one, so it is a config error
            raise ValueError(str(exc)) from None
        return value


def query_terms(query: str | list[str]) -> list[str]:
    """The terms a brand query looks for: words and quoted phrases, without operators or what follows NOT.

    `(acme OR "#acme" OR @acme) AND NOT "acme corp layoffs" lang:en` → ["acme", "#acme", "@acme"]."""
    if isinstance(query, list):  # a list means any of its terms, each taken as written
        return list(dict.fromkeys(t.strip() for t in query if t.strip()))
    terms: list[str] = []
    negated_depth: int | None = None  # inside NOT ( … ): parenthesis depth where it started
    depth = 0
    negate_next = False
    for phrase, opening, closing, word in _QUERY_TOKEN.findall(query):
        if opening:
            depth += 1
            if negate_next and negated_depth is None:
                negated_depth = depth
            negate_next = False
            continue
        if closing:
            if negated_depth == depth:
                negated_depth = None
            depth = max(0, depth - 1)
            continue
        if word and word.lower() in _OPERATORS:
            negate_next = word.lower() == "not"
            continue
        if word and _FILTER.match(word):  # lang:fr, site:reddit.com… test the mention, not its text
            negate_next = False
            continue
        term = phrase if phrase or not word else word
        if word.startswith("-"):
            term, negate_next = word[1:], True
        if negate_next or negated_depth is not None:
            negate_next = False
            continue
        term = term.strip()
        if term.strip("*"):
            terms.append(term)
    return list(dict.fromkeys(terms))


def term_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern finding any term as whole words (`#acme`, `@acme` are found by `acme`;
    `acme*` finds words starting with acme)."""
    words: list[str] = []
    for term in terms:
        bare = term.strip().lstrip("#@").strip()
        prefix = bare.endswith("*")  # acme* finds acmeville
        bare = bare.rstrip("*").strip()
        if bare:
            words.append(r"\s+".join(re.escape(w) for w in bare.split()) + (r"\w*" if prefix else ""))
    if not words:
        return None
    words.sort(key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)", re.IGNORECASE)


def brand_terms(config: EcouteConfig | None, extra: Iterable[str] = ()) -> list[str]:
    terms = list(extra)
    if config is not None:
        for name, brand in config.brands.items():
            terms.extend(query_terms(brand.query) or [name])
    return list(dict.fromkeys(terms))


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _post_uri(value: Any) -> str | None:
    match = _AT_URI.match(value) if isinstance(value, str) else None
    return f"bluesky:{match.group(1)}:{match.group(2)}" if match else None


def _post_links(record: Mapping[str, Any]) -> list[str]:
    """The pages a post links to: its link facets (app.bsky.richtext.facet#link) and its external embed."""
    urls: list[Any] = []
    for facet in record.get("facets") or []:
        for feature in _object(facet).get("features") or []:
            feature = _object(feature)
            if feature.get("$type") == "app.bsky.richtext.facet#link":
                urls.append(feature.get("uri"))
    embed = _object(record.get("embed"))
    urls.append(_object(embed.get("external")).get("uri"))
    urls.append(_object(_object(embed.get("media")).get("external")).get("uri"))  # recordWithMedia
    return clean_links(urls)


def _strong_ref(value: Mapping[str, Any]) -> bool:
    uri, cid = value.get("uri"), value.get("cid")
    return _post_uri(uri) is not None and isinstance(cid, str) and 0 < len(cid) <= 2048


def _searchable(record: Mapping[str, Any]) -> str:
    """The post's text and what it embeds that a reader sees (a link card's title and description)."""
    parts = [record.get("text")]
    embed = record.get("embed")
    if isinstance(embed, dict):
        external = embed.get("external")
        if isinstance(external, dict):
            parts += [external.get("title"), external.get("description")]
    return "\n".join(p for p in parts if isinstance(p, str))


def event_fields(event: Mapping[str, Any], record: Mapping[str, Any], matched: str, now: datetime) -> Candidate:
    """A post creation from Jetstream → mention/1 fields (`event` and `record` are checked objects)."""
    did, commit = event["did"], event["commit"]
    rkey = commit["rkey"]
    ref = f"{did}/{rkey}"[:200]
    text = record.get("text")
    if not isinstance(text, str):
        return Candidate(ref, None, "post record without text")
    created = record.get("createdAt")
    langs = record.get("langs")
    lang = langs[0] if isinstance(langs, list) and langs and isinstance(langs[0], str) else None
    match = _LANG.match(lang.lower()) if lang else None
    reply = _object(record.get("reply"))
    root, parent = _object(reply.get("root")), _object(reply.get("parent"))
    mention_id = f"bluesky:{did}:{rkey}"
    # A reply to this post names the thread's root and this post by uri and cid (AT Protocol's strong refs).
    uri, cid = f"at://{did}/{POST}/{rkey}", commit.get("cid")
    reply_ref = None
    if isinstance(cid, str) and 0 < len(cid) <= 2048:
        own = {"uri": uri, "cid": cid}
        root_ref = root if _strong_ref(root) else own
        reply_ref = {"root": {"uri": root_ref["uri"], "cid": root_ref["cid"]}, "parent": own}
    fields: dict[str, Any] = {
        "id": mention_id,
        "source": "bluesky",
        "url": f"https://bsky.app/profile/{did}/post/{rkey}",
        "site": SITE,
        "published_at": created if isinstance(created, str) else datetime.fromtimestamp(event["time_us"] / 1e6, UTC),
        "fetched_at": now,
        "author": {"id": f"bluesky:{did}", "url": f"https://bsky.app/profile/{did}"},
        "text": clip(text, MAX_TEXT_CHARS),
        "lang": match.group(1) if match else None,
        "thread_id": _post_uri(root.get("uri")) or mention_id,
        "parent_id": _post_uri(parent.get("uri")),
        "query": matched,
        "reply_ref": reply_ref,
        "links": _post_links(record),
    }
    return Candidate(ref, fields)


class BlueskyConnector:
    type: ClassVar[str] = "bluesky"

    def __init__(self, options: BlueskyOptions, terms: list[str]) -> None:
        self.options = options
        self.terms = terms
        self.pattern = term_pattern(terms)
        self.source_id = options.id or derived_id("bluesky", options.url, ",".join(sorted(options.wanted_collections)))
        self.interval = options.interval
        self.rewind_us = int(options.rewind * 1_000_000)
        self.skipped: dict[str, int] = {}  # why events were passed over, for logs and tests

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], config: EcouteConfig | None = None) -> BlueskyConnector:
        options = BlueskyOptions.model_validate(dict(raw))
        terms = brand_terms(config, options.terms)
        if not terms:
            logger.warning("bluesky source %s: no brand or term to look for; every post will be skipped", options.url)
        return cls(options, terms)

    def describe(self) -> str:
        return f"{self.options.url} ({len(self.terms)} terms)"

    def subscribe_url(self, cursor_us: int | None) -> str:
        parts = urlsplit(self.options.url)
        params = [("wantedCollections", c) for c in self.options.wanted_collections]
        if cursor_us is not None:
            params.append(("cursor", str(cursor_us)))
        query = "&".join(p for p in (parts.query, urlencode(params)) if p)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    async def poll(self, cursor: Cursor | None, fetcher: SafeFetcher) -> AsyncIterator[Batch]:
        time_us: int | None = (cursor or {}).get("time_us")
        # (did/rkey → time_us) of the posts sent in the last `rewind` seconds before the cursor.
        recent: dict[str, int] = {str(k): int(v) for k, v in ((cursor or {}).get("recent") or {}).items()}
        start = None if time_us is None else max(0, time_us - self.rewind_us)
        began = time.monotonic()
        last_save = began
        url = self.subscribe_url(start)
        async with open_websocket(fetcher, url) as websocket:
            logger.info("%s: connected (cursor %s)", self.describe(), start)
            pending: list[Candidate] = []
            read = 0
            ended: str | None = None
            while ended is None:
                left = self.options.session - (time.monotonic() - began)
                if left <= 0:
                    ended = "session over"
                    break
                linger_until = 0.0
                while read < BATCH_EVENTS:
                    wait = min(left, self.options.idle_timeout) if read == 0 else linger_until - time.monotonic()
                    if wait <= 0:
                        break
                    try:
                        async with asyncio.timeout(wait):
                            message = await websocket.recv()
                    except TimeoutError:
                        if read == 0 and wait >= self.options.idle_timeout:
                            raise FetchConnectError(
                                f"{self.describe()}: no message for {self.options.idle_timeout:.0f}s"
                            ) from None
                        break
                    except ConnectionClosed as exc:
                        ended = f"closed by the server ({exc})"
                        break
                    read += 1
                    if read == 1:
                        linger_until = time.monotonic() + LINGER
                    at = self._take(message, recent, pending)
                    if at is not None and (time_us is None or at > time_us):
                        time_us = at
                if read == 0 and ended is None:
                    continue
                if time_us is not None:
                    floor = time_us - self.rewind_us
                    recent = {k: v for k, v in recent.items() if v > floor}
                now = time.monotonic()
                save = bool(pending) or (now - last_save >= self.options.checkpoint_every) or ended is not None
                if save:
                    last_save = now
                cursor_now: Cursor = {"time_us": time_us, "recent": dict(recent)}
                yield Batch(pending, cursor_now, fetched=read, save=save and time_us is not None)
                pending, read = [], 0
        lasted = time.monotonic() - began
        if ended != "session over" and lasted < self.options.min_session:
            raise FetchConnectError(f"{self.describe()}: {ended} after {lasted:.1f}s")
        logger.info("%s: %s after %.0fs; reconnecting", self.describe(), ended, lasted)

    def _take(self, message: str | bytes, recent: dict[str, int], pending: list[Candidate]) -> int | None:
        """Parse one Jetstream message; a new matching post goes to `pending`. Returns its time_us, if any."""
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            pending.append(Candidate("jetstream message", None, f"not JSON: {exc}"))
            return None
        if not isinstance(event, dict):
            pending.append(Candidate("jetstream message", None, "not a JSON object"))
            return None
        at = event.get("time_us")
        if not isinstance(at, int) or isinstance(at, bool) or at <= 0:
            pending.append(Candidate(str(event.get("did"))[:200], None, f"time_us is not a positive integer: {at!r}"))
            return None
        commit = event.get("commit")
        if event.get("kind") != "commit" or not isinstance(commit, dict):
            self._skip("not a commit")
            return at
        if commit.get("operation") != "create" or commit.get("collection") != POST:
            self._skip("not a new post")
            return at
        did, rkey, record = event.get("did"), commit.get("rkey"), commit.get("record")
        if not isinstance(did, str) or not _DID.match(did) or not isinstance(rkey, str) or not _RKEY.match(rkey):
            pending.append(Candidate(f"{did}/{rkey}"[:200], None, "commit without a valid did and rkey"))
            return at
        if not isinstance(record, dict):
            pending.append(Candidate(f"{did}/{rkey}"[:200], None, "post commit without a record"))
            return at
        found = self.pattern.search(_searchable(record)) if self.pattern else None
        if found is None:
            self._skip("no term")
            return at
        key = f"{did}/{rkey}"
        if key in recent:
            self._skip("already sent")
            return at
        recent[key] = at
        pending.append(event_fields(event, record, found.group(0), datetime.now(UTC)))
        return at
