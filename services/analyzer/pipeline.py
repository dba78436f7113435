"""The analyzer's two stages as plain Python over plain records, so tests and benchmarks hit the
same code the Faust agents run.

Stage 1 (per mention, keyed by id): decode, drop duplicate ids, match brands, score tone and
topics, emit scored mentions and combine them into kpi-partials. Stage 2 (per brand): fold
partials into 1m/1h/1d buckets exactly once, prune old buckets, and evaluate alert rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from schemas import EcouteConfig, KpiPartial, Mention, load, utc_now
from services.analyzer import kpi
from services.analyzer.alerts import alert_id, volume_spike
from services.analyzer.matching import BrandMatcher, TopicClassifier
from services.analyzer.tone import LanguageDetector, ToneScorer

logger = logging.getLogger(__name__)

# How long stage 2 keeps each window's buckets in its tables (the API keeps its own views).
RETENTION_SECONDS = {"1m": 2 * 3600, "1h": 49 * 3600, "1d": 35 * 86400}


@dataclass(frozen=True, slots=True)
class RawRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: RawRecord
    reason: str


@dataclass
class Stage1Result:
    scored: list[tuple[str, bytes]] = field(default_factory=list)  # (brand, scored-mention/1 JSON)
    partials: list[dict[str, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    new_ids: list[tuple[int, str, int]] = field(default_factory=list)  # (record index, id, published epoch)
    duplicates: int = 0
    unmatched: int = 0
    scoring_seconds: float = 0.0
    brand_labels: dict[tuple[str, str], int] = field(default_factory=dict)


def describe_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()[:5])
    return f"{type(exc).__name__}: {exc}"


class Stage1:
    def __init__(self, config: EcouteConfig, scorer: ToneScorer | None = None) -> None:
        self.matcher = BrandMatcher({name: brand.query for name, brand in config.brands.items()})
        self.topics = TopicClassifier(config.topics)
        self.scorer = scorer or ToneScorer()
        self.detector = LanguageDetector()
        # Detect the language before matching only when a brand query filters on it.
        self._lang_first = "lang" in self.matcher.filter_fields

    def process(self, records: Sequence[RawRecord], is_seen: Callable[[str], bool]) -> Stage1Result:
        result = Stage1Result()
        batch_ids: set[str] = set()
        scored_pairs: list[tuple[int, dict[str, Any]]] = []
        offsets: dict[int, tuple[int, int]] = {}
        now = utc_now()
        for index, record in enumerate(records):
            first, _ = offsets.get(record.partition, (record.offset, record.offset))
            offsets[record.partition] = (min(first, record.offset), record.offset)
            if not record.value:
                result.dead.append(DeadLetter(record, "empty value"))
                continue
            try:
                mention = load(Mention, record.value)
            except (ValidationError, ValueError) as exc:
                result.dead.append(DeadLetter(record, describe_error(exc)))
                continue
            if mention.id in batch_ids or is_seen(mention.id):
                result.duplicates += 1
                continue
            batch_ids.add(mention.id)
            result.new_ids.append((index, mention.id, kpi.epoch(mention.published_at)))
            text = f"{mention.title}\n{mention.text}" if mention.title else mention.text
            lang = mention.lang or (self.detector.detect(text) if self._lang_first else None)
            facts = {
                "lang": lang,
                "source": mention.source,
                "site": mention.site,
                "author": mention.author.handle or mention.author.id,
            }
            matches = self.matcher.match(text, facts)
            if not matches:
                result.unmatched += 1
                continue
            started = time.perf_counter()
            lang = lang or self.detector.detect(text)
            tone = self.scorer.score(text, lang)
            result.scoring_seconds += time.perf_counter() - started
            topics = self.topics.classify(text)
            base = mention.model_dump(by_alias=True)
            for match in matches:
                scored = {
                    **base,
                    "schema": "scored-mention/1",
                    "lang": lang,
                    "brand": match.brand,
                    "sentiment": {
                        "compound": tone.compound,
                        "pos": tone.pos,
                        "neu": tone.neu,
                        "neg": tone.neg,
                        "label": tone.label,
                    },
                    "topics": topics,
                    "matched": match.matched,
                    "reach": mention.author.followers or 0,
                    "scored_at": now,
                }
                result.scored.append((match.brand, orjson.dumps(scored)))
                scored_pairs.append((record.partition, scored))
                label_key = (match.brand, tone.label)
                result.brand_labels[label_key] = result.brand_labels.get(label_key, 0) + 1
        result.partials = kpi.combine_partials(scored_pairs, offsets)
        return result


# --- stage 2 -------------------------------------------------------------------------------------


def parse_partial(raw: bytes) -> dict[str, Any]:
    """Validate a kpi-partial/1 record and return it as a dict with `bucket_epoch` added."""
    partial = load(KpiPartial, raw)
    record = partial.model_dump(by_alias=True)
    record["bucket_epoch"] = kpi.epoch(partial.bucket)
    return record


def new_brand_state() -> dict[str, Any]:
    return {"applied": {}, "minutes": {}, "first_minute": None, "now_minute": None, "last_fired": {}, "live": {}}


@dataclass
class Stage2Result:
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    applied: int = 0
    replayed: int = 0


class Stage2:
    def __init__(self, config: EcouteConfig) -> None:
        self.spike_rule = config.alerts.volume_spike

    def apply(
        self,
        brand: str,
        partials: Sequence[dict[str, Any]],
        state: dict[str, Any],
        buckets: MutableMapping[str, Any],
        now: datetime | None = None,
    ) -> Stage2Result:
        """Fold one brand's partials into `buckets` (a table) and `state` (its per-brand state)."""
        result = Stage2Result()
        now = now or utc_now()
        touched: dict[str, tuple[str, int, dict[str, Any]]] = {}
        for partial in partials:
            if kpi.is_replay(state["applied"], partial):
                result.replayed += 1
                continue
            kpi.mark_applied(state["applied"], partial)
            result.applied += 1
            minute = partial["bucket_epoch"]
            # A clock a mention claims is never trusted beyond the wall clock: a post dated in the
            # future must not move the brand's "now" (pruning and alert windows follow it).
            clock_minute = min(minute, kpi.window_start(kpi.epoch(now), "1m"))
            for window in kpi.WINDOW_SECONDS:
                start = kpi.window_start(minute, window)
                key = kpi.bucket_key(brand, window, start)
                if key in touched:
                    bucket = touched[key][2]
                else:
                    bucket = buckets.get(key) or kpi.new_bucket()
                    touched[key] = (window, start, bucket)
                    live = state["live"].setdefault(window, [])
                    if start not in live:
                        live.append(start)
                kpi.fold_partial(bucket, partial)
            minutes = state["minutes"]
            minutes[str(minute)] = minutes.get(str(minute), 0) + partial["mentions"]
            state["first_minute"] = minute if state["first_minute"] is None else min(state["first_minute"], minute)
            newest = state["now_minute"]
            state["now_minute"] = clock_minute if newest is None else max(newest, clock_minute)
        for key, (window, start, bucket) in touched.items():
            buckets[key] = bucket
            result.snapshots.append(kpi.to_kpi(brand, window, start, bucket, now))
        if result.applied:
            self._prune(brand, state, buckets)
            result.alerts.extend(self._evaluate_alerts(brand, state, buckets, now))
        return result

    def _prune(self, brand: str, state: dict[str, Any], buckets: MutableMapping[str, Any]) -> None:
        newest = state["now_minute"]
        for window, starts in state["live"].items():
            keep = [s for s in starts if s >= newest - RETENTION_SECONDS[window]]
            for start in set(starts) - set(keep):
                buckets.pop(kpi.bucket_key(brand, window, start), None)
            state["live"][window] = keep
        horizon = newest - int(self.spike_rule.baseline) - int(self.spike_rule.window) - 60
        state["minutes"] = {m: n for m, n in state["minutes"].items() if int(m) >= horizon}

    def _evaluate_alerts(
        self, brand: str, state: dict[str, Any], buckets: MutableMapping[str, Any], now: datetime
    ) -> list[dict[str, Any]]:
        minutes = {int(m): n for m, n in state["minutes"].items()}
        last = state["last_fired"].get("volume_spike")
        finding = volume_spike(minutes, state["first_minute"], state["now_minute"], self.spike_rule, last)
        if finding is None:
            return []
        state["last_fired"]["volume_spike"] = finding.window_start
        topics: dict[str, int] = {}
        authors: list[str] = []
        samples: list[str] = []
        for minute in range(finding.window_start, finding.window_end, 60):
            bucket = buckets.get(kpi.bucket_key(brand, "1m", minute))
            if not bucket:
                continue
            for topic, n in bucket["topics"].items():
                topics[topic] = topics.get(topic, 0) + n
            authors.extend(a for a in bucket["authors"] if a not in authors)
            samples.extend(s for s in bucket["samples"] if s not in samples)
        ratio = finding.observed / finding.baseline if finding.baseline else float("inf")
        return [
            {
                "schema": "alert/1",
                "id": alert_id(brand, "volume_spike", finding.window_start),
                "brand": brand,
                "kind": "volume_spike",
                "severity": finding.severity,
                "window": {"start": kpi.from_epoch(finding.window_start), "end": kpi.from_epoch(finding.window_end)},
                "observed": finding.observed,
                "baseline": finding.baseline,
                "threshold": finding.threshold,
                "message": (
                    f"{brand}: {finding.observed} mentions in the last {int(self.spike_rule.window) // 60} min, "
                    f"{f'{ratio:.1f}×' if finding.baseline else 'far above'} the usual {finding.baseline:g}"
                ),
                "evidence": {
                    "terms": [],
                    "topics": [t for t, _ in sorted(topics.items(), key=lambda kv: -kv[1])[:5]],
                    "authors": authors[:10],
                    "sample_mentions": samples[:5],
                },
                "created_at": now,
            }
        ]
