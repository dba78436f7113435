"""Settings of the history store (environment, prefix ``ECOUTE_``), built by `build_settings`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr

from schemas import CommonSettings

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


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

    # The digest (services/store/digest.py): the last complete week (Monday 00:00 to Monday 00:00 UTC) or day,
    # sent on digest_weekday (weekly) at digest_hour UTC, to the brand's webhooks and the config's `digest.to`.
    digest_every: Literal["week", "day", "off"] = "week"
    digest_weekday: Weekday = "monday"
    digest_hour: int = Field(8, ge=0, le=23)
    # Seconds between two looks at what is due (a period, a retry).
    digest_check_every: float = Field(60.0, gt=0, le=3600)
    # Attempts per channel (webhook, e-mail) before giving up; the first retry after digest_backoff seconds,
    # doubled after each failure.
    digest_attempts: int = Field(6, ge=1, le=50)
    digest_backoff: float = Field(60.0, gt=0, le=86400)
    digest_timeout: float = Field(10.0, gt=0, le=300)
    # Where the live page is served (https://ecoute.example.org): digests link to its history view.
    public_url: str | None = None
    # E-mail: unset smtp_host, no e-mail.
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "ecoute@localhost"


def build_settings(**overrides: Any) -> StoreSettings:
    return StoreSettings(**overrides)
