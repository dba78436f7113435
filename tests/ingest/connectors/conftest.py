"""Fixtures for the connector tests: loopback web servers, a fetcher, and a source runner on the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from schemas import EcouteConfig
from services.ingest import IngestProducer, IngestSettings, build_metrics
from services.ingest.sources import SourceRunner
from tests.helpers import async_wait_until
from tests.ingest.connectors.web import WebServer

# Tests reach their own servers on loopback only through this allowance, as the config would grant it.
LOOPBACK = ["127.0.0.0/8"]


@pytest.fixture
def web_factory() -> Iterator[Callable[..., WebServer]]:
    servers: list[WebServer] = []

    def start(host: str = "127.0.0.1") -> WebServer:
        server = WebServer(host).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def web(web_factory: Callable[..., WebServer]) -> WebServer:
    return web_factory()


@pytest.fixture
def source_settings(ingest_settings: IngestSettings) -> IngestSettings:
    """Ingest settings with quick retries, so failure paths finish within a test's budget."""
    return ingest_settings.model_copy(
        update={
            "fetch_backoff_base": 0.05,
            "fetch_backoff_max": 0.5,
            "fetch_max_attempts": 2,
            "fetch_read_timeout": 3.0,
            "source_retry_base": 0.2,
            "source_max_backoff": 1.0,
            "source_jitter": 0.0,
        }
    )


def listening(*sources: dict[str, Any], allow: list[str] | None = None) -> EcouteConfig:
    return EcouteConfig.model_validate(
        {"sources": list(sources), "fetch": {"allow_networks": LOOPBACK if allow is None else allow}}
    )


@asynccontextmanager
async def source_runner(settings: IngestSettings, config: EcouteConfig) -> AsyncIterator[SourceRunner]:
    """A SourceRunner on its own producer (and metrics registry), stopped on exit."""
    metrics = build_metrics(CollectorRegistry())
    link = IngestProducer(settings, metrics)
    await link.start()
    runner = SourceRunner(config, link, metrics, settings)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
        await link.stop()


async def eventually(check: Callable[[], object], timeout: float, what: str) -> None:
    """Wait until `check()` is truthy (polling, with a deadline)."""

    async def holds() -> bool:
        return bool(check())

    await async_wait_until(holds, timeout, interval=0.05, what=what)


def sample(runner: SourceRunner, name: str, **labels: str) -> float:
    value = runner.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
