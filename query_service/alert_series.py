"""The series an alert watches, computed by the query service's own SQL (so an alert and its chart agree).

A *series spec* (stored as the alert's ``series`` JSON) names one line of a chart:

* ``{"kind": "segmentation", "params": {…/api/2/events/segmentation parameters…}, "series": i}`` — the i-th
  series of the response (an event's metric, or a formula such as ``UNIQUES(A)/UNIQUES(B)`` or
  ``TOTALS(A)/TOTALS(B)`` = errors / all events). ``i`` = ``-3600000`` (hourly) or ``1`` (daily, the default).
* ``{"kind": "funnel", "params": {…/api/2/funnels…}, "series": g}`` — group g's overall conversion per day
  (last step / first step of ``dayFunnels``); a day counts once its conversion window has passed; days where
  nobody entered have no value.
* ``{"kind": "retention", "params": {…/api/2/retention…}, "series": g, "day": N}`` — retention on day N of each
  daily starting cohort (count / cohort size), once that cell is complete; empty cohorts have no value.

``complete_only`` (default true) evaluates only complete intervals; false also evaluates the running one.
``chart_id`` (optional) records the saved chart it came from; :func:`params_from_chart` turns a saved chart's
definition (the web UI's page state) into the API parameters exactly like ``web/src/pages/*.tsx`` do.
``start``/``end`` are never taken from the spec: every evaluation reads a rolling window ending today in the
project's time zone (:func:`lookback_days`). Interval starts are returned as UTC datetimes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from query_service import params as P

KINDS = ("segmentation", "funnel", "retention")
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

Runner = Callable[[Any], list[dict[str, Any]]]  # Compiled -> rows (e.g. lambda c: engine.run(c).rows)


def _err(field: str, message: str) -> P.ParamError:
    return P.ParamError(f"series.{field}", message)


def normalize_spec(spec: Any) -> dict[str, Any]:
    """Validate a series spec (400s name ``series.<field>``) and return it in its stored form."""
    if not isinstance(spec, dict):
        raise P.ParamError("series", "must be an object {kind, params, series[, day]}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise _err("kind", f"must be one of {', '.join(KINDS)}")
    params = spec.get("params")
    if not isinstance(params, dict) or not params:
        raise _err("params", "must be an object of the chart's /api/2 query parameters")
    clean: dict[str, str | list[str]] = {}
    for k, v in params.items():
        if k in ("start", "end"):
            continue  # the evaluation window is rolling
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            clean[str(k)] = v
        elif isinstance(v, str | int | float) and not isinstance(v, bool):
            clean[str(k)] = str(v)
        elif v is not None:
            raise _err(f"params.{k}", "must be a string or a list of strings")
    if kind == "funnel" and "cs" not in clean:  # explicit: the lookback and completeness depend on the window
        clean["cs"] = str(P.DEFAULT_CONVERSION_WINDOW_S)
    index = spec.get("series", 0)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1000:
        raise _err("series", "must be a series index >= 0")
    out: dict[str, Any] = {"kind": kind, "params": clean, "series": index}
    if kind == "retention":
        day = spec.get("day")
        if not isinstance(day, int) or isinstance(day, bool) or not 1 <= day <= 90:
            raise _err("day", "retention alerts need day N (1-90)")
        out["day"] = day
    if spec.get("chart_id") is not None:
        out["chart_id"] = spec["chart_id"]
    if spec.get("complete_only", True) is not True:
        if spec["complete_only"] is not False:
            raise _err("complete_only", "must be true (default: only complete intervals) or false")
        out["complete_only"] = False
    interval(out)  # the interval must be hourly or daily
    # every parameter must parse: a bad spec is a 400 now, not a failing sensor later
    scope = P.Scope(project="-")
    window = {"start": "20260101", "end": "20260102"}
    if kind == "segmentation":
        P.parse_segmentation({**clean, **window}, scope)
    elif kind == "funnel":
        P.parse_funnel({**clean, **window}, scope)
    else:
        P.parse_retention({**clean, **window}, scope, today=date(2026, 1, 3))
    return out


def interval(spec: dict[str, Any]) -> timedelta:
    """The series' interval: hourly segmentation charts are evaluated hourly, everything else daily."""
    i = spec["params"].get("i", "1")
    if spec["kind"] == "segmentation":
        if i not in ("1", "-3600000"):
            raise _err("params.i", "alerts watch hourly (-3600000) or daily (1) charts")
        return HOUR if i == "-3600000" else DAY
    if spec["kind"] == "retention" and i != "1":
        raise _err("params.i", "retention alerts watch daily cohorts (i=1)")
    return DAY


def lookback_days(spec: dict[str, Any], condition: str) -> int:
    """Days read per evaluation: enough intervals to see revisions (and, for anomaly, the forecast's training
    window: 14 days of hours or 120 days, plus the 24 evaluated intervals)."""
    hourly = interval(spec) == HOUR
    if condition == "anomaly":
        return 16 if hourly else 150
    extra = int(spec.get("day", 0)) + (int(spec["params"].get("cs", 0) or 0) // 86_400 if spec["kind"] == "funnel" else 0)
    return (3 if hourly else 30) + extra


def _start_of(label: str, tz: ZoneInfo) -> datetime:
    local = datetime.fromisoformat(label)
    return local.replace(tzinfo=tz).astimezone(UTC)


def compute_series(run: Runner, spec: dict[str, Any], scope: P.Scope, now: datetime,
                         condition: str = "above") -> list[tuple[datetime, float]]:
    """(interval start in UTC, value) over the rolling window ending today (``now`` in the project's zone)."""
    tz = ZoneInfo(scope.timezone)
    today = now.astimezone(tz).date()
    window = {"start": (today - timedelta(days=lookback_days(spec, condition))).strftime("%Y%m%d"),
              "end": today.strftime("%Y%m%d")}
    params = {**spec["params"], **window}
    index = int(spec.get("series", 0))
    if spec["kind"] == "segmentation":
        from query_service.compile import segmentation as seg

        q = P.parse_segmentation(params, scope)
        data = seg.shape(q, run(seg.compile_segmentation(q)))
        if index >= len(data["series"]):
            return []
        return [(_start_of(x, tz), float(v)) for x, v in zip(data["xValues"], data["series"][index], strict=True)]
    if spec["kind"] == "funnel":
        from query_service.compile import funnel

        fq = P.parse_funnel(params, scope)
        groups = funnel.shape(fq, run(funnel.compile_funnel(fq)))
        if index >= len(groups):
            return []
        days = groups[index]["dayFunnels"]
        out = []
        for x, counts in zip(days["xValues"], days["series"], strict=True):
            start = _start_of(x, tz)
            if counts and counts[0] and start + DAY + timedelta(seconds=fq.window_s) <= now:
                out.append((start, counts[-1] / counts[0]))
        return out
    from query_service.compile import retention as ret

    rq = P.parse_retention(params, scope, today=today)
    data = ret.shape(rq, run(ret.compile_retention(rq)))
    if index >= len(data["series"]):
        return []
    n = int(spec["day"])
    out = []
    for d, cells in data["series"][index]["values"].items():
        if len(cells) > n and not cells[n]["incomplete"] and cells[n]["outof"]:
            out.append((_start_of(d, tz), cells[n]["count"] / cells[n]["outof"]))
    return sorted(out)


# --- saved charts (the web UI's page state) -> API parameters, as web/src/pages/*.tsx build them ----------------

def _event_filters(filters: Any) -> list[dict[str, Any]]:
    out = []
    for f in filters or []:
        if isinstance(f, dict) and f.get("prop"):
            values = [v.strip() for v in str(f.get("values", "")).split(",") if v.strip()]
            out.append({"subprop_type": f["prop"].get("type"), "subprop_key": f["prop"].get("value"),
                        "subprop_op": f.get("op"), "subprop_value": values})
    return out


def params_from_chart(kind: str, definition: dict[str, Any]) -> dict[str, Any]:
    """API parameters of a saved chart (a definition already in API form — ``e``/``se`` keys — is kept)."""
    if "e" in definition or "se" in definition:
        return dict(definition)
    if kind == "segmentation":
        group = definition.get("groupBy")

        def ev(name: str) -> str:
            return json.dumps({"event_type": name, "filters": _event_filters(definition.get("filters")),
                               "group_by": [{"type": group["type"], "value": group["value"]}] if group else []})

        out = {"e": ev(definition.get("event", "")), "m": definition.get("metric", "uniques"),
               "i": str(definition.get("interval", "1"))}
        if definition.get("event2"):
            out["e2"] = ev(definition["event2"])
        return out
    if kind == "funnel":
        group = definition.get("groupBy")
        out = {"e": [json.dumps({"event_type": s}) for s in definition.get("steps", [])],
               "mode": definition.get("mode", "ordered"), "cs": str(definition.get("window", 7 * 86400))}
        if group:
            out["g"] = group["value"] if group.get("type") == "user" else f"ep:{group['value']}"
        return out
    if kind == "retention":
        return {"se": json.dumps({"event_type": definition.get("start_event", "")}),
                "re": json.dumps({"event_type": definition.get("return_event", "_active")}),
                "rm": definition.get("mode", "n-day"), "i": str(definition.get("interval", "1"))}
    raise _err("kind", f"alerts watch segmentation, funnel and retention charts, not {kind}")
