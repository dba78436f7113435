"""`python -m services.ingest` as a real process: serve and stop on SIGTERM, replay, simulate."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from schemas import Mention, Topics, load
from tests.helpers import wait_until
from tests.ingest.ingest_support import ReadTopic, keys, mention

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cli_env(bootstrap: str, topic_prefix: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOUTE_")}
    env.update(
        ECOUTE_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        ECOUTE_TOPIC_PREFIX=topic_prefix,
        ECOUTE_PARTITIONS="1",
        ECOUTE_CONFIG=str(tmp_path / "absent.yaml"),
        ECOUTE_KAFKA_STARTUP_WAIT="2",
    )
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.ingest", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def served(cli_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    log_path = tmp_path / "ingest.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.ingest", "serve", "--port", str(port)],
            env=cli_env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}", log_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


async def test_serve_then_sigterm_flushes_and_exits_cleanly(
    served: tuple[subprocess.Popen[bytes], str, Path], topic_prefix: str, reader: ReadTopic
) -> None:
    proc, url, log_path = served

    def healthy() -> bool:
        assert proc.poll() is None, log_path.read_text()
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200

    wait_until(healthy, 30, what="ingest /healthz")
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        response = await client.post("/v1/mentions", json=[mention(1), mention(2)])
        assert response.status_code == 202, response.text
        too_big = orjson.dumps([mention(i, text="y" * 50_000) for i in range(30)])
        assert (await client.post("/v1/mentions", content=too_big)).status_code == 413
        metrics = (await client.get("/metrics")).text
        assert 'ecoute_ingest_request_seconds_count{method="POST",route="/v1/mentions",status="202"} 1.0' in metrics

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log_path.read_text()
    log = log_path.read_text()
    for step in ("SIGTERM: stopping", "flushing the Kafka producer", "Kafka producer stopped", "ingest stopped"):
        assert step in log, log
    assert log.index("flushing the Kafka producer") < log.index("Kafka producer stopped")

    records = await reader(Topics(topic_prefix).mentions_raw, until=lambda rs: len(rs) >= 2)
    assert sorted(keys(records)) == ["test:1", "test:2"]


async def test_replay_command(cli_env: dict[str, str], tmp_path: Path, topic_prefix: str, reader: ReadTopic) -> None:
    path = tmp_path / "dump.jsonl"
    path.write_bytes(
        b"\n".join([orjson.dumps(mention("a")), b"oops", orjson.dumps({"id": "x"}), orjson.dumps(mention("b"))])
    )
    result = run_cli(["replay", str(path)], cli_env)
    assert result.returncode == 1, result.stderr  # some lines were refused
    summary = orjson.loads(result.stdout)
    assert (summary["produced"], summary["refused"]) == (2, 2)
    assert [b["line"] for b in summary["bad_lines"]] == [2, 3]
    records = await reader(Topics(topic_prefix).mentions_raw, until=lambda rs: len(rs) >= 2)
    assert sorted(keys(records)) == ["test:a", "test:b"]

    missing = run_cli(["replay", str(tmp_path / "nope.jsonl")], cli_env)
    assert missing.returncode == 2
    assert "no such file" in missing.stderr


async def test_simulate_command(cli_env: dict[str, str], topic_prefix: str, reader: ReadTopic) -> None:
    result = run_cli(["simulate", "--rate", "400", "--count", "30", "--seed", "3", "--brands", "acme"], cli_env)
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) == {"produced": 30, "completed": True}
    records = await reader(Topics(topic_prefix).mentions_raw, until=lambda rs: len(rs) >= 30)
    mentions = [load(Mention, r.value) for r in records]
    assert all(m.source == "simulate" and "acme" in m.text.lower() for m in mentions)


def test_commands_fail_clearly_without_kafka(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli_env["ECOUTE_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"
    cli_env["ECOUTE_KAFKA_STARTUP_WAIT"] = "1"
    path = tmp_path / "one.jsonl"
    path.write_bytes(orjson.dumps(mention(1)))
    result = run_cli(["replay", str(path)], cli_env, timeout=30)
    assert result.returncode == 3
    assert "not reachable" in result.stderr
    usage = run_cli(["simulate", "--count", "5"], cli_env, timeout=30)
    assert usage.returncode == 2  # no config file and no --brands
    assert "--brands" in usage.stderr
