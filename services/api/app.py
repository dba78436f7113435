"""The API's HTTP surface: brands, rolling KPIs, mentions, the inbox, alerts (list, SSE, ack), webhook
deliveries, health, metrics.

`create_app` wires the pure views to the Kafka consumer, the action writer and the webhook dispatcher (all
started and stopped in the lifespan) and to FastAPI routes. Every `/v1` route needs an API key once one is
configured (see `auth.py`); `/healthz`, `/readyz`, `/metrics`, `/` and `/static` stay open.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import (
    Alert,
    AlertAck,
    DeliveryStatus,
    EcouteConfig,
    MentionHandled,
    ScoredMention,
    Topics,
    WebhookDelivery,
    load_config,
    utc_now,
)
from schemas.models import Note, Who
from services.api import history_report
from services.api.auth import (
    OPEN_ACCESS,
    AccessGuard,
    KeyRing,
    Principal,
    RateLimiter,
    brand_not_found,
    current_principal,
    principal_of,
    require_admin,
    stream_principal,
)
from services.api.consumer import (
    ActionsUnavailable,
    ActionWriter,
    RecordSink,
    ViewConsumer,
    ensure_own_topics,
)
from services.api.content import router as content_router
from services.api.content_views import TOPIC_CONTENT_ITEMS, ContentViews
from services.api.csvexport import ALERT_COLUMNS, alert_row, csv_response, with_csv
from services.api.engage import Engagement
from services.api.engage import router as engage_router
from services.api.fanout import AlertFanout
from services.api.gcpolicy import FreezeSurvivors, GcPauses
from services.api.history import History
from services.api.history_search import router as history_search_router
from services.api.hotpath import KpisHotPath
from services.api.links_views import LinkViews
from services.api.metrics import ApiMetrics
from services.api.settings import ApiSettings
from services.api.views import AlertView, Inbox, InboxItem, ResponseTime, RollingKpi, RollingWindow, Views
from services.api.warmstart import WarmStart
from services.api.webhooks import (
    DeliveryLog,
    DispatcherMetrics,
    RetryPolicy,
    WebhookDispatcher,
    WebhookSender,
    check_webhooks,
    parse_networks,
)

logger = logging.getLogger(__name__)

MAX_LIMIT = 500
STATIC_DIR = Path(__file__).parent / "static"
SentimentFilter = Literal["positive", "neutral", "negative", "unscored"]
Caller = Annotated[Principal, Depends(current_principal)]
BrandName = Annotated[str, PathParam(description="brand name", examples=["acme"])]
AlertId = Annotated[str, PathParam(description="alert id", examples=["acme-volume_spike-20250314T1230"])]
MentionId = Annotated[str, PathParam(description="mention id (may contain ':' and '/')", examples=["reddit:t1_abc"])]


# ---------------------------------------------------------------------------------------------- models


class BrandSummary(BaseModel):
    brand: str
    configured: bool = Field(description="named in the configuration file (otherwise only seen in the data)")
    kpis: RollingKpi = Field(description="totals of the last hour")


class ErrorBody(BaseModel):
    detail: str


class ValidationProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    detail: list[ValidationProblem]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    waiting_for: list[str] = Field(description="what the views still wait for before they answer")
    views: dict[str, int] = Field(description="how much each view holds")


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Who | None = None
    note: Note | None = None


class HandledRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    brand: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    by: Who | None = None
    note: Note | None = None


class HandledMark(BaseModel):
    """A mention marked handled: when, by whom, and how long after it was published."""

    brand: str
    mention_id: str
    handled: Literal[True] = True
    handled_at: datetime
    handled_by: str | None = None
    note: str | None = None
    published_at: datetime | None = None
    response_seconds: float | None = Field(None, description="handled_at - published_at")


class DeliveryView(BaseModel):
    """The state of one alert's delivery to one webhook."""

    id: str = Field(description="`<alert id>|<webhook id>`")
    alert_id: str
    brand: str
    kind: str
    webhook: str = Field(description="webhook id (a digest of format and URL)")
    target: str = Field(description="scheme and host of the webhook URL")
    format: Literal["json", "slack"]
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    alert_created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None = None


# ---------------------------------------------------------------------------------------------- OpenAPI examples

_T0 = datetime(2025, 3, 14, 12, 34, tzinfo=UTC)
_EXAMPLE_ALERT = Alert.model_validate(
    {
        "id": "acme-volume_spike-20250314T1230",
        "brand": "acme",
        "kind": "volume_spike",
        "severity": "warning",
        "window": {"start": _T0 - timedelta(minutes=5), "end": _T0},
        "observed": 64,
        "baseline": 4.2,
        "threshold": 11.9,
        "message": "acme: 64 mentions in 5 min, usually 4.2",
        "evidence": {
            "terms": ["battery"],
            "topics": ["product"],
            "authors": ["@jane"],
            "sample_mentions": ["https://example.org/post/1"],
        },
        "created_at": _T0,
    }
)
_EXAMPLE_MENTION = ScoredMention.model_validate(
    {
        "id": "reddit:t1_abc",
        "source": "reddit",
        "url": "https://www.reddit.com/r/phones/comments/abc",
        "site": "reddit.com/r/phones",
        "published_at": _T0 - timedelta(minutes=3),
        "author": {"id": "t2_jane", "handle": "jane", "followers": 5400},
        "text": "Does anyone know why my acme phone battery dies so fast?",
        "lang": "en",
        "brand": "acme",
        "sentiment": {"compound": -0.42, "pos": 0.0, "neu": 0.8, "neg": 0.2, "label": "negative"},
        "topics": ["product"],
        "matched": ["acme"],
        "reach": 5400,
    }
)
_EXAMPLE_KPI = RollingKpi(
    brand="acme",
    window="1h",
    start=_T0 - timedelta(minutes=59),
    end=_T0 + timedelta(minutes=1),
    mentions=120,
    positive=50,
    neutral=40,
    negative=30,
    sentiment_sum=9.6,
    sentiment_avg=0.08,
    reach=81_000,
    topics={"pricing": 12},
    sources={"reddit": 80, "rss": 40},
    unique_authors=97,
    updated_at=_T0,
)
_EXAMPLE_RESPONSE_TIME = ResponseTime(brand="acme", count=14, median_seconds=1260.0, p90_seconds=5400.0)
_EXAMPLE_ACKED = AlertView.model_validate(
    {**_EXAMPLE_ALERT.model_dump(by_alias=True), "acked": True, "acked_at": _T0, "acked_by": "jane@acme.example"}
)
_EXAMPLE_INBOX = Inbox(
    brand="acme",
    pending=1,
    items=[
        InboxItem.model_validate({**_EXAMPLE_MENTION.model_dump(by_alias=True), "reasons": ["negative", "question"]})
    ],
    response_time=_EXAMPLE_RESPONSE_TIME,
)
_EXAMPLE_DELIVERY = DeliveryView(
    id="acme-volume_spike-20250314T1230|wh-3f1c2a9b0d4e",
    alert_id="acme-volume_spike-20250314T1230",
    brand="acme",
    kind="volume_spike",
    webhook="wh-3f1c2a9b0d4e",
    target="https://hooks.slack.com/…",
    format="slack",
    status="pending",
    attempts=2,
    last_status_code=503,
    last_error="HTTP 503",
    next_attempt_at=_T0 + timedelta(minutes=1),
    alert_created_at=_T0,
    updated_at=_T0 + timedelta(seconds=30),
)


def _json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


def ok(example: Any, description: str = "OK") -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {"application/json": {"example": _json(example)}}}}


_ERRORS: dict[int, dict[str, Any]] = {
    401: {
        "model": ErrorBody,
        "description": "no API key, or an unknown one",
        "headers": {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
        "content": {"application/json": {"example": {"detail": "invalid API key"}}},
    },
    403: {
        "model": ErrorBody,
        "description": "the key's role is not admin",
        "content": {"application/json": {"example": {"detail": "this endpoint needs an API key with the admin role"}}},
    },
    404: {
        "model": ErrorBody,
        "description": "unknown brand, or one this key may not see",
        "content": {"application/json": {"example": {"detail": "unknown brand 'hooli'"}}},
    },
    422: {
        "model": ValidationErrorBody,
        "description": "a parameter or the body is invalid",
        "content": {
            "application/json": {
                "example": {
                    "detail": [{"loc": ["query", "limit"], "msg": "Input should be >= 1", "type": "greater_than_equal"}]
                }
            }
        },
    },
    429: {
        "model": ErrorBody,
        "description": "this key went over its rate limit",
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
        "content": {
            "application/json": {"example": {"detail": "rate limit of 100 requests/s exceeded for this API key"}}
        },
    },
    503: {
        "model": ErrorBody,
        "description": "Kafka did not take the write; retry",
        "content": {"application/json": {"example": {"detail": "could not record the action in Kafka; retry"}}},
    },
}


def errors(*codes: int, not_found: str | None = None) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route (401 and 429 on every /v1 route)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in (401, 429, *codes):
        entry = dict(_ERRORS[code])
        if code == 404 and not_found is not None:
            entry["description"] = not_found
        out[code] = entry
    return out


# ---------------------------------------------------------------------------------------------- middleware


class LatencyMiddleware:
    """Observes every HTTP answer in `ecoute_api_request_seconds`, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # (route template, method, status) -> its histogram child: `labels()` on every request costs a lock and
        # a lookup; the key space is small (templates, not paths).
        self._observers: dict[tuple[str, str, str], Callable[[float], None]] = {}

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
            key = (route, scope["method"], str(status))
            observe = self._observers.get(key)
            if observe is None:
                observe = self._observers[key] = self.metrics.request_seconds.labels(*key).observe
            observe(time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------- the app


def load_api_config(settings: ApiSettings) -> EcouteConfig:
    """The YAML configuration, if the file exists (a broken file is a ConfigError); else an empty one."""
    if not settings.config.exists():
        logger.info("no configuration file at %s: brands come from the data only", settings.config)
        return EcouteConfig()
    return load_config(settings.config)


def configured_brands(settings: ApiSettings) -> list[str]:
    return list(load_api_config(settings).brands)


@dataclass(frozen=True)
class OptionalInsights:
    router: Any
    views: Any
    sink: RecordSink


def optional_insights(config: EcouteConfig, clock: Callable[[], datetime]) -> OptionalInsights | None:
    """The analytics views and routes (services/api/insights.py, insights_views.py) when that module exists,
    fed by the same consumer as the other views."""
    if importlib.util.find_spec("services.api.insights") is None:
        return None
    insight_views = importlib.import_module("services.api.insights_views")
    routes = importlib.import_module("services.api.insights")
    views = insight_views.Insights.from_config(config, clock=clock)
    # Inbound links (links_views.py) are counted from the same scored mentions, for /love.
    links = LinkViews({name: brand.owned_domains for name, brand in config.brands.items()}, clock=clock)
    views.links = links

    def apply_record(topic: str, key: bytes | None, value: bytes | None, now: datetime) -> object:
        applied = views.apply_record(topic, key, value, now)
        if topic == "mentions.scored" and value is not None:
            links.apply_record(topic, key, value, now)
        return applied

    def apply_mention(mention: ScoredMention, now: datetime) -> object:
        links.apply_scored(mention, now)
        return views.apply_scored(mention, now)

    sink = RecordSink(
        name="insight",
        topics=frozenset({"mentions.scored", "kpi.snapshots", "metrics.accounts"}),
        apply=apply_record,
        evict=lambda now: views.evict(now) + links.evict(now),
        sizes=lambda: {**views.sizes(), **links.sizes()},
        apply_mention=apply_mention,
    )
    return OptionalInsights(routes.router, views, sink)


def create_app(
    settings: ApiSettings,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], datetime] = utc_now,
    kpis_hot_path: bool = True,
) -> FastAPI:
    """Build the API; Kafka is only touched once the app's lifespan starts.

    `kpis_hot_path=False` leaves the KPI route to the framework alone (tests compare both ways' answers)."""
    config = load_api_config(settings)
    metrics = ApiMetrics(registry if registry is not None else CollectorRegistry())
    keyring = KeyRing(config.api_keys)
    access = AccessGuard(
        keyring,
        RateLimiter(settings.api_rate_limit_per_second, settings.api_rate_limit_burst),
        on_unauthorized=lambda reason: metrics.unauthorized.labels(reason).inc(),
        on_rate_limited=metrics.rate_limited.inc,
    )
    allow_networks = parse_networks(config.fetch.allow_networks)
    hooks = check_webhooks(config.webhooks, allow_networks)
    views = Views(
        configured_brands=list(config.brands),
        mentions_per_brand=settings.mentions_per_brand,
        inbox_per_brand=settings.inbox_per_brand,
        alerts_kept=settings.alerts_kept,
        retention=timedelta(hours=settings.kpi_retention_hours),
    )
    deliveries = DeliveryLog(settings.deliveries_kept)
    fanout = AlertFanout(settings.sse_queue_size, on_change=metrics.sse_clients.set, on_drop=metrics.sse_dropped.inc)
    insights = optional_insights(config, clock)
    content = ContentViews(configured_brands=list(config.brands), clock=clock)
    content_sink = RecordSink(
        name="content",
        topics=frozenset({TOPIC_CONTENT_ITEMS}),
        apply=content.apply_record,
        evict=content.evict,
        sizes=content.sizes,
    )
    freezer = FreezeSurvivors() if settings.api_gc_freeze else None
    consumer = ViewConsumer(
        settings,
        views,
        metrics,
        fanout,
        clock=clock,
        deliveries=deliveries,
        sinks=[content_sink, *([insights.sink] if insights is not None else [])],
        on_settled=freezer,
        warm_start=WarmStart.for_views(settings, views),
    )
    writer = ActionWriter(settings)
    engagement = Engagement(config, allow_networks, settings.engage_timeout_seconds, clock)
    consumer.sinks.append(engagement.sink)  # replies and follows live on alerts.actions, which it reads anyway
    history = History(settings.database_url)
    dispatcher: WebhookDispatcher | None = None
    if hooks:
        topics = Topics(settings.topic_prefix)

        async def prepare_deliveries() -> None:
            await ensure_own_topics(settings, [topics.webhooks_deliveries])

        dispatcher = WebhookDispatcher(
            bootstrap=settings.bootstrap,
            idempotence=settings.kafka_idempotence,
            alerts_topic=topics.alerts,
            deliveries_topic=topics.webhooks_deliveries,
            group=f"{settings.topic_prefix}{settings.webhook_group}",
            hooks=hooks,
            sender=WebhookSender(allow_networks, settings.webhook_timeout_seconds),
            policy=RetryPolicy(
                max_attempts=settings.webhook_max_attempts,
                max_age=timedelta(seconds=settings.webhook_max_age_seconds),
                backoff=settings.webhook_backoff_seconds,
                backoff_max=settings.webhook_backoff_max_seconds,
            ),
            concurrency=settings.webhook_concurrency,
            prepare=prepare_deliveries,
            metrics=DispatcherMetrics(
                on_outcome=lambda outcome: metrics.webhook_outcomes.labels(outcome).inc(),
                on_pending=metrics.webhook_pending.set,
            ),
            clock=clock,
        )

    gc_observers = [metrics.gc_pause_seconds.labels(str(generation)).observe for generation in range(3)]
    gc_pauses = GcPauses(lambda generation, seconds: gc_observers[generation](seconds))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not keyring.enabled:
            logger.warning(
                "NO API KEY CONFIGURED: every /v1 endpoint is open to anyone who can reach this port "
                "(development mode). Add api_keys to %s before exposing the API.",
                settings.config,
            )
        else:
            logger.info("API keys required on /v1 (%d configured)", len(keyring))
        gc_pauses.install()
        if freezer is not None:
            freezer.start()
        await history.open()
        await consumer.start()
        if dispatcher is not None:
            await dispatcher.start()
        logger.info("API views reading from Kafka at %s", settings.bootstrap)
        try:
            yield
        finally:
            fanout.close()
            if dispatcher is not None:
                await dispatcher.stop()
            await consumer.stop()
            await writer.stop()
            await engagement.aclose()
            await history.close()
            gc_pauses.remove()
            if freezer is not None:
                freezer.stop()

    app = FastAPI(
        title="Écoute API",
        version="1",
        summary="Rolling KPIs, mentions, the inbox and alerts of the brands Écoute listens to.",
        description=(
            "Every `/v1` endpoint needs `Authorization: Bearer <key>` once `api_keys` are configured "
            "(the SSE stream also takes `?key=`, since EventSource cannot send headers). A brand the key may "
            "not see answers 404 like an unknown one. Each key has a rate limit (429 with Retry-After)."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.views = views
    app.state.consumer = consumer
    app.state.fanout = fanout
    app.state.metrics = metrics
    app.state.access = access
    app.state.writer = writer
    app.state.deliveries = deliveries
    app.state.dispatcher = dispatcher
    app.state.clock = clock
    app.state.history = history
    app.state.engagement = engagement

    v1 = APIRouter(prefix="/v1")

    def brand_guard(request: Request, brand: str) -> None:
        """For routers that get the request: 404 unless the caller (known by current_principal) may see it."""
        principal = principal_of(request) or (OPEN_ACCESS if not keyring.enabled else None)
        if principal is None or not principal.can_see(brand):
            raise brand_not_found(brand)

    def visible_brand(principal: Principal, brand: str) -> str:
        if not principal.can_see(brand) or not views.has_brand(brand):
            raise brand_not_found(brand)
        return brand

    # -- brands ----------------------------------------------------------------------------------

    @v1.get(
        "/brands",
        tags=["brands"],
        responses={
            **ok([BrandSummary(brand="acme", configured=True, kpis=_EXAMPLE_KPI)]),
            **errors(),
        },
    )
    async def list_brands(principal: Caller) -> list[BrandSummary]:
        """Every brand this key may see (configured or seen in the data) with its totals of the last hour."""
        now = clock()
        return [
            BrandSummary(brand=brand, configured=views.is_configured(brand), kpis=views.kpis(brand, "1h", now))
            for brand in principal.visible(views.brands())
        ]

    @v1.get(
        "/brands/{brand}/kpis",
        tags=["brands"],
        response_model=RollingKpi,
        responses={**ok(_EXAMPLE_KPI), **errors(404, 422)},
    )
    async def brand_kpis(principal: Caller, brand: BrandName, window: RollingWindow = "1h") -> Response:
        """Rolling totals over the last 1m, 5m, 1h or 24h (the current minute included)."""
        # The hot path of dashboards: the views keep the answer as JSON until the brand's data changes or the
        # minute rolls over, and it goes out as it is (response_model documents it; nothing re-validates it).
        # KpisHotPath (hotpath.py) answers the usual requests of this route the same way before the framework;
        # this endpoint documents the route and answers the rest.
        body = views.kpis_json(visible_brand(principal, brand), window, clock())
        return Response(body, media_type="application/json")

    @v1.get("/brands/{brand}/mentions", tags=["brands"], responses={**ok([_EXAMPLE_MENTION]), **errors(404, 422)})
    async def brand_mentions(
        principal: Caller,
        brand: BrandName,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        sentiment: SentimentFilter | None = None,
    ) -> list[ScoredMention]:
        """The brand's most recent scored mentions, newest first."""
        return views.mentions(visible_brand(principal, brand), limit, sentiment)

    @v1.get("/brands/{brand}/inbox", tags=["inbox"], responses={**ok(_EXAMPLE_INBOX), **errors(404, 422)})
    async def brand_inbox(
        principal: Caller, brand: BrandName, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50
    ) -> Inbox:
        """Mentions that need an answer (negative ones, and questions in English or French) not handled yet,
        the biggest reach first, then the most recent; with the brand's response time over the last 24 h."""
        return views.inbox(visible_brand(principal, brand), limit, clock())

    @v1.get(
        "/brands/{brand}/response-time",
        tags=["inbox"],
        responses={**ok(_EXAMPLE_RESPONSE_TIME), **errors(404, 422)},
    )
    async def brand_response_time(principal: Caller, brand: BrandName) -> ResponseTime:
        """Time from a mention's publication to its handled mark: median and p90 over the last 24 hours."""
        return views.response_time(visible_brand(principal, brand), clock())

    @v1.post(
        "/mentions/{mention_id:path}/handled",
        tags=["inbox"],
        responses={
            **ok(
                HandledMark(
                    brand="acme",
                    mention_id="reddit:t1_abc",
                    handled_at=_T0 + timedelta(minutes=21),
                    handled_by="jane@acme.example",
                    published_at=_T0,
                    response_seconds=1260.0,
                )
            ),
            **errors(404, 422, 503, not_found="unknown brand or mention"),
        },
    )
    async def mention_handled(principal: Caller, mention_id: MentionId, body: HandledRequest) -> HandledMark:
        """Mark a mention of the brand handled: it leaves the inbox on every replica (kept on a compacted
        topic). Marking it again changes nothing and answers the first mark."""
        brand = visible_brand(principal, body.brand)
        mention = views.find_mention(brand, mention_id)
        if mention is None:
            raise HTTPException(status_code=404, detail=f"unknown mention '{mention_id}' of brand '{brand}'")
        mark = views.handled(brand, mention_id)
        if mark is None:
            mark = MentionHandled(
                mention_id=mention_id,
                brand=brand,
                by=body.by,
                note=body.note,
                at=clock(),
                published_at=mention.published_at,
            )
            await _write(mark)
            metrics.actions.labels("handled").inc()
        return HandledMark(
            brand=mark.brand,
            mention_id=mark.mention_id,
            handled_at=mark.at,
            handled_by=mark.by,
            note=mark.note,
            published_at=mark.published_at,
            response_seconds=(mark.at - mark.published_at).total_seconds() if mark.published_at else None,
        )

    async def _write(action: AlertAck | MentionHandled) -> None:
        try:
            await writer.write(action)
        except ActionsUnavailable as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        views.apply_action(action)  # read-your-writes here; the other replicas apply it when they read it back

    # -- alerts ----------------------------------------------------------------------------------

    @v1.get(
        "/alerts",
        tags=["alerts"],
        response_model=list[AlertView],
        responses=with_csv({**ok([_EXAMPLE_ACKED]), **errors(404, 422)}),
    )
    async def list_alerts(
        principal: Caller,
        brand: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        format: Literal["json", "csv"] = "json",
    ) -> Any:
        """Alerts of the brands this key may see, newest first, optionally of one brand, with their acks
        (`format=csv`: the same alerts as a spreadsheet)."""
        if brand is not None:
            visible_brand(principal, brand)
        found = [views.alert_view(a) for a in views.alerts(brand, limit, visible=principal.brands)]
        if format == "csv":
            return csv_response(f"{brand or 'all'}-alerts.csv", ALERT_COLUMNS, [alert_row(a) for a in found])
        return found

    @v1.post(
        "/alerts/{alert_id}/ack",
        tags=["alerts"],
        responses={**ok(_EXAMPLE_ACKED), **errors(404, 422, 503, not_found="unknown alert")},
    )
    async def ack_alert(
        principal: Caller, alert_id: AlertId, body: Annotated[AckRequest | None, Body()] = None
    ) -> AlertView:
        """Acknowledge an alert (optionally saying who and a note); every replica shows it acked. Acking an
        acked alert changes nothing and answers the first ack."""
        alert = views.alert(alert_id)
        if alert is None or not principal.can_see(alert.brand):
            raise HTTPException(status_code=404, detail=f"unknown alert '{alert_id}'")
        if views.ack(alert_id) is None:
            request = body or AckRequest()
            await _write(AlertAck(alert_id=alert.id, brand=alert.brand, by=request.by, note=request.note, at=clock()))
            metrics.actions.labels("ack").inc()
        return views.alert_view(alert)

    @v1.get(
        "/alerts/stream",
        tags=["alerts"],
        response_class=EventSourceResponse,
        responses={
            200: {
                "content": {
                    "text/event-stream": {
                        "schema": {"type": "string"},
                        "example": 'event: alert\nid: acme-volume_spike-1230\ndata: {"schema":"alert/1",…}\n\n',
                    }
                },
                "description": "`alert` events (`id` = alert id, data = alert/1 JSON) and `: ping` heartbeats",
            },
            **errors(404, 422),
        },
    )
    async def alert_stream(
        principal: Annotated[Principal, Depends(stream_principal)],
        brand: str | None = None,
        last_event_id: Annotated[str | None, Header(description="resume after this alert id")] = None,
    ) -> EventSourceResponse:
        """New alerts of the brands this key may see, as Server-Sent Events, with heartbeats. Browsers'
        EventSource cannot set headers: pass the key as `?key=` instead of `Authorization`."""
        if brand is not None:
            visible_brand(principal, brand)
        subscription = fanout.subscribe(brand)

        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                replayed: set[str] = set()
                if last_event_id:
                    for alert in views.alerts_after(last_event_id, brand, visible=principal.brands):
                        replayed.add(alert.id)
                        yield _alert_event(alert)
                while True:
                    next_alert = await subscription.next()
                    if next_alert is None:
                        return  # dropped as too slow, or shutting down: the client reconnects
                    if next_alert.id not in replayed and principal.can_see(next_alert.brand):
                        yield _alert_event(next_alert)
            finally:
                fanout.unsubscribe(subscription)

        return EventSourceResponse(events(), ping=settings.sse_ping_seconds, headers={"X-Accel-Buffering": "no"})

    # -- webhooks --------------------------------------------------------------------------------

    @v1.get(
        "/webhooks/deliveries",
        tags=["webhooks"],
        responses={**ok([_EXAMPLE_DELIVERY]), **errors(403, 422)},
    )
    async def webhook_deliveries(
        principal: Annotated[Principal, Depends(require_admin)],
        status: DeliveryStatus | None = None,
        brand: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> list[DeliveryView]:
        """Webhook deliveries of the brands this (admin) key may see, most recently updated first."""
        found = deliveries.query(visible=principal.brands, status=status, brand=brand, limit=limit)
        return [_delivery_view(d) for d in found]

    app.include_router(v1)

    # -- analytics endpoints (services/api/insights.py, another engineer's router) behind the same keys -------
    app.state.brand_guard = brand_guard
    if insights is not None:
        app.state.insights = insights.views
        app.include_router(insights.router, dependencies=[Depends(current_principal)], responses=errors())

    # -- the brand's own posts (content.py), behind the same keys --------------------------------------------
    app.state.content = content
    app.include_router(content_router, dependencies=[Depends(current_principal)], responses=errors())

    # -- history reports (history_report.py): the brand's competitors are its share-of-voice group ----------
    app.state.competitors = {name: list(brand.competitors) for name, brand in config.brands.items()}
    app.include_router(history_report.router, dependencies=[Depends(current_principal)], responses=errors())

    # -- history search (history_search.py) behind the same keys --------------------------------------------
    app.include_router(history_search_router, dependencies=[Depends(current_principal)], responses=errors())

    # -- replies and follows with the brands' accounts (engage.py; its POST routes need the responder role) ----
    app.include_router(engage_router, dependencies=[Depends(current_principal)], responses=errors())

    # -- operations (open) -----------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"], responses=ok(Health()))
    async def healthz() -> Health:
        """The process is alive."""
        return Health()

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={
            **ok(Readiness(ready=True, waiting_for=[], views={"brands": 2, "alerts": 3})),
            503: {
                "model": Readiness,
                "description": "views still catching up",
                "content": {
                    "application/json": {
                        "example": _json(
                            Readiness(ready=False, waiting_for=["alerts[0] at offset 10 of 42"], views={"alerts": 10})
                        )
                    }
                },
            },
        },
    )
    async def readyz(response: Response) -> Readiness:
        """200 once the views have read every partition up to its end offset at start, else 503."""
        if not consumer.ready:
            response.status_code = 503
        return Readiness(ready=consumer.ready, waiting_for=consumer.waiting_for(), views=consumer.sizes())

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition",
                "content": {"text/plain": {"schema": {"type": "string"}, "example": "ecoute_api_sse_clients 0.0\n"}},
            }
        },
    )
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False, response_model=None)
    async def index() -> HTMLResponse | FileResponse:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return HTMLResponse(_index_page(views.brands()))

    # Middlewares, innermost first: the KPI hot path stands in for its route, inside the latency histogram.
    if kpis_hot_path:
        kpis_route = next(r for r in v1.routes if isinstance(r, APIRoute) and r.endpoint is brand_kpis)
        app.add_middleware(KpisHotPath, views=views, access=access, clock=clock, route=kpis_route)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app


def _alert_event(alert: Alert) -> ServerSentEvent:
    # Same JSON as the alerts topic (alert/1, pydantic's serialiser), so clients parse one format.
    return ServerSentEvent(data=alert.model_dump_json(by_alias=True), event="alert", id=alert.id)


def _delivery_view(delivery: WebhookDelivery) -> DeliveryView:
    return DeliveryView.model_validate(delivery.model_dump(exclude={"alert", "schema_", "partition"}))


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
        links.append((f"{path}/inbox", f"{brand}: mentions that need an answer"))
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
