"""Full-text search of a brand's stored mentions (the history store): English and French stemming, filters,
newest first with keyset pagination, as JSON pages or a CSV export.

A FastAPI APIRouter mounted by create_app behind the API keys; `app.state.brand_guard` says whether the
caller may see a brand, `app.state.history` holds the connection pool.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
import psycopg
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from psycopg import sql
from pydantic import AwareDatetime, BaseModel, Field

from schemas import ScoredMention
from schemas.models import SentimentLabel, Source
from services.api.csvexport import CSV_RESPONSE_DOC, csv_response
from services.api.history import STORE_ERRORS, History, HistoryDep, store_unavailable

logger = logging.getLogger(__name__)

PAGE_DEFAULT = 50
PAGE_MAX = 200
# Rows a CSV export holds at most (and by default): narrow the dates for more.
EXPORT_MAX_ROWS = 100_000
# Rows fetched per query while streaming an export: each query is a short keyset page, so no connection is
# held for the whole download.
EXPORT_CHUNK = 2_000
MAX_QUERY_CHARS = 500

# Spans of the time windows a search reads in turn (time_windows), from the newest instant it may return.
WINDOW_SPANS = (timedelta(days=30), timedelta(days=120))

router = APIRouter(tags=["history"])

# The (published_at, id) of a row: where a page ends and the next begins.
Position = tuple[datetime, str]
# [start, end) on published_at; None: no bound.
Window = tuple[datetime | None, datetime | None]

# Each mention matches through its own language's stemming: q is parsed with the configuration the mention's
# tsvector was built with (ecoute_ts_config in migration 0001: en -> english, fr -> french, anything else ->
# simple). One arm per configuration rather than `search @@ (english || french || simple)`: in that union a term
# excluded with -word in one configuration is still allowed by the others (an English "phone is too expensive"
# matched "phone -expensive" through the French parse, which does not stem "expensive"). Each arm is a GIN index
# condition. The arms test `lang` itself, not ecoute_ts_config(lang): the planner has statistics on the column,
# none on the expression, and guessed matches 100 times too rare, then fetched every match to sort them.
_MATCH = sql.SQL(
    "((lang = 'en' AND search @@ websearch_to_tsquery('english', %(q)s))"
    " OR (lang = 'fr' AND search @@ websearch_to_tsquery('french', %(q)s))"
    " OR ((lang IS NULL OR lang NOT IN ('en', 'fr')) AND search @@ websearch_to_tsquery('simple', %(q)s)))"
)
# A snippet of the text around the matches: the text is HTML-escaped first, so the headline is safe HTML with
# the matched words in <mark>.
_HEADLINE = sql.SQL(
    "ts_headline(ecoute_ts_config(m.lang),"
    " replace(replace(replace(coalesce(m.title || E'\\n', '') || m.body, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),"
    " websearch_to_tsquery(ecoute_ts_config(m.lang), %(q)s),"
    " 'StartSel=<mark>, StopSel=</mark>, MaxWords=30, MinWords=12, MaxFragments=2, FragmentDelimiter=\" … \"')"
)

CSV_COLUMNS = (
    "brand",
    "id",
    "published_at",
    "source",
    "site",
    "url",
    "author",
    "author_handle",
    "reach",
    "lang",
    "sentiment",
    "compound",
    "topics",
    "likes",
    "shares",
    "comments",
    "title",
    "text",
)
_CSV_SELECT = sql.SQL(
    "brand, id, published_at, source, site, url, author, author_handle, reach, lang, label, compound, topics,"
    " likes, shares, comments, title, body"
)


class SearchHit(ScoredMention):
    """A stored scored-mention/1 record, with a snippet of its text around the matched words."""

    headline: str | None = Field(
        None, description="HTML: the text escaped, matched words in <mark>, fragments joined by ' … '; null without q"
    )


class SearchPage(BaseModel):
    brand: str
    query: str | None = Field(description="q as given (null: every mention in the range)")
    count: int = Field(description="mentions on this page")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
    mentions: list[SearchHit]


class HistoryError(BaseModel):
    detail: str


class HistoryProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class HistoryInvalid(BaseModel):
    """The API's 422 body (FastAPI's validation errors), also for what PostgreSQL refuses."""

    detail: list[HistoryProblem]


@dataclass(frozen=True)
class SearchFilter:
    """What to look for, checked: every value goes to PostgreSQL as a parameter."""

    brand: str
    q: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    sentiment: str | None = None
    source: str | None = None
    lang: str | None = None
    author: str | None = None
    topic: str | None = None

    def where(self, after: Position | None, window: Window = (None, None)) -> tuple[sql.Composed, dict[str, Any]]:
        clauses: list[sql.Composable] = [sql.SQL("brand = %(brand)s")]
        params: dict[str, Any] = {"brand": self.brand}
        if window[0] is not None:
            clauses.append(sql.SQL("published_at >= %(window_start)s"))
            params["window_start"] = window[0]
        if window[1] is not None:
            clauses.append(sql.SQL("published_at < %(window_end)s"))
            params["window_end"] = window[1]
        if self.q is not None:
            clauses.append(_MATCH)
            params["q"] = self.q
        if self.since is not None:
            clauses.append(sql.SQL("published_at >= %(since)s"))
            params["since"] = self.since
        if self.until is not None:
            clauses.append(sql.SQL("published_at < %(until)s"))
            params["until"] = self.until
        if self.sentiment is not None:
            clauses.append(sql.SQL("label = %(sentiment)s"))
            params["sentiment"] = self.sentiment
        if self.source is not None:
            clauses.append(sql.SQL("source = %(source)s"))
            params["source"] = self.source
        if self.lang is not None:
            clauses.append(sql.SQL("lang = %(lang)s"))
            params["lang"] = self.lang
        if self.author is not None:
            # The author column holds the id when there is one; people type the handle, often with its '@'.
            clauses.append(sql.SQL("(author = ANY(%(authors)s) OR author_handle = ANY(%(authors)s))"))
            params["authors"] = sorted({self.author, self.author.removeprefix("@")})
        if self.topic is not None:
            clauses.append(sql.SQL("topics @> ARRAY[%(topic)s]::text[]"))
            params["topic"] = self.topic
        if after is not None:
            # The plain bound lets the planner skip newer monthly partitions; the row comparison is the keyset.
            clauses.append(
                sql.SQL("published_at <= %(after_at)s AND (published_at, id) < (%(after_at)s, %(after_id)s)")
            )
            params["after_at"], params["after_id"] = after
        return sql.SQL(" AND ").join(clauses), params


# Builds one query of a search: (filter, position, how many rows, window) -> (SQL, parameters).
QueryBuilder = Callable[[SearchFilter, Position | None, int, Window], tuple[sql.Composed, dict[str, Any]]]


def time_windows(search: SearchFilter, after: Position | None, now: datetime) -> list[Window]:
    """The spans a search reads one after the other, newest first, until its page is full: the last 30 days
    before the newest instant it may return, the 90 before those, then the rest.

    Why: a search with q finds its mentions through the text index, which knows nothing of dates: PostgreSQL
    fetches every match and sorts them to keep the newest 50 — 8,000 rows and ~200 ms for "prix élevés" over
    the largest brand's 13 months. Within 30 days it fetches a thirteenth of them, and the page is usually
    full there. A rare term costs three index lookups instead of one; a search without q reads the brand's
    rows newest first and stops at the page's end whatever the windows."""
    bounds = [moment for moment in (search.until, after[0] if after else None) if moment is not None]
    top = min(bounds) if bounds else now
    windows: list[Window] = []
    end: datetime | None = None
    for back in WINDOW_SPANS:
        if top - datetime.min.replace(tzinfo=UTC) <= back:
            break  # no window starts before year 1; the last one, open below, covers the rest
        start = top - back
        if search.since is not None and start <= search.since:
            break
        windows.append((start, end))
        end = start
    windows.append((None, end))
    return windows


def _page_query(
    search: SearchFilter, after: Position | None, limit: int, window: Window = (None, None)
) -> tuple[sql.Composed, dict[str, Any]]:
    """One JSON page: (published_at, id, the record with its headline as JSON text)."""
    where, params = search.where(after, window)
    headline = _HEADLINE if search.q is not None else sql.SQL("NULL::text")
    params["limit"] = limit
    # The headline is computed in the outer query, on the page's rows only.
    query = sql.SQL(
        "SELECT m.published_at, m.id, (m.doc || jsonb_build_object('headline', {headline}))::text"
        " FROM (SELECT published_at, id, lang, title, body, doc FROM mentions WHERE {where}"
        " ORDER BY published_at DESC, id DESC LIMIT %(limit)s) m"
        " ORDER BY m.published_at DESC, m.id DESC"
    ).format(headline=headline, where=where)
    return query, params


def _export_query(
    search: SearchFilter, after: Position | None, limit: int, window: Window = (None, None)
) -> tuple[sql.Composed, dict[str, Any]]:
    where, params = search.where(after, window)
    params["limit"] = limit
    query = sql.SQL(
        "SELECT {columns} FROM mentions WHERE {where} ORDER BY published_at DESC, id DESC LIMIT %(limit)s"
    ).format(columns=_CSV_SELECT, where=where)
    return query, params


# ---------------------------------------------------------------------------------------------- errors


def invalid(parameter: str, message: str, kind: str = "value_error") -> HTTPException:
    """A 422 in the shape FastAPI gives its own validation errors (ValidationErrorBody)."""
    return HTTPException(422, detail=[{"loc": ["query", parameter], "msg": message, "type": kind}])


_NO_JIT = "SELECT set_config('jit', 'off', true)"
_TEXT_INDEX_ONLY = (
    "SELECT set_config('jit', 'off', true), set_config('enable_indexscan', 'off', true),"
    " set_config('enable_seqscan', 'off', true)"
)

# PostgreSQL errors a user's input can cause: data exceptions (class 22), a tsquery it cannot parse (42601) and
# program limits (54: a query too big to search with). Any other error is the store's or ours.
_INPUT_ERRORS = (psycopg.DataError, psycopg.errors.SyntaxError, psycopg.errors.ProgramLimitExceeded)


async def _fetch(
    history: History, search: SearchFilter, after: Position | None, count: int, build: QueryBuilder
) -> list[tuple[Any, ...]]:
    """The first `count` matching rows after `after`, newest first, read window by window (time_windows)."""
    assert history.pool is not None
    rows: list[tuple[Any, ...]] = []
    try:
        async with history.pool.connection() as conn, conn.transaction():
            # Settings of this transaction only (so they also hold through a transaction-pooling proxy):
            # - no JIT: past jit_above_cost PostgreSQL spent ~250 ms compiling a search that then ran in less;
            # - with q, the text index and nothing else (see time_windows): the planner cannot know how many of
            #   a brand's mentions a term matches, and when it guessed many (a word common among other brands'
            #   mentions, absent from this one's) it read the brand's rows newest first, all 300,000 (1 s).
            await conn.execute(_TEXT_INDEX_ONLY if search.q is not None else _NO_JIT)
            for window in time_windows(search, after, datetime.now(UTC)):
                query, params = build(search, after, count - len(rows), window)
                # Planned for its own values (no prepared generic plan).
                cur = await conn.execute(query, params, prepare=False)
                rows += await cur.fetchall()
                if len(rows) >= count:
                    break
        return rows
    except _INPUT_ERRORS as exc:
        message = (exc.diag.message_primary or str(exc)).strip()
        if search.q is not None:
            raise invalid("q", f"PostgreSQL cannot search for this: {message}") from exc
        raise HTTPException(422, detail=[{"loc": ["query"], "msg": message, "type": "value_error"}]) from exc
    except STORE_ERRORS as exc:
        raise store_unavailable(exc) from exc


async def _brand_stored(history: History, brand: str) -> bool:
    assert history.pool is not None
    try:
        async with history.pool.connection() as conn:
            cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM mentions WHERE brand = %s)", (brand,))
            row = await cur.fetchone()
            return bool(row and row[0])
    except STORE_ERRORS as exc:
        raise store_unavailable(exc) from exc


# ---------------------------------------------------------------------------------------------- cursors


def encode_cursor(published_at: datetime, mention_id: str) -> str:
    raw = json.dumps([published_at.isoformat(), mention_id], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The (published_at, id) a cursor stands for; a 422 naming `cursor` when it is not one of ours."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        at, mention_id = json.loads(raw.decode("utf-8"))
        published_at = datetime.fromisoformat(at)
        if not isinstance(mention_id, str) or published_at.tzinfo is None or "\x00" in mention_id:
            raise ValueError("not a cursor")
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise invalid("cursor", "not a cursor of this endpoint: pass next_cursor as it came") from exc
    return published_at, mention_id


# ---------------------------------------------------------------------------------------------- the route


def _check_brand(request: Request, brand: str) -> None:
    guard = getattr(request.app.state, "brand_guard", None)
    if guard is None:
        raise RuntimeError("app.state.brand_guard is not set: create_app must set it before mounting this router")
    guard(request, brand)


async def _ensure_known(request: Request, history: History, brand: str) -> None:
    """404 for a brand neither the live views nor the store know (asked only when a search finds nothing)."""
    views = getattr(request.app.state, "views", None)
    if views is not None and views.has_brand(brand):
        return
    if not await _brand_stored(history, brand):
        raise HTTPException(404, detail=f"unknown brand '{brand}'")


def _no_nul(**values: str | None) -> None:
    # PostgreSQL text cannot hold NUL; say which parameter has one rather than let the driver refuse it.
    for name, value in values.items():
        if value is not None and "\x00" in value:
            raise invalid(name, "must not contain a NUL character")


@router.get(
    "/v1/brands/{brand}/mentions/search",
    response_model=SearchPage,
    responses={
        200: {"content": CSV_RESPONSE_DOC, "description": "a page of mentions (JSON), or the export (format=csv)"},
        404: {"model": HistoryError, "description": "unknown brand, or one this key may not see"},
        422: {
            "model": HistoryInvalid,
            "description": "a bad parameter (named in loc): a query PostgreSQL cannot search for, a cursor not from "
            "this endpoint, until before since…",
        },
        503: {
            "model": HistoryError,
            "description": "no history store configured, or it cannot be reached",
            "headers": {
                "Retry-After": {"description": "seconds to wait (store unreachable)", "schema": {"type": "integer"}}
            },
        },
    },
)
async def search_mentions(
    request: Request,
    history: HistoryDep,
    brand: Annotated[str, PathParam(description="brand name", examples=["acme"])],
    q: Annotated[
        str | None,
        Query(
            max_length=MAX_QUERY_CHARS,
            description='words, "a phrase", OR, -excluded (web search syntax), in English and French; '
            "absent: every mention",
        ),
    ] = None,
    since: Annotated[AwareDatetime | None, Query(description="published at or after (RFC 3339)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="published before (RFC 3339)")] = None,
    sentiment: SentimentLabel | None = None,
    source: Source | None = None,
    lang: Annotated[str | None, Query(pattern=r"^[A-Za-z]{2}$", description="ISO 639-1 code")] = None,
    author: Annotated[
        str | None, Query(min_length=1, max_length=512, description="author id or handle (with or without @)")
    ] = None,
    topic: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    cursor: Annotated[str | None, Query(max_length=2048, description="next_cursor of the previous page")] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=EXPORT_MAX_ROWS, description=f"JSON: page size (default 50, at most {PAGE_MAX}); CSV: rows"),
    ] = None,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """The brand's stored mentions matching `q` and the filters, newest first. JSON answers a page at a time
    (follow `next_cursor`); `format=csv` streams every match from the cursor on (at most 100,000 rows)."""
    _check_brand(request, brand)
    _no_nul(q=q, author=author, topic=topic)
    if q is not None and not q.strip():
        q = None
    if since is not None and until is not None and since > until:
        raise invalid("until", "until is before since")
    if format == "json" and limit is not None and limit > PAGE_MAX:
        raise invalid(
            "limit", f"a JSON page holds at most {PAGE_MAX} mentions (format=csv exports more)", "less_than_equal"
        )
    after = decode_cursor(cursor) if cursor else None
    search = SearchFilter(
        brand=brand,
        q=q,
        since=since,
        until=until,
        sentiment=sentiment,
        source=source,
        lang=lang.lower() if lang else None,
        author=author,
        topic=topic,
    )
    if format == "csv":
        return await _export(request, history, search, after, limit or EXPORT_MAX_ROWS)

    size = limit or PAGE_DEFAULT
    rows = await _fetch(history, search, after, size + 1, _page_query)
    if not rows and after is None:
        await _ensure_known(request, history, brand)
    page = rows[:size]
    next_cursor = encode_cursor(page[-1][0], page[-1][1]) if len(rows) > size else None
    # The records go out as PostgreSQL wrote them: no parsing and re-serialising of up to 200 documents.
    body = b"".join(
        (
            b'{"brand":',
            orjson.dumps(brand),
            b',"query":',
            orjson.dumps(q),
            b',"count":',
            str(len(page)).encode(),
            b',"next_cursor":',
            orjson.dumps(next_cursor),
            b',"mentions":[',
            b",".join(row[2].encode("utf-8") for row in page),
            b"]}",
        )
    )
    return Response(body, media_type="application/json")


async def _export(
    request: Request, history: History, search: SearchFilter, after: Position | None, total: int
) -> Response:
    # The first chunk is read before answering, so a bad query or an unreachable store still gets its status.
    first_size = min(EXPORT_CHUNK, total)
    first = await _fetch(history, search, after, first_size, _export_query)
    if not first and after is None:
        await _ensure_known(request, history, search.brand)

    async def rows() -> AsyncIterator[Sequence[Any]]:
        chunk, size, sent = first, first_size, 0
        while True:
            for row in chunk:
                yield row
            sent += len(chunk)
            if len(chunk) < size or sent >= total:
                return
            size = min(EXPORT_CHUNK, total - sent)
            try:
                chunk = await _fetch(history, search, (chunk[-1][2], chunk[-1][1]), size, _export_query)
            except HTTPException as exc:
                # The answer has started: all that is left is to cut it short (the client sees an incomplete body).
                logger.warning("CSV export of %s cut short after %d rows: %s", search.brand, sent, exc.detail)
                raise

    return csv_response(_export_name(search), CSV_COLUMNS, rows())


def _export_name(search: SearchFilter) -> str:
    span = ""
    if search.since is not None or search.until is not None:
        since = search.since.strftime("%Y%m%d") if search.since else "start"
        until = search.until.strftime("%Y%m%d") if search.until else "now"
        span = f"-{since}-{until}"
    return f"{search.brand}-mentions{span}.csv"


__all__ = ["CSV_COLUMNS", "SearchFilter", "SearchPage", "decode_cursor", "encode_cursor", "router"]
