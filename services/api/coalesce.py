"""One socket write per small HTTP answer instead of two.

uvicorn writes an answer's status line and headers when the app sends `http.response.start`, then the body
at `http.response.body`: two `write` calls, which with uvloop (and TCP_NODELAY) are two `send` system calls
and two TCP segments, and wake the client twice. `CoalescingTransport` holds back a write that is a
response head (it starts with `HTTP/` and ends with the blank line) until the next write, and sends both in
one `writelines` (one `writev` under uvloop). A head with nothing after it in the same turn of the event
loop (a streamed answer such as SSE, a 100 Continue, a HEAD answer) is sent at the next turn of the loop
(`call_soon`), and before the connection closes: nothing waits longer than one loop turn, and bytes keep
their order. `coalescing(protocol)` is uvicorn's HTTP protocol class (`http=`) with its transport wrapped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

_HEAD_START = b"HTTP/"
_HEAD_END = b"\r\n\r\n"


class CoalescingTransport:
    """Wraps a connection's transport: a response head waits for the next write (at most one loop turn)."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif data[:5] == _HEAD_START and data[-4:] == _HEAD_END:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        self.flush()
        self._transport.writelines(lines)

    def flush(self) -> None:
        """Send a held head now (no-op if the next write already took it)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + (len(self._held) if self._held is not None else 0)

    def __getattr__(self, name: str) -> Any:
        # Everything else (get_extra_info, is_closing, pause_reading, set_protocol…) is the transport's own.
        return getattr(self._transport, name)


def coalescing(protocol: type[Any] = AutoHTTPProtocol) -> type[asyncio.Protocol]:
    """`protocol` (uvicorn's HTTP protocol: httptools if installed, else h11) writing through a
    `CoalescingTransport`; pass it to `uvicorn.Config(http=...)`."""

    class Coalescing(protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            wrapped = CoalescingTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
            super().connection_made(wrapped)

    Coalescing.__name__ = Coalescing.__qualname__ = f"Coalescing{protocol.__name__}"
    return Coalescing
