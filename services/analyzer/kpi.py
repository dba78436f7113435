"""KPI arithmetic, free of any framework: stage 1 combines a batch of scored mentions into
per-(brand, minute) partials; stage 2 folds partials into tumbling 1m/1h/1d windows, skipping a
partial it has already applied (recognised by its origin), so replays never double-count.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.analyzer.alerts import MAX_INFLUENCERS, MAX_KEYWORD_HITS, MentionFlags, flagged_mention

WINDOW_SECONDS: dict[str, int] = {"1m": 60, "1h": 3600, "1d": 86400}
SAMPLES_PER_BUCKET = 5
# A window bucket counts its distinct authors exactly, by their ids, up to EXACT_AUTHORS; past that a
# HyperLogLog sketch (2**AUTHOR_SKETCH_BITS one-byte registers, ~1.6% standard error, ~5.5 KB in the
# table) counts them, and the bucket keeps AUTHOR_EVIDENCE ids for alert evidence. Without it a busy
# brand's day bucket held every author id it ever saw, in memory and in each changelog write.
EXACT_AUTHORS = 256
AUTHOR_SKETCH_BITS = 12
AUTHOR_EVIDENCE = 10


def epoch(ts: datetime) -> int:
    return int(ts.timestamp())


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def window_start(seconds: int, window: str) -> int:
    """Start (epoch seconds) of the tumbling window of size `window` that holds `seconds`."""
    size = WINDOW_SECONDS[window]
    return seconds - seconds % size


def new_counters() -> dict[str, Any]:
    return {
        "mentions": 0,
        "positive": 0,
        "neutral": 0,
        "negative": 0,
        "unscored": 0,
        "sentiment_sum": 0.0,
        "engagement": {"likes": 0, "shares": 0, "comments": 0},
        "reach": 0,
        "topics": {},
        "sources": {},
    }


def _add_counts(into: dict[str, int], more: dict[str, int]) -> None:
    for name, n in more.items():
        into[name] = into.get(name, 0) + n


def add_counters(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Add every counter of `more` to `into` (both shaped like `new_counters()`)."""
    for name in ("mentions", "positive", "neutral", "negative", "unscored", "reach"):
        into[name] += more.get(name, 0)
    into["sentiment_sum"] = round(into["sentiment_sum"] + more.get("sentiment_sum", 0.0), 6)
    _add_counts(into["engagement"], more.get("engagement", {}))
    _add_counts(into["topics"], more.get("topics", {}))
    _add_counts(into["sources"], more.get("sources", {}))


@dataclass
class PartialBuilder:
    """Counters of one (brand, minute) over one stage-1 batch of one input partition."""

    brand: str
    bucket: int
    partition: int
    first_offset: int
    last_offset: int
    counters: dict[str, Any] = field(default_factory=new_counters)
    authors: set[str] = field(default_factory=set)
    samples: list[str] = field(default_factory=list)
    negative_samples: list[str] = field(default_factory=list)
    # What the per-mention alert rules look for (influencer authors, crisis terms); None: nothing.
    flags: MentionFlags | None = None
    influencers: list[dict[str, Any]] = field(default_factory=list)
    keywords: list[dict[str, Any]] = field(default_factory=list)
    # Once MAX_INFLUENCERS are kept, an author with fewer followers than the last of them can't
    # make the top: not even looked at.
    influencer_floor: int = 0

    def add(self, scored: dict[str, Any]) -> None:
        c = self.counters
        c["mentions"] += 1
        sentiment = scored["sentiment"]
        c[sentiment["label"]] += 1
        if sentiment["label"] != "unscored":
            c["sentiment_sum"] = round(c["sentiment_sum"] + sentiment["compound"], 6)
        engagement = scored["engagement"]
        for name in ("likes", "shares", "comments"):
            c["engagement"][name] += engagement.get(name, 0)
        c["reach"] += scored["reach"]
        for topic in scored["topics"]:
            c["topics"][topic] = c["topics"].get(topic, 0) + 1
        c["sources"][scored["source"]] = c["sources"].get(scored["source"], 0) + 1
        author = scored["author"]
        author_id = author.get("id") or author.get("handle")
        if author_id:
            self.authors.add(author_id)
        if scored.get("url") and len(self.samples) < SAMPLES_PER_BUCKET:
            self.samples.append(scored["url"])
        if sentiment["label"] == "negative" and scored.get("url") and len(self.negative_samples) < SAMPLES_PER_BUCKET:
            self.negative_samples.append(scored["url"])
        if self.flags is not None:
            self._flag(scored, self.flags)

    def _flag(self, scored: dict[str, Any], flags: MentionFlags) -> None:
        influencer, terms = flags.flag(scored)
        influencer = influencer and (scored.get("reach") or 0) >= self.influencer_floor
        if not influencer and not terms:
            return
        flagged = flagged_mention(scored, terms)
        if influencer:
            self.influencers.append(flagged)
            if len(self.influencers) >= 2 * MAX_INFLUENCERS:
                self.influencers = self._top_influencers()
                self.influencer_floor = self.influencers[-1]["followers"]
        if terms and len(self.keywords) < MAX_KEYWORD_HITS:
            self.keywords.append(flagged)

    def to_record(self) -> dict[str, Any]:
        return {
            "schema": "kpi-partial/1",
            "brand": self.brand,
            "bucket": from_epoch(self.bucket),
            **self.counters,
            "unique_authors": len(self.authors),
            "authors": sorted(self.authors),
            "samples": self.samples,
            "negative_samples": self.negative_samples,
            "influencers": self._top_influencers(),
            "keywords": self.keywords,
            "origin": {"partition": self.partition, "first_offset": self.first_offset, "last_offset": self.last_offset},
        }

    def _top_influencers(self) -> list[dict[str, Any]]:
        return sorted(self.influencers, key=lambda m: (-m["followers"], m["id"]))[:MAX_INFLUENCERS]


def combine_partials(
    scored: Iterable[tuple[int, dict[str, Any]]],
    offsets: dict[int, tuple[int, int]],
    flags: MentionFlags | None = None,
) -> list[dict[str, Any]]:
    """Combine (partition, scored-mention) pairs of one batch into kpi-partial/1 records.

    `offsets` gives, per input partition, the first and last offset of the batch: a partial's origin
    is the whole input range it summarises, so stage 2 can recognise it when it comes again.
    `flags` (from the alert config) picks the mentions the per-mention alert rules need.
    """
    builders: dict[tuple[str, int, int], PartialBuilder] = {}
    for partition, record in scored:
        minute = window_start(epoch(record["published_at"]), "1m")
        key = (record["brand"], minute, partition)
        builder = builders.get(key)
        if builder is None:
            first, last = offsets[partition]
            builder = builders[key] = PartialBuilder(record["brand"], minute, partition, first, last, flags=flags)
        builder.add(record)
    return [b.to_record() for b in builders.values()]


# --- stage 2 -------------------------------------------------------------------------------------


def is_replay(applied: dict[str, Any], partial: dict[str, Any]) -> bool:
    """Has this brand already applied `partial`? `applied` maps input partition → [last_offset, [buckets]].

    Stage 1 reads each partition in order and one batch's partials share its offset range, so a
    partial is new iff its range ends after the last one applied, or ends there for a new bucket.
    """
    origin = partial["origin"]
    seen = applied.get(str(origin["partition"]))
    if seen is None:
        return False
    last_offset, buckets = seen
    if origin["last_offset"] < last_offset:
        return True
    return origin["last_offset"] == last_offset and partial["bucket_epoch"] in buckets


def mark_applied(applied: dict[str, Any], partial: dict[str, Any]) -> None:
    origin = partial["origin"]
    key = str(origin["partition"])
    seen = applied.get(key)
    if seen is None or seen[0] != origin["last_offset"]:
        applied[key] = [origin["last_offset"], [partial["bucket_epoch"]]]
    else:
        seen[1].append(partial["bucket_epoch"])


def new_bucket() -> dict[str, Any]:
    # Besides the counters: evidence for alerts (authors, sample URLs, crisis terms seen). Once the
    # authors outgrow EXACT_AUTHORS, "authors_sketch" (base64 registers) counts them instead.
    # "applied": the partials folded in (as the brand state's `applied`, see is_replay), so that the bucket's
    # changelog record alone says whether a replayed partial is in it.
    return {**new_counters(), "authors": [], "samples": [], "negative_samples": [], "terms": {}, "applied": {}}


def fold_partial(bucket: dict[str, Any], partial: dict[str, Any]) -> None:
    """Add a partial's counters, authors and samples to one window bucket (in place)."""
    add_counters(bucket, partial)
    if partial.get("authors"):
        _fold_authors(bucket, partial["authors"])
    for name in ("samples", "negative_samples"):
        kept = bucket.setdefault(name, [])
        room = SAMPLES_PER_BUCKET - len(kept)
        if room > 0:
            kept.extend(partial.get(name, [])[:room])
    terms = bucket.setdefault("terms", {})
    for mention in partial.get("keywords", []):
        for term in mention["terms"]:
            terms[term] = terms.get(term, 0) + 1


def _fold_authors(bucket: dict[str, Any], authors: list[str]) -> None:
    sketch = bucket.get("authors_sketch")
    if sketch is None:
        merged = set(bucket["authors"]).union(authors)
        if len(merged) <= EXACT_AUTHORS:
            bucket["authors"] = sorted(merged)
            return
        # Too many to keep: from now on the sketch counts them, and a few stay as evidence.
        registers = bytearray(1 << AUTHOR_SKETCH_BITS)
        kept = sorted(merged)
        bucket["authors"] = kept[:AUTHOR_EVIDENCE]
        authors = kept
    else:
        registers = bytearray(base64.b64decode(sketch))
    for author in authors:
        _sketch_add(registers, author)
    bucket["authors_sketch"] = base64.b64encode(registers).decode("ascii")


def _sketch_add(registers: bytearray, author: str) -> None:
    """HyperLogLog: the first bits of the author's hash pick a register, which keeps the longest run
    of leading zeros (plus one) seen in the rest."""
    hashed = int.from_bytes(hashlib.blake2b(author.encode(), digest_size=8).digest(), "big")
    rest_bits = 64 - AUTHOR_SKETCH_BITS
    index = hashed >> rest_bits
    rank = rest_bits - (hashed & ((1 << rest_bits) - 1)).bit_length() + 1
    if rank > registers[index]:
        registers[index] = rank


def _sketch_count(registers: bytes) -> float:
    """Otmar Ertl's improved HyperLogLog estimator ("New cardinality estimation algorithms for
    HyperLogLog sketches", 2017): no bias correction tables, no switch between estimators."""
    m = len(registers)
    q = 64 - AUTHOR_SKETCH_BITS
    # How many registers hold each rank; ranks stay small (~log2 of the count): stop once all are counted.
    histogram = [0] * (q + 2)
    counted = 0
    for rank in range(q + 2):
        histogram[rank] = registers.count(rank)
        counted += histogram[rank]
        if counted == m:
            break
    z = m * _tau(1 - histogram[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + histogram[k])
    z += m * _sigma(histogram[0] / m)
    return m * m / (2 * math.log(2)) / z


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1 - x) ** 2 * y
        if z == previous:
            return z / 3


def unique_authors(bucket: dict[str, Any]) -> int:
    """Distinct authors of a bucket: exact up to EXACT_AUTHORS, estimated (~1.6%) past it."""
    sketch = bucket.get("authors_sketch")
    if sketch is None:
        return len(bucket["authors"])
    # The sketch is only started past EXACT_AUTHORS: never report fewer than were counted exactly.
    return max(round(_sketch_count(base64.b64decode(sketch))), EXACT_AUTHORS + 1)


def bucket_key(brand: str, window: str, start: int) -> str:
    return f"{brand}|{window}|{start}"


def to_kpi(brand: str, window: str, start: int, bucket: dict[str, Any], updated_at: datetime) -> dict[str, Any]:
    """A window bucket as a kpi/1 record."""
    return {
        "schema": "kpi/1",
        "brand": brand,
        "window": window,
        "start": from_epoch(start),
        "end": from_epoch(start + WINDOW_SECONDS[window]),
        **{name: copy.deepcopy(bucket[name]) for name in new_counters()},
        "unique_authors": unique_authors(bucket),
        "updated_at": updated_at,
    }
