"""Settings of the ingest service (environment, prefix ``ECOUTE_``), built by `build_settings`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from schemas import CommonSettings

MIB = 1024 * 1024


class IngestSettings(CommonSettings):
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(8001, ge=0, le=65535)
    # A request body above this is refused with 413 before it is read in full.
    max_body_bytes: int = Field(MIB, ge=1024, le=64 * MIB)
    # Mentions (or account metrics) in one POST; a longer array is refused with 413.
    max_batch: int = Field(1000, ge=1, le=100_000)
    # Seconds the broker has to acknowledge a request's records before the client gets a 503.
    send_timeout: float = Field(10.0, gt=0)
    # What a 503 tells the client to wait before retrying (Retry-After, seconds).
    retry_after: int = Field(5, ge=1)
    # Requests producing at the same time; the next ones wait (up to send_timeout) for a slot.
    # With the producer's one pending batch per partition this bounds what ingest holds in memory.
    max_inflight_requests: int = Field(32, ge=1)
    linger_ms: int = Field(5, ge=0, le=1000)
    producer_batch_bytes: int = Field(256 * 1024, ge=1024)
    # How long start-up waits for Kafka before serving anyway (unhealthy, answering 503 until it connects).
    kafka_startup_wait: float = Field(10.0, ge=0)
    # Pause between connection attempts while Kafka is unreachable.
    kafka_reconnect_interval: float = Field(2.0, gt=0)
    # Idempotent producer (no duplicates from producer retries). "auto" falls back to a plain acks=all
    # producer when the broker refuses idempotence (the embedded Tansu broker does).
    kafka_idempotence: Literal["auto", "on", "off"] = "auto"
    # Run the `sources:` of the config file (simulate today) inside the ingest service.
    ingest_sources: bool = True


def build_settings(**overrides: Any) -> IngestSettings:
    """Settings from the environment; keyword overrides win (tests, `ecoute run`)."""
    return IngestSettings(**overrides)
