"""Écoute's API service: in-memory views of the Kafka topics served over REST and SSE."""

from services.api.app import create_app
from services.api.cli import main
from services.api.consumer import ViewConsumer
from services.api.fanout import AlertFanout
from services.api.metrics import ApiMetrics
from services.api.settings import ApiSettings, load_settings
from services.api.views import ROLLING_WINDOWS, RollingKpi, Views, floor_minute, window_bounds

__all__ = [
    "ROLLING_WINDOWS",
    "AlertFanout",
    "ApiMetrics",
    "ApiSettings",
    "RollingKpi",
    "ViewConsumer",
    "Views",
    "create_app",
    "floor_minute",
    "load_settings",
    "main",
    "window_bounds",
]
