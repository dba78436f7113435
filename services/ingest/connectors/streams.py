"""Connections SafeFetcher's one-shot GET does not cover, under the same address guard: server-sent event streams
(Mastodon), form POSTs (OAuth tokens) and websockets (Bluesky Jetstream).

Every connection resolves the host with the fetcher's resolver, checks every address against
`fetch.allow_networks` (schemas.netguard, set up as in fetch.py) and connects to a checked address only;
redirects are not followed.
Errors are the fetcher's (`FetchError` subclasses), so the source runner counts and backs off the same way.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from schemas.netguard import PinnedTransport, resolve_permitted
from services.ingest.connectors.base import ContentRefused
from services.ingest.connectors.fetch import (
    GUARD_ERRORS,
    FetchConnectError,
    FetchedResponse,
    FetchError,
    FetchTimeout,
    HTTPStatusError,
    IPAddress,
    Resolver,
    ResponseTooLarge,
    SafeFetcher,
    UnsafeURL,
    check_url,
    pinned_backend,
    system_resolver,
)

logger = logging.getLogger(__name__)

# One server-sent event (all its data lines) larger than this ends the stream.
MAX_EVENT_BYTES = 1024 * 1024


def resolver_of(fetcher: SafeFetcher) -> Resolver:
    """The resolver the fetcher was built with (tests inject one), else the system's."""
    resolver: Resolver | None = getattr(fetcher, "resolver", None)
    return resolver or system_resolver


async def checked_address(fetcher: SafeFetcher, host: str, port: int) -> IPAddress:
    """The first address of `host` that the fetch policy permits; ForbiddenAddress when none is."""
    permitted = await resolve_permitted(
        host,
        port,
        allow=fetcher.policy.allow_networks,
        resolver=resolver_of(fetcher),
        timeout=fetcher.policy.connect_timeout,
        errors=GUARD_ERRORS,
        inner_first=False,
    )
    return permitted[0]


def json_body(response: FetchedResponse) -> Any:
    """The response's JSON; ContentRefused('malformed') when it is not JSON."""
    try:
        return response.json()
    except ValueError as exc:
        raise ContentRefused("malformed", f"{response.url}: answer is not JSON: {exc}") from None


# ---------------------------------------------------------------------------------------------- HTTP


@dataclass
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class SseDecoder:
    """Bytes of a text/event-stream → events (WHATWG rules: `field: value` lines, a blank line dispatches)."""

    max_event_bytes: int = MAX_EVENT_BYTES
    _buffer: bytearray = field(default_factory=bytearray)
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _size: int = 0
    _id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        self._buffer += chunk
        events: list[ServerSentEvent] = []
        while True:
            end = self._line_end()
            if end is None:
                break
            cut, skip = end
            line = bytes(self._buffer[:cut]).decode("utf-8", "replace")
            del self._buffer[: cut + skip]
            event = self._line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) + self._size > self.max_event_bytes:
            raise ResponseTooLarge(f"a server-sent event over {self.max_event_bytes} bytes")
        return events

    def _line_end(self) -> tuple[int, int] | None:
        """Where the first line ends and how long its terminator is (LF, CRLF or CR); None: no full line yet."""
        found = [i for i in (self._buffer.find(b"\n"), self._buffer.find(b"\r")) if i >= 0]
        if not found:
            return None
        index = min(found)
        if self._buffer[index] == 0x0A:
            return index, 1
        if index + 1 == len(self._buffer):
            return None  # maybe the CR of a CRLF: wait for the next byte
        return index, 2 if self._buffer[index + 1] == 0x0A else 1

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._size = "", [], 0
            return event
        if line.startswith(":"):
            return None  # a comment: Mastodon's heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
            self._size += len(value)
        elif name == "id":
            self._id = value
        return None


class GuardedHTTP:
    """An HTTP client on the pinned, address-checked backend, for what SafeFetcher.get does not do."""

    def __init__(self, fetcher: SafeFetcher) -> None:
        policy = fetcher.policy
        self.policy = policy
        self._client = httpx.AsyncClient(
            transport=PinnedTransport(
                pinned_backend(policy.allow_networks, resolver_of(fetcher)), max_connections=16, keepalive_expiry=None
            ),
            timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": policy.user_agent},
        )

    async def __aenter__(self) -> GuardedHTTP:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post_form(
        self, url: str, form: Mapping[str, str], *, auth: tuple[str, str] | None = None
    ) -> FetchedResponse:
        """One POST of a form (no retry: a token request is cheap to redo on the next poll)."""
        target = check_url(url)
        limit = self.policy.max_bytes
        try:
            async with self._client.stream("POST", target, data=dict(form), auth=auth) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise ResponseTooLarge(f"POST {target}: body over the {limit}-byte limit", url)
        except httpx.TimeoutException as exc:
            raise FetchTimeout(f"POST {target}: {type(exc).__name__}", url) from None
        except httpx.HTTPError as exc:
            raise FetchConnectError(f"POST {target}: {type(exc).__name__}: {exc}", url) from None
        if not 200 <= response.status_code < 300:
            raise HTTPStatusError(f"POST {target}: HTTP {response.status_code}", url, response.status_code)
        return FetchedResponse(str(target), response.status_code, response.headers, bytes(body))

    @asynccontextmanager
    async def event_stream(
        self, url: str, headers: Mapping[str, str], idle_timeout: float
    ) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        """Open a text/event-stream (HTTPStatusError unless 200); iterate its events until the server closes.

        `idle_timeout` bounds the silence between two reads (Mastodon sends a heartbeat every 15 s)."""
        target = check_url(url)
        timeout = httpx.Timeout(idle_timeout, connect=self.policy.connect_timeout)
        sent = {"accept": "text/event-stream", "cache-control": "no-cache", **headers}
        try:
            async with self._client.stream("GET", target, headers=sent, timeout=timeout) as response:
                if response.status_code != 200:
                    raise HTTPStatusError(
                        f"GET {target}: HTTP {response.status_code} for an event stream", url, response.status_code
                    )
                yield _events(response, str(target))
        except httpx.TimeoutException as exc:
            raise FetchTimeout(f"GET {target}: no byte for {idle_timeout:.0f}s ({type(exc).__name__})", url) from None
        except httpx.HTTPError as exc:
            raise FetchConnectError(f"GET {target}: {type(exc).__name__}: {exc}", url) from None


async def _events(response: httpx.Response, url: str) -> AsyncIterator[ServerSentEvent]:
    decoder = SseDecoder()
    try:
        async for chunk in response.aiter_raw():
            for event in decoder.feed(chunk):
                yield event
    except httpx.TimeoutException as exc:
        raise FetchTimeout(f"GET {url}: the event stream went silent ({type(exc).__name__})", url) from None
    except httpx.HTTPError as exc:
        raise FetchConnectError(f"GET {url}: the event stream broke: {type(exc).__name__}: {exc}", url) from None


# ---------------------------------------------------------------------------------------------- websockets


class _NoRedirects(connect):
    """websockets' connect, refusing redirects: a redirect would skip the address check."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def check_ws_url(url: str) -> tuple[str, int, bool]:
    """host, port, secure of a ws:// or wss:// URL; UnsafeURL for any other scheme, no host or credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"{url!r} is not a valid URL: {exc}", url) from None
    if parts.scheme not in ("ws", "wss"):
        raise UnsafeURL(f"{url}: only ws and wss URLs are opened, not {parts.scheme or 'no scheme'!r}", url)
    if not parts.hostname:
        raise UnsafeURL(f"{url}: no host", url)
    if parts.username or parts.password:
        raise UnsafeURL(f"{url}: credentials in URLs are refused", url)
    secure = parts.scheme == "wss"
    return parts.hostname, port or (443 if secure else 80), secure


@asynccontextmanager
async def open_websocket(
    fetcher: SafeFetcher, url: str, *, max_message_bytes: int = MAX_EVENT_BYTES
) -> AsyncIterator[ClientConnection]:
    """A websocket to a checked address of the URL's host (the Host header and TLS SNI keep the name)."""
    host, port, secure = check_ws_url(url)
    address = await checked_address(fetcher, host, port)
    options: dict[str, Any] = {"host": str(address), "port": port}
    if secure:
        options["server_hostname"] = host
    try:
        websocket = await _NoRedirects(
            url,
            proxy=None,
            open_timeout=fetcher.policy.connect_timeout,
            max_size=max_message_bytes,
            user_agent_header=fetcher.policy.user_agent,
            compression=None,
            **options,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise HTTPStatusError(f"websocket {url}: HTTP {status}", url, status) from None
    except InvalidURI as exc:
        raise UnsafeURL(f"websocket {url}: {exc}", url) from None
    except TimeoutError:
        raise FetchTimeout(f"websocket {url}: no handshake within {fetcher.policy.connect_timeout}s", url) from None
    except (OSError, InvalidHandshake) as exc:
        raise FetchConnectError(f"websocket {url}: {type(exc).__name__}: {exc}", url) from None
    except FetchError:
        raise
    try:
        yield websocket
    finally:
        await websocket.close()
