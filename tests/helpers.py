"""Test helpers: waiting on a condition with a deadline, and running an Écoute service as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import httpx
import pytest

T = TypeVar("T")


def tools_required() -> bool:
    """Under `make test` (REQUIRE_TEST_TOOLS=1, after `make test-tools`) and in CI, a missing tool is a failure."""
    return any(os.environ.get(name, "").lower() in {"1", "true", "yes"} for name in ("REQUIRE_TEST_TOOLS", "CI"))


def tool_missing(reason: str) -> NoReturn:
    """Skip a test whose outside tool (Chromium, promtool…) is missing, or fail it where the tools are required."""
    if tools_required():
        pytest.fail(f"{reason}; `make test-tools` installs it (deploy/install-test-tools.sh)", pytrace=False)
    pytest.skip(reason)


def wait_until(condition: Callable[[], T], timeout: float, interval: float = 0.2, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except Exception as exc:  # the service may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}; last value {last!r}, last error {last_error!r}"
    )


async def async_wait_until(
    condition: Callable[[], Awaitable[T]], timeout: float, interval: float = 0.2, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


class ServiceProcess:
    """`ecoute <command>` in a child process, stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecoute.cli", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        def ok() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args} exited with {self.proc.returncode}:\n{self.log_tail()}")
            return httpx.get(url, timeout=2.0).status_code == 200

        try:
            wait_until(ok, timeout, what=f"{url} to answer 200")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- log ---\n{self.log_tail()}") from None

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


async def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]], idempotent: bool = True
) -> None:
    """Produce (key, value) pairs and wait until the broker acknowledged all of them."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotent, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topic: str, idle_ms: int = 500, isolation_level: str = "read_uncommitted"
) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """Every record now in `topic` (all partitions, from the beginning), as (key, value, headers)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation_level)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()  # a topic created moments ago
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        deadline = time.monotonic() + 30

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within 30 s")
            batch = await consumer.getmany(timeout_ms=idle_ms)
            for messages in batch.values():
                out.extend((m.key, m.value, list(m.headers)) for m in messages)
        return out
    finally:
        await consumer.stop()


async def latest_by_key(bootstrap: str, topic: str) -> dict[bytes | None, bytes | None]:
    """The newest value of every key in `topic` (what a compacted topic converges to)."""
    return {key: value for key, value, _ in await read_all(bootstrap, topic)}
