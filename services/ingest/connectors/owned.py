"""The brand's own posts as content items: `brands.<name>.owned` (Mastodon and Bluesky accounts, blog feeds).

Each poll reads, channel by channel, the account and its latest `posts` posts with their reactions:
- Mastodon: `/api/v1/accounts/lookup?acct=` (id, followers_count), then `/api/v1/accounts/:id/statuses`
  without replies and boosts (replies_count, reblogs_count, favourites_count);
- Bluesky, on a public AppView: `app.bsky.actor.getProfile` (did, followersCount), then
  `app.bsky.feed.getAuthorFeed` with `filter=posts_no_replies`, reposts of others left out (replyCount,
  repostCount, likeCount);
- a blog feed: its entries, comments from `slash:comments` or `thr:total`, else the entries of the post's
  `wfw:commentRss` feed; a feed has no reposts, likes or followers (null).
Every post read becomes a content-item/1 reading for content.items; each platform's followers (summed over the
brand's accounts there) an account-metric/1 for metrics.accounts, as the accounts source sends them. One channel
failing does not hold back the others; the poll then fails with its error, so the source backs off and retries.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, ClassVar

import httpx

from schemas import EcouteConfig
from schemas.config import OwnedBluesky, OwnedChannels, OwnedMastodon
from schemas.models import MAX_EXCERPT_CHARS
from services.ingest.connectors.accounts import bluesky_profile, count_at, mastodon_account
from services.ingest.connectors.base import Batch, ContentRefused
from services.ingest.connectors.checkpoints import Cursor
from services.ingest.connectors.fetch import FetchError, SafeFetcher
from services.ingest.connectors.rss import ACCEPT, entry_fields, parse_feed
from services.ingest.connectors.streams import json_body
from services.ingest.connectors.text import clip, strip_html

logger = logging.getLogger(__name__)

# Mastodon ids are numeric strings; forks (Pleroma, Akkoma) use alphanumeric flake ids. Either is safe in a path.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")
_DID = re.compile(r"^did:[a-z]+:[A-Za-z0-9._:%-]{1,2048}$")
_AT_POST = re.compile(r"^at://([^/]+)/app\.bsky\.feed\.post/([A-Za-z0-9._:~-]{1,512})$")
MASTODON_PAGE = 40  # the most /api/v1/accounts/:id/statuses returns at once
BLUESKY_PAGE = 100  # the most getAuthorFeed returns at once


@dataclass
class ChannelReading:
    """What one poll of one channel found: its followers (None for a feed) and a reading per post."""

    platform: str
    channel: str
    followers: int | None
    items: list[dict[str, Any]] = field(default_factory=list)


def _count_or_none(value: Any) -> int | None:
    """A non-negative count from JSON or feed text ('7'); None when absent or not one."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _excerpt(text: str | None) -> str:
    return clip(text or "", MAX_EXCERPT_CHARS) or ""


def mastodon_item(status: Any, host: str, channel: str, followers: int, now: datetime) -> dict[str, Any] | None:
    """One status of the brand's account → content-item/1 fields; None for a boost or a status without an id."""
    if not isinstance(status, dict) or isinstance(status.get("reblog"), dict):
        return None
    status_id = status.get("id")
    if not isinstance(status_id, str) or not _PLAIN_ID.match(status_id):
        return None
    spoiler = strip_html(status.get("spoiler_text") if isinstance(status.get("spoiler_text"), str) else "")
    content = strip_html(status.get("content") if isinstance(status.get("content"), str) else "")
    url = status.get("url") or status.get("uri")
    return {
        "platform": "mastodon",
        "id": f"mastodon:{host}:{status_id}",
        "channel": channel,
        "url": url if isinstance(url, str) and url.startswith(("http://", "https://")) else None,
        "published_at": status.get("created_at"),
        "text": _excerpt(f"{spoiler}\n\n{content}" if spoiler and content else spoiler or content),
        "comments": _count_or_none(status.get("replies_count")),
        "reposts": _count_or_none(status.get("reblogs_count")),
        "likes": _count_or_none(status.get("favourites_count")),
        "followers": followers,
        "at": now,
    }


def bluesky_item(entry: Any, did: str, handle: str | None, followers: int, now: datetime) -> dict[str, Any] | None:
    """One getAuthorFeed entry → content-item/1 fields; None for a repost of someone else's post or a malformed one."""
    if not isinstance(entry, dict) or isinstance(entry.get("reason"), dict):
        return None
    post = entry.get("post")
    if not isinstance(post, dict):
        return None
    author = _object(post.get("author"))
    match = _AT_POST.match(post.get("uri") or "") if isinstance(post.get("uri"), str) else None
    if match is None or match.group(1) != did or author.get("did") != did:
        return None
    rkey = match.group(2)
    record = _object(post.get("record"))
    text = record.get("text") if isinstance(record.get("text"), str) else ""
    created = record.get("createdAt") or post.get("indexedAt")
    return {
        "platform": "bluesky",
        "id": f"bluesky:{did}:{rkey}",
        "channel": handle or did,
        "url": f"https://bsky.app/profile/{handle or did}/post/{rkey}",
        "published_at": created,
        "text": _excerpt(text),
        "comments": _count_or_none(post.get("replyCount")),
        "reposts": _count_or_none(post.get("repostCount")),
        "likes": _count_or_none(post.get("likeCount")),
        "followers": followers,
        "at": now,
    }


class OwnedConnector:
    """Every owned channel of one brand, polled together every `owned.interval`."""

    type: ClassVar[str] = "owned"

    def __init__(self, brand: str, channels: OwnedChannels) -> None:
        self.brand = brand
        self.channels = channels
        self.source_id = f"owned:{brand}"
        self.interval = channels.interval

    def describe(self) -> str:
        names = [f"mastodon {m.account.removeprefix('@')} on {m.instance.host}" for m in self.channels.mastodon]
        names += [f"bluesky {b.actor}" for b in self.channels.bluesky]
        names += [f"feed {url}" for url in self.channels.rss]
        return f"owned channels of {self.brand}: {', '.join(names)}"

    # -- Mastodon ---------------------------------------------------------------------------------

    async def read_mastodon(self, account: OwnedMastodon, fetcher: SafeFetcher, now: datetime) -> ChannelReading:
        instance = str(account.instance).rstrip("/")
        host = httpx.URL(instance).host
        acct = account.account.removeprefix("@")
        channel = acct if "@" in acct else f"{acct}@{host}"
        found = await mastodon_account(fetcher, instance, acct)
        account_id = found.get("id")
        if not isinstance(account_id, str) or not _PLAIN_ID.match(account_id):
            raise ContentRefused("malformed", f"mastodon {channel}: account id {account_id!r} is not an id")
        reading = ChannelReading("mastodon", channel, count_at(found, "followers_count"))
        max_id: str | None = None
        seen = 0
        while seen < self.channels.posts:
            limit = min(MASTODON_PAGE, self.channels.posts - seen)
            params = {"limit": str(limit), "exclude_replies": "true", "exclude_reblogs": "true"}
            if max_id is not None:
                params["max_id"] = max_id
            url = httpx.URL(f"{instance}/api/v1/accounts/{account_id}/statuses", params=params)
            statuses = json_body(await fetcher.get(str(url), {"accept": "application/json"}))
            if not isinstance(statuses, list):
                raise ContentRefused("malformed", f"mastodon {channel}: the statuses are not a JSON array")
            for status in statuses:
                item = mastodon_item(status, host, channel, reading.followers or 0, now)
                if item is not None:
                    reading.items.append(item)
            seen += len(statuses)
            last = statuses[-1].get("id") if statuses and isinstance(statuses[-1], dict) else None
            # A short page is the last one: the account has no older statuses.
            if len(statuses) < limit or not isinstance(last, str) or not _PLAIN_ID.match(last) or last == max_id:
                break
            max_id = last
        return reading

    # -- Bluesky ----------------------------------------------------------------------------------

    async def read_bluesky(self, account: OwnedBluesky, fetcher: SafeFetcher, now: datetime) -> ChannelReading:
        base = str(account.base_url).rstrip("/")
        profile = await bluesky_profile(fetcher, base, account.actor)
        did = profile.get("did")
        if not isinstance(did, str) or not _DID.match(did):
            raise ContentRefused("malformed", f"bluesky {account.actor}: profile without a DID ({did!r})")
        handle = profile.get("handle") if isinstance(profile.get("handle"), str) else None
        if handle == "handle.invalid":  # the AppView's placeholder for a handle that does not verify
            handle = None
        reading = ChannelReading("bluesky", handle or did, count_at(profile, "followersCount"))
        cursor: str | None = None
        seen = 0
        while seen < self.channels.posts:
            params = {"actor": did, "limit": str(min(BLUESKY_PAGE, self.channels.posts - seen))}
            params["filter"] = "posts_no_replies"
            if cursor is not None:
                params["cursor"] = cursor
            url = httpx.URL(f"{base}/xrpc/app.bsky.feed.getAuthorFeed", params=params)
            page = json_body(await fetcher.get(str(url), {"accept": "application/json"}))
            feed = page.get("feed") if isinstance(page, dict) else None
            if not isinstance(feed, list):
                raise ContentRefused("malformed", f"bluesky {reading.channel}: getAuthorFeed without a feed array")
            for entry in feed:
                item = bluesky_item(entry, did, handle, reading.followers or 0, now)
                if item is not None:
                    reading.items.append(item)
            seen += len(feed)
            following = page.get("cursor")
            if not feed or not isinstance(following, str) or not following or following == cursor:
                break
            cursor = following
        return reading

    # -- blog feeds -------------------------------------------------------------------------------

    async def read_feed(self, feed_url: str, fetcher: SafeFetcher, now: datetime) -> ChannelReading:
        response = await fetcher.get(feed_url, {"accept": ACCEPT})
        feed = parse_feed(response.content, response.url, response.headers.get("content-type"))
        reading = ChannelReading("rss", feed_url, None)
        for entry in feed.entries[: self.channels.posts]:
            candidate = entry_fields(entry, feed_url, None, now)
            fields = candidate.fields
            if fields is None:
                logger.warning("%s: feed entry %s skipped: %s", feed_url, candidate.ref, candidate.problem)
                continue
            comments = _count_or_none(entry.get("slash_comments"))
            if comments is None:
                comments = _count_or_none(entry.get("thr_total"))
            if comments is None and isinstance(entry.get("wfw_commentrss"), str):
                comments = await self.comment_feed_count(entry["wfw_commentrss"], fetcher)
            reading.items.append(
                {
                    "platform": "rss",
                    "id": fields["id"],
                    "channel": feed_url,
                    "url": fields.get("url"),
                    "published_at": fields["published_at"],
                    "title": fields.get("title"),
                    "text": _excerpt(fields.get("text")),
                    "comments": comments,
                    "at": now,
                }
            )
        return reading

    async def comment_feed_count(self, url: str, fetcher: SafeFetcher) -> int | None:
        """Entries of a post's comment feed (wfw:commentRss); None when it cannot be read (the post still counts).

        A comment feed may list only its latest comments (WordPress: its 'posts per feed' setting), which is why
        slash:comments or thr:total is preferred when the feed gives one."""
        try:
            response = await fetcher.get(url, {"accept": ACCEPT})
            return len(parse_feed(response.content, response.url, response.headers.get("content-type")).entries)
        except (FetchError, ContentRefused) as exc:
            logger.warning("%s: comment feed %s not read: %s", self.describe(), url, exc)
            return None

    # -- the poll ---------------------------------------------------------------------------------

    async def poll(self, cursor: Cursor | None, fetcher: SafeFetcher) -> AsyncIterator[Batch]:
        now = datetime.now(UTC)
        readers: list[tuple[str, str, Callable[[], Awaitable[ChannelReading]]]] = []
        for mastodon in self.channels.mastodon:
            name = f"mastodon {mastodon.account} on {mastodon.instance}"
            readers.append(("mastodon", name, partial(self.read_mastodon, mastodon, fetcher, now)))
        for bluesky in self.channels.bluesky:
            readers.append(("bluesky", f"bluesky {bluesky.actor}", partial(self.read_bluesky, bluesky, fetcher, now)))
        for url in self.channels.rss:
            readers.append(("rss", f"feed {url}", partial(self.read_feed, str(url), fetcher, now)))
        readings: list[ChannelReading] = []
        failed_platforms: set[str] = set()
        errors: list[Exception] = []
        for platform, name, read in readers:
            try:
                readings.append(await read())
            except (FetchError, ContentRefused) as exc:
                logger.error("%s: reading %s failed: %s", self.describe(), name, exc)
                failed_platforms.add(platform)
                errors.append(exc)
        items = [{"brand": self.brand, **item} for reading in readings for item in reading.items]
        followers: dict[str, int] = {}
        for reading in readings:
            if reading.followers is not None and reading.platform not in failed_platforms:
                followers[reading.platform] = followers.get(reading.platform, 0) + reading.followers
        metrics = [
            {"brand": self.brand, "platform": platform, "metric": "followers", "value": value, "at": now}
            for platform, value in followers.items()
        ]
        yield Batch([], {}, fetched=len(items), save=False, account_metrics=metrics, content_items=items)
        if errors:
            raise errors[0]


def owned_connectors(config: EcouteConfig) -> list[OwnedConnector]:
    """One connector per brand with `owned:` channels (the config has checked them when it was loaded)."""
    return [OwnedConnector(name, brand.owned) for name, brand in config.brands.items() if brand.owned is not None]
