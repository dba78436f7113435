"""`ecoute store`: keep the history in PostgreSQL until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable

from prometheus_client import CollectorRegistry, start_http_server

from services.store.metrics import StoreMetrics
from services.store.settings import build_settings
from services.store.sink import HistorySink

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ecoute store", description="keep mentions, KPIs, alerts and actions in PostgreSQL (exactly once)"
    )
    parser.parse_args(argv)
    settings = build_settings()
    if not settings.database_url:
        logger.error(
            "the history store needs a database: set ECOUTE_DATABASE_URL (postgresql://user:pass@host:port/db), "
            "or use `ecoute run`, which starts a local PostgreSQL"
        )
        return 2
    registry = CollectorRegistry()
    metrics = StoreMetrics.build(registry)
    if settings.store_metrics_port:
        start_http_server(settings.store_metrics_port, settings.store_metrics_host, registry=registry)
        logger.info("store metrics at http://%s:%d/metrics", settings.store_metrics_host, settings.store_metrics_port)
    return asyncio.run(_run(HistorySink(settings, metrics)))


async def _run(sink: HistorySink) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _stopper(sink, signum))
    await sink.run()
    return 0


def _stopper(sink: HistorySink, signum: int) -> Callable[[], None]:
    def stop() -> None:
        logger.info("received %s: storing what is in hand, then stopping", signal.Signals(signum).name)
        sink.stop()

    return stop
