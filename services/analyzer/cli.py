"""`ecoute analyzer`: run the Faust worker (both stages) until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
from typing import Any

import faust
from prometheus_client import CollectorRegistry, start_http_server

from schemas import ConfigError, Topics, ensure_topics, load_config
from services.analyzer.app import create_app
from services.analyzer.pipeline import Stage1
from services.analyzer.query import QueryError
from services.analyzer.settings import build_settings

logger = logging.getLogger(__name__)

# Young-generation collections every this many net allocations (Python's default: 700). Stage 1
# allocates a few dozen short-lived containers per mention, all freed by reference counting; the
# cyclic collector scanning them every 700 took ~12% of stage 1 and found next to nothing.
GC_THRESHOLDS = (50_000, 20, 10)

_FAUST_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "crit"}


class AnalyzerWorker(faust.Worker):
    """A Faust worker that keeps the log level it is given.

    mode's logging set-up leaves the root logger at DEBUG, and aiokafka then builds a debug record
    for every message it sends: 13% of the worker's time in a profile, for nothing.
    """

    def __init__(self, *args: Any, root_level: int = logging.INFO, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._root_level = root_level

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        logger.setLevel(self._root_level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ecoute analyzer", description="score mentions and keep KPI tables")
    parser.parse_args(argv)
    settings = build_settings()
    try:
        config = load_config(settings.config)
        stage1 = Stage1(config)  # compiles every brand query: a bad one stops start-up here
    except (ConfigError, QueryError) as exc:
        logger.error("cannot start the analyzer: %s", exc)
        return 2
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    topics = Topics(settings.topic_prefix)
    counts = loop.run_until_complete(
        ensure_topics(settings.bootstrap, topics, settings.partitions, settings.replication_factor)
    )
    for name in (topics.mentions_raw, topics.kpi_partials):
        if counts.get(name, settings.partitions) != settings.partitions:
            # Faust tables must have as many partitions as their input topic (co-partitioning).
            logger.error(
                "topic %s has %d partitions but ECOUTE_PARTITIONS=%d: set ECOUTE_PARTITIONS=%d",
                name,
                counts[name],
                settings.partitions,
                counts[name],
            )
            return 2
    settings.analyzer_data_dir.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    app, _ = create_app(settings, config, registry, stage1=stage1)
    if settings.analyzer_metrics_port:
        start_http_server(settings.analyzer_metrics_port, settings.analyzer_metrics_host, registry=registry)
        logger.info(
            "analyzer metrics at http://%s:%d/metrics", settings.analyzer_metrics_host, settings.analyzer_metrics_port
        )
    # What is built by now (lexicons, language model, compiled queries, the app) lives as long as
    # the process: out of the collector's sight, and collections of the young objects are rarer.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    worker = AnalyzerWorker(
        app,
        root_level=logging.getLevelName(settings.log_level.upper()),
        loop=loop,
        loglevel=_FAUST_LEVELS.get(settings.log_level.upper(), "info"),
        quiet=True,
        redirect_stdouts=False,
    )
    worker.execute_from_commandline()  # returns only through SystemExit when the worker stops
    return 0
