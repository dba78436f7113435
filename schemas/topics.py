"""Topic names (configurable by prefix) and creation of the topics a service needs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

logger = logging.getLogger(__name__)

COMPACT = {"cleanup.policy": "compact"}
EIGHT_DAYS_MS = 8 * 24 * 3600 * 1000
# The largest record the analyzer produces (its producers' max_request_size): a dead letter carries the original
# bytes of whatever reached mentions.raw or kpi.partials, which may exceed the broker's default 1 MiB where an
# operator raised those topics' max.message.bytes. The DLQ is created able to hold it (plus batch overhead).
MAX_RECORD_BYTES = 8 * 1024 * 1024

# Configs a topic is created with, by unprefixed name (a topic not named here gets the broker's defaults).
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "kpi.snapshots": COMPACT,
    "ingest.checkpoints": COMPACT,
    # Compacted, yet every reading of the last 8 days stays: the love KPI compares with 1 and 7 days ago,
    # and an API replica rebuilds that history from the topic when it starts.
    "metrics.accounts": {**COMPACT, "min.compaction.lag.ms": str(EIGHT_DAYS_MS)},
    "alerts.actions": COMPACT,
    "webhooks.deliveries": COMPACT,
    "mentions.dlq": {"max.message.bytes": str(MAX_RECORD_BYTES + 64 * 1024)},
    # Readings of the brand's own posts (key `brand|platform|item id`): the latest of each post stays, and
    # 8 days of readings too, so a replica that starts rebuilds each post's change over 24 h.
    "content.items": {**COMPACT, "min.compaction.lag.ms": str(EIGHT_DAYS_MS)},
}


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
    def alerts_actions(self) -> str:
        """Acks of alerts and handled marks of mentions (keys `alert:<id>`, `mention:<brand>:<id>`)."""
        return self._name("alerts.actions")

    @property
    def webhooks_deliveries(self) -> str:
        """The state of every webhook delivery (key `<alert id>|<webhook id>`)."""
        return self._name("webhooks.deliveries")

    @property
    def content_items(self) -> str:
        """Readings of the brand's own posts (content-item/1, key `brand|platform|item id`)."""
        return self._name("content.items")

    def configs(self, name: str) -> dict[str, str]:
        """The configs the (prefixed) topic `name` is created with."""
        if not name.startswith(self.prefix):
            return {}
        return dict(TOPIC_CONFIGS.get(name[len(self.prefix) :], {}))

    @property
    def compacted(self) -> frozenset[str]:
        return frozenset(name for name in self.all() if "compact" in self.configs(name).get("cleanup.policy", ""))

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
            self.alerts_actions,
            self.webhooks_deliveries,
            self.content_items,
        ]


def transient_admin_error(exc: BaseException) -> bool:
    """Kafka unreachable, or one broker of a cluster down or restarting (the admin client sends to a node it picks,
    which may be the one that is gone): worth trying again, through whichever node answers."""
    return isinstance(exc, KafkaConnectionError) or (isinstance(exc, KafkaError) and exc.retriable)


async def ensure_topics(
    bootstrap: str,
    topics: Topics,
    partitions: int,
    replication: int = 1,
    timeout: float = 60.0,
    names: Iterable[str] | None = None,
) -> dict[str, int]:
    """Create every Écoute topic that is missing (or only `names`, full topic names) with its configs;
    waits for the broker up to `timeout` seconds, then for every partition to have a leader.

    Returns the partition count of every topic, so callers can check co-partitioning.
    """
    wanted_names = topics.all() if names is None else list(names)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await _ensure_once(bootstrap, topics, wanted_names, partitions, replication, deadline)
        except KafkaError as exc:
            if not transient_admin_error(exc) or loop.time() > deadline:
                raise
            logger.warning("Kafka at %s not ready for topic creation yet (%r); retrying", bootstrap, exc)
            await asyncio.sleep(1.0)


async def _ensure_once(
    bootstrap: str, topics: Topics, wanted_names: list[str], partitions: int, replication: int, deadline: float
) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=replication,
                topic_configs=topics.configs(name),
            )
            for name in wanted_names
            if name not in existing
        ]
        if wanted:
            response = await admin.create_topics(wanted)
            for name, code, message in response.topic_errors:
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise RuntimeError(f"could not create topic {name}: error {code} {message}")
            logger.info("created topics %s", ", ".join(t.name for t in wanted))
        return await _wait_for_leaders(admin, wanted_names, deadline)
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
