"""The Faust application: two agents around the pure stages of `pipeline.py`.

Stage 1 reads mentions.raw (keyed by mention id) in batches; the `seen-mentions` table (keyed by id,
so co-partitioned with its input) drops duplicate ids. Stage 2 reads kpi.partials (keyed by brand)
and keeps `kpi-buckets` and `brand-state` tables. Every output of a batch is acknowledged by the
broker before the batch's offsets can be committed (at-least-once), and stage 2 recognises a
replayed partial by its origin, so counts stay exact across restarts.
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
from faust.types import EventT
from prometheus_client import CollectorRegistry

from schemas import EcouteConfig, Topics
from services.analyzer.metrics import AnalyzerMetrics, build_metrics
from services.analyzer.pipeline import RawRecord, Stage1, Stage2, describe_error, new_brand_state, parse_partial
from services.analyzer.settings import AnalyzerSettings

logger = logging.getLogger(__name__)


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


def _dlq_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("error", reason.encode()[:4000]),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


def _reason_class(reason: str) -> str:
    return "empty" if reason == "empty value" else ("json" if "JSON" in reason or "json" in reason else "schema")


def create_app(
    settings: AnalyzerSettings, config: EcouteConfig, registry: CollectorRegistry | None = None
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
        broker_commit_interval=1.0,
        broker_session_timeout=settings.analyzer_session_timeout,
        broker_heartbeat_interval=min(3.0, settings.analyzer_session_timeout / 3),
        stream_buffer_maxsize=max(4096, settings.analyzer_batch_size * 2),
    )
    raw_topic = app.topic(
        topics.mentions_raw, partitions=settings.partitions, key_serializer="raw", value_serializer="raw"
    )
    partials_topic = app.topic(
        topics.kpi_partials, partitions=settings.partitions, key_serializer="raw", value_serializer="raw"
    )
    seen = app.Table("seen-mentions", partitions=settings.partitions)
    buckets = app.Table("kpi-buckets", partitions=settings.partitions)
    brand_state = app.Table("brand-state", partitions=settings.partitions)
    stage1 = Stage1(config)
    stage2 = Stage2(config)

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any = None) -> Awaitable[Any]:
        return await app.producer.send(topic, key, value, partition=None, timestamp=None, headers=headers)

    async def dead_letter(topic: str, event: EventT[Any], reason: str) -> Awaitable[Any]:
        message = event.message
        logger.warning("dead-lettering %s[%d]@%d: %s", topic, message.partition, message.offset, reason)
        metrics.dlq.labels(topic, _reason_class(reason)).inc()
        headers = _dlq_headers(reason, topic, message.partition, message.offset)
        return await send(topics.mentions_dlq, message.key, message.value or b"", headers)

    @app.agent(raw_topic, name="stage1-score")
    async def score_mentions(stream: Any) -> None:  # a faust Stream; StreamT lacks take_events
        async for events in stream.take_events(settings.analyzer_batch_size, settings.analyzer_batch_within):
            await _stage1_batch(events)

    async def _stage1_batch(events: Sequence[EventT[Any]]) -> None:
        records = [RawRecord(e.message.partition, e.message.offset, e.message.key, e.message.value) for e in events]
        result = stage1.process(records, seen.__contains__)
        pending: list[Awaitable[Any]] = []
        for brand, value in result.scored:
            pending.append(await send(topics.mentions_scored, brand.encode(), value))
        for partial in result.partials:
            pending.append(await send(topics.kpi_partials, partial["brand"].encode(), orjson.dumps(partial)))
        for letter in result.dead:
            event = events[records.index(letter.record)]
            pending.append(await dead_letter(topics.mentions_raw, event, letter.reason))
        await asyncio.gather(*pending)
        # Ids are remembered only once their outputs are acknowledged: a crash in between replays them.
        for index, mention_id, published in result.new_ids:
            with event_context(events[index]):
                seen[mention_id] = published
        metrics.processed.labels("stage1").inc(len(events))
        metrics.duplicates.inc(result.duplicates)
        metrics.partials.labels("out").inc(len(result.partials))
        scored_count = sum(result.brand_labels.values())
        if scored_count:
            metrics.scoring_seconds.observe(result.scoring_seconds / max(1, len(result.new_ids) - result.unmatched))
        for (brand, label), n in result.brand_labels.items():
            metrics.brand_mentions.labels(brand, label).inc(n)

    @app.agent(partials_topic, name="stage2-kpis")
    async def fold_kpis(stream: Any) -> None:
        async for events in stream.take_events(settings.analyzer_batch_size, settings.analyzer_batch_within):
            await _stage2_batch(events)

    async def _stage2_batch(events: Sequence[EventT[Any]]) -> None:
        pending: list[Awaitable[Any]] = []
        by_brand: dict[str, list[tuple[EventT[Any], dict[str, Any]]]] = {}
        for event in events:
            try:
                partial = parse_partial(event.message.value or b"")
            except ValueError as exc:
                pending.append(await dead_letter(topics.kpi_partials, event, describe_error(exc)))
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
        metrics.processed.labels("stage2").inc(len(events))

    @app.timer(5.0)
    async def report_lag() -> None:
        for tp in app.consumer.assignment():
            if tp.topic not in (topics.mentions_raw, topics.kpi_partials):
                continue
            position = await app.consumer.position(tp)
            highwater = app.consumer.highwater(tp)
            if position is not None and highwater is not None:
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    return app, metrics
