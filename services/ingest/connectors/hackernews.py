"""Hacker News stories and comments from the Algolia search API: `{type: hackernews, query, base_url}`.

`GET {base_url}/api/v1/search_by_date?query=…&tags=(story,comment)&numericFilters=created_at_i>=N&page=…`
returns hits newest first. A run walks the pages of one query; after each page it checkpoints the oldest second
it covered (`upper`, with the ids sent at that second), so a restart resumes with `created_at_i<=upper` and
neither re-sends nor skips. When the run is complete the cursor moves to the newest second seen (`since`, with
its ids, as more hits of that same second may still arrive).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from pydantic import Field, HttpUrl

from schemas.config import Seconds
from schemas.models import MAX_TEXT_CHARS
from services.ingest.connectors.base import Batch, Candidate, ContentRefused, SourceOptions, derived_id
from services.ingest.connectors.checkpoints import Cursor
from services.ingest.connectors.fetch import SafeFetcher
from services.ingest.connectors.text import clean_links, clip, links_in_html, strip_html

logger = logging.getLogger(__name__)

SITE = "news.ycombinator.com"
ITEM_URL = "https://news.ycombinator.com/item?id={}"
USER_URL = "https://news.ycombinator.com/user?id={}"
# A run that keeps going past this many query rounds (1000 hits each at most) stops and resumes next cycle.
MAX_ROUNDS = 20


class HackerNewsOptions(SourceOptions):
    type: str = "hackernews"
    query: str = Field(min_length=1, max_length=512)
    base_url: HttpUrl = HttpUrl("https://hn.algolia.com")
    interval: Seconds = 120.0
    tags: list[str] = Field(default_factory=lambda: ["story", "comment"], min_length=1)
    hits_per_page: int = Field(100, ge=1, le=1000)
    # How far back the very first run looks.
    lookback: Seconds = 86400.0


def hit_fields(hit: Mapping[str, Any], query: str, now: datetime) -> Candidate:
    """One Algolia hit (story or comment) → mention/1 fields."""
    object_id = hit.get("objectID")
    created = hit.get("created_at_i")
    ref = str(object_id)[:200]
    if not isinstance(object_id, str | int) or isinstance(object_id, bool) or not str(object_id).strip():
        return Candidate(ref, None, "hit without objectID")
    if not isinstance(created, int) or isinstance(created, bool):
        return Candidate(ref, None, f"created_at_i is not an integer: {created!r}")
    object_id = str(object_id)
    tags = hit.get("_tags") or []
    is_comment = "comment" in tags or (hit.get("comment_text") is not None and hit.get("title") is None)
    title = strip_html(hit.get("title")) or None
    if is_comment:
        text = strip_html(hit.get("comment_text"))
        url = ITEM_URL.format(object_id)
    else:
        text = strip_html(hit.get("story_text")) or title or ""
        story_url = hit.get("url")
        if isinstance(story_url, str) and story_url.startswith(("http://", "https://")):
            url = story_url
        else:
            url = ITEM_URL.format(object_id)
    author = hit.get("author")
    story_id = hit.get("story_id")
    parent_id = hit.get("parent_id")
    fields: dict[str, Any] = {
        "id": f"hackernews:{object_id}",
        "source": "hackernews",
        "url": url,
        "site": SITE,
        "published_at": datetime.fromtimestamp(created, UTC),
        "fetched_at": now,
        "author": (
            {"id": f"hackernews:{author}", "handle": author, "url": USER_URL.format(author)}
            if isinstance(author, str) and author
            else {}
        ),
        "title": None if is_comment else title,
        "text": clip(text, MAX_TEXT_CHARS),
        "thread_id": f"hackernews:{story_id}" if story_id is not None else f"hackernews:{object_id}",
        "parent_id": f"hackernews:{parent_id}" if parent_id is not None else None,
        "engagement": {"likes": hit.get("points") or 0, "comments": hit.get("num_comments") or 0},
        "query": query,
        # A story links to its URL; a comment's links are the anchors of its HTML.
        "links": links_in_html(hit.get("comment_text")) if is_comment else clean_links([hit.get("url")]),
    }
    return Candidate(ref, fields)


def _page_shape(data: Any) -> tuple[list[Any], int, int]:
    if not isinstance(data, dict) or not isinstance(data.get("hits"), list):
        raise ContentRefused("malformed", "Algolia answer without a `hits` list")
    pages, total = data.get("nbPages", 1), data.get("nbHits", len(data["hits"]))
    if not isinstance(pages, int) or not isinstance(total, int):
        raise ContentRefused("malformed", f"Algolia answer with nbPages={pages!r}, nbHits={total!r}")
    return data["hits"], pages, total


class HackerNewsConnector:
    type: ClassVar[str] = "hackernews"

    def __init__(self, options: HackerNewsOptions) -> None:
        self.options = options
        self.base_url = str(options.base_url).rstrip("/")
        self.tags = "(" + ",".join(options.tags) + ")"
        self.source_id = options.id or derived_id("hackernews", self.base_url, options.query, self.tags)
        self.interval = options.interval

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> HackerNewsConnector:
        return cls(HackerNewsOptions.model_validate(dict(raw)))

    def describe(self) -> str:
        return f"{self.base_url} query={self.options.query!r}"

    def search_url(self, filters: list[str], page: int) -> str:
        params = {
            "query": self.options.query,
            "tags": self.tags,
            "numericFilters": ",".join(filters),
            "hitsPerPage": str(self.options.hits_per_page),
            "page": str(page),
        }
        return str(httpx.URL(f"{self.base_url}/api/v1/search_by_date", params=params))

    async def poll(self, cursor: Cursor | None, fetcher: SafeFetcher) -> AsyncIterator[Batch]:
        cursor = cursor or {}
        since = int(cursor.get("since") or time.time() - self.options.lookback)
        since_ids = {str(i) for i in cursor.get("since_ids") or []}
        run = cursor.get("run") or {}
        newest: int | None = run.get("newest")
        newest_ids = {str(i) for i in run.get("newest_ids") or []}
        upper: int | None = run.get("upper")
        upper_ids = {str(i) for i in run.get("upper_ids") or []}

        def state() -> Cursor:
            return {
                "since": since,
                "since_ids": sorted(since_ids),
                "run": {
                    "newest": newest,
                    "newest_ids": sorted(newest_ids),
                    "upper": upper,
                    "upper_ids": sorted(upper_ids),
                },
            }

        sent_in_run: set[str] = set()
        for _round in range(MAX_ROUNDS):
            filters = [f"created_at_i>={since}"] + ([f"created_at_i<={upper}"] if upper is not None else [])
            round_upper, walked, page, pages, total = upper, 0, 0, 1, 0
            while page < pages:
                response = await fetcher.get(self.search_url(filters, page), {"accept": "application/json"})
                try:
                    data = response.json()
                except ValueError as exc:
                    raise ContentRefused("malformed", f"Algolia answer is not JSON: {exc}") from None
                hits, pages, total = _page_shape(data)
                walked += len(hits)
                now = datetime.now(UTC)
                fresh: list[Candidate] = []
                page_times: list[tuple[int, str]] = []
                for hit in hits:
                    candidate = hit_fields(hit, self.options.query, now) if isinstance(hit, dict) else None
                    if candidate is None or candidate.fields is None:
                        fresh.append(candidate or Candidate("?", None, "hit is not an object"))
                        continue
                    mention_id = candidate.fields["id"]
                    at = int(hit["created_at_i"])
                    if at < since or (upper is not None and at > upper):
                        continue  # outside the filter (a server that ignored it)
                    if (at == since and mention_id in since_ids) or (at == upper and mention_id in upper_ids):
                        continue  # sent before the last checkpoint
                    if mention_id in sent_in_run:
                        continue  # moved to the next page by newer hits
                    sent_in_run.add(mention_id)
                    page_times.append((at, mention_id))
                    fresh.append(candidate)
                    if newest is None or at > newest:
                        newest, newest_ids = at, {mention_id}
                    elif at == newest:
                        newest_ids.add(mention_id)
                if page_times:
                    oldest = min(at for at, _ in page_times)
                    at_oldest = {mid for at, mid in page_times if at == oldest}
                    upper_ids = upper_ids | at_oldest if oldest == upper else at_oldest
                    upper = oldest
                yield Batch(fresh, state(), fetched=len(hits), save=bool(page_times))
                if not hits:
                    break
                page += 1
            # Algolia stops paginating at 1000 hits: go on below the oldest second reached, if it moved.
            if total <= walked or upper == round_upper:
                break
        else:
            logger.warning("%s: more than %d rounds of hits; the rest comes next cycle", self.describe(), MAX_ROUNDS)
            return
        if newest is not None:
            since_ids = since_ids | newest_ids if newest == since else newest_ids
            since = newest
        newest, newest_ids, upper, upper_ids = None, set(), None, set()
        final = state()
        final["run"] = None
        yield Batch([], final, save=final != cursor)
