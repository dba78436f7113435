"""`GET /v1/brands/{brand}/content`: the brand's own posts ranked by their reactions (content_views.py).

Mounted by create_app behind the API keys; reads `app.state.content` (a ContentViews fed by the view consumer)
and `app.state.brand_guard` (404 for a brand the caller may not see).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request

from schemas.models import ContentPlatform
from services.api.content_views import ContentEntry, ContentRanking, ContentSort, ContentViews
from services.api.csvexport import csv_response, with_csv

MAX_LIMIT = 100

router = APIRouter(tags=["content"])


_RESPONSES: dict[int | str, dict[str, Any]] = with_csv({404: {"description": "unknown brand"}})

# format=csv: one row per post, in the ranking's order.
CONTENT_COLUMNS = (
    "id",
    "platform",
    "channel",
    "url",
    "title",
    "text",
    "published_at",
    "updated_at",
    "comments",
    "reposts",
    "likes",
    "engagement",
    "comments_change_24h",
    "reposts_change_24h",
    "likes_change_24h",
    "followers",
    "conversation_rate",
    "amplification_rate",
    "applause_rate",
    "conversation_per_1k_followers",
    "amplification_per_1k_followers",
    "applause_per_1k_followers",
)


def content_row(entry: ContentEntry) -> tuple[Any, ...]:
    change, rates = entry.change_24h, entry.rates
    return (
        entry.id,
        entry.platform,
        entry.channel,
        entry.url,
        entry.title,
        entry.text,
        entry.published_at,
        entry.updated_at,
        entry.comments,
        entry.reposts,
        entry.likes,
        entry.engagement,
        change.comments,
        change.reposts,
        change.likes,
        entry.followers,
        rates.conversation,
        rates.amplification,
        rates.applause,
        rates.conversation_per_1k_followers,
        rates.amplification_per_1k_followers,
        rates.applause_per_1k_followers,
    )


def _content(request: Request) -> ContentViews:
    content = getattr(request.app.state, "content", None)
    if not isinstance(content, ContentViews):
        raise RuntimeError("app.state.content is not set: create_app must create a ContentViews and feed it")
    return content


@router.get("/v1/brands/{brand}/content", response_model=ContentRanking, responses=_RESPONSES)
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
    format: Annotated[Literal["json", "csv"], Query(description="csv: the ranked posts, one per row")] = "json",
) -> Any:
    """The brand's own posts (its configured Mastodon and Bluesky accounts, its blog's feed) ranked by their
    latest reactions, with each count's change over 24 h and Kaushik's rates: conversation (comments per post),
    amplification (reposts per post) and applause (likes per post), also per 1,000 followers of the channel at
    the time of the reading; and each channel's totals and average rates per post (`format=csv`: the posts as a
    spreadsheet)."""
    guard = getattr(request.app.state, "brand_guard", None)
    if guard is not None:
        guard(request, brand)
    content = _content(request)
    views = getattr(request.app.state, "views", None)
    if not content.has_brand(brand) and not (views is not None and views.has_brand(brand)):
        raise HTTPException(status_code=404, detail=f"unknown brand '{brand}'")
    ranking = content.ranking(brand, sort, limit, platform, content.clock())
    if format == "csv":
        return csv_response(f"{brand}-content.csv", CONTENT_COLUMNS, [content_row(e) for e in ranking.items])
    return ranking
