"""The scheduled digest: for each brand, the history report of the last complete week (Monday 00:00 to Monday
00:00 UTC) or day, its top mentions and its alerts, sent to the brand's webhooks (signed like alert deliveries,
through the same address guard) and by e-mail to the config's `digest.to`.

One sender across store instances: the scheduler holds a PostgreSQL advisory lock of its own (not the sink's) on
its connection; another instance stands by. The `digests` table says what was made and where it went: a row per
(brand, period start) written before anything is sent, with each channel's state (pending, delivered, failed)
updated after each attempt. A restart therefore never makes a period twice and resumes pending retries; a crash
between a delivery and its update sends that channel once more (at-least-once), with the same digest id in the
body and the same `X-Ecoute-Delivery` (webhooks) or Message-ID (e-mail), so receivers can drop the repeat.

A period is due on `digest_weekday` at `digest_hour` UTC after it ends (daily: at `digest_hour`). Only the most
recent due period is made: a store that was down when one fell due sends it when it comes back, not the ones
before. A period with no mention, no mention in the period before and no alert is recorded as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, computed_field

from schemas import EcouteConfig, WebhookConfig, utc_now
from schemas.history import migrate
from schemas.history.report import brand_report, bucket_floor
from schemas.netguard import Resolver, parse_networks, system_resolver
from schemas.webhooks import Outcome, SignedPoster
from services.store.digest_render import Digest, DigestEvery, build_digest, render_body, render_email
from services.store.metrics import StoreMetrics
from services.store.settings import StoreSettings
from services.store.sink import first_line

logger = logging.getLogger(__name__)

# pg_advisory_lock key of the instance sending digests ("digest" in ASCII); the sink's is another one.
DIGEST_LOCK = 0x646967657374
TOP_MENTIONS = 5
ALERTS_LISTED = 20
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
EMAIL = "email"

Conn = psycopg.AsyncConnection[Any]


# ---------------------------------------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime  # exclusive
    every: DigestEvery


def due_period(now: datetime, every: str, weekday: str = "monday", hour: int = 8) -> Period | None:
    """The most recent period whose digest is due at `now` (None when digests are off)."""
    if every == "off":
        return None
    if every == "day":
        today = bucket_floor(now, "day")
        end = today if now >= today + timedelta(hours=hour) else today - timedelta(days=1)
        return Period(end - timedelta(days=1), end, "day")
    if every != "week":
        raise ValueError(f"unknown digest period {every!r}; expected week, day or off")
    this_week = bucket_floor(now, "week")
    sent_at = this_week + timedelta(days=WEEKDAYS.index(weekday), hours=hour)
    end = this_week if now >= sent_at else this_week - timedelta(days=7)
    return Period(end - timedelta(days=7), end, "week")


def history_link(public_url: str | None) -> str | None:
    return f"{public_url.rstrip('/')}/#history" if public_url else None


# ---------------------------------------------------------------------------------------------- what is recorded


ChannelStatus = Literal["pending", "delivered", "failed"]


class ChannelState(BaseModel):
    """Where one digest goes (a webhook, or the e-mail to every recipient) and how far it got."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["webhook", "email"]
    target: str
    status: ChannelStatus = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


class DigestRecord(BaseModel):
    """`digests.doc`: the digest as made (every attempt sends these bytes again) and its channels' states."""

    digest: Digest | None = None
    skipped: str | None = None
    channels: dict[str, ChannelState] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pending(self) -> bool:
        return any(c.status == "pending" for c in self.channels.values())


def after_attempt(
    channel: ChannelState, outcome: Outcome, now: datetime, max_attempts: int, backoff: float
) -> ChannelState:
    """The channel's next state: delivered, pending until the next attempt (doubling delays), or failed."""
    attempts = channel.attempts + 1
    common: dict[str, Any] = {"attempts": attempts, "last_error": outcome.error}
    if outcome.delivered:
        return channel.model_copy(
            update={**common, "status": "delivered", "delivered_at": now, "next_attempt_at": None}
        )
    if outcome.permanent or attempts >= max_attempts:
        return channel.model_copy(update={**common, "status": "failed", "next_attempt_at": None})
    delay = backoff * 2 ** (attempts - 1)
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, backoff * 2**max_attempts))
    return channel.model_copy(update={**common, "next_attempt_at": now + timedelta(seconds=delay)})


def nothing_to_report(digest: Digest) -> bool:
    mentions = next((f for f in digest.figures if f.name == "mentions"), None)
    quiet = mentions is None or (not mentions.current and not mentions.previous)
    return quiet and digest.alerts_total == 0


def brands_with_digest(config: EcouteConfig) -> list[str]:
    return [brand for brand in config.brands if config.digest.matches(brand)]


def channels_for(brand: str, config: EcouteConfig, settings: StoreSettings, now: datetime) -> dict[str, ChannelState]:
    """The brand's webhooks (the same brand filter as alerts) and, with an SMTP server and recipients, the e-mail."""
    channels = {
        hook.id: ChannelState(kind="webhook", target=hook.target, next_attempt_at=now)
        for hook in config.webhooks
        if hook.matches(brand)
    }
    if settings.smtp_host and config.digest.to:
        channels[EMAIL] = ChannelState(kind="email", target=", ".join(config.digest.to), next_attempt_at=now)
    return channels


def delivery_id(digest: Digest, channel: str, manual: bool = False) -> str:
    """X-Ecoute-Delivery: the same at every attempt of a scheduled digest; a manual send is a delivery of its own."""
    base = f"{digest.id}|{channel}"
    return f"{base}|manual-{digest.generated_at:%Y%m%dT%H%M%SZ}" if manual else base


# ---------------------------------------------------------------------------------------------- making one


async def alert_counts(conn: Conn, brand: str, period: Period) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT severity, count(*) FROM alerts WHERE brand = %s AND created_at >= %s AND created_at < %s"
        " GROUP BY severity",
        (brand, period.start, period.end),
    )
    return {severity: int(n) for severity, n in await cur.fetchall()}


async def make_digest(
    conn: Conn, brand: str, competitors: list[str], period: Period, link: str | None, now: datetime
) -> Digest:
    """The brand's digest of the period from the history (the report the API's /report gives, plus extras)."""
    # Month buckets: the digest shows the period's totals, the fewest buckets cost the least.
    report = await brand_report(
        conn, brand, competitors, period.start, period.end, "month", top_mentions=TOP_MENTIONS, alerts=ALERTS_LISTED
    )
    severities = await alert_counts(conn, brand, period)
    return build_digest(report, period.every, alerts_by_severity=severities, link=link, generated_at=now)


# ---------------------------------------------------------------------------------------------- sending


def send_email(message: EmailMessage, settings: StoreSettings) -> Outcome:
    """One SMTP conversation (blocking: run it in a thread). 5xx answers are final; the rest is worth a retry."""
    if not settings.smtp_host:
        return Outcome(False, error="ECOUTE_SMTP_HOST is not set", permanent=True)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.digest_timeout) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                smtp.login(settings.smtp_user, password)
            refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        return Outcome(False, error=f"every recipient refused: {sorted(exc.recipients)}"[:500], permanent=True)
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return Outcome(
            False,
            status_code=exc.smtp_code,
            error=f"SMTP {exc.smtp_code}: {text}"[:500],
            permanent=exc.smtp_code >= 500,
        )
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])
    if refused:
        logger.warning("the SMTP server refused some digest recipients: %s", sorted(refused))
    return Outcome(True, status_code=250)


class DigestSender:
    """Sends a digest to one channel, once: a webhook (SignedPoster) or the e-mail (SMTP in a thread)."""

    def __init__(self, settings: StoreSettings, config: EcouteConfig, resolver: Resolver = system_resolver) -> None:
        self.settings = settings
        self.config = config
        self.hooks: dict[str, WebhookConfig] = {hook.id: hook for hook in config.webhooks}
        self.poster = SignedPoster(
            parse_networks(config.fetch.allow_networks), settings.digest_timeout, resolver, user_agent="ecoute-digest/1"
        )

    async def aclose(self) -> None:
        await self.poster.aclose()

    async def send(self, digest: Digest, channel_id: str, channel: ChannelState, manual: bool = False) -> Outcome:
        attempt = channel.attempts + 1
        if channel.kind == "email":
            message = render_email(digest, self.settings.smtp_from, list(self.config.digest.to))
            return await asyncio.to_thread(send_email, message, self.settings)
        hook = self.hooks.get(channel_id)
        if hook is None or not hook.matches(digest.brand):
            return Outcome(False, error="the webhook is no longer configured for this brand", permanent=True)
        body = render_body(digest, hook.format)
        return await self.poster.post(
            hook, body, event="digest", delivery=delivery_id(digest, channel_id, manual), attempt=attempt
        )


# ---------------------------------------------------------------------------------------------- the scheduler


class DigestScheduler:
    """Makes each brand's digest when its period is due and delivers it; runs beside the sink in `ecoute store`."""

    def __init__(
        self,
        settings: StoreSettings,
        config: EcouteConfig,
        metrics: StoreMetrics,
        *,
        clock: Callable[[], datetime] = utc_now,
        resolver: Resolver = system_resolver,
    ) -> None:
        if not settings.database_url:
            raise ValueError("digests need ECOUTE_DATABASE_URL")
        self.url: str = settings.database_url
        self.settings = settings
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.brands = brands_with_digest(config)
        self.link = history_link(settings.public_url)
        self.sender = DigestSender(settings, config, resolver)
        self.rounds = 0  # rounds completed (tests wait on it)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def aclose(self) -> None:
        await self.sender.aclose()

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _connect(self) -> Conn | None:
        """A connection holding the digest lock; waits for the database and for the lock. None once stopping."""
        delay = 1.0
        standing_by = False
        while not self._stopping.is_set():
            try:
                await migrate(self.url)
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (DIGEST_LOCK,))
                row = await cur.fetchone()
                if row is not None and row[0]:
                    if standing_by:
                        logger.info("took over sending digests")
                    return conn
                await conn.close()
                if not standing_by:
                    logger.info("another store instance sends the digests; standing by")
                    standing_by = True
                delay = self.settings.digest_check_every
            except psycopg.OperationalError as exc:
                logger.warning("digests: PostgreSQL not reachable (%s); retrying in %.0fs", first_line(exc), delay)
                delay = min(delay * 2, 30.0)
            await self._wait(delay)
        return None

    async def run(self) -> None:
        """Send what falls due until `stop()`; survives PostgreSQL, webhooks and the SMTP server going away."""
        every = self.settings.digest_every
        if every == "off" or not self.brands:
            logger.info("digests off (%s)", "ECOUTE_DIGEST_EVERY=off" if every == "off" else "no brand has one")
            await self.aclose()
            return
        logger.info(
            "digests every %s (%s at %02d:00 UTC) for %s",
            every,
            self.settings.digest_weekday if every == "week" else "daily",
            self.settings.digest_hour,
            ", ".join(self.brands),
        )
        try:
            while not self._stopping.is_set():
                conn = await self._connect()
                if conn is None:
                    break
                try:
                    while not self._stopping.is_set():
                        await self.tick(conn)
                        await self._wait(self.settings.digest_check_every)
                except psycopg.OperationalError as exc:
                    logger.warning("digests: PostgreSQL went away (%s); waiting for it", first_line(exc))
                except Exception:
                    # A digest that cannot be made (a bug, a refused query) must not stop the store.
                    logger.exception("digests: a round failed; trying again in %.0fs", self.settings.digest_check_every)
                    await self._wait(self.settings.digest_check_every)
                finally:
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
        finally:
            await self.aclose()
            logger.info("digest scheduler stopped")

    async def tick(self, conn: Conn) -> None:
        """One round: make the due period's digests the table lacks, then attempt every channel that is due."""
        now = self.clock()
        s = self.settings
        period = due_period(now, s.digest_every, s.digest_weekday, s.digest_hour)
        if period is not None:
            for brand in self.brands:
                await self.prepare(conn, brand, period, now)
        await self.deliver_due(conn)
        self.rounds += 1

    async def prepare(self, conn: Conn, brand: str, period: Period, now: datetime) -> bool:
        """Record the brand's digest of the period unless it is there already; True when made now."""
        cur = await conn.execute(
            "SELECT 1 FROM digests WHERE brand = %s AND period_start = %s AND period_end = %s",
            (brand, period.start, period.end),
        )
        if await cur.fetchone() is not None:
            return False
        competitors = list(self.config.brands[brand].competitors)
        digest = await make_digest(conn, brand, competitors, period, self.link, now)
        if nothing_to_report(digest):
            record = DigestRecord(skipped="no mention in the period or the one before, and no alert")
        else:
            record = DigestRecord(digest=digest, channels=channels_for(brand, self.config, self.settings, now))
        cur = await conn.execute(
            "INSERT INTO digests (brand, period_start, period_end, sent_at, doc) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (brand, period_start, period_end) DO NOTHING",
            (brand, period.start, period.end, now, Jsonb(record.model_dump(mode="json"))),
        )
        if cur.rowcount != 1:
            return False
        if record.skipped:
            logger.info("digest %s: nothing to report, not sent", digest.id)
        else:
            logger.info(
                "digest %s made: %d channel(s) (%s)",
                digest.id,
                len(record.channels),
                ", ".join(c.target for c in record.channels.values()) or "none configured",
            )
        return True

    async def deliver_due(self, conn: Conn) -> None:
        cur = await conn.execute(
            "SELECT brand, period_start, period_end, doc FROM digests WHERE doc->>'pending' = 'true'"
            " ORDER BY period_start, brand"
        )
        for brand, start, end, doc in await cur.fetchall():
            record = DigestRecord.model_validate(doc)
            now = self.clock()
            due = [
                cid
                for cid, channel in record.channels.items()
                if channel.status == "pending" and (channel.next_attempt_at is None or channel.next_attempt_at <= now)
            ]
            if not due or record.digest is None:
                continue
            results = await asyncio.gather(
                *(self._attempt(conn, (brand, start, end), record, cid) for cid in due), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _attempt(self, conn: Conn, key: tuple[str, datetime, datetime], record: DigestRecord, cid: str) -> None:
        """One delivery attempt of the digest with row key `key` (brand, period start, period end) to `cid`."""
        assert record.digest is not None
        channel = record.channels[cid]
        outcome = await self.sender.send(record.digest, cid, channel)
        now = self.clock()
        after = after_attempt(channel, outcome, now, self.settings.digest_attempts, self.settings.digest_backoff)
        record.channels[cid] = after
        label = after.status if after.status != "pending" else "retry"
        self.metrics.digests.labels(after.kind, label).inc()
        if after.status == "delivered":
            logger.info("digest %s delivered to %s %s", record.digest.id, after.kind, after.target)
        else:
            logger.warning(
                "digest %s to %s %s: attempt %d failed (%s); %s",
                record.digest.id,
                after.kind,
                after.target,
                after.attempts,
                outcome.error,
                f"next at {after.next_attempt_at:%Y-%m-%d %H:%M:%S}" if after.next_attempt_at else "giving up",
            )
        # Saved after each attempt (the connection runs one statement at a time): a crash loses one state at most.
        await conn.execute(
            "UPDATE digests SET doc = %s, sent_at = %s WHERE brand = %s AND period_start = %s AND period_end = %s",
            (Jsonb(record.model_dump(mode="json")), now, *key),
        )


# ---------------------------------------------------------------------------------------------- sending one now


async def digest_now(
    settings: StoreSettings, config: EcouteConfig, brand: str, period: Period, clock: Callable[[], datetime] = utc_now
) -> Digest:
    """The brand's digest of any period, made now (`ecoute store digest`); nothing is recorded."""
    if not settings.database_url:
        raise ValueError("digests need ECOUTE_DATABASE_URL")
    await migrate(settings.database_url)
    async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        competitors = list(config.brands[brand].competitors)
        return await make_digest(conn, brand, competitors, period, history_link(settings.public_url), clock())


async def deliver_now(
    settings: StoreSettings,
    config: EcouteConfig,
    digest: Digest,
    *,
    attempts: int = 3,
    backoff: float = 1.0,
    resolver: Resolver = system_resolver,
) -> dict[str, ChannelState]:
    """Send a digest to every channel of its brand now, a few quick attempts each; the final state per channel.
    Its deliveries have ids of their own: a receiver that drops repeats still gets it."""
    sender = DigestSender(settings, config, resolver)
    channels = channels_for(digest.brand, config, settings, utc_now())

    async def one(cid: str, channel: ChannelState) -> tuple[str, ChannelState]:
        while channel.status == "pending":
            if channel.attempts:
                await asyncio.sleep(backoff * 2 ** (channel.attempts - 1))
            outcome = await sender.send(digest, cid, channel, manual=True)
            channel = after_attempt(channel, outcome, utc_now(), attempts, backoff)
        return cid, channel

    try:
        return dict(await asyncio.gather(*(one(cid, channel) for cid, channel in channels.items())))
    finally:
        await sender.aclose()
