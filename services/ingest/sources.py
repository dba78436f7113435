"""The `sources:` of the config file, run in the background of the ingest service.

Only `simulate` exists today; other source types are reported once and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence

from pydantic import ValidationError

from schemas import EcouteConfig, Mention, dump
from services.ingest.metrics import IngestMetrics
from services.ingest.producer import IngestProducer, KafkaUnavailable
from services.ingest.simulate import SendBatch, SimulateOptions, run_simulation, simulation_from_options

logger = logging.getLogger(__name__)


def mention_sender(link: IngestProducer, metrics: IngestMetrics, source: str, retry_every: float = 2.0) -> SendBatch:
    """A send function for a background source: waits out Kafka outages instead of dropping the batch."""

    async def send(mentions: Sequence[Mention]) -> None:
        metrics.received.labels(source).inc(len(mentions))
        records = [(m.id.encode(), dump(m)) for m in mentions]
        while True:
            try:
                await link.produce(link.topics.mentions_raw, records)
                return
            except KafkaUnavailable as exc:
                logger.warning(
                    "%s: %d mentions not acknowledged (%s); retrying in %.0fs", source, len(records), exc, retry_every
                )
                await asyncio.sleep(retry_every)

    return send


def start_sources(config: EcouteConfig, link: IngestProducer, metrics: IngestMetrics) -> list[asyncio.Task[int]]:
    """Start a task per supported source; a misconfigured source is logged and skipped, never fatal."""
    tasks: list[asyncio.Task[int]] = []
    unsupported: set[str] = set()
    for index, source in enumerate(config.sources):
        name = f"sources[{index}] ({source.type})"
        if source.type != "simulate":
            if source.type not in unsupported:
                logger.warning("%s: source type %r is not yet supported; skipped", name, source.type)
                unsupported.add(source.type)
            continue
        try:
            options = SimulateOptions.from_source(source.model_extra or {})
            stream = simulation_from_options(config, options, run=uuid.uuid4().hex[:12])
        except (ValidationError, ValueError) as exc:
            logger.error("%s: invalid options, skipped: %s", name, exc)
            continue
        logger.info(
            "%s: simulating %s mentions/s for %s", name, options.rate, ", ".join(options.brands or config.brands)
        )
        sender = mention_sender(link, metrics, "simulate")
        task = asyncio.create_task(run_simulation(stream, sender, name=name), name=name)
        task.add_done_callback(_report_end)
        tasks.append(task)
    return tasks


def _report_end(task: asyncio.Task[int]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.error("source %s stopped with an error: %r", task.get_name(), exc, exc_info=exc)


async def stop_sources(tasks: list[asyncio.Task[int]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task  # an error was logged when the task ended
