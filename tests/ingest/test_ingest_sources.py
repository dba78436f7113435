"""Configured sources run inside the ingest service: simulate produces, unknown types are skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from schemas import Mention, Topics, load
from services.ingest import IngestSettings, create_app
from tests.ingest.ingest_support import ReadTopic, running

pytestmark = pytest.mark.kafka


async def test_simulate_source_feeds_mentions_raw(
    ingest_settings: IngestSettings, reader: ReadTopic, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "ecoute.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "brands": {"acme": {"query": "acme"}, "globex": {"query": "globex"}},
                "topics": {"pricing": ["price"]},
                "sources": [
                    {"type": "bluesky", "url": "wss://jetstream.example/subscribe"},
                    {"type": "bluesky", "url": "wss://other.example/subscribe"},
                    {"type": "simulate", "rate": 200, "count": 40, "seed": 1},
                ],
            }
        )
    )
    settings = ingest_settings.model_copy(update={"config": config})
    topic = Topics(settings.topic_prefix).mentions_raw
    with caplog.at_level(logging.INFO, logger="services.ingest"):
        async with running(create_app(settings)) as client:
            assert (await client.get("/healthz")).status_code == 200
            records = await reader(topic, until=lambda rs: len(rs) >= 40)
    mentions = [load(Mention, r.value) for r in records]
    assert len(mentions) == 40
    assert all(m.source == "simulate" and r.key == m.id.encode() for m, r in zip(mentions, records, strict=True))
    assert {m.id for m in mentions} == {r.key.decode() for r in records}
    # Every source type has a connector now: the bluesky sources run (failing to reach their hosts) beside it.
    assert not [r for r in caplog.records if "not yet supported" in r.getMessage()]
