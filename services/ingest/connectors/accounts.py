"""Followers and subscribers of a brand's own accounts, for the "love" KPIs: `{type: accounts, brand, …}`.

Each poll reads the brand's Mastodon account (`/api/v1/accounts/lookup?acct=` → followers_count), Bluesky
account (`/xrpc/app.bsky.actor.getProfile?actor=` → followersCount) and subreddit (`/r/<sub>/about.json` →
data.subscribers), whichever are configured, and sends account-metric/1 readings to `metrics.accounts` (keyed
`brand|platform|metric`). One platform failing does not hold back the others' readings; the poll then fails
with its error, so the source shows as failing and retries with backoff.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from schemas import EcouteConfig
from schemas.config import Seconds
from services.ingest.connectors.base import Batch, ContentRefused, SourceOptions, derived_id
from services.ingest.connectors.checkpoints import Cursor
from services.ingest.connectors.fetch import FetchError, SafeFetcher
from services.ingest.connectors.streams import json_body

logger = logging.getLogger(__name__)

Reading = tuple[str, str, int]  # platform, metric, value


class _Account(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MastodonAccount(_Account):
    instance: HttpUrl
    account: str = Field(min_length=1, max_length=300)  # acct: "acme" (local) or "acme@other.example"


class BlueskyAccount(_Account):
    handle: str = Field(min_length=1, max_length=300)  # handle or DID
    base_url: HttpUrl = HttpUrl("https://public.api.bsky.app")


class RedditAccount(_Account):
    subreddit: str = Field(min_length=2, max_length=21, pattern=r"^[A-Za-z0-9][A-Za-z0-9_]+$")
    base_url: HttpUrl = HttpUrl("https://www.reddit.com")


class AccountsOptions(SourceOptions):
    type: str = "accounts"
    brand: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    mastodon: MastodonAccount | None = None
    bluesky: BlueskyAccount | None = None
    reddit: RedditAccount | None = None
    interval: Seconds = 3600.0

    @model_validator(mode="after")
    def _some_account(self) -> AccountsOptions:
        if not (self.mastodon or self.bluesky or self.reddit):
            raise ValueError("an accounts source needs at least one of mastodon, bluesky or reddit")
        return self


def count_at(data: Any, *path: str) -> int:
    """The non-negative integer at `path` inside a JSON answer; ContentRefused when it is not one."""
    value = data
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ContentRefused("malformed", f"no count at {'.'.join(path)} (got {value!r})")
    return value


async def mastodon_account(fetcher: SafeFetcher, instance: str, acct: str) -> dict[str, Any]:
    """`/api/v1/accounts/lookup?acct=`: the public account (id, followers_count…) of `acct` on `instance`."""
    base = instance.rstrip("/")
    url = httpx.URL(f"{base}/api/v1/accounts/lookup", params={"acct": acct.removeprefix("@")})
    data = json_body(await fetcher.get(str(url), {"accept": "application/json"}))
    if not isinstance(data, dict):
        raise ContentRefused("malformed", f"{url}: the account is not a JSON object")
    return data


async def bluesky_profile(fetcher: SafeFetcher, base_url: str, actor: str) -> dict[str, Any]:
    """`app.bsky.actor.getProfile` on an AppView: the profile (did, handle, followersCount…) of a handle or DID."""
    base = base_url.rstrip("/")
    url = httpx.URL(f"{base}/xrpc/app.bsky.actor.getProfile", params={"actor": actor.removeprefix("@")})
    data = json_body(await fetcher.get(str(url), {"accept": "application/json"}))
    if not isinstance(data, dict):
        raise ContentRefused("malformed", f"{url}: the profile is not a JSON object")
    return data


class AccountsConnector:
    type: ClassVar[str] = "accounts"

    def __init__(self, options: AccountsOptions) -> None:
        self.options = options
        targets = [
            f"mastodon:{options.mastodon.instance}{options.mastodon.account}" if options.mastodon else "",
            f"bluesky:{options.bluesky.handle}" if options.bluesky else "",
            f"reddit:{options.reddit.subreddit}" if options.reddit else "",
        ]
        self.source_id = options.id or derived_id("accounts", options.brand, *targets)
        self.interval = options.interval

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], config: EcouteConfig | None = None) -> AccountsConnector:
        options = AccountsOptions.model_validate(dict(raw))
        if config is not None and config.brands and options.brand not in config.brands:
            logger.warning("accounts source: brand %r is not among the configured brands", options.brand)
        return cls(options)

    def describe(self) -> str:
        platforms = [p for p in ("mastodon", "bluesky", "reddit") if getattr(self.options, p) is not None]
        return f"accounts of {self.options.brand} on {', '.join(platforms)}"

    async def mastodon_followers(self, fetcher: SafeFetcher) -> list[Reading]:
        account = self.options.mastodon
        assert account is not None
        data = await mastodon_account(fetcher, str(account.instance), account.account)
        return [("mastodon", "followers", count_at(data, "followers_count"))]

    async def bluesky_followers(self, fetcher: SafeFetcher) -> list[Reading]:
        account = self.options.bluesky
        assert account is not None
        data = await bluesky_profile(fetcher, str(account.base_url), account.handle)
        return [("bluesky", "followers", count_at(data, "followersCount"))]

    async def reddit_subscribers(self, fetcher: SafeFetcher) -> list[Reading]:
        account = self.options.reddit
        assert account is not None
        base = str(account.base_url).rstrip("/")
        data = json_body(await fetcher.get(f"{base}/r/{account.subreddit}/about.json", {"accept": "application/json"}))
        return [("reddit", "subscribers", count_at(data, "data", "subscribers"))]

    async def poll(self, cursor: Cursor | None, fetcher: SafeFetcher) -> AsyncIterator[Batch]:
        readers: list[tuple[str, Callable[[SafeFetcher], Awaitable[list[Reading]]]]] = []
        if self.options.mastodon:
            readers.append(("mastodon", self.mastodon_followers))
        if self.options.bluesky:
            readers.append(("bluesky", self.bluesky_followers))
        if self.options.reddit:
            readers.append(("reddit", self.reddit_subscribers))
        readings: list[Reading] = []
        errors: list[Exception] = []
        for platform, read in readers:
            try:
                readings.extend(await read(fetcher))
            except (FetchError, ContentRefused) as exc:
                logger.error("%s: reading %s failed: %s", self.describe(), platform, exc)
                errors.append(exc)
        at = datetime.now(UTC)
        metrics = [
            {"brand": self.options.brand, "platform": p, "metric": m, "value": v, "at": at} for p, m, v in readings
        ]
        yield Batch([], {}, fetched=len(readings), save=False, account_metrics=metrics)
        if errors:
            raise errors[0]
