"""The API's HTTP surface: brands, rolling KPIs, recent mentions, alerts (list and SSE), health, metrics.

`create_app` wires the pure views to the Kafka consumer (started and stopped in the lifespan) and to
FastAPI routes. Responses are Pydantic models, which FastAPI serialises straight to JSON bytes.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, Header, HTTPException, Query, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import Alert, ScoredMention, load_config, utc_now
from services.api.consumer import ViewConsumer
from services.api.fanout import AlertFanout
from services.api.metrics import ApiMetrics
from services.api.settings import ApiSettings
from services.api.views import RollingKpi, RollingWindow, Views

logger = logging.getLogger(__name__)

MAX_LIMIT = 500
SentimentFilter = Literal["positive", "neutral", "negative", "unscored"]


class BrandSummary(BaseModel):
    brand: str
    configured: bool = Field(description="named in the configuration file (otherwise only seen in the data)")
    kpis: RollingKpi = Field(description="totals of the last hour")


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    waiting_for: list[str] = Field(description="what the views still wait for before they answer")
    views: dict[str, int] = Field(description="how much each view holds")


class LatencyMiddleware:
    """Observes every HTTP answer in `ecoute_api_request_seconds`, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # The router stores the matched route in the (shared) scope; its path is the template.
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            self.metrics.request_seconds.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )


def configured_brands(settings: ApiSettings) -> list[str]:
    """Brands named in the YAML configuration, if the file exists (a broken file is an error)."""
    if not settings.config.exists():
        logger.info("no configuration file at %s: brands come from the data only", settings.config)
        return []
    return list(load_config(settings.config).brands)


def create_app(
    settings: ApiSettings,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> FastAPI:
    """Build the API; Kafka is only touched once the app's lifespan starts."""
    metrics = ApiMetrics(registry if registry is not None else CollectorRegistry())
    views = Views(
        configured_brands=configured_brands(settings),
        mentions_per_brand=settings.mentions_per_brand,
        alerts_kept=settings.alerts_kept,
        retention=timedelta(hours=settings.kpi_retention_hours),
    )
    fanout = AlertFanout(settings.sse_queue_size, on_change=metrics.sse_clients.set, on_drop=metrics.sse_dropped.inc)
    consumer = ViewConsumer(settings, views, metrics, fanout, clock=clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await consumer.start()
        logger.info("API views reading from Kafka at %s", settings.bootstrap)
        try:
            yield
        finally:
            fanout.close()
            await consumer.stop()

    app = FastAPI(
        title="Écoute API",
        version="1",
        summary="Rolling KPIs, recent mentions and alerts of the brands Écoute listens to.",
        lifespan=lifespan,
    )
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.state.settings = settings
    app.state.views = views
    app.state.consumer = consumer
    app.state.fanout = fanout
    app.state.metrics = metrics

    not_found: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "unknown brand"}}

    def known_brand(brand: str) -> str:
        if not views.has_brand(brand):
            raise HTTPException(status_code=404, detail=f"unknown brand '{brand}'")
        return brand

    @app.get("/v1/brands", tags=["brands"])
    async def list_brands() -> list[BrandSummary]:
        """Every brand (configured or seen in the data) with its totals of the last hour."""
        now = clock()
        return [
            BrandSummary(brand=brand, configured=views.is_configured(brand), kpis=views.kpis(brand, "1h", now))
            for brand in views.brands()
        ]

    @app.get("/v1/brands/{brand}/kpis", tags=["brands"], responses=not_found)
    async def brand_kpis(brand: str, window: RollingWindow = "1h") -> RollingKpi:
        """Rolling totals over the last 1m, 5m, 1h or 24h (the current minute included)."""
        return views.kpis(known_brand(brand), window, clock())

    @app.get("/v1/brands/{brand}/mentions", tags=["brands"], responses=not_found)
    async def brand_mentions(
        brand: str,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        sentiment: SentimentFilter | None = None,
    ) -> list[ScoredMention]:
        """The brand's most recent scored mentions, newest first."""
        return views.mentions(known_brand(brand), limit, sentiment)

    @app.get("/v1/alerts", tags=["alerts"], responses=not_found)
    async def list_alerts(
        brand: str | None = None, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100
    ) -> list[Alert]:
        """Alerts, newest first, optionally of one brand."""
        return views.alerts(known_brand(brand) if brand is not None else None, limit)

    @app.get(
        "/v1/alerts/stream",
        tags=["alerts"],
        response_class=EventSourceResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "`alert` events, `id` = alert id"},
            **not_found,
        },
    )
    async def alert_stream(
        brand: str | None = None,
        last_event_id: Annotated[str | None, Header(description="resume after this alert id")] = None,
    ) -> EventSourceResponse:
        """New alerts as Server-Sent Events (event `alert`, data = alert/1 JSON), with heartbeats."""
        if brand is not None:
            known_brand(brand)
        subscription = fanout.subscribe(brand)

        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                replayed: set[str] = set()
                if last_event_id:
                    for alert in views.alerts_after(last_event_id, brand):
                        replayed.add(alert.id)
                        yield _alert_event(alert)
                while True:
                    next_alert = await subscription.next()
                    if next_alert is None:
                        return  # dropped as too slow, or shutting down: the client reconnects
                    if next_alert.id not in replayed:
                        yield _alert_event(next_alert)
            finally:
                fanout.unsubscribe(subscription)

        return EventSourceResponse(events(), ping=settings.sse_ping_seconds, headers={"X-Accel-Buffering": "no"})

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Health:
        """The process is alive."""
        return Health()

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={503: {"model": Readiness, "description": "views still catching up"}},
    )
    async def readyz(response: Response) -> Readiness:
        """200 once the views have read every partition up to its end offset at start, else 503."""
        if not consumer.ready:
            response.status_code = 503
        return Readiness(ready=consumer.ready, waiting_for=consumer.waiting_for(), views=views.sizes())

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(_index_page(views.brands()))

    return app


def _alert_event(alert: Alert) -> ServerSentEvent:
    # Same JSON as GET /v1/alerts gives (pydantic's serialiser), so clients parse one format.
    return ServerSentEvent(data=alert.model_dump_json(by_alias=True), event="alert", id=alert.id)


def _index_page(brands: list[str]) -> str:
    """A placeholder home page linking the endpoints (the live page replaces it)."""
    links = [
        ("/v1/brands", "brands with their last-hour totals"),
        ("/v1/alerts", "recent alerts"),
        ("/v1/alerts/stream", "live alerts (Server-Sent Events)"),
        ("/docs", "interactive API documentation"),
        ("/healthz", "liveness"),
        ("/readyz", "readiness"),
        ("/metrics", "Prometheus metrics"),
    ]
    for brand in brands[:20]:
        path = f"/v1/brands/{quote(brand, safe='')}"
        links.append((f"{path}/kpis?window=1h", f"{brand}: KPIs of the last hour"))
        links.append((f"{path}/mentions", f"{brand}: recent mentions"))
    items = "\n".join(
        f'    <li><a href="{html.escape(href)}">{html.escape(href)}</a> — {html.escape(text)}</li>'
        for href, text in links
    )
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Écoute</title></head>
<body>
  <h1>Écoute</h1>
  <p>Listening to {len(brands)} brand(s).</p>
  <ul>
{items}
  </ul>
</body>
</html>
"""
