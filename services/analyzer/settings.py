"""Analyzer settings (environment, prefix ECOUTE_)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from schemas import CommonSettings


class AnalyzerSettings(CommonSettings):
    # Faust application id: the consumer group and the prefix of its changelog topics.
    analyzer_app_id: str = "ecoute-analyzer"
    analyzer_metrics_host: str = "127.0.0.1"
    analyzer_metrics_port: int = Field(8002, ge=0, le=65535)
    # A stage handles up to this many records at once, or what arrived within batch_within seconds.
    analyzer_batch_size: int = Field(1000, ge=1, le=100_000)
    analyzer_batch_within: float = Field(0.2, gt=0, le=10)
    # Stage 1 commits each input partition's outputs and offsets (one transaction) this often, and
    # combines the kpi-partials over it: stage 2's input follows brands × minutes, not the mention rate.
    analyzer_commit_interval: float = Field(0.25, gt=0, le=30)
    # memory:// rebuilds tables from their changelog topics at start; rocksdb:// keeps them on disk.
    analyzer_store: Literal["memory://", "rocksdb://"] = "memory://"
    analyzer_data_dir: Path = Path("data/analyzer")
    # How long the group waits for a silent worker before handing its partitions to the others: a
    # worker killed without a goodbye stalls its partitions this long.
    analyzer_session_timeout: float = Field(30.0, ge=6, le=300)
    # Stage 1's guarantee: exactly-once with Kafka transactions, or at-least-once; "auto" asks the broker.
    analyzer_guarantee: Literal["auto", "exactly_once", "at_least_once"] = "auto"
    # An open stage-1 transaction of a crashed worker blocks read_committed readers at most this long.
    analyzer_transaction_timeout: float = Field(15.0, ge=1, le=900)
    # How long a mention id is remembered for dedupe (retention of the seen-ids topic).
    analyzer_dedupe_retention: float = Field(7 * 86400.0, ge=3600)


def build_settings(**overrides: Any) -> AnalyzerSettings:
    return AnalyzerSettings(**overrides)
