"""``forecast=1`` on segmentation: an anomaly band for every point of every series (rules in
:mod:`eventpipe_core.forecast`).

The history the model trains on is the same segmentation over the training window before ``start``
(120 days for ``i=1``, 14 days for ``i=-3600000``), run as a second query; leading empty buckets (before the
project had any such event) are not training data. The response gains ``data.forecast``: per series, per
xValue, ``{"expected", "lower", "upper", "anomaly"}`` (``null`` band when the history is too short), and
``data.forecastModel`` per series (``prophet``, ``robust`` or ``none``). At most ``MAX_FORECAST_SERIES``
series get a band (the largest, in response order). Model: ``forecast_model=prophet|robust``, default
``ANOMALY_MODEL``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool

from eventpipe_core.forecast import TRAINING_WINDOW, detect
from query_service.params import DateRange, ParamError, SegmentationQuery

MAX_FORECAST_SERIES = 20


def _label_time(label: str) -> datetime:
    """A bucket label (local clock) as a datetime; seasonality phases follow the project's clock."""
    return datetime.fromisoformat(label).replace(tzinfo=UTC)


def _key(label: Any) -> str:
    return repr(label)


def history_query(q: SegmentationQuery) -> SegmentationQuery:
    """The same segmentation over the training window before ``start`` (the cache plans it too)."""
    days = math.ceil(TRAINING_WINDOW[q.interval] / timedelta(days=1))
    return replace(q, range=DateRange(q.range.start - timedelta(days=days), q.range.start - timedelta(days=1)),
                   limit=max(q.limit, 1000))


async def add_forecast(
    q: SegmentationQuery,
    data: dict[str, Any],
    run: Callable[[Any], Awaitable[list[dict[str, Any]]]],
    model: str,
) -> dict[str, Any]:
    from query_service.compile import segmentation as seg

    if q.interval not in TRAINING_WINDOW:
        raise ParamError("forecast", "needs a daily (i=1) or hourly (i=-3600000) chart")
    if model not in ("prophet", "robust"):
        raise ParamError("forecast_model", f"must be prophet or robust, got {model[:40]!r}")
    hist_q = history_query(q)
    hist = seg.shape(hist_q, await run(seg.compile_segmentation(hist_q)))
    hist_by_label = {_key(lab): s for lab, s in zip(hist["seriesLabels"], hist["series"], strict=True)}
    hist_x = [_label_time(x) for x in hist["xValues"]]
    x = [_label_time(v) for v in data["xValues"]]
    eval_start = x[0]

    def compute() -> tuple[list[Any], list[str]]:
        bands: list[Any] = []
        models: list[str] = []
        for i, (label, values) in enumerate(zip(data["seriesLabels"], data["series"], strict=True)):
            if i >= MAX_FORECAST_SERIES:
                bands.append(None)
                models.append("none")
                continue
            past = list(zip(hist_x, hist_by_label.get(_key(label), [0] * len(hist_x)), strict=True))
            first = next((j for j, (_, v) in enumerate(past) if v), len(past))
            series = past[first:] + list(zip(x, values, strict=True))
            fc = detect(series, eval_start, granularity=q.interval, model=model)  # type: ignore[arg-type]
            bands.append([{"expected": p.expected, "lower": p.lower, "upper": p.upper, "anomaly": p.anomaly}
                          for p in fc.points])
            models.append(fc.model)
        return bands, models

    bands, models = await run_in_threadpool(compute)
    return {**data, "forecast": bands, "forecastModel": models}
