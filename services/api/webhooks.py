"""Webhooks: every new alert of a matching brand is POSTed, signed, to the URLs of `webhooks:` in the config.

Pure parts first (config, signature, bodies, backoff, delivery states), then the adapters: `WebhookSender` (httpx
on schemas.netguard's transport, which resolves, checks and connects to the checked address only) and
`WebhookDispatcher`, which reads the alerts topic in a consumer group (so one replica delivers), writes each
delivery's state to the compacted `<prefix>webhooks.deliveries` topic before committing the alert, and
retries with exponential backoff and jitter. After a restart (or a rebalance) the state is read back from that
topic: pending deliveries resume, delivered ones are never sent again.

Signature, Slack escaping and the signed POST are schemas.webhooks' (the store's digests send the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from pydantic import ValidationError

from schemas import Alert, ConfigError, DeliveryStatus, WebhookConfig, WebhookDelivery, dump, load, utc_now

# The address policy is schemas.netguard's, the one the feeds' fetcher uses (`X as X`: explicit re-exports).
from schemas.netguard import IPNetwork, Resolver, system_resolver
from schemas.netguard import address_refusal as address_refusal
from schemas.netguard import ip_literal as ip_literal
from schemas.netguard import parse_networks as parse_networks
from schemas.producers import start_producer
from schemas.settings import Idempotence
from schemas.webhooks import SIGNATURE_HEADER as SIGNATURE_HEADER
from schemas.webhooks import Outcome as Outcome
from schemas.webhooks import SignedPoster, mrkdwn
from schemas.webhooks import sign as sign
from schemas.webhooks import verify_signature as verify_signature

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- configuration


def check_webhooks(hooks: Sequence[WebhookConfig], allow: Iterable[IPNetwork] = ()) -> list[WebhookConfig]:
    """The API's own checks of `webhooks:` (its shape is checked by schemas.load_config): a URL whose host is
    an IP literal the address policy refuses is a ConfigError naming the entry; an unsigned json hook, a warning."""
    allowed = tuple(allow)
    for index, hook in enumerate(hooks):
        literal = ip_literal(httpx.URL(hook.url).host)
        if literal is not None:
            why = address_refusal(literal, allowed)
            if why is not None:
                raise ConfigError(f"webhooks[{index}]: {why}")
        if hook.format == "json" and not hook.secret:
            logger.warning("webhooks[%d] (%s) has no secret: its requests are not signed", index, hook.target)
    return list(hooks)


# ---------------------------------------------------------------------------------------------- signature, bodies


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message (text fallback + Block Kit blocks) for an alert."""
    icon = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}[alert.severity]
    title = f"{alert.severity.upper()} · {alert.brand} · {alert.kind.replace('_', ' ')}"
    fields = [
        f"*Observed*\n{alert.observed:g}",
        f"*Baseline*\n{alert.baseline:g}",
        f"*Threshold*\n{alert.threshold:g}",
        f"*Window*\n{alert.window.start:%H:%M}–{alert.window.end:%H:%M} UTC",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {mrkdwn(alert.message)}"[:3000]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]},
    ]
    evidence = alert.evidence
    context = [
        f"*{name}:* {mrkdwn(', '.join(values[:10]))}"
        for name, values in (("Terms", evidence.terms), ("Topics", evidence.topics), ("Authors", evidence.authors))
        if values
    ]
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": t[:2000]} for t in context]})
    samples = [url for url in evidence.sample_mentions if url.startswith(("http://", "https://"))][:3]
    if samples:
        links = "\n".join(f"• <{mrkdwn(url)}|{mrkdwn(url[:80])}>" for url in samples)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Sample mentions*\n{links}"[:3000]}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Écoute alert `{alert.id}`"}]})
    return {"text": f"{icon} [{alert.severity}] {alert.brand}: {alert.message}", "blocks": blocks}


def render_body(alert: Alert, fmt: str) -> bytes:
    """The request body: alert/1 JSON (format json, like the SSE stream's data) or a Slack message."""
    if fmt == "slack":
        return orjson.dumps(slack_payload(alert))
    return alert.model_dump_json(by_alias=True).encode()  # byte for byte the SSE stream's data


# ---------------------------------------------------------------------------------------------- delivery states


def delivery_id(alert_id: str, webhook_id: str) -> str:
    return f"{alert_id}|{webhook_id}"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 30
    max_age: timedelta = timedelta(hours=24)
    backoff: float = 30.0
    backoff_max: float = 3600.0


def backoff_delay(attempts: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling, capped, jittered to [½, 1]×."""
    delay = min(policy.backoff_max, policy.backoff * 2 ** max(0, attempts - 1))
    return delay * (0.5 + 0.5 * rng.random())


def new_delivery(alert: Alert, hook: WebhookConfig, partition: int, now: datetime) -> WebhookDelivery:
    return WebhookDelivery(
        id=delivery_id(alert.id, hook.id),
        alert_id=alert.id,
        brand=alert.brand,
        kind=alert.kind,
        webhook=hook.id,
        target=hook.target,
        format=hook.format,
        status="pending",
        next_attempt_at=now,
        alert_created_at=alert.created_at,
        updated_at=now,
        partition=partition,
        alert=alert,
    )


def after_attempt(
    delivery: WebhookDelivery, outcome: Outcome, now: datetime, policy: RetryPolicy, rng: random.Random
) -> WebhookDelivery:
    """The delivery's next state: delivered, pending with the next attempt scheduled, or failed for good."""
    attempts = delivery.attempts + 1
    common: dict[str, Any] = {
        "attempts": attempts,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "updated_at": now,
    }
    if outcome.delivered:
        return delivery.model_copy(
            update={**common, "status": "delivered", "delivered_at": now, "next_attempt_at": None, "alert": None}
        )
    expires = delivery.alert_created_at + policy.max_age
    delay = backoff_delay(attempts, policy, rng)
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, policy.backoff_max))
    due = now + timedelta(seconds=delay)
    if outcome.permanent or attempts >= policy.max_attempts or due > expires:
        return delivery.model_copy(update={**common, "status": "failed", "next_attempt_at": None, "alert": None})
    return delivery.model_copy(update={**common, "status": "pending", "next_attempt_at": due})


def expired(delivery: WebhookDelivery, now: datetime, error: str) -> WebhookDelivery:
    return delivery.model_copy(
        update={"status": "failed", "next_attempt_at": None, "alert": None, "last_error": error, "updated_at": now}
    )


class DeliveryLog:
    """Delivery states by id (the newest record of each key wins, as on the compacted topic)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self._by_id: dict[str, WebhookDelivery] = {}

    def apply(self, delivery: WebhookDelivery) -> None:
        self._by_id.pop(delivery.id, None)  # re-insert: dict order = order of the latest update
        self._by_id[delivery.id] = delivery
        if self.capacity is not None:
            while len(self._by_id) > self.capacity:
                del self._by_id[next(iter(self._by_id))]

    def remove(self, key: str) -> None:
        self._by_id.pop(key, None)

    def get(self, key: str) -> WebhookDelivery | None:
        return self._by_id.get(key)

    def values(self) -> list[WebhookDelivery]:
        return list(self._by_id.values())

    def clear(self) -> None:
        self._by_id.clear()

    def __len__(self) -> int:
        return len(self._by_id)

    def query(
        self,
        visible: Iterable[str] | None = None,
        status: DeliveryStatus | None = None,
        brand: str | None = None,
        limit: int = 100,
    ) -> list[WebhookDelivery]:
        """The most recently updated first, optionally of some brands or one status."""
        allowed = None if visible is None else set(visible)
        found: list[WebhookDelivery] = []
        for delivery in reversed(self._by_id.values()):
            if allowed is not None and delivery.brand not in allowed:
                continue
            if (status is not None and delivery.status != status) or (brand is not None and delivery.brand != brand):
                continue
            found.append(delivery)
            if len(found) >= limit:
                break
        return found


# ---------------------------------------------------------------------------------------------- adapters


class WebhookSender:
    """POSTs one alert body to one webhook (schemas.webhooks.SignedPoster); every problem becomes an Outcome."""

    def __init__(self, allow: tuple[IPNetwork, ...], timeout: float, resolver: Resolver = system_resolver) -> None:
        self._poster = SignedPoster(allow, timeout, resolver)

    async def aclose(self) -> None:
        await self._poster.aclose()

    async def post(self, hook: WebhookConfig, body: bytes, delivery: WebhookDelivery) -> Outcome:
        return await self._poster.post(hook, body, event="alert", delivery=delivery.id, attempt=delivery.attempts + 1)


class DispatcherMetrics:
    """Callbacks the dispatcher reports to (metrics.py wires them to Prometheus)."""

    def __init__(
        self,
        on_outcome: Callable[[str], None] | None = None,
        on_pending: Callable[[int], None] | None = None,
    ) -> None:
        self.on_outcome = on_outcome or (lambda _: None)
        self.on_pending = on_pending or (lambda _: None)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, dispatcher: WebhookDispatcher) -> None:
        self.dispatcher = dispatcher

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.dispatcher.assigned -= {tp.partition for tp in revoked}
        self.dispatcher.ready = False

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # The ledger is reloaded (and fresh partitions pinned to their end) by the main loop, not in here.
        self.dispatcher._fresh = list(assigned)


class WebhookDispatcher:
    """Delivers new alerts to the configured webhooks from one replica of the consumer group at a time."""

    def __init__(
        self,
        *,
        bootstrap: str,
        alerts_topic: str,
        deliveries_topic: str,
        group: str,
        hooks: Sequence[WebhookConfig],
        sender: WebhookSender,
        policy: RetryPolicy,
        concurrency: int = 8,
        prepare: Callable[[], Awaitable[None]] | None = None,
        metrics: DispatcherMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        idempotence: Idempotence = "auto",
    ) -> None:
        self.bootstrap = bootstrap
        self.idempotence = idempotence
        self.alerts_topic = alerts_topic
        self.deliveries_topic = deliveries_topic
        self.group = group
        self.hooks = {hook.id: hook for hook in hooks}
        self.sender = sender
        self.policy = policy
        self.prepare = prepare
        self.metrics = metrics or DispatcherMetrics()
        self.clock = clock
        self.rng = rng or random.Random()
        self.ledger = DeliveryLog()
        self.assigned: set[int] = set()
        self.ready = False  # partitions assigned and the ledger read back
        self._fresh: list[TopicPartition] = []
        self._in_flight: set[str] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ecoute-api-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.sender.aclose()
        logger.info("webhook dispatcher stopped")

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._dispatch()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.ready = False
                logger.exception("webhook dispatcher failed; restarting in %.0fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _dispatch(self) -> None:
        if self.prepare is not None:
            await self.prepare()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id="ecoute-api-webhooks",
            enable_auto_commit=False,
            # A group's very first start begins at the end: alerts raised before are history, not news.
            auto_offset_reset="latest",
            isolation_level="read_committed",
        )
        producer = await start_producer(self.bootstrap, self.idempotence, client_id="ecoute-api-webhooks")
        self._producer = producer
        sender: asyncio.Task[None] | None = None
        try:
            await consumer.start()
            consumer.subscribe([self.alerts_topic], listener=_Rebalance(self))
            sender = asyncio.create_task(self._send_loop(), name="ecoute-api-webhook-sender")
            logger.info("webhook dispatcher joined group %s for %d webhook(s)", self.group, len(self.hooks))
            while True:
                batch: dict[TopicPartition, list[Any]] = await consumer.getmany(timeout_ms=500, max_records=500)
                if self._fresh:
                    await self._take_over(consumer, batch)
                for tp, records in batch.items():
                    for record in records:
                        await self._register(record)
                    if records:
                        # Committed only once every delivery record of these alerts is written (acks=all).
                        await consumer.commit({tp: records[-1].offset + 1})
                if sender.done():
                    sender.result()  # re-raise what stopped it
        finally:
            self.ready = False
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
            with contextlib.suppress(Exception):
                await consumer.stop()
            self._producer = None
            await producer.stop()

    async def _take_over(self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]) -> None:
        """New partitions: pin a never-committed one to where it starts, then read the delivery states back."""
        fresh, self._fresh = self._fresh, []
        for tp in fresh:
            if await consumer.committed(tp) is None:
                records = batch.get(tp)
                start = records[0].offset if records else await consumer.position(tp)
                await consumer.commit({tp: start})
        await self._load_ledger()
        self.assigned = {tp.partition for tp in fresh}
        self.ready = True
        logger.info(
            "webhook dispatcher owns partitions %s of %s; %d deliveries known, %d pending",
            sorted(self.assigned),
            self.alerts_topic,
            len(self.ledger),
            sum(1 for d in self.ledger.values() if d.status == "pending"),
        )
        self._report_pending()
        self._wake.set()

    async def _load_ledger(self) -> None:
        """Every delivery state on the deliveries topic, read to its current end."""
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, client_id="ecoute-api-ledger"
        )
        await reader.start()
        try:
            partitions = reader.partitions_for_topic(self.deliveries_topic)
            if not partitions:
                await reader._client.force_metadata_update()
                partitions = reader.partitions_for_topic(self.deliveries_topic) or set()
            tps = [TopicPartition(self.deliveries_topic, p) for p in sorted(partitions)]
            self.ledger.clear()
            if not tps:
                return
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            ends = await reader.end_offsets(tps)
            while any([await reader.position(tp) < ends[tp] for tp in tps]):
                batch = await reader.getmany(timeout_ms=500, max_records=10_000)
                for records in batch.values():
                    for record in records:
                        self._apply_record(record)
        finally:
            await reader.stop()

    def _apply_record(self, record: Any) -> None:
        key = (record.key or b"").decode("utf-8", errors="replace")
        if record.value is None:
            self.ledger.remove(key)
            return
        try:
            self.ledger.apply(load(WebhookDelivery, record.value))
        except ValidationError as exc:
            logger.warning(
                "skipping malformed delivery record on %s partition %d offset %d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc.errors()[0]["msg"] if exc.errors() else exc,
            )

    # -- alerts → deliveries ---------------------------------------------------------------------

    async def _register(self, record: Any) -> None:
        try:
            if record.value is None:
                raise ValueError("empty value")
            alert = load(Alert, record.value)
        except (ValueError, ValidationError) as exc:
            logger.warning(
                "webhooks: skipping malformed alert on %s partition %d offset %d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return
        now = self.clock()
        for hook in self.hooks.values():
            if not hook.matches(alert.brand) or self.ledger.get(delivery_id(alert.id, hook.id)) is not None:
                continue  # another brand, or already known (a replayed alert): never delivered twice
            delivery = new_delivery(alert, hook, record.partition, now)
            if now - alert.created_at > self.policy.max_age:
                delivery = expired(delivery, now, "the alert was already older than the retry period when read")
                self.metrics.on_outcome("failed")
            await self._write(delivery)
        self._report_pending()
        self._wake.set()

    async def _write(self, delivery: WebhookDelivery) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("the dispatcher is not running")
        self.ledger.apply(delivery)
        await producer.send_and_wait(self.deliveries_topic, dump(delivery), key=delivery.id.encode())

    # -- sending ---------------------------------------------------------------------------------

    def _due(self, now: datetime) -> tuple[list[WebhookDelivery], datetime | None]:
        due: list[WebhookDelivery] = []
        soonest: datetime | None = None
        for delivery in self.ledger.values():
            if (
                delivery.status != "pending"
                or delivery.partition not in self.assigned
                or delivery.id in self._in_flight
                or delivery.next_attempt_at is None
            ):
                continue
            if delivery.next_attempt_at <= now:
                due.append(delivery)
            elif soonest is None or delivery.next_attempt_at < soonest:
                soonest = delivery.next_attempt_at
        due.sort(key=lambda d: d.next_attempt_at or now)
        return due, soonest

    async def _send_loop(self) -> None:
        attempts: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wake.clear()
                now = self.clock()
                due, soonest = self._due(now) if self.ready else ([], None)
                for delivery in due:
                    self._in_flight.add(delivery.id)
                    task = asyncio.create_task(self._attempt(delivery))
                    attempts.add(task)
                    task.add_done_callback(attempts.discard)
                wait = 5.0 if soonest is None else min(5.0, max(0.01, (soonest - now).total_seconds()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            for task in attempts:
                task.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)
            self._in_flight.clear()

    async def _attempt(self, delivery: WebhookDelivery) -> None:
        try:
            async with self._slots:
                hook = self.hooks.get(delivery.webhook)
                now = self.clock()
                if hook is None or delivery.alert is None:
                    why = "the webhook is no longer configured" if hook is None else "no alert kept to send"
                    await self._save(expired(delivery, now, why), "failed")
                    return
                outcome = await self.sender.post(hook, render_body(delivery.alert, hook.format), delivery)
                after = after_attempt(delivery, outcome, self.clock(), self.policy, self.rng)
                label = after.status if after.status != "pending" else "retry"
                if after.status != "delivered":
                    logger.warning(
                        "webhook %s for alert %s: attempt %d failed (%s); %s",
                        hook.target,
                        delivery.alert_id,
                        after.attempts,
                        outcome.error,
                        f"next at {after.next_attempt_at:%H:%M:%S}" if after.next_attempt_at else "giving up",
                    )
                await self._save(after, label)
        finally:
            self._in_flight.discard(delivery.id)
            self._report_pending()
            self._wake.set()

    async def _save(self, delivery: WebhookDelivery, outcome: str) -> None:
        """Record a new state; the in-memory ledger is updated first, so a failed write never causes a resend here."""
        self.metrics.on_outcome(outcome)
        self.ledger.apply(delivery)
        delay = 0.5
        while True:
            try:
                await self._write(delivery)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.error("could not record delivery %s (%s); retrying in %.1fs", delivery.id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _report_pending(self) -> None:
        self.metrics.on_pending(sum(1 for d in self.ledger.values() if d.status == "pending"))
