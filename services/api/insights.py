"""HTTP routes of the insight views: time series, influence relays, sources, share of voice, love KPIs, trends.

A FastAPI APIRouter, mounted with `app.include_router(router)`. It reads its state from the app:
`app.state.insights` (an `Insights`, fed by the view consumer) and, when present, `app.state.brand_guard`
(a callable `(request, brand) -> None` raising HTTPException 404 when the caller may not see the brand).
Whatever the guard says, a brand nobody knows (neither `app.state.views` nor the insights) is a 404.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel

from services.api.insights_views import (
    MAX_POINTS,
    Insights,
    InsightWindow,
    LoveKpis,
    SeriesBucket,
    ShareOfVoice,
    TimeSeries,
    TopAuthors,
    TopSources,
    Trends,
)

MAX_LIMIT = 100

BrandGuard = Callable[[Request, str], None]


class InsightError(BaseModel):
    detail: str


router = APIRouter(tags=["insights"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": InsightError, "description": "unknown brand"}}


def get_insights(request: Request) -> Insights:
    """The app's insight views (`app.state.insights`)."""
    insights = getattr(request.app.state, "insights", None)
    if not isinstance(insights, Insights):
        raise RuntimeError("app.state.insights is not set: create_app must create an Insights and feed it")
    return insights


def check_brand(request: Request, brand: str) -> str:
    """404 unless the caller may see `brand` (app.state.brand_guard) and the brand is known."""
    guard: BrandGuard | None = getattr(request.app.state, "brand_guard", None)
    if guard is not None:
        guard(request, brand)
    views = getattr(request.app.state, "views", None)
    known = get_insights(request).has_brand(brand) or (views is not None and views.has_brand(brand))
    if not known:
        raise HTTPException(status_code=404, detail=f"unknown brand '{brand}'")
    return brand


def visible_brand(request: Request, brand: Annotated[str, Path(description="brand name")]) -> str:
    """The brand of the path, once the caller is allowed to see it (a dependency of every brand route)."""
    return check_brand(request, brand)


InsightsDep = Annotated[Insights, Depends(get_insights)]
BrandDep = Annotated[str, Depends(visible_brand)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="how many entries at most")]


@router.get(
    "/v1/brands/{brand}/timeseries",
    responses={**_NOT_FOUND, 422: {"description": "bad parameters, or more than 1,500 points asked for"}},
)
async def brand_timeseries(
    brand: BrandDep,
    insights: InsightsDep,
    bucket: SeriesBucket = "1m",
    since: Annotated[
        datetime | None,
        Query(description="RFC 3339; default: 1 h before `until` for 1m buckets, 24 h for 1h buckets"),
    ] = None,
    until: Annotated[
        datetime | None, Query(description="RFC 3339, exclusive; default: end of the current bucket")
    ] = None,
) -> TimeSeries:
    """Points for charts from the kpi/1 snapshots, one per bucket (zeros where nothing was counted).

    At most 1,500 points per request (25 h of minutes, 62 days of hours); 1m points are kept 25 h,
    1h points 31 days.
    """
    try:
        return insights.timeseries(brand, bucket, since, until, insights.clock())
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


@router.get("/v1/brands/{brand}/authors", responses=_NOT_FOUND)
async def brand_authors(
    brand: BrandDep, insights: InsightsDep, window: InsightWindow = "24h", limit: Limit = 20
) -> TopAuthors:
    """Influence relays: the authors who spread the brand most in the window, by reach + 10 × engagement."""
    return insights.authors(brand, window, limit, insights.clock())


@router.get("/v1/brands/{brand}/sources", responses=_NOT_FOUND)
async def brand_sources(
    brand: BrandDep, insights: InsightsDep, window: InsightWindow = "24h", limit: Limit = 20
) -> TopSources:
    """Top sites (domain or community) and source types in the window, by mentions."""
    return insights.sources(brand, window, limit, insights.clock())


@router.get("/v1/brands/{brand}/love", responses=_NOT_FOUND)
async def brand_love(brand: BrandDep, insights: InsightsDep) -> LoveKpis:
    """Love KPIs: audience readings with their 1- and 7-day changes, the last day's engagement, the love index."""
    return insights.love(brand, insights.clock())


@router.get("/v1/brands/{brand}/trends", responses=_NOT_FOUND)
async def brand_trends(brand: BrandDep, insights: InsightsDep, limit: Limit = 20) -> Trends:
    """Emerging terms: those whose frequency in the last hour rose most against the 24 h before."""
    return insights.trends(brand, limit, insights.clock())


@router.get("/v1/share-of-voice", responses=_NOT_FOUND)
async def share_of_voice(
    request: Request,
    insights: InsightsDep,
    window: InsightWindow = "24h",
    brand: Annotated[str | None, Query(description="only this brand's competitor group")] = None,
) -> ShareOfVoice:
    """Each brand's share of its competitor group's mentions (and positive mentions) in the window.

    Without `brand`: the group of every configured brand the caller may see.
    """
    now = insights.clock()
    if brand is not None:
        return insights.share_of_voice(window, [check_brand(request, brand)], now)
    owners = []
    for group in insights.voice_groups():
        try:
            owners.append(check_brand(request, group[0]))
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
    return insights.share_of_voice(window, owners, now)


__all__ = ["MAX_POINTS", "check_brand", "get_insights", "router", "visible_brand"]
