"""Topic names (configurable by prefix) and creation of the topics a service needs."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    def _name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def mentions_raw(self) -> str:
        return self._name("mentions.raw")

    @property
    def mentions_scored(self) -> str:
        return self._name("mentions.scored")

    @property
    def kpi_partials(self) -> str:
        return self._name("kpi.partials")

    @property
    def kpi_snapshots(self) -> str:
        return self._name("kpi.snapshots")

    @property
    def alerts(self) -> str:
        return self._name("alerts")

    @property
    def metrics_accounts(self) -> str:
        return self._name("metrics.accounts")

    @property
    def mentions_dlq(self) -> str:
        return self._name("mentions.dlq")

    @property
    def ingest_checkpoints(self) -> str:
        return self._name("ingest.checkpoints")

    @property
    def compacted(self) -> frozenset[str]:
        return frozenset({self.kpi_snapshots, self.ingest_checkpoints, self.metrics_accounts})

    def all(self) -> list[str]:
        return [
            self.mentions_raw,
            self.mentions_scored,
            self.kpi_partials,
            self.kpi_snapshots,
            self.alerts,
            self.metrics_accounts,
            self.mentions_dlq,
            self.ingest_checkpoints,
        ]


async def ensure_topics(
    bootstrap: str, topics: Topics, partitions: int, replication: int = 1, timeout: float = 60.0
) -> None:
    """Create every Écoute topic that is missing; waits for the broker up to `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            logger.warning("Kafka at %s not reachable yet; retrying", bootstrap)
            await asyncio.sleep(1.0)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=replication,
                topic_configs={"cleanup.policy": "compact"} if name in topics.compacted else {},
            )
            for name in topics.all()
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
                logger.info("created topics %s", ", ".join(t.name for t in wanted))
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
