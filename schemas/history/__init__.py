"""The history store's contract, shared by the sink (services/store) and the API: the PostgreSQL schema
(versioned migrations, applied at start), monthly partitions and their retention.

Migrations are the files `migrations/NNNN_name.sql`, applied in order, each in a transaction of its own, under
an advisory lock so several services starting at once apply each one exactly once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# pg_advisory_lock key held while migrating ("ecoute" in ASCII).
MIGRATION_LOCK = 0x65636F757465

# Tables partitioned by month, and the column they are partitioned on.
PARTITIONED: dict[str, str] = {
    "mentions": "published_at",
    "kpi_snapshots": "start",
    "alerts": "created_at",
    "account_metrics": "at",
    "content_readings": "at",
}
_PARTITION_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<year>\d{4})_(?P<month>\d{2})$")


class HistoryUnavailable(RuntimeError):
    """The history store is not configured or cannot be reached; the message says what to do."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations() -> list[Migration]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a version: {versions}")
    return found


async def migrate(url: str) -> list[int]:
    """Apply the migrations the database lacks; returns the versions applied now."""
    applied_now: list[int] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for migration in migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.path.read_text(encoding="utf-8"))
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                logger.info("applied history migration %04d_%s", migration.version, migration.name)
                applied_now.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied_now


# ---------------------------------------------------------------------------------------------- partitions


def month_start(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_p{month.year:04d}_{month.month:02d}"


def retention_cutoff(months_kept: int, now: datetime) -> datetime:
    """The oldest instant kept: the start of the month `months_kept - 1` months before this one."""
    return datetime.combine(add_months(month_start(now), -(months_kept - 1)), datetime.min.time(), UTC)


async def create_partition(conn: psycopg.AsyncConnection[Any], table: str, month: date) -> None:
    """Create the month's partition of `table` if it is missing (in the caller's transaction)."""
    await conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(partition_name(table, month)),
            sql.Identifier(table),
            sql.Literal(month.isoformat()),
            sql.Literal(add_months(month, 1).isoformat()),
        )
    )


async def existing_partitions(conn: psycopg.AsyncConnection[Any]) -> dict[str, set[date]]:
    """The monthly partitions there are, by table."""
    cur = await conn.execute(
        "SELECT child.relname FROM pg_inherits"
        " JOIN pg_class parent ON parent.oid = pg_inherits.inhparent"
        " JOIN pg_class child ON child.oid = pg_inherits.inhrelid"
        " WHERE parent.relname = ANY(%s)",
        (list(PARTITIONED),),
    )
    found: dict[str, set[date]] = {table: set() for table in PARTITIONED}
    for (name,) in await cur.fetchall():
        match = _PARTITION_NAME.match(name)
        if match and match.group("table") in found:
            found[match.group("table")].add(date(int(match.group("year")), int(match.group("month")), 1))
    return found


async def drop_expired_partitions(conn: psycopg.AsyncConnection[Any], months_kept: int, now: datetime) -> list[str]:
    """Drop every monthly partition wholly older than the retention; returns the names dropped."""
    cutoff = retention_cutoff(months_kept, now).date()
    dropped = []
    for table, months in (await existing_partitions(conn)).items():
        for month in sorted(months):
            if add_months(month, 1) <= cutoff:
                name = partition_name(table, month)
                await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                dropped.append(name)
    if dropped:
        logger.info("history retention (%d months): dropped %s", months_kept, ", ".join(dropped))
    return dropped


__all__ = [
    "MIGRATIONS_DIR",
    "PARTITIONED",
    "HistoryUnavailable",
    "Migration",
    "add_months",
    "create_partition",
    "drop_expired_partitions",
    "existing_partitions",
    "migrate",
    "migrations",
    "month_start",
    "partition_name",
    "retention_cutoff",
]
