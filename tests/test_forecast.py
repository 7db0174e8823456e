"""Anomaly detection (eventpipe_core.forecast) on synthetic series with planted anomalies.

"Clean" series are a trend + weekly (or daily) seasonality + bounded measurement noise (uniform, +-1 % of the
base level): every value stays inside the models' minimum band (+-1.96 % of the level, see
RELATIVE_SIGMA_FLOOR) plus their estimation error, so a flag on them is a false alarm of the model, not bad
luck. (With unbounded Gaussian noise a 95 % band is crossed by ~5 % of clean points by definition.)
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from eventpipe_core.forecast import TRAINING_WINDOW, detect, prophet_available

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
WEEKLY = [1.0, 1.05, 1.1, 1.08, 1.0, 0.7, 0.6]  # Mon..Sun multipliers


def daily_series(days: int, *, seed: int = 1, noise: float = 0.01, base: float = 1000.0) -> list[tuple[datetime, float]]:
    rng = random.Random(seed)
    out = []
    for d in range(days):
        t = START + timedelta(days=d)
        trend = base * 0.001 * d  # additive trend and seasonality (+0.1 % of the base per day)
        out.append((t, base * WEEKLY[t.weekday()] + trend + base * rng.uniform(-noise, noise)))
    return out


def hourly_series(hours: int, *, seed: int = 2) -> list[tuple[datetime, float]]:
    rng = random.Random(seed)
    out = []
    for h in range(hours):
        t = START + timedelta(hours=h)
        daily = 1 + 0.5 * math.sin(2 * math.pi * (t.hour - 6) / 24)
        out.append((t, 200 * daily + 200 * rng.uniform(-0.01, 0.01)))
    return out


MODELS = ["robust", pytest.param("prophet", marks=pytest.mark.skipif(not prophet_available(), reason="prophet missing"))]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_clean_weekly_series_of_60_days_raises_no_false_alarm(model: str, seed: int) -> None:
    series = daily_series(180, seed=seed)
    eval_start = series[120][0]  # a 60-day chart with the agile window's 120 days of history before it
    fc = detect(series, eval_start, granularity="day", model=model)
    assert fc.model == model and fc.training_points == 120
    assert len(fc.points) == 60
    flagged = [p.time.date().isoformat() for p in fc.points if p.anomaly]
    assert flagged == []
    # the band is informative: it follows the weekend dip rather than being wide enough to hide everything
    sat = next(p for p in fc.points if p.time.weekday() == 5)
    wed = next(p for p in fc.points if p.time.weekday() == 2)
    assert sat.upper < wed.lower


@pytest.mark.parametrize("model", MODELS)
def test_planted_spike_is_flagged_and_nothing_else(model: str) -> None:
    series = daily_series(150)
    spike_at = 140
    t, v = series[spike_at]
    series[spike_at] = (t, v * 1.6)
    eval_start = series[120][0]
    fc = detect(series, eval_start, granularity="day", model=model)
    assert fc.training_points == 120  # the agile window: exactly 120 days before the chart range
    flagged = [p.time for p in fc.points if p.anomaly]
    assert flagged == [t]
    spike = next(p for p in fc.points if p.time == t)
    assert spike.value > spike.upper and spike.lower < spike.expected < spike.upper


@pytest.mark.parametrize("model", MODELS)
def test_planted_level_shift_is_flagged(model: str) -> None:
    series = daily_series(100)
    shifted = [(t, v * (0.6 if i >= 85 else 1.0)) for i, (t, v) in enumerate(series)]
    fc = detect(shifted, shifted[80][0], granularity="day", model=model)
    before = [p for p in fc.points if p.time < shifted[85][0]]
    after = [p for p in fc.points if p.time >= shifted[85][0]]
    assert not any(p.anomaly for p in before)
    assert all(p.anomaly and p.value < p.lower for p in after)


@pytest.mark.parametrize("model", MODELS)
def test_hourly_series_uses_14_day_window_and_flags_a_drop(model: str) -> None:
    series = hourly_series(24 * 17)
    eval_start = series[24 * 16][0]
    drop_at = 24 * 16 + 10
    t, v = series[drop_at]
    series[drop_at] = (t, v * 0.3)
    fc = detect(series, eval_start, granularity="hour", model=model)
    assert fc.training_points == TRAINING_WINDOW["hour"] // timedelta(hours=1)
    assert [p.time for p in fc.points if p.anomaly] == [t]


@pytest.mark.parametrize("model", MODELS)
def test_fits_are_deterministic(model: str) -> None:
    series = daily_series(90, seed=7, noise=0.1)
    a = detect(series, series[60][0], model=model, seed=3)
    b = detect(series, series[60][0], model=model, seed=3)
    assert a == b


def test_prophet_falls_back_to_robust_on_short_history_and_none_without_history() -> None:
    series = daily_series(20)
    fc = detect(series, series[10][0], model="prophet")
    assert fc.model == "robust" and fc.training_points == 10
    assert all(p.expected is not None for p in fc.points)
    fc = detect(series, series[3][0], model="robust")
    assert fc.model == "none"
    assert all(p.expected is None and not p.anomaly for p in fc.points)


def test_missing_values_are_skipped_in_training_and_never_anomalous() -> None:
    series: list[tuple[datetime, float | None]] = list(daily_series(60))
    series[10] = (series[10][0], None)
    series[45] = (series[45][0], None)
    fc = detect(series, series[30][0], model="robust")
    assert fc.training_points == 29
    missing = next(p for p in fc.points if p.time == series[45][0])
    assert missing.value is None and not missing.anomaly and missing.expected is not None


def test_flat_series_is_not_all_anomalies_and_bad_arguments_are_refused() -> None:
    series = [(START + timedelta(days=d), 100.0) for d in range(40)]
    series[35] = (series[35][0], 101.0)  # +1 %: inside the relative floor of the band
    series[36] = (series[36][0], 150.0)
    fc = detect(series, series[30][0], model="robust")
    assert [p.time for p in fc.points if p.anomaly] == [series[36][0]]
    with pytest.raises(ValueError, match="granularity"):
        detect(series, series[30][0], granularity="week")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model"):
        detect(series, series[30][0], model="arima")  # type: ignore[arg-type]
