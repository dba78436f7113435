"""Alert rules as pure functions over a brand's per-minute history (event time) and flagged mentions.

Window rules compare the `window` ending at a minute with the `baseline` period before it; they wait
for `warmup` of the brand's history and fire at most once per `cooldown` (per brand and kind):

- volume_spike: mentions of the window above mean + sigma·std of the earlier window-sized blocks of
  the baseline, and at least `min_mentions`. Critical when also above mean + 2·sigma·std and at least
  3× the mean, else warning.
- volume_drop: mentions of the window below both mean − sigma·std of the baseline blocks and
  (1 − min_drop)·mean, when the baseline mean is at least `min_baseline` (a quiet brand never
  "drops"). Only windows whose minutes are settled (ended SETTLE_SECONDS ago on the wall clock)
  count, so the minute still filling up is never mistaken for a drop. Critical at ≤ 20 % of the
  mean, else warning.
- negative_surge: negative share of the window's scored mentions at least max(threshold, baseline
  share + margin), with at least `min_negative` negative mentions. Critical when the share is
  halfway from that threshold to 100 %, else warning.
- sentiment_drop: average compound of the window at least `delta` below the baseline's average, with
  at least `min_mentions` scored mentions in both. Critical when it fell by 2·delta, else warning.

Per-mention rules act on what stage 1 flagged in each partial:

- influencer: a mention whose author has at least `min_followers`; one alert per mention (and per
  author per `cooldown` when set). Info; warning when the mention is negative; critical when
  negative and the author has 10× `min_followers`.
- keyword: a crisis term in a mention; one alert per term per `cooldown`. Warning; critical when
  `critical_mentions` mentions of one minute carry the term or an influencer wrote one of them.

Ids are derived from brand, kind and window start (per-mention rules: term and minute, or mention
id), so an alert raised again after a replay is recognised as the same alert.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, TypeVar

from schemas.config import (
    AlertsConfig,
    EcouteConfig,
    InfluencerRule,
    KeywordRule,
    NegativeSurgeRule,
    SentimentDropRule,
    VolumeDropRule,
    VolumeSpikeRule,
)
from services.analyzer.matching import TermFinder

# A minute counts as complete for the volume-drop rule this long after it ended (late stage-1 batches).
SETTLE_SECONDS = 15
# Stage 1 sends at most this many flagged mentions per partial and rule (stage 2 needs a few, not all).
MAX_INFLUENCERS = 20
MAX_KEYWORD_HITS = 50


def alert_id(brand: str, kind: str, anchor: int | str) -> str:
    """Deterministic, so an alert re-emitted after a replay is recognised as the same alert."""
    return hashlib.sha1(f"{brand}|{kind}|{anchor}".encode()).hexdigest()[:20]


def brand_rules(config: EcouteConfig, brand: str) -> AlertsConfig:
    """The rules of one brand: the global `alerts:` with that brand's overrides."""
    brand_config = config.brands.get(brand)
    return config.alerts.for_brand(brand_config.alerts if brand_config is not None else None)


# --- per-minute history ----------------------------------------------------------------------------


class Series:
    """A brand's per-minute counts as prefix sums, so any window's total costs two lookups.

    `tone` holds, per minute, [scored mentions (not unscored), negative mentions, sum of compounds].
    Keys are epoch seconds of minutes, as ints or as the strings brand-state keeps (JSON); minutes
    outside [start, end) are left out and count as zero.
    """

    def __init__(
        self,
        start: int,
        end: int,
        mentions: Mapping[int, int] | Mapping[str, int],
        tone: Mapping[int, Sequence[float]] | Mapping[str, Sequence[float]],
    ) -> None:
        self.start = start
        size = max(0, (end - start) // 60)
        counts = [0] * size
        scored = [0] * size
        negative = [0] * size
        compound = [0.0] * size
        for key, n in mentions.items():
            index = (int(key) - start) // 60
            if 0 <= index < size:
                counts[index] += n
        for key, entry in tone.items():
            index = (int(key) - start) // 60
            if 0 <= index < size:
                scored[index] += int(entry[0])
                negative[index] += int(entry[1])
                compound[index] += float(entry[2])
        self._mentions = [0, *accumulate(counts)]
        self._scored = [0, *accumulate(scored)]
        self._negative = [0, *accumulate(negative)]
        self._compound = [0.0, *accumulate(compound)]
        self._size = size

    @classmethod
    def of(cls, mentions: Mapping[int, int], tone: Mapping[int, Sequence[float]] | None = None) -> Series:
        """A series covering every minute of `mentions` and `tone` (tests, small histories)."""
        tone = tone or {}
        minutes = [*mentions, *tone]
        if not minutes:
            return cls(0, 0, {}, {})
        return cls(min(minutes), max(minutes) + 60, mentions, tone)

    def _total(self, prefix: Sequence[float], lo: int, hi: int) -> float:
        if hi <= lo:
            return 0
        size = self._size
        top = min(max(0, -(-(hi - self.start) // 60)), size)
        bottom = min(max(0, -(-(lo - self.start) // 60)), size)
        return prefix[top] - prefix[bottom]

    def mentions(self, lo: int, hi: int) -> int:
        """Mentions of the minutes in [lo, hi) (epoch seconds)."""
        return int(self._total(self._mentions, lo, hi))

    def scored(self, lo: int, hi: int) -> int:
        return int(self._total(self._scored, lo, hi))

    def negative(self, lo: int, hi: int) -> int:
        return int(self._total(self._negative, lo, hi))

    def compound(self, lo: int, hi: int) -> float:
        return float(self._total(self._compound, lo, hi))


@dataclass(frozen=True)
class Finding:
    """A window rule that fires for the window [window_start, window_end)."""

    window_start: int
    window_end: int
    observed: float
    baseline: float
    threshold: float
    severity: str
    # How far past its threshold the window is: of one episode's windows, the clearest is reported.
    strength: float = field(default=0.0, compare=False)
    details: dict[str, Any] = field(default_factory=dict, compare=False)


# Kept for callers of the first version of this module.
SpikeFinding = Finding

R = TypeVar("R", VolumeSpikeRule, VolumeDropRule, NegativeSurgeRule, SentimentDropRule)


def _window(rule: R, at_minute: int) -> tuple[int, int, int]:
    """(block size, start, end) of the `window` ending with the minute `at_minute`."""
    block = max(60, int(rule.window) // 60 * 60)
    return block, at_minute + 60 - block, at_minute + 60


def _may_fire(rule: R, first_minute: int, at_minute: int, start: int, last_fired: int | None) -> bool:
    if not rule.enabled or at_minute - first_minute < rule.warmup:
        return False
    # A window starting before the last alert's (late data) is within the cooldown too.
    return last_fired is None or start - last_fired >= rule.cooldown


def _block_sums(series: Series, first_minute: int, start: int, block: int, baseline: float) -> list[int]:
    """Window-sized blocks before `start`, newest first, inside the baseline and the brand's history."""
    sums: list[int] = []
    block_start = start - block
    while block_start >= max(first_minute, start - int(baseline)):
        sums.append(series.mentions(block_start, block_start + block))
        block_start -= block
    return sums


def _mean_std(values: Sequence[int]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def volume_spike(
    series: Series, first_minute: int, at_minute: int, rule: VolumeSpikeRule, last_fired: int | None
) -> Finding | None:
    """Evaluate the spike rule for the window ending with `at_minute` (epoch seconds of a minute)."""
    block, start, end = _window(rule, at_minute)
    if not _may_fire(rule, first_minute, at_minute, start, last_fired):
        return None
    observed = series.mentions(start, end)
    if observed < rule.min_mentions:
        return None
    blocks = _block_sums(series, first_minute, start, block, rule.baseline)
    if not blocks:
        return None
    mean, std = _mean_std(blocks)
    threshold = mean + rule.sigma * std
    if observed <= threshold:
        return None
    severity = "critical" if observed > mean + 2 * rule.sigma * std and observed >= 3 * max(mean, 1) else "warning"
    return Finding(start, end, observed, round(mean, 3), round(threshold, 3), severity, observed - threshold)


def volume_drop(
    series: Series, first_minute: int, at_minute: int, rule: VolumeDropRule, last_fired: int | None
) -> Finding | None:
    """Evaluate the drop rule for the window ending with `at_minute` (a settled minute: the caller checks)."""
    block, start, end = _window(rule, at_minute)
    if not _may_fire(rule, first_minute, at_minute, start, last_fired):
        return None
    blocks = _block_sums(series, first_minute, start, block, rule.baseline)
    if not blocks:
        return None
    mean, std = _mean_std(blocks)
    if mean < rule.min_baseline:
        return None
    threshold = min(mean - rule.sigma * std, mean * (1 - rule.min_drop))
    observed = series.mentions(start, end)
    if observed >= threshold:
        return None
    severity = "critical" if observed <= 0.2 * mean else "warning"
    return Finding(start, end, observed, round(mean, 3), round(threshold, 3), severity, threshold - observed)


def negative_surge(
    series: Series, first_minute: int, at_minute: int, rule: NegativeSurgeRule, last_fired: int | None
) -> Finding | None:
    """Evaluate the negative-share rule for the window ending with `at_minute`."""
    _, start, end = _window(rule, at_minute)
    if not _may_fire(rule, first_minute, at_minute, start, last_fired):
        return None
    negative = series.negative(start, end)
    if negative < rule.min_negative:
        return None
    scored = series.scored(start, end)
    share = negative / scored
    lo = max(first_minute, start - int(rule.baseline))
    base_scored = series.scored(lo, start)
    base_share = series.negative(lo, start) / base_scored if base_scored else 0.0
    threshold = max(rule.threshold, base_share + rule.margin)
    if share < threshold:
        return None
    severity = "critical" if share >= (1 + threshold) / 2 else "warning"
    details = {"negative": negative, "scored": scored}
    return Finding(
        start, end, round(share, 3), round(base_share, 3), round(threshold, 3), severity, share - threshold, details
    )


def sentiment_drop(
    series: Series, first_minute: int, at_minute: int, rule: SentimentDropRule, last_fired: int | None
) -> Finding | None:
    """Evaluate the average-tone rule for the window ending with `at_minute`."""
    _, start, end = _window(rule, at_minute)
    if not _may_fire(rule, first_minute, at_minute, start, last_fired):
        return None
    scored = series.scored(start, end)
    if scored < rule.min_mentions:
        return None
    lo = max(first_minute, start - int(rule.baseline))
    base_scored = series.scored(lo, start)
    if base_scored < rule.min_mentions:
        return None
    average = series.compound(start, end) / scored
    base_average = series.compound(lo, start) / base_scored
    threshold = base_average - rule.delta
    if round(average, 6) > round(threshold, 6):
        return None
    severity = "critical" if base_average - average >= 2 * rule.delta - 1e-9 else "warning"
    return Finding(
        start,
        end,
        round(average, 3),
        round(base_average, 3),
        round(threshold, 3),
        severity,
        threshold - average,
        {"scored": scored},
    )


WindowRule = Callable[[Series, int, int, Any, int | None], Finding | None]


def evaluate_window_rule(
    check: WindowRule, series: Series, first_minute: int, minutes: Iterable[int], rule: R, last_fired: int | None
) -> list[Finding]:
    """Run `check` for each minute (ascending) and return the findings to alert on.

    Consecutive firing windows within one cooldown are one episode: the strongest of them is
    reported, once (a catch-up batch sees the whole spike; live, the first crossing is reported).
    """
    findings: list[Finding] = []
    episode: list[Finding] = []
    last = last_fired
    for minute in sorted(set(minutes)):
        finding = check(series, first_minute, minute, rule, last)
        if finding is None:
            continue
        if episode and finding.window_start - episode[0].window_start >= rule.cooldown:
            chosen = max(episode, key=lambda f: f.strength)
            findings.append(chosen)
            last, episode = chosen.window_start, []
            if finding.window_start - last < rule.cooldown:
                continue
        episode.append(finding)
    if episode:
        findings.append(max(episode, key=lambda f: f.strength))
    return findings


# --- per-mention rules -----------------------------------------------------------------------------


class MentionFlags:
    """What stage 1 looks for in each scored mention on behalf of stage 2's per-mention rules."""

    def __init__(self, config: EcouteConfig) -> None:
        self._finders: dict[tuple[str, ...], TermFinder] = {}
        self._defaults = self._rules_of(config.alerts)
        self._brands = {brand: self._rules_of(brand_rules(config, brand)) for brand in config.brands}

    def _rules_of(self, rules: AlertsConfig) -> tuple[int | None, TermFinder | None]:
        min_followers = rules.influencer.min_followers if rules.influencer.enabled else None
        terms = tuple(sorted(rules.keywords.terms)) if rules.keywords.enabled else ()
        if not terms:
            return min_followers, None
        finder = self._finders.get(terms) or TermFinder(terms)
        self._finders[terms] = finder
        return min_followers, finder

    def flag(self, scored: Mapping[str, Any]) -> tuple[bool, list[str]]:
        """(is the author an influencer, crisis terms found) for one scored mention of its brand."""
        min_followers, finder = self._brands.get(scored["brand"], self._defaults)
        influencer = min_followers is not None and (scored.get("reach") or 0) >= min_followers
        terms: list[str] = []
        if finder is not None:
            title, text = scored.get("title"), scored.get("text") or ""
            terms = sorted(finder.find(f"{title}\n{text}" if title else text))
        return influencer, terms


def flagged_mention(scored: Mapping[str, Any], terms: list[str]) -> dict[str, Any]:
    """The compact form of a scored mention a partial carries for the per-mention rules."""
    author = scored.get("author") or {}
    return {
        "id": scored["id"],
        "url": scored.get("url"),
        "author": author.get("handle") or author.get("id") or author.get("name"),
        "followers": scored.get("reach") or 0,
        "label": scored["sentiment"]["label"],
        "topics": list(scored.get("topics") or []),
        "terms": terms,
    }


@dataclass(frozen=True)
class InfluencerFinding:
    minute: int
    mention: dict[str, Any]
    severity: str


@dataclass(frozen=True)
class KeywordFinding:
    minute: int
    term: str
    mentions: list[dict[str, Any]]
    severity: str


def influencer_findings(
    hits: Iterable[tuple[int, dict[str, Any]]], rule: InfluencerRule, last_fired: dict[str, int], now: int
) -> list[InfluencerFinding]:
    """One finding per flagged mention (per author per cooldown when set); updates `last_fired`."""
    if not rule.enabled:
        return []
    findings: list[InfluencerFinding] = []
    seen: set[str] = set()
    for minute, mention in sorted(hits, key=lambda h: (h[0], h[1]["id"])):
        if mention["id"] in seen or minute + 60 < now - rule.max_age or mention["followers"] < rule.min_followers:
            continue
        seen.add(mention["id"])
        key = f"influencer|{mention['author']}"
        if rule.cooldown > 0:
            last = last_fired.get(key)
            if last is not None and minute - last < rule.cooldown:
                continue
            last_fired[key] = minute
        negative = mention["label"] == "negative"
        severity = "info"
        if negative:
            severity = "critical" if mention["followers"] >= 10 * rule.min_followers else "warning"
        findings.append(InfluencerFinding(minute, mention, severity))
    return findings


def keyword_findings(
    hits: Iterable[tuple[int, dict[str, Any]]],
    rule: KeywordRule,
    min_followers: int | None,
    last_fired: dict[str, int],
    now: int,
) -> list[KeywordFinding]:
    """One finding per term and minute, at most one per term per cooldown; updates `last_fired`."""
    if not rule.enabled:
        return []
    by_term: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
    for minute, mention in hits:
        if minute + 60 < now - rule.max_age:
            continue
        for term in mention["terms"]:
            by_term.setdefault((minute, term), {})[mention["id"]] = mention
    findings: list[KeywordFinding] = []
    for (minute, term), mentions in sorted(by_term.items()):
        key = f"keyword|{term}"
        last = last_fired.get(key)
        if last is not None and minute - last < rule.cooldown:
            continue
        last_fired[key] = minute
        found = sorted(mentions.values(), key=lambda m: (-m["followers"], m["id"]))
        loud = min_followers is not None and found[0]["followers"] >= min_followers
        severity = "critical" if len(found) >= rule.critical_mentions or loud else "warning"
        findings.append(KeywordFinding(minute, term, found, severity))
    return findings
