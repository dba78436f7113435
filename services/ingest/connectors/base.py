"""What a connector is: a source polled on an interval, yielding batches of candidate mentions and cursors.

The runner (services/ingest/sources.py) validates every candidate as a mention/1, produces the valid ones,
waits for Kafka's acknowledgement and only then saves the batch's cursor in `ingest.checkpoints`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from schemas.config import Seconds
from services.ingest.connectors.checkpoints import Cursor
from services.ingest.connectors.fetch import SafeFetcher


class ContentRefused(Exception):
    """A fetched document is refused as a whole (unsafe XML, malformed feed, unexpected JSON shape)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Candidate:
    """One record of a source turned into mention/1 fields (validated by the runner), or why it could not be."""

    ref: str  # where it came from, for logs (guid, objectID…)
    fields: dict[str, Any] | None
    problem: str | None = None


@dataclass
class Batch:
    """Records fetched together and the cursor that is true once they are all acknowledged."""

    candidates: list[Candidate]
    cursor: Cursor
    fetched: int = 0
    # Save the cursor even when no candidate is new (e.g. a changed ETag); False: nothing to save.
    save: bool = True
    notes: dict[str, Any] = field(default_factory=dict)
    # account-metric/1 fields (followers, subscribers…) for metrics.accounts, validated and produced like mentions.
    account_metrics: list[dict[str, Any]] = field(default_factory=list)
    # content-item/1 fields (readings of the brand's own posts) for content.items, validated and produced likewise.
    content_items: list[dict[str, Any]] = field(default_factory=list)


class SourceOptions(BaseModel):
    """Options common to every polled source; each connector extends them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str
    # An explicit, stable source id; by default one is derived from what the source fetches.
    id: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")
    interval: Seconds = 300.0


class Connector(Protocol):
    type: ClassVar[str]
    source_id: str
    interval: float

    def describe(self) -> str:
        """What it listens to (URL, query), for logs and /healthz."""
        ...

    def poll(self, cursor: Cursor | None, fetcher: SafeFetcher) -> AsyncIterator[Batch]:
        """One polling cycle from `cursor` (None: first run), as batches in commit order."""
        ...


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def derived_id(kind: str, *parts: str) -> str:
    """A stable source id from what the source fetches: `rss:<sha1 of url>`."""
    return f"{kind}:{sha1(parts[0] if len(parts) == 1 else chr(0).join(parts))}"
