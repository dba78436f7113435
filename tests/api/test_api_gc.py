"""The garbage-collector policy of the API (services/api/gcpolicy.py): pauses are timed and exposed, the young
generations are collected often and briefly, and once the views have caught up their objects are frozen out of
full collections, garbage collected first."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas import Topics, dump, ensure_topics, utc_now
from services.api.gcpolicy import YOUNG_THRESHOLDS, FreezeSurvivors, GcPauses
from services.api.views import floor_minute
from tests.api.api_factories import scored
from tests.api.test_api_kafka import metric, producer, settings_for, wait_ready
from tests.helpers import async_wait_until


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Start and end with nothing frozen (the freeze is process-wide)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_pauses_are_timed_by_generation_while_installed() -> None:
    seen: list[tuple[int, float]] = []
    pauses = GcPauses(lambda generation, seconds: seen.append((generation, seconds)))
    pauses.install()
    pauses.install()  # once only
    try:
        gc.collect(1)
        gc.collect()
    finally:
        pauses.remove()
    assert [generation for generation, _ in seen] == [1, 2]
    assert all(0 < seconds < 10 for _, seconds in seen)
    gc.collect()
    assert len(seen) == 2


@pytest.mark.usefixtures("unfrozen")
def test_freezing_collects_the_garbage_first_and_keeps_the_survivors_out_of_collections() -> None:
    garbage, kept = Cycle(), Cycle()
    gone = weakref.ref(garbage)
    del garbage
    frozen = FreezeSurvivors()()
    assert gone() is None  # collected, not frozen for ever
    assert frozen > 0 and gc.get_freeze_count() > 0
    assert not any(obj is kept for obj in gc.get_objects())  # the collector no longer walks it
    gc.unfreeze()
    assert any(obj is kept for obj in gc.get_objects())


@pytest.mark.usefixtures("unfrozen")
def test_only_the_first_freeze_and_those_after_a_thaw_walk_the_whole_heap() -> None:
    now = [0.0]
    freeze = FreezeSurvivors(thaw_every=3600, clock=lambda: now[0])
    collected: list[int] = []
    pauses = GcPauses(lambda generation, _: collected.append(generation))
    pauses.install()
    try:
        freeze()
        aged = Cycle()
        gc.collect(1)  # it survives a young collection: it is old now, the young ones no longer see it
        gone = weakref.ref(aged)
        del aged  # garbage now, a cycle: only a collection of the oldest generation would find it
        collected.clear()
        now[0] = 10.0
        freeze()
        assert collected == [1]  # the young generations only: no pause for the whole heap
        assert gone() is not None and gc.get_freeze_count() > 0  # frozen, until the next thaw
        now[0] = 3600.0
        freeze()
        assert collected == [1, 2]
        assert gone() is None
    finally:
        pauses.remove()


@pytest.mark.usefixtures("unfrozen")
def test_the_policy_sets_its_thresholds_and_puts_the_previous_ones_back() -> None:
    before = gc.get_threshold()
    freeze = FreezeSurvivors(thresholds=(123, 45, 678))
    freeze.start()
    try:
        assert gc.get_threshold() == (123, 45, 678)
        freeze()
        assert gc.get_freeze_count() > 0
    finally:
        freeze.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("unfrozen")
def test_apps_sharing_a_process_restore_the_collector_when_the_last_one_stops() -> None:
    before = gc.get_threshold()
    first, second = FreezeSurvivors(thresholds=(123, 45, 678)), FreezeSurvivors(thresholds=(123, 45, 678))
    first.start()
    second.start()
    second()
    first.stop()  # stopped first, started first: the other one still runs
    assert gc.get_threshold() == (123, 45, 678)
    assert gc.get_freeze_count() > 0
    second.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("unfrozen")
def test_garbage_cycles_of_frozen_objects_are_reclaimed_at_the_next_thaw() -> None:
    now = [0.0]
    freeze = FreezeSurvivors(thaw_every=3600, clock=lambda: now[0])
    frozen_then_dropped = Cycle()
    freeze()
    gone = weakref.ref(frozen_then_dropped)
    del frozen_then_dropped
    now[0] = 3599.0
    freeze()
    assert gone() is not None  # frozen: not collected
    now[0] = 3600.0
    freeze()
    assert gone() is None
    assert gc.get_freeze_count() > 0  # and the survivors frozen again


@pytest.mark.kafka
@pytest.mark.usefixtures("clean_env", "unfrozen")
@pytest.mark.parametrize("freeze", [True, False])
async def test_the_views_are_frozen_once_caught_up_then_every_10_s_unless_turned_off(
    freeze: bool, bootstrap: str, topic_prefix: str, tmp_path: Path, serve_api: Any
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=1)
    async with producer(bootstrap) as client:
        mention = scored("globex", "m-1", floor_minute(utc_now()))
        await client.send_and_wait(topics.mentions_scored, dump(mention), key=b"globex")
    thresholds = gc.get_threshold()
    server = serve_api(settings_for(bootstrap, topic_prefix, tmp_path, api_gc_freeze=freeze))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await wait_ready(http)
        assert (gc.get_freeze_count() > 0) is freeze
        assert gc.get_threshold() == (YOUNG_THRESHOLDS if freeze else thresholds)
        if freeze:  # and again every 10 s

            async def frozen_again() -> bool:
                return gc.get_freeze_count() > 0

            gc.unfreeze()
            await async_wait_until(frozen_again, 30, what="the next freeze")
        gc.collect()
        pauses = metric((await http.get("/metrics")).text, "ecoute_api_gc_pause_seconds_count", generation="2")
        assert pauses is not None and pauses >= 1
    server.stop()
    assert gc.get_freeze_count() == 0  # a stopped app leaves nothing frozen
    assert gc.get_threshold() == thresholds  # and the thresholds as they were
