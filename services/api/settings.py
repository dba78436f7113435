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
    # How many alerts the view keeps in all (the oldest are dropped first).
    alerts_kept: int = Field(10_000, ge=1)
    # 1-minute KPI buckets and author sightings older than this are dropped (the 24h window needs 24h + slack).
    kpi_retention_hours: float = Field(25.0, ge=24.0)
    # Alerts an SSE subscriber may have pending before it is dropped as too slow.
    sse_queue_size: int = Field(256, ge=1)
    # Seconds between SSE heartbeat comments, so proxies keep idle streams open.
    sse_ping_seconds: float = Field(15.0, gt=0)
    # Seconds uvicorn waits for open connections (SSE streams) on shutdown before cutting them.
    api_graceful_shutdown_seconds: int = Field(5, ge=0)


def load_settings(**overrides: Any) -> ApiSettings:
    """Settings from the environment, with explicit overrides (command-line options, tests) on top."""
    return ApiSettings(**overrides)
