"""The shared contract: message models against their committed JSON Schemas, refusal of bad
messages naming the field, UTC timestamps, the YAML config's errors, and the topics' names and configs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import BaseModel, ValidationError

import schemas
from schemas import (
    Alert,
    AlertAck,
    ConfigError,
    ContentItem,
    EcouteConfig,
    Kpi,
    KpiPartial,
    Mention,
    MentionHandled,
    ScoredMention,
    Topics,
    WebhookConfig,
    WebhookDelivery,
    dump,
    load,
    load_config,
)
from schemas.config import parse_duration
from schemas.export import rendered, schema_of
from schemas.models import MESSAGE_MODELS

SCHEMA_DIR = Path(schemas.__file__).resolve().parent
T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)

FULL_MENTION: dict[str, Any] = {
    "id": "reddit:t1_abc",
    "source": "reddit",
    "url": "https://www.reddit.com/r/phones/comments/abc",
    "site": "reddit.com/r/phones",
    "published_at": T0,
    "fetched_at": T0 + timedelta(seconds=5),
    "author": {
        "id": "t2_x",
        "handle": "alice",
        "name": "Alice",
        "followers": 1200,
        "url": "https://reddit.com/u/alice",
    },
    "title": "Acme phone?",
    "text": "I love my #acme phone 😍",
    "lang": "en",
    "thread_id": "t3_thread",
    "parent_id": "t1_parent",
    "engagement": {"likes": 3, "shares": 1, "comments": 2, "views": 90},
    "query": "acme",
}
COUNTERS: dict[str, Any] = {
    "mentions": 3,
    "positive": 1,
    "neutral": 1,
    "negative": 1,
    "unscored": 0,
    "sentiment_sum": 0.25,
    "engagement": {"likes": 4, "shares": 0, "comments": 1},
    "reach": 1300,
    "unique_authors": 2,
    "topics": {"pricing": 2},
    "sources": {"reddit": 3},
}


ALERT: dict[str, Any] = {
    "id": "abc123",
    "brand": "acme",
    "kind": "volume_spike",
    "severity": "critical",
    "window": {"start": T0, "end": T0 + timedelta(minutes=5)},
    "observed": 60,
    "baseline": 7.5,
    "threshold": 9.0,
    "message": "acme: 60 mentions in the last 5 min, 8.0\u00d7 the usual 7.5",
    "evidence": {
        "terms": ["recall"],
        "topics": ["pricing"],
        "authors": ["alice"],
        "sample_mentions": ["https://e.com/1"],
    },
    "created_at": T0,
}
DELIVERY: dict[str, Any] = {
    "id": "abc123|wh-3f1c2a9b0d4e",
    "alert_id": "abc123",
    "brand": "acme",
    "kind": "volume_spike",
    "webhook": "wh-3f1c2a9b0d4e",
    "target": "https://hooks.example/…",
    "format": "slack",
    "status": "pending",
    "alert_created_at": T0,
    "updated_at": T0,
}


def examples() -> list[tuple[str, BaseModel]]:
    sentiment = {"compound": 0.6369, "pos": 0.4, "neu": 0.6, "neg": 0.0, "label": "positive"}
    return [
        ("mention.v1", Mention.model_validate(FULL_MENTION)),
        ("mention.v1", Mention.model_validate({"id": "webhook:1", "text": "minimal"})),
        (
            "scored-mention.v1",
            ScoredMention.model_validate(
                {
                    **FULL_MENTION,
                    "brand": "acme",
                    "sentiment": sentiment,
                    "topics": ["praise"],
                    "matched": ["#acme"],
                    "reach": 1200,
                    "scored_at": T0,
                }
            ),
        ),
        (
            "scored-mention.v1",
            ScoredMention.model_validate(
                {"id": "x:1", "text": "acme", "brand": "acme", "sentiment": {**sentiment, "label": "unscored"}}
            ),
        ),
        (
            "kpi-partial.v1",
            KpiPartial.model_validate(
                {
                    **COUNTERS,
                    "brand": "acme",
                    "bucket": T0,
                    "authors": ["t2_x", "bob"],
                    "samples": ["https://e.com/1"],
                    "origin": {"partition": 2, "first_offset": 10, "last_offset": 20},
                }
            ),
        ),
        (
            "kpi.v1",
            Kpi.model_validate(
                {
                    **COUNTERS,
                    "brand": "acme",
                    "window": "1h",
                    "start": T0,
                    "end": T0 + timedelta(hours=1),
                    "updated_at": T0,
                }
            ),
        ),
        ("alert.v1", Alert.model_validate(ALERT)),
        ("alert-ack.v1", AlertAck.model_validate({"alert_id": "abc123", "brand": "acme", "by": "jane", "at": T0})),
        ("alert-ack.v1", AlertAck.model_validate({"alert_id": "abc123", "brand": "acme"})),
        (
            "mention-handled.v1",
            MentionHandled.model_validate(
                {
                    "mention_id": "reddit:t1_abc",
                    "brand": "acme",
                    "by": "jane@acme.example",
                    "note": "answered in DM",
                    "at": T0 + timedelta(minutes=21),
                    "published_at": T0,
                }
            ),
        ),
        ("mention-handled.v1", MentionHandled.model_validate({"mention_id": "x:1", "brand": "acme"})),
        (
            "webhook-delivery.v1",
            WebhookDelivery.model_validate(
                {**DELIVERY, "attempts": 2, "last_status_code": 503, "last_error": "HTTP 503", "alert": ALERT}
            ),
        ),
        (
            "webhook-delivery.v1",
            WebhookDelivery.model_validate(
                {**DELIVERY, "status": "delivered", "attempts": 1, "delivered_at": T0, "partition": 3}
            ),
        ),
        (
            "content-item.v1",
            ContentItem.model_validate(
                {
                    "brand": "acme",
                    "platform": "mastodon",
                    "id": "mastodon:mastodon.example:110000000000000001",
                    "channel": "acme@mastodon.example",
                    "url": "https://mastodon.example/@acme/110000000000000001",
                    "published_at": T0,
                    "text": "Our new X2 is out",
                    "comments": 4,
                    "reposts": 7,
                    "likes": 31,
                    "followers": 2500,
                    "at": T0 + timedelta(hours=2),
                }
            ),
        ),
        (
            "content-item.v1",
            ContentItem.model_validate(
                {
                    "brand": "acme",
                    "platform": "rss",
                    "id": "rss:ab12",
                    "channel": "https://b.example/feed",
                    "published_at": T0,
                }
            ),
        ),
    ]


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


# --- models against their JSON Schemas -------------------------------------------------------------


@pytest.mark.parametrize(("name", "message"), examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_dump_validates_against_the_json_schema(name: str, message: BaseModel) -> None:
    raw = dump(message)
    document = orjson.loads(raw)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator(name).iter_errors(document)]
    assert errors == []
    assert document["schema"] == name.replace(".v", "/")
    # And it reads back as the same message.
    assert load(type(message), raw) == message


def test_schema_requires_what_the_model_requires() -> None:
    required = {name: json.loads((SCHEMA_DIR / f"{name}.json").read_text()).get("required") for name in MESSAGE_MODELS}
    assert required == {
        "mention.v1": ["id", "text"],
        "scored-mention.v1": ["id", "text", "brand", "sentiment"],
        "kpi-partial.v1": ["brand", "bucket", "origin"],
        "kpi.v1": ["brand", "window", "start", "end"],
        "alert.v1": ["id", "brand", "kind", "severity", "window", "observed", "baseline", "threshold", "message"],
        "account-metric.v1": ["brand", "platform", "metric", "value"],
        "alert-ack.v1": ["alert_id", "brand"],
        "mention-handled.v1": ["mention_id", "brand"],
        "webhook-delivery.v1": [
            "id",
            "alert_id",
            "brand",
            "kind",
            "webhook",
            "target",
            "format",
            "status",
            "alert_created_at",
            "updated_at",
        ],
        "content-item.v1": ["brand", "platform", "id", "channel", "published_at"],
        "outreach.v1": ["kind", "state", "request_id", "brand", "platform", "digest"],
    }
    # The smallest message a webhook may post is valid for both the schema and the model.
    minimal = {"id": "webhook:1", "text": "hello"}
    assert list(validator("mention.v1").iter_errors(minimal)) == []
    assert load(Mention, orjson.dumps(minimal)).source == "webhook"


def test_every_model_has_a_committed_schema_file_and_nothing_else() -> None:
    files = {p.name.removesuffix(".json") for p in SCHEMA_DIR.glob("*.json")}
    assert (
        files
        == set(MESSAGE_MODELS)
        == {
            "mention.v1",
            "scored-mention.v1",
            "kpi-partial.v1",
            "kpi.v1",
            "alert.v1",
            "account-metric.v1",
            "alert-ack.v1",
            "mention-handled.v1",
            "webhook-delivery.v1",
            "content-item.v1",
            "outreach.v1",
        }
    )


@pytest.mark.parametrize("name", sorted(MESSAGE_MODELS))
def test_committed_schema_files_are_up_to_date(name: str) -> None:
    committed = (SCHEMA_DIR / f"{name}.json").read_text()
    assert committed == rendered(name), f"schemas/{name}.json is stale: run `python -m schemas.export`"
    schema = schema_of(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{name}.json")


def test_datetimes_are_rfc3339_utc_in_json() -> None:
    document = orjson.loads(dump(Mention.model_validate(FULL_MENTION)))
    assert document["published_at"] == "2024-05-06T10:00:00+00:00"
    assert datetime.fromisoformat(document["fetched_at"]) == T0 + timedelta(seconds=5)


# --- refusing bad messages -------------------------------------------------------------------------


def with_changes(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(orjson.dumps(base))
    for path, value in changes.items():
        target = out
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is DROP:
            del target[leaf]
        else:
            target[leaf] = value
    return out


DROP = object()


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"id": DROP}, ("id",)),
        ({"id": ""}, ("id",)),
        ({"text": DROP}, ("text",)),
        ({"engagement__likes": "3"}, ("engagement", "likes")),
        ({"engagement__likes": 1.5}, ("engagement", "likes")),
        ({"engagement__shares": -1}, ("engagement", "shares")),
        ({"lang": "english"}, ("lang",)),
        ({"lang": "EN"}, ("lang",)),
        ({"author__followers": -5}, ("author", "followers")),
        ({"source": "myspace"}, ("source",)),
        ({"published_at": "not a date"}, ("published_at",)),
        ({"schema": "mention/2"}, ("schema",)),
    ],
)
def test_invalid_mentions_are_refused_naming_the_field(changes: dict[str, Any], loc: tuple[str, ...]) -> None:
    document = with_changes(FULL_MENTION, **changes)
    raw = orjson.dumps(document)
    with pytest.raises(ValidationError) as info:
        load(Mention, raw)
    assert [e["loc"] for e in info.value.errors()] == [loc]
    assert ".".join(loc) in str(info.value)
    # The JSON Schema refuses it too, so outside producers can check messages before sending
    # (except bad timestamps: jsonschema checks "date-time" only with rfc3339-validator installed).
    if loc != ("published_at",):
        assert list(validator("mention.v1").iter_errors(document))


def test_invalid_json_is_refused() -> None:
    with pytest.raises(ValidationError, match="Invalid JSON"):
        load(Mention, b"{nope")


@pytest.mark.parametrize(
    ("model", "document", "loc"),
    [
        (KpiPartial, {"brand": "acme", "bucket": "2024-05-06T10:00:00Z"}, ("origin",)),
        (
            Kpi,
            {"brand": "acme", "window": "5m", "start": "2024-05-06T10:00:00Z", "end": "2024-05-06T10:05:00Z"},
            ("window",),
        ),
        (
            ScoredMention,
            {
                "id": "x",
                "text": "t",
                "brand": "acme",
                "sentiment": {"compound": 0, "pos": 0, "neu": 1, "neg": 0, "label": "great"},
            },
            ("sentiment", "label"),
        ),
        (AlertAck, {"brand": "acme"}, ("alert_id",)),
        (AlertAck, {"alert_id": "a", "brand": "acme", "by": "x" * 129}, ("by",)),
        (MentionHandled, {"mention_id": "m", "brand": "acme", "note": 5}, ("note",)),
        (MentionHandled, {"schema": "alert-ack/1", "mention_id": "m", "brand": "acme"}, ("schema",)),
        (WebhookDelivery, {**DELIVERY, "status": "lost"}, ("status",)),
        (WebhookDelivery, {**DELIVERY, "format": "xml"}, ("format",)),
        (WebhookDelivery, {**DELIVERY, "attempts": -1}, ("attempts",)),
    ],
)
def test_other_models_name_the_field(model: type[BaseModel], document: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        load(model, orjson.dumps(document))
    assert [e["loc"] for e in info.value.errors()] == [loc]


def test_unknown_fields_are_ignored() -> None:
    message = load(Mention, orjson.dumps({**with_changes(FULL_MENTION), "extra_field": 1}))
    assert "extra_field" not in orjson.loads(dump(message))


# --- UTC -------------------------------------------------------------------------------------------


def test_naive_datetimes_become_utc() -> None:
    message = Mention.model_validate({"id": "x", "text": "t", "published_at": datetime(2024, 5, 6, 10, 0)})
    assert message.published_at == T0
    assert message.published_at.tzinfo is UTC
    from_json = load(Mention, b'{"id": "x", "text": "t", "published_at": "2024-05-06T10:00:00"}')
    assert from_json.published_at == T0
    assert from_json.published_at.utcoffset() == timedelta(0)


def test_aware_datetimes_are_converted_to_utc() -> None:
    paris = timezone(timedelta(hours=2))
    message = Mention.model_validate(
        {"id": "x", "text": "t", "published_at": datetime(2024, 5, 6, 12, 0, tzinfo=paris)}
    )
    assert message.published_at == T0
    assert message.published_at.utcoffset() == timedelta(0)
    assert orjson.loads(dump(message))["published_at"] == "2024-05-06T10:00:00+00:00"
    from_json = load(Mention, b'{"id": "x", "text": "t", "published_at": "2024-05-06T05:00:00-05:00"}')
    assert orjson.loads(dump(from_json))["published_at"] == "2024-05-06T10:00:00+00:00"


def test_defaults_are_utc_now() -> None:
    before = datetime.now(UTC)
    message = Mention.model_validate({"id": "x", "text": "t"})
    assert before <= message.fetched_at <= datetime.now(UTC)
    assert message.published_at.tzinfo is not None


# --- config ----------------------------------------------------------------------------------------

DESIGN_YAML = """
brands:
  acme:
    query: '(acme OR "#acme" OR @acme) AND NOT "acme corp layoffs"'
    competitors: [globex]
  globex:
    query: [globex, "@globex"]
topics:
  customer_service: [support, "customer service", "service client"]
  pricing: [price, expensive, cheap, prix]
sources:
  - {type: rss, url: "https://blog.example.com/feed", interval: 300}
  - {type: mastodon, instance: "https://mastodon.social", hashtags: [acme]}
fetch:
  allow_networks: ["127.0.0.0/8"]
api_keys:
  - {key: "k1", role: admin, brands: ["*"]}
  - {key: "k2", role: read, brands: [acme]}
alerts:
  volume_spike: {window: 5m, baseline: 24h, sigma: 3, min_mentions: 20, cooldown: 30m}
  keywords: {terms: [boycott, lawsuit, recall, "data breach"]}
  influencer: {min_followers: 10000}
webhooks:
  - {url: "https://hooks.example/x", format: slack, secret: "s", brands: [acme]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ecoute.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_design_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DESIGN_YAML))
    assert isinstance(config, EcouteConfig)
    assert set(config.brands) == {"acme", "globex"}
    assert config.brands["acme"].competitors == ["globex"]
    assert config.brands["globex"].query == ["globex", "@globex"]
    spike = config.alerts.volume_spike
    assert (spike.window, spike.baseline, spike.cooldown, spike.warmup) == (300.0, 86400.0, 1800.0, 1800.0)
    assert config.alerts.keywords.terms[-1] == "data breach"
    assert [s.type for s in config.sources] == ["rss", "mastodon"]
    assert config.api_keys[1].brands == ["acme"]
    assert config.webhooks == [
        WebhookConfig(url="https://hooks.example/x", format="slack", secret="s", brands=["acme"])
    ]


def test_webhook_defaults_and_helpers(tmp_path: Path) -> None:
    hook = load_config(write(tmp_path, "webhooks:\n  - {url: 'https://hooks.example/T0/B1/secret'}\n")).webhooks[0]
    assert (hook.format, hook.secret, hook.brands) == ("json", None, ["*"])
    assert hook.matches("acme") and hook.matches("anything")
    assert hook.target == "https://hooks.example/…"  # the path may be a secret (Slack's are): never shown
    # The id names the webhook in delivery records: stable across restarts, different per URL and format.
    assert hook.id == WebhookConfig(url=hook.url).id and hook.id.startswith("wh-") and len(hook.id) == 15
    assert hook.id != WebhookConfig(url=hook.url, format="slack").id
    assert hook.id != WebhookConfig(url="https://hooks.example/other").id
    scoped = WebhookConfig(url="http://hooks.example:8080/x", brands=["acme"])
    assert scoped.matches("acme") and not scoped.matches("globex")
    assert scoped.target == "http://hooks.example:8080/…"


@pytest.mark.parametrize(
    ("entry", "where", "problem"),
    [
        ("{url: 'ftp://hooks.example/'}", "webhooks.0.url", "only http and https"),
        ("{url: 'https:///path'}", "webhooks.0.url", "no host"),
        ("{url: 'https://user:pw@hooks.example/'}", "webhooks.0.url", "credentials"),
        ("{url: 42}", "webhooks.0.url", "string"),
        ("{url: 'https://hooks.example/', format: xml}", "webhooks.0.format", "'json' or 'slack'"),
        ("{url: 'https://hooks.example/', brands: []}", "webhooks.0.brands", "at least 1"),
        ("{url: 'https://hooks.example/', secrte: s}", "webhooks.0.secrte", "not permitted"),
        ("{format: slack}", "webhooks.0.url", "required"),
    ],
)
def test_bad_webhook_names_the_setting(tmp_path: Path, entry: str, where: str, problem: str) -> None:
    message = config_error(tmp_path, f"webhooks:\n  - {entry}\n")
    assert where in message
    assert problem in message


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.brands == {}
    assert config.alerts.volume_spike.min_mentions == 20


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_bad_duration_names_the_setting(tmp_path: Path) -> None:
    message = config_error(tmp_path, "alerts:\n  volume_spike: {window: 5 minutes}\n")
    assert "alerts.volume_spike.window" in message
    assert "5 minutes" in message


def test_zero_duration_is_refused(tmp_path: Path) -> None:
    assert "alerts.volume_spike.cooldown" in config_error(tmp_path, "alerts:\n  volume_spike: {cooldown: 0s}\n")


@pytest.mark.parametrize("name", ["Acme", "acme corp", "-acme", "ac/me", "a" * 65])
def test_bad_brand_name_names_the_setting(tmp_path: Path, name: str) -> None:
    message = config_error(tmp_path, f"brands:\n  '{name}': {{query: acme}}\n")
    assert "brands" in message
    assert repr(name) in message


def test_empty_brand_query_names_the_brand(tmp_path: Path) -> None:
    assert "brands.acme.query" in config_error(tmp_path, "brands:\n  acme: {query: '  '}\n")


def test_unknown_brand_setting_names_it(tmp_path: Path) -> None:
    assert "brands.acme.qeury" in config_error(tmp_path, "brands:\n  acme: {qeury: acme}\n")


def test_unknown_source_type_names_it(tmp_path: Path) -> None:
    assert "sources.0.type" in config_error(tmp_path, "sources:\n  - {type: myspace}\n")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="no such config file") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- acme\n- globex\n", "just a string\n", "42\n"])
def test_non_mapping_yaml(tmp_path: Path, text: str) -> None:
    assert "top level must be a mapping" in config_error(tmp_path, text)


def test_invalid_yaml(tmp_path: Path) -> None:
    assert "not valid YAML" in config_error(tmp_path, "brands: {acme: [\n")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300.0),
        ("24h", 86400.0),
        ("1d", 86400.0),
        ("30s", 30.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        (" 10 m ", 600.0),
        ("45", 45.0),
        (12, 12.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "m", "-5m", "5w", True, None, ""])
def test_parse_duration_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)


# --- topics ----------------------------------------------------------------------------------------


def test_topic_names_follow_the_prefix() -> None:
    topics = Topics("t-")
    assert topics.all() == [
        "t-mentions.raw",
        "t-mentions.scored",
        "t-kpi.partials",
        "t-kpi.snapshots",
        "t-alerts",
        "t-metrics.accounts",
        "t-mentions.dlq",
        "t-ingest.checkpoints",
        "t-alerts.actions",
        "t-webhooks.deliveries",
        "t-content.items",
    ]
    assert (Topics().alerts_actions, Topics().webhooks_deliveries) == ("alerts.actions", "webhooks.deliveries")


@pytest.mark.parametrize("prefix", ["", "test-1234-"])
def test_topic_configs(prefix: str) -> None:
    topics = Topics(prefix)
    assert topics.compacted == {
        topics.kpi_snapshots,
        topics.ingest_checkpoints,
        topics.metrics_accounts,
        topics.alerts_actions,
        topics.webhooks_deliveries,
        topics.content_items,
    }
    for name in topics.compacted - {topics.metrics_accounts, topics.content_items}:
        assert topics.configs(name) == {"cleanup.policy": "compact"}
    # Compacted, but 8 days of readings are never compacted away: the love KPI compares with 1 and 7 days ago.
    assert topics.configs(topics.metrics_accounts) == {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": str(8 * 24 * 3600 * 1000),
    }
    # The same for the readings of owned posts: a replica rebuilds each post's 24 h change from the topic.
    assert topics.configs(topics.content_items) == topics.configs(topics.metrics_accounts)
    for name in (topics.mentions_raw, topics.mentions_scored, topics.kpi_partials, topics.alerts):
        assert topics.configs(name) == {}
    # The DLQ holds dead letters as large as the analyzer may send (8 MiB), past the broker's 1 MiB default.
    assert topics.configs(topics.mentions_dlq) == {"max.message.bytes": str(8 * 1024 * 1024 + 64 * 1024)}
    # A name outside this prefix is none of ours; and a caller changing the returned dict changes nothing.
    assert Topics("other-").configs(topics.kpi_snapshots) == {}
    topics.configs(topics.kpi_snapshots).clear()
    assert topics.configs(topics.kpi_snapshots) == {"cleanup.policy": "compact"}
