"""`GET /v1/brands/{brand}/report`: a brand's period report from the history store, per day, week or month, with
the change against the previous period; JSON, or CSV with one row per bucket.

An APIRouter mounted by create_app behind the API keys. It reads from the app: `app.state.history` (the pool,
see history.py), `app.state.brand_guard` (404 for a brand the caller may not see), `app.state.competitors`
(brand → its configured competitors), `app.state.views` (brands known live) and `app.state.clock`. The numbers
are computed by schemas/history/report.py, which the weekly digest uses too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from schemas import utc_now
from schemas.history.report import MAX_BUCKETS, Report, ReportBucket, ReportRangeError, brand_report, bucket_header
from schemas.history.report import bucket_rows as report_rows
from services.api.csvexport import CSV_RESPONSE_DOC, csv_response
from services.api.history import RETRY_AFTER_SECONDS, STORE_ERRORS, HistoryDep, store_unavailable

logger = logging.getLogger(__name__)

DEFAULT_PERIOD = timedelta(days=30)
# What a client waits before asking again when the database is away (the pool reconnects by itself).
MAX_TOP_MENTIONS = 50
MAX_ALERTS = 200

router = APIRouter(tags=["history"])

BrandGuard = Callable[[Request, str], None]


def _problem(parameter: str, message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming the query parameter."""
    return HTTPException(422, detail=[{"loc": ["query", parameter], "msg": message, "type": "value_error"}])


def _competitors(request: Request, brand: str) -> list[str]:
    configured: Mapping[str, Sequence[str]] = getattr(request.app.state, "competitors", None) or {}
    return list(configured.get(brand, ()))


def _known_live(request: Request, brand: str) -> bool:
    configured: Mapping[str, Sequence[str]] = getattr(request.app.state, "competitors", None) or {}
    views = getattr(request.app.state, "views", None)
    return brand in configured or (views is not None and bool(views.has_brand(brand)))


@router.get(
    "/v1/brands/{brand}/report",
    response_model=Report,
    responses={
        200: {"content": CSV_RESPONSE_DOC, "description": "the report (JSON), or one CSV row per bucket"},
        404: {"description": "unknown brand, or one this key may not see"},
        422: {"description": "bad parameters (named in `loc`): since not before until, too many buckets…"},
        503: {"description": "no history store configured, or the database cannot be reached (Retry-After)"},
    },
)
async def brand_report_route(
    request: Request,
    history: HistoryDep,
    brand: Annotated[str, Path(description="brand name", examples=["acme"])],
    since: Annotated[
        datetime | None, Query(description="RFC 3339 (UTC if no offset); default: 30 days before `until`")
    ] = None,
    until: Annotated[datetime | None, Query(description="RFC 3339, exclusive; default: now")] = None,
    bucket: Annotated[ReportBucket, Query(description="UTC days, ISO weeks (from Monday) or months")] = "day",
    output: Annotated[Literal["json", "csv"], Query(alias="format", description="json, or csv (a row per bucket)")] = (
        "json"
    ),
    top_mentions: Annotated[
        int, Query(ge=0, le=MAX_TOP_MENTIONS, description="include this many top mentions (by engagement)")
    ] = 0,
    alerts: Annotated[int, Query(ge=0, le=MAX_ALERTS, description="include up to this many alerts of the period")] = 0,
) -> Any:
    """Volume, sentiment split and average, engagement, reach, unique authors, share of voice, love index and
    account metrics per bucket and over the period, with the change against the period of the same length just
    before it. At most 1,000 buckets."""
    guard: BrandGuard | None = getattr(request.app.state, "brand_guard", None)
    if guard is not None:
        guard(request, brand)
    clock: Callable[[], datetime] = getattr(request.app.state, "clock", None) or utc_now
    until = _as_utc(until, "until") if until is not None else clock()
    since = _as_utc(since, "since") if since is not None else _before(until, DEFAULT_PERIOD)
    assert history.pool is not None  # HistoryDep answered 503 otherwise
    try:
        async with history.pool.connection() as conn:
            if not _known_live(request, brand):
                cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM mentions WHERE brand = %s)", (brand,))
                row = await cur.fetchone()
                if row is None or not row[0]:
                    raise HTTPException(404, detail=f"unknown brand '{brand}'")
            report = await brand_report(
                conn,
                brand,
                _competitors(request, brand),
                since,
                until,
                bucket,
                top_mentions=top_mentions,
                alerts=alerts,
                max_buckets=MAX_BUCKETS,
            )
    except ReportRangeError as exc:
        raise _problem(exc.parameter, str(exc)) from exc
    except STORE_ERRORS as exc:
        raise store_unavailable(exc) from exc
    if output == "csv":
        name = f"{brand}-report-{bucket}-{report.since:%Y%m%d}-{report.until:%Y%m%d}.csv"
        return csv_response(name, bucket_header(report), report_rows(report))
    return Response(report.model_dump_json(), media_type="application/json")


def _as_utc(moment: datetime, parameter: str) -> datetime:
    """A time without an offset is taken as UTC."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError as exc:
        raise _problem(parameter, f"{parameter} is out of the calendar's range") from exc


def _before(until: datetime, length: timedelta) -> datetime:
    try:
        return until - length
    except OverflowError as exc:
        raise _problem("until", "until is too early for the default period (30 days before it)") from exc


__all__ = ["DEFAULT_PERIOD", "RETRY_AFTER_SECONDS", "router"]
