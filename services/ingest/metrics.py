"""Prometheus metrics of the ingest service, registered on an injected CollectorRegistry.

Names are part of the contract (Grafana dashboard, alert rules, docs): keep them.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets for an HTTP request that waits for the broker's acknowledgement.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class IngestMetrics:
    registry: CollectorRegistry
    # Mentions that arrived (HTTP item, replay line, simulated post), by the mention's source.
    received: Counter
    # Mentions not produced, by source and reason (invalid, malformed_json, too_large, too_many, unavailable…).
    refused: Counter
    # Records the broker acknowledged, by topic.
    produced: Counter
    # Records whose send finally failed (or was not acknowledged in time), by topic.
    produce_errors: Counter
    # Batches the producer re-sent after a retriable broker error.
    produce_retries: Counter
    # 503 answers: Kafka unreachable, too slow, or ingest saturated.
    unavailable: Counter
    # HTTP request latency, by route template, method and status code.
    request_seconds: Histogram
    # Records (feed entries, API hits) read from a polled source, valid or not, by source id and type.
    source_fetched: Counter
    # Mentions of a polled source acknowledged by Kafka.
    source_produced: Counter
    # What a source refused, by reason: a record that is not a valid mention (invalid), or a whole document or
    # URL (too_large, unsafe_xml, malformed, forbidden_address, bad_url, too_many_redirects).
    source_refused: Counter
    # Failed polls, by kind: timeout, connect, http_status, rate_limited, kafka, internal.
    source_errors: Counter
    # Unix time of the source's last successful poll (a 304 counts).
    source_last_success: Gauge
    # Polls in a row that failed (0 when the last one succeeded).
    source_consecutive_failures: Gauge


def build_metrics(registry: CollectorRegistry) -> IngestMetrics:
    return IngestMetrics(
        registry=registry,
        received=Counter(
            "ecoute_ingest_mentions_received_total",
            "Mentions received by ingest",
            ["source"],
            registry=registry,
        ),
        refused=Counter(
            "ecoute_ingest_mentions_refused_total",
            "Mentions refused by ingest (never produced)",
            ["source", "reason"],
            registry=registry,
        ),
        produced=Counter(
            "ecoute_ingest_mentions_produced_total",
            "Records acknowledged by Kafka",
            ["topic"],
            registry=registry,
        ),
        produce_errors=Counter(
            "ecoute_ingest_produce_errors_total",
            "Records whose produce failed or timed out",
            ["topic"],
            registry=registry,
        ),
        produce_retries=Counter(
            "ecoute_ingest_produce_retries_total",
            "Record batches re-sent after a retriable Kafka error",
            registry=registry,
        ),
        unavailable=Counter(
            "ecoute_ingest_unavailable_total",
            "503 answers (Kafka unreachable or slow, ingest saturated)",
            registry=registry,
        ),
        request_seconds=Histogram(
            "ecoute_ingest_request_seconds",
            "HTTP request latency of the ingest service",
            ["route", "method", "status"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        ),
        source_fetched=Counter(
            "ecoute_ingest_source_fetched_total",
            "Records read from a polled source (valid or not)",
            ["source_id", "type"],
            registry=registry,
        ),
        source_produced=Counter(
            "ecoute_ingest_source_produced_total",
            "Mentions of a polled source acknowledged by Kafka",
            ["source_id", "type"],
            registry=registry,
        ),
        source_refused=Counter(
            "ecoute_ingest_source_refused_total",
            "Records, documents or URLs of a polled source refused (never produced)",
            ["source_id", "type", "reason"],
            registry=registry,
        ),
        source_errors=Counter(
            "ecoute_ingest_source_errors_total",
            "Failed polls of a source",
            ["source_id", "type", "kind"],
            registry=registry,
        ),
        source_last_success=Gauge(
            "ecoute_ingest_source_last_success_timestamp_seconds",
            "Unix time of the last successful poll of a source",
            ["source_id", "type"],
            registry=registry,
        ),
        source_consecutive_failures=Gauge(
            "ecoute_ingest_source_consecutive_failures",
            "Polls of a source that failed in a row",
            ["source_id", "type"],
            registry=registry,
        ),
    )
