"""A real HTTP server on a loopback address in a thread, with scripted answers, for the connector tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    """A request as the server saw it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Streamed without Content-Length (the connection closes at the end) instead of `body`.
    chunks: Iterable[bytes] | None = None
    # Seconds to wait before answering (woken early when the server stops).
    delay: float = 0.0
    # Answer only once this event is set (or the server stops).
    hold: threading.Event | None = None


Handler = Callable[[Seen], Reply]


class WebServer:
    """`server.route(path, handler_or_reply)`; `server.url(path)`; `server.requests` lists what came in."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.routes: dict[str, Handler] = {}
        self.requests: list[Seen] = []
        self.bytes_sent: dict[int, int] = {}
        self.finished: set[int] = set()
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server((host, 0), _make_handler(self))
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"web-{self.port}", daemon=True
        )

    def start(self) -> WebServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def url(self, path: str = "/", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def route(self, path: str, answer: Handler | Reply) -> None:
        if isinstance(answer, Reply):
            reply = answer

            def fixed(_seen: Seen) -> Reply:
                return reply

            answer = fixed
        self.routes[path] = answer

    def hits(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    def wait(self, seconds: float, hold: threading.Event | None = None) -> None:
        if hold is not None:
            deadline = time.monotonic() + 30
            while not hold.is_set() and not self._stopping.is_set() and time.monotonic() < deadline:
                hold.wait(0.05)
        if seconds:
            self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _make_handler(server: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            seen = Seen(
                parts.path,
                {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                {k.lower(): v for k, v in self.headers.items()},
            )
            with server._lock:
                server.requests.append(seen)
                number = len(server.requests) - 1
                server.active += 1
                server.max_active = max(server.max_active, server.active)
            try:
                handler = server.routes.get(parts.path)
                reply = handler(seen) if handler else Reply(404, b"not found")
                server.wait(reply.delay, reply.hold)
                self._answer(reply, number)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with server._lock:
                    server.active -= 1
                    server.finished.add(number)

        def _answer(self, reply: Reply, number: int) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.chunks is None:
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                server.bytes_sent[number] = len(reply.body)
                return
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            sent = 0
            for chunk in reply.chunks:
                self.wfile.write(chunk)
                sent += len(chunk)
                server.bytes_sent[number] = sent

    return Handler
