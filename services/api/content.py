"""`GET /v1/brands/{brand}/content`: the brand's own posts ranked by their reactions (content_views.py).

Mounted by create_app behind the API keys; reads `app.state.content` (a ContentViews fed by the view consumer)
and `app.state.brand_guard` (404 for a brand the caller may not see).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from schemas.models import ContentPlatform
from services.api.content_views import ContentRanking, ContentSort, ContentViews

MAX_LIMIT = 100

router = APIRouter(tags=["content"])


_RESPONSES: dict[int | str, dict[str, Any]] = {404: {"description": "unknown brand"}}


def _content(request: Request) -> ContentViews:
    content = getattr(request.app.state, "content", None)
    if not isinstance(content, ContentViews):
        raise RuntimeError("app.state.content is not set: create_app must create a ContentViews and feed it")
    return content


@router.get("/v1/brands/{brand}/content", responses=_RESPONSES)
async def brand_content(
    request: Request,
    brand: Annotated[str, Path(description="brand name", examples=["acme"])],
    sort: Annotated[
        ContentSort,
        Query(
            description="engagement (comments + reposts + likes), conversation (comments), amplification "
            "(reposts), applause (likes), or recent (published last first)"
        ),
    ] = "engagement",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="how many posts at most")] = 20,
    platform: Annotated[ContentPlatform | None, Query(description="only this channel type")] = None,
) -> ContentRanking:
    """The brand's own posts (its configured Mastodon and Bluesky accounts, its blog's feed) ranked by their
    latest reactions, with each count's change over 24 h and Kaushik's rates: conversation (comments per post),
    amplification (reposts per post) and applause (likes per post), also per 1,000 followers of the channel at
    the time of the reading; and each channel's totals and average rates per post."""
    guard = getattr(request.app.state, "brand_guard", None)
    if guard is not None:
        guard(request, brand)
    content = _content(request)
    views = getattr(request.app.state, "views", None)
    if not content.has_brand(brand) and not (views is not None and views.has_brand(brand)):
        raise HTTPException(status_code=404, detail=f"unknown brand '{brand}'")
    return content.ranking(brand, sort, limit, platform, content.clock())
