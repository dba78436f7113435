"""The history sink: mentions.scored, kpi.snapshots, alerts, alerts.actions and metrics.accounts → PostgreSQL,
exactly once.

Exactly once without Kafka's help: the consumer has no group and commits nothing to Kafka. Each batch's rows
and the next offset of every partition it read are written in one PostgreSQL transaction; at start, and after
any failure, the consumer seeks to the offsets stored in the database. A batch is thus stored whole or not at
all, and never twice. Records are read with read_committed, so an aborted stage-1 transaction is never stored.

One instance writes at a time: it holds a PostgreSQL advisory lock on its connection (a second instance stands
by, and takes over when the first one's connection goes). When PostgreSQL goes away, the sink drops the batch
in hand, waits for the database, and resumes from the stored offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from schemas import Topics, describe_error, ensure_topics, utc_now
from schemas.history import drop_expired_partitions, migrate, retention_cutoff
from services.store.metrics import StoreMetrics
from services.store.rows import HISTORY_TOPICS, BadRecord, Batch
from services.store.settings import StoreSettings
from services.store.writer import Partitions, stored_offsets, write_batch

logger = logging.getLogger(__name__)

# pg_advisory_lock key of the writing instance ("store" in ASCII).
WRITER_LOCK = 0x73746F7265
LAG_EVERY_SECONDS = 5.0
# Records aiokafka hands over at once (it builds them all before returning).
MAX_RECORDS = 1000


class DatabaseGone(RuntimeError):
    """PostgreSQL went away mid-flow; the sink waits for it and resumes from the stored offsets."""


@dataclass(frozen=True)
class Record:
    """What the sink keeps of a Kafka record until its batch is stored."""

    topic: str  # unprefixed
    partition: TopicPartition
    offset: int
    key: bytes | None
    value: bytes | None


class HistorySink:
    def __init__(self, settings: StoreSettings, metrics: StoreMetrics, clock: Callable[[], datetime] = utc_now) -> None:
        if not settings.database_url:
            raise ValueError("the history store needs ECOUTE_DATABASE_URL")
        self.settings = settings
        self.url: str = settings.database_url
        self.metrics = metrics
        self.clock = clock
        topics = Topics(settings.topic_prefix)
        self.names = {f"{settings.topic_prefix}{name}": name for name in HISTORY_TOPICS}
        self._topics = topics
        self.partitions = Partitions()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._last_retention = 0.0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask the sink to store what it holds and stop."""
        self._stopping.set()

    # -- database --------------------------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[Any] | None:
        """A connection holding the writer's lock; waits (with backoff) for the database and for the lock.
        None once asked to stop."""
        delay = 0.5
        standing_by = False
        while not self._stopping.is_set():
            try:
                await migrate(self.url)
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK,))
                row = await cur.fetchone()
                if row is not None and row[0]:
                    self.metrics.database_up.set(1)
                    self.metrics.active.set(1)
                    if standing_by:
                        logger.info("took over as the writing store instance")
                    self.partitions.forget()
                    return conn
                await conn.close()
                self.metrics.database_up.set(1)
                if not standing_by:
                    logger.info("another store instance is writing to this database; standing by")
                    standing_by = True
                delay = 2.0
            except psycopg.OperationalError as exc:
                self.metrics.database_up.set(0)
                logger.warning("PostgreSQL not reachable (%s); retrying in %.1fs", first_line(exc), delay)
                delay = min(delay * 2, 5.0)
            await self._wait(delay)
        return None

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _disconnect(self) -> None:
        self.metrics.active.set(0)
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None

    # -- main loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Store records until `stop()`; survives Kafka and PostgreSQL going away."""
        names = list(self.names)
        await ensure_topics(
            self.settings.bootstrap,
            self._topics,
            self.settings.partitions,
            self.settings.replication_factor,
            timeout=120,
            names=names,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            client_id="ecoute-store",
            max_partition_fetch_bytes=1024 * 1024,
        )
        await consumer.start()
        try:
            partitions = await self._discover(names)
            consumer.assign(partitions)
            logger.info("storing %d partitions of %s", len(partitions), ", ".join(sorted(self.names.values())))
            while not self._stopping.is_set():
                try:
                    self._conn = await self._connect()
                    if self._conn is None:
                        break
                    await self._seek_to_stored(consumer, partitions)
                    await self._store(consumer)
                except DatabaseGone as exc:
                    self.metrics.database_up.set(0)
                    logger.warning("PostgreSQL went away (%s): waiting for it, then resuming from its offsets", exc)
                finally:
                    await self._disconnect()
        finally:
            await consumer.stop()
            logger.info("history sink stopped")

    async def _discover(self, names: list[str]) -> list[TopicPartition]:
        """Every partition of the history topics (they exist: `run` ensured them)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap, client_id="ecoute-store-admin")
        await admin.start()
        try:
            described = await admin.describe_topics(names)
        finally:
            await admin.close()
        partitions = [
            TopicPartition(entry["topic"], p["partition"])
            for entry in described
            if entry["error_code"] == 0
            for p in entry["partitions"]
        ]
        missing = set(names) - {tp.topic for tp in partitions}
        if missing:
            raise KafkaConnectionError(f"topics without partitions: {sorted(missing)}")
        return sorted(partitions)

    async def _seek_to_stored(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        assert self._conn is not None
        try:
            offsets = await stored_offsets(self._conn, list(self.names))
        except psycopg.OperationalError as exc:
            raise DatabaseGone(first_line(exc)) from exc
        ends = await consumer.end_offsets(partitions)
        fresh = []
        for tp in partitions:
            stored = offsets.get((tp.topic, tp.partition))
            if stored is not None and stored > ends.get(tp, 0):
                # The partition is shorter than where the store stopped: a new broker (the embedded one keeps
                # nothing across restarts) or a recreated topic. Its records are all new to the store.
                logger.warning(
                    "%s partition %d ends at %d, before the stored position %d (a new broker or a recreated "
                    "topic?): storing it from the beginning",
                    tp.topic,
                    tp.partition,
                    ends.get(tp, 0),
                    stored,
                )
                stored = None
            if stored is None:
                fresh.append(tp)
            else:
                consumer.seek(tp, stored)
        logger.info(
            "resuming from the stored offsets (%d partitions; %d never stored, read from the beginning)",
            len(partitions) - len(fresh),
            len(fresh),
        )

    async def _store(self, consumer: AIOKafkaConsumer) -> None:
        last_lag = 0.0
        while not self._stopping.is_set():
            records = await self._collect(consumer)
            if records:
                await self._write(records)
            if time.monotonic() - last_lag > LAG_EVERY_SECONDS:
                last_lag = time.monotonic()
                await self._report_lag(consumer)
            if time.monotonic() - self._last_retention > self.settings.store_retention_every:
                await self._apply_retention()

    async def _collect(self, consumer: AIOKafkaConsumer) -> list[Record]:
        """Records up to the batch size, or what arrived within the commit interval."""
        records: list[Record] = []
        deadline = time.monotonic() + self.settings.store_commit_interval
        while len(records) < self.settings.store_batch_size and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            fetched = await consumer.getmany(
                timeout_ms=int(remaining * 1000) + 1,
                max_records=min(MAX_RECORDS, self.settings.store_batch_size - len(records)),
            )
            for tp, batch in fetched.items():
                name = self.names[tp.topic]
                records.extend(Record(name, tp, r.offset, r.key, r.value) for r in batch)
        return records

    async def _write(self, records: list[Record]) -> None:
        batch = self._batch(records, skip_bad=True)
        try:
            await self._commit(batch)
        except psycopg.OperationalError as exc:
            raise DatabaseGone(first_line(exc)) from exc
        except psycopg.Error as exc:
            # A record PostgreSQL refuses (not the connection): store the others one by one, skip that one.
            logger.warning("a batch of %d records failed (%s); storing them one at a time", len(records), exc)
            for record in records:
                single = self._batch([record], skip_bad=True)
                try:
                    await self._commit(single)
                except psycopg.OperationalError as exc2:
                    raise DatabaseGone(first_line(exc2)) from exc2
                except psycopg.Error as exc2:
                    self._skipped(record, str(exc2))
                    await self._commit(self._batch([record], skip_bad=True, offsets_only=True))
        for record in records:
            self.metrics.records.labels(record.topic).inc()

    def _batch(self, records: list[Record], skip_bad: bool, offsets_only: bool = False) -> Batch:
        batch = Batch()
        for record in records:
            if not offsets_only:
                try:
                    batch.add(record.topic, record.key, record.value)
                except (BadRecord, ValidationError, ValueError) as exc:
                    if not skip_bad:
                        raise
                    self._skipped(record, describe_error(exc))
            batch.offsets[(record.partition.topic, record.partition.partition)] = record.offset + 1
            batch.records += 1
        return batch

    def _skipped(self, record: Record, why: str) -> None:
        self.metrics.bad_records.labels(record.topic).inc()
        logger.warning(
            "not storing the record on %s partition %d offset %d: %s",
            record.partition.topic,
            record.partition.partition,
            record.offset,
            why,
        )

    async def _commit(self, batch: Batch) -> None:
        assert self._conn is not None
        started = time.perf_counter()
        cutoff = retention_cutoff(self.settings.history_months, self.clock())
        written = await write_batch(self._conn, batch, cutoff, self.partitions)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        for table, rows in written.items():
            if rows:
                self.metrics.rows.labels(table).inc(rows)

    async def _apply_retention(self) -> None:
        assert self._conn is not None
        self._last_retention = time.monotonic()
        try:
            async with self._conn.transaction():
                dropped = await drop_expired_partitions(self._conn, self.settings.history_months, self.clock())
        except psycopg.OperationalError as exc:
            raise DatabaseGone(first_line(exc)) from exc
        if dropped:
            self.partitions.forget()
            self.metrics.partitions_dropped.inc(len(dropped))

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        behind: dict[str, int] = {}
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = consumer.highwater(tp)
            if end is None or end < 0:
                continue
            name = self.names[tp.topic]
            behind[name] = behind.get(name, 0) + max(0, end - await consumer.position(tp))
        for name, count in behind.items():
            self.metrics.lag.labels(name).set(count)


def first_line(exc: BaseException) -> str:
    """An error's first line, for logs of a connection problem (psycopg's messages run over several)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
