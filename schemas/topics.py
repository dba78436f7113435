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
) -> dict[str, int]:
    """Create every Écoute topic that is missing; waits for the broker up to `timeout` seconds.

    Returns the partition count of every topic, so callers can check co-partitioning.
    """
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
            response = await admin.create_topics(wanted)
            for name, code, message in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise RuntimeError(f"could not create topic {name}: error {code} {message}")
            logger.info("created topics %s", ", ".join(t.name for t in wanted))
        return await _wait_for_leaders(admin, topics.all(), deadline)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], deadline: float) -> dict[str, int]:
    """New topics refuse writes until every partition has a leader: wait for that, not for luck."""
    loop = asyncio.get_running_loop()
    while True:
        described = await admin.describe_topics(names)
        if all(
            t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return {t["topic"]: len(t["partitions"]) for t in described}
        if loop.time() > deadline:
            raise RuntimeError(f"topics {names} have no leader yet; is the Kafka cluster healthy?")
        await asyncio.sleep(0.2)
