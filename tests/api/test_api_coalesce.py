"""One socket write per answer (services/api/coalesce.py): uvicorn's response head waits for the body, never
longer than one turn of the event loop, and bytes keep their order.

The first tests drive `CoalescingTransport` over a real socket pair (what the peer can read, and when); the
last ones serve the real API (real Kafka, real uvicorn) through `coalescing()` and count the writes that
reach each connection's socket transport."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from schemas import Topics, ensure_topics
from services.api.coalesce import CoalescingTransport, coalescing
from tests.api.api_server import ApiServer
from tests.api.test_api_kafka import settings_for, wait_ready

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


@asynccontextmanager
async def socket_pair() -> AsyncIterator[tuple[CoalescingTransport, socket.socket]]:
    """A CoalescingTransport over the loop's own transport of one end of a socket pair; the other end, non-blocking."""
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    try:
        yield CoalescingTransport(transport, loop), peer
    finally:
        transport.abort()
        peer.close()


def readable(peer: socket.socket) -> bytes:
    """What the peer can read right now (b"" if nothing has arrived)."""
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


async def test_a_head_waits_for_the_body_and_both_leave_in_order() -> None:
    async with socket_pair() as (transport, peer):
        transport.write(HEAD)
        assert readable(peer) == b""  # held back
        transport.write(b"hello")
        assert readable(peer) == HEAD + b"hello"
        transport.write(b"more")  # a write that is not a head goes straight out
        assert readable(peer) == b"more"
        await asyncio.sleep(0)  # the pending flush finds nothing held: nothing is sent twice
        assert readable(peer) == b""


async def test_a_head_alone_leaves_at_the_next_turn_of_the_loop_or_when_the_connection_closes() -> None:
    async with socket_pair() as (transport, peer):
        transport.write(HEAD)  # a streamed answer (SSE) whose first event is not there yet, a HEAD answer…
        await asyncio.sleep(0)  # one turn: the flush scheduled with the head runs before this task resumes
        assert readable(peer) == HEAD
        transport.write(HEAD)
        transport.close()
        assert readable(peer) == HEAD
        assert transport.is_closing()


async def test_an_aborted_connection_drops_the_held_head() -> None:
    async with socket_pair() as (transport, peer):
        transport.write(HEAD)
        transport.abort()
        await asyncio.sleep(0)
        assert readable(peer) == b""  # EOF: the connection is gone, nothing was written


# ---------------------------------------------------------------------------------------------- real API


class CountingTransport:
    """Between the socket transport and what the protocol writes through: every write call, recorded."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self.transport = transport
        self.writes = writes

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def writelines(self, lines: Any) -> None:
        lines = [bytes(line) for line in lines]
        self.writes.append(b"".join(lines))  # one system call (writev under uvloop)
        self.transport.writelines(lines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def counted(protocol: type[Any], connections: list[list[bytes]]) -> type[Any]:
    """`protocol` with each connection's socket writes recorded in a list of its own, appended to `connections`."""

    class Counted(protocol):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            writes: list[bytes] = []
            connections.append(writes)
            super().connection_made(CountingTransport(transport, writes))

    return Counted


async def serve(bootstrap: str, topic_prefix: str, tmp_path: Path, protocol: type[Any]) -> ApiServer:
    from services.api.app import create_app

    await ensure_topics(bootstrap, Topics(topic_prefix), partitions=1)
    return ApiServer(create_app(settings_for(bootstrap, topic_prefix, tmp_path)), http=protocol).start()


@pytest.mark.kafka
@pytest.mark.usefixtures("clean_env")
async def test_the_api_answers_with_one_socket_write_and_streams_start_at_once(
    bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    connections: list[list[bytes]] = []
    server = await serve(bootstrap, topic_prefix, tmp_path, counted(coalescing(), connections))
    try:
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=1)) as client:
            await wait_ready(client)
            writes = connections[-1]
            for method, path, status in [
                ("GET", "/v1/brands/globex/kpis", 200),  # the hot path
                ("GET", "/v1/brands/globex/kpis?window=2m", 422),  # the framework
                ("GET", "/v1/brands", 200),
                ("HEAD", "/v1/brands/globex/kpis", 405),  # a head with no body written after it
            ]:
                before = len(writes)
                response = await client.request(method, path)
                assert response.status_code == status, (path, response.text)
                assert len(writes) == before + 1, (path, writes[before:])
                head, _, body = writes[-1].partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 %d " % status)
                assert body == (response.content if method != "HEAD" else b"")
            assert len(connections) == 1  # all on one kept-alive connection

            # An SSE stream: its head reaches the client although no event follows it.
            async with asyncio.timeout(10), client.stream("GET", "/v1/alerts/stream") as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
    finally:
        server.stop()


@pytest.mark.kafka
@pytest.mark.usefixtures("clean_env")
async def test_without_coalescing_uvicorn_writes_the_head_and_the_body_apart(
    bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The control: the counting above would see the two writes coalescing() saves."""
    connections: list[list[bytes]] = []
    server = await serve(bootstrap, topic_prefix, tmp_path, counted(AutoHTTPProtocol, connections))
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            await wait_ready(client)
            before = len(connections[-1])
            response = await client.get("/v1/brands/globex/kpis")
            assert response.status_code == 200
            assert connections[-1][before:] == [connections[-1][before], response.content]
            assert connections[-1][before].startswith(b"HTTP/1.1 200 OK")
    finally:
        server.stop()
