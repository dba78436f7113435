"""Settings of the ingest service (environment, prefix ``ECOUTE_``), built by `build_settings`."""

from __future__ import annotations

from typing import Any

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
    # Run the `sources:` of the config file (polled connectors and simulate) inside the ingest service.
    ingest_sources: bool = True
    # Polling: each wait is the source's interval ± this fraction, so sources don't fire in lockstep.
    source_jitter: float = Field(0.1, ge=0, le=0.5)
    # After a failed poll the next try comes after min(interval, retry_base) × 2^(failures-1), at most
    # max(interval, max_backoff) seconds.
    source_retry_base: float = Field(30.0, gt=0)
    source_max_backoff: float = Field(3600.0, gt=0)
    # How long stopping waits for a source to finish committing a batch (produce + checkpoint).
    source_stop_grace: float = Field(15.0, gt=0)
    # Outbound HTTP of the connectors (see services/ingest/connectors/fetch.py). Private, loopback and
    # link-local addresses are reachable only through `fetch.allow_networks` in the YAML config.
    fetch_connect_timeout: float = Field(5.0, gt=0)
    fetch_read_timeout: float = Field(20.0, gt=0)
    # A response body above this (decoded) is refused; the read stops there.
    fetch_max_bytes: int = Field(5 * MIB, ge=1024, le=256 * MIB)
    fetch_max_redirects: int = Field(5, ge=0, le=20)
    # Requests to one host at the same time, across all sources.
    fetch_per_host: int = Field(2, ge=1, le=64)
    # Attempts of one GET (429, 5xx, timeouts, connection errors), with exponential backoff and jitter.
    fetch_max_attempts: int = Field(4, ge=1, le=20)
    fetch_backoff_base: float = Field(1.0, gt=0)
    fetch_backoff_max: float = Field(60.0, gt=0)
    # A Retry-After above this is not waited for inside a poll; the source's next poll comes after it.
    fetch_max_retry_after: float = Field(120.0, ge=0)
    fetch_user_agent: str = "ecoute/0.1 (conversation monitoring; +https://github.com/ecoute/ecoute)"


def build_settings(**overrides: Any) -> IngestSettings:
    """Settings from the environment; keyword overrides win (tests, `ecoute run`)."""
    return IngestSettings(**overrides)
