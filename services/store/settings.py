"""Settings of the history store (environment, prefix ``ECOUTE_``), built by `build_settings`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from schemas import CommonSettings


class StoreSettings(CommonSettings):
    store_metrics_host: str = "127.0.0.1"
    # Prometheus metrics of the store; 0 turns the endpoint off.
    store_metrics_port: int = Field(8003, ge=0, le=65535)
    # A transaction holds at most this many records, or what arrived within store_commit_interval seconds:
    # history is seconds behind the live views at most, and a transaction stays short.
    store_batch_size: int = Field(5000, ge=1, le=100_000)
    store_commit_interval: float = Field(1.0, gt=0, le=60)
    # Seconds between two retention passes (dropping monthly partitions past ECOUTE_HISTORY_MONTHS).
    store_retention_every: float = Field(3600.0, gt=0)


def build_settings(**overrides: Any) -> StoreSettings:
    return StoreSettings(**overrides)
