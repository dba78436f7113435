"""Helpers shared by the ingest tests (fixtures themselves live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI

Records = list[ConsumerRecord[bytes, bytes]]
ReadTopic = Callable[..., Awaitable[Records]]


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run (start-up, shutdown), and an HTTP client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


async def read_topic(bootstrap: str, topic: str, until: Callable[[Records], bool], within: float = 20.0) -> Records:
    """Every record of `topic` from the start, read until `until(records)` holds (or fail after `within` s)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: Records = []
    deadline = time.monotonic() + within
    try:
        while not until(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within}s reading {topic}; got {len(records)} records")
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def keys(records: Records) -> list[str]:
    return [r.key.decode() for r in records if r.key is not None]


def mention(n: int | str, **extra: object) -> dict[str, object]:
    return {"id": f"test:{n}", "text": f"acme mention {n}", "source": "reddit", **extra}
