"""A real HTTP server on 127.0.0.1 that receives webhooks: checks signatures, fails the first N attempts of each
delivery with 500, answers fixed statuses on some paths, and records everything it got."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from services.api.webhooks import verify_signature


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    signed_ok: bool | None  # None: no signature header

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def delivery(self) -> str:
        return self.headers.get("x-ecoute-delivery", "")


class WebhookReceiver:
    def __init__(self, secret: str | None = None, fail_first: int = 0, host: str = "127.0.0.1") -> None:
        self.secret = secret
        self.fail_first = fail_first
        # path -> (status, extra headers): fixed answers, e.g. a redirect
        self.fixed: dict[str, tuple[int, dict[str, str]]] = {}
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._answer(self, headers, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def _answer(self, handler: BaseHTTPRequestHandler, headers: dict[str, str], body: bytes) -> None:
        signature = headers.get("x-ecoute-signature")
        signed_ok = (
            None if signature is None else bool(self.secret) and verify_signature(self.secret or "", signature, body)
        )
        extra: dict[str, str] = {}
        with self._lock:
            if handler.path in self.fixed:
                status, extra = self.fixed[handler.path]
            else:
                earlier = sum(1 for r in self.received if r.delivery == headers.get("x-ecoute-delivery"))
                status = 500 if earlier < self.fail_first else 200
            self.received.append(Received(handler.path, headers, body, status, signed_ok))
        handler.send_response(status)
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.send_header("content-length", "0")
        handler.end_headers()

    def for_alert(self, alert_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.delivery.startswith(f"{alert_id}|")]

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
