"""Who may call the API: API keys from the config (role and brands), a rate limit per key, FastAPI dependencies.

`KeyRing` and `RateLimiter` are plain classes (no FastAPI), tested alone; `current_principal`,
`stream_principal`, `require_admin` and `require_responder` are the dependencies the routes use. Roles: `read`
(every GET, acks and handled marks), `responder` (also replies and follows with the brands' accounts), `admin`
(everything, webhook deliveries included). With no key configured the API
is open (development mode) and every caller is an admin of every brand.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.base import SecurityBase

from schemas import ConfigError
from schemas.config import ApiKey

ALL_BRANDS = "*"
REALM = 'Bearer realm="ecoute"'


@dataclass(frozen=True)
class Principal:
    """The caller: which key (by a short fingerprint, never the key itself), its role and the brands it may see."""

    key_id: str
    role: str
    brands: frozenset[str] | None  # None: every brand

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_respond(self) -> bool:
        """May reply to mentions and follow authors with the brand's accounts (roles responder and admin)."""
        return self.role in ("admin", "responder")

    def can_see(self, brand: str) -> bool:
        return self.brands is None or brand in self.brands

    def visible(self, brands: Iterable[str]) -> list[str]:
        return [brand for brand in brands if self.can_see(brand)]


# Every caller when no key is configured.
OPEN_ACCESS = Principal(key_id="open", role="admin", brands=None)


def fingerprint(key: str) -> str:
    """A short, stable name for a key in logs and rate-limit buckets (a digest prefix: the key stays secret)."""
    return "key-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]


class KeyRing:
    """The configured keys, found by the SHA-256 digest of the presented key."""

    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self._entries: dict[bytes, Principal] = {}
        seen: set[bytes] = set()
        for index, entry in enumerate(keys):
            if not entry.key.strip():
                raise ConfigError(f"api_keys[{index}]: the key is empty")
            if not entry.brands:
                raise ConfigError(f"api_keys[{index}]: brands is empty (use ['*'] for every brand)")
            digest = hashlib.sha256(entry.key.encode("utf-8")).digest()
            if digest in seen:
                raise ConfigError(f"api_keys[{index}]: the same key is configured twice")
            seen.add(digest)
            brands = None if ALL_BRANDS in entry.brands else frozenset(entry.brands)
            self._entries[digest] = Principal(fingerprint(entry.key), entry.role, brands)

    @property
    def enabled(self) -> bool:
        """True once at least one key is configured: then every /v1 call needs one."""
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, presented: str) -> Principal | None:
        # One dict lookup per request, whatever the number of keys. It is keyed by the digest, never the key:
        # the time a lookup takes depends on the (randomised) hash of a digest the caller cannot steer, so it
        # says nothing about the configured keys.
        return self._entries.get(hashlib.sha256(presented.encode("utf-8")).digest())


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """A token bucket per key: `rate` tokens a second, at most `burst` saved up. `rate == 0` turns it off."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def acquire(self, key_id: str) -> float:
        """Take one token; 0.0 if granted, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


class AccessGuard:
    """Turns a presented key into a Principal or an HTTP error (401, 429), counting the refusals."""

    def __init__(
        self,
        keyring: KeyRing,
        limiter: RateLimiter,
        on_unauthorized: Callable[[str], None] | None = None,
        on_rate_limited: Callable[[], None] | None = None,
    ) -> None:
        self.keyring = keyring
        self.limiter = limiter
        self._on_unauthorized = on_unauthorized
        self._on_rate_limited = on_rate_limited

    def _refuse(self, reason: str, detail: str, challenge: str) -> HTTPException:
        if self._on_unauthorized is not None:
            self._on_unauthorized(reason)
        return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": challenge})

    def check(self, presented: str | None) -> Principal:
        if not self.keyring.enabled:
            return OPEN_ACCESS
        if not presented:
            raise self._refuse("missing", "an API key is required: send 'Authorization: Bearer <key>'", REALM)
        principal = self.keyring.authenticate(presented)
        if principal is None:
            raise self._refuse("invalid", "invalid API key", f'{REALM}, error="invalid_token"')
        wait = self.limiter.acquire(principal.key_id)
        if wait > 0:
            if self._on_rate_limited is not None:
                self._on_rate_limited()
            raise HTTPException(
                status_code=429,
                detail=f"rate limit of {self.limiter.rate:g} requests/s exceeded for this API key",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return principal


bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `api_keys` in the configuration, sent as `Authorization: Bearer <key>`.",
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def _guard(request: Request) -> AccessGuard:
    guard: AccessGuard = request.app.state.access
    return guard


def bearer_token(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header (as HTTPBearer reads it); None for anything else."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if not token or scheme.lower() != "bearer":
        return None
    return token


class ApiKeyAuth(SecurityBase):
    """The dependency of /v1 routes: the caller (401 without a valid key, 429 over the rate limit).

    One dependency that reads the header itself rather than a chain of two (HTTPBearer, then the check): it
    runs on every request. OpenAPI documents it as the same bearer scheme as `bearer_scheme`. The principal
    is also left in `request.state.principal`, for code that gets the request rather than dependencies."""

    def __init__(self, scheme: HTTPBearer) -> None:
        self.model = scheme.model
        self.scheme_name = scheme.scheme_name

    async def __call__(self, request: Request) -> Principal:
        principal = _guard(request).check(bearer_token(request.headers.get("authorization")))
        request.state.principal = principal
        return principal


current_principal = ApiKeyAuth(bearer_scheme)


def principal_of(request: Request) -> Principal | None:
    """The caller `current_principal` identified for this request, if it ran."""
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else None


async def stream_principal(
    request: Request,
    credentials: BearerCredentials,
    key: Annotated[
        str | None,
        Query(description="the API key, for clients that cannot set headers (browser EventSource)"),
    ] = None,
) -> Principal:
    """Like `current_principal`, also accepting `?key=` (EventSource cannot send an Authorization header)."""
    presented = credentials.credentials if credentials is not None else key
    principal = _guard(request).check(presented)
    request.state.principal = principal
    return principal


async def require_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The caller, if its key has the admin role; 403 otherwise."""
    if not principal.is_admin:
        raise HTTPException(status_code=403, detail="this endpoint needs an API key with the admin role")
    return principal


async def require_responder(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    """The caller, if its key may post with the brand's accounts (role responder or admin); 403 otherwise."""
    if not principal.can_respond:
        raise HTTPException(status_code=403, detail="this endpoint needs an API key with the responder or admin role")
    return principal


def brand_not_found(brand: str) -> HTTPException:
    """The answer for a brand the caller may not see: the same 404 as for a brand nobody knows."""
    return HTTPException(status_code=404, detail=f"unknown brand '{brand}'")
