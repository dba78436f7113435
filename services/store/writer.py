"""One batch of history rows and the Kafka positions they bring the store to, written in one PostgreSQL
transaction: either all of it is stored, offsets included, or none of it (the sink then re-reads from the
stored offsets). Mentions go through COPY into a temporary table, then one INSERT … ON CONFLICT DO NOTHING,
so a mention written twice (a replayed record) is kept once.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql

from schemas.history import PARTITIONED, create_partition, existing_partitions, month_start
from services.store.rows import ALERT_COLUMNS, CONTENT_COLUMNS, KPI_COLUMNS, MENTION_COLUMNS, Batch

logger = logging.getLogger(__name__)

Conn = psycopg.AsyncConnection[Any]

_STAGE_MENTIONS = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS mentions_in ("
    " brand text, id text, published_at timestamptz, source text, site text, url text, author text,"
    " author_handle text, reach bigint, lang text, label text, compound double precision, topics text[],"
    " likes bigint, shares bigint, comments bigint, title text, body text, doc jsonb) ON COMMIT DELETE ROWS"
)
_MENTION_COLS = sql.SQL(", ").join(sql.Identifier(c) for c in MENTION_COLUMNS)
_COPY_MENTIONS = sql.SQL("COPY mentions_in ({}) FROM STDIN").format(_MENTION_COLS)
_INSERT_MENTIONS = sql.SQL(
    "INSERT INTO mentions ({cols}) SELECT {cols} FROM mentions_in WHERE published_at >= %s ON CONFLICT DO NOTHING"
).format(cols=_MENTION_COLS)
_UPSERT_KPI = sql.SQL(
    "INSERT INTO kpi_snapshots ({cols}) VALUES ({params}) ON CONFLICT (brand, window_name, start) DO UPDATE SET {sets}"
).format(
    cols=sql.SQL(", ").join(sql.Identifier(c) for c in KPI_COLUMNS),
    params=sql.SQL(", ").join(sql.Placeholder() for _ in KPI_COLUMNS),
    sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in KPI_COLUMNS[3:]),
)
_INSERT_ALERT = sql.SQL("INSERT INTO alerts ({cols}) VALUES ({params}) ON CONFLICT DO NOTHING").format(
    cols=sql.SQL(", ").join(sql.Identifier(c) for c in ALERT_COLUMNS),
    params=sql.SQL(", ").join(sql.Placeholder() for _ in ALERT_COLUMNS),
)
_UPSERT_ACTION = (
    "INSERT INTO actions (key, brand, kind, at, doc) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (key) DO UPDATE SET brand = EXCLUDED.brand, kind = EXCLUDED.kind, at = EXCLUDED.at,"
    " doc = EXCLUDED.doc"
)
_UPSERT_ACCOUNT = (
    "INSERT INTO account_metrics (brand, platform, metric, at, value) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (brand, platform, metric, at) DO UPDATE SET value = EXCLUDED.value"
)
_UPSERT_CONTENT = sql.SQL(
    "INSERT INTO content_readings ({cols}) VALUES ({params})"
    " ON CONFLICT (brand, platform, item_id, at) DO UPDATE SET {sets}"
).format(
    cols=sql.SQL(", ").join(sql.Identifier(c) for c in CONTENT_COLUMNS),
    params=sql.SQL(", ").join(sql.Placeholder() for _ in CONTENT_COLUMNS),
    sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in CONTENT_COLUMNS[4:]),
)
_UPSERT_OFFSET = (
    "INSERT INTO sink_offsets (topic, partition, next_offset) VALUES (%s, %s, %s)"
    " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"
)


class Partitions:
    """The monthly partitions known to exist, so a batch creates only the ones it is the first to need."""

    def __init__(self) -> None:
        self.known: dict[str, set[date]] | None = None

    async def ensure(self, conn: Conn, table: str, moments: list[datetime], cutoff: datetime) -> None:
        if self.known is None:
            self.known = await existing_partitions(conn)
        for month in {month_start(m) for m in moments if m >= cutoff}:
            if month not in self.known[table]:
                await create_partition(conn, table, month)
                self.known[table].add(month)
                logger.info("created history partition %s for %s", table, month.strftime("%Y-%m"))

    def forget(self) -> None:
        """After a failed transaction the partitions it created are gone again."""
        self.known = None


async def write_batch(conn: Conn, batch: Batch, cutoff: datetime, partitions: Partitions) -> dict[str, int]:
    """Write `batch` and its offsets in one transaction; returns the rows written per table (mentions: new
    ones only). Rows older than `cutoff` (the retention) are left out."""
    written = {"mentions": 0, "kpi_snapshots": 0, "alerts": 0, "actions": 0, "account_metrics": 0}
    written["content_readings"] = 0
    try:
        async with conn.transaction():
            await partitions.ensure(conn, "mentions", [row[2] for row in batch.mentions], cutoff)
            await partitions.ensure(conn, "kpi_snapshots", [key[2] for key in batch.kpis], cutoff)
            await partitions.ensure(conn, "alerts", [row[4] for row in batch.alerts], cutoff)
            await partitions.ensure(conn, "account_metrics", [key[3] for key in batch.accounts], cutoff)
            await partitions.ensure(conn, "content_readings", [key[3] for key in batch.contents], cutoff)
            async with conn.cursor() as cur:
                if batch.mentions:
                    await cur.execute(_STAGE_MENTIONS)
                    async with cur.copy(_COPY_MENTIONS) as copy:
                        for row in batch.mentions:
                            await copy.write_row(row)
                    await cur.execute(_INSERT_MENTIONS, (cutoff,))
                    written["mentions"] = max(cur.rowcount, 0)
                kpis = [row for row in batch.kpis.values() if row[2] >= cutoff]
                if kpis:
                    await cur.executemany(_UPSERT_KPI, kpis)
                    written["kpi_snapshots"] = len(kpis)
                alerts = [row for row in batch.alerts if row[4] >= cutoff]
                if alerts:
                    await cur.executemany(_INSERT_ALERT, alerts)
                    written["alerts"] = len(alerts)
                removed = [(key,) for key, action in batch.actions.items() if action is None]
                kept = [(key, *action) for key, action in batch.actions.items() if action is not None]
                if removed:
                    await cur.executemany("DELETE FROM actions WHERE key = %s", removed)
                if kept:
                    await cur.executemany(_UPSERT_ACTION, kept)
                written["actions"] = len(kept) + len(removed)
                accounts = [(*key, value) for key, value in batch.accounts.items() if key[3] >= cutoff]
                if accounts:
                    await cur.executemany(_UPSERT_ACCOUNT, accounts)
                    written["account_metrics"] = len(accounts)
                contents = [row for key, row in batch.contents.items() if key[3] >= cutoff]
                if contents:
                    await cur.executemany(_UPSERT_CONTENT, contents)
                    written["content_readings"] = len(contents)
                if batch.offsets:
                    await cur.executemany(
                        _UPSERT_OFFSET, [(topic, part, offset) for (topic, part), offset in batch.offsets.items()]
                    )
    except BaseException:
        partitions.forget()
        raise
    return written


async def stored_offsets(conn: Conn, topics: list[str]) -> dict[tuple[str, int], int]:
    """The next offset to read of every partition the store has written from."""
    cur = await conn.execute("SELECT topic, partition, next_offset FROM sink_offsets WHERE topic = ANY(%s)", (topics,))
    return {(topic, part): offset for topic, part, offset in await cur.fetchall()}


__all__ = ["PARTITIONED", "Partitions", "stored_offsets", "write_batch"]
