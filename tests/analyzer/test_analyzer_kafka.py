"""The analyzer worker (both Faust stages) against the real Apache Kafka broker: exact counts,
duplicates counted once, poison records dead-lettered, counts kept across a restart and a kill -9.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import orjson
import pytest

from schemas import Topics, ensure_topics
from services.analyzer.tone import ToneScorer
from tests.helpers import ServiceProcess, async_wait_until, latest_by_key, produce, read_all

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CONFIG = """
brands:
  acme: {query: 'acme OR "#acme" AND NOT "acme corp layoffs"'}
  globex: {query: [globex, "@globex"]}
topics:
  pricing: [price, expensive, cheap]
  support: [support, "customer service"]
"""

TEXTS = [
    "I love my new {b} phone, the camera is amazing!",
    "{b} support was useless, never buying again.",
    "Just saw an ad for {b}.",
    "{b} prices are way too expensive this year :(",
    "Honestly {b} customer service fixed it in 5 minutes. Great job!",
    "Is {b} open on Sundays?",
    "{b} is NOT good. At all.",
]


def make_mentions(n: int, seed: int = 1) -> list[dict[str, object]]:
    rng = random.Random(seed)
    mentions = []
    for i in range(n):
        brand = rng.choice(["acme", "globex", "acme globex", "nobody"])
        text = rng.choice(TEXTS).format(b=brand)
        mentions.append(
            {
                "id": f"test:{seed}:{i}",
                "source": rng.choice(["rss", "reddit", "mastodon"]),
                "text": text,
                "author": {"id": f"author-{rng.randrange(40)}", "followers": rng.randrange(5000)},
                "engagement": {"likes": rng.randrange(10), "shares": 1, "comments": 0, "views": 3},
            }
        )
    return mentions


def expected_counts(mentions: list[dict[str, object]]) -> dict[str, dict[str, int]]:
    scorer = ToneScorer()
    counts: dict[str, dict[str, int]] = {}
    for m in mentions:
        text = str(m["text"])
        label = scorer.score(text).label
        for brand in ("acme", "globex"):
            if brand in text:
                c = counts.setdefault(brand, {"mentions": 0, "positive": 0, "neutral": 0, "negative": 0})
                c["mentions"] += 1
                c[label] += 1
    return counts


def as_records(mentions: list[dict[str, object]]) -> list[tuple[bytes | None, bytes]]:
    return [(str(m["id"]).encode(), orjson.dumps(m)) for m in mentions]


async def day_totals(bootstrap: str, topics: Topics) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for key, value in (await latest_by_key(bootstrap, topics.kpi_snapshots)).items():
        if key is None or value is None or b"|1d|" not in key:
            continue
        kpi = orjson.loads(value)
        t = totals.setdefault(kpi["brand"], {"mentions": 0, "positive": 0, "neutral": 0, "negative": 0})
        for name in t:
            t[name] += kpi[name]
    return totals


@pytest.fixture
def analyzer_env(bootstrap: str, topic_prefix: str, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "ecoute.yaml"
    config.write_text(CONFIG)
    return {
        "ECOUTE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ECOUTE_CONFIG": str(config),
        "ECOUTE_TOPIC_PREFIX": topic_prefix,
        "ECOUTE_ANALYZER_APP_ID": f"{topic_prefix}analyzer",
        "ECOUTE_ANALYZER_METRICS_PORT": "0",
        "ECOUTE_ANALYZER_DATA_DIR": str(tmp_path / "data"),
        "ECOUTE_PARTITIONS": "3",
        "ECOUTE_LOG_LEVEL": "INFO",
        "ECOUTE_ANALYZER_SESSION_TIMEOUT": "6",
    }


async def test_counts_are_exact_duplicates_once_poison_to_dlq_and_kept_across_restarts(
    bootstrap: str, topic_prefix: str, analyzer_env: dict[str, str], tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    await ensure_topics(bootstrap, topics, partitions=3)
    mentions = make_mentions(400)
    expected = expected_counts(mentions)
    poison = [
        (b"bad-json", b"{not json"),
        (b"no-text", orjson.dumps({"id": "x:1"})),
        (b"bad-type", orjson.dumps({"id": "x:2", "text": "acme", "engagement": {"likes": "many"}})),
    ]
    # Every mention twice (the second copy must be dropped) with the poison in between.
    await produce(bootstrap, topics.mentions_raw, as_records(mentions) + poison + as_records(mentions[:150]))

    analyzer = ServiceProcess(["analyzer"], analyzer_env, tmp_path / "analyzer.log").start()
    try:

        async def caught_up() -> bool:
            return await day_totals(bootstrap, topics) == expected

        await async_wait_until(caught_up, timeout=60, interval=0.5, what=f"day totals {expected}")
        dead = await read_all(bootstrap, topics.mentions_dlq)
        assert sorted(key for key, _, _ in dead) == [b"bad-json", b"bad-type", b"no-text"]
        reasons = {key: dict(headers) for key, _, headers in dead}
        assert b"engagement.likes" in reasons[b"bad-type"]["error"]
        assert b"text" in reasons[b"no-text"]["error"]
        assert reasons[b"bad-json"]["source.topic"] == topics.mentions_raw.encode()
        assert {int(h["source.offset"]) for h in reasons.values()} <= set(range(600))

        # A clean stop, the same mentions again plus new ones: only the new ones count.
        assert analyzer.stop(signal.SIGTERM) == 0
        more = make_mentions(60, seed=2)
        await produce(bootstrap, topics.mentions_raw, as_records(mentions[150:300] + more))
        expected_after = expected_counts(mentions + more)
        analyzer = ServiceProcess(["analyzer"], analyzer_env, tmp_path / "analyzer2.log").start()

        async def caught_up_again() -> bool:
            return await day_totals(bootstrap, topics) == expected_after

        await async_wait_until(caught_up_again, timeout=60, interval=0.5, what=f"day totals {expected_after}")

        # kill -9 once caught up, then replays of everything: tables come back from their changelogs.
        analyzer.kill()
        await produce(bootstrap, topics.mentions_raw, as_records(mentions + more))
        analyzer = ServiceProcess(["analyzer"], analyzer_env, tmp_path / "analyzer3.log").start()
        scored_before = len(await read_all(bootstrap, topics.mentions_scored))

        async def replay_consumed() -> bool:
            # Stage 1 has read everything once nothing is left between it and the end of mentions.raw.
            raw = await read_all(bootstrap, topics.mentions_raw)
            return len(raw) == 400 + 3 + 150 + 150 + 60 + 460 and analyzer.log_path.exists()

        await async_wait_until(replay_consumed, timeout=30, what="the replay to be produced")
        probe = make_mentions(1, seed=3)
        probe[0]["text"] = "acme probe: I love acme"
        await produce(bootstrap, topics.mentions_raw, as_records(probe))
        final = expected_counts(mentions + more + probe)

        async def probe_counted() -> bool:
            return await day_totals(bootstrap, topics) == final

        await async_wait_until(probe_counted, timeout=60, interval=0.5, what=f"day totals {final}")
        # The duplicates produced no scored mentions either (only the probe's one record is new).
        scored_after = len(await read_all(bootstrap, topics.mentions_scored))
        assert scored_after - scored_before == 1
    finally:
        analyzer.stop()
