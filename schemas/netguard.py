"""The "no private addresses" guard for every outbound connection to a URL someone else chose (feeds, webhooks).

A URL from the config, a feed or a redirect must not reach loopback, the LAN, link-local (cloud metadata at
169.254.169.254) or any other non-public address unless that address is inside a `fetch.allow_networks` network.
Checking the host name is not enough: the guard resolves it, checks every address it resolves to — including
the IPv4 hidden inside IPv6 (IPv4-mapped, -compatible, 6to4, Teredo, NAT64) and the legacy decimal, hex and
octal forms libc accepts (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`) — and then connects only to an address
it checked (the Host header and the TLS SNI keep the name), so a DNS answer that changes between the check and
the connect (rebinding) changes nothing.

Errors (the defaults; a service passes its own classes in `GuardErrors` so its callers' `except` clauses hold):

    GuardError
    ├── AddressForbidden    every address the host resolves to is refused
    │   └── UnsafeTarget    a connection the guard never makes (a unix socket)
    ├── ResolveFailed       DNS failure or an empty answer (an httpcore.ConnectError: httpx maps it)
    └── ResolveTimeout      resolving took over the connect timeout (an httpcore.ConnectTimeout)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from httpcore import AsyncNetworkBackend, AsyncNetworkStream
from httpcore._backends.auto import AutoBackend

from schemas.config import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port → the addresses it resolves to (injectable so tests can play a rebinding DNS server).
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


class GuardError(Exception):
    """The guard would not, or could not, connect."""


class AddressForbidden(GuardError):
    """Every address the host resolves to is refused by the address policy."""


class UnsafeTarget(AddressForbidden):
    """A kind of connection the guard never makes (unix sockets)."""


class ResolveFailed(GuardError, httpcore.ConnectError):
    """The host could not be resolved (httpx raises it as httpx.ConnectError)."""


class ResolveTimeout(GuardError, httpcore.ConnectTimeout):
    """Resolving the host took over the connect timeout (httpx raises it as httpx.ConnectTimeout)."""


@dataclass(frozen=True)
class GuardErrors:
    """The exception classes the guard raises, each called with one message argument."""

    forbidden: type[Exception] = AddressForbidden
    unsafe_target: type[Exception] = UnsafeTarget
    resolve_failed: type[Exception] = ResolveFailed
    resolve_timeout: type[Exception] = ResolveTimeout


GUARD_ERRORS = GuardErrors()

# ---------------------------------------------------------------------------------------------- address policy

# Ranges that hide an IPv4 address inside an IPv6 one, beyond what `ipaddress` decodes itself.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def parse_networks(networks: Iterable[str]) -> tuple[IPNetwork, ...]:
    """`fetch.allow_networks` entries ("127.0.0.0/8", "::1/128", "10.1.2.3") → networks; ConfigError (a
    ValueError) names a bad one."""
    parsed: list[IPNetwork] = []
    for text in networks:
        try:
            parsed.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"fetch.allow_networks: {text!r} is not a network ({exc})") from None
    return tuple(parsed)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, 6to4, Teredo, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _NAT64_LOCAL or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _kind(address: IPAddress) -> str | None:
    """What makes `address` non-public (None when it is public)."""
    for name, flag in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    ):
        if flag:
            return name
    return None


def address_refusal(address: IPAddress, allow: Iterable[IPNetwork], *, inner_first: bool = True) -> str | None:
    """Why `address` may not be connected to (None when it may): it must be public, or inside an allowed network.

    An IPv6 address carrying an IPv4 one is checked as both. `inner_first` names the IPv4 inside first, i.e.
    what the address really reaches ("::ffff:7f00:1 (127.0.0.1) is a loopback address"); False names the IPv6
    address first (the wording the feeds' fetcher has always used).
    """
    inner = embedded_ipv4(address)
    if inner is None:
        candidates: list[IPAddress] = [address]
    else:
        candidates = [inner, address] if inner_first else [address, inner]
    allowed = tuple(allow)
    if any(c in net for c in candidates for net in allowed if c.version == net.version):
        return None
    for candidate in candidates:
        kind = _kind(candidate)
        if kind is not None:
            shown = f"{address} ({candidate})" if candidate is not address else str(address)
            return f"{shown} is a {kind} address and not in fetch.allow_networks"
    return None


def ip_literal(host: str) -> IPAddress | None:
    """The address a host string denotes by itself, in every form a resolver would accept.

    Besides the usual dotted quad and IPv6 (brackets and zone allowed), this decodes the legacy inet_aton forms
    that libc resolvers accept and that slip past naive checks: `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`.
    """
    text = host.strip().rstrip(".").strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    parts = text.split(".")
    if not parts or len(parts) > 4 or not all(_is_legacy_number(p) for p in parts):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def _is_legacy_number(part: str) -> bool:
    lower = part.lower()
    if lower.startswith("0x"):
        return len(lower) > 2 and all(c in "0123456789abcdef" for c in lower[2:])
    return part.isdigit()


# ---------------------------------------------------------------------------------------------- resolve and check


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Resolve with the system resolver (getaddrinfo in a thread), keeping the order it prefers; socket.gaierror
    when the name does not resolve (`resolve_permitted` turns it into `GuardErrors.resolve_failed`)."""
    literal = ip_literal(host)
    if literal is not None:
        return [literal]
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def resolve_permitted(
    host: str,
    port: int,
    *,
    allow: tuple[IPNetwork, ...],
    resolver: Resolver,
    timeout: float | None,
    errors: GuardErrors = GUARD_ERRORS,
    inner_first: bool = True,
) -> list[IPAddress]:
    """The addresses of `host` the policy permits, in the resolver's order (never empty).

    Raises `errors.resolve_timeout` / `errors.resolve_failed` when resolving fails, `errors.forbidden` (naming
    the first refusal) when every address is refused.
    """
    try:
        async with asyncio.timeout(timeout):
            addresses = await resolver(host, port)
    except TimeoutError:
        raise errors.resolve_timeout(f"resolving {host!r} took over {timeout}s") from None
    except OSError as exc:
        raise errors.resolve_failed(f"cannot resolve {host!r}: {exc}") from None
    if not addresses:
        raise errors.resolve_failed(f"{host!r} resolves to no address")
    refusals = [(a, address_refusal(a, allow, inner_first=inner_first)) for a in addresses]
    permitted = [a for a, why in refusals if why is None]
    if not permitted:
        raise errors.forbidden(f"{host!r} refused: {refusals[0][1]}")
    return permitted


class PinnedBackend(AsyncNetworkBackend):
    """httpcore network backend that resolves, checks every address, and connects to a checked address only."""

    def __init__(
        self,
        allow: tuple[IPNetwork, ...],
        resolver: Resolver = system_resolver,
        *,
        errors: GuardErrors = GUARD_ERRORS,
        inner_first: bool = True,
    ) -> None:
        self.allow = allow
        self.resolver = resolver
        self.errors = errors
        self.inner_first = inner_first
        self._inner = AutoBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        permitted = await resolve_permitted(
            host,
            port,
            allow=self.allow,
            resolver=self.resolver,
            timeout=timeout,
            errors=self.errors,
            inner_first=self.inner_first,
        )
        last: Exception | None = None
        for address in permitted:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> AsyncNetworkStream:
        raise self.errors.unsafe_target("unix sockets are never connected to")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on the pinned backend (and no proxy from the environment)."""

    def __init__(self, backend: PinnedBackend, max_connections: int, keepalive_expiry: float | None = 30.0) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            network_backend=backend,
        )
