"""The checkpoint store on the real broker: newest cursor per source, across partitions and store instances."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client import CollectorRegistry

from schemas import Topics
from services.ingest import IngestProducer, IngestSettings, build_metrics
from services.ingest.connectors import CheckpointStore
from tests.helpers import produce

pytestmark = pytest.mark.kafka


async def test_the_newest_cursor_of_every_source_is_loaded(ingest_settings: IngestSettings, bootstrap: str) -> None:
    settings = ingest_settings.model_copy(update={"partitions": 3})
    topic = Topics(settings.topic_prefix).ingest_checkpoints
    link = IngestProducer(settings, build_metrics(CollectorRegistry()))
    await link.start()
    try:
        store = CheckpointStore(bootstrap, topic, link)
        assert await store.load() == 0
        for n in range(20):
            await store.save(f"rss:{n}", {"etag": f'"a{n}"'})
        await store.save("rss:3", {"etag": '"b3"', "seen": ["rss:x"]})
        # A reset (tombstone) and records no store would write: ignored, never fatal.
        await produce(bootstrap, topic, [(b"rss:4", None), (b"rss:broken", b"{not json"), (b"rss:list", b"[1]")])  # type: ignore[list-item]

        fresh = CheckpointStore(bootstrap, topic, link)
        assert await fresh.load() == 19
        assert fresh.get("rss:3") == {"etag": '"b3"', "seen": ["rss:x"]}
        assert fresh.get("rss:7") == {"etag": '"a7"'}
        assert fresh.get("rss:4") is None
        assert fresh.get("rss:broken") is None
        cursor = fresh.get("rss:7")
        assert cursor is not None
        cursor["etag"] = "changed by a caller"
        assert fresh.get("rss:7") == {"etag": '"a7"'}  # callers get copies
        assert orjson.loads(orjson.dumps(fresh.get("rss:19"))) == {"etag": '"a19"'}
    finally:
        await link.stop()
