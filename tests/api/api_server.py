"""A real uvicorn server in a thread, for tests that speak HTTP (and SSE) to the API."""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn
from fastapi import FastAPI

from tests.helpers import wait_until


class ApiServer:
    """One app served by a real uvicorn in a thread, on a socket bound before it starts (no port race)."""

    def __init__(self, app: FastAPI, http: Any = "auto") -> None:
        """`http`: uvicorn's HTTP protocol (a class, e.g. services.api.coalesce.coalescing(), or a name)."""
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, http=http, lifespan="on", log_level="warning", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 20, what="uvicorn to start")
        assert self.server.started, "uvicorn did not start (see the log)"
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(timeout=20)
            assert not self.thread.is_alive(), "uvicorn did not stop within 20 s"
        self.sock.close()
