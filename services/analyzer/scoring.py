"""Stage 1 inside the Faust worker: a consume-score-produce loop over mentions.raw, in batches.

Why not a Faust agent: Faust's stream hands events over one at a time (~14,000 events/s at best on
one core, before any work), which caps the whole analyzer far below a plain aiokafka loop. This
service runs under the Faust app (started and stopped with it) but reads with `getmany`.

Commits. Each input partition's records are read into an open batch that is committed every
`analyzer_commit_interval` (0.25 s) or after `10 × analyzer_batch_size` records, whichever comes
first. The kpi-partials are combined over that whole batch, so stage 2 gets about one partial per
(brand, minute, partition) per interval however fast mentions arrive; scored mentions are sent as
they are scored.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, ProducerFenced, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from mode import Service

from schemas import Topics
from schemas.producers import start_producer, transactional_producer
from schemas.topics import MAX_RECORD_BYTES, transient_admin_error
from services.analyzer.metrics import AnalyzerMetrics
from services.analyzer.pipeline import RawRecord, Stage1, Stage1Result
from services.analyzer.settings import AnalyzerSettings

logger = logging.getLogger(__name__)

# Records scored between two turns of the event loop (~30 ms of work): a commit in flight takes a few
# turns (sends, offsets, end of transaction), each of which waits for the slice being scored.
SLICE = 250


def dlq_headers(reason: str, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("error", reason.encode()[:4000]),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


def dead_letter(value: bytes, headers: list[tuple[str, bytes]]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The dead letter's value: the original bytes, unless they are larger than a record the analyzer may send
    (a topic whose max.message.bytes was raised past MAX_RECORD_BYTES); then their head, and a header with the
    original size. A letter the producer refuses would fail its batch again and again: the partition would stall."""
    limit = MAX_RECORD_BYTES - 64 * 1024
    if len(value) <= limit:
        return value, headers
    return value[:limit], [*headers, ("truncated.from", str(len(value)).encode())]


async def _all_acknowledged(acks: list[asyncio.Future[Any]]) -> None:
    """Wait for every acknowledgement; raise the first failure once all have settled."""
    for outcome in await asyncio.gather(*acks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def reason_class(reason: str) -> str:
    return "empty" if reason == "empty value" else ("json" if "JSON" in reason or "json" in reason else "schema")


@dataclass
class _OpenBatch:
    """What one input partition has read since its last commit (on Kafka: its open transaction)."""

    first_offset: int
    opened: float
    next_offset: int = 0
    records: int = 0
    result: Stage1Result = field(default_factory=Stage1Result)
    ids: set[str] = field(default_factory=set)  # mention ids counted in this batch
    acks: list[asyncio.Future[Any]] = field(default_factory=list)  # at-least-once: outputs to await
    # Started: its transaction is begun and outputs go out as they are scored. A batch opened while
    # the previous one still commits keeps its outputs here until that commit is through.
    started: bool = False
    unsent: list[Stage1Result] = field(default_factory=list)


class _Outbox:
    """Records bound for one producer, appended to one batch per topic partition and sent as whole
    batches: a fraction of the cost of a `send` (and a future) per record. Partitions are chosen
    as the producer's own partitioner would, so keyed records land where `send` would put them."""

    def __init__(self, producer: AIOKafkaProducer, partition_of: Callable[[str, bytes | None], int]) -> None:
        self.producer = producer
        self.partition_of = partition_of
        self.filled: list[tuple[str, int, Any]] = []
        self.open: dict[tuple[str, int], Any] = {}
        self.alone: list[tuple[tuple[str, int], bytes | None, bytes, list[Any]]] = []

    def add(
        self, topic: str, value: bytes, key: bytes | None, *, partition: int | None = None, headers: Any = ()
    ) -> None:
        where = (topic, self.partition_of(topic, key) if partition is None else partition)
        batch = self.open.get(where)
        if batch is None:
            batch = self.open[where] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
            self.filled.append((*where, batch))  # full: sent as it is, the record starts the next one
            batch = self.open[where] = self.producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None:
                # Larger than a whole batch: on its own (the producer allows up to max_request_size).
                self.alone.append((where, key, value, list(headers)))

    async def send(self) -> list[asyncio.Future[Any]]:
        batches = [*self.filled, *((topic, partition, b) for (topic, partition), b in self.open.items())]
        alone, self.filled, self.open, self.alone = self.alone, [], {}, []
        futures = [await self.producer.send_batch(b, topic, partition=partition) for topic, partition, b in batches]
        for (topic, partition), key, value, headers in alone:
            futures.append(await self.producer.send(topic, value, key=key, partition=partition, headers=headers))
        return futures


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
        self._open: dict[int, _OpenBatch] = {}
        # A partition's previous batch commits while its next records are scored (never two commits
        # in flight for one partition: each partition's producer has one transaction at a time).
        self._committing: dict[int, tuple[asyncio.Task[bool], _OpenBatch]] = {}
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._key_partitions: dict[tuple[str, bytes], int] = {}
        # Held while reading into, committing or handing over partitions: the rebalance listener
        # runs between the loop's awaits.
        self._lock = asyncio.Lock()
        self._positions: dict[int, int] = {}
        self._lag_reported = 0.0
        # A partition's open batch is committed at this size even before its interval is up, and its
        # scoring waits at this size for the previous commit: a bound on what a backlog holds in memory.
        self._max_batch_records = settings.analyzer_batch_size * 4

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
            # Without transactions, the one idempotence rule of every producer (ECOUTE_KAFKA_IDEMPOTENCE).
            self._plain_producer = await start_producer(
                self.settings.bootstrap, self.settings.kafka_idempotence, **self._producer_options()
            )

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
            # aiokafka fetches a partition again only once its buffer is empty, and the loop waits for
            # that fetch: 1 MiB (~0.2 s of scoring) waits less than 8 MiB did, in total.
            max_partition_fetch_bytes=1024 * 1024,
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
            async with self._lock:  # what was read is committed before leaving
                await self._settle_all(self._consumer, list(self._committing) + list(self._open))
            await self._consumer.stop()  # leaves the group; revocation closes the producers
            self._consumer = None
        await self.release([TopicPartition(self.topics.mentions_raw, p) for p in list(self._producers)])
        if self._plain_producer is not None:
            await self._plain_producer.flush()
            await self._plain_producer.stop()
            self._plain_producer = None
        logger.info("stage 1: stopped")

    def _producer_options(self) -> dict[str, Any]:
        return {
            "client_id": f"{self.group_id}-producer",
            "linger_ms": 5,
            # A scored chunk (1,000 posts, ~550 kB) fits in one batch: the producer keeps one batch per
            # partition in flight, and a second one would wait for the first's round trip. Kafka
            # refuses batches over `message.max.bytes` (1 MiB by default).
            "max_batch_size": 1_000_000,
            "max_request_size": MAX_RECORD_BYTES,
        }

    def _new_transactional_producer(self, transactional_id: str) -> AIOKafkaProducer:
        return transactional_producer(
            self.settings.bootstrap,
            transactional_id,
            transaction_timeout_ms=int(self.settings.analyzer_transaction_timeout * 1000),
            **self._producer_options(),
        )

    async def _broker_supports_transactions(self) -> bool:
        if self.settings.analyzer_guarantee != "auto":
            return self.settings.analyzer_guarantee == "exactly_once"
        probe = self._new_transactional_producer(f"{self.group_id}-probe")
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

    async def _ensure_seen_topic(self, timeout: float = 60.0) -> None:
        """Create the seen-ids topic if missing; retries while a broker is down or restarting."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self._create_seen_topic()
                return
            except KafkaError as exc:
                if not transient_admin_error(exc) or time.monotonic() > deadline:
                    raise
                logger.warning("Kafka not ready to create %s yet (%r); retrying", self.seen_topic, exc)
                await asyncio.sleep(1.0)

    async def _create_seen_topic(self) -> None:
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
        async with self._lock:
            for tp in assigned:
                if self.transactional:
                    producer = self._new_transactional_producer(f"{self.group_id}-{tp.partition}")
                    await producer.start()  # InitProducerId: fences the previous owner, aborts its open batch
                    self._producers[tp.partition] = producer
            await self._learn_partitions()
            seen = await self._load_seen([tp.partition for tp in assigned])
            for partition, ids in seen.items():
                self._seen[partition] = ids
                logger.info("stage 1: partition %d assigned, %d ids remembered", partition, len(ids))

    async def _learn_partitions(self) -> None:
        """The partitions of the output topics, for choosing them as the producer would."""
        producer = self._plain_producer or next(iter(self._producers.values()), None)
        if producer is None or self._partitions:
            return
        t = self.topics
        for topic in (t.mentions_scored, t.kpi_partials, t.mentions_dlq, self.seen_topic):
            self._partitions[topic] = sorted(await producer.partitions_for(topic))

    async def release(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:
            if self._consumer is not None:  # hand over what was read, committed
                await self._settle_all(self._consumer, [tp.partition for tp in revoked])
            await self._drop(revoked)

    async def _settle_all(self, consumer: AIOKafkaConsumer, partitions: list[int]) -> None:
        """Wait for these partitions' commits in flight, then commit their open batches."""
        partitions = sorted(set(partitions))
        await asyncio.gather(*(self._after_commit(consumer, p) for p in partitions if p in self._committing))
        batches = {p: self._open.pop(p) for p in partitions if p in self._open}
        await asyncio.gather(*(self._commit(consumer, p, batch) for p, batch in batches.items()))

    async def _settled(self, partition: int) -> bool:
        """Has the partition's commit in flight (if any) succeeded?"""
        committing = self._committing.pop(partition, None)
        return True if committing is None else await committing[0]

    async def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._open.pop(tp.partition, None)
            producer = self._producers.pop(tp.partition, None)
            if producer is not None:
                try:  # a producer whose brokers went away may wait long on its last batches
                    async with asyncio.timeout(self._transaction_bound):
                        await producer.stop()
                except (KafkaError, TimeoutError, AssertionError) as exc:
                    logger.warning("stage 1: producer of partition %d did not stop cleanly (%r)", tp.partition, exc)
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
            max_records = self.settings.analyzer_batch_size * max(1, len(consumer.assignment()))
            try:
                batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms(), max_records=max_records)
            except KafkaError as exc:
                logger.warning("stage 1: fetch failed (%r); retrying", exc)
                await self.sleep(1.0)
                continue
            async with self._lock:
                if self.should_stop:  # on_stop has settled and committed everything: read nothing more
                    break
                for tp, records in batches.items():
                    for start in range(0, len(records), SLICE):
                        await self._read(consumer, tp, records[start : start + SLICE])
                        # Records already fetched come back without a pause: let the commits, the
                        # producer and the fetcher run between slices.
                        await asyncio.sleep(0)
                for partition, (task, _) in list(self._committing.items()):
                    if task.done():
                        await self._after_commit(consumer, partition)
                now = time.monotonic()
                for partition in [p for p, batch in self._open.items() if self._is_due(p, batch, now)]:
                    batch = self._open.pop(partition)
                    task = asyncio.ensure_future(self._commit(consumer, partition, batch))
                    self._committing[partition] = (task, batch)
            self._report_lag(consumer)

    def _is_due(self, partition: int, batch: _OpenBatch, now: float) -> bool:
        if partition in self._committing:
            return False
        return now - batch.opened >= self.settings.analyzer_commit_interval or batch.records >= self._max_batch_records

    def _poll_timeout_ms(self) -> int:
        """Wait for records at most until the oldest open batch is due (and always a little: the
        commits in flight progress while the loop waits, never while it spins)."""
        ready = [batch.opened for p, batch in self._open.items() if p not in self._committing]
        if not ready:
            # An open batch waiting for its partition's previous commit: look again soon.
            return 10 if self._open else 200
        due_at = min(ready) + self.settings.analyzer_commit_interval
        return max(1, min(200, int((due_at - time.monotonic()) * 1000)))

    async def _read(self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[Any]) -> None:
        """Score records of one partition into its open batch and send the scored mentions.

        The previous batch of the partition may still be committing: the CPU work goes on meanwhile,
        and the outputs wait in the open batch (up to the batch limit) until that commit is through.
        """
        partition = tp.partition
        if partition not in self._seen:
            # Fetched while the partition was still being set up (or just lost): read it again later.
            if tp in consumer.assignment():
                consumer.seek(tp, records[0].offset)
            return
        raw = [RawRecord(r.partition, r.offset, r.key, r.value) for r in records]
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = _OpenBatch(raw[0].offset, time.monotonic(), next_offset=raw[0].offset)
        seen, pending = self._seen[partition], batch.ids
        inflight = self._committing[partition][1].ids if partition in self._committing else set()
        result = self.stage1.process(raw, lambda i: i in seen or i in pending or i in inflight, combine=False)
        pending.update(mention_id for _, mention_id, _ in result.new_ids)
        batch.unsent.append(result)
        batch.result.absorb(result, scored=False)  # the scored mentions go out from `unsent`
        batch.records += len(raw)
        batch.next_offset = self._positions[partition] = raw[-1].offset + 1
        committing = self._committing.get(partition)
        if committing is not None:
            if not committing[0].done() and batch.records < self._max_batch_records:
                return
            if not await self._after_commit(consumer, partition):
                return
        await self._send_unsent(consumer, tp, batch)

    async def _after_commit(self, consumer: AIOKafkaConsumer, partition: int) -> bool:
        """Wait for the partition's commit in flight; on failure drop the batch read since (it comes again)."""
        committing = self._committing.get(partition)
        if await self._settled(partition):
            if partition in self._seen:
                return True
            self._open.pop(partition, None)  # lost meanwhile: its next owner reads it again
            return False
        assert committing is not None
        failed = committing[1]
        self._open.pop(partition, None)
        tp = TopicPartition(self.topics.mentions_raw, partition)
        if tp in consumer.assignment():  # again: records read after the failed commit's rewind are dropped too
            consumer.seek(tp, failed.first_offset)
        return False

    async def _send_unsent(self, consumer: AIOKafkaConsumer, tp: TopicPartition, batch: _OpenBatch) -> bool:
        """Begin the batch's transaction (the first time) and send the outputs it holds."""
        try:
            if not batch.started:
                if self.transactional:
                    await self._producers[tp.partition].begin_transaction()
                batch.started = True
            outbox = self._outbox(tp.partition)
            for result in batch.unsent:
                self._add_outputs(outbox, result)
                result.scored = []  # sent: not kept until the commit
            batch.unsent.clear()
            async with asyncio.timeout(self._transaction_bound):  # send_batch waits for buffer space
                batch.acks.extend(await outbox.send())
        except ProducerFenced:
            await self._fenced(tp)
            return False
        except (KafkaError, TimeoutError, AssertionError) as exc:
            await self._failed(consumer, tp, batch, exc)
            return False
        return True

    def _outbox(self, partition: int) -> _Outbox:
        if self.transactional:
            return _Outbox(self._producers[partition], self._partition_of)
        assert self._plain_producer is not None
        return _Outbox(self._plain_producer, self._partition_of)

    def _partition_of(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions[topic]
        if key is None:
            return int(self._partitioner(None, partitions, partitions))
        known = self._key_partitions.get((topic, key))
        if known is None:
            if len(self._key_partitions) > 100_000:  # keys are brands (and, for dead letters, ids)
                self._key_partitions.clear()
            known = self._key_partitions[(topic, key)] = int(self._partitioner(key, partitions, partitions))
        return known

    async def _commit(self, consumer: AIOKafkaConsumer, partition: int, batch: _OpenBatch) -> bool:
        """Commit one partition's batch: its partials, new ids and next offset. False on failure."""
        tp = TopicPartition(self.topics.mentions_raw, partition)
        if batch.records == 0:  # opened, then nothing scored into it (an error on the way): nothing to commit
            return True
        if not await self._send_unsent(consumer, tp, batch):
            return False
        result = batch.result
        self.stage1.combine_partials(result)
        try:
            outbox = self._outbox(partition)
            self._add_closing_outputs(outbox, result, batch.ids, partition)
            closing = await outbox.send()
            if self.transactional:
                # The batches are queued in the transaction; commit_transaction waits for them all. aiokafka
                # waits for that without a bound (the Java client got one in KAFKA-7763): a producer whose
                # sender died, or a coordinator that moved while it was down, would hold the partition (and,
                # through the lock, the rebalance) for good. Past the transaction timeout the broker aborts it.
                producer = self._producers[partition]
                async with asyncio.timeout(self._transaction_bound):
                    await producer.send_offsets_to_transaction({tp: batch.next_offset}, self.group_id)
                    await producer.commit_transaction()
            else:
                await _all_acknowledged(batch.acks + closing)  # every output stored before the offsets move
                # Counted now, whatever happens to the offset commit: if it fails, these come again as duplicates.
                self._remember(partition, batch.ids)
                await consumer.commit({tp: batch.next_offset})
        except ProducerFenced:
            await self._fenced(tp)
            return False
        except (KafkaError, TimeoutError, AssertionError) as exc:
            await self._failed(consumer, tp, batch, exc)
            return False
        self._remember(partition, batch.ids)
        self._record_metrics(result, batch.records)
        return True

    def _remember(self, partition: int, ids: set[str]) -> None:
        seen = self._seen.get(partition)
        if seen is not None:
            seen.update(ids)

    @property
    def _transaction_bound(self) -> float:
        """How long a transactional step may take: by then the broker has aborted the transaction anyway."""
        return self.settings.analyzer_transaction_timeout

    def _unusable(self, partition: int) -> bool:
        """The partition's producer can't run another transaction: aiokafka's sender routine died (it does on
        an unexpected error, e.g. a coordinator lookup on a connection reset by a killed broker) and left the
        transaction manager in FATAL_ERROR, where every begin_transaction fails an assertion."""
        producer = self._producers.get(partition)
        if producer is None:
            return False
        txn = producer._txn_manager
        sender_task = getattr(producer._sender, "_sender_task", None)
        return (txn is not None and txn.is_fatal_error()) or (sender_task is not None and sender_task.done())

    async def _failed(self, consumer: AIOKafkaConsumer, tp: TopicPartition, batch: _OpenBatch, exc: Exception) -> None:
        """A batch failed. If the producer can go on (an error the transaction can be aborted after), abort and read
        the batch again. If not — a step that outlived the transaction timeout (its outcome unknown: the commit may
        have landed), a dead sender, a broken state machine — only a new producer for the transactional id can
        say how the transaction ended (starting it completes or aborts it on the coordinator): go the way of a
        fenced producer, which rebuilds the partition from what Kafka committed (offset and ids)."""
        if self.transactional and (not isinstance(exc, KafkaError) or self._unusable(tp.partition)):
            logger.warning(
                "stage 1: the producer of partition %d is unusable after %r; starting a new one", tp.partition, exc
            )
            for ack in batch.acks:
                ack.add_done_callback(_ignore_outcome)
            if self._open.get(tp.partition) is batch:
                del self._open[tp.partition]
            await self._fenced(tp)
            return
        await self._abandon(consumer, tp, batch, exc)

    async def _fenced(self, tp: TopicPartition) -> None:
        """The partition's producer was fenced: another worker took the partition over, or the broker aborted a
        transaction that outlived its timeout (a broker stalled longer than that) and moved the producer's epoch
        on. Only the group can tell which: drop the partition and rejoin. The rebalance hands it back here (a
        new producer, the ids reloaded, reading from the committed offset) or to its owner; before, a partition
        fenced by a timeout stayed idle until some other rebalance."""
        logger.warning("stage 1: fenced on partition %d; rejoining the group to learn who owns it", tp.partition)
        await self._drop([tp])
        if self._consumer is not None:
            # aiokafka 0.14 has no public call for this; the coordinator rejoins at its next turn.
            self._consumer._coordinator.request_rejoin()

    async def _abandon(self, consumer: AIOKafkaConsumer, tp: TopicPartition, batch: _OpenBatch, exc: Exception) -> None:
        """Nothing of the batch is visible (aborted) or it will be sent again (at-least-once):
        drop it and, after a pause, read again from its first offset."""
        first_offset = batch.first_offset
        logger.warning("stage 1: batch %s[%d]@%d failed (%r); retrying", tp.topic, tp.partition, first_offset, exc)
        if self._open.get(tp.partition) is batch:
            del self._open[tp.partition]
        for ack in batch.acks:  # their outcome no longer matters: don't let it be reported unread
            ack.add_done_callback(_ignore_outcome)
        producer = self._producers.get(tp.partition)
        txn = producer._txn_manager if producer is not None else None
        if txn is not None and txn.is_in_transaction():
            try:
                async with asyncio.timeout(self._transaction_bound):  # unbounded in aiokafka too
                    await producer.abort_transaction()  # type: ignore[union-attr]
            except (KafkaError, TimeoutError, AssertionError) as abort_exc:
                logger.warning("stage 1: abort on partition %d failed (%r)", tp.partition, abort_exc)
                await self._fenced(tp)  # a new producer aborts it for us
                return
        if tp in consumer.assignment():
            consumer.seek(tp, first_offset)
        await asyncio.sleep(1.0)

    def _add_outputs(self, outbox: _Outbox, result: Stage1Result) -> None:
        """The scored mentions and dead letters of one scored chunk."""
        topics = self.topics
        for brand, value in result.scored:
            outbox.add(topics.mentions_scored, value, brand.encode())
        for letter in result.dead:
            record = letter.record
            logger.warning(
                "dead-lettering %s[%d]@%d: %s", topics.mentions_raw, record.partition, record.offset, letter.reason
            )
            self.metrics.dlq.labels(topics.mentions_raw, reason_class(letter.reason)).inc()
            value, headers = dead_letter(
                record.value or b"", dlq_headers(letter.reason, topics.mentions_raw, record.partition, record.offset)
            )
            outbox.add(topics.mentions_dlq, value, record.key, headers=headers)

    def _add_closing_outputs(self, outbox: _Outbox, result: Stage1Result, ids: set[str], partition: int) -> None:
        """What closes a batch: its kpi-partials and the ids it counted."""
        for partial in result.partials:
            outbox.add(self.topics.kpi_partials, orjson.dumps(partial), partial["brand"].encode())
        if ids:
            outbox.add(self.seen_topic, orjson.dumps(sorted(ids)), None, partition=partition)

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
