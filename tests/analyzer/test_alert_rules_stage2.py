"""The alert rules inside the two stages, as plain Python: mentions go through stage 1 (real tone
scoring, brand matching, flags for the per-mention rules), its partials through the wire format into
stage 2, and the alerts that come out are checked as alert/1 records with their evidence."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas import Alert, EcouteConfig, load
from services.analyzer.alerts import alert_id
from services.analyzer.pipeline import RawRecord, Stage1, Stage2, new_brand_state, parse_partial

CONFIG = EcouteConfig.model_validate(
    {
        "brands": {
            "acme": {"query": "acme"},
            "globex": {
                "query": "globex",
                "alerts": {"keywords": {"enabled": False}, "negative_surge": {"enabled": False}},
            },
        },
        "topics": {"pricing": ["price", "expensive"], "support": ["support"]},
        "alerts": {
            "volume_spike": {"window": "5m", "baseline": "2h", "min_mentions": 20, "warmup": "30m", "cooldown": "30m"},
            "volume_drop": {"window": "10m", "baseline": "2h", "min_baseline": 20, "warmup": "1h", "cooldown": "1h"},
            "negative_surge": {"window": "5m", "threshold": 0.5, "min_negative": 5, "warmup": "30m"},
            "sentiment_drop": {"window": "5m", "delta": 0.3, "min_mentions": 5, "warmup": "30m"},
            "keywords": {"terms": ["boycott", "lawsuit", "data breach"], "cooldown": "30m"},
            "influencer": {"min_followers": 10000},
        },
    }
)
T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)
POSITIVE = "I love {b}, great support and a fair price!"
NEGATIVE = "{b} support is terrible, I hate it, awful and expensive"
NEUTRAL = "saw a {b} ad on the bus"


class Pipeline:
    """Stage 1 then stage 2 over one input partition, with per-brand state and buckets like the tables."""

    def __init__(self, config: EcouteConfig = CONFIG) -> None:
        self.stage1 = Stage1(config)
        self.stage2 = Stage2(config)
        self.states: dict[str, dict[str, Any]] = {}
        self.buckets: dict[str, Any] = {}
        self.offset = 0
        self.counter = 0
        self.last_partials: list[dict[str, Any]] = []

    def mention(self, template: str, at: datetime, brand: str = "acme", **fields: Any) -> dict[str, Any]:
        self.counter += 1
        return {
            "id": f"t:{self.counter}",
            "source": "reddit",
            "url": f"https://example.com/{brand}/{self.counter}",
            "published_at": at.isoformat(),
            "author": {"id": f"author-{self.counter % 9}", "followers": 50},
            "text": template.format(b=brand),
            **fields,
        }

    def feed(self, mentions: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
        records = [RawRecord(0, self.offset + i, None, orjson.dumps(m)) for i, m in enumerate(mentions)]
        self.offset += len(records)
        result = self.stage1.process(records, lambda _: False)
        partials = [parse_partial(orjson.dumps(p)) for p in result.partials]
        self.last_partials = partials
        return self.apply(partials, now)

    def apply(self, partials: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        by_brand: dict[str, list[dict[str, Any]]] = {}
        for partial in partials:
            by_brand.setdefault(partial["brand"], []).append(partial)
        for brand, items in by_brand.items():
            state = self.states.setdefault(brand, new_brand_state())
            alerts.extend(self.stage2.apply(brand, items, state, self.buckets, now=now).alerts)
        for alert in alerts:
            load(Alert, orjson.dumps(alert))  # every alert is a valid alert/1
        return alerts

    def baseline(self, minutes: int, per_minute: int = 2, template: str = POSITIVE, brand: str = "acme") -> None:
        """`minutes` quiet minutes before T0, one stage-1 batch a minute; no alert may fire."""
        for minute in range(minutes, 0, -1):
            at = T0 - timedelta(minutes=minute)
            batch = [self.mention(template, at + timedelta(seconds=i), brand) for i in range(per_minute)]
            assert self.feed(batch, now=at + timedelta(seconds=59)) == []


def kinds(alerts: list[dict[str, Any]]) -> list[str]:
    return [a["kind"] for a in alerts]


def test_negative_surge_with_evidence() -> None:
    pipeline = Pipeline()
    pipeline.baseline(40)
    burst = [pipeline.mention(NEGATIVE, T0 + timedelta(seconds=i)) for i in range(9)]
    burst += [pipeline.mention(POSITIVE, T0 + timedelta(seconds=30))]
    alerts = pipeline.feed(burst, now=T0 + timedelta(seconds=40))
    surge = next(a for a in alerts if a["kind"] == "negative_surge")
    start = int((T0 - timedelta(minutes=4)).timestamp())
    assert surge["id"] == alert_id("acme", "negative_surge", start)
    assert surge["window"] == {"start": T0 - timedelta(minutes=4), "end": T0 + timedelta(minutes=1)}
    # 9 negative of 18 scored in the window (4 quiet minutes of 2 positive, then 10), usually 0 %.
    assert (surge["observed"], surge["baseline"], surge["threshold"]) == (0.5, 0.0, 0.5)
    assert surge["severity"] == "warning"
    assert "50% of the last 5 min's mentions are negative (9 of 18)" in surge["message"]
    evidence = surge["evidence"]
    negative_urls = {m["url"] for m in burst[:9]}
    assert evidence["sample_mentions"] and set(evidence["sample_mentions"]) <= negative_urls
    assert evidence["topics"][:2] == ["pricing", "support"]
    assert evidence["authors"]
    # The average tone fell too (from ≈ +0.9 to about 0).
    drop = next(a for a in alerts if a["kind"] == "sentiment_drop")
    assert drop["observed"] <= drop["threshold"] == round(drop["baseline"] - 0.3, 3)
    assert set(drop["evidence"]["sample_mentions"]) <= negative_urls
    # Cooldown: more negative mentions the next minute raise nothing new.
    more = [pipeline.mention(NEGATIVE, T0 + timedelta(minutes=1, seconds=i)) for i in range(10)]
    assert [
        a for a in pipeline.feed(more, now=T0 + timedelta(minutes=1, seconds=30)) if a["kind"] in kinds(alerts)
    ] == []


def test_no_surge_during_warmup_or_below_min_count() -> None:
    pipeline = Pipeline()
    pipeline.baseline(20)  # less than the 30 min warm-up
    burst = [pipeline.mention(NEGATIVE, T0 + timedelta(seconds=i)) for i in range(10)]
    assert pipeline.feed(burst, now=T0 + timedelta(seconds=30)) == []

    pipeline = Pipeline()
    pipeline.baseline(40)
    few = [pipeline.mention(NEGATIVE, T0 + timedelta(seconds=i)) for i in range(4)]
    assert "negative_surge" not in kinds(pipeline.feed(few, now=T0 + timedelta(seconds=30)))


def test_influencer_and_keyword_alerts_from_stage1_flags() -> None:
    pipeline = Pipeline()
    star = pipeline.mention(
        "acme announces a recall? I call for a BOYCOTT of acme",
        T0,
        author={"handle": "@star", "id": "u-star", "followers": 250_000},
    )
    fan = pipeline.mention("acme lawsuit news, and a boycott", T0 + timedelta(seconds=5))
    small = pipeline.mention("acme is nice", T0 + timedelta(seconds=6), author={"id": "u-small", "followers": 9_999})
    both = pipeline.mention("globex and acme: boycott!", T0 + timedelta(seconds=7), author={"followers": 20_000})
    alerts = pipeline.feed([star, fan, small, both], now=T0 + timedelta(seconds=30))
    by_key = {(a["brand"], a["kind"], tuple(a["evidence"]["terms"])): a for a in alerts}
    minute = int(T0.timestamp())

    star_alert = next(a for a in alerts if a["kind"] == "influencer" and a["evidence"]["authors"] == ["@star"])
    assert star_alert["id"] == alert_id("acme", "influencer", star["id"])
    assert (star_alert["observed"], star_alert["threshold"]) == (250_000, 10_000)
    assert star_alert["evidence"]["sample_mentions"] == [star["url"]]
    assert star_alert["evidence"]["terms"] == ["boycott"]
    assert star_alert["severity"] == "critical"  # negative, from 10× the threshold's followers
    assert "@star (250,000 followers)" in star_alert["message"]
    influencer_brands = sorted(a["brand"] for a in alerts if a["kind"] == "influencer")
    assert influencer_brands == ["acme", "acme", "globex"]  # star, `both` for each brand; never `small`

    boycott = by_key[("acme", "keyword", ("boycott", "lawsuit"))]
    assert boycott["id"] == alert_id("acme", "keyword", f"boycott|{minute}")
    assert boycott["observed"] == 3  # star, fan, both
    assert set(boycott["evidence"]["sample_mentions"]) == {star["url"], fan["url"], both["url"]}
    assert boycott["evidence"]["authors"][0] == "@star"  # most followed first
    assert boycott["severity"] == "critical"  # an influencer wrote one
    assert ("acme", "keyword", ("lawsuit", "boycott")) in by_key
    # globex turned its keyword rule off.
    assert not [a for a in alerts if a["brand"] == "globex" and a["kind"] == "keyword"]

    # The same partials again (a replay): nothing. A new boycott mention within the cooldown: nothing.
    assert pipeline.apply(copy.deepcopy(pipeline.last_partials), now=T0 + timedelta(seconds=30)) == []
    again = pipeline.mention("acme boycott, day two", T0 + timedelta(minutes=10))
    assert pipeline.feed([again], now=T0 + timedelta(minutes=10)) == []
    later = pipeline.mention("acme boycott, still", T0 + timedelta(minutes=31))
    [alert] = pipeline.feed([later], now=T0 + timedelta(minutes=31))
    assert (alert["kind"], alert["evidence"]["terms"], alert["severity"]) == ("keyword", ["boycott"], "warning")


def test_old_mentions_found_late_raise_no_per_mention_alert() -> None:
    pipeline = Pipeline()
    old = pipeline.mention("acme boycott", T0 - timedelta(days=2), author={"followers": 50_000})
    assert pipeline.feed([old], now=T0) == []


def test_spike_inside_a_catch_up_batch() -> None:
    pipeline = Pipeline()
    pipeline.baseline(60, per_minute=1, template=NEUTRAL)
    # Stage 1 was down for 40 minutes: one batch brings them all, the spike 30 to 25 minutes ago.
    batch = []
    for minute in range(40):
        at = T0 + timedelta(minutes=minute)
        n = 12 if 10 <= minute < 15 else 1
        batch += [pipeline.mention(NEUTRAL, at + timedelta(seconds=i)) for i in range(n)]
    alerts = pipeline.feed(batch, now=T0 + timedelta(minutes=40))
    [spike] = [a for a in alerts if a["kind"] == "volume_spike"]
    assert spike["window"]["start"] == T0 + timedelta(minutes=10)
    assert spike["observed"] == 60
    assert spike["id"] == alert_id("acme", "volume_spike", int((T0 + timedelta(minutes=10)).timestamp()))


def test_volume_drop_is_found_on_settled_minutes_only() -> None:
    config = CONFIG.model_copy(
        update={
            "alerts": CONFIG.alerts.model_copy(
                update={
                    "volume_drop": CONFIG.alerts.volume_drop.model_copy(update={"window": 60.0, "min_baseline": 3.0})
                }
            )
        }
    )
    pipeline = Pipeline(config)
    pipeline.baseline(90, per_minute=4, template=NEUTRAL)
    # A batch 5 s into a minute holds 1 mention of it: the minute is still filling up, no drop.
    assert pipeline.feed([pipeline.mention(NEUTRAL, T0)], now=T0 + timedelta(seconds=5)) == []
    # Settled (and nothing more came): 1 against the usual 4 per minute is a drop.
    later = T0 + timedelta(minutes=1, seconds=20)
    [drop] = pipeline.feed([pipeline.mention(NEUTRAL, later)], now=later)
    assert drop["kind"] == "volume_drop"
    assert drop["window"] == {"start": T0, "end": T0 + timedelta(minutes=1)}
    assert (drop["observed"], drop["baseline"], drop["threshold"], drop["severity"]) == (1, 4.0, 2.0, "warning")


def test_catch_up_batch_ending_mid_minute_is_no_drop() -> None:
    config = CONFIG.model_copy(
        update={
            "alerts": CONFIG.alerts.model_copy(
                update={
                    "volume_drop": CONFIG.alerts.volume_drop.model_copy(update={"window": 60.0, "min_baseline": 3.0})
                }
            )
        }
    )
    pipeline = Pipeline(config)
    pipeline.baseline(90, per_minute=4, template=NEUTRAL)
    wall = T0 + timedelta(hours=1)  # stage 1 is catching up: every minute below has ended long ago
    first = [pipeline.mention(NEUTRAL, T0 + timedelta(minutes=m, seconds=i)) for m in range(4) for i in range(4)]
    first.append(pipeline.mention(NEUTRAL, T0 + timedelta(minutes=4)))  # minute 4 goes on in the next batch
    assert pipeline.feed(first, now=wall) == []
    rest = [pipeline.mention(NEUTRAL, T0 + timedelta(minutes=4, seconds=10 + i)) for i in range(3)]
    rest.append(pipeline.mention(NEUTRAL, T0 + timedelta(minutes=5)))
    assert pipeline.feed(rest, now=wall) == []
    assert pipeline.states["acme"]["drop_checked"] == int((T0 + timedelta(minutes=4)).timestamp())


def test_volume_drop_with_one_batch_a_minute() -> None:
    pipeline = Pipeline()
    pipeline.baseline(90, per_minute=4, template=NEUTRAL)
    # Then one mention a minute, each in a batch 5 s into its minute: usually 40 per 10 minutes.
    alerts: list[dict[str, Any]] = []
    for minute in range(10):
        at = T0 + timedelta(minutes=minute)
        alerts += pipeline.feed([pipeline.mention(NEUTRAL, at)], now=at + timedelta(seconds=5))
    # The first settled window under half the usual: minutes −3 to 6 (3 · 4 + 7 = 19 < 20).
    [drop] = [a for a in alerts if a["kind"] == "volume_drop"]
    assert drop["window"] == {"start": T0 - timedelta(minutes=3), "end": T0 + timedelta(minutes=7)}
    assert (drop["observed"], drop["baseline"], drop["threshold"]) == (19, 40.0, 20.0)
    assert drop["severity"] == "warning"
    assert "only 19 mentions in the last 10 min, usually 40" in drop["message"]
    assert drop["id"] == alert_id("acme", "volume_drop", int((T0 - timedelta(minutes=3)).timestamp()))


def test_state_with_tone_survives_a_json_round_trip() -> None:
    pipeline = Pipeline()
    pipeline.baseline(40)
    pipeline.states = orjson.loads(orjson.dumps(pipeline.states))
    pipeline.buckets = orjson.loads(orjson.dumps(pipeline.buckets))
    state = pipeline.states["acme"]
    assert len(state["tone"]) == 40
    assert all(entry[0] == 2 and entry[1] == 0 and entry[2] > 1 for entry in state["tone"].values())
    burst = [pipeline.mention(NEGATIVE, T0 + timedelta(seconds=i)) for i in range(8)]
    assert "negative_surge" in kinds(pipeline.feed(burst, now=T0 + timedelta(seconds=40)))


def test_old_brand_state_without_tone_still_works() -> None:
    pipeline = Pipeline()
    pipeline.baseline(3)
    state = pipeline.states["acme"]
    del state["tone"]
    assert pipeline.feed([pipeline.mention(NEGATIVE, T0)], now=T0 + timedelta(seconds=5)) == []
    assert state["tone"]
