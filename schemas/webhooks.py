"""What every webhook sender shares (the API's alert deliveries, the store's digests): the signature, Slack's
text escaping, and a signed POST through schemas.netguard's address guard whose every problem is an `Outcome`.

Signature: `X-Ecoute-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
from dataclasses import dataclass

import httpx

from schemas.config import WebhookConfig
from schemas.netguard import AddressForbidden, IPNetwork, PinnedBackend, PinnedTransport, Resolver, system_resolver

SIGNATURE_HEADER = "X-Ecoute-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Ecoute-Signature value for a body sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, now: float | None = None, tolerance: float = 300) -> bool:
    """What a receiver does: recompute the HMAC, compare in constant time, refuse stale timestamps (replays)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def mrkdwn(text: str) -> str:
    """Text made safe for Slack's mrkdwn (its three control characters escaped)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Outcome:
    """What one attempt gave."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    permanent: bool = False  # retrying cannot help (refused address, 410 Gone)


class SignedPoster:
    """POSTs a JSON body to a webhook, signed when the webhook has a secret; never follows redirects; connects
    only to addresses the guard allows (`fetch.allow_networks` for private ranges)."""

    def __init__(
        self,
        allow: tuple[IPNetwork, ...],
        timeout: float,
        resolver: Resolver = system_resolver,
        user_agent: str = "ecoute-webhooks/1",
    ) -> None:
        self._client = httpx.AsyncClient(
            transport=PinnedTransport(PinnedBackend(allow, resolver), max_connections=32),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": user_agent},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, hook: WebhookConfig, body: bytes, *, event: str, delivery: str, attempt: int) -> Outcome:
        """One attempt. `event` (X-Ecoute-Event) tells receivers what the body is; `delivery` (X-Ecoute-Delivery)
        stays the same across attempts, so a receiver can drop a repeat."""
        headers = {
            "content-type": "application/json",
            "x-ecoute-event": event,
            "x-ecoute-delivery": delivery,
            "x-ecoute-attempt": str(attempt),
        }
        if hook.secret:
            # Real time, not an injected clock: receivers compare it with theirs.
            headers[SIGNATURE_HEADER] = sign(hook.secret, int(time.time()), body)
        try:
            response = await self._client.post(hook.url, content=body, headers=headers)
        except AddressForbidden as exc:  # permanent: a refused address stays refused
            return Outcome(False, error=str(exc), permanent=True)
        except httpx.TimeoutException as exc:
            return Outcome(False, error=f"timeout: {type(exc).__name__}")
        except (httpx.HTTPError, OSError) as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(True, status_code=status)
        if 300 <= status < 400:
            location = response.headers.get("location", "?")
            return Outcome(False, status_code=status, error=f"redirect to {location[:200]} not followed")
        retry_after = None
        with contextlib.suppress(ValueError):
            retry_after = float(response.headers.get("retry-after", ""))
        return Outcome(
            False, status_code=status, error=f"HTTP {status}", retry_after=retry_after, permanent=status == 410
        )


__all__ = ["SIGNATURE_HEADER", "Outcome", "SignedPoster", "mrkdwn", "sign", "verify_signature"]
