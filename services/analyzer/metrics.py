"""Prometheus metrics of the analyzer, registered on an injected registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class AnalyzerMetrics:
    processed: Counter
    duplicates: Counter
    dlq: Counter
    scoring_seconds: Histogram
    consumer_lag: Gauge
    brand_mentions: Counter
    partials: Counter
    alerts_fired: Counter


def build_metrics(registry: CollectorRegistry) -> AnalyzerMetrics:
    return AnalyzerMetrics(
        # Records a stage finished with (stage1: mentions.raw records, stage2: kpi.partials records).
        processed=Counter(
            "ecoute_analyzer_mentions_processed", "Records processed, by stage", ["stage"], registry=registry
        ),
        # Mentions dropped because their id was already counted.
        duplicates=Counter("ecoute_analyzer_duplicates", "Duplicate mention ids dropped", registry=registry),
        # Poison records sent to the dead-letter topic, by source topic and reason class.
        dlq=Counter(
            "ecoute_analyzer_dlq", "Records sent to the dead-letter topic", ["topic", "reason"], registry=registry
        ),
        # Time spent in VADER per scored batch, per mention.
        scoring_seconds=Histogram(
            "ecoute_analyzer_scoring_seconds",
            "Tone scoring time per mention",
            buckets=(0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
            registry=registry,
        ),
        # Highwater minus position, per assigned input partition.
        consumer_lag=Gauge(
            "ecoute_analyzer_consumer_lag",
            "Records behind the end of the input",
            ["topic", "partition"],
            registry=registry,
        ),
        # Brand mentions scored, by tone label: the volume and sentiment per brand in Grafana.
        brand_mentions=Counter(
            "ecoute_analyzer_brand_mentions", "Scored brand mentions", ["brand", "sentiment"], registry=registry
        ),
        # kpi-partials sent by stage 1 (out), applied by stage 2 (in) and skipped as replays (replayed).
        partials=Counter("ecoute_analyzer_partials", "KPI partials", ["direction"], registry=registry),
        # Alerts emitted, by brand and rule.
        alerts_fired=Counter("ecoute_alerts_fired", "Alerts emitted", ["brand", "kind"], registry=registry),
    )
