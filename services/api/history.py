"""The API's side of the history store: a pool of PostgreSQL connections, opened in the lifespan when
`ECOUTE_DATABASE_URL` is set, and the dependency the history routes use to reach it.

Without a database the history routes answer 503 saying what to set; the live routes do not need it.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

logger = logging.getLogger(__name__)

# Seconds a history request waits for a free connection before answering 503.
POOL_TIMEOUT_SECONDS = 5.0
# Retry-After of a 503 from a history route.
RETRY_AFTER_SECONDS = 5
# What makes a history route answer 503: the store cannot be reached (down, every connection busy, a connection
# lost midway) or has no tables yet (no store has applied the migrations).
STORE_ERRORS: tuple[type[Exception], ...] = (
    PoolTimeout,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.UndefinedTable,
)


class History:
    """The connection pool of the history store (None when no database is configured)."""

    def __init__(self, url: str | None, max_size: int = 8) -> None:
        self.url = url
        self.pool: AsyncConnectionPool[AsyncConnection[Any]] | None = (
            AsyncConnectionPool(
                url,
                min_size=1,
                max_size=max_size,
                open=False,
                timeout=POOL_TIMEOUT_SECONDS,
                name="ecoute-api-history",
                kwargs={"autocommit": True},
            )
            if url
            else None
        )

    @property
    def enabled(self) -> bool:
        return self.pool is not None

    async def open(self) -> None:
        if self.pool is not None:
            # Not waiting: the API serves live data while the database is still starting or away.
            await self.pool.open(wait=False)
            logger.info("history store at %s", _redacted(self.url or ""))

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}" if ":" in credentials else f"{scheme}{sep}{user}@{host}"
    return url


def store_unavailable(exc: Exception) -> HTTPException:
    """The 503 a history route answers for one of STORE_ERRORS, saying what to do."""
    logger.warning("history store unavailable: %s", exc)
    if isinstance(exc, psycopg.errors.UndefinedTable):
        detail = "the history store has no tables yet: start `ecoute store` (it applies the migrations), then retry"
    else:
        detail = "the history store (PostgreSQL) cannot be reached; retry later"
    return HTTPException(503, detail=detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def get_history(request: Request) -> History:
    """The app's history store; 503 when none is configured."""
    history: History | None = getattr(request.app.state, "history", None)
    if history is None or not history.enabled:
        raise HTTPException(
            503, "no history store: set ECOUTE_DATABASE_URL (ecoute run starts a local PostgreSQL by itself)"
        )
    return history


HistoryDep = Annotated[History, Depends(get_history)]
