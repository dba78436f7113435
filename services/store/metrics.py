"""Prometheus metrics of the history store, registered on an injected registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class StoreMetrics:
    records: Counter
    rows: Counter
    bad_records: Counter
    batch_seconds: Histogram
    lag: Gauge
    database_up: Gauge
    active: Gauge
    partitions_dropped: Counter
    digests: Counter

    @classmethod
    def build(cls, registry: CollectorRegistry) -> StoreMetrics:
        return cls(
            # Kafka records read and committed to PostgreSQL, by topic (unprefixed name).
            records=Counter("ecoute_store_records", "Records stored, by topic", ["topic"], registry=registry),
            # Rows written, by table (mentions: new ones only, a replayed mention is not written twice).
            rows=Counter("ecoute_store_rows_written", "Rows written, by table", ["table"], registry=registry),
            # Records that could not be kept (invalid JSON or schema), logged with topic/partition/offset.
            bad_records=Counter(
                "ecoute_store_bad_records", "Records skipped as invalid, by topic", ["topic"], registry=registry
            ),
            # Time to write one batch and its offsets (one transaction).
            batch_seconds=Histogram(
                "ecoute_store_batch_seconds",
                "Seconds per stored batch (one transaction)",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                registry=registry,
            ),
            # Records of each topic not stored yet (last stable offset minus the store's position).
            lag=Gauge("ecoute_store_lag", "Records not stored yet, by topic", ["topic"], registry=registry),
            # 1 while the database answers, 0 while the store waits for it.
            database_up=Gauge("ecoute_store_database_up", "1 when PostgreSQL is reachable", registry=registry),
            # 1 on the instance that holds the writer's lock (the others stand by).
            active=Gauge("ecoute_store_active", "1 when this instance is the one writing", registry=registry),
            partitions_dropped=Counter(
                "ecoute_store_partitions_dropped", "Monthly partitions dropped by retention", registry=registry
            ),
            # Digest delivery attempts by channel (webhook | email) and outcome (delivered | retry: failed, tried
            # again later | failed: given up or refused for good).
            digests=Counter(
                "ecoute_store_digests",
                "Digest delivery attempts, by channel and outcome",
                ["channel", "outcome"],
                registry=registry,
            ),
        )
