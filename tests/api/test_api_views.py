"""The API's pure views: rolling windows, replacement of snapshots, eviction, authors, mentions, alerts."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.api.fanout import AlertFanout
from services.api.views import Views, floor_minute, window_bounds
from tests.api.api_factories import MINUTE, alert, kpi, scored

NOW = datetime(2025, 3, 14, 12, 34, 56, tzinfo=UTC)
M0 = floor_minute(NOW)  # 12:34, the current (partial) minute


def test_window_bounds_count_the_current_partial_minute() -> None:
    assert window_bounds("1m", NOW) == (M0, M0 + MINUTE)
    assert window_bounds("5m", NOW) == (M0 - 4 * MINUTE, M0 + MINUTE)
    assert window_bounds("1h", NOW) == (M0 - 59 * MINUTE, M0 + MINUTE)
    assert window_bounds("24h", NOW) == (M0 - 1439 * MINUTE, M0 + MINUTE)


def test_rolling_windows_sum_exactly_the_buckets_inside_them() -> None:
    views = Views()
    # Each bucket has a distinct power of two, so every total names the buckets it summed.
    buckets = {
        M0: 1,
        M0 - 4 * MINUTE: 2,  # first minute of 5m
        M0 - 5 * MINUTE: 4,  # just outside 5m
        M0 - 59 * MINUTE: 8,  # first minute of 1h
        M0 - 60 * MINUTE: 16,  # just outside 1h
        M0 - 1439 * MINUTE: 32,  # first minute of 24h
        M0 - 1440 * MINUTE: 64,  # just outside 24h (still retained: 25h)
    }
    for start, n in buckets.items():
        assert views.apply_kpi(kpi("acme", start, mentions=n, positive=n), NOW)

    totals = {w: views.kpis("acme", w, NOW).mentions for w in ("1m", "5m", "1h", "24h")}
    assert totals == {"1m": 1, "5m": 1 + 2, "1h": 1 + 2 + 4 + 8, "24h": 1 + 2 + 4 + 8 + 16 + 32}
    assert views.kpis("acme", "1h", NOW).positive == 15


def test_windows_move_at_the_minute_boundary() -> None:
    views = Views()
    views.apply_kpi(kpi("acme", M0 - 4 * MINUTE, mentions=7), NOW)
    views.apply_kpi(kpi("acme", M0, mentions=1), NOW)
    last_instant = M0 + MINUTE - timedelta(microseconds=1)
    assert views.kpis("acme", "5m", last_instant).mentions == 8
    assert views.kpis("acme", "1m", last_instant).mentions == 1
    next_minute = M0 + MINUTE
    assert views.kpis("acme", "5m", next_minute).mentions == 1  # 12:30 left the window at 12:35:00
    assert views.kpis("acme", "1m", next_minute).mentions == 0  # the new minute has nothing yet


def test_a_republished_snapshot_replaces_the_bucket_never_adds() -> None:
    views = Views()
    views.apply_kpi(kpi("acme", M0, mentions=2, positive=1, negative=1, sentiment_sum=0.1, topics={"pricing": 1}), NOW)
    views.apply_kpi(
        kpi(
            "acme",
            M0,
            mentions=5,
            positive=3,
            negative=2,
            sentiment_sum=0.5,
            topics={"pricing": 2, "support": 1},
            engagement={"likes": 9, "shares": 1, "comments": 2},
            reach=300,
            sources={"rss": 5},
        ),
        NOW,
    )
    totals = views.kpis("acme", "1m", NOW)
    assert (totals.mentions, totals.positive, totals.negative) == (5, 3, 2)
    assert totals.sentiment_sum == pytest.approx(0.5)
    assert totals.sentiment_avg == pytest.approx(0.1)
    assert totals.topics == {"pricing": 2, "support": 1}
    assert totals.sources == {"rss": 5}
    assert (totals.engagement.likes, totals.engagement.shares, totals.engagement.comments) == (9, 1, 2)
    assert totals.reach == 300


def test_counters_add_up_across_buckets_and_average_is_null_without_mentions() -> None:
    views = Views()
    views.apply_kpi(kpi("acme", M0, mentions=2, sentiment_sum=1.0, topics={"pricing": 1}, sources={"rss": 2}), NOW)
    views.apply_kpi(
        kpi("acme", M0 - MINUTE, mentions=2, sentiment_sum=-0.2, topics={"pricing": 3}, sources={"reddit": 2}), NOW
    )
    totals = views.kpis("acme", "5m", NOW)
    assert totals.mentions == 4
    assert totals.sentiment_avg == pytest.approx(0.2)
    assert totals.topics == {"pricing": 4}
    assert totals.sources == {"rss": 2, "reddit": 2}
    assert totals.updated_at == M0 + MINUTE  # the newest bucket's updated_at
    empty = views.kpis("globex", "5m", NOW)
    assert (empty.mentions, empty.sentiment_avg, empty.updated_at) == (0, None, None)


def test_only_one_minute_snapshots_make_rolling_totals() -> None:
    views = Views()
    assert not views.apply_kpi(kpi("acme", M0.replace(minute=0), window="1h", mentions=100), NOW)
    assert not views.apply_kpi(kpi("acme", M0.replace(hour=0, minute=0), window="1d", mentions=1000), NOW)
    assert views.kpis("acme", "24h", NOW).mentions == 0
    assert views.brands() == ["acme"]  # still a brand seen in the data


def test_buckets_older_than_retention_are_ignored_and_evicted() -> None:
    views = Views(retention=timedelta(hours=25))
    assert not views.apply_kpi(kpi("acme", M0 - timedelta(hours=25, minutes=1), mentions=1), NOW)
    assert views.apply_kpi(kpi("acme", M0 - timedelta(hours=24, minutes=30), mentions=2), NOW)
    assert views.apply_kpi(kpi("acme", M0, mentions=3), NOW)
    assert views.sizes()["kpi_buckets"] == 2
    later = NOW + timedelta(hours=1)  # the 24h30 old bucket is now 25h30 old
    assert views.evict(later) == 1
    assert views.sizes()["kpi_buckets"] == 1
    assert views.kpis("acme", "24h", later).mentions == 3


def test_deleted_snapshot_leaves_the_totals() -> None:
    views = Views()
    views.apply_kpi(kpi("acme", M0, mentions=3), NOW)
    assert views.delete_kpi("acme", "1m", M0)
    assert not views.delete_kpi("acme", "1m", M0)
    assert views.kpis("acme", "1m", NOW).mentions == 0


def test_unique_authors_count_each_author_once_by_last_sighting() -> None:
    views = Views()
    views.apply_scored(scored("acme", "m1", M0 - 30 * MINUTE, author="alice"), NOW)
    views.apply_scored(scored("acme", "m2", M0 - MINUTE, author="alice"), NOW)  # alice again, recently
    views.apply_scored(scored("acme", "m3", M0, author="alice"), NOW)
    views.apply_scored(scored("acme", "m4", M0 - 30 * MINUTE, author="bob"), NOW)
    views.apply_scored(scored("acme", "m5", M0 - 2 * 60 * MINUTE, author="carol"), NOW)
    views.apply_scored(scored("acme", "m6", M0, author=None), NOW)  # no author: not counted
    views.apply_scored(scored("globex", "m7", M0, author="dave"), NOW)  # another brand
    authors = {w: views.kpis("acme", w, NOW).unique_authors for w in ("1m", "5m", "1h", "24h")}
    assert authors == {"1m": 1, "5m": 1, "1h": 2, "24h": 3}
    # An older sighting arriving late does not move alice's last sighting back.
    views.apply_scored(scored("acme", "m8", M0 - 3 * 60 * MINUTE, author="alice"), NOW)
    assert views.kpis("acme", "1m", NOW).unique_authors == 1


def test_unique_authors_from_minute_counts_match_a_scan_of_every_sighting() -> None:
    rng = random.Random(7)
    views = Views()
    last: dict[str, datetime] = {}
    for i in range(2000):
        author = f"a{rng.randrange(150)}"
        published = M0 - timedelta(seconds=rng.randrange(26 * 3600)) + timedelta(seconds=30)
        views.apply_scored(scored("acme", f"m{i}", published, author=author), NOW)
        if published >= M0 - timedelta(hours=25) and published > last.get(author, published - MINUTE):
            last[author] = published
    for window in ("1m", "5m", "1h", "24h"):
        start, _ = window_bounds(window, NOW)
        assert views.kpis("acme", window, NOW).unique_authors == sum(1 for seen in last.values() if seen >= start)


def test_cached_kpis_json_changes_with_a_new_mention_a_new_snapshot_and_the_minute() -> None:
    views = Views()
    views.apply_kpi(kpi("acme", M0, mentions=3), NOW)
    views.apply_scored(scored("acme", "m1", M0, author="alice"), NOW)

    def answer(at: datetime = NOW, window: str = "1h") -> dict[str, Any]:
        body = views.kpis_json("acme", window, at)
        assert body == views.kpis("acme", window, at).model_dump_json().encode()  # the uncached answer, exactly
        parsed: dict[str, Any] = orjson.loads(body)
        return parsed

    first = views.kpis_json("acme", "1h", NOW)
    assert views.kpis_json("acme", "1h", NOW + timedelta(seconds=3)) is first  # same data, same minute: cached
    assert (answer()["mentions"], answer()["unique_authors"]) == (3, 1)

    # A mention by a new author changes the count at once.
    views.apply_scored(scored("acme", "m2", M0, author="bob"), NOW)
    assert answer()["unique_authors"] == 2
    # A mention of someone already counted in the same minute leaves the cached answer as it is.
    cached = views.kpis_json("acme", "1h", NOW)
    views.apply_scored(scored("acme", "m3", M0 + timedelta(seconds=5), author="bob"), NOW)
    assert views.kpis_json("acme", "1h", NOW) is cached
    # A republished snapshot, a deleted one.
    views.apply_kpi(kpi("acme", M0, mentions=5), NOW)
    assert answer()["mentions"] == 5
    views.apply_kpi(kpi("acme", M0 - MINUTE, mentions=2), NOW)
    assert answer()["mentions"] == 7 and answer(window="1m")["mentions"] == 5
    views.delete_kpi("acme", "1m", M0 - MINUTE)
    assert answer()["mentions"] == 5
    # Another brand's data does not touch acme's answer.
    cached = views.kpis_json("acme", "1h", NOW)
    views.apply_kpi(kpi("globex", M0, mentions=9), NOW)
    views.apply_scored(scored("globex", "g1", M0, author="carol"), NOW)
    assert views.kpis_json("acme", "1h", NOW) is cached

    # The minute rolls over: the windows move although no record arrived.
    next_minute = M0 + MINUTE
    rolled = answer(next_minute, "1m")
    assert (rolled["start"], rolled["mentions"], rolled["unique_authors"]) == ("2025-03-14T12:35:00Z", 0, 0)
    assert answer(next_minute)["start"] == "2025-03-14T11:36:00Z"
    # An hour later, the 12:34 bucket and both authors have left the 1h window.
    later = answer(M0 + 60 * MINUTE)
    assert (later["mentions"], later["unique_authors"]) == (0, 0)
    assert answer(M0 + 60 * MINUTE, "24h")["mentions"] == 5


def test_eviction_moves_the_cached_kpis() -> None:
    views = Views(retention=timedelta(hours=25))
    views.apply_kpi(kpi("acme", M0 - timedelta(hours=24, minutes=30), mentions=2), NOW)
    views.apply_scored(scored("acme", "m1", M0 - timedelta(hours=24, minutes=30), author="alice"), NOW)
    later = NOW + timedelta(minutes=10)
    before = orjson.loads(views.kpis_json("acme", "24h", later))
    assert (before["mentions"], before["unique_authors"]) == (0, 0)  # outside 24h, still retained
    assert views.evict(NOW + timedelta(hours=1)) == 2
    assert views.sizes()["authors"] == 0
    views.apply_scored(scored("acme", "m2", M0, author="alice"), NOW)  # alice is new again after eviction
    assert orjson.loads(views.kpis_json("acme", "24h", later))["unique_authors"] == 1


def test_author_sightings_are_evicted_after_retention() -> None:
    views = Views(retention=timedelta(hours=25))
    views.apply_scored(scored("acme", "old", M0 - timedelta(hours=26), author="ghost"), NOW)
    views.apply_scored(scored("acme", "m1", M0 - timedelta(hours=20), author="alice"), NOW)
    assert views.sizes()["authors"] == 1  # the 26h-old sighting was never kept
    assert views.evict(NOW + timedelta(hours=6)) == 1
    assert views.sizes()["authors"] == 0


def test_mentions_keep_the_newest_per_brand_newest_first() -> None:
    views = Views(mentions_per_brand=3)
    for i in (2, 0, 4, 1, 3):  # out of order on purpose
        views.apply_scored(scored("acme", f"m{i}", M0 + i * MINUTE, label="negative" if i % 2 else "positive"), NOW)
    assert [m.id for m in views.mentions("acme", limit=10)] == ["m4", "m3", "m2"]
    assert [m.id for m in views.mentions("acme", limit=2)] == ["m4", "m3"]
    assert [m.id for m in views.mentions("acme", limit=10, sentiment="negative")] == ["m3"]
    # Too old to enter a full list; a replayed mention replaces itself.
    assert not views.apply_scored(scored("acme", "ancient", M0 - 60 * MINUTE), NOW)
    views.apply_scored(scored("acme", "m3", M0 + 3 * MINUTE, label="neutral"), NOW)
    assert [(m.id, m.sentiment.label) for m in views.mentions("acme", limit=10)] == [
        ("m4", "positive"),
        ("m3", "neutral"),
        ("m2", "positive"),
    ]
    assert views.mentions("globex") == []


def test_alerts_are_deduplicated_by_id_newest_first() -> None:
    views = Views(alerts_kept=3)
    assert views.apply_alert(alert("acme", "a1", M0))
    assert views.apply_alert(alert("globex", "a2", M0 + MINUTE))
    assert not views.apply_alert(alert("acme", "a1", M0))  # replayed
    assert views.apply_alert(alert("acme", "a3", M0 + 2 * MINUTE))
    assert [a.id for a in views.alerts()] == ["a3", "a2", "a1"]
    assert [a.id for a in views.alerts(brand="acme")] == ["a3", "a1"]
    assert [a.id for a in views.alerts(limit=1)] == ["a3"]
    assert [a.id for a in views.alerts_after("a1")] == ["a2", "a3"]
    assert [a.id for a in views.alerts_after("a1", brand="acme")] == ["a3"]
    assert views.apply_alert(alert("acme", "a4", M0 + 3 * MINUTE))
    assert [a.id for a in views.alerts()] == ["a4", "a3", "a2"]  # only the 3 newest are kept
    assert views.alert("a1") is None


def test_brands_are_the_configured_ones_and_those_seen_in_data() -> None:
    views = Views(configured_brands=["globex", "acme"])
    views.apply_alert(alert("initech", "a1", M0))
    views.apply_scored(scored("acme", "m1", M0), NOW)
    assert views.brands() == ["acme", "globex", "initech"]
    assert views.is_configured("globex") and not views.is_configured("initech")
    assert views.has_brand("initech") and not views.has_brand("hooli")


def test_unknown_window_is_refused() -> None:
    with pytest.raises(ValueError, match="2m"):
        Views().kpis("acme", "2m", NOW)


async def test_fanout_drops_a_slow_subscriber_without_blocking() -> None:
    changes: list[int] = []
    fanout = AlertFanout(queue_size=2, on_change=changes.append)
    slow = fanout.subscribe()
    fast = fanout.subscribe()
    only_globex = fanout.subscribe(brand="globex")
    for i in range(3):
        fanout.publish(alert("acme", f"a{i}", M0))  # never awaits
        assert await asyncio.wait_for(fast.next(), 1) is not None
    assert fanout.dropped == 1 and len(fanout) == 2  # `slow` never read: dropped at the third alert
    assert await asyncio.wait_for(slow.next(), 1) is None  # its stream is over at once (it resumes by id)
    assert only_globex.queue.empty()
    fanout.publish(alert("globex", "g1", M0))
    received = await asyncio.wait_for(only_globex.next(), 1)
    assert received is not None and received.id == "g1"
    assert fast.queue.qsize() == 1  # g1 went to the unfiltered subscriber too
    fanout.close()
    assert await asyncio.wait_for(fast.next(), 1) is None
    assert await asyncio.wait_for(only_globex.next(), 1) is None
    late = fanout.subscribe()  # a stream opened during shutdown ends at once
    assert await asyncio.wait_for(late.next(), 1) is None and len(fanout) == 0
    assert changes == [1, 2, 3, 2, 1, 0]
