"""Start-up of the API's views from the history store instead of a replay of every topic from its beginning.

`WarmStart.snapshot` opens one REPEATABLE READ transaction on PostgreSQL, reads the Kafka positions the store
sink has written up to (`sink_offsets`), then yields the rows the views need as `StoredRecord`s shaped like
the Kafka records they came from, so the view consumer applies them through the very path Kafka records take;
it then reads each partition from the stored offset on. Rows and offsets come from the same snapshot: the sink
writes both in one transaction, so nothing is applied twice or missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from schemas import AccountMetric, dump
from services.api.history import _redacted
from services.api.insights_views import ACCOUNT_RETENTION, MENTION_RETENTION, SERIES_RETENTION
from services.api.settings import ApiSettings
from services.api.views import Views, floor_minute

logger = logging.getLogger(__name__)

MENTIONS_SCORED = "mentions.scored"
KPI_SNAPSHOTS = "kpi.snapshots"
ALERTS = "alerts"
ACTIONS = "alerts.actions"
METRICS_ACCOUNTS = "metrics.accounts"
# The topics the store sink keeps (unprefixed); webhooks.deliveries is not among them.
STORED_TOPICS = frozenset({MENTIONS_SCORED, KPI_SNAPSHOTS, ALERTS, ACTIONS, METRICS_ACCOUNTS})
# Rows fetched from a server-side cursor at once: a round trip per chunk, and a chunk is converted in one go.
FETCH_ROWS = 500
# Older mentions read per brand, newest first, to fill its recent list and inbox (which keep their newest N
# whatever their age): a brand whose mentions seldom need an answer would otherwise be read back to its first.
OLD_ROWS_PER_BRAND_FACTOR = 20
CONNECT_TIMEOUT_SECONDS = 5

Conn = psycopg.AsyncConnection[Any]


class WarmStartFailed(RuntimeError):
    """The history store could not be read (down, not migrated, failed midway); the message says why."""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A row of the history store as the Kafka record it was written from (what the view consumer applies).

    The store keeps no partition or offset per row: both are -1."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True)
class Horizons:
    """How far back the views look: rows older than these are not loaded (the views would drop them)."""

    mentions: timedelta = MENTION_RETENTION
    kpis: Mapping[str, timedelta] = field(default_factory=lambda: dict(SERIES_RETENTION))
    accounts: timedelta = ACCOUNT_RETENTION


@dataclass
class Snapshot:
    """One read of the store: the Kafka position it holds of each (topic, partition), its rows for the views
    (`records`, to be read once), and how many of each topic's were read so far (`loaded`)."""

    offsets: dict[tuple[str, int], int]
    records: AsyncIterator[StoredRecord]
    loaded: Counter[str]


class WarmStart:
    """Loads the views' state from the history store at `url` (the views are only read, to know when a brand's
    recent list and inbox are full)."""

    def __init__(
        self,
        url: str,
        views: Views,
        horizons: Horizons | None = None,
        *,
        fetch_rows: int = FETCH_ROWS,
        old_rows_per_brand: int | None = None,
    ) -> None:
        self.url = url
        self.views = views
        self.horizons = horizons or Horizons()
        self.fetch_rows = fetch_rows
        self.old_rows_per_brand = old_rows_per_brand or OLD_ROWS_PER_BRAND_FACTOR * (
            views.mentions_per_brand + views.inbox_per_brand
        )

    @classmethod
    def for_views(cls, settings: ApiSettings, views: Views) -> WarmStart | None:
        """The warm start of the app's views; None without a database configured."""
        if not settings.database_url:
            return None
        kpis = dict(SERIES_RETENTION)
        kpis["1m"] = max(kpis["1m"], views.retention)
        return cls(settings.database_url, views, Horizons(max(MENTION_RETENTION, views.retention), kpis))

    @asynccontextmanager
    async def snapshot(self, topics: Mapping[str, str], now: datetime) -> AsyncIterator[Snapshot]:
        """Open the snapshot of the store for `topics` (full name → unprefixed name; those the store does not
        keep are ignored). Raises WarmStartFailed when the store cannot be read, also from its records."""
        stored = {full: name for full, name in topics.items() if name in STORED_TOPICS}
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        except (psycopg.Error, OSError) as exc:
            raise WarmStartFailed(f"cannot connect to {_redacted(self.url)}: {exc}") from exc
        try:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            await conn.set_read_only(True)
            async with conn.transaction():
                offsets = await self._offsets(conn, list(stored))
                # Only the tables of topics the sink has written from: the others are read from Kafka in full.
                names = {stored[topic] for topic, _ in offsets}
                loaded: Counter[str] = Counter()
                yield Snapshot(offsets, self._records(conn, names, stored, now, loaded), loaded)
        except psycopg.Error as exc:
            raise WarmStartFailed(f"reading the history store failed: {exc}") from exc
        finally:
            await conn.close()

    # -- reading ---------------------------------------------------------------------------------

    @staticmethod
    async def _offsets(conn: Conn, topics: list[str]) -> dict[tuple[str, int], int]:
        cur = await conn.execute("SELECT to_regclass('sink_offsets') IS NOT NULL")
        row = await cur.fetchone()
        if row is None or not row[0]:
            raise WarmStartFailed("the history store has no schema yet (the store service applies it)")
        cur = await conn.execute(
            "SELECT topic, partition, next_offset FROM sink_offsets WHERE topic = ANY(%s)", (topics,)
        )
        return {(topic, partition): offset for topic, partition, offset in await cur.fetchall()}

    async def _records(
        self, conn: Conn, names: set[str], stored: Mapping[str, str], now: datetime, loaded: Counter[str]
    ) -> AsyncIterator[StoredRecord]:
        topic_of = {name: full for full, name in stored.items()}
        if ACTIONS in names:
            # Acks before their alerts, marks before their mentions: the views take them in any order.
            async for key, doc in self._rows(conn, "SELECT key, doc::text FROM actions", ()):
                loaded[ACTIONS] += 1
                yield StoredRecord(topic_of[ACTIONS], key.encode(), doc.encode())
        if ALERTS in names:
            query = (
                "SELECT doc::text FROM (SELECT doc, created_at, id FROM alerts ORDER BY created_at DESC, id DESC"
                " LIMIT %s) newest ORDER BY created_at, id"
            )
            async for (doc,) in self._rows(conn, query, (self.views.alerts_kept,)):
                loaded[ALERTS] += 1
                yield StoredRecord(topic_of[ALERTS], None, doc.encode())
        if KPI_SNAPSHOTS in names:
            async for record in self._kpis(conn, topic_of[KPI_SNAPSHOTS], now, loaded):
                yield record
        if METRICS_ACCOUNTS in names:
            async for record in self._accounts(conn, topic_of[METRICS_ACCOUNTS], now, loaded):
                yield record
        if MENTIONS_SCORED in names:
            async for record in self._mentions(conn, topic_of[MENTIONS_SCORED], now, loaded):
                yield record

    async def _mentions(
        self, conn: Conn, topic: str, now: datetime, loaded: Counter[str]
    ) -> AsyncIterator[StoredRecord]:
        """Per brand: its mentions within the horizon, oldest first (the order Kafka had them in, which the
        views' caps depend on); then older ones, newest first, until its recent list and inbox are full."""
        cutoff = floor_minute(now) - self.horizons.mentions
        recent = "SELECT doc::text FROM mentions WHERE brand = %s AND published_at >= %s ORDER BY published_at, id"
        older = (
            "SELECT doc::text FROM mentions WHERE brand = %s AND published_at < %s"
            " ORDER BY published_at DESC, id DESC LIMIT %s"
        )
        for brand in await self._brands(conn, "mentions"):
            async for (doc,) in self._rows(conn, recent, (brand, cutoff)):
                loaded[MENTIONS_SCORED] += 1
                yield StoredRecord(topic, brand.encode(), doc.encode())
            if self._full(brand):
                continue
            read = 0
            async with aclosing(self._rows(conn, older, (brand, cutoff, self.old_rows_per_brand))) as rows:
                async for (doc,) in rows:
                    read += 1
                    loaded[MENTIONS_SCORED] += 1
                    yield StoredRecord(topic, brand.encode(), doc.encode())
                    if self._full(brand):
                        break
                else:
                    if read >= self.old_rows_per_brand:
                        logger.info(
                            "%s: recent list or inbox not full after %d mentions older than %s; older ones left",
                            brand,
                            read,
                            cutoff.isoformat(),
                        )

    def _full(self, brand: str) -> bool:
        recent, inbox = self.views.kept_mentions(brand)
        return recent >= self.views.mentions_per_brand and inbox >= self.views.inbox_per_brand

    async def _kpis(self, conn: Conn, topic: str, now: datetime, loaded: Counter[str]) -> AsyncIterator[StoredRecord]:
        """Snapshots of the windows the views keep, within their horizons; then, for a brand none of those
        names, its newest snapshot (too old to be kept, it still makes the brand known, as a replay would)."""
        seen: set[str] = set()
        query = "SELECT brand, doc::text FROM kpi_snapshots WHERE window_name = %s AND start >= %s"
        for window, horizon in sorted(self.horizons.kpis.items()):
            async for brand, doc in self._rows(conn, query, (window, floor_minute(now) - horizon)):
                seen.add(brand)
                loaded[KPI_SNAPSHOTS] += 1
                yield StoredRecord(topic, None, doc.encode())
        newest = "SELECT doc::text FROM kpi_snapshots WHERE brand = %s ORDER BY brand, window_name, start DESC LIMIT 1"
        for brand in await self._brands(conn, "kpi_snapshots"):
            if brand not in seen and not self.views.has_brand(brand):
                async for (doc,) in self._rows(conn, newest, (brand,)):
                    loaded[KPI_SNAPSHOTS] += 1
                    yield StoredRecord(topic, None, doc.encode())

    async def _accounts(
        self, conn: Conn, topic: str, now: datetime, loaded: Counter[str]
    ) -> AsyncIterator[StoredRecord]:
        """Readings within the horizon and, per account metric, the newest one before it: the value in force
        at its start, which the insight views keep for 7-day changes."""
        cutoff = now - self.horizons.accounts
        before = (
            "SELECT DISTINCT ON (brand, platform, metric) brand, platform, metric, at, value FROM account_metrics"
            " WHERE at < %s ORDER BY brand, platform, metric, at DESC"
        )
        within = (
            "SELECT brand, platform, metric, at, value FROM account_metrics WHERE at >= %s"
            " ORDER BY brand, platform, metric, at"
        )
        for query in (before, within):
            async for brand, platform, metric, at, value in self._rows(conn, query, (cutoff,)):
                reading = AccountMetric(brand=brand, platform=platform, metric=metric, at=at, value=value)
                loaded[METRICS_ACCOUNTS] += 1
                yield StoredRecord(topic, reading.key.encode(), dump(reading))

    @staticmethod
    async def _brands(conn: Conn, table: LiteralString) -> list[str]:
        """The distinct brands of a table, one index probe each (a loose index scan: brand leads its key)."""
        query = sql.SQL(
            "WITH RECURSIVE b AS ((SELECT brand FROM {t} ORDER BY brand LIMIT 1) UNION ALL"
            " SELECT (SELECT brand FROM {t} WHERE brand > b.brand ORDER BY brand LIMIT 1) FROM b"
            " WHERE b.brand IS NOT NULL) SELECT brand FROM b WHERE brand IS NOT NULL"
        ).format(t=sql.Identifier(table))
        cur = await conn.execute(query)
        return [brand for (brand,) in await cur.fetchall()]

    async def _rows(self, conn: Conn, query: LiteralString, params: tuple[Any, ...]) -> AsyncGenerator[tuple[Any, ...]]:
        """The rows of `query` through a server-side cursor, `fetch_rows` at a time (a big load never sits
        whole in memory, here or in the server).

        The next chunk is fetched while the caller applies this one, as Kafka's fetcher does: fetching one after
        the other left the views idle for a round trip, and the server's work on it, every chunk (on a busy
        machine that took longer than applying the chunk)."""
        async with conn.cursor(name="ecoute_api_warm_start") as cur:
            await cur.execute(query, params)
            pending = asyncio.ensure_future(cur.fetchmany(self.fetch_rows))
            try:
                while rows := await pending:
                    pending = asyncio.ensure_future(cur.fetchmany(self.fetch_rows))
                    for row in rows:
                        yield row
            finally:
                # The connection serves one command at a time: the fetch in flight ends before the cursor closes.
                if not pending.done():
                    with contextlib.suppress(psycopg.Error):
                        await pending
                elif not pending.cancelled():
                    pending.exception()  # seen: the error that matters is the one on its way out
