"""`python -m services.api.cli` as a real process: serves, answers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ecoute.brokers import free_port
from schemas import Topics, ensure_topics
from services.api.cli import access_log_shown
from tests.helpers import wait_until

pytestmark = pytest.mark.kafka


def test_cli_serves_and_stops_gracefully_on_sigterm_with_an_open_stream(
    bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(bootstrap, Topics(topic_prefix), partitions=1))
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("ECOUTE_")}
    env.update({"ECOUTE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ECOUTE_API_PORT": str(port)})
    log_path = tmp_path / "api.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.api.cli", "--topic-prefix", topic_prefix, "--config", "/nonexistent.yaml"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, 30, what="/readyz 200")
        with httpx.stream("GET", f"{url}/v1/alerts/stream", timeout=httpx.Timeout(5, read=20)) as stream:
            assert stream.status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, log_path.read_text(errors="replace")
            # The stream was ended by the server, not left hanging.
            for _ in stream.iter_lines():
                pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    log_text = log_path.read_text(errors="replace")
    assert "view consumer stopped" in log_text and "API stopped" in log_text, log_text
    assert '"GET /readyz HTTP/1.1" 200' in log_text, log_text  # access lines at the default level (INFO)
    assert "without completing response" not in log_text, log_text  # the stream was ended cleanly


def test_access_lines_are_asked_of_uvicorn_only_where_they_show() -> None:
    assert access_log_shown("INFO") and access_log_shown("debug")
    assert not access_log_shown("WARNING") and not access_log_shown("error")
    assert not access_log_shown("nonsense")


def test_cli_refuses_a_broken_config_file(tmp_path: Path) -> None:
    config = tmp_path / "ecoute.yaml"
    config.write_text("brands:\n  Not A Brand!:\n    query: x\n", encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if not name.startswith("ECOUTE_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.api.cli", "--config", str(config), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "brand name 'Not A Brand!'" in done.stderr
