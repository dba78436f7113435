"""`ecoute api`: serve the API with uvicorn; SIGTERM/SIGINT stop it gracefully (streams end, consumer closes)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Generator, Sequence
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from pydantic import ValidationError

from schemas import ConfigError
from services.api.app import create_app
from services.api.coalesce import coalescing
from services.api.settings import ApiSettings, load_settings

logger = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ecoute api", description="Serve Écoute's REST/SSE API from Kafka topics.")
    parser.add_argument("--host", help="listen address (ECOUTE_API_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (ECOUTE_API_PORT, default 8000)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (ECOUTE_KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--config", help="YAML configuration file (ECOUTE_CONFIG, default ecoute.yaml)")
    parser.add_argument("--topic-prefix", help="prefix of every topic name (ECOUTE_TOPIC_PREFIX)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING… (ECOUTE_LOG_LEVEL, default INFO)")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> ApiSettings:
    overrides: dict[str, Any] = {
        "api_host": args.host,
        "api_port": args.port,
        "kafka_bootstrap_servers": args.bootstrap_servers,
        "config": args.config,
        "topic_prefix": args.topic_prefix,
        "log_level": args.log_level,
    }
    return load_settings(**{name: value for name, value in overrides.items() if value is not None})


def access_log_shown(log_level: str) -> bool:
    """Whether uvicorn's access lines would show at this level (INFO and below). uvicorn formats the line's
    arguments for every request before the logger drops it: below that level it is asked for none."""
    level = logging.getLevelName(log_level.upper())
    return isinstance(level, int) and level <= logging.INFO


def process_registry() -> CollectorRegistry:
    """A registry of our own with the usual process, platform and GC metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class GracefulServer(uvicorn.Server):
    """uvicorn's server with our own SIGTERM/SIGINT handling.

    The first signal ends the SSE streams cleanly (so open connections close at once) and asks uvicorn to
    drain; a second one forces the exit. Unlike uvicorn's handler, the signal is not re-raised afterwards,
    so `main` returns 0 after a graceful stop.
    """

    def __init__(self, config: uvicorn.Config, before_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.before_exit = before_exit

    def _begin_exit(self, signal_name: str) -> None:
        logger.info("%s received: closing streams, draining requests, stopping the consumer", signal_name)
        self.before_exit()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()

        # A plain function, not a bound method: sse-starlette looks for a uvicorn Server behind the SIGTERM
        # handler and would cut the streams itself instead of letting them finish.
        def on_signal(sig: int, _frame: FrameType | None) -> None:
            # Only flag and hand over to the loop here: the real work must not run inside a signal handler.
            if self.should_exit:
                self.force_exit = True
                loop.call_soon_threadsafe(logger.warning, "second %s: exiting now", signal.Signals(sig).name)
                return
            self.should_exit = True
            loop.call_soon_threadsafe(self._begin_exit, signal.Signals(sig).name)

        originals = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        logging.basicConfig(level=logging.INFO)
        logger.error("invalid API settings: %s", exc)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings, registry=process_registry())
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=access_log_shown(settings.log_level),
        lifespan="on",
        http=coalescing(),  # one socket write per answer (coalesce.py)
        timeout_graceful_shutdown=settings.api_graceful_shutdown_seconds,
    )
    server = GracefulServer(config, before_exit=app.state.fanout.close)
    logger.info("serving the API on http://%s:%d", settings.api_host, settings.api_port)
    server.run()
    if not server.started:
        logger.error("the API did not start (see the errors above)")
        return 1
    logger.info("API stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
