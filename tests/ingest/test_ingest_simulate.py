"""The simulated stream: deterministic for a seed, exact volumes, spikes and sentiment shifts where asked."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from schemas import EcouteConfig, Mention
from services.ingest.simulate import (
    SentimentShift,
    SimulatedMention,
    SimulateOptions,
    Spike,
    brand_profiles,
    brand_terms,
    generate_mentions,
    run_simulation,
    simulation_from_options,
)

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CONFIG = EcouteConfig.model_validate(
    {
        "brands": {
            "acme": {"query": '(acme OR "#acme" OR @acme) AND NOT "acme corp layoffs"', "competitors": ["globex"]},
            "globex": {"query": "globex"},
        },
        "topics": {"customer_service": ["support", "customer service"], "pricing": ["price", "expensive"]},
    }
)


def stream(**options: object) -> list[SimulatedMention]:
    return list(
        generate_mentions(brand_profiles(CONFIG), CONFIG.topics, start=START, **options)  # type: ignore[arg-type]
    )


def test_same_seed_same_stream_other_seed_other_words() -> None:
    first = stream(rate=50, count=300, seed=7)
    again = stream(rate=50, count=300, seed=7)
    other = stream(rate=50, count=300, seed=8)
    assert [m.mention.model_dump() for m in first] == [m.mention.model_dump() for m in again]
    assert [m.mention.text for m in first] != [m.mention.text for m in other]
    assert len({m.mention.id for m in first}) == 300


def test_mentions_are_realistic() -> None:
    items = stream(rate=100, count=2000, seed=1)
    mentions = [i.mention for i in items]
    assert all(m.id.startswith("simulate:") and m.source == "simulate" for m in mentions)
    assert all(Mention.model_validate_json(m.model_dump_json(by_alias=True)) == m for m in mentions[:50])
    langs = Counter(m.lang for m in mentions)
    assert langs["en"] > langs["fr"] > 100
    sites = {m.site for m in mentions}
    assert "mastodon.social" in sites
    assert any(s and s.startswith("reddit.com/r/") for s in sites)
    assert sites & {"techcrunch.com", "theverge.com", "reuters.com", "bbc.co.uk", "wired.com", "lemonde.fr"}
    assert max(m.author.followers or 0 for m in mentions) > 100_000
    assert sum(1 for m in mentions if (m.author.followers or 0) >= 10_000) > 10
    assert any(m.engagement.likes > 0 for m in mentions)
    # Every post names its brand the way the brand's query matches it, and topic terms show up.
    for item in items:
        assert item.brand in item.mention.text.lower(), item.mention.text
    assert sum("price" in m.text or "support" in m.text or "expensive" in m.text for m in mentions) > 100
    assert any("#acme" in m.text or "@acme" in m.text for m in mentions)
    tones = Counter(i.tone for i in items)
    assert tones["positive"] > tones["neutral"] > tones["negative"] > 200


def test_volume_follows_rate_and_duration_exactly() -> None:
    items = stream(rate=20, duration=10, seed=1)
    assert len(items) == 200
    assert all(0 <= i.offset < 10 for i in items)
    assert [i.offset for i in items] == sorted(i.offset for i in items)
    per_second = Counter(int(i.offset) for i in items)
    assert set(per_second.values()) == {20}
    assert items[-1].mention.published_at > items[0].mention.published_at >= START
    assert len(stream(rate=20, duration=10, count=50, seed=1)) == 50


def test_spike_multiplies_one_brands_volume_in_its_window() -> None:
    items = stream(rate=20, duration=30, seed=3, spikes=[Spike(brand="acme", at=10, duration=5, factor=6)])
    acme = Counter(int(i.offset) for i in items if i.brand == "acme")
    globex = Counter(int(i.offset) for i in items if i.brand == "globex")
    # 10 per second per brand outside the spike; acme x6 inside it; globex untouched.
    assert sum(acme[s] for s in range(10, 15)) == 300
    assert sum(acme[s] for s in range(0, 10)) == 100
    assert sum(acme[s] for s in range(15, 30)) == 150
    assert sum(globex.values()) == 300


def test_sentiment_shift_turns_one_brand_negative_in_its_window() -> None:
    shift = SentimentShift(brand="globex", at=20, duration=20, negative_share=0.9)
    items = stream(rate=40, duration=60, seed=5, sentiment_shifts=[shift])

    def negative_share(brand: str, lo: float, hi: float) -> float:
        window = [i for i in items if i.brand == brand and lo <= i.offset < hi]
        return sum(i.tone == "negative" for i in window) / len(window)

    assert negative_share("globex", 20, 40) > 0.8
    assert negative_share("globex", 0, 20) < 0.35
    assert negative_share("globex", 40, 60) < 0.35
    assert negative_share("acme", 20, 40) < 0.35


def test_options_from_a_config_source() -> None:
    options = SimulateOptions.from_source(
        {
            "type": "simulate",
            "rate": 10,
            "duration": "1m",
            "seed": 4,
            "spikes": [{"brand": "acme", "at": "30s", "duration": "10s", "factor": 3}],
            "sentiment_shifts": [{"brand": "globex", "at": 0, "duration": "20s", "negative_share": 0.7}],
        }
    )
    assert options.duration == 60.0
    assert options.spikes[0].at == 30.0
    items = list(simulation_from_options(CONFIG, options, start=START))
    assert len(items) == 600 + 10 * 5 * 2  # the acme half triples for ten seconds
    with pytest.raises(ValueError, match="unknown brand"):
        simulation_from_options(CONFIG, SimulateOptions(rate=1, spikes=[Spike(brand="initech", duration=1, factor=2)]))
    with pytest.raises(ValueError, match="unknown brands"):
        simulation_from_options(CONFIG, SimulateOptions(rate=1, brands=["initech"]))
    with pytest.raises(ValueError):
        SimulateOptions.from_source({"type": "simulate", "rate": -1})


def test_brand_terms_come_from_the_query() -> None:
    assert brand_terms("acme", '(acme OR "#acme" OR @acme) AND NOT "acme corp layoffs"') == ("acme", "#acme", "@acme")
    assert brand_terms("globex", ["globex", '"globex corp"']) == ("globex", "globex corp")
    assert brand_terms("x", "") == ("x",)


async def test_run_simulation_paces_and_batches() -> None:
    sent: list[Sequence[Mention]] = []

    async def send(batch: Sequence[Mention]) -> None:
        sent.append(batch)

    items = stream(rate=100, duration=0.5, seed=2)
    began = time.monotonic()
    count = await run_simulation(items, send, max_batch=1000)
    elapsed = time.monotonic() - began
    assert count == 50 == sum(len(b) for b in sent)
    assert elapsed >= 0.4  # paced at the rate, not sent at once
    assert len(sent) >= 4  # one small batch per due step, not one per mention nor one at the end
    assert sent[-1][-1].published_at > START  # stamped when sent

    # With a slow sender the stream falls behind and catches up in batches, never more than max_batch.
    sizes: list[int] = []

    async def slow(batch: Sequence[Mention]) -> None:
        sizes.append(len(batch))
        await asyncio.sleep(0.2)

    await run_simulation(stream(rate=1000, duration=0.5, seed=2), slow, max_batch=150)
    assert sum(sizes) == 500 and max(sizes) <= 150 and max(sizes) > 50


def test_a_fresh_run_id_gives_fresh_ids_for_the_same_seed() -> None:
    first = stream(rate=10, count=5, seed=9, run="run-a")
    second = stream(rate=10, count=5, seed=9, run="run-b")
    assert [m.mention.id for m in first] == [f"simulate:run-a-{n}" for n in range(5)]
    assert {m.mention.id for m in first}.isdisjoint(m.mention.id for m in second)
    assert [m.mention.text for m in first] == [m.mention.text for m in second]
