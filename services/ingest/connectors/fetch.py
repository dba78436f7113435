"""Safe HTTP fetching for every connector: SSRF guard, pinned DNS, redirects, size cap, retries, per-host cap.

A URL from the config (or a redirect) is fetched only over http/https, and only from public addresses unless
the address is inside a `fetch.allow_networks` network. The host is resolved once per connection, every
address is checked, and the connection goes to the checked address (the Host header and the TLS SNI keep the
name), so a DNS answer that changes between the check and the connect (rebinding) changes nothing. That guard
is schemas.netguard's (shared with the API's webhooks), set up here to raise the errors below.

Errors (all subclasses of `FetchError`; `reason` is the metric label):

    FetchError                  the URL could not be fetched
    ├── FetchRefused            we refused it; retrying won't help until the config or the remote changes
    │   ├── UnsafeURL           not http/https, no host, or unparseable          reason: bad_url
    │   ├── ForbiddenAddress    resolves to a private/loopback/… address         reason: forbidden_address
    │   ├── TooManyRedirects    more than `max_redirects` hops                  reason: too_many_redirects
    │   └── ResponseTooLarge    body over `max_bytes` (declared or streamed)    reason: too_large
    └── FetchFailed             the remote or the network failed (retried first, then raised)
        ├── FetchTimeout        connect or read timeout                         reason: timeout
        ├── FetchConnectError   DNS failure, connection refused or reset         reason: connect
        └── HTTPStatusError     a final status that is not 2xx/304 (`status`)   reason: http_status
            └── RateLimited     429 still there after the retries (`retry_after`) reason: rate_limited
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from schemas import netguard

# The guard's names the connectors and their tests import from here (`X as X`: an explicit re-export).
from schemas.netguard import GuardErrors, PinnedTransport
from schemas.netguard import IPAddress as IPAddress
from schemas.netguard import IPNetwork as IPNetwork
from schemas.netguard import PinnedBackend as PinnedBackend
from schemas.netguard import Resolver as Resolver
from schemas.netguard import embedded_ipv4 as embedded_ipv4
from schemas.netguard import ip_literal as ip_literal
from schemas.netguard import parse_networks as parse_networks
from schemas.netguard import system_resolver as system_resolver

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Statuses worth another attempt: the server says "later" or failed on its side.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
# Headers that must not follow a redirect to another origin.
CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")


class FetchError(Exception):
    """The URL could not be fetched; `reason` is the label used in metrics."""

    reason = "fetch_error"

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class FetchRefused(FetchError):
    """Refused by policy (address, scheme, size, redirects): not retried."""

    reason = "refused"


class UnsafeURL(FetchRefused):
    reason = "bad_url"


class ForbiddenAddress(FetchRefused):
    reason = "forbidden_address"


class TooManyRedirects(FetchRefused):
    reason = "too_many_redirects"


class ResponseTooLarge(FetchRefused):
    reason = "too_large"


class FetchFailed(FetchError):
    """The network or the remote failed; retried with backoff before this is raised."""

    reason = "fetch_failed"


class FetchTimeout(FetchFailed):
    reason = "timeout"


class FetchConnectError(FetchFailed):
    reason = "connect"


class HTTPStatusError(FetchFailed):
    reason = "http_status"

    def __init__(self, message: str, url: str | None = None, status: int = 0) -> None:
        super().__init__(message, url)
        self.status = status


class RateLimited(HTTPStatusError):
    reason = "rate_limited"

    def __init__(self, message: str, url: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, url, 429)
        self.retry_after = retry_after


# ---------------------------------------------------------------------------------------------- address policy

# The guard (schemas.netguard) raises the fetcher's own errors, so `except FetchError` covers it.
GUARD_ERRORS = GuardErrors(
    forbidden=ForbiddenAddress,
    unsafe_target=UnsafeURL,
    resolve_failed=FetchConnectError,
    resolve_timeout=FetchTimeout,
)


def address_refusal(address: IPAddress, allow: Iterable[IPNetwork]) -> str | None:
    """Why `address` may not be fetched (None when it may): public, or inside an allowed network."""
    return netguard.address_refusal(address, allow, inner_first=False)


def pinned_backend(allow: tuple[IPNetwork, ...], resolver: Resolver) -> PinnedBackend:
    """The guard's backend raising FetchError subclasses and wording refusals as the fetcher always has."""
    return PinnedBackend(allow, resolver, errors=GUARD_ERRORS, inner_first=False)


# ---------------------------------------------------------------------------------------------- the fetcher


@dataclass(frozen=True)
class FetchPolicy:
    """Limits applied to every fetch; `FetchPolicy.from_settings` builds it from the ingest settings."""

    allow_networks: tuple[IPNetwork, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    max_bytes: int = 5 * MIB
    max_redirects: int = 5
    per_host: int = 2
    max_attempts: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    # A Retry-After longer than this is not slept through: RateLimited goes up to the source's schedule.
    max_retry_after: float = 120.0
    user_agent: str = "ecoute/0.1 (+https://github.com/ecoute)"


@dataclass(frozen=True)
class FetchedResponse:
    url: str  # after redirects
    status: int
    headers: httpx.Headers
    content: bytes = b""
    attempts: int = 1

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def json(self) -> Any:
        return orjson.loads(self.content)


@dataclass
class _HostGate:
    semaphore: asyncio.Semaphore
    in_flight: int = 0


def check_url(url: httpx.URL | str) -> httpx.URL:
    """The URL, if it is http(s) with a host; UnsafeURL otherwise (file:, gopher:, ftp:, data:, no host…)."""
    try:
        parsed = httpx.URL(str(url))
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeURL(f"{url!r} is not a valid URL: {exc}", str(url)) from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURL(f"{url}: only http and https URLs are fetched, not {parsed.scheme or 'no scheme'!r}", str(url))
    if not parsed.host:
        raise UnsafeURL(f"{url}: no host", str(url))
    if parsed.userinfo:
        raise UnsafeURL(f"{parsed.copy_with(username=None, password=None)}: credentials in URLs are refused", str(url))
    return parsed


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class SafeFetcher:
    """One shared HTTP client for all sources: `await fetcher.get(url, headers)` → FetchedResponse or FetchError."""

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        resolver: Resolver = system_resolver,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._gates: dict[str, _HostGate] = {}
        self._client = httpx.AsyncClient(
            transport=PinnedTransport(
                pinned_backend(policy.allow_networks, resolver), max_connections=max(10, policy.per_host * 8)
            ),
            timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout, pool=policy.read_timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": policy.user_agent},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> SafeFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def in_flight(self, host: str) -> int:
        gate = self._gates.get(host.lower())
        return gate.in_flight if gate else 0

    def _gate(self, host: str) -> _HostGate:
        key = host.lower()
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _HostGate(asyncio.Semaphore(self.policy.per_host))
        return gate

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter for retry number `attempt` (1-based): half fixed, half random."""
        ceiling = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** (attempt - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> FetchedResponse:
        """GET with retries: 429 (honouring Retry-After), 5xx, timeouts and connection errors are retried with
        exponential backoff and jitter up to `max_attempts`; a 304 is returned as is (`not_modified`)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._get_following_redirects(url, headers or {})
            except FetchFailed as exc:
                if attempt >= self.policy.max_attempts:
                    raise
                delay = self.backoff(attempt)
                logger.info("GET %s failed (%s); attempt %d, retrying in %.2fs", url, exc, attempt, delay)
                await self._sleep(delay)
                continue
            if response.status not in RETRY_STATUSES:
                if 200 <= response.status < 300 or response.status == 304:
                    return FetchedResponse(response.url, response.status, response.headers, response.content, attempt)
                raise HTTPStatusError(f"GET {response.url}: HTTP {response.status}", response.url, response.status)
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            if response.status == 429 and retry_after is not None and retry_after > self.policy.max_retry_after:
                raise RateLimited(
                    f"GET {response.url}: HTTP 429, Retry-After {retry_after:.0f}s", response.url, retry_after
                )
            if attempt >= self.policy.max_attempts:
                if response.status == 429:
                    raise RateLimited(
                        f"GET {response.url}: HTTP 429 after {attempt} attempts", response.url, retry_after
                    )
                raise HTTPStatusError(
                    f"GET {response.url}: HTTP {response.status} after {attempt} attempts",
                    response.url,
                    response.status,
                )
            delay = max(retry_after or 0.0, self.backoff(attempt))
            if retry_after is not None:
                delay = min(delay, self.policy.max_retry_after)
            logger.info("GET %s: HTTP %d; attempt %d, retrying in %.2fs", response.url, response.status, attempt, delay)
            await self._sleep(delay)

    async def _get_following_redirects(self, url: str, headers: Mapping[str, str]) -> _Response:
        current = check_url(url)
        sent = dict(headers)
        for hop in range(self.policy.max_redirects + 1):
            response = await self._get_once(current, sent)
            if response.status not in REDIRECT_STATUSES:
                return response
            location = response.headers.get("location")
            if not location:
                return response
            if hop == self.policy.max_redirects:
                break
            target = check_url(current.join(location))
            logger.debug("GET %s: HTTP %d → %s", current, response.status, target)
            if (target.scheme, target.host, target.port) != (current.scheme, current.host, current.port):
                sent = {k: v for k, v in sent.items() if k.lower() not in CREDENTIAL_HEADERS}
            current = target
        raise TooManyRedirects(f"GET {url}: more than {self.policy.max_redirects} redirects", url)

    async def _get_once(self, url: httpx.URL, headers: Mapping[str, str]) -> _Response:
        gate = self._gate(url.host)
        async with gate.semaphore:
            gate.in_flight += 1
            try:
                return await self._read(url, headers)
            except httpx.TimeoutException as exc:
                raise FetchTimeout(
                    f"GET {url}: {type(exc).__name__} ({exc or 'no answer in time'})", str(url)
                ) from None
            except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as exc:
                raise FetchConnectError(f"GET {url}: {type(exc).__name__}: {exc}", str(url)) from None
            except httpx.InvalidURL as exc:
                raise UnsafeURL(f"GET {url}: {exc}", str(url)) from None
            except httpx.HTTPError as exc:  # decoding errors, protocol errors of other kinds
                raise FetchConnectError(f"GET {url}: {type(exc).__name__}: {exc}", str(url)) from None
            except FetchError as exc:
                exc.url = exc.url or str(url)
                raise
            finally:
                gate.in_flight -= 1

    async def _read(self, url: httpx.URL, headers: Mapping[str, str]) -> _Response:
        limit = self.policy.max_bytes
        async with self._client.stream("GET", url, headers=dict(headers)) as response:
            if response.status_code in REDIRECT_STATUSES or response.status_code == 304:
                return _Response(str(url), response.status_code, response.headers, b"")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise ResponseTooLarge(
                    f"GET {url}: body of {int(declared)} bytes is over the {limit}-byte limit", str(url)
                )
            body = bytearray()
            # Decoded bytes are counted, so a small gzip bomb is stopped too.
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ResponseTooLarge(f"GET {url}: body over the {limit}-byte limit (stopped reading)", str(url))
            return _Response(str(url), response.status_code, response.headers, bytes(body))


@dataclass(frozen=True)
class _Response:
    url: str
    status: int
    headers: httpx.Headers
    content: bytes = field(repr=False, default=b"")
