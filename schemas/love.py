"""The love index: one 0–100 figure of how an audience feels about a brand, from audience growth, engagement
per mention and the share of positive mentions. One formula for the live `/love` view and the history reports.

    love = 100 × Σ wᵢ·cᵢ / Σ wᵢ, over the components that can be computed, rounded to one decimal:
    - audience growth, w = 0.4: c = clamp(0.5 + 5·g, 0, 1), g the relative change of the summed audience
      (+10 % → 1, flat → 0.5, −10 % → 0);
    - engagement, w = 0.3: c = min(1, log10(1 + e) / 2), e = (likes + shares + comments) per mention
      (0 → 0, 9 → 0.5, 99 and more → 1);
    - positive share, w = 0.3: c = positive / (positive + negative) mentions;
    - inbound links, w = 0.2: c = min(1, log10(1 + n) / 2), n the new linking sites (sites linking to an owned
      domain for the first time) over 7 days (0 → 0, 9 → 0.5, 99 and more → 1); only with owned domains;
    - social traffic, w = 0.2: c = min(1, log10(1 + s) / 2), s the visits referred by social networks per mention
      over the same days (0 → 0, 9 → 0.5, 99 and more → 1); only with web analytics readings and mentions.
  null when no component can be computed. Components are rounded to 4 decimals before they are weighed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Account metrics that count as audience (compared lowercased).
AUDIENCE_METRICS = frozenset({"followers", "fans", "subscribers", "members"})
LOVE_WEIGHTS = {
    "audience_growth": 0.4,
    "engagement": 0.3,
    "positive_share": 0.3,
    "inbound_links": 0.2,
    "social_traffic": 0.2,
}
LOVE_FORMULA = (
    "100 × (0.4·audience_growth + 0.3·engagement + 0.3·positive_share + 0.2·inbound_links + 0.2·social_traffic)"
    " / Σ weights present"
)


@dataclass(frozen=True, slots=True)
class LoveScore:
    """The components (0–1, None when they cannot be computed) and the index (0–100 or None)."""

    audience_growth: float | None
    engagement: float | None
    positive_share: float | None
    index: float | None
    inbound_links: float | None = None
    social_traffic: float | None = None


def is_audience(metric: str) -> bool:
    return metric.lower() in AUDIENCE_METRICS


def audience_growth(before: float, after: float) -> float | None:
    """The relative change of a summed audience; None without a positive audience to compare with."""
    return (after - before) / before if before > 0 else None


def _log_scale(value: float | None) -> float | None:
    """0 → 0, 9 → 0.5, 99 and more → 1."""
    return None if value is None else round(min(1.0, math.log10(1 + max(0.0, value)) / 2), 4)


def love_score(
    growth: float | None,
    engagement_per_mention: float | None,
    positive: int,
    negative: int,
    *,
    new_linking_sites: int | None = None,
    social_visits_per_mention: float | None = None,
) -> LoveScore:
    """The love index from its inputs: audience growth g (None without one), engagement per mention (None
    without a mention), the positive and negative mentions counted, the new linking sites over 7 days (None
    without owned domains) and the social-referred visits per mention (None without web readings or mentions)."""
    components = {
        "audience_growth": None if growth is None else round(min(1.0, max(0.0, 0.5 + 5 * growth)), 4),
        "engagement": (
            None if engagement_per_mention is None else round(min(1.0, math.log10(1 + engagement_per_mention) / 2), 4)
        ),
        "positive_share": round(positive / (positive + negative), 4) if positive + negative else None,
        "inbound_links": _log_scale(new_linking_sites),
        "social_traffic": _log_scale(social_visits_per_mention),
    }
    present = {name: c for name, c in components.items() if c is not None}
    index = (
        round(100 * sum(LOVE_WEIGHTS[n] * c for n, c in present.items()) / sum(LOVE_WEIGHTS[n] for n in present), 1)
        if present
        else None
    )
    return LoveScore(
        components["audience_growth"],
        components["engagement"],
        components["positive_share"],
        index,
        components["inbound_links"],
        components["social_traffic"],
    )


__all__ = [
    "AUDIENCE_METRICS",
    "LOVE_FORMULA",
    "LOVE_WEIGHTS",
    "LoveScore",
    "audience_growth",
    "is_audience",
    "love_score",
]
