"""Fixtures of the API tests: the API served by a real uvicorn on a free port, in a thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from services.api.app import create_app
from services.api.settings import ApiSettings
from tests.api.api_server import ApiServer


@pytest.fixture
def serve_api() -> Iterator[Callable[..., ApiServer]]:
    """Start API servers (create_app(settings, clock=...)); every one is stopped at teardown."""
    servers: list[ApiServer] = []

    def start(settings: ApiSettings, clock: Callable[[], datetime] | None = None, **options: Any) -> ApiServer:
        """`options` go to create_app (e.g. kpis_hot_path=False)."""
        app = create_app(settings, clock=clock, **options) if clock is not None else create_app(settings, **options)
        server = ApiServer(app).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
