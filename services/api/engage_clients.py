"""The brands' accounts on Mastodon and Bluesky, as clients that reply to a post and follow an author.

Mastodon: `POST /api/v1/statuses` (`status`, `in_reply_to_id`) with an `Idempotency-Key`, and
`POST /api/v1/accounts/:id/follow`; posts and accounts of other instances are found through the brand's instance
(`/api/v2/search?resolve=true`), since ids are local to each instance. Bluesky (AT Protocol, XRPC on the account's
PDS): `com.atproto.server.createSession` with the app password, then `com.atproto.repo.createRecord` of an
`app.bsky.feed.post` with a reply ref, or of an `app.bsky.graph.follow`, under a record key made from the request id: a
retry (on any replica) finds the record already there (`com.atproto.repo.getRecord`) instead of posting twice.

Secrets (the token, the app password, the session's JWTs) go in request headers or bodies to the account's own
server only; they are never logged and never part of an error. Every failure is a `PlatformError`: the platform
refused (4xx: `PlatformRefused`), is unreachable or failing (`PlatformUnavailable`) or too slow (`PlatformTimeout`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from schemas.config import BlueskyAccount, MastodonAccount
from schemas.models import ReplyRef
from schemas.netguard import AddressForbidden, IPNetwork, PinnedBackend, PinnedTransport, system_resolver

logger = logging.getLogger(__name__)

POST = "app.bsky.feed.post"
FOLLOW = "app.bsky.graph.follow"
_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_DID = re.compile(r"^did:[a-z]+:[A-Za-z0-9._:%-]{1,2000}$")
_AT_POST = re.compile(r"^at://([^/]+)/app\.bsky\.feed\.post/([^/?#]+)$")
_ACCT = re.compile(r"^@?([A-Za-z0-9_]{1,64})(?:@([A-Za-z0-9.-]{1,253}))?$")
MAX_MESSAGE = 300


class PlatformError(Exception):
    """A platform call failed; `status` is the API's answer (422, 409, 502, 504) and the message is safe to show."""

    status = 502


class PlatformRefused(PlatformError):
    """The platform answered 4xx: the request was wrong for it (422), or conflicts with its state (409)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class PlatformUnavailable(PlatformError):
    """Unreachable, 5xx, or rate-limited: nothing was posted; retry later."""

    status = 502


class PlatformTimeout(PlatformError):
    """No answer in time: the post may or may not have been taken; a retry with the same request id is safe."""

    status = 504


@dataclass(frozen=True)
class Posted:
    """What the platform made: its id (Mastodon status or account id, Bluesky at:// URI), a URL, Bluesky's CID."""

    post_id: str
    url: str | None = None
    cid: str | None = None


# TIDs made from a request id fall in 2024-2025: they look like the record keys clients make.
_TID_EPOCH_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
_TID_SPAN_US = 2 * 365 * 86_400_000_000


def record_key(*parts: str) -> str:
    """A Bluesky record key (a TID: 13 base32-sortable characters, 53 bits of microseconds then a 10-bit clock
    id) made only from `parts` (brand, kind, request id): every replica and every retry of a request writes
    the same key, so the PDS refuses a second record instead of posting it twice."""
    digest = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:10], "big")
    micros = _TID_EPOCH_US + (digest >> 10) % _TID_SPAN_US
    value = (micros << 10) | (digest & 0x3FF)
    out = []
    for _ in range(13):
        out.append(_TID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def _message(response: httpx.Response) -> str:
    """The platform's own words for a refusal: Mastodon's `error`, XRPC's `error: message`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        error, message = body.get("error"), body.get("message") or body.get("error_description")
        parts = [str(p) for p in (error, message) if isinstance(p, str) and p]
        if parts:
            return ": ".join(parts)[:MAX_MESSAGE]
    return f"HTTP {response.status_code}"


class _Http:
    """One httpx client per account: connections only to addresses the guard allows, no redirects followed."""

    def __init__(self, base: str, platform: str, allow: tuple[IPNetwork, ...], timeout: float) -> None:
        self.base = base.rstrip("/")
        self.platform = platform
        self.host = httpx.URL(self.base).host
        self.client = httpx.AsyncClient(
            transport=PinnedTransport(PinnedBackend(allow, system_resolver), max_connections=8),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": "ecoute-engage/1", "accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """One request; PlatformUnavailable/PlatformTimeout when it gets no HTTP answer or a 5xx/429/3xx."""
        what = f"{self.platform} ({self.host}) {method} {path}"
        try:
            response = await self.client.request(method, self.base + path, headers=headers, params=params, json=json)
        except httpx.TimeoutException as exc:
            logger.warning("%s: timed out (%s)", what, type(exc).__name__)
            raise PlatformTimeout(f"{self.platform} did not answer in time; retry with the same request id") from None
        except AddressForbidden as exc:
            logger.warning("%s: address refused: %s", what, exc)
            raise PlatformUnavailable(f"{self.platform} server address refused: {exc}") from None
        except (httpx.HTTPError, OSError) as exc:
            logger.warning("%s: %s", what, type(exc).__name__)
            raise PlatformUnavailable(f"{self.platform} is unreachable ({type(exc).__name__}); retry later") from None
        status = response.status_code
        if status >= 500 or status == 429 or 300 <= status < 400:
            logger.warning("%s: HTTP %d", what, status)
            raise PlatformUnavailable(f"{self.platform} answered HTTP {status}: {_message(response)}")
        return response


# ---------------------------------------------------------------------------------------------- Mastodon


def split_acct(value: str) -> tuple[str, str | None]:
    """`jane`, `@jane@host`, `mastodon:jane@host` → (username, host or None); ValueError if it is not an acct."""
    match = _ACCT.match(value.removeprefix("mastodon:"))
    if match is None:
        raise ValueError(f"{value!r} is not a Mastodon account (user@instance)")
    return match.group(1), (match.group(2) or "").lower() or None


class MastodonClient:
    """The brand's Mastodon account (its instance and access token)."""

    platform = "mastodon"

    def __init__(self, account: MastodonAccount, allow: tuple[IPNetwork, ...], timeout: float) -> None:
        self._token = account.token
        self.http = _Http(account.instance, self.platform, allow, timeout)
        self.host = (self.http.host or "").lower()

    async def aclose(self) -> None:
        await self.http.aclose()

    def _auth(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {self._token.get_secret_value()}", **(extra or {})}

    def mention_prefix(self, acct: str) -> str:
        """How a reply names the author, as Mastodon clients write it: `@user` on the same instance, else
        `@user@host`."""
        user, host = split_acct(acct)
        return f"@{user}" if host in (None, self.host) else f"@{user}@{host}"

    def reply_text(self, text: str, acct: str | None) -> str:
        """The status: the author's @mention first unless the text already names them."""
        if not acct:
            return text
        prefix = self.mention_prefix(acct)
        if re.search(rf"(?<![\w@]){re.escape(prefix)}(?![\w@.-])", text, re.IGNORECASE):
            return text
        return f"{prefix} {text}"

    def _refused(self, response: httpx.Response, what: str) -> PlatformRefused:
        logger.info("mastodon (%s): %s refused: HTTP %d", self.host, what, response.status_code)
        return PlatformRefused(
            f"mastodon refused {what}: {_message(response)}", 409 if response.status_code == 409 else 422
        )

    async def local_status_id(self, source_host: str, status_id: str, status_url: str | None) -> str:
        """The status's id on the brand's instance: the same one when the mention was read there, else found by
        its URL through the instance's search (which fetches it from its home instance)."""
        if source_host.lower() == self.host:
            return status_id
        if not status_url:
            raise PlatformRefused(f"the post is on {source_host} and has no URL to find it from {self.host}")
        response = await self.http.call(
            "GET",
            "/api/v2/search",
            headers=self._auth(),
            params={"q": status_url, "type": "statuses", "resolve": "true", "limit": "1"},
        )
        if response.status_code >= 400:
            raise self._refused(response, "the search for the post")
        statuses = (response.json() or {}).get("statuses") or []
        if not statuses or not isinstance(statuses[0], Mapping) or not isinstance(statuses[0].get("id"), str):
            raise PlatformRefused(f"{self.host} could not find the post {status_url}")
        found: str = statuses[0]["id"]
        return found

    async def reply(
        self,
        *,
        source_host: str,
        status_id: str,
        status_url: str | None,
        acct: str | None,
        text: str,
        idempotency_key: str,
    ) -> Posted:
        in_reply_to = await self.local_status_id(source_host, status_id, status_url)
        response = await self.http.call(
            "POST",
            "/api/v1/statuses",
            # Mastodon keeps the Idempotency-Key an hour: a retry gets the status already made, not a second one.
            headers=self._auth({"idempotency-key": idempotency_key}),
            json={"status": self.reply_text(text, acct), "in_reply_to_id": in_reply_to},
        )
        if response.status_code >= 400:
            raise self._refused(response, "the reply")
        status = response.json()
        if not isinstance(status, Mapping) or not isinstance(status.get("id"), str):
            raise PlatformUnavailable("mastodon answered the reply without a status id")
        url = status.get("url") or status.get("uri")
        return Posted(status["id"], url if isinstance(url, str) else None)

    async def account_id(self, acct: str) -> tuple[str, str | None]:
        """The account's id (and profile URL) on the brand's instance: lookup, else a resolving search."""
        user, host = split_acct(acct)
        full = user if host in (None, self.host) else f"{user}@{host}"
        response = await self.http.call("GET", "/api/v1/accounts/lookup", headers=self._auth(), params={"acct": full})
        if response.status_code == 200:
            found = response.json()
            if isinstance(found, Mapping) and isinstance(found.get("id"), str):
                return found["id"], found.get("url") if isinstance(found.get("url"), str) else None
        elif response.status_code != 404:
            raise self._refused(response, "the account lookup")
        response = await self.http.call(
            "GET",
            "/api/v2/search",
            headers=self._auth(),
            params={"q": f"@{full}", "type": "accounts", "resolve": "true", "limit": "5"},
        )
        if response.status_code >= 400:
            raise self._refused(response, "the account search")
        for account in (response.json() or {}).get("accounts") or []:
            if isinstance(account, Mapping) and str(account.get("acct", "")).lower() == full.lower():
                url = account.get("url")
                return str(account["id"]), url if isinstance(url, str) else None
        raise PlatformRefused(f"{self.host} could not find the account @{full}")

    async def follow(self, acct: str) -> Posted:
        account_id, url = await self.account_id(acct)
        response = await self.http.call(
            "POST", f"/api/v1/accounts/{quote(account_id, safe='')}/follow", headers=self._auth(), json={}
        )
        if response.status_code >= 400:
            raise self._refused(response, "the follow")
        return Posted(account_id, url)


# ---------------------------------------------------------------------------------------------- Bluesky


def post_url(uri: str) -> str | None:
    """at://did/app.bsky.feed.post/rkey → its bsky.app page."""
    match = _AT_POST.match(uri)
    return f"https://bsky.app/profile/{match.group(1)}/post/{match.group(2)}" if match else None


class BlueskyClient:
    """The brand's Bluesky account: a session on its PDS from the handle and app password, renewed when expired."""

    platform = "bluesky"

    def __init__(self, account: BlueskyAccount, allow: tuple[IPNetwork, ...], timeout: float) -> None:
        self._handle = account.handle.removeprefix("@")
        self._password = account.app_password
        self.http = _Http(account.service, self.platform, allow, timeout)
        self._session: tuple[str, str] | None = None  # (accessJwt, did)
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _login(self, renew: bool = False) -> tuple[str, str]:
        async with self._lock:
            if self._session is None or renew:
                response = await self.http.call(
                    "POST",
                    "/xrpc/com.atproto.server.createSession",
                    json={"identifier": self._handle, "password": self._password.get_secret_value()},
                )
                if response.status_code >= 400:
                    logger.warning(
                        "bluesky (%s): login of %s refused: HTTP %d", self.http.host, self._handle, response.status_code
                    )
                    raise PlatformUnavailable(f"bluesky refused the brand account's login: {_message(response)}")
                body = response.json()
                if not isinstance(body, Mapping) or not isinstance(body.get("accessJwt"), str):
                    raise PlatformUnavailable("bluesky answered the login without a session")
                self._session = (body["accessJwt"], str(body.get("did") or self._handle))
            return self._session

    async def _xrpc(
        self, method: str, nsid: str, *, params: Mapping[str, str] | None = None, body: Any = None
    ) -> httpx.Response:
        """An authenticated XRPC call; an expired session is renewed once."""
        for attempt in (0, 1):
            jwt, _ = await self._login(renew=attempt == 1)
            response = await self.http.call(
                method, f"/xrpc/{nsid}", headers={"authorization": f"Bearer {jwt}"}, params=params, json=body
            )
            expired = response.status_code == 401 or (
                response.status_code == 400 and "ExpiredToken" in _message(response)
            )
            if not expired:
                return response
        return response

    async def did(self) -> str:
        return (await self._login())[1]

    async def _get_record(self, repo: str, collection: str, rkey: str) -> Mapping[str, Any] | None:
        response = await self._xrpc(
            "GET", "com.atproto.repo.getRecord", params={"repo": repo, "collection": collection, "rkey": rkey}
        )
        if response.status_code >= 400:
            return None
        found = response.json()
        return found if isinstance(found, Mapping) and isinstance(found.get("uri"), str) else None

    async def reply_ref_of(self, did: str, rkey: str) -> ReplyRef:
        """The reply ref of a post known only by its id (no CID kept): its record, read through the PDS."""
        record = await self._get_record(did, POST, rkey)
        if record is None or not isinstance(record.get("cid"), str):
            raise PlatformRefused(f"bluesky could not find the post at://{did}/{POST}/{rkey}")
        own = {"uri": record["uri"], "cid": record["cid"]}
        value: Mapping[str, Any] = record["value"] if isinstance(record.get("value"), Mapping) else {}
        reply: Mapping[str, Any] = value["reply"] if isinstance(value.get("reply"), Mapping) else {}
        root: Mapping[str, Any] | None = reply["root"] if isinstance(reply.get("root"), Mapping) else None
        root_ref = root if root and isinstance(root.get("uri"), str) and isinstance(root.get("cid"), str) else own
        return ReplyRef.model_validate({"root": {"uri": root_ref["uri"], "cid": root_ref["cid"]}, "parent": own})

    async def _create(self, collection: str, rkey: str, record: Mapping[str, Any], what: str) -> Posted:
        """createRecord under `rkey`; if that key is taken by an earlier attempt of the same request, that record."""
        repo = await self.did()
        response = await self._xrpc(
            "POST",
            "com.atproto.repo.createRecord",
            body={"repo": repo, "collection": collection, "rkey": rkey, "record": dict(record)},
        )
        if response.status_code < 400:
            made = response.json()
            if not isinstance(made, Mapping) or not isinstance(made.get("uri"), str):
                raise PlatformUnavailable(f"bluesky answered the {what} without a record uri")
            cid = made.get("cid")
            return Posted(made["uri"], post_url(made["uri"]), cid if isinstance(cid, str) else None)
        # A retry whose first attempt got through meets its own record: that one is the answer.
        earlier = await self._get_record(repo, collection, rkey)
        if earlier is not None:
            logger.info("bluesky: %s %s was already made by an earlier attempt", what, rkey)
            cid = earlier.get("cid")
            return Posted(earlier["uri"], post_url(earlier["uri"]), cid if isinstance(cid, str) else None)
        logger.info("bluesky (%s): %s refused: HTTP %d", self.http.host, what, response.status_code)
        raise PlatformRefused(
            f"bluesky refused the {what}: {_message(response)}", 409 if response.status_code == 409 else 422
        )

    async def reply(self, *, ref: ReplyRef, text: str, rkey: str, created_at: datetime, lang: str | None) -> Posted:
        record: dict[str, Any] = {
            "$type": POST,
            "text": text,
            "createdAt": created_at.isoformat().replace("+00:00", "Z"),
            "reply": ref.model_dump(mode="json"),
        }
        if lang:
            record["langs"] = [lang]
        return await self._create(POST, rkey, record, "reply")

    async def resolve(self, actor: str) -> str:
        """A DID as it is, a handle through com.atproto.identity.resolveHandle."""
        actor = actor.removeprefix("bluesky:").removeprefix("@")
        if _DID.match(actor):
            return actor
        response = await self._xrpc("GET", "com.atproto.identity.resolveHandle", params={"handle": actor})
        found = response.json() if response.status_code < 400 else None
        if not isinstance(found, Mapping) or not isinstance(found.get("did"), str):
            raise PlatformRefused(f"bluesky could not resolve the handle {actor!r}")
        did: str = found["did"]
        return did

    async def follow(self, actor: str, rkey: str, created_at: datetime) -> Posted:
        subject = await self.resolve(actor)
        record = {"$type": FOLLOW, "subject": subject, "createdAt": created_at.isoformat().replace("+00:00", "Z")}
        made = await self._create(FOLLOW, rkey, record, "follow")
        return Posted(made.post_id, f"https://bsky.app/profile/{subject}", made.cid)


__all__ = [
    "BlueskyClient",
    "MastodonClient",
    "PlatformError",
    "PlatformRefused",
    "PlatformTimeout",
    "PlatformUnavailable",
    "Posted",
    "post_url",
    "record_key",
    "split_acct",
]
