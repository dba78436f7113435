"""Replaying a JSONL file: good lines land in mentions.raw, bad ones are reported by line number."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from schemas import Mention, Topics, load
from services.ingest import IngestSettings
from services.ingest.metrics import build_metrics
from services.ingest.producer import IngestProducer
from services.ingest.replay import BadLine, parse_replay_lines, replay_file
from tests.ingest.ingest_support import ReadTopic, keys

LINES = [
    orjson.dumps({"id": "rss:1", "text": "acme is great", "source": "rss"}),
    orjson.dumps({"id": "old:2", "text": "no source given"}),
    b"",
    b"{not json",
    orjson.dumps({"id": "old:3"}),
    b"   ",
    orjson.dumps(["an", "array"]),
    orjson.dumps({"id": "old:4", "text": "likes wrong", "engagement": {"likes": -1}}),
    orjson.dumps({"id": "old:5", "text": "fine too", "source": None, "lang": "fr"}),
]


def test_parse_keeps_line_numbers_and_only_fills_a_missing_source() -> None:
    parsed = dict(parse_replay_lines(LINES))
    assert sorted(parsed) == [1, 2, 4, 5, 7, 8, 9]  # blank lines are skipped, not refused
    assert isinstance(parsed[1], Mention) and parsed[1].source == "rss"
    assert isinstance(parsed[2], Mention) and parsed[2].source == "replay"
    assert isinstance(parsed[9], Mention) and parsed[9].source == "replay"
    bad = {n: p for n, p in parsed.items() if isinstance(p, BadLine)}
    assert sorted(bad) == [4, 5, 7, 8]
    assert "malformed JSON" in bad[4].error
    assert bad[5].error == "text: Field required"
    assert "expected a JSON object" in bad[7].error
    assert bad[8].error.startswith("engagement.likes: Input should be greater than or equal to 0")
    assert str(bad[5]) == "line 5: text: Field required"


@pytest.mark.kafka
async def test_replay_file_produces_good_lines_only(
    ingest_settings: IngestSettings, reader: ReadTopic, tmp_path: Path
) -> None:
    path = tmp_path / "mentions.jsonl"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    registry = CollectorRegistry()
    link = IngestProducer(ingest_settings, build_metrics(registry))
    await link.start()
    try:
        result = await replay_file(path, link, link.metrics, batch_size=2)
    finally:
        await link.stop()
    assert (result.produced, result.refused) == (3, 4)
    assert [b.line for b in result.bad] == [4, 5, 7, 8]

    topic = Topics(ingest_settings.topic_prefix).mentions_raw
    records = await reader(topic, until=lambda rs: len(rs) >= 3)
    assert sorted(keys(records)) == ["old:2", "old:5", "rss:1"]
    sources = {r.key: load(Mention, r.value).source for r in records}
    assert sources == {b"rss:1": "rss", b"old:2": "replay", b"old:5": "replay"}
    assert (
        registry.get_sample_value("ecoute_ingest_mentions_refused_total", {"source": "replay", "reason": "invalid"})
        == 4
    )
    assert registry.get_sample_value("ecoute_ingest_mentions_produced_total", {"topic": topic}) == 3
