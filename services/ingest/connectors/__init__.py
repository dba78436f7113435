"""Source connectors of the ingest service: safe fetching, checkpoints, and one module per source type."""

from collections.abc import Callable, Mapping
from typing import Any

from services.ingest.connectors.base import Batch, Candidate, Connector, ContentRefused, SourceOptions, derived_id
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
from services.ingest.connectors.rss import RssConnector, RssOptions, check_xml, entry_fields, parse_feed

# Source type → factory from the source's config entry (raises pydantic.ValidationError on bad options).
CONNECTORS: dict[str, Callable[[Mapping[str, Any]], Connector]] = {
    "rss": RssConnector.from_config,
    "hackernews": HackerNewsConnector.from_config,
}

__all__ = [
    "CONNECTORS",
    "Batch",
    "Candidate",
    "CheckpointStore",
    "Connector",
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
    "RateLimited",
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
    "parse_feed",
    "parse_networks",
]
