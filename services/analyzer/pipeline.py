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

from schemas import EcouteConfig, KpiPartial, load, utc_now
from schemas.config import AlertsConfig
from services.analyzer import alerts, kpi
from services.analyzer.alerts import MentionFlags, alert_id
from services.analyzer.decode import decode_mention
from services.analyzer.matching import BrandMatch, BrandMatcher, TermFinder, TopicClassifier
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
    # What the kpi-partials are combined from: (input partition, scored mention), and per input
    # partition the (first, last) offsets read.
    pairs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)

    def absorb(self, more: Stage1Result, *, scored: bool = True) -> None:
        """Add a later batch's result (same input partitions, later offsets) to this one; without
        `scored`, leave out its serialised scored mentions (already sent)."""
        if scored:
            self.scored.extend(more.scored)
        self.dead.extend(more.dead)
        self.new_ids.extend(more.new_ids)
        self.duplicates += more.duplicates
        self.unmatched += more.unmatched
        self.scoring_seconds += more.scoring_seconds
        for key, n in more.brand_labels.items():
            self.brand_labels[key] = self.brand_labels.get(key, 0) + n
        self.pairs.extend(more.pairs)
        for partition, (first, last) in more.offsets.items():
            earlier = self.offsets.get(partition)
            self.offsets[partition] = (earlier[0] if earlier else first, last)


def describe_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()[:5])
    return f"{type(exc).__name__}: {exc}"


class Stage1:
    def __init__(self, config: EcouteConfig, scorer: ToneScorer | None = None) -> None:
        self.matcher = BrandMatcher({name: brand.query for name, brand in config.brands.items()})
        self.topics = TopicClassifier(config.topics)
        # Brand and topic terms in one automaton: one pass over each text finds both.
        self.finder = TermFinder([*self.matcher.terms, *self.topics.terms])
        self.scorer = scorer or ToneScorer()
        self.flags = MentionFlags(config)  # what the per-mention alert rules need from each mention
        self.detector = LanguageDetector()
        # Detect the language before matching only when a brand query filters on it.
        self._lang_first = "lang" in self.matcher.filter_fields

    def process(
        self, records: Sequence[RawRecord], is_seen: Callable[[str], bool], combine: bool = True
    ) -> Stage1Result:
        """Score a batch; with `combine`, also fold it into kpi-partials (else see `combine_partials`).

        In three passes over the batch — decode and match, then language and tone, then outputs — so
        each model's tables stay in the CPU caches while it runs (a third faster than mention by mention).
        """
        result = Stage1Result()
        batch_ids: set[str] = set()
        offsets = result.offsets
        todo: list[tuple[int, dict[str, Any], str, str | None, list[BrandMatch], set[str]]] = []
        for index, record in enumerate(records):
            first, _ = offsets.get(record.partition, (record.offset, record.offset))
            offsets[record.partition] = (min(first, record.offset), record.offset)
            if not record.value:
                result.dead.append(DeadLetter(record, "empty value"))
                continue
            try:
                mention = decode_mention(record.value)
            except (ValidationError, ValueError) as exc:
                result.dead.append(DeadLetter(record, describe_error(exc)))
                continue
            mention_id = mention["id"]
            if mention_id in batch_ids or is_seen(mention_id):
                result.duplicates += 1
                continue
            batch_ids.add(mention_id)
            result.new_ids.append((index, mention_id, kpi.epoch(mention["published_at"])))
            title, author = mention["title"], mention["author"]
            text = f"{title}\n{mention['text']}" if title else mention["text"]
            lang = mention["lang"] or (self.detector.detect(text) if self._lang_first else None)
            facts = {
                "lang": lang,
                "source": mention["source"],
                "site": mention["site"],
                "author": author["handle"] or author["id"],
            }
            found = self.finder.find(text)
            matches = self.matcher.match_terms(found, facts)
            if matches:
                todo.append((record.partition, mention, text, lang, matches, found))
            else:
                result.unmatched += 1
        started = time.perf_counter()
        detect, score = self.detector.detect, self.scorer.score
        langs = [lang or detect(text) for _, _, text, lang, _, _ in todo]
        tones = [score(text, lang) for (_, _, text, _, _, _), lang in zip(todo, langs, strict=True)]
        result.scoring_seconds = time.perf_counter() - started
        now = utc_now()
        for (partition, mention, _, _, matches, found), lang, tone in zip(todo, langs, tones, strict=True):
            topics = self.topics.classify_terms(found, lang)
            reach = mention["author"]["followers"] or 0
            for match in matches:
                scored = {
                    **mention,
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
                    "reach": reach,
                    "scored_at": now,
                }
                result.scored.append((match.brand, orjson.dumps(scored)))
                result.pairs.append((partition, scored))
                label_key = (match.brand, tone.label)
                result.brand_labels[label_key] = result.brand_labels.get(label_key, 0) + 1
        if combine:
            self.combine_partials(result)
        return result

    def combine_partials(self, result: Stage1Result) -> None:
        """One kpi-partial per (brand, minute) of everything `result` holds, spanning its offsets."""
        result.partials = kpi.combine_partials(result.pairs, result.offsets, self.flags)


# --- stage 2 -------------------------------------------------------------------------------------


def parse_partial(raw: bytes) -> dict[str, Any]:
    """Validate a kpi-partial/1 record and return it as a dict with `bucket_epoch` added."""
    partial = load(KpiPartial, raw)
    record = partial.model_dump(by_alias=True)
    record["bucket_epoch"] = kpi.epoch(partial.bucket)
    return record


def new_brand_state() -> dict[str, Any]:
    # minutes: minute → mentions; tone: minute → [scored, negative, compound sum] (both over the rules'
    # horizon); last_fired: rule (or rule|author, rule|term) → the window start of its last alert;
    # drop_checked: the newest settled minute the volume-drop rule has looked at.
    return {
        "applied": {},
        "minutes": {},
        "tone": {},
        "first_minute": None,
        "now_minute": None,
        "last_fired": {},
        "live": {},
        "drop_checked": 0,
        "pruned_minute": None,
    }


@dataclass
class Stage2Result:
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    applied: int = 0
    replayed: int = 0


@dataclass
class _Flagged:
    """The flagged mentions (minute, mention) of the partials one `apply` call folded."""

    influencers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    keywords: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


_WINDOW_RULES: tuple[tuple[str, alerts.WindowRule], ...] = (
    ("volume_spike", alerts.volume_spike),
    ("volume_drop", alerts.volume_drop),
    ("negative_surge", alerts.negative_surge),
    ("sentiment_drop", alerts.sentiment_drop),
)
_TONE_KINDS = {"negative_surge", "sentiment_drop"}


class Stage2:
    def __init__(self, config: EcouteConfig) -> None:
        self.config = config
        self._rules: dict[str, AlertsConfig] = {}

    def rules(self, brand: str) -> AlertsConfig:
        """The brand's alert rules (global defaults with its overrides), computed once per brand."""
        rules = self._rules.get(brand)
        if rules is None:
            rules = self._rules[brand] = alerts.brand_rules(self.config, brand)
        return rules

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
        minutes_touched: set[int] = set()
        flagged = _Flagged()
        tone = state.setdefault("tone", {})
        for partial in partials:
            # Each table record says for itself which partials it holds: the brand's state and every window
            # bucket are separate changelog records, and stage 2 is at-least-once, so after a crash or a broker
            # kill one may come back holding a partial the other lacks. A partial is folded into each bucket
            # that lacks it (buckets written before these marks existed go by the brand's state), and into the
            # brand's state if that lacks it.
            replay = kpi.is_replay(state["applied"], partial)
            minute = partial["bucket_epoch"]
            for window in kpi.WINDOW_SECONDS:
                start = kpi.window_start(minute, window)
                key = kpi.bucket_key(brand, window, start)
                bucket = touched[key][2] if key in touched else buckets.get(key)
                if bucket is None:
                    if replay and start < state["now_minute"] - RETENTION_SECONDS[window]:
                        continue  # pruned since: a replay must not bring it back
                    bucket = kpi.new_bucket()
                marks = bucket.get("applied")
                if kpi.is_replay(marks, partial) if marks is not None else replay:
                    continue
                if marks is not None:
                    kpi.mark_applied(marks, partial)
                if key not in touched:
                    touched[key] = (window, start, bucket)
                    live = state["live"].setdefault(window, [])
                    if start not in live:
                        live.append(start)
                kpi.fold_partial(bucket, partial)
            if replay:
                result.replayed += 1
                continue
            kpi.mark_applied(state["applied"], partial)
            result.applied += 1
            # A clock a mention claims is never trusted beyond the wall clock: a post dated in the
            # future must not move the brand's "now" (pruning and alert windows follow it).
            clock_minute = min(minute, kpi.window_start(kpi.epoch(now), "1m"))
            minutes = state["minutes"]
            minutes[str(minute)] = minutes.get(str(minute), 0) + partial["mentions"]
            scored = partial["positive"] + partial["neutral"] + partial["negative"]
            if scored:
                entry = tone.setdefault(str(minute), [0, 0, 0.0])
                entry[0] += scored
                entry[1] += partial["negative"]
                entry[2] = round(entry[2] + partial["sentiment_sum"], 6)
            minutes_touched.add(minute)
            flagged.influencers.extend((minute, m) for m in partial.get("influencers", []))
            flagged.keywords.extend((minute, m) for m in partial.get("keywords", []))
            state["first_minute"] = minute if state["first_minute"] is None else min(state["first_minute"], minute)
            newest = state["now_minute"]
            state["now_minute"] = clock_minute if newest is None else max(newest, clock_minute)
        for key, (window, start, bucket) in touched.items():
            buckets[key] = bucket
            result.snapshots.append(kpi.to_kpi(brand, window, start, bucket, now))
        if result.applied:
            self._prune(brand, state, buckets)
            result.alerts.extend(self._evaluate_alerts(brand, state, buckets, now, minutes_touched, flagged))
        return result

    def _horizon(self, brand: str) -> int:
        """How far back (seconds) the window rules read per-minute history: baseline + window + a minute."""
        rules = self.rules(brand)
        spans = [int(getattr(rules, kind).baseline + getattr(rules, kind).window) for kind, _ in _WINDOW_RULES]
        return max(spans) + 60

    def _prune(self, brand: str, state: dict[str, Any], buckets: MutableMapping[str, Any]) -> None:
        newest = state["now_minute"]
        for window, starts in state["live"].items():
            keep = [s for s in starts if s >= newest - RETENTION_SECONDS[window]]
            for start in set(starts) - set(keep):
                buckets.pop(kpi.bucket_key(brand, window, start), None)
            state["live"][window] = keep
        horizon = newest - self._horizon(brand)
        # Rebuilding the per-minute maps costs as much as the rules: once per minute of the clock is enough.
        if state.get("pruned_minute") != newest:
            state["minutes"] = {m: n for m, n in state["minutes"].items() if int(m) >= horizon}
            state["tone"] = {m: t for m, t in state.get("tone", {}).items() if int(m) >= horizon}
            state["pruned_minute"] = newest
        # Per-author and per-term cooldowns are forgotten once they no longer hold anything back.
        rules = self.rules(brand)
        cooldowns = {"influencer": rules.influencer.cooldown, "keyword": rules.keywords.cooldown}
        state["last_fired"] = {
            key: at
            for key, at in state["last_fired"].items()
            if "|" not in key or newest - at < cooldowns.get(key.split("|", 1)[0], 0)
        }

    def _evaluate_alerts(
        self,
        brand: str,
        state: dict[str, Any],
        buckets: MutableMapping[str, Any],
        now: datetime,
        minutes_touched: set[int],
        flagged: _Flagged,
    ) -> list[dict[str, Any]]:
        rules = self.rules(brand)
        now_epoch = kpi.epoch(now)
        now_minute: int = state["now_minute"]
        first_minute: int = state["first_minute"]
        last_fired: dict[str, int] = state["last_fired"]
        out: list[dict[str, Any]] = []
        # Every minute this batch touched (a spike in the middle of a catch-up batch counts), and the
        # newest minutes, whose windows now hold more (or, for drops, have settled).
        candidates = {m for m in minutes_touched | {now_minute, now_minute - 60} if first_minute <= m <= now_minute}
        series: alerts.Series | None = None
        for kind, check in _WINDOW_RULES:
            rule = getattr(rules, kind)
            if not rule.enabled:
                continue
            minutes = {m for m in candidates if m + 60 >= now_epoch - rule.max_age}
            if kind == "volume_drop":
                # Only settled minutes: ended SETTLE_SECONDS ago on the wall clock and followed by a
                # later minute of the brand (in a catch-up, the batch's newest minute may go on in the
                # next batch). Always the newest settled one, so a batch arriving early in a minute
                # still gets the window that ended a minute ago. Each minute is looked at once: more
                # mentions coming late can't make a drop.
                settled = min(kpi.window_start(now_epoch - 60 - alerts.SETTLE_SECONDS, "1m"), now_minute - 60)
                checked = state.get("drop_checked", 0)
                minutes = {m for m in minutes if checked < m <= settled}
                if checked < settled and first_minute <= settled and settled + 60 >= now_epoch - rule.max_age:
                    minutes.add(settled)
                state["drop_checked"] = max(checked, settled)
            minutes = {m for m in minutes if _could_fire(kind, rule, state, m, last_fired.get(kind))}
            if not minutes:
                continue
            if series is None:
                lo = now_minute - self._horizon(brand)
                series = alerts.Series(lo, now_minute + 60, state["minutes"], state["tone"])
            findings = alerts.evaluate_window_rule(check, series, first_minute, minutes, rule, last_fired.get(kind))
            for finding in findings:
                last_fired[kind] = finding.window_start
                out.append(self._window_alert(brand, kind, finding, rule.window, buckets, now))
        for hit in alerts.influencer_findings(flagged.influencers, rules.influencer, last_fired, now_epoch):
            out.append(self._influencer_alert(brand, hit, rules, buckets, now))
        min_followers = rules.influencer.min_followers if rules.influencer.enabled else None
        for found in alerts.keyword_findings(flagged.keywords, rules.keywords, min_followers, last_fired, now_epoch):
            out.append(self._keyword_alert(brand, found, buckets, now))
        out.sort(key=lambda a: (a["window"]["start"], a["kind"], a["id"]))
        return out

    @staticmethod
    def _evidence(
        brand: str, start: int, end: int, buckets: MutableMapping[str, Any], negative: bool = False
    ) -> dict[str, Any]:
        """Topics, crisis terms, authors and sample URLs of the 1-minute buckets of [start, end)."""
        topics: dict[str, int] = {}
        terms: dict[str, int] = {}
        authors: list[str] = []
        samples: list[str] = []
        negative_samples: list[str] = []
        for minute in range(start, end, 60):
            bucket = buckets.get(kpi.bucket_key(brand, "1m", minute))
            if not bucket:
                continue
            for topic, n in bucket["topics"].items():
                topics[topic] = topics.get(topic, 0) + n
            for term, n in bucket.get("terms", {}).items():
                terms[term] = terms.get(term, 0) + n
            authors.extend(a for a in bucket["authors"] if a not in authors)
            samples.extend(s for s in bucket["samples"] if s not in samples)
            negative_samples.extend(s for s in bucket.get("negative_samples", []) if s not in negative_samples)
        if negative and negative_samples:
            # For a tone alert, the negative mentions are what to read first.
            samples = negative_samples
        return {
            "terms": [t for t, _ in sorted(terms.items(), key=lambda kv: (-kv[1], kv[0]))[:10]],
            "topics": [t for t, _ in sorted(topics.items(), key=lambda kv: (-kv[1], kv[0]))[:5]],
            "authors": authors[:10],
            "sample_mentions": samples[:5],
        }

    def _window_alert(
        self,
        brand: str,
        kind: str,
        finding: alerts.Finding,
        window: float,
        buckets: MutableMapping[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        minutes = int(window) // 60
        observed, baseline = finding.observed, finding.baseline
        if kind == "volume_spike":
            ratio = f"{observed / baseline:.1f}×" if baseline else "far above"
            message = f"{brand}: {observed:g} mentions in the last {minutes} min, {ratio} the usual {baseline:g}"
        elif kind == "volume_drop":
            message = f"{brand}: only {observed:g} mentions in the last {minutes} min, usually {baseline:g}"
        elif kind == "negative_surge":
            details = finding.details
            message = (
                f"{brand}: {observed:.0%} of the last {minutes} min's mentions are negative "
                f"({details['negative']} of {details['scored']}), usually {baseline:.0%}"
            )
        else:
            message = f"{brand}: average tone {observed:+.2f} over the last {minutes} min, down from {baseline:+.2f}"
        return _alert(
            brand,
            kind,
            alert_id(brand, kind, finding.window_start),
            finding.severity,
            (finding.window_start, finding.window_end),
            (observed, baseline, finding.threshold),
            message,
            self._evidence(brand, finding.window_start, finding.window_end, buckets, negative=kind in _TONE_KINDS),
            now,
        )

    def _influencer_alert(
        self,
        brand: str,
        found: alerts.InfluencerFinding,
        rules: AlertsConfig,
        buckets: MutableMapping[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        mention = found.mention
        who = mention["author"] or "an author"
        tone = f", {mention['label']}" if mention["label"] in ("negative", "positive") else ""
        return _alert(
            brand,
            "influencer",
            alert_id(brand, "influencer", mention["id"]),
            found.severity,
            (found.minute, found.minute + 60),
            (mention["followers"], 0, rules.influencer.min_followers),
            f"{brand}: {who} ({mention['followers']:,} followers) mentioned {brand}{tone}",
            {
                "terms": mention["terms"],
                "topics": mention["topics"],
                "authors": [mention["author"]] if mention["author"] else [],
                "sample_mentions": [mention["url"]] if mention["url"] else [],
            },
            now,
        )

    def _keyword_alert(
        self, brand: str, found: alerts.KeywordFinding, buckets: MutableMapping[str, Any], now: datetime
    ) -> dict[str, Any]:
        mentions = found.mentions
        terms = [found.term, *sorted({t for m in mentions for t in m["terms"]} - {found.term})]
        topics: dict[str, int] = {}
        for mention in mentions:
            for topic in mention["topics"]:
                topics[topic] = topics.get(topic, 0) + 1
        authors = list(dict.fromkeys(m["author"] for m in mentions if m["author"]))
        count = f"{len(mentions)} mentions" if len(mentions) > 1 else "a mention"
        return _alert(
            brand,
            "keyword",
            alert_id(brand, "keyword", f"{found.term}|{found.minute}"),
            found.severity,
            (found.minute, found.minute + 60),
            (len(mentions), 0, 1),
            f'{brand}: "{found.term}" in {count} of {brand}',
            {
                "terms": terms,
                "topics": [t for t, _ in sorted(topics.items(), key=lambda kv: (-kv[1], kv[0]))[:5]],
                "authors": authors[:10],
                "sample_mentions": [m["url"] for m in mentions if m["url"]][:5],
            },
            now,
        )


def _could_fire(kind: str, rule: Any, state: dict[str, Any], minute: int, last_fired: int | None) -> bool:
    """A cheap look at the window ending with `minute` (warm-up, cooldown, minimum counts) before the
    rule reads the baseline: most batches of a busy brand stop here."""
    block = max(60, int(rule.window) // 60 * 60)
    start = minute + 60 - block
    if minute - state["first_minute"] < rule.warmup:
        return False
    if last_fired is not None and start - last_fired < rule.cooldown:
        return False
    window = [str(m) for m in range(start, minute + 60, 60)]
    minutes: dict[str, int] = state["minutes"]
    tone: dict[str, list[float]] = state["tone"]
    if kind == "volume_spike":
        return sum(minutes.get(m, 0) for m in window) >= int(rule.min_mentions)
    if kind == "negative_surge":
        return sum(tone[m][1] for m in window if m in tone) >= int(rule.min_negative)
    if kind == "sentiment_drop":
        return sum(tone[m][0] for m in window if m in tone) >= int(rule.min_mentions)
    return True


def _alert(
    brand: str,
    kind: str,
    identifier: str,
    severity: str,
    window: tuple[int, int],
    values: tuple[float, float, float],
    message: str,
    evidence: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """An alert/1 record; `values` are (observed, baseline, threshold)."""
    observed, baseline, threshold = values
    return {
        "schema": "alert/1",
        "id": identifier,
        "brand": brand,
        "kind": kind,
        "severity": severity,
        "window": {"start": kpi.from_epoch(window[0]), "end": kpi.from_epoch(window[1])},
        "observed": observed,
        "baseline": baseline,
        "threshold": threshold,
        "message": message,
        "evidence": evidence,
        "created_at": now,
    }
