"""Reply and follow from the inbox: `POST /v1/mentions/{id}/reply` and `POST /v1/authors/{platform}/{id}/follow`,
posted with the brand's own Mastodon or Bluesky account (`brands.<name>.accounts` in the config).

Idempotent on the client's request id (`Idempotency-Key` header or `request_id`): each request is an outreach/1
record on the compacted alerts.actions topic, keyed `reply:<brand>:<request id>` (or `follow:…`), written
`pending` before the platform is called and `sent` once the platform took it. Every replica reads those records
back (`OutreachLog`, a sink of the view consumer), so a retry answers the first outcome. The platforms make it
safe even before a replica has read the record: Mastodon gets the request id as `Idempotency-Key`, and Bluesky
records are written under a record key made from it (a second one is refused, the first one is the answer). A reply
also marks the mention handled (mention-handled/1, the response-time KPI). Needs the responder or admin role.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from schemas import EcouteConfig, MentionHandled, ScoredMention
from schemas.models import Outreach, Who
from schemas.netguard import IPNetwork
from services.api.actions import Action, MalformedAction, parse_action
from services.api.auth import Principal, brand_not_found, current_principal, require_responder
from services.api.consumer import ActionsUnavailable, RecordSink
from services.api.engage_clients import (
    BlueskyClient,
    MastodonClient,
    PlatformError,
    PlatformRefused,
    PlatformTimeout,
    PlatformUnavailable,
    record_key,
    split_acct,
)

logger = logging.getLogger(__name__)

ACTIONS = "alerts.actions"
# How long a request id is remembered by the API replicas (a retry after that posts again on Mastodon, whose own
# Idempotency-Key memory is an hour; Bluesky still refuses the second record).
OUTREACH_RETENTION = timedelta(days=7)
Platform = Literal["mastodon", "bluesky"]
RequestId = Annotated[
    StrictStr,
    Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:~-]+$", description="the client's id of this request"),
]
IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="the client's request id: a retry with the same one is answered from the first outcome",
        max_length=200,
        pattern=r"^[A-Za-z0-9._:~-]+$",
    ),
]
Responder = Annotated[Principal, Depends(require_responder)]


# ---------------------------------------------------------------------------------------------- models


class ReplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Annotated[StrictStr, Field(min_length=1, max_length=5000, description="the reply")]
    brand: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = Field(
        None, description="whose account answers; needed only when the mention matched several brands"
    )
    request_id: RequestId | None = None
    by: Who | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the reply is empty")
        return value


class FollowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    brand: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = Field(
        None, description="whose account follows; needed only when several brands have an account there"
    )
    request_id: RequestId | None = None
    by: Who | None = None


class OutreachAnswer(BaseModel):
    """What was posted (or followed) with the brand's account; a retry with the same request id gets it again."""

    kind: Literal["reply", "follow"]
    request_id: str
    brand: str
    platform: Platform
    mention_id: str | None = None
    author: str | None = Field(None, description="the author answered or followed")
    text: str | None = Field(None, description="the reply as posted")
    post_id: str | None = Field(None, description="the platform's id: Mastodon status or account id, at:// URI")
    url: str | None = None
    cid: str | None = Field(None, description="Bluesky: the CID of the record made")
    sent_at: datetime
    by: str | None = None
    handled_at: datetime | None = Field(None, description="reply: when the mention was marked handled")
    response_seconds: float | None = Field(None, description="reply: handled_at - the mention's published_at")


class ErrorBody(BaseModel):
    detail: str


class InvalidBody(BaseModel):
    detail: str | list[dict[str, Any]] = Field(description="what is wrong: a sentence, or the invalid fields")


def _errors(**described: str) -> dict[int | str, dict[str, Any]]:
    """Documented error answers: `e404="…"` → {404: {model, description}}."""
    return {
        int(code[1:]): {"model": InvalidBody if code == "e422" else ErrorBody, "description": text}
        for code, text in described.items()
    }


_SEND_ERRORS = {
    "e403": "the key's role is neither responder nor admin",
    "e409": "the request id was used for another request, or the platform reports a conflict",
    "e422": "invalid body, no account of the brand on that platform, or the platform refused",
    "e502": "the platform is unreachable or failing: nothing was posted",
    "e503": "Kafka did not take the record (or the history store is away); retry with the same request id",
    "e504": "the platform did not answer in time; retry with the same request id",
}


class AccountView(BaseModel):
    platform: Platform
    server: str = Field(description="the Mastodon instance or the Bluesky PDS")
    handle: str | None = Field(None, description="Bluesky: the account's handle")


class BrandAccountsView(BaseModel):
    """Which accounts of the brand can reply and follow (never their secrets)."""

    brand: str
    accounts: list[AccountView]
    can_respond: bool = Field(description="this key may reply and follow (role responder or admin)")


# ---------------------------------------------------------------------------------------------- state


class OutreachLog:
    """The outreach/1 records of alerts.actions by key (pure state; the view consumer feeds it), kept for
    `retention`: a retry comes within minutes, and the compacted topic keeps every record anyway."""

    def __init__(self, retention: timedelta = OUTREACH_RETENTION) -> None:
        self.retention = retention
        self._records: dict[str, Outreach] = {}

    def evict(self, now: datetime) -> int:
        old = [key for key, record in self._records.items() if record.at < now - self.retention]
        for key in old:
            del self._records[key]
        return len(old)

    def apply(self, action: Action) -> None:
        if isinstance(action, Outreach):
            self._records[_key(action.kind, action.brand, action.request_id)] = action

    def apply_record(self, topic: str, key: bytes | None, value: bytes | None, now: datetime) -> None:
        text = (key or b"").decode("utf-8", errors="replace")
        if topic != ACTIONS or not text.startswith(("reply:", "follow:")):
            return  # acks and handled marks are the views'
        if value is None:
            self._records.pop(text, None)
            return
        try:
            self.apply(parse_action(key, value))
        except (MalformedAction, ValidationError) as exc:
            raise ValueError(f"outreach record {text!r}: {exc}") from exc

    def get(self, kind: str, brand: str, request_id: str) -> Outreach | None:
        return self._records.get(_key(kind, brand, request_id))

    def sizes(self) -> dict[str, int]:
        return {"outreach": len(self._records)}


def _key(kind: str, brand: str, request_id: str) -> str:
    return f"{kind}:{brand}:{request_id}"


def request_digest(**fields: Any) -> str:
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class _Clients:
    mastodon: MastodonClient | None
    bluesky: BlueskyClient | None


class Engagement:
    """The brands' account clients, the outreach log and the per-request locks of one API replica."""

    def __init__(
        self, config: EcouteConfig, allow: tuple[IPNetwork, ...], timeout: float, clock: Callable[[], datetime]
    ) -> None:
        self.clock = clock
        self.log = OutreachLog()
        self._locks: dict[str, asyncio.Lock] = {}
        self.clients: dict[str, _Clients] = {}
        self.accounts: dict[str, list[AccountView]] = {}  # what GET /accounts shows: never a secret
        for name, brand in config.brands.items():
            mastodon, bluesky = (brand.accounts.mastodon, brand.accounts.bluesky) if brand.accounts else (None, None)
            if mastodon is None and bluesky is None:
                continue
            self.clients[name] = _Clients(
                MastodonClient(mastodon, allow, timeout) if mastodon else None,
                BlueskyClient(bluesky, allow, timeout) if bluesky else None,
            )
            self.accounts[name] = [
                *([AccountView(platform="mastodon", server=mastodon.instance)] if mastodon else []),
                *([AccountView(platform="bluesky", server=bluesky.service, handle=bluesky.handle)] if bluesky else []),
            ]
        self.sink = RecordSink(
            name="outreach",
            topics=frozenset({ACTIONS}),
            apply=self.log.apply_record,
            evict=self.log.evict,
            sizes=self.log.sizes,
        )

    def client(self, brand: str, platform: str) -> MastodonClient | BlueskyClient | None:
        found = self.clients.get(brand)
        if found is None:
            return None
        return found.mastodon if platform == "mastodon" else found.bluesky if platform == "bluesky" else None

    def lock(self, key: str) -> asyncio.Lock:
        if len(self._locks) > 10_000:  # forget idle locks
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return self._locks.setdefault(key, asyncio.Lock())

    async def aclose(self) -> None:
        for clients in self.clients.values():
            for client in (clients.mastodon, clients.bluesky):
                if client is not None:
                    await client.aclose()


# ---------------------------------------------------------------------------------------------- routes

router = APIRouter(prefix="/v1", tags=["engage"])


def _engagement(request: Request) -> Engagement:
    found: Engagement = request.app.state.engagement
    return found


def _request_id(header: str | None, body: str | None) -> str:
    if header and body and header != body:
        raise HTTPException(422, "request_id: differs from the Idempotency-Key header (send one, or both equal)")
    return header or body or uuid.uuid4().hex


async def _write(request: Request, action: MentionHandled | Outreach, after_post: bool = False) -> None:
    try:
        await request.app.state.writer.write(action)
    except ActionsUnavailable as exc:
        detail = str(exc)
        if after_post:
            detail = f"posted, but {detail}: retry with the same request id (it will not post again)"
        raise HTTPException(status_code=503, detail=detail) from exc
    request.app.state.views.apply_action(action)
    _engagement(request).log.apply(action)


def _visible(request: Request, principal: Principal, brand: str) -> str:
    if not principal.can_see(brand) or not request.app.state.views.has_brand(brand):
        raise brand_not_found(brand)
    return brand


async def _stored_mention(request: Request, brands: list[str], mention_id: str) -> list[ScoredMention]:
    """The mention from the history store (mentions older than the views keep), in the given brands."""
    history = getattr(request.app.state, "history", None)
    if history is None or history.pool is None or not brands:
        return []
    try:
        async with history.pool.connection() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT doc FROM mentions WHERE id = %s AND brand = ANY(%s) ORDER BY published_at DESC LIMIT 10",
                (mention_id, brands),
            )
            rows = await cur.fetchall()
    except Exception as exc:
        logger.warning("history lookup of mention %r failed: %s", mention_id, type(exc).__name__)
        raise HTTPException(503, "the history store is unreachable; retry", headers={"Retry-After": "5"}) from None
    return [ScoredMention.model_validate(row[0]) for row in rows]


async def _find_mention(
    request: Request, principal: Principal, mention_id: str, brand: str | None
) -> tuple[str, ScoredMention]:
    views = request.app.state.views
    if brand is not None:
        _visible(request, principal, brand)
        candidates = [brand]
    else:
        candidates = principal.visible(views.brands())
    found = {b: m for b in candidates if (m := views.find_mention(b, mention_id)) is not None}
    if not found:
        for mention in await _stored_mention(request, candidates, mention_id):
            found.setdefault(mention.brand, mention)
    if not found:
        where = f" of brand '{brand}'" if brand is not None else ""
        raise HTTPException(404, f"unknown mention '{mention_id}'{where}")
    if len(found) > 1:
        names = ", ".join(sorted(found))
        raise HTTPException(422, f"brand: the mention matched several brands ({names}); say whose account answers")
    return next(iter(found.items()))


def _answer(outreach: Outreach, handled: MentionHandled | None, published_at: datetime | None) -> OutreachAnswer:
    handled_at = handled.at if handled is not None else (outreach.at if outreach.kind == "reply" else None)
    published = handled.published_at if handled is not None and handled.published_at else published_at
    return OutreachAnswer(
        kind=outreach.kind,
        request_id=outreach.request_id,
        brand=outreach.brand,
        platform=outreach.platform,
        mention_id=outreach.mention_id,
        author=outreach.author,
        text=outreach.text,
        post_id=outreach.post_id,
        url=outreach.url,
        cid=outreach.cid,
        sent_at=outreach.at,
        by=outreach.by,
        handled_at=handled_at,
        response_seconds=(handled_at - published).total_seconds() if handled_at and published else None,
    )


def _replayed(request: Request, existing: Outreach, digest: str, response: Response) -> bool:
    """True when the request was already sent (answer it again); 409 when the id names another request."""
    if existing.digest != digest:
        raise HTTPException(409, f"request id '{existing.request_id}' was already used for another {existing.kind}")
    if existing.state == "sent":
        response.headers["Idempotent-Replayed"] = "true"
        _count(request, existing.platform, existing.kind, "replayed")
        return True
    return False


_OUTCOMES: dict[type[PlatformError], str] = {
    PlatformRefused: "refused",
    PlatformUnavailable: "unavailable",
    PlatformTimeout: "timeout",
}


def _count(request: Request, platform: str, kind: str, outcome: str) -> None:
    request.app.state.metrics.outreach.labels(platform, kind, outcome).inc()


def _platform_failed(request: Request, platform: str, kind: str, exc: PlatformError) -> HTTPException:
    _count(request, platform, kind, _OUTCOMES.get(type(exc), "unavailable"))
    return HTTPException(exc.status, str(exc))


def _status_parts(mention_id: str) -> tuple[str, str]:
    """`mastodon:<host>:<status id>` → (host, status id)."""
    host, _, status_id = mention_id.removeprefix("mastodon:").rpartition(":")
    if not host or not status_id.isdigit():
        raise HTTPException(422, f"mention id {mention_id!r} is not mastodon:<instance>:<status id>")
    return host, status_id


def _post_parts(mention_id: str) -> tuple[str, str]:
    """`bluesky:<did>:<rkey>` → (did, rkey)."""
    did, _, rkey = mention_id.removeprefix("bluesky:").rpartition(":")
    if not did.startswith("did:") or not rkey:
        raise HTTPException(422, f"mention id {mention_id!r} is not bluesky:<did>:<rkey>")
    return did, rkey


@router.post(
    "/mentions/{mention_id:path}/reply",
    response_model=OutreachAnswer,
    responses=_errors(e404="unknown brand or mention (or one this key may not see)", **_SEND_ERRORS),
)
async def reply_to_mention(
    request: Request,
    response: Response,
    principal: Responder,
    mention_id: Annotated[str, PathParam(description="mention id", examples=["mastodon:mastodon.social:1123"])],
    body: ReplyRequest,
    idempotency_key: IdempotencyHeader = None,
) -> OutreachAnswer:
    """Answer a Mastodon or Bluesky mention with the brand's account (a reply in the post's thread, naming the
    author on Mastodon). The mention is marked handled. Send an `Idempotency-Key` (or `request_id`): a retry
    with the same one returns the first answer and never posts twice."""
    engagement = _engagement(request)
    request_id = _request_id(idempotency_key, body.request_id)
    brand, mention = await _find_mention(request, principal, mention_id, body.brand)
    platform = mention.source
    if platform not in ("mastodon", "bluesky"):
        raise HTTPException(422, f"mention '{mention_id}' comes from {platform}: replies go to Mastodon or Bluesky")
    client = engagement.client(brand, platform)
    if client is None:
        raise HTTPException(422, f"brand '{brand}' has no {platform} account (brands.{brand}.accounts.{platform})")
    digest = request_digest(kind="reply", mention_id=mention_id, text=body.text)
    views = request.app.state.views
    async with engagement.lock(_key("reply", brand, request_id)):
        existing = engagement.log.get("reply", brand, request_id)
        if existing is not None and _replayed(request, existing, digest, response):
            return _answer(existing, views.handled(brand, mention_id), mention.published_at)
        now = engagement.clock()
        pending = existing or Outreach(
            kind="reply",
            state="pending",
            request_id=request_id,
            brand=brand,
            platform=platform,
            by=body.by,
            key_id=principal.key_id,
            at=now,
            digest=digest,
            mention_id=mention_id,
            author=mention.author.handle or mention.author.id,
            text=body.text,
            rkey=record_key(brand, "reply", request_id) if platform == "bluesky" else None,
            created_at=now if platform == "bluesky" else None,
        )
        if existing is None:
            await _write(request, pending)
        try:
            if isinstance(client, MastodonClient):
                host, status_id = _status_parts(mention_id)
                posted = await client.reply(
                    source_host=host,
                    status_id=status_id,
                    status_url=mention.url,
                    acct=mention.author.handle,
                    text=body.text,
                    idempotency_key=f"ecoute-{brand}-{request_id}",
                )
                sent_text = client.reply_text(body.text, mention.author.handle)
            else:
                ref = mention.reply_ref
                if ref is None:
                    ref = await client.reply_ref_of(*_post_parts(mention_id))
                assert pending.rkey is not None and pending.created_at is not None
                posted = await client.reply(
                    ref=ref, text=body.text, rkey=pending.rkey, created_at=pending.created_at, lang=mention.lang
                )
                sent_text = body.text
        except PlatformError as exc:
            raise _platform_failed(request, platform, "reply", exc) from None
        sent = pending.model_copy(
            update={
                "state": "sent",
                "at": engagement.clock(),
                "text": sent_text,
                "post_id": posted.post_id,
                "url": posted.url,
                "cid": posted.cid,
            }
        )
        await _write(request, sent, after_post=True)
        _count(request, platform, "reply", "sent")
        logger.info("reply %s of %s to %s sent on %s as %s", request_id, brand, mention_id, platform, posted.post_id)
        handled = views.handled(brand, mention_id)
        if handled is None:
            handled = MentionHandled(
                mention_id=mention_id,
                brand=brand,
                by=body.by or f"{principal.role} {principal.key_id}",
                note=f"replied on {platform}: {posted.url or posted.post_id}"[:2000],
                at=sent.at,
                published_at=mention.published_at,
            )
            await _write(request, handled, after_post=True)
            request.app.state.metrics.actions.labels("handled").inc()
        return _answer(sent, handled, mention.published_at)


@router.post(
    "/authors/{platform}/{author_id:path}/follow",
    response_model=OutreachAnswer,
    responses=_errors(e404="unknown brand (or one this key may not see)", **_SEND_ERRORS),
)
async def follow_author(
    request: Request,
    response: Response,
    principal: Responder,
    platform: Annotated[Platform, PathParam(description="mastodon or bluesky")],
    author_id: Annotated[
        str, PathParam(description="Mastodon `user@instance`; Bluesky DID or handle", examples=["jane@mastodon.social"])
    ],
    body: FollowRequest | None = None,
    idempotency_key: IdempotencyHeader = None,
) -> OutreachAnswer:
    """Follow an author with the brand's account (the author ids of mentions work as they are:
    `mastodon:jane@host`, `bluesky:did:plc:…`)."""
    engagement = _engagement(request)
    body = body or FollowRequest()
    request_id = _request_id(idempotency_key, body.request_id)
    if body.brand is not None:
        brand = _visible(request, principal, body.brand)
    else:
        able = [b for b in principal.visible(engagement.clients) if engagement.client(b, platform) is not None]
        if len(able) != 1:
            why = "several brands this key may see have" if able else "no brand this key may see has"
            raise HTTPException(422, f"brand: {why} a {platform} account; say whose account follows")
        brand = able[0]
    client = engagement.client(brand, platform)
    if client is None:
        raise HTTPException(422, f"brand '{brand}' has no {platform} account (brands.{brand}.accounts.{platform})")
    author = author_id.removeprefix(f"{platform}:")
    if isinstance(client, MastodonClient):
        try:
            split_acct(author)
        except ValueError as exc:
            raise HTTPException(422, f"author_id: {exc}") from None
    elif not author.removeprefix("@") or "/" in author:
        raise HTTPException(422, f"author_id: {author_id!r} is not a Bluesky DID or handle")
    digest = request_digest(kind="follow", platform=platform, author=author)
    async with engagement.lock(_key("follow", brand, request_id)):
        existing = engagement.log.get("follow", brand, request_id)
        if existing is not None and _replayed(request, existing, digest, response):
            return _answer(existing, None, None)
        now = engagement.clock()
        pending = existing or Outreach(
            kind="follow",
            state="pending",
            request_id=request_id,
            brand=brand,
            platform=platform,
            by=body.by,
            key_id=principal.key_id,
            at=now,
            digest=digest,
            author=author,
            rkey=record_key(brand, "follow", request_id) if platform == "bluesky" else None,
            created_at=now if platform == "bluesky" else None,
        )
        if existing is None:
            await _write(request, pending)
        try:
            if isinstance(client, MastodonClient):
                posted = await client.follow(author)
            else:
                assert pending.rkey is not None and pending.created_at is not None
                posted = await client.follow(author, pending.rkey, pending.created_at)
        except PlatformError as exc:
            raise _platform_failed(request, platform, "follow", exc) from None
        sent = pending.model_copy(
            update={
                "state": "sent",
                "at": engagement.clock(),
                "post_id": posted.post_id,
                "url": posted.url,
                "cid": posted.cid,
            }
        )
        await _write(request, sent, after_post=True)
        _count(request, platform, "follow", "sent")
        logger.info("follow %s of %s: %s on %s", request_id, brand, author, platform)
        return _answer(sent, None, None)


@router.get(
    "/brands/{brand}/accounts",
    response_model=BrandAccountsView,
    responses=_errors(e404="unknown brand, or one this key may not see"),
)
async def brand_accounts(
    request: Request, principal: Annotated[Principal, Depends(current_principal)], brand: str
) -> BrandAccountsView:
    """The brand's accounts that replies and follows go out with (platform, handle, server; never a secret),
    and whether this key may use them."""
    _visible(request, principal, brand)
    return BrandAccountsView(
        brand=brand, accounts=_engagement(request).accounts.get(brand, []), can_respond=principal.can_respond
    )
