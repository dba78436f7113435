"""The ingest service's link to Kafka: connects in the background, produces batches and waits for acks.

Everything that can go wrong with the broker comes out of `produce` as `KafkaUnavailable`, which the
HTTP layer turns into a 503 with Retry-After. Records are never dropped silently: each one is either
acknowledged (counted as produced) or counted as a produce error and reported to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    OutOfOrderSequenceNumber,
    UnknownProducerId,
)

from schemas import Topics, ensure_topics
from schemas.producers import is_idempotent, start_producer
from services.ingest.metrics import IngestMetrics
from services.ingest.settings import IngestSettings

logger = logging.getLogger(__name__)

Record = tuple[bytes, bytes]  # (key, value)

# Application-level re-sends of records whose error the producer itself did not retry but says is retriable.
MAX_RESENDS = 3

# Errors after which an idempotent producer's sequence numbers no longer match the broker's (seen when every
# broker of a cluster was killed at once and restarted): aiokafka never resets them, so every later batch fails
# the same way. A new producer (a new producer id) is the cure; the refused records were answered 503.
PRODUCER_STATE_LOST = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, InvalidProducerIdMapping)


class KafkaUnavailable(Exception):
    """Kafka did not take the records (unreachable, too slow, or ingest saturated); retry later."""

    def __init__(self, message: str, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason


class IngestProducer:
    """An acks=all AIOKafkaProducer, idempotent under `ECOUTE_KAFKA_IDEMPOTENCE`, that (re)connects in the background.

    `start` returns once connected or after `kafka_startup_wait` seconds, whichever comes first, so the
    service starts even with the broker down and reports itself unhealthy until it connects.
    """

    def __init__(self, settings: IngestSettings, metrics: IngestMetrics, *, create_topics: bool = True) -> None:
        self.settings = settings
        self.metrics = metrics
        self.topics = Topics(settings.topic_prefix)
        self.create_topics = create_topics
        self._producer: AIOKafkaProducer | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        # Bounds the requests producing at once; with one pending batch per partition in aiokafka's
        # accumulator, this bounds the memory ingest holds for the broker.
        self._slots = asyncio.Semaphore(settings.max_inflight_requests)
        self.last_error: str | None = None
        self.idempotent = False  # known once connected (schemas.producers decides)
        self._closing: set[asyncio.Task[None]] = set()  # discarded producers being stopped

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self, wait: float | None = None) -> None:
        if self._connect_task is None:
            self._connect_task = asyncio.create_task(self._connect_loop(), name="ingest-kafka-connect")
        wait = self.settings.kafka_startup_wait if wait is None else wait
        try:
            await asyncio.wait_for(self._connected.wait(), timeout=wait)
        except TimeoutError:
            logger.warning(
                "Kafka at %s not reachable after %.1fs (%s); serving anyway, answering 503 until it is",
                self.settings.bootstrap,
                wait,
                self.last_error,
            )

    async def wait_connected(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout=within)
        except TimeoutError:
            return False
        return True

    async def _connect_loop(self) -> None:
        attempt = 0
        while self._producer is None:
            attempt += 1
            try:
                # Bounded: a broker that accepts connections but never answers must not stall the loop.
                await asyncio.wait_for(self._connect_once(), timeout=self._attempt_timeout)
            except Exception as exc:  # any failure to connect is retried; the service keeps serving 503s
                self.last_error = f"{type(exc).__name__}: {exc or 'no answer in time'}"
                log = logger.warning if attempt == 1 or attempt % 10 == 0 else logger.debug
                log("connecting to Kafka at %s failed (attempt %d): %s", self.settings.bootstrap, attempt, exc)
                await asyncio.sleep(self.settings.kafka_reconnect_interval)

    @property
    def _attempt_timeout(self) -> float:
        return max(10.0, self.settings.kafka_reconnect_interval)

    async def _connect_once(self) -> None:
        settings = self.settings
        if self.create_topics:
            await ensure_topics(
                settings.bootstrap,
                self.topics,
                settings.partitions,
                settings.replication_factor,
                timeout=self._attempt_timeout / 2,
            )
        producer = await start_producer(
            settings.bootstrap,
            settings.kafka_idempotence,
            client_id="ecoute-ingest",
            linger_ms=settings.linger_ms,
            max_batch_size=settings.producer_batch_bytes,
            # A mention is at most ~100 kB of text; a record may not exceed a request body.
            max_request_size=max(settings.max_body_bytes + 64 * 1024, 1024 * 1024),
            request_timeout_ms=int(max(settings.send_timeout, 5.0) * 1000),
            retry_backoff_ms=200,
        )
        self.idempotent = is_idempotent(producer)
        self._count_retries(producer)
        self._producer = producer
        self.last_error = None
        self._connected.set()
        logger.info(
            "connected to Kafka at %s (acks=all, %s)",
            settings.bootstrap,
            "idempotent" if self.idempotent else "not idempotent",
        )

    def _replace(self, producer: AIOKafkaProducer, exc: BaseException | None) -> None:
        """Drop a producer that can't send any more and connect a new one in the background (503s meanwhile)."""
        if self._producer is not producer:
            return  # another request replaced it already
        self._producer = None
        self._connected.clear()
        self.last_error = f"producer reset after {exc!r}" if exc is not None else "producer's sender stopped"
        logger.warning("Kafka producer unusable (%s); starting a new one", self.last_error)
        closing = asyncio.create_task(self._close(producer), name="ingest-kafka-close")
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        self._connect_task = asyncio.create_task(self._connect_loop(), name="ingest-kafka-connect")

    async def _close(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), timeout=self.settings.send_timeout)
        except (KafkaError, TimeoutError, OSError, AssertionError) as exc:
            logger.warning("the discarded Kafka producer did not stop cleanly: %r", exc)

    def _count_retries(self, producer: AIOKafkaProducer) -> None:
        # aiokafka retries retriable errors itself (forever with idempotence) by re-enqueuing the batch;
        # it exposes no counter, so the re-enqueue of this producer's accumulator is counted.
        accumulator: Any = getattr(producer, "_message_accumulator", None)
        reenqueue = getattr(accumulator, "reenqueue", None)
        if reenqueue is None:
            return
        retries = self.metrics.produce_retries

        def counted_reenqueue(batch: Any) -> Any:
            retries.inc()
            return reenqueue(batch)

        accumulator.reenqueue = counted_reenqueue

    async def stop(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
            self._connect_task = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        producer, self._producer = self._producer, None
        self._connected.clear()
        if producer is None:
            return
        logger.info("flushing the Kafka producer")
        try:
            await asyncio.wait_for(producer.flush(), timeout=self.settings.send_timeout)
        except TimeoutError:
            logger.error(
                "flush not acknowledged within %.1fs; records still unacknowledged may be lost",
                self.settings.send_timeout,
            )
        except KafkaError as exc:
            logger.error("flush failed (%r); records still unacknowledged may be lost", exc)
        logger.info("stopping the Kafka producer")
        await producer.stop()
        logger.info("Kafka producer stopped")

    async def healthy(self, within: float = 3.0) -> bool:
        """Whether the broker answers a metadata request now."""
        producer = self._producer
        if producer is None:
            return False
        try:
            return bool(await asyncio.wait_for(producer.client.force_metadata_update(), timeout=within))
        except (KafkaError, TimeoutError, OSError):
            return False

    async def produce(self, topic: str, records: Sequence[Record], within: float | None = None) -> int:
        """Send every record and wait until the broker acknowledged all of them.

        Raises KafkaUnavailable when not connected, when no producing slot frees up, or when the records
        are not acknowledged within `within` seconds (default `send_timeout`). Unacknowledged records stay in the
        idempotent producer and may still land later; the client is told to retry.
        """
        producer = self._producer
        if producer is None:
            detail = f": {self.last_error}" if self.last_error else ""
            raise KafkaUnavailable(f"Kafka is not reachable{detail}", "kafka_down")
        if not records:
            return 0
        timeout = self.settings.send_timeout if within is None else within
        acked = [0]
        try:
            async with asyncio.timeout(timeout):
                async with self._slots:
                    await self._send_all(producer, topic, records, acked)
        except TimeoutError:
            missing = len(records) - acked[0]
            self.metrics.produce_errors.labels(topic).inc(missing)
            logger.warning(
                "Kafka did not acknowledge %d of %d records to %s within %.1fs",
                missing,
                len(records),
                topic,
                timeout,
            )
            raise KafkaUnavailable(
                f"Kafka did not acknowledge {missing} of {len(records)} records within {timeout:g}s", "timeout"
            ) from None
        return len(records)

    async def _send_all(
        self, producer: AIOKafkaProducer, topic: str, records: Sequence[Record], acked: list[int]
    ) -> None:
        pending = list(records)
        for resend in range(MAX_RESENDS + 1):
            futures: list[asyncio.Future[Any]] = []
            for key, value in pending:
                try:
                    futures.append(await producer.send(topic, value=value, key=key))
                except KafkaError as exc:
                    # Nothing past this record was queued; earlier ones may still be acknowledged.
                    futures.append(_failed(exc))
            # Shielded: a timeout abandons the wait, not aiokafka's own futures.
            results = await asyncio.gather(*(asyncio.shield(f) for f in futures), return_exceptions=True)
            retry: list[Record] = []
            failed: list[BaseException] = []
            for record, result in zip(pending, results, strict=True):
                if not isinstance(result, BaseException):
                    acked[0] += 1
                elif isinstance(result, KafkaError) and result.retriable and resend < MAX_RESENDS:
                    retry.append(record)
                else:
                    failed.append(result)
            self.metrics.produced.labels(topic).inc(len(pending) - len(retry) - len(failed))
            if failed:
                self.metrics.produce_errors.labels(topic).inc(len(failed) + len(retry))
                logger.error("%d records to %s failed: %s", len(failed), topic, failed[0])
                lost = next((exc for exc in failed if isinstance(exc, PRODUCER_STATE_LOST)), None)
                if lost is not None or _sender_dead(producer):
                    self._replace(producer, lost)
                raise KafkaUnavailable(f"Kafka refused {len(failed)} records: {failed[0]}", "produce_error")
            if not retry:
                return
            self.metrics.produce_retries.inc()
            logger.warning("re-sending %d records to %s after a retriable error", len(retry), topic)
            await asyncio.sleep(0.2 * (resend + 1))
            pending = retry


def _sender_dead(producer: AIOKafkaProducer) -> bool:
    """aiokafka's sender routine ended (an unexpected error kills it): the producer will never send again."""
    task = getattr(getattr(producer, "_sender", None), "_sender_task", None)
    return task is not None and task.done()


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future
