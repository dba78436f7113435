"""Stage 1 inside the Faust worker: a consume-score-produce loop over mentions.raw, in batches.

Why not a Faust agent: Faust's stream hands events over one at a time (~14,000 events/s at best on
one core, before any work), which caps the whole analyzer far below a plain aiokafka loop. This
service runs under the Faust app (started and stopped with it) but reads with `getmany`.

Exactness. On a broker with transactions (Apache Kafka), each partition's batch is one Kafka
transaction: the scored mentions, the kpi-partials, the dead letters, the batch's new mention ids
(on the `<app id>-seen-ids` topic) and the consumer offset commit together or not at all. One
transactional producer per input partition (`<app id>-stage1-<partition>`) fences a zombie owner
of that partition and aborts its open transaction when the partition moves or the worker restarts.
Readers use read_committed, so an aborted batch is never seen, and a partial's origin range is
never emitted twice. On a broker without transactions (the embedded Tansu) the loop falls back to
at-least-once: outputs are acknowledged before the offsets are committed.

Duplicates: the ids remembered per input partition are kept in memory, rebuilt at assignment
from the seen-ids topic (same partitioning as mentions.raw, time-based retention).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, ProducerFenced, TopicAlreadyExistsError
from mode import Service

from schemas import Topics
from services.analyzer.metrics import AnalyzerMetrics
from services.analyzer.pipeline import RawRecord, Stage1, Stage1Result
from services.analyzer.settings import AnalyzerSettings

logger = logging.getLogger(__name__)


def dlq_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("error", reason.encode()[:4000]),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


def reason_class(reason: str) -> str:
    return "empty" if reason == "empty value" else ("json" if "JSON" in reason or "json" in reason else "schema")


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: ScoringService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.service.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.service.acquire(assigned)


class ScoringService(Service):
    """Stage 1: mentions.raw → mentions.scored, kpi.partials, mentions.dlq (one transaction per batch)."""

    def __init__(
        self,
        settings: AnalyzerSettings,
        stage1: Stage1,
        metrics: AnalyzerMetrics,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.stage1 = stage1
        self.metrics = metrics
        self.topics = Topics(settings.topic_prefix)
        self.group_id = f"{settings.analyzer_app_id}-stage1"
        self.seen_topic = f"{settings.analyzer_app_id}-seen-ids"
        self.transactional: bool | None = None  # decided at start: does the broker do transactions?
        self._consumer: AIOKafkaConsumer | None = None
        self._producers: dict[int, AIOKafkaProducer] = {}
        self._plain_producer: AIOKafkaProducer | None = None
        self._seen: dict[int, set[str]] = {}
        self._positions: dict[int, int] = {}
        self._lag_reported = 0.0

    # --- lifecycle ---------------------------------------------------------------------------

    async def on_start(self) -> None:
        await self._ensure_seen_topic()
        self.transactional = await self._broker_supports_transactions()
        logger.info(
            "stage 1: %s on %s (group %s)",
            "exactly-once (Kafka transactions)" if self.transactional else "at-least-once (no transactions here)",
            self.topics.mentions_raw,
            self.group_id,
        )
        if not self.transactional:
            self._plain_producer = self._new_producer(None)
            await self._plain_producer.start()

    async def _start_consumer(self) -> AIOKafkaConsumer:
        # Started from the task, not on_start: joining a group can take a while (the embedded broker
        # holds every join ~15 s), and the Faust consumer of stage 2 should be joining meanwhile.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.settings.analyzer_batch_size,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            session_timeout_ms=int(self.settings.analyzer_session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, self.settings.analyzer_session_timeout / 3) * 1000),
        )
        consumer.subscribe([self.topics.mentions_raw], listener=_Rebalance(self))
        self._consumer = consumer
        await consumer.start()
        return consumer

    async def on_stop(self) -> None:
        logger.info("stage 1: stopping")
        if self._consumer is not None:
            await self._consumer.stop()  # leaves the group; revocation closes the producers
            self._consumer = None
        await self.release([TopicPartition(self.topics.mentions_raw, p) for p in list(self._producers)])
        if self._plain_producer is not None:
            await self._plain_producer.flush()
            await self._plain_producer.stop()
            self._plain_producer = None
        logger.info("stage 1: stopped")

    def _new_producer(self, transactional_id: str | None) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            acks="all",
            enable_idempotence=transactional_id is not None,
            transactional_id=transactional_id,
            transaction_timeout_ms=int(self.settings.analyzer_transaction_timeout * 1000),
            linger_ms=5,
            max_batch_size=512 * 1024,
            max_request_size=8 * 1024 * 1024,
        )

    async def _broker_supports_transactions(self) -> bool:
        if self.settings.analyzer_guarantee != "auto":
            return self.settings.analyzer_guarantee == "exactly_once"
        probe = self._new_producer(f"{self.group_id}-probe")
        try:
            await asyncio.wait_for(probe.start(), timeout=30)
            await probe.begin_transaction()
            await probe.commit_transaction()
            return True
        except (TimeoutError, KafkaError) as exc:
            logger.warning("the broker refused a transactional producer (%r): stage 1 runs at-least-once", exc)
            return False
        finally:
            await probe.stop()

    async def _ensure_seen_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap)
        await admin.start()
        try:
            if self.seen_topic in set(await admin.list_topics()):
                return
            retention_ms = int(self.settings.analyzer_dedupe_retention * 1000)
            topic = NewTopic(
                self.seen_topic,
                num_partitions=self.settings.partitions,
                replication_factor=self.settings.replication_factor,
                topic_configs={"cleanup.policy": "delete", "retention.ms": str(retention_ms)},
            )
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
        finally:
            await admin.close()

    # --- partitions come and go --------------------------------------------------------------

    async def acquire(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            if self.transactional:
                producer = self._new_producer(f"{self.group_id}-{tp.partition}")
                await producer.start()  # InitProducerId: fences the previous owner, aborts its open batch
                self._producers[tp.partition] = producer
        seen = await self._load_seen([tp.partition for tp in assigned])
        for partition, ids in seen.items():
            self._seen[partition] = ids
            logger.info("stage 1: partition %d assigned, %d ids remembered", partition, len(ids))

    async def release(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            producer = self._producers.pop(tp.partition, None)
            if producer is not None:
                await producer.stop()
            self._seen.pop(tp.partition, None)

    async def _load_seen(self, partitions: list[int]) -> dict[int, set[str]]:
        """The ids already counted on these input partitions, from the seen-ids topic (committed only)."""
        seen: dict[int, set[str]] = {p: set() for p in partitions}
        if not partitions:
            return seen
        tps = [TopicPartition(self.seen_topic, p) for p in partitions]
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, enable_auto_commit=False, isolation_level="read_committed"
        )
        await reader.start()
        try:
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:
                for tp, records in (await reader.getmany(*pending, timeout_ms=1000)).items():
                    for record in records:
                        if record.value:
                            seen[tp.partition].update(orjson.loads(record.value))
                for tp in list(pending):
                    if await reader.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            await reader.stop()
        return seen

    # --- the loop ----------------------------------------------------------------------------

    @Service.task
    async def _consume(self) -> None:
        consumer = await self._start_consumer()
        while not self.should_stop:
            # Up to a batch per assigned partition: each partition's batch is one transaction.
            max_records = self.settings.analyzer_batch_size * max(1, len(consumer.assignment()))
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
            except KafkaError as exc:
                logger.warning("stage 1: fetch failed (%r); retrying", exc)
                await self.sleep(1.0)
                continue
            commits = []
            for tp, records in batches.items():
                if not records:
                    continue
                if tp.partition not in self._seen:
                    # Fetched while the partition was still being set up (or just lost): read it again later.
                    if tp in consumer.assignment():
                        consumer.seek(tp, records[0].offset)
                    continue
                # The CPU work runs partition after partition; the commits' round trips overlap.
                raw = [RawRecord(r.partition, r.offset, r.key, r.value) for r in records]
                result = self.stage1.process(raw, self._seen[tp.partition].__contains__)
                commits.append(self._commit_partition(consumer, tp, raw, result))
                self._positions[tp.partition] = records[-1].offset + 1
            await asyncio.gather(*commits)
            self._report_lag(consumer)

    async def _commit_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, raw: list[RawRecord], result: Stage1Result
    ) -> None:
        next_offset = raw[-1].offset + 1
        try:
            if self.transactional:
                await self._commit_transaction(tp, result, raw, next_offset)
            else:
                await self._commit_at_least_once(consumer, tp, result, raw, next_offset)
        except ProducerFenced:
            logger.warning("stage 1: fenced on partition %d (another worker owns it now)", tp.partition)
            await self.release([tp])
            return
        except KafkaError as exc:
            # Nothing of this batch is visible (aborted) or it will be sent again (at-least-once):
            # rewind to its first offset and try again.
            logger.warning("stage 1: batch %s[%d]@%d failed (%r); retrying", tp.topic, tp.partition, raw[0].offset, exc)
            consumer.seek(tp, raw[0].offset)
            await self.sleep(1.0)
            return
        seen = self._seen.get(tp.partition)
        if seen is not None:
            seen.update(mention_id for _, mention_id, _ in result.new_ids)
        self._record_metrics(result, len(raw))

    def _outputs(
        self, producer: AIOKafkaProducer, result: Stage1Result, raw: list[RawRecord], partition: int
    ) -> list[Awaitable[Any]]:
        topics = self.topics
        sends: list[Awaitable[Any]] = []
        for brand, value in result.scored:
            sends.append(producer.send(topics.mentions_scored, value, key=brand.encode()))
        for partial in result.partials:
            sends.append(producer.send(topics.kpi_partials, orjson.dumps(partial), key=partial["brand"].encode()))
        for letter in result.dead:
            record = letter.record
            logger.warning(
                "dead-lettering %s[%d]@%d: %s", topics.mentions_raw, record.partition, record.offset, letter.reason
            )
            self.metrics.dlq.labels(topics.mentions_raw, reason_class(letter.reason)).inc()
            headers = dlq_headers(letter.reason, topics.mentions_raw, record.partition, record.offset)
            sends.append(producer.send(topics.mentions_dlq, record.value or b"", key=record.key, headers=headers))
        if result.new_ids:
            ids = orjson.dumps([mention_id for _, mention_id, _ in result.new_ids])
            sends.append(producer.send(self.seen_topic, ids, partition=partition))
        return sends

    async def _commit_transaction(
        self, tp: TopicPartition, result: Stage1Result, raw: list[RawRecord], next_offset: int
    ) -> None:
        producer = self._producers[tp.partition]
        await producer.begin_transaction()
        try:
            for send in self._outputs(producer, result, raw, tp.partition):
                await send  # queued in the transaction; commit_transaction waits for them all
            await producer.send_offsets_to_transaction({tp: next_offset}, self.group_id)
            await producer.commit_transaction()
        except ProducerFenced:
            raise
        except BaseException:
            if producer._txn_manager is not None and producer._txn_manager.is_in_transaction():
                await producer.abort_transaction()
            raise

    async def _commit_at_least_once(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        result: Stage1Result,
        raw: list[RawRecord],
        next_offset: int,
    ) -> None:
        assert self._plain_producer is not None
        futures = [await send for send in self._outputs(self._plain_producer, result, raw, tp.partition)]
        await asyncio.gather(*futures)  # every output acknowledged before the offsets move
        await consumer.commit({tp: next_offset})

    def _record_metrics(self, result: Stage1Result, records: int) -> None:
        metrics = self.metrics
        metrics.processed.labels("stage1").inc(records)
        metrics.duplicates.inc(result.duplicates)
        metrics.partials.labels("out").inc(len(result.partials))
        scored = len(result.new_ids) - result.unmatched
        if scored > 0:
            metrics.scoring_seconds.observe(result.scoring_seconds / scored)
        for (brand, label), n in result.brand_labels.items():
            metrics.brand_mentions.labels(brand, label).inc(n)

    def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        now = time.monotonic()
        if now - self._lag_reported < 5.0:
            return
        self._lag_reported = now
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            position = self._positions.get(tp.partition)
            if end is not None and position is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
