"""Infrastructure settings shared by every service (environment, prefix ``ECOUTE_``).

Each service subclasses `CommonSettings` with its own fields; settings are built by a function
and passed in, never read from a module global.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or "127.0.0.1:9092"
