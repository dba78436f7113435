"""Prometheus metrics of the API service, registered on an injected registry (names are a contract)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Latency of every HTTP answer, labelled by route template (not raw path) so brands don't explode it.
        self.request_seconds = Histogram(
            "ecoute_api_request_seconds",
            "Time to answer an HTTP request",
            ["route", "method", "status"],
            registry=registry,
        )
        # Records applied to the in-memory views, by topic (unprefixed name).
        self.view_records = Counter(
            "ecoute_api_view_records_total",
            "Kafka records applied to the API views",
            ["topic"],
            registry=registry,
        )
        # Rows of the history store applied to the views at start, by the topic they came from (unprefixed name);
        # Kafka is then read from the store's offsets, so these records are not in view_records.
        self.view_store_rows = Counter(
            "ecoute_api_view_store_rows_total",
            "History store rows applied to the API views at start",
            ["topic"],
            registry=registry,
        )
        # Records that could not be parsed and were skipped (each one is logged with topic/partition/offset).
        self.view_bad_records = Counter(
            "ecoute_api_view_bad_records_total",
            "Kafka records skipped by the API views because they are malformed",
            ["topic"],
            registry=registry,
        )
        # Records of each topic the views have yet to apply: the end a read_committed reader sees (the last stable
        # offset) minus the consumer's position, summed over the topic's partitions; updated every few seconds.
        self.view_lag = Gauge(
            "ecoute_api_view_lag",
            "Kafka records the API views have yet to apply",
            ["topic"],
            registry=registry,
        )
        # Open SSE alert streams.
        self.sse_clients = Gauge("ecoute_api_sse_clients", "Open SSE alert streams", registry=registry)
        # SSE subscribers dropped because they read too slowly.
        self.sse_dropped = Counter(
            "ecoute_api_sse_dropped_total", "SSE alert streams closed because the client fell behind", registry=registry
        )
        # Requests refused with 401, by reason: missing (no key sent) or invalid (unknown key).
        self.unauthorized = Counter(
            "ecoute_api_unauthorized_total",
            "Requests refused for a missing or invalid API key",
            ["reason"],
            registry=registry,
        )
        # Requests refused with 429 because their key went over its rate limit.
        self.rate_limited = Counter(
            "ecoute_api_rate_limited_total", "Requests refused by the per-key rate limit", registry=registry
        )
        # Acks and handled marks written to the actions topic, by kind (ack | handled).
        self.actions = Counter(
            "ecoute_api_actions_total", "Acks and handled marks recorded", ["kind"], registry=registry
        )
        # Replies and follows from the inbox, by platform, kind (reply | follow) and outcome: sent, replayed (a retry
        # answered from the record), refused (the platform's 4xx), unavailable (unreachable, 5xx), timeout.
        self.outreach = Counter(
            "ecoute_api_outreach_total",
            "Replies and follows sent with the brands' accounts",
            ["platform", "kind", "outcome"],
            registry=registry,
        )
        # Webhook delivery attempts and decisions, by outcome: delivered, retry (failed, will retry), failed (gave up).
        self.webhook_outcomes = Counter(
            "ecoute_api_webhook_deliveries_total", "Webhook delivery outcomes", ["outcome"], registry=registry
        )
        # Webhook deliveries waiting for their next attempt (on the replica that owns them).
        self.webhook_pending = Gauge(
            "ecoute_api_webhook_pending", "Webhook deliveries pending a retry", registry=registry
        )
        # Pauses of the cyclic garbage collector, by generation (2 = a full collection, which walks the views).
        self.gc_pause_seconds = Histogram(
            "ecoute_api_gc_pause_seconds",
            "Time the garbage collector held the process, per collection",
            ["generation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        # 1 once the views have caught up with the topics' end offsets seen at start, else 0.
        self.views_ready = Gauge("ecoute_api_views_ready", "1 when the API views have caught up", registry=registry)
