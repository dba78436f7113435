"""Alert rules as pure functions over per-minute counts (event time: the newest minute seen).

Volume spike: the mentions of the last `window` are above mean + sigma·std of the earlier
`window`-sized blocks of the baseline period, with at least `min_mentions`, once the brand has
`warmup` of history, and no earlier spike alert within `cooldown`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from schemas.config import VolumeSpikeRule


@dataclass(frozen=True)
class SpikeFinding:
    window_start: int
    window_end: int
    observed: int
    baseline: float
    threshold: float
    severity: str


def volume_spike(
    minutes: dict[int, int], first_minute: int, now_minute: int, rule: VolumeSpikeRule, last_fired: int | None
) -> SpikeFinding | None:
    """Evaluate the spike rule at `now_minute` (epoch seconds of the newest minute bucket)."""
    block = max(60, int(rule.window) // 60 * 60)
    start = now_minute + 60 - block
    if now_minute - first_minute < rule.warmup:
        return None
    if last_fired is not None and start - last_fired < rule.cooldown:
        return None
    observed = sum(minutes.get(m, 0) for m in range(start, now_minute + 60, 60))
    if observed < rule.min_mentions:
        return None
    # Earlier blocks, newest first, inside the baseline period and after the brand's first minute.
    blocks: list[int] = []
    block_start = start - block
    while block_start >= max(first_minute, start - int(rule.baseline)):
        blocks.append(sum(minutes.get(m, 0) for m in range(block_start, block_start + block, 60)))
        block_start -= block
    if not blocks:
        return None
    mean = sum(blocks) / len(blocks)
    std = math.sqrt(sum((b - mean) ** 2 for b in blocks) / len(blocks))
    threshold = mean + rule.sigma * std
    if observed <= threshold:
        return None
    severity = "critical" if observed > mean + 2 * rule.sigma * std and observed >= 3 * max(mean, 1) else "warning"
    return SpikeFinding(start, now_minute + 60, observed, round(mean, 3), round(threshold, 3), severity)


def alert_id(brand: str, kind: str, window_start: int) -> str:
    """Deterministic, so an alert re-emitted after a replay is recognised as the same alert."""
    return hashlib.sha1(f"{brand}|{kind}|{window_start}".encode()).hexdigest()[:20]
