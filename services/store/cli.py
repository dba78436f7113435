"""`ecoute store`: keep the history in PostgreSQL and send the scheduled digests until SIGINT/SIGTERM;
`ecoute store digest --brand B`: make one brand's digest now and send it (or print it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, start_http_server

from schemas import ConfigError, load_config
from schemas.history.report import ReportRangeError
from services.store.digest import DigestScheduler, Period, deliver_now, digest_now, due_period
from services.store.digest_render import render_json, render_text
from services.store.metrics import StoreMetrics
from services.store.settings import StoreSettings, build_settings
from services.store.sink import HistorySink

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ecoute store",
        description="keep mentions, KPIs, alerts and actions in PostgreSQL (exactly once) and send the digests",
    )
    commands = parser.add_subparsers(dest="command", metavar="{digest}")
    digest = commands.add_parser(
        "digest",
        help="make a brand's digest now and send it to its webhooks and e-mail recipients",
        description="make a brand's digest now and send it (not recorded: the scheduled one still goes)",
    )
    digest.add_argument("--brand", required=True, help="a brand of the config")
    digest.add_argument("--since", type=_moment, help="period start, ISO 8601 (UTC unless said); with --until")
    digest.add_argument("--until", type=_moment, help="period end, exclusive; default: the last due period")
    digest.add_argument("--dry-run", action="store_true", help="print the digest instead of sending it")
    digest.add_argument("--json", action="store_true", help="with --dry-run: print the digest/1 JSON")
    args = parser.parse_args(argv)
    settings = build_settings()
    if not settings.database_url:
        logger.error(
            "the history store needs a database: set ECOUTE_DATABASE_URL (postgresql://user:pass@host:port/db), "
            "or use `ecoute run`, which starts a local PostgreSQL"
        )
        return 2
    if args.command == "digest":
        if (args.since is None) != (args.until is None):
            parser.error("--since and --until go together")
        return asyncio.run(_digest_now(settings, args))
    registry = CollectorRegistry()
    metrics = StoreMetrics.build(registry)
    if settings.store_metrics_port:
        start_http_server(settings.store_metrics_port, settings.store_metrics_host, registry=registry)
        logger.info("store metrics at http://%s:%d/metrics", settings.store_metrics_host, settings.store_metrics_port)
    return asyncio.run(_run(HistorySink(settings, metrics), _scheduler(settings, metrics)))


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _scheduler(settings: StoreSettings, metrics: StoreMetrics) -> DigestScheduler | None:
    if settings.digest_every == "off":
        return None
    try:
        return DigestScheduler(settings, load_config(settings.config), metrics)
    except ConfigError as exc:
        # The history does not need the listening config; only the digests do.
        logger.warning("digests off: %s", exc)
        return None


async def _run(sink: HistorySink, digests: DigestScheduler | None) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _stopper(sink, digests, signum))
    sending = asyncio.create_task(digests.run(), name="ecoute-store-digests") if digests else None
    try:
        await sink.run()
    finally:
        if digests is not None and sending is not None:
            digests.stop()
            await sending
    return 0


def _stopper(sink: HistorySink, digests: DigestScheduler | None, signum: int) -> Callable[[], None]:
    def stop() -> None:
        logger.info("received %s: storing what is in hand, then stopping", signal.Signals(signum).name)
        sink.stop()
        if digests is not None:
            digests.stop()

    return stop


async def _digest_now(settings: StoreSettings, args: argparse.Namespace) -> int:
    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    if args.brand not in config.brands:
        logger.error("no brand %r in %s (brands: %s)", args.brand, settings.config, ", ".join(config.brands) or "none")
        return 2
    if args.since is not None:
        period = Period(args.since, args.until, "period")
    else:
        every = settings.digest_every if settings.digest_every != "off" else "week"
        found = due_period(datetime.now(UTC), every, settings.digest_weekday, settings.digest_hour)
        assert found is not None
        period = found
    try:
        digest = await digest_now(settings, config, args.brand, period)
    except ReportRangeError as exc:
        logger.error("--%s: %s", exc.parameter if exc.parameter in ("since", "until") else "since", exc)
        return 2
    if args.dry_run:
        sys.stdout.write(render_json(digest).decode() + "\n" if args.json else render_text(digest))
        return 0
    states = await deliver_now(settings, config, digest)
    if not states:
        sys.stdout.write(f"digest {digest.id}: no webhook covers {args.brand} and no e-mail is configured\n")
        return 1
    for state in states.values():
        outcome = "delivered" if state.status == "delivered" else f"FAILED after {state.attempts}: {state.last_error}"
        sys.stdout.write(f"digest {digest.id} → {state.kind} {state.target}: {outcome}\n")
    return 0 if all(s.status == "delivered" for s in states.values()) else 1
