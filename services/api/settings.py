"""Settings of the API service (environment, prefix ``ECOUTE_``), built by `load_settings`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from schemas import CommonSettings


class ApiSettings(CommonSettings):
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    # How many scored mentions per brand `/mentions` can show (the newest ones are kept).
    mentions_per_brand: int = Field(500, ge=1, le=100_000)
    # How many mentions that need an answer (negative ones, questions) the inbox keeps per brand.
    inbox_per_brand: int = Field(1000, ge=1, le=100_000)
    # How many alerts the view keeps in all (the oldest are dropped first).
    alerts_kept: int = Field(10_000, ge=1)
    # How many webhook delivery records the view keeps for `/v1/webhooks/deliveries`.
    deliveries_kept: int = Field(10_000, ge=1)
    # 1-minute KPI buckets and author sightings older than this are dropped (the 24h window needs 24h + slack).
    kpi_retention_hours: float = Field(25.0, ge=24.0)
    # Alerts an SSE subscriber may have pending before it is dropped as too slow.
    sse_queue_size: int = Field(256, ge=1)
    # Seconds between SSE heartbeat comments, so proxies keep idle streams open.
    sse_ping_seconds: float = Field(15.0, gt=0)
    # Seconds uvicorn waits for open connections (SSE streams) on shutdown before cutting them.
    api_graceful_shutdown_seconds: int = Field(5, ge=0)
    # Requests per second each API key may make on average (token bucket refill); 0 turns the limit off.
    api_rate_limit_per_second: float = Field(100.0, ge=0)
    # Requests a key may make at once before the average applies (token bucket size).
    api_rate_limit_burst: int = Field(200, ge=1)
    # Short young collections, and once the views have caught up, and every 10 s after, move the objects that
    # survive a young collection out of the collector's reach (gc.freeze), so no collection walks the views
    # (gcpolicy.py).
    api_gc_freeze: bool = True
    # Seconds a write of an ack or handled mark may take before the request answers 503.
    api_write_timeout_seconds: float = Field(10.0, gt=0)
    # Connect and read timeout of each call to Mastodon or Bluesky when replying or following from the inbox.
    engage_timeout_seconds: float = Field(15.0, gt=0)
    # Consumer group of the webhook dispatcher (prefixed with topic_prefix): one replica of the group delivers.
    webhook_group: str = "ecoute-api-webhooks"
    # Attempts per delivery before it is marked failed (the first one included).
    webhook_max_attempts: int = Field(30, ge=1, le=1000)
    # A delivery still failing this long after the alert is marked failed, whatever the attempts left.
    webhook_max_age_seconds: float = Field(86_400.0, gt=0)
    # Delay before the first retry; it doubles after each failed attempt, up to webhook_backoff_max_seconds.
    webhook_backoff_seconds: float = Field(30.0, gt=0)
    webhook_backoff_max_seconds: float = Field(3600.0, gt=0)
    # Connect and read timeout of one delivery attempt.
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    # Deliveries attempted at the same time.
    webhook_concurrency: int = Field(8, ge=1, le=256)


def load_settings(**overrides: Any) -> ApiSettings:
    """Settings from the environment, with explicit overrides (command-line options, tests) on top."""
    return ApiSettings(**overrides)
