"""Builders of the messages the API reads (kpi/1, scored-mention/1, alert/1), with sensible defaults."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from schemas import Alert, Kpi, ScoredMention

MINUTE = timedelta(minutes=1)


def kpi(brand: str, start: datetime, window: str = "1m", **counters: Any) -> Kpi:
    length = {"1m": MINUTE, "1h": timedelta(hours=1), "1d": timedelta(days=1)}[window]
    fields: dict[str, Any] = {
        "brand": brand,
        "window": window,
        "start": start,
        "end": start + length,
        "updated_at": start + length,
    }
    fields.update(counters)
    return Kpi.model_validate(fields)


def scored(
    brand: str,
    mention_id: str,
    published_at: datetime,
    author: str | None = "alice",
    label: str = "neutral",
    **extra: Any,
) -> ScoredMention:
    compound = {"positive": 0.6, "negative": -0.6}.get(label, 0.0)
    fields: dict[str, Any] = {
        "id": mention_id,
        "source": "simulate",
        "text": f"{brand} mention {mention_id}",
        "published_at": published_at,
        "author": {"id": author, "handle": author} if author else {},
        "brand": brand,
        "sentiment": {"compound": compound, "pos": 0.0, "neu": 1.0, "neg": 0.0, "label": label},
    }
    fields.update(extra)
    return ScoredMention.model_validate(fields)


def alert(brand: str, alert_id: str, created_at: datetime, kind: str = "keyword", **extra: Any) -> Alert:
    fields: dict[str, Any] = {
        "id": alert_id,
        "brand": brand,
        "kind": kind,
        "severity": "warning",
        "window": {"start": created_at - 5 * MINUTE, "end": created_at},
        "observed": 12,
        "baseline": 3.5,
        "threshold": 10,
        "message": f"{kind} for {brand}",
        "created_at": created_at,
    }
    fields.update(extra)
    return Alert.model_validate(fields)
