"""The Faust application: stage 1 (`ScoringService`, batched, transactional) and the stage-2 agent.

Stage 2 reads kpi.partials (keyed by brand) in batches and keeps the `kpi-buckets` and `brand-state`
tables. It reads read_committed, so a stage-1 batch that was aborted is never counted, and it skips
a partial whose origin it has already applied (the `applied` map in brand-state, restored from the
changelog with the buckets), so a replay after a crash never counts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any

import faust
import orjson
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import EventT
from prometheus_client import CollectorRegistry

from schemas import EcouteConfig, Topics
from schemas.producers import start_producer
from schemas.settings import Idempotence
from schemas.topics import MAX_RECORD_BYTES
from services.analyzer.metrics import AnalyzerMetrics, build_metrics
from services.analyzer.pipeline import Stage1, Stage2, describe_error, new_brand_state, parse_partial
from services.analyzer.scoring import ScoringService, dead_letter, dlq_headers, reason_class
from services.analyzer.settings import AnalyzerSettings

logger = logging.getLogger(__name__)


class _ReadCommittedThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust reads read_committed only in its own exactly-once mode; stage 2 needs it always,
        # because stage 1 writes partials in transactions. aiokafka hands this to its fetcher at start.
        consumer._isolation_level = "read_committed"
        return consumer


class ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)


def ruled_producer(idempotence: Idempotence) -> type[faust_aiokafka.Producer]:
    """Faust's producer class (stage 2's snapshots, alerts, DLQ records and changelogs), started by
    schemas.producers like every other producer, so it follows `ECOUTE_KAFKA_IDEMPOTENCE` too."""

    class RuledProducer(faust_aiokafka.Producer):
        async def on_start(self) -> None:
            # Faust's own on_start builds an AIOKafkaProducer with its settings; this one hands them to the rule.
            await super(faust_aiokafka.Producer, self).on_start()
            options = {**self._settings_default(), **self._settings_auth()}
            servers = options.pop("bootstrap_servers")
            del options["acks"]  # producer_acks=-1: the rule's acks=all
            bootstrap = servers if isinstance(servers, str) else ",".join(servers)
            producer = await start_producer(bootstrap, idempotence, **options)
            self._producer = producer
            self.beacon.add(producer)

    return RuledProducer


@contextlib.contextmanager
def event_context(event: EventT[Any]) -> Iterator[None]:
    """Make `event` the current one, so table writes go to its partition's changelog.

    Faust takes the changelog partition from the current event; in a batch we write once per key
    on behalf of the event that carried it (same partition, so co-partitioning holds).
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def create_app(
    settings: AnalyzerSettings,
    config: EcouteConfig,
    registry: CollectorRegistry | None = None,
    stage1: Stage1 | None = None,
) -> tuple[faust.App, AnalyzerMetrics]:
    topics = Topics(settings.topic_prefix)
    metrics = build_metrics(registry or CollectorRegistry())
    app = faust.App(
        settings.analyzer_app_id,
        broker=[f"kafka://{host}" for host in settings.bootstrap.split(",")],
        store=settings.analyzer_store,
        datadir=str(settings.analyzer_data_dir),
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        # Tables hold JSON; the topics below are read as raw bytes and decoded by the pipeline.
        key_serializer="json",
        value_serializer="json",
        producer_acks=-1,
        # A dead letter of kpi.partials carries the original bytes, as large as that topic lets in.
        producer_max_request_size=MAX_RECORD_BYTES,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.analyzer_session_timeout,
        broker_heartbeat_interval=min(3.0, settings.analyzer_session_timeout / 3),
        stream_buffer_maxsize=max(4096, settings.analyzer_batch_size * 2),
    )
    app.transport.Consumer = ReadCommittedConsumer  # type: ignore[misc]
    app.transport.Producer = ruled_producer(settings.kafka_idempotence)  # type: ignore[misc]
    partials_topic = app.topic(
        topics.kpi_partials, partitions=settings.partitions, key_serializer="raw", value_serializer="raw"
    )
    buckets = app.Table("kpi-buckets", partitions=settings.partitions)
    brand_state = app.Table("brand-state", partitions=settings.partitions)
    stage2 = Stage2(config)
    app.add_dependency(ScoringService(settings, stage1 or Stage1(config), metrics, loop=app.loop, beacon=app.beacon))

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any = None) -> Awaitable[Any]:
        return await app.producer.send(topic, key, value, partition=None, timestamp=None, headers=headers)

    @app.agent(partials_topic, name="stage2-kpis")
    async def fold_kpis(stream: Any) -> None:  # a faust Stream; StreamT lacks take_events
        async for events in stream.take_events(settings.analyzer_batch_size, settings.analyzer_batch_within):
            await _stage2_batch(events)

    async def _stage2_batch(events: Sequence[EventT[Any]]) -> None:
        pending: list[Awaitable[Any]] = []
        by_brand: dict[str, list[tuple[EventT[Any], dict[str, Any]]]] = {}
        for event in events:
            message = event.message
            try:
                partial = parse_partial(message.value or b"")
            except ValueError as exc:
                reason = describe_error(exc)
                logger.warning("dead-lettering %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)
                metrics.dlq.labels(topics.kpi_partials, reason_class(reason)).inc()
                value, headers = dead_letter(
                    message.value or b"", dlq_headers(reason, topics.kpi_partials, message.partition, message.offset)
                )
                pending.append(await send(topics.mentions_dlq, message.key, value, headers))
                continue
            by_brand.setdefault(partial["brand"], []).append((event, partial))
        for brand, items in by_brand.items():
            with event_context(items[-1][0]):
                state = brand_state.get(brand) or new_brand_state()
                result = stage2.apply(brand, [p for _, p in items], state, buckets)
                brand_state[brand] = state
            metrics.partials.labels("in").inc(result.applied)
            metrics.partials.labels("replayed").inc(result.replayed)
            for snapshot in result.snapshots:
                key = f"{brand}|{snapshot['window']}|{int(snapshot['start'].timestamp())}".encode()
                pending.append(await send(topics.kpi_snapshots, key, orjson.dumps(snapshot)))
            for alert in result.alerts:
                logger.info("alert %s for %s: %s", alert["kind"], brand, alert["message"])
                metrics.alerts_fired.labels(brand, alert["kind"]).inc()
                pending.append(await send(topics.alerts, brand.encode(), orjson.dumps(alert)))
        await asyncio.gather(*pending)
        # The tables' changelog records go out through the producer's buffer, unawaited. Once this returns the
        # events are acked and their offsets may be committed: wait until those records are acknowledged too, or
        # a rebalance (a session lost while the brokers were away) restores the tables from changelogs that lack
        # them while kpi.partials is committed past them, and those partials are lost (the fault suite lost 207
        # mentions of one brand that way with the whole cluster down for 30 s).
        await app.producer.flush()
        metrics.processed.labels("stage2").inc(len(events))

    @app.timer(5.0)
    async def report_lag() -> None:
        for tp in app.consumer.assignment():
            if tp.topic != topics.kpi_partials:
                continue
            position = await app.consumer.position(tp)
            highwater = app.consumer.highwater(tp)
            if position is not None and highwater is not None:
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    return app, metrics
