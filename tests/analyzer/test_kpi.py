"""KPI arithmetic: window starts, stage 1's per-(brand, minute, partition) partials, stage 2's replay
detection, and folding partials into kpi/1 records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from schemas import Kpi, KpiPartial, load
from services.analyzer import kpi

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)  # a minute (and hour) boundary
T0_EPOCH = int(T0.timestamp())


def scored(
    brand: str = "acme",
    at: datetime = T0,
    label: str = "positive",
    compound: float = 0.5,
    author: dict[str, Any] | None = None,
    url: str | None = "https://example.com/1",
    topics: tuple[str, ...] = (),
    source: str = "rss",
    likes: int = 0,
    shares: int = 0,
    comments: int = 0,
    reach: int = 0,
) -> dict[str, Any]:
    """A scored mention as stage 1 holds it before serialising (datetimes, not strings)."""
    return {
        "brand": brand,
        "published_at": at,
        "sentiment": {"compound": compound, "pos": 0.0, "neu": 1.0, "neg": 0.0, "label": label},
        "engagement": {"likes": likes, "shares": shares, "comments": comments, "views": 7},
        "reach": reach,
        "topics": list(topics),
        "source": source,
        "author": author if author is not None else {"id": "a1", "handle": None},
        "url": url,
    }


# --- windows ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "window", "start"),
    [
        (datetime(2024, 5, 6, 10, 17, 42, tzinfo=UTC), "1m", datetime(2024, 5, 6, 10, 17, tzinfo=UTC)),
        (datetime(2024, 5, 6, 10, 17, 0, tzinfo=UTC), "1m", datetime(2024, 5, 6, 10, 17, tzinfo=UTC)),
        (datetime(2024, 5, 6, 10, 17, 59, tzinfo=UTC), "1m", datetime(2024, 5, 6, 10, 17, tzinfo=UTC)),
        (datetime(2024, 5, 6, 10, 59, 59, tzinfo=UTC), "1h", datetime(2024, 5, 6, 10, 0, tzinfo=UTC)),
        (datetime(2024, 5, 6, 11, 0, 0, tzinfo=UTC), "1h", datetime(2024, 5, 6, 11, 0, tzinfo=UTC)),
        (datetime(2024, 5, 6, 23, 59, 59, tzinfo=UTC), "1d", datetime(2024, 5, 6, tzinfo=UTC)),
        (datetime(2024, 5, 7, 0, 0, 0, tzinfo=UTC), "1d", datetime(2024, 5, 7, tzinfo=UTC)),
        (datetime(1970, 1, 1, 0, 0, 30, tzinfo=UTC), "1m", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_window_start(moment: datetime, window: str, start: datetime) -> None:
    assert kpi.window_start(kpi.epoch(moment), window) == int(start.timestamp())
    assert kpi.from_epoch(kpi.window_start(kpi.epoch(moment), window)) == start


def test_window_sizes_and_unknown_window() -> None:
    assert kpi.WINDOW_SECONDS == {"1m": 60, "1h": 3600, "1d": 86400}
    with pytest.raises(KeyError):
        kpi.window_start(T0_EPOCH, "5m")


def test_epoch_round_trip_is_utc() -> None:
    assert kpi.from_epoch(T0_EPOCH) == T0
    assert kpi.from_epoch(T0_EPOCH).tzinfo is UTC
    assert kpi.epoch(datetime(2024, 5, 6, 12, 0, tzinfo=timezone(timedelta(hours=2)))) == T0_EPOCH


# --- stage 1: combine ------------------------------------------------------------------------------


def by_key(partials: list[dict[str, Any]]) -> dict[tuple[str, int, int], dict[str, Any]]:
    return {(p["brand"], int(p["bucket"].timestamp()), p["origin"]["partition"]): p for p in partials}


def test_combine_one_partial_per_brand_minute_and_partition() -> None:
    batch = [
        (0, scored("acme", T0)),
        (0, scored("acme", T0 + timedelta(seconds=59))),
        (0, scored("acme", T0 + timedelta(seconds=60))),
        (0, scored("globex", T0 + timedelta(seconds=10))),
        (1, scored("acme", T0 + timedelta(seconds=5))),
    ]
    partials = kpi.combine_partials(batch, {0: (100, 120), 1: (7, 9)})
    got = by_key(partials)
    assert set(got) == {
        ("acme", T0_EPOCH, 0),
        ("acme", T0_EPOCH + 60, 0),
        ("globex", T0_EPOCH, 0),
        ("acme", T0_EPOCH, 1),
    }
    assert got[("acme", T0_EPOCH, 0)]["mentions"] == 2
    assert got[("acme", T0_EPOCH + 60, 0)]["mentions"] == 1
    assert got[("globex", T0_EPOCH, 0)]["mentions"] == 1
    assert got[("acme", T0_EPOCH, 1)]["mentions"] == 1
    # Origin is the whole batch range of the partition, whatever the partial's own records.
    assert got[("acme", T0_EPOCH + 60, 0)]["origin"] == {"partition": 0, "first_offset": 100, "last_offset": 120}
    assert got[("acme", T0_EPOCH, 1)]["origin"] == {"partition": 1, "first_offset": 7, "last_offset": 9}
    assert all(p["bucket"].tzinfo is not None for p in partials)
    assert all(p["schema"] == "kpi-partial/1" for p in partials)


def test_combine_counters() -> None:
    batch = [
        (0, scored(label="positive", compound=0.8, likes=3, shares=1, comments=2, reach=100, topics=("price",))),
        (0, scored(label="negative", compound=-0.6, likes=1, reach=50, topics=("price", "support"), source="reddit")),
        (0, scored(label="neutral", compound=0.01, comments=4, reach=0)),
        (0, scored(label="unscored", compound=0.9, reach=5)),
    ]
    [partial] = kpi.combine_partials(batch, {0: (0, 3)})
    assert partial["mentions"] == 4
    assert (partial["positive"], partial["negative"], partial["neutral"], partial["unscored"]) == (1, 1, 1, 1)
    # An unscored mention's compound is not part of the sum.
    assert partial["sentiment_sum"] == pytest.approx(0.8 - 0.6 + 0.01)
    assert partial["engagement"] == {"likes": 4, "shares": 1, "comments": 6}
    assert partial["reach"] == 155
    assert partial["topics"] == {"price": 2, "support": 1}
    assert partial["sources"] == {"rss": 3, "reddit": 1}


def test_combine_authors_by_id_then_handle() -> None:
    batch = [
        (0, scored(author={"id": "u1", "handle": "alice"})),
        (0, scored(author={"id": "u1", "handle": "alice2"})),
        (0, scored(author={"id": None, "handle": "bob"})),
        (0, scored(author={"handle": "bob"})),
        (0, scored(author={})),
        (0, scored(author={"id": "", "handle": ""})),
    ]
    [partial] = kpi.combine_partials(batch, {0: (0, 5)})
    assert partial["authors"] == ["bob", "u1"]
    assert partial["unique_authors"] == 2
    assert partial["mentions"] == 6


def test_combine_caps_samples() -> None:
    batch = [(0, scored(url=f"https://example.com/{i}")) for i in range(8)]
    batch.insert(0, (0, scored(url=None)))
    [partial] = kpi.combine_partials(batch, {0: (0, 8)})
    assert partial["samples"] == [f"https://example.com/{i}" for i in range(kpi.SAMPLES_PER_BUCKET)]
    assert partial["mentions"] == 9


def test_combine_empty_batch() -> None:
    assert kpi.combine_partials([], {0: (0, 10)}) == []


def test_combined_partial_validates_as_kpi_partial() -> None:
    [partial] = kpi.combine_partials([(3, scored(topics=("price",)))], {3: (10, 20)})
    model = load(KpiPartial, orjson.dumps(partial))
    assert model.bucket == T0
    assert model.origin.partition == 3
    assert model.mentions == 1


# --- stage 2: replays ------------------------------------------------------------------------------


def partial(partition: int, last: int, bucket: int, first: int = 0) -> dict[str, Any]:
    return {"origin": {"partition": partition, "first_offset": first, "last_offset": last}, "bucket_epoch": bucket}


def test_new_partition_is_not_a_replay() -> None:
    applied: dict[str, Any] = {}
    p = partial(0, 10, T0_EPOCH)
    assert not kpi.is_replay(applied, p)
    kpi.mark_applied(applied, p)
    assert applied == {"0": [10, [T0_EPOCH]]}
    assert not kpi.is_replay(applied, partial(1, 3, T0_EPOCH))


def test_same_partial_again_is_a_replay() -> None:
    applied: dict[str, Any] = {}
    kpi.mark_applied(applied, partial(0, 10, T0_EPOCH))
    assert kpi.is_replay(applied, partial(0, 10, T0_EPOCH))


def test_same_batch_other_bucket_is_new() -> None:
    applied: dict[str, Any] = {}
    kpi.mark_applied(applied, partial(0, 10, T0_EPOCH))
    second = partial(0, 10, T0_EPOCH + 60)
    assert not kpi.is_replay(applied, second)
    kpi.mark_applied(applied, second)
    assert applied == {"0": [10, [T0_EPOCH, T0_EPOCH + 60]]}
    assert kpi.is_replay(applied, partial(0, 10, T0_EPOCH))
    assert kpi.is_replay(applied, partial(0, 10, T0_EPOCH + 60))


def test_older_batch_is_a_replay_newer_batch_is_not() -> None:
    applied: dict[str, Any] = {}
    kpi.mark_applied(applied, partial(0, 10, T0_EPOCH))
    assert kpi.is_replay(applied, partial(0, 9, T0_EPOCH + 60))
    assert kpi.is_replay(applied, partial(0, 5, T0_EPOCH))
    newer = partial(0, 11, T0_EPOCH)
    assert not kpi.is_replay(applied, newer)
    kpi.mark_applied(applied, newer)
    # A newer batch resets the bucket list: the older batch is now recognised by its offset alone.
    assert applied == {"0": [11, [T0_EPOCH]]}
    assert kpi.is_replay(applied, partial(0, 10, T0_EPOCH + 120))


def test_partitions_are_tracked_separately() -> None:
    applied: dict[str, Any] = {}
    kpi.mark_applied(applied, partial(0, 100, T0_EPOCH))
    kpi.mark_applied(applied, partial(1, 5, T0_EPOCH))
    assert not kpi.is_replay(applied, partial(1, 6, T0_EPOCH))
    assert kpi.is_replay(applied, partial(0, 6, T0_EPOCH))
    # The state survives a JSON round trip (it lives in a Faust table).
    restored = orjson.loads(orjson.dumps(applied))
    assert kpi.is_replay(restored, partial(1, 5, T0_EPOCH))
    assert not kpi.is_replay(restored, partial(1, 5, T0_EPOCH + 60))


# --- stage 2: fold and snapshot --------------------------------------------------------------------


def test_fold_partials_into_a_bucket_and_to_kpi() -> None:
    first = kpi.combine_partials(
        [
            (0, scored(label="positive", compound=0.5, likes=2, reach=10, topics=("price",), author={"id": "u1"})),
            (0, scored(label="negative", compound=-0.25, reach=5, author={"id": "u2"}, url="https://e.com/2")),
        ],
        {0: (0, 1)},
    )[0]
    second = kpi.combine_partials(
        [
            (1, scored(label="neutral", compound=0.0, comments=1, topics=("price", "support"), author={"id": "u2"})),
            (1, scored(label="positive", compound=0.75, source="reddit", author={"id": "u3"}, url=None)),
        ],
        {1: (0, 1)},
    )[0]
    bucket = kpi.new_bucket()
    kpi.fold_partial(bucket, first)
    kpi.fold_partial(bucket, second)
    assert bucket["mentions"] == 4
    assert (bucket["positive"], bucket["neutral"], bucket["negative"]) == (2, 1, 1)
    assert bucket["sentiment_sum"] == pytest.approx(1.0)
    assert bucket["engagement"] == {"likes": 2, "shares": 0, "comments": 1}
    assert bucket["reach"] == 15
    assert bucket["topics"] == {"price": 2, "support": 1}
    assert bucket["sources"] == {"rss": 3, "reddit": 1}
    assert bucket["authors"] == ["u1", "u2", "u3"]
    assert bucket["samples"] == ["https://example.com/1", "https://e.com/2", "https://example.com/1"]

    updated = datetime(2024, 5, 6, 10, 5, tzinfo=UTC)
    record = kpi.to_kpi("acme", "1h", T0_EPOCH, bucket, updated)
    model = load(Kpi, orjson.dumps(record))
    assert model.brand == "acme"
    assert model.window == "1h"
    assert model.start == T0
    assert model.end == T0 + timedelta(hours=1)
    assert model.mentions == 4
    assert model.unique_authors == 3
    assert model.sentiment_sum == pytest.approx(1.0)
    assert model.topics == {"price": 2, "support": 1}
    assert model.updated_at == updated


@pytest.mark.parametrize(("window", "length"), [("1m", 60), ("1h", 3600), ("1d", 86400)])
def test_to_kpi_window_end(window: str, length: int) -> None:
    record = kpi.to_kpi("acme", window, T0_EPOCH, kpi.new_bucket(), T0)
    assert record["end"] - record["start"] == timedelta(seconds=length)
    assert load(Kpi, orjson.dumps(record)).mentions == 0


def test_fold_caps_samples_across_partials() -> None:
    bucket = kpi.new_bucket()
    for i in range(3):
        urls = [f"https://e.com/{i}/{j}" for j in range(3)]
        kpi.fold_partial(bucket, {**kpi.new_counters(), "authors": [], "samples": urls})
    assert bucket["samples"] == [f"https://e.com/{i}/{j}" for i, j in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]]


def test_add_counters_adds_every_counter() -> None:
    into = kpi.new_counters()
    more = {
        "mentions": 3,
        "positive": 1,
        "neutral": 1,
        "negative": 1,
        "unscored": 0,
        "sentiment_sum": 0.1234567,
        "engagement": {"likes": 1, "shares": 2, "comments": 3},
        "reach": 9,
        "topics": {"a": 1},
        "sources": {"rss": 3},
    }
    kpi.add_counters(into, more)
    kpi.add_counters(into, more)
    assert into["mentions"] == 6
    assert into["reach"] == 18
    assert into["sentiment_sum"] == pytest.approx(0.246914, abs=1e-9)  # rounded to 6 places at each step
    assert into["engagement"] == {"likes": 2, "shares": 4, "comments": 6}
    assert into["topics"] == {"a": 2}
    assert into["sources"] == {"rss": 6}
    assert kpi.bucket_key("acme", "1m", 60) == "acme|1m|60"


# --- stage 2: distinct authors of a bucket ---------------------------------------------------------


def authors_partial(authors: list[str]) -> dict[str, Any]:
    return {**kpi.new_counters(), "authors": authors, "samples": []}


def fold_authors(bucket: dict[str, Any], authors: list[str], per_partial: int = 50) -> None:
    for i in range(0, len(authors), per_partial):
        kpi.fold_partial(bucket, authors_partial(authors[i : i + per_partial]))


def test_bucket_counts_authors_exactly_up_to_the_limit() -> None:
    bucket = kpi.new_bucket()
    authors = [f"u{i:04d}" for i in range(kpi.EXACT_AUTHORS)]
    fold_authors(bucket, authors)
    fold_authors(bucket, authors[:100])  # the same authors again count once
    assert bucket["authors"] == authors
    assert "authors_sketch" not in bucket
    assert kpi.to_kpi("acme", "1d", T0_EPOCH, bucket, T0)["unique_authors"] == kpi.EXACT_AUTHORS


def test_past_the_limit_a_sketch_counts_authors_in_constant_space() -> None:
    bucket = kpi.new_bucket()
    fold_authors(bucket, [f"u{i}" for i in range(kpi.EXACT_AUTHORS + 1)])
    assert kpi.unique_authors(bucket) == kpi.EXACT_AUTHORS + 1  # never below what was counted exactly
    assert len(bucket["authors"]) == kpi.AUTHOR_EVIDENCE  # a few ids stay, for alert evidence
    size = len(orjson.dumps(bucket))
    fold_authors(bucket, [f"u{i}" for i in range(50_000)])
    assert len(orjson.dumps(bucket)) == size
    assert kpi.unique_authors(bucket) == pytest.approx(50_000, rel=0.05)
    before = kpi.unique_authors(bucket)
    fold_authors(bucket, [f"u{i}" for i in range(0, 50_000, 7)])  # seen before: nothing new
    assert kpi.unique_authors(bucket) == before


@pytest.mark.parametrize("n", [300, 1_000, 5_000, 12_000, 40_000, 200_000])
def test_sketch_estimate_is_within_a_few_percent(n: int) -> None:
    bucket = kpi.new_bucket()
    fold_authors(bucket, [f"author-{n}-{i}" for i in range(n)], per_partial=500)
    # ~1.6% standard error with 4,096 registers: 5% is three standard errors.
    assert kpi.unique_authors(bucket) == pytest.approx(n, rel=0.05)


def test_sketched_bucket_survives_the_changelog_and_merges_with_repeats() -> None:
    bucket = kpi.new_bucket()
    fold_authors(bucket, [f"u{i}" for i in range(3_000)])
    restored = orjson.loads(orjson.dumps(bucket))  # the bucket lives in a Faust table, as JSON
    fold_authors(restored, [f"u{i}" for i in range(2_000, 6_000)])
    assert kpi.unique_authors(restored) == pytest.approx(6_000, rel=0.05)
    record = kpi.to_kpi("acme", "1d", T0_EPOCH, restored, T0)
    assert load(Kpi, orjson.dumps(record)).unique_authors == kpi.unique_authors(restored)
    assert "authors_sketch" not in record
