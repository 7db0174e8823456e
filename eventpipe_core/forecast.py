"""Anomaly detection on a metric's time series: an expected value and a 95 % band per point.

Pure (no I/O, no settings): the query service's ``forecast=1`` and the alert sensor both call
:func:`detect`. The contract, after Amplitude's "Anomaly + Forecast" (Agile mode):

* The **training window** is the history strictly *before* the evaluated range: 120 days for daily
  series, 14 days for hourly ones (``TRAINING_WINDOW``; Amplitude's agile mode uses "120 days prior to
  the start of the chart date range"). Training never sees the evaluated points, so a level shift inside
  the range stays outside the band instead of being absorbed by the fitted trend.
* Every evaluated point gets ``expected`` (the model's forecast), ``lower``/``upper`` (the
  ``interval_width`` = 95 % prediction interval) and ``anomaly = value < lower or value > upper``.
  A 95 % band means about 5 % of points of a Gaussian-noise series fall outside by chance; the band is
  a statistical statement, not a guarantee.
* Models: ``prophet`` (Prophet, additive weekly seasonality for daily data, daily (+ weekly from 14 days
  of hourly history) seasonality for hourly data; interval sampling seeded, so a fit is deterministic)
  and ``robust`` (seasonal median + median absolute deviation: no dependency, fast, deterministic).
  ``prophet`` falls back to ``robust`` when the training window holds fewer than two seasonal periods
  (14 daily / 48 hourly points) or Prophet is not installed. With fewer than ``MIN_ROBUST_POINTS``
  training points no band is given (``expected`` etc. are ``None``, ``anomaly`` is False): too little
  history to call anything unusual.
* The band is never narrower than +-z * 1 % of the series level (``RELATIVE_SIGMA_FLOOR``), for both models.
* Missing values (``None``) in the training series are skipped; a ``None`` evaluated value gets a band
  but is never an anomaly.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Granularity = Literal["day", "hour"]
ModelName = Literal["prophet", "robust"]

TRAINING_WINDOW: dict[str, timedelta] = {"day": timedelta(days=120), "hour": timedelta(days=14)}
PERIOD: dict[str, int] = {"day": 7, "hour": 24}  # seasonal period in points
MIN_ROBUST_POINTS = 5
Z_95 = 1.959963984540054
MAD_TO_SIGMA = 1.4826  # MAD of a normal sample * this = its standard deviation
# The band is never narrower than +-1.96 % of the level (trend): a practically insignificant wiggle of a very
# regular metric (and every point of a flat one) is not an anomaly.
RELATIVE_SIGMA_FLOOR = 0.01


@dataclass(frozen=True)
class ForecastPoint:
    time: datetime
    value: float | None
    expected: float | None
    lower: float | None
    upper: float | None
    anomaly: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "time": self.time.isoformat(),
            "value": self.value,
            "expected": self.expected,
            "lower": self.lower,
            "upper": self.upper,
            "anomaly": self.anomaly,
        }


@dataclass(frozen=True)
class Forecast:
    model: str  # the model actually used ("prophet", "robust" or "none")
    training_points: int
    points: list[ForecastPoint]


def _z(interval_width: float) -> float:
    if not 0 < interval_width < 1:
        raise ValueError("interval_width must be in (0, 1)")
    return statistics.NormalDist().inv_cdf(0.5 + interval_width / 2)


def _phase(t: datetime, granularity: str) -> int:
    return t.weekday() if granularity == "day" else t.hour


def _robust(
    train: list[tuple[datetime, float]], evaluate: Sequence[datetime], granularity: str, interval_width: float
) -> list[tuple[float, float, float]]:
    """Seasonal median + robust trend + MAD band.

    Phase effects: median deviation of each phase (weekday / hour of day) from a trailing one-period
    median; trend: median of the seasonal differences (v[i] - v[i - period]) / period; level: the median
    of the last period's deseasonalized values carried to the last training point along that trend.
    The band is +-z * 1.4826 * MAD of the training residuals (at least RELATIVE_SIGMA_FLOOR of the level).
    """
    period = PERIOD[granularity]
    step = timedelta(days=1) if granularity == "day" else timedelta(hours=1)
    values = [v for _, v in train]
    n = len(values)
    seasonal: dict[int, float] = {}
    slope = 0.0
    if n >= 2 * period:
        by_phase: dict[int, list[float]] = {}
        for i in range(period - 1, n):
            local = statistics.median(values[i - period + 1 : i + 1])
            by_phase.setdefault(_phase(train[i][0], granularity), []).append(values[i] - local)
        seasonal = {p: statistics.median(d) for p, d in by_phase.items()}
        shift = statistics.median(list(seasonal.values()))
        seasonal = {p: d - shift for p, d in seasonal.items()}
        slope = statistics.median((values[i] - values[i - period]) / period for i in range(period, n))
    deseason = [v - seasonal.get(_phase(t, granularity), 0.0) for t, v in train]
    last = train[-1][0]
    anchor = statistics.median(deseason[i] + slope * (n - 1 - i) for i in range(max(0, n - period), n))

    def fitted(t: datetime) -> float:
        return anchor + slope * ((t - last) / step) + seasonal.get(_phase(t, granularity), 0.0)

    residuals = [v - fitted(t) for t, v in train]
    centre = statistics.median(residuals)
    mad = statistics.median(abs(r - centre) for r in residuals)
    sigma = max(MAD_TO_SIGMA * mad, RELATIVE_SIGMA_FLOOR * abs(anchor), 1e-9)
    half = _z(interval_width) * sigma
    return [(fitted(t), fitted(t) - half, fitted(t) + half) for t in evaluate]


def _prophet(
    train: list[tuple[datetime, float]], evaluate: Sequence[datetime], granularity: str, interval_width: float, seed: int
) -> list[tuple[float, float, float]]:
    import numpy as np
    import pandas as pd
    from prophet import Prophet

    for name in ("prophet", "cmdstanpy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    hourly = granularity == "hour"
    model = Prophet(
        interval_width=interval_width,
        yearly_seasonality=False,
        weekly_seasonality=(not hourly) or len(train) >= 14 * 24,
        daily_seasonality=hourly,
        uncertainty_samples=1000,
    )
    naive = [t.replace(tzinfo=None) for t, _ in train]
    model.fit(pd.DataFrame({"ds": naive, "y": [v for _, v in train]}), seed=seed)
    np.random.seed(seed)  # Prophet samples its trend/noise band with numpy's global generator
    fc = model.predict(pd.DataFrame({"ds": [t.replace(tzinfo=None) for t in evaluate]}))
    floor = _z(interval_width) * RELATIVE_SIGMA_FLOOR
    out = []
    for r in fc[["yhat", "yhat_lower", "yhat_upper", "trend"]].itertuples():
        half = floor * abs(float(r.trend))  # same minimum band as the robust model
        out.append((float(r.yhat), min(float(r.yhat_lower), r.yhat - half), max(float(r.yhat_upper), r.yhat + half)))
    return out


def prophet_available() -> bool:
    try:
        import prophet  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install (missing cmdstan) counts as unavailable
        return False
    return True


def detect(
    series: Sequence[tuple[datetime, float | None]],
    eval_start: datetime,
    *,
    granularity: Granularity = "day",
    model: ModelName = "prophet",
    interval_width: float = 0.95,
    seed: int = 0,
) -> Forecast:
    """Band and anomaly flag for every point of ``series`` at or after ``eval_start``.

    ``series`` holds (interval start, value) pairs, ascending; points before ``eval_start`` and inside
    the training window train the model (see the module docstring for the rule).
    """
    if granularity not in TRAINING_WINDOW:
        raise ValueError(f"granularity must be one of {sorted(TRAINING_WINDOW)}, got {granularity!r}")
    if model not in ("prophet", "robust"):
        raise ValueError(f"model must be prophet or robust, got {model!r}")
    window_start = eval_start - TRAINING_WINDOW[granularity]
    train = [(t, float(v)) for t, v in series if window_start <= t < eval_start and v is not None and math.isfinite(v)]
    evaluated = [(t, v) for t, v in series if t >= eval_start]
    times = [t for t, _ in evaluated]
    used: str = model
    if used == "prophet" and (len(train) < 2 * PERIOD[granularity] or not prophet_available()):
        used = "robust"
    if len(train) < MIN_ROBUST_POINTS or not times:
        return Forecast("none", len(train), [ForecastPoint(t, v, None, None, None, False) for t, v in evaluated])
    if used == "prophet":
        bands = _prophet(train, times, granularity, interval_width, seed)
    else:
        bands = _robust(train, times, granularity, interval_width)
    points = []
    for (t, v), (expected, lower, upper) in zip(evaluated, bands, strict=True):
        anomaly = v is not None and (v < lower or v > upper)
        points.append(ForecastPoint(t, None if v is None else float(v), expected, lower, upper, anomaly))
    return Forecast(used, len(train), points)
