"""`ecoute ingest [serve|replay FILE|simulate ...]`: the ingest service and its batch tools.

Exit codes: 0 done; 1 some replay lines were refused (the others were produced); 2 bad usage, file or
config; 3 Kafka unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import orjson
import uvicorn
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from schemas import ConfigError, EcouteConfig, Mention, load_config
from schemas.config import BrandConfig
from services.ingest.app import create_app
from services.ingest.metrics import build_metrics
from services.ingest.producer import IngestProducer, KafkaUnavailable
from services.ingest.replay import replay_file
from services.ingest.settings import IngestSettings, build_settings
from services.ingest.simulate import SentimentShift, SimulateOptions, Spike, run_simulation, simulation_from_options
from services.ingest.sources import mention_sender

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_KAFKA = 0, 1, 2, 3


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _spike(text: str) -> Spike:
    try:
        brand, at, duration, factor = text.split(":")
        return Spike(brand=brand, at=at, duration=duration, factor=factor)
    except (ValueError, ValidationError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected BRAND:AT:DURATION:FACTOR, e.g. acme:60:30:5 ({exc})"
        ) from None


def _shift(text: str) -> SentimentShift:
    try:
        brand, at, duration, share = text.split(":")
        return SentimentShift(brand=brand, at=at, duration=duration, negative_share=share)
    except (ValueError, ValidationError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected BRAND:AT:DURATION:SHARE, e.g. acme:60:120:0.8 ({exc})"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecoute ingest", description="Écoute ingest service and tools.")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the HTTP API (the default) and run the configured sources")
    serve.add_argument("--host", help="listen address (ECOUTE_INGEST_HOST)")
    serve.add_argument("--port", type=int, help="listen port (ECOUTE_INGEST_PORT)")
    replay = sub.add_parser("replay", help="replay a JSONL file of mentions into mentions.raw")
    replay.add_argument("file", type=Path)
    replay.add_argument("--batch-size", type=int, default=500)
    sim = sub.add_parser("simulate", help="produce a simulated stream of mentions for the configured brands")
    sim.add_argument("--rate", type=float, default=20.0, help="mentions per second (all brands)")
    stop = sim.add_mutually_exclusive_group()
    stop.add_argument("--count", type=int, help="stop after this many mentions")
    stop.add_argument("--duration", type=float, help="stop after this many seconds")
    sim.add_argument("--seed", type=int)
    sim.add_argument("--french-share", type=float, default=0.15, help="share of posts in French")
    sim.add_argument("--brands", help="comma-separated brands (default: all configured ones)")
    sim.add_argument("--spike", type=_spike, action="append", default=[], metavar="BRAND:AT:DURATION:FACTOR")
    sim.add_argument("--sentiment-shift", type=_shift, action="append", default=[], metavar="BRAND:AT:DURATION:SHARE")
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["ingest"]:
        args_list = args_list[1:]
    args = build_parser().parse_args(args_list)
    try:
        settings = build_settings()
    except ValidationError as exc:
        sys.stderr.write(f"ecoute ingest: invalid ECOUTE_* setting: {exc}\n")
        return EXIT_USAGE
    configure_logging(settings.log_level)
    if args.command == "replay":
        if not args.file.is_file():
            logger.error("%s: no such file", args.file)
            return EXIT_USAGE
        return asyncio.run(_replay(settings, args.file, args.batch_size))
    if args.command == "simulate":
        return asyncio.run(_simulate(settings, args))
    overrides = {
        k: v
        for k, v in (("ingest_host", args.__dict__.get("host")), ("ingest_port", args.__dict__.get("port")))
        if v is not None
    }
    return serve(build_settings(**overrides) if overrides else settings)


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            logger.info(
                "%s: stopping: no new connections, finishing requests in flight, then stopping sources and producer",
                signal.Signals(sig).name,
            )
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals once it has shut down, which would kill the process with the
        # signal after our clean shutdown; the shutdown is complete, so `main` returns 0 instead.
        self._captured_signals.clear()


def serve(settings: IngestSettings) -> int:
    try:
        app = create_app(settings)
    except ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    config = uvicorn.Config(
        app,
        host=settings.ingest_host,
        port=settings.ingest_port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.send_timeout) + 5,
    )
    server = _Server(config)
    logger.info("ingest listening on http://%s:%d", settings.ingest_host, settings.ingest_port)
    server.run()
    if not server.started:
        logger.error("ingest did not start (see the errors above)")
        return EXIT_USAGE
    logger.info("ingest exited cleanly")
    return EXIT_OK


async def _connected_producer(settings: IngestSettings) -> IngestProducer | None:
    link = IngestProducer(settings, build_metrics(CollectorRegistry()))
    await link.start()
    if not link.connected:
        logger.error("Kafka at %s is not reachable: %s", settings.bootstrap, link.last_error)
        await link.stop()
        return None
    return link


def _write_summary(summary: dict[str, object]) -> None:
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    sys.stdout.flush()


async def _replay(settings: IngestSettings, path: Path, batch_size: int) -> int:
    link = await _connected_producer(settings)
    if link is None:
        return EXIT_KAFKA
    try:
        result = await replay_file(path, link, link.metrics, batch_size=batch_size)
    except KafkaUnavailable as exc:
        logger.error("replay stopped: %s", exc)
        return EXIT_KAFKA
    finally:
        await link.stop()
    _write_summary(
        {
            "file": str(path),
            "lines": result.lines,
            "produced": result.produced,
            "refused": result.refused,
            "bad_lines": [{"line": b.line, "error": b.error} for b in result.bad],
        }
    )
    return EXIT_REFUSED if result.bad else EXIT_OK


def _simulation_config(settings: IngestSettings, brands: Sequence[str]) -> EcouteConfig:
    if settings.config.exists():
        return load_config(settings.config)
    if not brands:
        raise ConfigError(f"{settings.config}: no config file; set ECOUTE_CONFIG or pass --brands")
    return EcouteConfig(brands={b: BrandConfig(query=b) for b in brands})


async def _simulate(settings: IngestSettings, args: argparse.Namespace) -> int:
    brands = [b.strip() for b in (args.brands or "").split(",") if b.strip()]
    try:
        config = _simulation_config(settings, brands)
        options = SimulateOptions(
            rate=args.rate,
            count=args.count,
            duration=args.duration,
            seed=args.seed,
            french_share=args.french_share,
            brands=brands or None,
            spikes=args.spike,
            sentiment_shifts=args.sentiment_shift,
        )
        stream = simulation_from_options(config, options, run=uuid.uuid4().hex[:12])
    except (ConfigError, ValidationError, ValueError) as exc:
        logger.error("simulate: %s", exc)
        return EXIT_USAGE
    link = await _connected_producer(settings)
    if link is None:
        return EXIT_KAFKA
    send = mention_sender(link, link.metrics, "simulate")
    produced = 0

    async def counted_send(mentions: Sequence[Mention]) -> None:
        nonlocal produced
        await send(mentions)
        produced += len(mentions)

    task = asyncio.create_task(run_simulation(stream, counted_send))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    sent: int | None = None
    try:
        sent = await task
    except asyncio.CancelledError:
        logger.info("simulate: stopped by signal")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await link.stop()
    _write_summary({"produced": produced, "completed": sent is not None})
    return EXIT_OK
