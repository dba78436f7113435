"""The `ecoute` command: one service (`ingest`, `analyzer`, `api`) or all of them (`run`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from ecoute.brokers import BrokerError, TansuBroker
from ecoute.postgres import LocalPostgres, PostgresError, default_data_dir

logger = logging.getLogger("ecoute")

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
SERVICES = ("ingest", "analyzer", "api", "store")
USAGE = """usage: ecoute <command> [options]

commands:
  run [--demo]        everything in one command (embedded broker unless ECOUTE_KAFKA_BOOTSTRAP_SERVERS is set,
                      local PostgreSQL unless ECOUTE_DATABASE_URL is set)
  ingest              the ingest service: HTTP push on :8001 and the configured sources
  ingest replay FILE  produce the mentions of a JSONL file
  ingest simulate     produce a simulated stream (see --help)
  analyzer            the Faust stream processor (both stages)
  api                 the REST/SSE API and live page on :8000
  store               the history store: topics → PostgreSQL (needs ECOUTE_DATABASE_URL)
"""


def _setup_logging() -> None:
    level = os.environ.get("ECOUTE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # health polls are not news


def demo_config(user_config: Path | None) -> dict[str, Any]:
    """The user's config (if any) with the demo brands and a simulated source added."""
    config: dict[str, Any] = {}
    if user_config is not None and user_config.is_file():
        config = yaml.safe_load(user_config.read_text(encoding="utf-8")) or {}
    demo = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    for section in ("brands", "topics"):
        merged = dict(demo[section])
        merged.update(config.get(section) or {})
        config[section] = merged
    config.setdefault("alerts", demo["alerts"])
    sources = list(config.get("sources") or [])
    if not any(s.get("type") == "simulate" for s in sources):
        sources.append({"type": "simulate", "rate": 20, "seed": 7})
    config["sources"] = sources
    return config


class Supervisor:
    """Starts the three services as child processes and stops them (then the broker) by PID."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def start(self, name: str) -> None:
        self.children[name] = subprocess.Popen([sys.executable, "-m", "ecoute.cli", name], env=self.env)
        logger.info("started %s (pid %d)", name, self.children[name].pid)

    def wait_healthy(self, url: str, name: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            if self.children[name].poll() is not None:
                raise RuntimeError(f"{name} exited with code {self.children[name].returncode}; see its log above")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        if not self.stopping:
            raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f}s")

    def stop(self) -> None:
        self.stopping = True
        for name in reversed(list(self.children)):
            proc = self.children[name]
            if proc.poll() is None:
                logger.info("stopping %s (pid %d)", name, proc.pid)
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.children.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within 30 s; killing pid %d", name, proc.pid)
                proc.kill()
                proc.wait(timeout=10)

    def first_exit(self) -> tuple[str, int] | None:
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None:
                return name, code
        return None


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ecoute run", description="run ingest, analyzer and API together")
    parser.add_argument("--demo", action="store_true", help="add a simulated stream for the brands acme and globex")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    user_config = Path(env.get("ECOUTE_CONFIG", "ecoute.yaml"))
    workdir = Path(tempfile.mkdtemp(prefix="ecoute-run-"))
    if args.demo:
        config_path = workdir / "ecoute.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(user_config), sort_keys=False), encoding="utf-8")
        env["ECOUTE_CONFIG"] = str(config_path)
    elif not user_config.is_file():
        print(f"no config file at {user_config}: set ECOUTE_CONFIG, or try `ecoute run --demo`", file=sys.stderr)
        return 2
    env.setdefault("ECOUTE_ANALYZER_DATA_DIR", str(workdir / "analyzer"))

    broker: TansuBroker | None = None
    database: LocalPostgres | None = None
    supervisor = Supervisor(env)
    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        logger.info("received %s: stopping", signal.Signals(signum).name)
        stop_requested = True
        supervisor.stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    try:
        if not env.get("ECOUTE_KAFKA_BOOTSTRAP_SERVERS"):
            broker = TansuBroker().start()
            env["ECOUTE_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
            logger.info(
                "embedded broker (Tansu, memory only: nothing is kept across restarts) at %s", broker.bootstrap_servers
            )
        if not env.get("ECOUTE_DATABASE_URL"):
            database = LocalPostgres(data_dir=default_data_dir()).start()
            env["ECOUTE_DATABASE_URL"] = database.url
            logger.info("local PostgreSQL for the history at %s (data in %s)", database.url, database.data_dir)
        for name in SERVICES:
            supervisor.start(name)
        ingest_url = f"http://{env.get('ECOUTE_INGEST_HOST', '127.0.0.1')}:{env.get('ECOUTE_INGEST_PORT', '8001')}"
        api_url = f"http://{env.get('ECOUTE_API_HOST', '127.0.0.1')}:{env.get('ECOUTE_API_PORT', '8000')}"
        supervisor.wait_healthy(f"{ingest_url}/healthz", "ingest")
        supervisor.wait_healthy(f"{api_url}/healthz", "api")
        if not stop_requested:
            print(
                "\nÉcoute is running (Ctrl-C stops everything):\n"
                f"  live page        {api_url}/\n"
                f"  KPIs             {api_url}/v1/brands/acme/kpis?window=1h\n"
                f"  alerts (SSE)     {api_url}/v1/alerts/stream\n"
                f"  push mentions    POST {ingest_url}/v1/mentions\n"
                f"  metrics          {api_url}/metrics  {ingest_url}/metrics  "
                f"http://127.0.0.1:{env.get('ECOUTE_ANALYZER_METRICS_PORT', '8002')}/metrics\n"
                f"  Kafka            {env['ECOUTE_KAFKA_BOOTSTRAP_SERVERS']}\n"
                f"  history search   {api_url}/v1/brands/acme/mentions/search?q=support\n",
                flush=True,
            )
        while not stop_requested:
            exited = supervisor.first_exit()
            if exited is not None:
                logger.error("%s exited with code %d: stopping the others", *exited)
                code = 1
                break
            time.sleep(0.3)
    except (BrokerError, PostgresError, RuntimeError) as exc:
        logger.error("%s", exc)
        code = 1
    finally:
        supervisor.stop()
        if broker is not None:
            logger.info("stopping the embedded broker")
            broker.stop()
        if database is not None:
            logger.info("stopping the local PostgreSQL")
            database.stop(remove=False)
        logger.info("stopped")
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    _setup_logging()
    if command == "run":
        return run(rest)
    if command == "ingest":
        from services.ingest.cli import main as ingest_main

        return ingest_main(rest)
    if command == "analyzer":
        from services.analyzer.cli import main as analyzer_main

        return analyzer_main(rest)
    if command == "api":
        from services.api.cli import main as api_main

        return api_main(rest)
    if command == "store":
        from services.store.cli import main as store_main

        return store_main(rest)
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
