"""The ingest HTTP service: validated mentions and account metrics in, Kafka records out.

A 202 means the broker acknowledged every record of the request (acks=all); a 422 names each bad field
and nothing of that request was produced; a 503 with Retry-After means Kafka could not take the records
in time and the client should send the same request again (mention ids make that safe).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import AccountMetric, ConfigError, EcouteConfig, dump, load_config
from services.ingest.metrics import IngestMetrics, build_metrics
from services.ingest.producer import IngestProducer, KafkaUnavailable
from services.ingest.settings import IngestSettings
from services.ingest.sources import SourceRunner
from services.ingest.validation import (
    Refusal,
    parse_body,
    source_label,
    validate_items,
    validate_mentions,
)

logger = logging.getLogger(__name__)

# The source label of an HTTP-pushed mention that does not say where it comes from.
HTTP_SOURCE = "webhook"


class RequestTimer:
    """ASGI middleware: observes each HTTP request's latency by route template, method and status."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label so scanners can't blow up the metric's cardinality.
            path = getattr(route, "path", None) or "unmatched"
            self.histogram.labels(path, scope["method"], str(status)).observe(time.perf_counter() - began)


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) a declared or streamed size above `limit` without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise Refusal(400, "bad_request", "invalid Content-Length header") from None
        if size > limit:
            raise Refusal(
                413, "too_large", f"request body of {size} bytes is over the {limit}-byte limit; send smaller batches"
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refusal(413, "too_large", f"request body is over the {limit}-byte limit; send smaller batches")
    return bytes(body)


def _load_sources_config(settings: IngestSettings) -> EcouteConfig | None:
    path = settings.config
    if not path.exists():
        logger.info("no config file at %s: no sources to run", path)
        return None
    return load_config(path)  # a broken config is fatal, with the file and setting named


def create_app(
    settings: IngestSettings,
    producer: IngestProducer | None = None,
    registry: CollectorRegistry | None = None,
    config: EcouteConfig | None = None,
) -> FastAPI:
    """Build the ingest app. An injected `producer` brings its own metrics (and registry) and is not stopped
    by the app; otherwise one is built on `registry` (a fresh one by default). `config` defaults to the
    file at `settings.config`, read at start-up when `settings.ingest_sources` is on."""
    if producer is not None:
        metrics: IngestMetrics = producer.metrics
        if registry is not None and registry is not metrics.registry:
            raise ValueError("an injected producer carries its own metrics registry; pass one or the other")
    else:
        metrics = build_metrics(registry if registry is not None else CollectorRegistry())
    link = producer if producer is not None else IngestProducer(settings, metrics)
    owns_link = producer is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logger.info("ingest starting: Kafka %s, topic %s", settings.bootstrap, link.topics.mentions_raw)
        await link.start()
        sources: SourceRunner | None = None
        if settings.ingest_sources:
            try:
                listening = config if config is not None else _load_sources_config(settings)
                if listening is not None:
                    sources = SourceRunner(listening, link, metrics, settings)
            except ConfigError:
                if owns_link:
                    await link.stop()
                raise
            if sources is not None:
                await sources.start()
        app.state.sources = sources
        try:
            yield
        finally:
            if sources is not None:
                logger.info("stopping %d background sources", sources.running)
                await sources.stop()
            if owns_link:
                await link.stop()
            logger.info("ingest stopped")

    app = FastAPI(title="Écoute ingest", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.producer = link
    app.add_middleware(RequestTimer, histogram=metrics.request_seconds)

    @app.exception_handler(Refusal)
    async def refused(request: Request, exc: Refusal) -> JSONResponse:
        content: dict[str, Any] = {"detail": exc.detail}
        if exc.errors:
            content["errors"] = [{"index": e.index, "field": e.field, "message": e.message} for e in exc.errors]
        return JSONResponse(content, status_code=exc.status)

    @app.exception_handler(KafkaUnavailable)
    async def unavailable(request: Request, exc: KafkaUnavailable) -> JSONResponse:
        metrics.unavailable.inc()
        return JSONResponse(
            {
                "detail": f"Kafka is unavailable ({exc}); nothing of this request is guaranteed stored: "
                f"retry the same request after {settings.retry_after}s",
                "retry_after": settings.retry_after,
            },
            status_code=503,
            headers={"Retry-After": str(settings.retry_after)},
        )

    async def read_items(request: Request, what: str) -> tuple[list[Any], bool]:
        try:
            body = await read_capped(request, settings.max_body_bytes)
            return parse_body(body, settings.max_batch, what)
        except Refusal as exc:
            if what == "mentions":
                metrics.refused.labels(HTTP_SOURCE, exc.reason).inc()
            raise

    @app.post("/v1/mentions", status_code=202)
    async def post_mentions(request: Request) -> JSONResponse:
        """One mention/1 object or an array of them; 202 once Kafka acknowledged them all."""
        items, is_array = await read_items(request, "mentions")
        labels = [source_label(item, HTTP_SOURCE) for item in items]
        for label in labels:
            metrics.received.labels(label).inc()
        try:
            mentions = validate_mentions(items, is_array)
        except Refusal as exc:
            for index, label in enumerate(labels):
                metrics.refused.labels(label, "invalid" if index in exc.bad_items else "batch_invalid").inc()
            raise
        records = [(m.id.encode(), dump(m)) for m in mentions]
        try:
            await link.produce(link.topics.mentions_raw, records)
        except KafkaUnavailable:
            for label in labels:
                metrics.refused.labels(label, "unavailable").inc()
            raise
        return JSONResponse({"accepted": len(records)}, status_code=202)

    @app.post("/v1/metrics", status_code=202)
    async def post_account_metrics(request: Request) -> JSONResponse:
        """Account metrics ({brand, platform, metric, value, at}) onto metrics.accounts, keyed brand|platform|metric."""
        items, is_array = await read_items(request, "account metrics")
        readings = validate_items(AccountMetric, items, is_array)
        records = [(r.key.encode(), dump(r)) for r in readings]
        await link.produce(link.topics.metrics_accounts, records)
        return JSONResponse({"accepted": len(records)}, status_code=202)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """200 when Kafka answers; 503 (still serving, answering 503 to posts) while it does not."""
        kafka = await link.healthy()
        body: dict[str, Any] = {
            "status": "ok" if kafka else "unavailable",
            "kafka": kafka,
            "bootstrap": settings.bootstrap,
            "topic": link.topics.mentions_raw,
        }
        if not kafka and link.last_error:
            body["error"] = link.last_error
        runner: SourceRunner | None = getattr(app.state, "sources", None)
        if runner is not None:
            # Per polled source: state, last success, last error, failures in a row (informational: a failing
            # source does not make ingest unhealthy).
            body["sources"] = runner.status()
        return JSONResponse(body, status_code=200 if kafka else 503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
