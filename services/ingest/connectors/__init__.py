"""Source connectors of the ingest service: safe fetching, checkpoints, and one module per source type."""

from collections.abc import Callable, Mapping
from typing import Any

from schemas import EcouteConfig
from services.ingest.connectors.accounts import AccountsConnector, AccountsOptions
from services.ingest.connectors.base import Batch, Candidate, Connector, ContentRefused, SourceOptions, derived_id
from services.ingest.connectors.bluesky import BlueskyConnector, BlueskyOptions, query_terms, term_pattern
from services.ingest.connectors.checkpoints import CheckpointStore, Cursor
from services.ingest.connectors.fetch import (
    FetchConnectError,
    FetchedResponse,
    FetchError,
    FetchFailed,
    FetchPolicy,
    FetchRefused,
    FetchTimeout,
    ForbiddenAddress,
    HTTPStatusError,
    RateLimited,
    ResponseTooLarge,
    SafeFetcher,
    TooManyRedirects,
    UnsafeURL,
    address_refusal,
    ip_literal,
    parse_networks,
)
from services.ingest.connectors.hackernews import HackerNewsConnector, HackerNewsOptions, hit_fields
from services.ingest.connectors.mastodon import MastodonConnector, MastodonOptions, status_fields
from services.ingest.connectors.owned import OwnedConnector, owned_connectors
from services.ingest.connectors.reddit import RedditConnector, RedditOptions, listing_children, thing_fields
from services.ingest.connectors.rss import RssConnector, RssOptions, check_xml, entry_fields, parse_feed
from services.ingest.connectors.webanalytics import MatomoConnector, PlausibleConnector

# Builds a connector from its `sources:` entry and the whole config (Bluesky filters by the brands' terms);
# raises pydantic.ValidationError on bad options.
ConnectorFactory = Callable[[Mapping[str, Any], EcouteConfig], Connector]


def _from_options(build: Callable[[Mapping[str, Any]], Connector]) -> ConnectorFactory:
    def factory(raw: Mapping[str, Any], config: EcouteConfig) -> Connector:
        return build(raw)

    return factory


# Source type → factory.
CONNECTORS: dict[str, ConnectorFactory] = {
    "rss": _from_options(RssConnector.from_config),
    "hackernews": _from_options(HackerNewsConnector.from_config),
    "reddit": RedditConnector.from_config,
    "mastodon": MastodonConnector.from_config,
    "bluesky": BlueskyConnector.from_config,
    "accounts": AccountsConnector.from_config,
    "matomo": MatomoConnector.from_config,
    "plausible": PlausibleConnector.from_config,
}

__all__ = [
    "CONNECTORS",
    "AccountsConnector",
    "AccountsOptions",
    "Batch",
    "BlueskyConnector",
    "BlueskyOptions",
    "Candidate",
    "CheckpointStore",
    "Connector",
    "ConnectorFactory",
    "ContentRefused",
    "Cursor",
    "FetchConnectError",
    "FetchError",
    "FetchFailed",
    "FetchPolicy",
    "FetchRefused",
    "FetchTimeout",
    "FetchedResponse",
    "ForbiddenAddress",
    "HTTPStatusError",
    "HackerNewsConnector",
    "HackerNewsOptions",
    "MastodonConnector",
    "MastodonOptions",
    "OwnedConnector",
    "RateLimited",
    "RedditConnector",
    "RedditOptions",
    "ResponseTooLarge",
    "RssConnector",
    "RssOptions",
    "SafeFetcher",
    "SourceOptions",
    "TooManyRedirects",
    "UnsafeURL",
    "address_refusal",
    "check_xml",
    "derived_id",
    "entry_fields",
    "hit_fields",
    "ip_literal",
    "listing_children",
    "owned_connectors",
    "parse_feed",
    "parse_networks",
    "query_terms",
    "status_fields",
    "term_pattern",
    "thing_fields",
]
