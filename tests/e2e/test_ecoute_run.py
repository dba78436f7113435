"""`ecoute run` on the embedded broker and a local PostgreSQL: the same end-to-end counts, live and in the
history, then a clean stop with no orphan."""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

import httpx
import pytest

from ecoute.brokers import free_port
from tests.e2e.conftest import CONFIG, Stack, make_corpus
from tests.helpers import ServiceProcess, wait_until
from tests.store.store_support import count

pytestmark = [pytest.mark.slow]
BRANDS = ["acme", "globex"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; it is reaped by its parent.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_ecoute_run_on_the_embedded_broker(tmp_path: Path, clean_env: None) -> None:
    config = tmp_path / "ecoute.yaml"
    config.write_text(CONFIG)
    ingest_port, api_port, metrics_port = free_port(), free_port(), free_port()
    # Not under tmp_path: the server runs as the postgres user, who may not enter pytest's private directory.
    pg_dir = Path(tempfile.mkdtemp(prefix="ecoute-run-pg-"))
    env = {
        "ECOUTE_POSTGRES_DATA_DIR": str(pg_dir / "data"),
        "ECOUTE_STORE_METRICS_PORT": str(free_port()),
        "ECOUTE_CONFIG": str(config),
        "ECOUTE_INGEST_PORT": str(ingest_port),
        "ECOUTE_API_PORT": str(api_port),
        "ECOUTE_ANALYZER_METRICS_PORT": str(metrics_port),
        "ECOUTE_ANALYZER_DATA_DIR": str(tmp_path / "analyzer"),
        "ECOUTE_LOG_LEVEL": "INFO",
    }
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ECOUTE_")}, **env}
    run = ServiceProcess(["run"], env, tmp_path / "run.log")
    run.env = env  # no ECOUTE_KAFKA_BOOTSTRAP_SERVERS: the embedded broker is started
    run.start()
    stack = Stack(
        env,
        tmp_path,
        f"http://127.0.0.1:{ingest_port}",
        f"http://127.0.0.1:{api_port}",
        f"http://127.0.0.1:{metrics_port}/metrics",
    )
    try:
        run.wait_http(f"{stack.api_url}/readyz", timeout=90)
        run.wait_http(f"{stack.ingest_url}/healthz", timeout=30)
        corpus = make_corpus(1000, seed=21, prefix="run")
        stack.post_mentions(corpus.mentions)
        wait_until(lambda: stack.split(BRANDS) == corpus.expected, timeout=30, what=f"API counts {corpus.expected}")
        stack.post_mentions(corpus.mentions[:300])
        wait_until(
            lambda: stack.analyzer_metric("ecoute_analyzer_duplicates_total") == 300,
            timeout=30,
            what="300 duplicates dropped",
        )
        assert stack.split(BRANDS) == corpus.expected
        assert httpx.get(f"{stack.api_url}/metrics").status_code == 200
        # The history has every mention once per brand, the duplicates not again.
        database = re.search(r"local PostgreSQL for the history at (\S+)", run.log_path.read_text())
        assert database is not None, run.log_tail()
        expected_rows = sum(split["mentions"] for split in corpus.expected.values())
        wait_until(
            lambda: count(database.group(1), "SELECT count(*) FROM mentions") == expected_rows,
            timeout=30,
            what=f"{expected_rows} mentions in the history",
        )
    finally:
        code = run.stop(signal.SIGINT, timeout=60)
        shutil.rmtree(pg_dir, ignore_errors=True)
    log = run.log_path.read_text()
    assert code == 0, log[-3000:]
    pids = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", log)]
    assert len(pids) == 4, log[-3000:]
    assert "embedded broker" in log
    assert not [pid for pid in pids if alive(pid)], "a service outlived `ecoute run`"
    # No embedded broker left either: nothing listens on its port any more.
    broker = re.search(r"embedded broker .* at 127\.0\.0\.1:(\d+)", log)
    assert broker is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{broker.group(1)}", timeout=2)
    assert "stopping the local PostgreSQL" in log
    assert database is not None
    with pytest.raises(Exception, match="connection"):
        count(database.group(1), "SELECT 1")
