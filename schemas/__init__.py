"""The contract every Écoute service shares: message models, JSON Schemas, config, topics."""

from schemas.config import ConfigError, EcouteConfig, load_config, parse_duration
from schemas.models import (
    AccountMetric,
    Alert,
    Kpi,
    KpiCounters,
    KpiPartial,
    Mention,
    ScoredMention,
    Sentiment,
    dump,
    load,
    to_dict,
    utc_now,
)
from schemas.settings import CommonSettings
from schemas.topics import Topics, ensure_topics

__all__ = [
    "AccountMetric",
    "Alert",
    "CommonSettings",
    "ConfigError",
    "EcouteConfig",
    "Kpi",
    "KpiCounters",
    "KpiPartial",
    "Mention",
    "ScoredMention",
    "Sentiment",
    "Topics",
    "dump",
    "ensure_topics",
    "load",
    "load_config",
    "parse_duration",
    "to_dict",
    "utc_now",
]
