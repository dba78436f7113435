"""Écoute ingest: mentions in over HTTP, from replayed files and simulated streams; mentions.raw out."""

from schemas import AccountMetric
from services.ingest.app import create_app
from services.ingest.cli import main
from services.ingest.metrics import IngestMetrics, build_metrics
from services.ingest.producer import IngestProducer, KafkaUnavailable
from services.ingest.replay import BadLine, ReplayResult, parse_replay_lines, replay_file
from services.ingest.settings import IngestSettings, build_settings
from services.ingest.simulate import (
    SentimentShift,
    SimulatedMention,
    SimulateOptions,
    Spike,
    generate_mentions,
    run_simulation,
)
from services.ingest.validation import FieldError, Refusal, parse_body, validate_mentions

__all__ = [
    "AccountMetric",
    "BadLine",
    "FieldError",
    "IngestMetrics",
    "IngestProducer",
    "IngestSettings",
    "KafkaUnavailable",
    "Refusal",
    "ReplayResult",
    "SentimentShift",
    "SimulateOptions",
    "SimulatedMention",
    "Spike",
    "build_metrics",
    "build_settings",
    "create_app",
    "generate_mentions",
    "main",
    "parse_body",
    "parse_replay_lines",
    "replay_file",
    "run_simulation",
    "validate_mentions",
]
