"""The `sources:` of the config file, run in the background of the ingest service.

Each polled source (rss, hackernews…) is its own task: poll, validate every record as a mention/1, produce the
valid ones, wait for Kafka's acknowledgement, then save the cursor in `ingest.checkpoints`. A failing source is
logged, counted and retried with backoff; it never stops the others. `simulate` sources run as before. Types
without a connector yet are reported once and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas import AccountMetric, ConfigError, ContentItem, EcouteConfig, Mention, dump
from services.ingest.connectors import CONNECTORS, owned_connectors
from services.ingest.connectors.base import Batch, Connector, ContentRefused
from services.ingest.connectors.checkpoints import CheckpointStore
from services.ingest.connectors.fetch import (
    FetchFailed,
    FetchPolicy,
    FetchRefused,
    RateLimited,
    Resolver,
    SafeFetcher,
    parse_networks,
    system_resolver,
)
from services.ingest.metrics import IngestMetrics
from services.ingest.producer import IngestProducer, KafkaUnavailable
from services.ingest.settings import IngestSettings
from services.ingest.simulate import SendBatch, SimulateOptions, run_simulation, simulation_from_options
from services.ingest.validation import describe, errors_of

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


def fetch_policy(settings: IngestSettings, config: EcouteConfig) -> FetchPolicy:
    try:
        allow = parse_networks(config.fetch.allow_networks)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return FetchPolicy(
        allow_networks=allow,
        connect_timeout=settings.fetch_connect_timeout,
        read_timeout=settings.fetch_read_timeout,
        max_bytes=settings.fetch_max_bytes,
        max_redirects=settings.fetch_max_redirects,
        per_host=settings.fetch_per_host,
        max_attempts=settings.fetch_max_attempts,
        backoff_base=settings.fetch_backoff_base,
        backoff_max=settings.fetch_backoff_max,
        max_retry_after=settings.fetch_max_retry_after,
        user_agent=settings.fetch_user_agent,
    )


def _iso(at: float | None) -> str | None:
    return datetime.fromtimestamp(at, UTC).isoformat() if at is not None else None


@dataclass
class SourceStatus:
    """What /healthz says about one source."""

    source_id: str
    type: str
    target: str
    state: str = "starting"  # starting | ok | failing | stopped | misconfigured
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    consecutive_failures: int = 0
    next_poll: float | None = None
    fetched: int = 0
    produced: int = 0
    refused: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "target": self.target,
            "state": self.state,
            "last_success": _iso(self.last_success),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "consecutive_failures": self.consecutive_failures,
            "next_poll": _iso(self.next_poll),
            "fetched": self.fetched,
            "produced": self.produced,
            "refused": self.refused,
        }


class SourceWorker:
    """Polls one connector until stopped; commits each batch (produce, ack, checkpoint) as a unit."""

    def __init__(
        self,
        connector: Connector,
        *,
        link: IngestProducer,
        store: CheckpointStore,
        fetcher: SafeFetcher,
        metrics: IngestMetrics,
        settings: IngestSettings,
        rng: random.Random,
    ) -> None:
        self.connector = connector
        self.link = link
        self.store = store
        self.fetcher = fetcher
        self.metrics = metrics
        self.settings = settings
        self.rng = rng
        self.labels = (connector.source_id, connector.type)
        self.status = SourceStatus(connector.source_id, connector.type, connector.describe())
        self.task: asyncio.Task[None] | None = None
        self.committing = False
        self.stopping = False
        self._wake = asyncio.Event()
        self.polls = 0  # completed polls, successful or not (tests wait on it)
        metrics.source_consecutive_failures.labels(*self.labels).set(0)

    @property
    def name(self) -> str:
        return f"source {self.connector.source_id} ({self.connector.describe()})"

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=self.name)

    async def run(self) -> None:
        logger.info("%s: polling every %.0fs", self.name, self.connector.interval)
        while not self.stopping:
            began = time.monotonic()
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one source failing never stops the others
                delay = self._failed(exc)
            else:
                delay = self._succeeded()
            finally:
                self.polls += 1
            if self.stopping:
                break
            self.status.next_poll = time.time() + delay
            logger.debug("%s: poll took %.2fs; next in %.1fs", self.name, time.monotonic() - began, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
        self.status.state = "stopped"

    async def poll_once(self) -> None:
        cursor = self.store.get(self.connector.source_id)
        batches = self.connector.poll(cursor, self.fetcher)
        try:
            async for batch in batches:
                await self.commit(batch)
                if self.stopping:
                    return
        finally:
            aclose = getattr(batches, "aclose", None)
            if aclose is not None:
                await aclose()

    async def commit(self, batch: Batch) -> None:
        """Validate, produce, wait for the acks, then save the cursor; a stop waits for this to finish."""
        self.committing = True
        try:
            source_id, kind = self.labels
            self.metrics.source_fetched.labels(*self.labels).inc(batch.fetched)
            self.status.fetched += batch.fetched
            mentions: list[Mention] = []
            for candidate in batch.candidates:
                self.metrics.received.labels(kind).inc()
                problem = candidate.problem
                if candidate.fields is not None:
                    try:
                        mentions.append(Mention.model_validate(candidate.fields))
                        continue
                    except ValidationError as exc:
                        problem = describe(errors_of(exc, None))
                self._refuse("invalid")
                logger.warning(
                    "%s: record %s is not a valid mention, not produced: %s", self.name, candidate.ref, problem
                )
            if mentions:
                await self.link.produce(self.link.topics.mentions_raw, [(m.id.encode(), dump(m)) for m in mentions])
                self.metrics.source_produced.labels(*self.labels).inc(len(mentions))
                self.status.produced += len(mentions)
            if batch.account_metrics:
                await self._produce_account_metrics(batch.account_metrics)
            if batch.content_items:
                await self._produce_content_items(batch.content_items)
            if batch.save:
                await self.store.save(source_id, batch.cursor)
        finally:
            self.committing = False

    async def _produce_account_metrics(self, raw: list[dict[str, Any]]) -> None:
        readings: list[AccountMetric] = []
        for fields in raw:
            try:
                readings.append(AccountMetric.model_validate(fields))
            except ValidationError as exc:
                self._refuse("invalid")
                logger.warning(
                    "%s: %s is not a valid account metric: %s", self.name, fields, describe(errors_of(exc, None))
                )
        if readings:
            await self.link.produce(self.link.topics.metrics_accounts, [(r.key.encode(), dump(r)) for r in readings])
            self.metrics.source_produced.labels(*self.labels).inc(len(readings))
            self.status.produced += len(readings)

    async def _produce_content_items(self, raw: list[dict[str, Any]]) -> None:
        readings: list[ContentItem] = []
        for fields in raw:
            try:
                readings.append(ContentItem.model_validate(fields))
            except ValidationError as exc:
                self._refuse("invalid")
                logger.warning(
                    "%s: item %s is not a valid content item: %s",
                    self.name,
                    fields.get("id"),
                    describe(errors_of(exc, None)),
                )
        if readings:
            await self.link.produce(self.link.topics.content_items, [(r.key.encode(), dump(r)) for r in readings])
            self.metrics.source_produced.labels(*self.labels).inc(len(readings))
            self.status.produced += len(readings)

    def _refuse(self, reason: str) -> None:
        self.metrics.source_refused.labels(*self.labels, reason).inc()
        self.metrics.refused.labels(self.connector.type, reason).inc()
        self.status.refused += 1

    def _succeeded(self) -> float:
        now = time.time()
        self.status.state = "ok"
        self.status.last_success = now
        self.status.consecutive_failures = 0
        self.metrics.source_last_success.labels(*self.labels).set(now)
        self.metrics.source_consecutive_failures.labels(*self.labels).set(0)
        interval = self.connector.interval
        jitter = self.settings.source_jitter
        return interval * (1 + self.rng.uniform(-jitter, jitter))

    def _failed(self, exc: Exception) -> float:
        status = self.status
        status.consecutive_failures += 1
        status.state = "failing"
        status.last_error = f"{type(exc).__name__}: {exc}"
        status.last_error_at = time.time()
        self.metrics.source_consecutive_failures.labels(*self.labels).set(status.consecutive_failures)
        if isinstance(exc, FetchRefused | ContentRefused):
            self._refuse(exc.reason)
            logger.error("%s: refused: %s", self.name, exc)
        else:
            if isinstance(exc, FetchFailed):
                kind = exc.reason
            elif isinstance(exc, KafkaUnavailable):
                kind = "kafka"
            else:
                kind = "internal"
            self.metrics.source_errors.labels(*self.labels, kind).inc()
            if kind == "internal":
                logger.exception("%s: poll failed", self.name)
            else:
                logger.error("%s: poll failed (%s): %s", self.name, kind, exc)
        interval = self.connector.interval
        base = min(interval, self.settings.source_retry_base)
        delay = min(base * 2 ** (status.consecutive_failures - 1), max(interval, self.settings.source_max_backoff))
        delay *= 1 + self.rng.uniform(0, self.settings.source_jitter)
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = max(delay, exc.retry_after)
        return delay

    async def stop(self) -> None:
        """Stop between commits: a poll waiting on the network is cancelled, a commit is let finish."""
        self.stopping = True
        self._wake.set()
        task = self.task
        if task is None or task.done():
            self.status.state = "stopped"
            return
        if not self.committing:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=self.settings.source_stop_grace)
        except TimeoutError:
            logger.error("%s: did not stop within %.0fs; cancelled", self.name, self.settings.source_stop_grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        except Exception:
            logger.exception("%s: ended with an error", self.name)
        self.status.state = "stopped"


class SourceRunner:
    """Every configured source of the ingest service: polled connectors (with checkpoints) and simulations."""

    def __init__(
        self,
        config: EcouteConfig,
        link: IngestProducer,
        metrics: IngestMetrics,
        settings: IngestSettings,
        *,
        resolver: Resolver = system_resolver,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.link = link
        self.metrics = metrics
        self.settings = settings
        self.rng = rng or random.Random()
        self.fetcher = SafeFetcher(fetch_policy(settings, config), resolver=resolver, rng=self.rng)
        self.store = CheckpointStore(settings.bootstrap, link.topics.ingest_checkpoints, link)
        self.workers: list[SourceWorker] = []
        self.misconfigured: dict[str, SourceStatus] = {}
        self._simulations: list[asyncio.Task[int]] = []
        self._launcher: asyncio.Task[None] | None = None
        self.connectors = self._build_connectors()

    def _build_connectors(self) -> list[Connector]:
        connectors: list[Connector] = []
        unsupported: set[str] = set()
        ids: set[str] = set()
        for index, source in enumerate(self.config.sources):
            where = f"sources[{index}] ({source.type})"
            factory = CONNECTORS.get(source.type)
            if source.type == "simulate":
                continue
            if factory is None:
                if source.type not in unsupported:
                    logger.warning("%s: source type %r is not yet supported; skipped", where, source.type)
                    unsupported.add(source.type)
                continue
            try:
                connector = factory(source.model_dump(), self.config)
            except ValidationError as exc:
                detail = describe(errors_of(exc, None))
                logger.error("%s: invalid options, skipped: %s", where, detail)
                self.misconfigured[f"sources[{index}]"] = SourceStatus(
                    f"sources[{index}]", source.type, "", "misconfigured", last_error=detail
                )
                continue
            if connector.source_id in ids:
                logger.error("%s: same source as an earlier one (%s); skipped", where, connector.source_id)
                continue
            ids.add(connector.source_id)
            connectors.append(connector)
        # The brands' own channels (`brands.<name>.owned`), checked with the config: one connector per brand.
        connectors.extend(owned_connectors(self.config))
        return connectors

    async def start(self) -> None:
        """Start simulations now and polled sources once Kafka is reachable and checkpoints are loaded."""
        self._start_simulations()
        if self.connectors:
            self.workers = [
                SourceWorker(
                    c,
                    link=self.link,
                    store=self.store,
                    fetcher=self.fetcher,
                    metrics=self.metrics,
                    settings=self.settings,
                    rng=self.rng,
                )
                for c in self.connectors
            ]
            self._launcher = asyncio.create_task(self._launch(), name="ingest-sources-launcher")

    async def _launch(self) -> None:
        delay = 1.0
        while True:
            if await self.link.wait_connected(within=30.0):
                try:
                    await self.store.load()
                    break
                except Exception as exc:  # the broker may still be electing leaders
                    logger.warning("loading checkpoints failed (%r); retrying in %.0fs", exc, delay)
            else:
                logger.info("sources wait for Kafka before loading their checkpoints")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        for worker in self.workers:
            worker.start()

    def _start_simulations(self) -> None:
        for index, source in enumerate(self.config.sources):
            if source.type != "simulate":
                continue
            name = f"sources[{index}] (simulate)"
            try:
                options = SimulateOptions.from_source(source.model_extra or {})
                stream = simulation_from_options(self.config, options, run=uuid.uuid4().hex[:12])
            except (ValidationError, ValueError) as exc:
                logger.error("%s: invalid options, skipped: %s", name, exc)
                continue
            logger.info(
                "%s: simulating %s mentions/s for %s",
                name,
                options.rate,
                ", ".join(options.brands or self.config.brands),
            )
            sender = mention_sender(self.link, self.metrics, "simulate")
            task = asyncio.create_task(run_simulation(stream, sender, name=name), name=name)
            task.add_done_callback(_report_end)
            self._simulations.append(task)

    @property
    def running(self) -> int:
        return len(self._simulations) + len(self.workers)

    def status(self) -> dict[str, Any]:
        out = {w.connector.source_id: w.status.as_json() for w in self.workers}
        out.update({key: s.as_json() for key, s in self.misconfigured.items()})
        return out

    async def stop(self) -> None:
        if self._launcher is not None:
            self._launcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._launcher
        await asyncio.gather(*(w.stop() for w in self.workers))
        for task in self._simulations:
            task.cancel()
        for task in self._simulations:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # an error was logged when the task ended
        await self.fetcher.aclose()
        logger.info("sources stopped")


def _report_end(task: asyncio.Task[int]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.error("source %s stopped with an error: %r", task.get_name(), exc, exc_info=exc)
