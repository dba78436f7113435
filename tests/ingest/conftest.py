"""Fixtures for the ingest tests: a running ingest app on the session broker, and a topic reader."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.ingest import IngestSettings, build_settings, create_app
from tests.ingest.ingest_support import ReadTopic, read_topic, running


@pytest.fixture
def ingest_settings(clean_env: None, bootstrap: str, topic_prefix: str, tmp_path: Path) -> IngestSettings:
    # One partition: anything a refused request had produced would come before a later sentinel.
    return build_settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=topic_prefix,
        partitions=1,
        config=tmp_path / "absent.yaml",
        send_timeout=10.0,
    )


@pytest.fixture
async def ingest(ingest_settings: IngestSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(ingest_settings)) as client:
        yield client


@pytest.fixture
def reader(bootstrap: str) -> ReadTopic:
    """reader(topic, until=predicate over the records so far, within=s) → every record of the topic."""
    return functools.partial(read_topic, bootstrap)
