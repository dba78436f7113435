"""The API's Kafka side. `ViewConsumer` feeds the views: every partition of kpi.snapshots, mentions.scored,
alerts, alerts.actions and webhooks.deliveries, from the beginning — or, with a history store, from the
offsets it holds, once its rows are applied (warmstart.py). `ActionWriter` records acks and handled
marks. The API creates only the two topics it writes (alerts.actions, webhooks.deliveries, with their configs
from `schemas.topics`); it waits for the pipeline's topics without creating them.

No consumer group: each API replica reads everything itself (assign, not subscribe), so any replica
answers for every brand and a restart loses nothing. Ready once every partition has reached the end
offset it had when this consumer started; it keeps consuming live afterwards.

The consumer shares the event loop with the HTTP requests: each scored mention is parsed and validated once
for every view, and records are applied in slices of a few milliseconds with the loop handed back in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError

from schemas import (
    Alert,
    AlertAck,
    Kpi,
    MentionHandled,
    ScoredMention,
    Topics,
    WebhookDelivery,
    describe_error,
    ensure_topics,
    load,
    utc_now,
)
from schemas.models import Outreach
from schemas.producers import start_producer
from services.api.actions import MalformedAction, action_key, encode_action, parse_action
from services.api.fanout import AlertFanout
from services.api.metrics import ApiMetrics
from services.api.settings import ApiSettings
from services.api.views import Views
from services.api.warmstart import WarmStart, WarmStartFailed
from services.api.webhooks import DeliveryLog

logger = logging.getLogger(__name__)

KPI_SNAPSHOTS = "kpi.snapshots"
MENTIONS_SCORED = "mentions.scored"
ALERTS = "alerts"
ACTIONS = "alerts.actions"
DELIVERIES = "webhooks.deliveries"
OWN_VIEW_TOPICS = frozenset({KPI_SNAPSHOTS, MENTIONS_SCORED, ALERTS, ACTIONS, DELIVERIES})
EVICT_EVERY_SECONDS = 60.0
# Seconds between two calls of `on_settled` once caught up: often enough that each call, and each full
# collection between two, walks only a few seconds' worth of new objects.
SETTLE_EVERY_SECONDS = 10.0
# Seconds between two updates of the views' lag gauge.
LAG_EVERY_SECONDS = 5.0
# Records taken from the fetcher at once: aiokafka builds them all before handing any over, holding the event
# loop meanwhile (~20 µs each: 500 took ~10 ms, which answers waited for).
MAX_RECORDS = 100
# The consumer hands the event loop back to HTTP requests after applying records for this long…
APPLY_SLICE_SECONDS = 0.002
# …for this many turns of the loop: a request that arrived meanwhile needs about three to be answered (its
# bytes read, its task started, its answer written), and the consumer, back in the queue after one turn,
# would otherwise take another slice between each of them.
YIELD_TURNS = 3


def _sink_skips(name: str, record: Any, exc: Exception, level: int) -> None:
    logger.log(
        level,
        "%s views skip the record on %s partition %d offset %d: %s",
        name,
        record.topic,
        record.partition,
        record.offset,
        describe_error(exc),
    )


class MalformedRecord(ValueError):
    """A record the views cannot use; the message says why."""


@dataclass(frozen=True)
class RecordSink:
    """Another view fed from the same consumer: `apply(topic, key, value, now)` for records of `topics`
    (unprefixed names); it raises on a record it cannot use (logged with topic/partition/offset, then skipped).

    With `apply_mention`, a sink reading mentions.scored gets the mention the consumer already parsed and
    validated (each record is parsed once for every view) instead of the raw record."""

    name: str
    topics: frozenset[str]
    apply: Callable[[str, bytes | None, bytes | None, datetime], object]
    evict: Callable[[datetime], int] | None = None
    sizes: Callable[[], dict[str, int]] | None = None
    apply_mention: Callable[[ScoredMention, datetime], object] | None = None


class ViewConsumer:
    """Owns the aiokafka consumer task that keeps `views` up to date and pushes new alerts to `fanout`."""

    def __init__(
        self,
        settings: ApiSettings,
        views: Views,
        metrics: ApiMetrics,
        fanout: AlertFanout,
        clock: Callable[[], datetime] = utc_now,
        deliveries: DeliveryLog | None = None,
        sinks: Sequence[RecordSink] = (),
        on_settled: Callable[[], object] | None = None,
        warm_start: WarmStart | None = None,
    ) -> None:
        """`on_settled` runs once the views have caught up and then every SETTLE_EVERY_SECONDS, between two
        batches of records (the app freezes the views' long-lived objects out of the garbage collector's way).
        `warm_start`: load the views from the history store first, then read Kafka from its offsets."""
        self.warm_start = warm_start
        # Where each partition starts once the store's rows are applied (None: not loaded yet).
        self._store_offsets: dict[TopicPartition, int] | None = None
        self._loading = False
        # Records applied are counted as Kafka's, or as the store's while it loads.
        self._applied = metrics.view_records
        self.settings = settings
        self.on_settled = on_settled
        self.views = views
        self.deliveries = deliveries if deliveries is not None else DeliveryLog(settings.deliveries_kept)
        self.metrics = metrics
        self.fanout = fanout
        self.clock = clock
        topics = Topics(settings.topic_prefix)
        # full topic name -> the unprefixed name used in logs' context and metric labels
        self.names = {
            topics.kpi_snapshots: KPI_SNAPSHOTS,
            topics.mentions_scored: MENTIONS_SCORED,
            topics.alerts: ALERTS,
            topics.alerts_actions: ACTIONS,
            topics.webhooks_deliveries: DELIVERIES,
        }
        self.own_topics = [topics.alerts_actions, topics.webhooks_deliveries]
        self.sinks = list(sinks)
        self._mention_sinks = [sink for sink in self.sinks if MENTIONS_SCORED in sink.topics]
        self._mentions_applied = self._applied.labels(MENTIONS_SCORED)
        for sink in self.sinks:
            for name in sink.topics:
                if name not in self.names.values():
                    self.names[f"{settings.topic_prefix}{name}"] = name
        self._missing_topics: list[str] = sorted(self.names)
        self._connected = False
        self._targets: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._pending: set[TopicPartition] = set()
        self._ready = False
        self._task: asyncio.Task[None] | None = None

    # -- state -----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    def waiting_for(self) -> list[str]:
        """What readiness still waits for, in words."""
        if self._ready:
            return []
        if self._loading:
            return ["the views to load from the history store"]
        if not self._connected:
            return [f"Kafka at {self.settings.bootstrap}"]
        if self._missing_topics:
            return [f"topic {name} to exist" for name in self._missing_topics]
        if not self._targets:
            return ["partition assignment"]
        return [
            f"{tp.topic}[{tp.partition}] at offset {self._positions.get(tp, 0)} of {self._targets[tp]}"
            for tp in sorted(self._pending)
        ]

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ecoute-api-views")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        logger.info("view consumer stopped")

    async def _run(self) -> None:
        """Keep the consumer running: retry while Kafka is unreachable, restart (with backoff) after a failure.

        Restarting replays the topics into the same views, which is harmless: every apply is idempotent.
        """
        backoff = 1.0
        while True:
            started = time.monotonic()
            delay = 1.0
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except KafkaConnectionError as exc:
                self._connected = False
                if time.monotonic() - started > 60:
                    backoff = 1.0
                delay, backoff = backoff, min(backoff * 2, 5.0)  # Kafka may just be starting: keep trying soon
                logger.warning("Kafka at %s not reachable (%s); retrying in %.0fs", self.settings.bootstrap, exc, delay)
            except Exception:
                self._connected = False
                if time.monotonic() - started > 60:
                    backoff = 1.0
                delay, backoff = backoff, min(backoff * 2, 30.0)
                logger.exception("view consumer failed; restarting in %.0fs", delay)
            await asyncio.sleep(delay)

    async def _consume(self) -> None:
        await ensure_own_topics(self.settings, self.own_topics)
        partitions = await self._discover_partitions()
        starts = dict(await self._from_store(partitions))
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            client_id="ecoute-api",
        )
        await consumer.start()
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
            for tp, offset in list(starts.items()):
                if offset > ends[tp]:
                    # The store read a log this partition no longer is (the topic was recreated, an embedded broker
                    # restarted empty): its offset is no position in this one, whose records are all new to it.
                    logger.warning(
                        "the history store holds %s[%d] up to offset %d, past its end %d: reading it from the start",
                        tp.topic,
                        tp.partition,
                        offset,
                        ends[tp],
                    )
                    del starts[tp]
                else:
                    consumer.seek(tp, offset)
            self._targets = dict(ends)
            self._positions = {tp: starts.get(tp, 0) for tp in partitions}
            self._pending = {tp for tp, end in ends.items() if end > starts.get(tp, 0)}
            logger.info(
                "reading %d partitions of %s (%d from the history store's offsets, the others from the beginning),"
                " %d records to catch up",
                len(partitions),
                ", ".join(sorted(self.names)),
                len(starts),
                sum(max(0, end - starts.get(tp, 0)) for tp, end in ends.items()),
            )
            await self._check_ready(consumer)
            last_evict = last_settle = time.monotonic()
            last_lag = 0.0
            # The slice runs across batches: with records buffered, getmany returns without a pause, and the
            # time it spends building them counts too.
            slice_end = time.perf_counter() + APPLY_SLICE_SECONDS
            while True:
                batch: dict[TopicPartition, list[Any]] = await consumer.getmany(
                    timeout_ms=1000, max_records=MAX_RECORDS
                )
                if time.perf_counter() > slice_end:
                    slice_end = await self._step_aside()
                now = self.clock()
                for tp, records in batch.items():
                    for record in records:
                        self._apply(record, now)
                        if time.perf_counter() > slice_end:
                            slice_end = await self._step_aside()
                            now = self.clock()
                    if records:
                        self._positions[tp] = records[-1].offset + 1
                if self._pending:
                    await self._check_ready(consumer)
                if time.monotonic() - last_lag > LAG_EVERY_SECONDS:
                    last_lag = time.monotonic()
                    await self._report_lag(consumer)
                if time.monotonic() - last_evict > EVICT_EVERY_SECONDS:
                    last_evict = time.monotonic()
                    dropped = self.views.evict(self.clock())
                    for sink in self.sinks:
                        if sink.evict is not None:
                            dropped += sink.evict(self.clock())
                    if dropped:
                        logger.debug("evicted %d old buckets and author sightings", dropped)
                if self._ready and time.monotonic() - last_settle > SETTLE_EVERY_SECONDS:
                    last_settle = time.monotonic()
                    self._settle()
        finally:
            await consumer.stop()

    async def _from_store(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Apply the history store's rows to the views (once: a restarted consumer keeps them) and return the
        offset each stored partition is to be read from; {} (all from the beginning) without a store, or when it
        cannot be read — the API then replays the topics, as it does without one."""
        if self.warm_start is None:
            return {}
        if self._store_offsets is not None:
            return self._store_offsets
        self._loading = True
        started = time.monotonic()
        self._applied = self.metrics.view_store_rows
        self._mentions_applied = self._applied.labels(MENTIONS_SCORED)
        try:
            async with self.warm_start.snapshot(self.names, self.clock()) as snapshot:
                now = self.clock()
                slice_end = time.perf_counter() + APPLY_SLICE_SECONDS
                async for record in snapshot.records:
                    self._apply(record, now)
                    if time.perf_counter() > slice_end:
                        slice_end = await self._step_aside()
                        now = self.clock()
            stored = {TopicPartition(topic, part): offset for (topic, part), offset in snapshot.offsets.items()}
            self._store_offsets = {tp: stored[tp] for tp in partitions if tp in stored}
            logger.info(
                "views loaded from the history store in %.1f s (%s); %d partitions start from its offsets",
                time.monotonic() - started,
                ", ".join(f"{name}: {n}" for name, n in sorted(snapshot.loaded.items())) or "no rows",
                len(self._store_offsets),
            )
        except WarmStartFailed as exc:
            logger.warning("history store not used (%s): reading every topic from the beginning", exc)
            self._store_offsets = {}
        finally:
            self._loading = False
            self._applied = self.metrics.view_records
            self._mentions_applied = self._applied.labels(MENTIONS_SCORED)
        return self._store_offsets

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Set the lag gauge of every topic read: records up to the last stable offset not applied yet."""
        behind: dict[str, int] = {}
        for tp in self._targets:
            name = self.names.get(tp.topic, tp.topic)
            end = consumer.last_stable_offset(tp)  # None before the first fetch, -1 from a broker without it
            if end is None or end < 0:
                end = consumer.highwater(tp)
            if end is None or end < 0:  # nothing fetched from it yet: its end when the consumer started
                end = self._targets[tp]
            behind[name] = behind.get(name, 0) + max(0, end - await consumer.position(tp))
        for name, records in behind.items():
            self.metrics.view_lag.labels(name).set(records)

    @staticmethod
    async def _step_aside() -> float:
        """Let waiting requests run (a long catch-up must not stall every answer behind it); returns the end of
        the next slice."""
        for _ in range(YIELD_TURNS):
            await asyncio.sleep(0)
        return time.perf_counter() + APPLY_SLICE_SECONDS

    async def _discover_partitions(self) -> list[TopicPartition]:
        """Every partition of the three topics, waiting for the topics to exist (without creating them)."""
        last_log = 0.0
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap, client_id="ecoute-api-admin")
            try:
                await admin.start()
                # No topic list: a metadata request naming topics may auto-create them with broker defaults.
                described = await admin.describe_topics()
            finally:
                await admin.close()
            self._connected = True
            found = {
                entry["topic"]: [p["partition"] for p in entry["partitions"]]
                for entry in described
                if entry["topic"] in self.names and entry["error_code"] == 0 and entry["partitions"]
            }
            self._missing_topics = sorted(set(self.names) - set(found))
            if not self._missing_topics:
                return [TopicPartition(topic, p) for topic, ids in sorted(found.items()) for p in sorted(ids)]
            if time.monotonic() - last_log > 10:
                last_log = time.monotonic()
                logger.info("waiting for topics %s to be created", ", ".join(self._missing_topics))
            await asyncio.sleep(0.5)

    async def _check_ready(self, consumer: AIOKafkaConsumer) -> None:
        for tp in list(self._pending):
            position = await consumer.position(tp)
            self._positions[tp] = position
            if position >= self._targets[tp]:
                self._pending.discard(tp)
        if not self._pending and not self._ready:
            self._settle()
            self._ready = True
            self.metrics.views_ready.set(1)
            logger.info("views caught up: %s", self.sizes())

    def _settle(self) -> None:
        if self.on_settled is None:
            return
        started = time.perf_counter()
        outcome = self.on_settled()
        logger.debug("views settled in %.1f ms: %s", (time.perf_counter() - started) * 1000, outcome)

    # -- records ---------------------------------------------------------------------------------

    def sizes(self) -> dict[str, int]:
        """How much the views (and the other sinks) hold."""
        sizes = self.views.sizes()
        for sink in self.sinks:
            if sink.sizes is not None:
                sizes.update(sink.sizes())
        return sizes

    def _apply(self, record: Any, now: datetime) -> None:
        topic = self.names[record.topic]
        if topic == MENTIONS_SCORED:
            self._apply_mention(record, now)
            return
        own = topic in OWN_VIEW_TOPICS
        for sink in self.sinks:
            if topic in sink.topics:
                try:
                    sink.apply(topic, record.key, record.value, now)
                except Exception as exc:
                    # A record our own views also read is reported (and counted) once, below.
                    _sink_skips(sink.name, record, exc, logging.DEBUG if own else logging.WARNING)
                    if not own:
                        self.metrics.view_bad_records.labels(topic).inc()
                        return
        try:
            if topic == KPI_SNAPSHOTS:
                self._apply_kpi(record, now)
            elif topic == ACTIONS:
                self.views.apply_action(parse_action(record.key, record.value))
            elif topic == DELIVERIES:
                if record.value is None:
                    self.deliveries.remove((record.key or b"").decode("utf-8", errors="replace"))
                else:
                    self.deliveries.apply(load(WebhookDelivery, record.value))
            elif topic == ALERTS:
                alert = load(Alert, self._value(record))
                is_new = self.views.apply_alert(alert)
                # Alerts replayed at start are history; only ones newer than the start-time end reach live streams.
                tp = TopicPartition(record.topic, record.partition)
                if is_new and (self._ready or record.offset >= self._targets.get(tp, 0)):
                    self.fanout.publish(alert)
        except (MalformedRecord, MalformedAction, ValidationError) as exc:
            self._skip_malformed(record, topic, exc)
            return
        except Exception:
            self._skip_failed(record, topic)
            return
        self._applied.labels(topic).inc()

    def _skip_malformed(self, record: Any, topic: str, exc: Exception) -> None:
        self.metrics.view_bad_records.labels(topic).inc()
        logger.warning(
            "skipping malformed record on %s partition %d offset %d: %s",
            record.topic,
            record.partition,
            record.offset,
            describe_error(exc),
        )

    def _skip_failed(self, record: Any, topic: str) -> None:
        """A valid record the views could not take (a bug): logged with its traceback, counted, skipped."""
        self.metrics.view_bad_records.labels(topic).inc()
        where = (record.topic, record.partition, record.offset)
        logger.exception("could not apply record on %s partition %d offset %d; skipped", *where)

    def _apply_mention(self, record: Any, now: datetime) -> None:
        """Parse and validate a scored mention once, then hand it to every view that reads them."""
        try:
            mention = load(ScoredMention, self._value(record))
        except (MalformedRecord, ValidationError) as exc:
            self._skip_malformed(record, MENTIONS_SCORED, exc)
            return
        for sink in self._mention_sinks:
            try:
                if sink.apply_mention is not None:
                    sink.apply_mention(mention, now)
                else:
                    sink.apply(MENTIONS_SCORED, record.key, record.value, now)
            except Exception as exc:
                # A valid mention that one view cannot take: that view misses it, the others still get it.
                _sink_skips(sink.name, record, exc, logging.WARNING)
        try:
            self.views.apply_scored(mention, now)
        except Exception:
            self._skip_failed(record, MENTIONS_SCORED)
            return
        self._mentions_applied.inc()

    @staticmethod
    def _value(record: Any) -> bytes:
        if record.value is None:
            raise MalformedRecord("empty value")
        value: bytes = record.value
        return value

    def _apply_kpi(self, record: Any, now: datetime) -> None:
        if record.value is not None:
            self.views.apply_kpi(load(Kpi, record.value), now)
            return
        # A tombstone: the analyzer retired that snapshot key (brand|window|start).
        key = (record.key or b"").decode("utf-8", errors="replace")
        parts = key.split("|")
        if len(parts) != 3:
            raise MalformedRecord(f"tombstone with a key that is not brand|window|start: {key!r}")
        try:
            start = datetime.fromisoformat(parts[2].replace("Z", "+00:00"))
        except ValueError as exc:
            raise MalformedRecord(f"tombstone key {key!r}: bad start: {exc}") from exc
        self.views.delete_kpi(parts[0], parts[1], start if start.tzinfo else start.replace(tzinfo=UTC))


# ---------------------------------------------------------------------------------------------- writing


async def ensure_own_topics(settings: ApiSettings, names: list[str], timeout: float = 30.0) -> None:
    """Create the topics the API itself writes if they are missing (with their configs from schemas.topics),
    and wait until every partition has a leader."""
    await ensure_topics(
        settings.bootstrap,
        Topics(settings.topic_prefix),
        settings.partitions,
        settings.replication_factor,
        timeout=timeout,
        names=names,
    )


class ActionsUnavailable(RuntimeError):
    """The action could not be written to Kafka (the caller answers 503)."""


class ActionWriter:
    """Writes acks and handled marks with acks=all; the producer (and the topic) are set up on first use."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.topic = Topics(settings.topic_prefix).alerts_actions
        self.timeout = settings.api_write_timeout_seconds
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                await ensure_own_topics(self.settings, [self.topic])
                self._producer = await start_producer(
                    self.settings.bootstrap,
                    self.settings.kafka_idempotence,
                    client_id="ecoute-api-actions",
                    request_timeout_ms=int(self.timeout * 1000),
                )
            return self._producer

    async def write(self, action: AlertAck | MentionHandled | Outreach) -> None:
        """Write one action and wait for every in-sync replica; ActionsUnavailable if Kafka does not take it."""
        try:
            async with asyncio.timeout(self.timeout):
                producer = await self._started()
                await producer.send_and_wait(self.topic, encode_action(action), key=action_key(action))
        except (TimeoutError, KafkaError, OSError, RuntimeError) as exc:
            logger.warning("could not write %s to %s: %r", action_key(action).decode(), self.topic, exc)
            raise ActionsUnavailable(f"could not record the action in Kafka ({type(exc).__name__}); retry") from exc

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
