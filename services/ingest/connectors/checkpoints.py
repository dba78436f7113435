"""Source cursors (ETag, seen ids, newest timestamp…) kept in the compacted topic `ingest.checkpoints`.

Key = source id, value = the cursor as JSON. `load` reads every partition to its end at start-up and keeps the
newest value per key; `save` produces one record and returns once Kafka acknowledged it. A source saves its
cursor only after the mentions it covers were acknowledged, so a restarted worker resumes exactly there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

logger = logging.getLogger(__name__)

Cursor = dict[str, Any]


class Producer(Protocol):
    async def produce(self, topic: str, records: list[tuple[bytes, bytes]], within: float | None = None) -> int: ...


class CheckpointStore:
    """The newest cursor of every source, loaded from and saved to the checkpoint topic."""

    def __init__(self, bootstrap: str, topic: str, producer: Producer) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.producer = producer
        self._cursors: dict[str, Cursor] = {}
        self.loaded = False

    def get(self, source_id: str) -> Cursor | None:
        cursor = self._cursors.get(source_id)
        return dict(cursor) if cursor is not None else None

    async def load(self, timeout: float = 30.0) -> int:
        """Read the topic to its end (all partitions); returns how many sources have a cursor."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            client_id="ecoute-ingest-checkpoints",
            request_timeout_ms=int(max(timeout, 5.0) * 1000),
        )
        await consumer.start()
        try:
            async with asyncio.timeout(timeout):
                partitions = await _partitions(consumer, self.topic)
                tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                ends = await consumer.end_offsets(tps)
                cursors: dict[str, Cursor] = {}
                for tp in tps:
                    while await consumer.position(tp) < ends[tp]:
                        batch = await consumer.getmany(tp, timeout_ms=500)
                        for record in batch.get(tp, []):
                            self._apply(cursors, record.key, record.value, record.partition, record.offset)
        finally:
            await consumer.stop()
        self._cursors = cursors
        self.loaded = True
        logger.info("loaded %d source checkpoints from %s", len(cursors), self.topic)
        return len(cursors)

    def _apply(self, cursors: dict[str, Cursor], key: bytes | None, value: bytes | None, part: int, off: int) -> None:
        if key is None:
            logger.warning("checkpoint without key at %s[%d]@%d ignored", self.topic, part, off)
            return
        source_id = key.decode("utf-8", "replace")
        if value is None:  # tombstone: the source's cursor was reset
            cursors.pop(source_id, None)
            return
        try:
            cursor = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            logger.error("unreadable checkpoint for %s at %s[%d]@%d ignored: %s", source_id, self.topic, part, off, exc)
            return
        if not isinstance(cursor, dict):
            logger.error("checkpoint for %s at %s[%d]@%d is not an object; ignored", source_id, self.topic, part, off)
            return
        cursors[source_id] = cursor

    async def save(self, source_id: str, cursor: Cursor, within: float | None = None) -> None:
        """Produce the cursor and wait for the broker's acknowledgement (KafkaUnavailable when it does not come)."""
        await self.producer.produce(self.topic, [(source_id.encode(), orjson.dumps(cursor))], within)
        self._cursors[source_id] = dict(cursor)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    # A topic created moments ago may not be in the metadata yet.
    deadline = time.monotonic() + 10.0
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        if time.monotonic() > deadline:
            raise RuntimeError(f"checkpoint topic {topic} not found; it is created by ingest at start-up")
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.2)
