"""The volume-spike rule over per-minute counts: warm-up, minimum volume, cooldown, flat baselines,
mean + sigma·std thresholds and deterministic alert ids."""

from __future__ import annotations

import statistics

import pytest

from schemas.config import VolumeSpikeRule
from services.analyzer.alerts import Finding, Series, alert_id, volume_spike

RULE = VolumeSpikeRule.model_validate(
    {"window": "5m", "baseline": "24h", "sigma": 3, "min_mentions": 20, "warmup": "30m", "cooldown": "30m"}
)
FIRST = 1_714_989_600  # 2024-05-06T10:00:00Z
NOW = FIRST + 120 * 60  # two hours of history


def spike(
    minutes: dict[int, int], first: int, now: int, rule: VolumeSpikeRule, last_fired: int | None
) -> Finding | None:
    return volume_spike(Series.of(minutes), first, now, rule, last_fired)


def history(pattern: list[int], first: int = FIRST, now: int = NOW) -> dict[int, int]:
    """Per-minute counts from `first` up to (excluding) the last five minutes before `now` inclusive."""
    minutes = {}
    for i, minute in enumerate(range(first, now + 60 - 300, 60)):
        minutes[minute] = pattern[i % len(pattern)]
    return minutes


def with_last_five(minutes: dict[int, int], per_minute: list[int], now: int = NOW) -> dict[int, int]:
    out = dict(minutes)
    for i, minute in enumerate(range(now - 240, now + 60, 60)):
        out[minute] = per_minute[i]
    return out


def block_sums(minutes: dict[int, int], first: int, now: int, block: int = 300) -> list[int]:
    start = now + 60 - block
    sums = []
    block_start = start - block
    while block_start >= first:
        sums.append(sum(minutes.get(m, 0) for m in range(block_start, block_start + block, 60)))
        block_start -= block
    return sums


def test_spike_above_mean_plus_three_sigma_fires() -> None:
    baseline = history([1, 2, 1, 2, 1, 2, 3])
    minutes = with_last_five(baseline, [10, 10, 10, 10, 10])
    finding = spike(minutes, FIRST, NOW, RULE, None)
    sums = block_sums(minutes, FIRST, NOW)
    assert len(sums) == 23  # 115 minutes of history in 5-minute blocks
    mean, std = statistics.fmean(sums), statistics.pstdev(sums)
    assert finding == Finding(
        window_start=NOW - 240,
        window_end=NOW + 60,
        observed=50,
        baseline=round(mean, 3),
        threshold=round(mean + 3 * std, 3),
        severity="critical",
    )


def test_just_above_threshold_is_a_warning_at_threshold_nothing() -> None:
    baseline = history([4, 4, 4, 4, 4, 5, 3, 4, 4, 4])  # blocks of 20 and 21/19
    sums = block_sums(with_last_five(baseline, [0] * 5), FIRST, NOW)
    threshold = statistics.fmean(sums) + 3 * statistics.pstdev(sums)
    above = int(threshold) + 1
    finding = spike(with_last_five(baseline, [above, 0, 0, 0, 0]), FIRST, NOW, RULE, None)
    assert finding is not None
    assert finding.observed == above
    assert finding.severity == "warning"
    assert finding.threshold == round(threshold, 3)
    below = int(threshold)
    assert below <= threshold
    assert spike(with_last_five(baseline, [below, 0, 0, 0, 0]), FIRST, NOW, RULE, None) is None


def test_flat_baseline_at_its_usual_level_does_not_fire() -> None:
    minutes = with_last_five(history([5]), [5, 5, 5, 5, 5])  # 25 per block everywhere, std 0
    assert spike(minutes, FIRST, NOW, RULE, None) is None


def test_silent_baseline_then_burst_fires_critical() -> None:
    minutes = with_last_five({FIRST: 0}, [0, 0, 0, 0, 30])
    finding = spike(minutes, FIRST, NOW, RULE, None)
    assert finding is not None
    assert (finding.observed, finding.baseline, finding.threshold, finding.severity) == (30, 0.0, 0.0, "critical")


def test_below_min_mentions_does_not_fire() -> None:
    quiet = {FIRST: 0}
    assert spike(with_last_five(quiet, [4, 4, 4, 4, 3]), FIRST, NOW, RULE, None) is None  # 19
    assert spike(with_last_five(quiet, [4, 4, 4, 4, 4]), FIRST, NOW, RULE, None) is not None  # 20


def test_no_alert_during_warmup() -> None:
    first = NOW - 29 * 60
    minutes = with_last_five(history([1], first=first), [50] * 5)
    assert spike(minutes, first, NOW, RULE, None) is None
    first = NOW - 30 * 60
    minutes = with_last_five(history([1], first=first), [50] * 5)
    assert spike(minutes, first, NOW, RULE, None) is not None


def test_no_baseline_blocks_no_alert() -> None:
    rule = RULE.model_copy(update={"warmup": 60.0})
    first = NOW - 120
    minutes = with_last_five({}, [50] * 5)
    assert spike(minutes, first, NOW, rule, None) is None


def test_cooldown_after_a_spike() -> None:
    minutes = with_last_five(history([1, 2]), [20] * 5)
    start = NOW - 240
    assert spike(minutes, FIRST, NOW, RULE, start - 29 * 60) is None
    assert spike(minutes, FIRST, NOW, RULE, start) is None
    assert spike(minutes, FIRST, NOW, RULE, start - 30 * 60) is not None


def test_baseline_period_bounds_the_history_used() -> None:
    # A big burst 90 minutes ago raises the 24 h baseline's std enough to mute today's spike,
    # but lies outside a 1 h baseline.
    minutes = with_last_five(history([2]), [12] * 5)
    for m in range(NOW - 90 * 60, NOW - 85 * 60, 60):
        minutes[m] = 200
    assert spike(minutes, FIRST, NOW, RULE, None) is None
    one_hour = RULE.model_copy(update={"baseline": 3600.0})
    finding = spike(minutes, FIRST, NOW, one_hour, None)
    assert finding is not None
    assert finding.baseline == 10.0


def test_window_of_ten_minutes() -> None:
    rule = RULE.model_copy(update={"window": 600.0})
    minutes = history([1])
    for m in range(NOW - 540, NOW + 60, 60):
        minutes[m] = 5
    finding = spike(minutes, FIRST, NOW, rule, None)
    assert finding is not None
    assert (finding.window_start, finding.window_end, finding.observed) == (NOW - 540, NOW + 60, 50)


def test_alert_id_is_deterministic_and_distinct() -> None:
    first = alert_id("acme", "volume_spike", NOW)
    assert first == alert_id("acme", "volume_spike", NOW)
    assert len(first) == 20
    assert int(first, 16) >= 0
    others = {
        alert_id("globex", "volume_spike", NOW),
        alert_id("acme", "keyword", NOW),
        alert_id("acme", "volume_spike", NOW + 60),
    }
    assert first not in others
    assert len(others) == 3


@pytest.mark.parametrize(("sigma", "fires"), [(1.0, True), (3.0, True), (4.0, False)])
def test_sigma_moves_the_threshold(sigma: float, fires: bool) -> None:
    baseline = history([1, 2, 3, 4, 5, 6, 1, 2, 3, 4])  # blocks: mean ≈ 15.7, std ≈ 4.5
    sums = block_sums(with_last_five(baseline, [0] * 5), FIRST, NOW)
    expected = statistics.fmean(sums) + sigma * statistics.pstdev(sums)
    rule = RULE.model_copy(update={"sigma": sigma})
    finding = spike(with_last_five(baseline, [30, 0, 0, 0, 0]), FIRST, NOW, rule, None)
    assert (finding is not None) is fires
    if finding is not None:
        assert finding.threshold == round(expected, 3)
