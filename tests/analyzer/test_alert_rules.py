"""The alert rules as pure functions: volume drop, negative surge, sentiment drop, influencer and
keyword (fires / doesn't: warm-up, minimum counts, cooldown, flat baselines), episodes of a catch-up
batch, per-brand rule overrides in the config, and what stage 1 flags for the per-mention rules."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import EcouteConfig, KpiPartial, load
from schemas.config import (
    InfluencerRule,
    KeywordRule,
    NegativeSurgeRule,
    SentimentDropRule,
    VolumeDropRule,
    VolumeSpikeRule,
)
from services.analyzer import kpi
from services.analyzer.alerts import (
    MAX_INFLUENCERS,
    Finding,
    MentionFlags,
    Series,
    evaluate_window_rule,
    influencer_findings,
    keyword_findings,
    negative_surge,
    sentiment_drop,
    volume_drop,
    volume_spike,
)

FIRST = 1_714_989_600  # 2024-05-06T10:00:00Z
NOW = FIRST + 180 * 60  # three hours of history


# --- volume drop -----------------------------------------------------------------------------------

DROP = VolumeDropRule.model_validate(
    {"window": "15m", "baseline": "24h", "sigma": 3, "min_baseline": 20, "min_drop": 0.5, "warmup": "2h"}
)


def volume(pattern: list[int], last_window: list[int], first: int = FIRST, now: int = NOW) -> Series:
    """Per-minute counts repeating `pattern` from `first`, then `last_window` for the minutes ending at `now`."""
    counts = {m: pattern[i % len(pattern)] for i, m in enumerate(range(first, now + 60, 60))}
    for i, m in enumerate(range(now + 60 - 60 * len(last_window), now + 60, 60)):
        counts[m] = last_window[i]
    return Series.of(counts)


def test_drop_fires_below_mean_minus_sigma_and_half_the_mean() -> None:
    series = volume([4, 5, 6], [1] * 15)  # baseline blocks of 75, the window 15
    finding = volume_drop(series, FIRST, NOW, DROP, None)
    assert finding is not None
    assert (finding.window_start, finding.window_end) == (NOW - 14 * 60, NOW + 60)
    assert (finding.observed, finding.baseline, finding.threshold) == (15, 75.0, 37.5)
    assert finding.severity == "critical"  # 15 ≤ 20 % of 75


def test_drop_to_just_under_the_threshold_is_a_warning_at_it_nothing() -> None:
    # Flat baseline (std 0): only the min_drop floor holds, 37.5 for a mean of 75.
    just_under = volume_drop(volume([5], [2] * 15), FIRST, NOW, DROP, None)
    assert just_under is not None
    assert just_under.severity == "warning"
    assert (just_under.observed, just_under.threshold) == (30, 37.5)
    at_38 = volume([5], [3] * 8 + [2] * 7)  # 24 + 14 = 38
    assert volume_drop(at_38, FIRST, NOW, DROP, None) is None


def test_flat_baseline_small_dip_does_not_fire() -> None:
    # std 0 would make any dip "below mean − 3σ": the min_drop floor stops it.
    assert volume_drop(volume([5], [5] * 14 + [4]), FIRST, NOW, DROP, None) is None
    assert volume_drop(volume([5], [5] * 15), FIRST, NOW, DROP, None) is None


def test_quiet_brand_never_drops() -> None:
    quiet = volume([1], [0] * 15)  # baseline mean 15 per window, below min_baseline 20
    assert volume_drop(quiet, FIRST, NOW, DROP, None) is None
    rule = DROP.model_copy(update={"min_baseline": 15.0})
    assert volume_drop(quiet, FIRST, NOW, rule, None) is not None


def test_drop_waits_for_warmup_and_cooldown() -> None:
    first = NOW - 119 * 60
    series = volume([5], [0] * 15, first=first)
    assert volume_drop(series, first, NOW, DROP, None) is None
    first = NOW - 120 * 60
    assert volume_drop(volume([5], [0] * 15, first=first), first, NOW, DROP, None) is not None
    series = volume([5], [0] * 15)
    start = NOW - 14 * 60
    assert volume_drop(series, FIRST, NOW, DROP, start - 3599) is None
    assert volume_drop(series, FIRST, NOW, DROP, start - 3600) is not None
    assert volume_drop(series, FIRST, NOW, DROP.model_copy(update={"enabled": False}), None) is None


def test_noisy_baseline_needs_a_bigger_drop() -> None:
    noisy = [10] * 15 + [0] * 15  # blocks alternate 150 and 0: mean 75, std 75
    series = volume(noisy, [1] * 15)
    # mean − 3σ is negative: nothing is below it.
    assert volume_drop(series, FIRST, NOW, DROP, None) is None


# --- negative surge --------------------------------------------------------------------------------

SURGE = NegativeSurgeRule.model_validate(
    {"window": "10m", "baseline": "24h", "threshold": 0.5, "min_negative": 10, "margin": 0.1, "warmup": "30m"}
)


def tone(
    baseline: tuple[int, int], window: list[tuple[int, int]], first: int = FIRST, now: int = NOW
) -> dict[int, list[float]]:
    """Per-minute [scored, negative, compound sum]: `baseline` (scored, negative) every minute, then `window`."""
    out: dict[int, list[float]] = {}
    for m in range(first, now + 60, 60):
        scored, negative = baseline
        out[m] = [scored, negative, 0.5 * (scored - negative) - 0.5 * negative]
    for i, m in enumerate(range(now + 60 - 60 * len(window), now + 60, 60)):
        scored, negative = window[i]
        out[m] = [scored, negative, 0.5 * (scored - negative) - 0.5 * negative]
    return out


def tone_series(data: dict[int, list[float]]) -> Series:
    return Series.of({m: int(t[0]) for m, t in data.items()}, data)


def test_surge_fires_with_share_over_threshold_and_baseline() -> None:
    series = tone_series(tone((4, 1), [(3, 2)] * 10))  # 20 of 30 negative; usually 25 %
    finding = negative_surge(series, FIRST, NOW, SURGE, None)
    assert finding is not None
    assert (finding.observed, finding.baseline, finding.threshold) == (0.667, 0.25, 0.5)
    assert finding.details == {"negative": 20, "scored": 30}
    assert finding.severity == "warning"  # critical from 75 %
    critical = negative_surge(tone_series(tone((4, 1), [(4, 3)] * 10)), FIRST, NOW, SURGE, None)
    assert critical is not None and critical.severity == "critical"


def test_surge_needs_min_negative() -> None:
    series = tone_series(tone((4, 1), [(1, 1)] * 9 + [(0, 0)]))  # 9 of 9 negative
    assert negative_surge(series, FIRST, NOW, SURGE, None) is None
    series = tone_series(tone((4, 1), [(1, 1)] * 10))
    assert negative_surge(series, FIRST, NOW, SURGE, None) is not None


def test_surge_at_exactly_the_threshold_fires_below_not() -> None:
    assert negative_surge(tone_series(tone((4, 0), [(2, 1)] * 10)), FIRST, NOW, SURGE, None) is not None  # 50 %
    assert negative_surge(tone_series(tone((4, 0), [(5, 2)] * 10)), FIRST, NOW, SURGE, None) is None  # 40 %


def test_a_usually_negative_brand_needs_the_margin_above_its_baseline() -> None:
    # Usually 60 % negative: 65 % is not a surge (needs 70 %), 80 % is.
    assert negative_surge(tone_series(tone((5, 3), [(20, 13)] * 10)), FIRST, NOW, SURGE, None) is None
    finding = negative_surge(tone_series(tone((5, 3), [(5, 4)] * 10)), FIRST, NOW, SURGE, None)
    assert finding is not None
    assert (finding.baseline, finding.threshold) == (0.6, 0.7)


def test_surge_warmup_and_cooldown() -> None:
    first = NOW - 29 * 60
    assert negative_surge(tone_series(tone((4, 1), [(3, 2)] * 10, first=first)), first, NOW, SURGE, None) is None
    series = tone_series(tone((4, 1), [(3, 2)] * 10))
    start = NOW - 9 * 60
    assert negative_surge(series, FIRST, NOW, SURGE, start - 60) is None
    assert negative_surge(series, FIRST, NOW, SURGE, start - 1800) is not None


# --- sentiment drop --------------------------------------------------------------------------------

SENTIMENT = SentimentDropRule.model_validate(
    {"window": "15m", "baseline": "24h", "delta": 0.3, "min_mentions": 10, "warmup": "30m"}
)


def compound(per_minute: tuple[int, float], window: list[tuple[int, float]], first: int = FIRST) -> Series:
    """(scored mentions, average compound) every minute, then for the window's minutes."""
    data: dict[int, list[float]] = {}
    for m in range(first, NOW + 60, 60):
        data[m] = [per_minute[0], 0, per_minute[0] * per_minute[1]]
    for i, m in enumerate(range(NOW + 60 - 60 * len(window), NOW + 60, 60)):
        data[m] = [window[i][0], 0, window[i][0] * window[i][1]]
    return Series.of({m: int(t[0]) for m, t in data.items()}, data)


def test_sentiment_drop_fires_when_the_average_falls_by_delta() -> None:
    finding = sentiment_drop(compound((2, 0.4), [(1, 0.0)] * 15), FIRST, NOW, SENTIMENT, None)
    assert finding is not None
    assert (finding.observed, finding.baseline, finding.threshold) == (0.0, 0.4, 0.1)
    assert finding.severity == "warning"
    critical = sentiment_drop(compound((2, 0.4), [(1, -0.2)] * 15), FIRST, NOW, SENTIMENT, None)
    assert critical is not None and critical.severity == "critical"  # fell by 0.6 = 2Δ


def test_sentiment_falling_by_less_than_delta_does_not_fire() -> None:
    assert sentiment_drop(compound((2, 0.4), [(1, 0.15)] * 15), FIRST, NOW, SENTIMENT, None) is None
    assert sentiment_drop(compound((2, 0.4), [(1, 0.1)] * 15), FIRST, NOW, SENTIMENT, None) is not None  # exactly Δ


def test_flat_tone_does_not_fire() -> None:
    assert sentiment_drop(compound((2, -0.5), [(2, -0.5)] * 15), FIRST, NOW, SENTIMENT, None) is None


def test_sentiment_drop_needs_scored_mentions_in_window_and_baseline() -> None:
    few = [(0, 0.0)] * 6 + [(1, -0.9)] * 9  # 9 scored in the window
    assert sentiment_drop(compound((2, 0.4), few), FIRST, NOW, SENTIMENT, None) is None
    # A thin baseline (9 scored mentions in 24 h before the window) is no baseline.
    first = NOW - 40 * 60
    data = {m: [0, 0, 0.0] for m in range(first, NOW + 60, 60)}
    for m in range(first, first + 9 * 60, 60):
        data[m] = [1, 0, 0.8]
    for m in range(NOW - 14 * 60, NOW + 60, 60):
        data[m] = [1, 0, -0.8]
    series = Series.of({m: int(t[0]) for m, t in data.items()}, data)
    assert sentiment_drop(series, first, NOW, SENTIMENT, None) is None
    data[first + 9 * 60] = [1, 0, 0.8]
    series = Series.of({m: int(t[0]) for m, t in data.items()}, data)
    assert sentiment_drop(series, first, NOW, SENTIMENT, None) is not None


def test_sentiment_drop_warmup_and_cooldown() -> None:
    first = NOW - 29 * 60
    assert sentiment_drop(compound((2, 0.4), [(1, -0.5)] * 15, first=first), first, NOW, SENTIMENT, None) is None
    series = compound((2, 0.4), [(1, -0.5)] * 15)
    start = NOW - 14 * 60
    assert sentiment_drop(series, FIRST, NOW, SENTIMENT, start - 1799) is None
    assert sentiment_drop(series, FIRST, NOW, SENTIMENT, start - 1800) is not None


# --- episodes over the minutes of a batch ----------------------------------------------------------

SPIKE = VolumeSpikeRule.model_validate(
    {"window": "5m", "baseline": "24h", "sigma": 3, "min_mentions": 20, "warmup": "30m", "cooldown": "30m"}
)


def test_spike_in_the_middle_of_a_catch_up_batch_is_found() -> None:
    counts = {m: 1 for m in range(FIRST, NOW + 60, 60)}
    middle = NOW - 30 * 60
    for m in range(middle, middle + 5 * 60, 60):
        counts[m] = 12
    series = Series.of(counts)
    # The newest window alone is quiet ...
    assert volume_spike(series, FIRST, NOW, SPIKE, None) is None
    # ... but every minute of the batch is evaluated, and the episode's strongest window reported once.
    batch = range(NOW - 50 * 60, NOW + 60, 60)
    [finding] = evaluate_window_rule(volume_spike, series, FIRST, batch, SPIKE, None)
    assert (finding.window_start, finding.observed) == (middle, 60)


def test_two_episodes_further_apart_than_the_cooldown_both_fire() -> None:
    counts = {m: 1 for m in range(FIRST, NOW + 60, 60)}
    first_spike, second_spike = NOW - 80 * 60, NOW - 20 * 60
    for start in (first_spike, second_spike):
        for m in range(start, start + 5 * 60, 60):
            counts[m] = 12
    findings = evaluate_window_rule(volume_spike, Series.of(counts), FIRST, range(FIRST, NOW + 60, 60), SPIKE, None)
    assert [f.window_start for f in findings] == [first_spike, second_spike]
    # An earlier alert within the cooldown mutes the first one.
    findings = evaluate_window_rule(
        volume_spike, Series.of(counts), FIRST, range(FIRST, NOW + 60, 60), SPIKE, first_spike - 10 * 60
    )
    assert [f.window_start for f in findings] == [second_spike]


def test_findings_compare_without_strength() -> None:
    assert Finding(1, 2, 3, 4, 5, "warning", strength=1.0) == Finding(1, 2, 3, 4, 5, "warning", strength=9.0)


# --- per-mention rules -----------------------------------------------------------------------------


def flagged(
    mention_id: str, followers: int = 0, label: str = "neutral", terms: tuple[str, ...] = (), author: str = "bob"
) -> dict[str, Any]:
    return {
        "id": mention_id,
        "url": f"https://example.com/{mention_id}",
        "author": author,
        "followers": followers,
        "label": label,
        "topics": ["pricing"],
        "terms": list(terms),
    }


INFLUENCER = InfluencerRule(min_followers=10_000)


def test_influencer_one_alert_per_mention_with_severity() -> None:
    hits = [
        (FIRST, flagged("m1", 10_000)),
        (FIRST, flagged("m2", 20_000, "negative", author="carol")),
        (FIRST + 60, flagged("m3", 100_000, "negative", author="dave")),
        (FIRST, flagged("m4", 9_999)),
        (FIRST, flagged("m1", 10_000)),  # the same mention again
    ]
    last: dict[str, int] = {}
    found = influencer_findings(hits, INFLUENCER, last, FIRST + 120)
    assert [(f.mention["id"], f.severity, f.minute) for f in found] == [
        ("m1", "info", FIRST),
        ("m2", "warning", FIRST),
        ("m3", "critical", FIRST + 60),
    ]
    assert last == {}  # no cooldown by default: nothing to remember


def test_influencer_cooldown_per_author_and_max_age() -> None:
    rule = INFLUENCER.model_copy(update={"cooldown": 3600.0})
    last: dict[str, int] = {}
    hits = [
        (FIRST, flagged("m1", 50_000)),
        (FIRST + 600, flagged("m2", 50_000)),
        (FIRST, flagged("m3", 50_000, author="x")),
    ]
    assert [f.mention["id"] for f in influencer_findings(hits, rule, last, FIRST)] == ["m1", "m3"]
    assert last == {"influencer|bob": FIRST, "influencer|x": FIRST}
    later = [(FIRST + 3600, flagged("m4", 50_000))]
    assert [f.mention["id"] for f in influencer_findings(later, rule, last, FIRST + 3600)] == ["m4"]
    old = [(FIRST, flagged("m5", 50_000, author="y"))]
    assert influencer_findings(old, rule, {}, FIRST + 86400 + 61) == []
    assert influencer_findings(old, INFLUENCER.model_copy(update={"enabled": False}), {}, FIRST) == []


KEYWORD = KeywordRule(terms=["boycott", "lawsuit", "data breach"], cooldown=1800.0)


def test_keyword_alert_per_term_with_cooldown() -> None:
    last: dict[str, int] = {}
    hits = [
        (FIRST, flagged("m1", terms=("boycott",))),
        (FIRST, flagged("m2", terms=("boycott", "lawsuit"), author="carol")),
        (FIRST + 60, flagged("m3", terms=("boycott",))),
    ]
    found = keyword_findings(hits, KEYWORD, 10_000, last, FIRST)
    assert [(f.term, f.minute, [m["id"] for m in f.mentions]) for f in found] == [
        ("boycott", FIRST, ["m1", "m2"]),
        ("lawsuit", FIRST, ["m2"]),
    ]
    assert all(f.severity == "warning" for f in found)
    assert last == {"keyword|boycott": FIRST, "keyword|lawsuit": FIRST}
    # Within the cooldown of its term: nothing; another term: fires; after the cooldown: fires.
    assert keyword_findings([(FIRST + 1799, flagged("m4", terms=("boycott",)))], KEYWORD, None, last, FIRST) == []
    assert [
        f.term
        for f in keyword_findings([(FIRST + 60, flagged("m5", terms=("data breach",)))], KEYWORD, None, last, FIRST)
    ] == ["data breach"]
    assert [
        f.term
        for f in keyword_findings([(FIRST + 1800, flagged("m6", terms=("boycott",)))], KEYWORD, None, last, FIRST)
    ] == ["boycott"]


def test_keyword_severity_and_age() -> None:
    many = [(FIRST, flagged(f"m{i}", terms=("recall",))) for i in range(5)]
    [found] = keyword_findings(many, KEYWORD, None, {}, FIRST)
    assert found.severity == "critical"
    [loud] = keyword_findings([(FIRST, flagged("m", 12_000, terms=("recall",)))], KEYWORD, 10_000, {}, FIRST)
    assert loud.severity == "critical"
    assert keyword_findings(many, KEYWORD, None, {}, FIRST + 86400 + 61) == []
    assert keyword_findings(many, KEYWORD.model_copy(update={"enabled": False}), None, {}, FIRST) == []


# --- config: defaults and per-brand overrides ------------------------------------------------------


CONFIG = EcouteConfig.model_validate(
    {
        "brands": {
            "acme": {
                "query": "acme",
                "alerts": {
                    "negative_surge": {"threshold": 0.4},
                    "keywords": {"terms": ["recall"]},
                    "influencer": {"enabled": False},
                },
            },
            "globex": {"query": "globex"},
        },
        "alerts": {
            "negative_surge": {"min_negative": 3, "window": "5m"},
            "keywords": {"terms": ["boycott", "Data Breach"]},
            "influencer": {"min_followers": 500},
        },
    }
)


def test_brand_overrides_only_what_it_names() -> None:
    from services.analyzer.alerts import brand_rules

    acme, globex = brand_rules(CONFIG, "acme"), brand_rules(CONFIG, "globex")
    assert (acme.negative_surge.threshold, acme.negative_surge.min_negative, acme.negative_surge.window) == (
        0.4,
        3,
        300.0,
    )
    assert (globex.negative_surge.threshold, globex.negative_surge.min_negative) == (0.5, 3)
    assert acme.keywords.terms == ["recall"]
    assert globex.keywords.terms == ["boycott", "Data Breach"]
    assert not acme.influencer.enabled and globex.influencer.enabled
    assert brand_rules(CONFIG, "unknown") == CONFIG.alerts
    assert acme.volume_drop == VolumeDropRule()


@pytest.mark.parametrize(
    ("alerts", "where"),
    [
        ({"negativ_surge": {}}, "negativ_surge"),
        ({"negative_surge": {"threshold": 1.5}}, "negative_surge.threshold"),
        ({"volume_drop": {"window": "soon"}}, "volume_drop.window"),
        ({"keywords": {"cooldown": -1}}, "keywords.cooldown"),
    ],
)
def test_bad_rule_settings_are_refused_with_their_place(alerts: dict[str, Any], where: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        EcouteConfig.model_validate({"alerts": alerts})
    assert where in str(info.value).replace("\n", ".")
    with pytest.raises(ValidationError) as info:
        EcouteConfig.model_validate({"brands": {"acme": {"query": "acme", "alerts": alerts}}})
    assert "brands.acme.alerts" in str(info.value).replace("\n", ".")


# --- stage 1: flags in the partials ----------------------------------------------------------------


def scored(
    mention_id: str, text: str, followers: int = 0, label: str = "neutral", brand: str = "acme"
) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "id": mention_id,
        "brand": brand,
        "published_at": datetime.fromtimestamp(FIRST, UTC),
        "title": None,
        "text": text,
        "sentiment": {"compound": -0.5 if label == "negative" else 0.0, "pos": 0, "neu": 1, "neg": 0, "label": label},
        "engagement": {"likes": 0, "shares": 0, "comments": 0},
        "reach": followers,
        "topics": ["pricing"],
        "source": "rss",
        "author": {"id": f"id-{mention_id}", "handle": f"@{mention_id}"},
        "url": f"https://example.com/{mention_id}",
    }


def test_partials_carry_influencers_keywords_and_negative_samples() -> None:
    flags = MentionFlags(CONFIG)
    batch = [
        (0, scored("g1", "globex: a data   breach, BOYCOTT now", 600, "negative", brand="globex")),
        (0, scored("g2", "globex is fine", 499, brand="globex")),
        (0, scored("g3", "boycotting globex? no", 0, brand="globex")),
        (0, scored("a1", "acme recall, and boycott", 1_000_000, "negative")),
    ]
    partials = {p["brand"]: p for p in kpi.combine_partials(batch, {0: (0, 3)}, flags)}
    globex, acme = partials["globex"], partials["acme"]
    assert [m["id"] for m in globex["influencers"]] == ["g1"]
    assert globex["keywords"] == [
        {
            "id": "g1",
            "url": "https://example.com/g1",
            "author": "@g1",
            "followers": 600,
            "label": "negative",
            "topics": ["pricing"],
            "terms": ["boycott", "data breach"],
        }
    ]
    assert globex["negative_samples"] == ["https://example.com/g1"]
    # acme: its own terms (recall only) and no influencer rule.
    assert acme["influencers"] == []
    assert [m["terms"] for m in acme["keywords"]] == [["recall"]]
    model = load(KpiPartial, orjson.dumps(globex))
    assert model.keywords[0].terms == ["boycott", "data breach"]
    assert model.influencers[0].followers == 600
    # Without flags (and for the KPIs), nothing changes.
    plain = {p["brand"]: p for p in kpi.combine_partials(batch, {0: (0, 3)})}
    assert plain["globex"]["keywords"] == plain["globex"]["influencers"] == []
    assert plain["globex"]["mentions"] == globex["mentions"] == 3


def test_influencers_are_capped_most_followed_first() -> None:
    batch = [(0, scored(f"g{i:02}", "globex", 1000 + i, brand="globex")) for i in range(MAX_INFLUENCERS + 5)]
    [partial] = kpi.combine_partials(batch, {0: (0, 30)}, MentionFlags(CONFIG))
    assert len(partial["influencers"]) == MAX_INFLUENCERS
    assert partial["influencers"][0]["followers"] == 1000 + MAX_INFLUENCERS + 4
    assert partial["influencers"][-1]["followers"] == 1005


def test_fold_keeps_terms_and_negative_samples_in_buckets() -> None:
    batch = [
        (0, scored("g1", "globex boycott", 0, "negative", brand="globex")),
        (0, scored("g2", "globex boycott data breach", 0, brand="globex")),
    ]
    [partial] = kpi.combine_partials(batch, {0: (0, 1)}, MentionFlags(CONFIG))
    bucket = kpi.new_bucket()
    kpi.fold_partial(bucket, partial)
    kpi.fold_partial(bucket, partial)
    assert bucket["terms"] == {"boycott": 4, "data breach": 2}
    assert bucket["negative_samples"] == ["https://example.com/g1", "https://example.com/g1"]
    # A bucket from before these fields existed (restored from a changelog) folds too.
    old = {**kpi.new_counters(), "authors": [], "samples": []}
    kpi.fold_partial(old, partial)
    assert old["terms"] == {"boycott": 2, "data breach": 1}
