"""The contract every Écoute service shares: message models, JSON Schemas, config, topics."""

from schemas.config import ConfigError, EcouteConfig, WebhookConfig, load_config, parse_duration
from schemas.models import (
    AccountMetric,
    Alert,
    AlertAck,
    ContentItem,
    DeliveryStatus,
    Kpi,
    KpiCounters,
    KpiPartial,
    Mention,
    MentionHandled,
    ScoredMention,
    Sentiment,
    WebhookDelivery,
    describe_error,
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
    "AlertAck",
    "CommonSettings",
    "ConfigError",
    "ContentItem",
    "DeliveryStatus",
    "EcouteConfig",
    "Kpi",
    "KpiCounters",
    "KpiPartial",
    "Mention",
    "MentionHandled",
    "ScoredMention",
    "Sentiment",
    "Topics",
    "WebhookConfig",
    "WebhookDelivery",
    "describe_error",
    "dump",
    "ensure_topics",
    "load",
    "load_config",
    "parse_duration",
    "to_dict",
    "utc_now",
]
