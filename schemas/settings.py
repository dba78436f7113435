"""Infrastructure settings shared by every service (environment, prefix ``ECOUTE_``).

Each service subclasses `CommonSettings` with its own fields; settings are built by a function
and passed in, never read from a module global.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Idempotence = Literal["auto", "on", "off"]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ECOUTE_", frozen=True, extra="ignore")

    # None means "no broker configured": `ecoute run` then starts the embedded one.
    kafka_bootstrap_servers: str | None = None
    config: Path = Path("ecoute.yaml")
    # Prepended to every topic name, so several deployments (or tests) share one cluster.
    topic_prefix: str = ""
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1, le=5)
    log_level: str = "INFO"
    # Idempotent producers (no duplicates from producer retries), for every producer a service creates
    # (schemas/producers.py): "on" requires it, "off" never asks, "auto" falls back to plain acks=all
    # when the broker refuses it (the embedded Tansu broker does).
    kafka_idempotence: Idempotence = "auto"
    # PostgreSQL of the history store (postgresql://user:pass@host:port/db). Unset: `ecoute run` starts a local
    # server of its own; a service started alone then runs without history (the API answers 503 on its routes).
    database_url: str | None = None
    # Months of history kept (the current month included); older monthly partitions are dropped.
    history_months: int = Field(13, ge=1, le=120)

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or "127.0.0.1:9092"
