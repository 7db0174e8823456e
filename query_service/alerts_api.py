"""Alert routes (mounted by ``query_service.app`` behind its auth; the caller's project comes from its scope).

* ``GET /api/alerts`` → ``{"alerts": [alert…]}``; ``POST /api/alerts`` → 201, the alert plus its webhook
  ``secret`` (shown once). Body::

      {"name": "error rate > 5 %", "condition": "above" | "below" | "change" | "anomaly", "threshold": 0.05,
       "webhook_url": "https://…", "chart_id": 12,             # a saved chart (its series 0 unless "series")
       "series": {"kind", "params", "series", "day", "complete_only"}}   # or the series itself

  With ``chart_id`` alone the chart's definition gives the parameters (:func:`alert_series.params_from_chart`);
  ``series`` fields override them. ``change`` compares with the previous interval (``abs(v/prev - 1) >
  threshold``); ``anomaly`` fires outside the forecast band (threshold unused).
* ``GET /api/alerts/{id}`` → the alert and its ``history`` (transitions, oldest first, each with ``delivered``);
  ``GET /api/alerts/{id}/events`` → ``{"events": history}``; ``PUT /api/alerts/{id}`` changes ``name``,
  ``condition``, ``threshold``, ``webhook_url`` or ``series``; ``DELETE /api/alerts/{id}``.
* ``POST /api/alerts/{id}/snooze`` ``{"until": ISO-8601}`` or ``{"minutes": N}`` (``{"until": null}`` unsnoozes).

An alert is ``{"id", "project", "name", "series", "condition", "threshold", "interval": "hour"|"day",
"webhook_url", "status": "firing"|"resolved"|"snoozed", "firing", "snoozed_until", "created_at"}``.
400 ``{"error", "parameter"}`` names the bad field; 404 for an unknown id or another project's alert.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventpipe_core.alerting import CONDITIONS
from eventpipe_core.metadata import ChartStore, MetadataError, MetadataStore
from eventpipe_core.metadata.alerts import (
    alert_history,
    create_alert,
    delete_alert,
    get_alert,
    list_alerts,
    snooze_alert,
    update_alert,
)
from query_service import alert_series
from query_service.params import ParamError

Guard = Callable[[Callable[[Request, Any], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        obj = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise ParamError("body", "must be a JSON object") from None
    if not isinstance(obj, dict):
        raise ParamError("body", "must be a JSON object")
    return obj


def parse_threshold(value: Any, condition: str) -> float:
    if value is None and condition == "anomaly":
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ParamError("threshold", "must be a number")
    if condition == "change" and value <= 0:
        raise ParamError("threshold", "a relative change threshold is > 0 (0.2 = 20 %)")
    return float(value)


def resolve_series(charts: ChartStore, project: str, body: dict[str, Any],
                   current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stored series spec from ``chart_id`` and/or ``series`` (400s name the field)."""
    given = body.get("series")
    if given is not None and not isinstance(given, dict):
        raise ParamError("series", "must be an object {kind, params, series[, day]}")
    spec: dict[str, Any] = dict(current or {})
    chart_id = body.get("chart_id")
    if chart_id is not None:
        if isinstance(chart_id, bool) or not isinstance(chart_id, int):
            raise ParamError("chart_id", "must be a saved chart's id (an integer)")
        chart = charts.get_chart(project, chart_id)
        if chart is None:
            raise ParamError("chart_id", f"no saved chart {chart_id} in this project")
        spec = {"kind": chart["kind"], "params": alert_series.params_from_chart(chart["kind"], chart["definition"]),
                "series": 0, "chart_id": chart_id}
    spec.update(given or {})
    if not spec:
        raise ParamError("series", "give chart_id (a saved chart) or series {kind, params, series}")
    return alert_series.normalize_spec(spec)


def parse_until(body: dict[str, Any]) -> datetime | None:
    if "minutes" in body:
        m = body["minutes"]
        if isinstance(m, bool) or not isinstance(m, int | float) or not 0 < m <= 366 * 1440:
            raise ParamError("minutes", "must be a number of minutes (0 < minutes <= 527040)")
        return datetime.now(UTC) + timedelta(minutes=m)
    if "until" not in body:
        raise ParamError("until", "give until (ISO-8601 time, or null to unsnooze) or minutes")
    if body["until"] is None:
        return None
    try:
        t = datetime.fromisoformat(str(body["until"]).replace("Z", "+00:00"))
    except ValueError:
        raise ParamError("until", "must be an ISO-8601 time such as 2026-03-01T12:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def alert_routes(store: MetadataStore, guarded: Guard) -> list[Route]:
    charts = ChartStore(store.engine)

    def not_found(aid: str) -> JSONResponse:
        return JSONResponse({"code": 404, "error": f"no alert {aid!r} in this project"}, status_code=404)

    async def collection(request: Request, scope: Any) -> Response:
        if request.method == "GET":
            return JSONResponse({"alerts": await run_in_threadpool(list_alerts, store, scope.project)})
        body = await _json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ParamError("name", "must be a non-empty string (at most 200 characters)")
        condition = body.get("condition")
        if condition not in CONDITIONS:
            raise ParamError("condition", f"must be one of {', '.join(CONDITIONS)}")
        threshold = parse_threshold(body.get("threshold"), condition)
        url = body.get("webhook_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2000:
            raise ParamError("webhook_url", "must be an http(s) URL")
        spec = await run_in_threadpool(resolve_series, charts, scope.project, body)
        try:
            aid, secret = await run_in_threadpool(
                lambda: create_alert(store, scope.project, name.strip(), series=spec, condition=condition,
                                     threshold=threshold, interval=alert_series.interval(spec), webhook_url=url))
        except MetadataError as exc:
            raise ParamError("body", str(exc)) from None
        alert = await run_in_threadpool(get_alert, store, scope.project, aid)
        return JSONResponse({**(alert or {}), "secret": secret}, status_code=201)

    async def one(request: Request, scope: Any) -> Response:
        aid = request.path_params["alert_id"]
        current = await run_in_threadpool(get_alert, store, scope.project, aid)
        if current is None:
            return not_found(aid)
        if request.method == "DELETE":
            await run_in_threadpool(delete_alert, store, scope.project, aid)
            return JSONResponse({"deleted": aid})
        if request.method == "PUT":
            body = await _json_body(request)
            changes: dict[str, Any] = {}
            if "name" in body:
                if not isinstance(body["name"], str) or not body["name"].strip():
                    raise ParamError("name", "must be a non-empty string")
                changes["name"] = body["name"].strip()
            condition = body.get("condition", current["condition"])
            if condition not in CONDITIONS:
                raise ParamError("condition", f"must be one of {', '.join(CONDITIONS)}")
            changes["condition"] = condition
            if "threshold" in body or condition != current["condition"]:
                changes["threshold"] = parse_threshold(body.get("threshold", current["threshold"]), condition)
            if "webhook_url" in body:
                url = body["webhook_url"]
                if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                    raise ParamError("webhook_url", "must be an http(s) URL")
                changes["webhook_url"] = url
            if "series" in body or "chart_id" in body:
                spec = await run_in_threadpool(resolve_series, charts, scope.project, body, current["series"])
                changes["series"], changes["interval"] = spec, alert_series.interval(spec)
            if changes.get("condition") == current["condition"]:
                changes.pop("condition")
            if changes.get("threshold") == current["threshold"]:
                changes.pop("threshold")
            alert = await run_in_threadpool(lambda: update_alert(store, scope.project, aid, **changes))
            return JSONResponse(alert)
        history = await run_in_threadpool(alert_history, store, aid)
        return JSONResponse({**current, "history": history})

    async def events(request: Request, scope: Any) -> Response:
        aid = request.path_params["alert_id"]
        if await run_in_threadpool(get_alert, store, scope.project, aid) is None:
            return not_found(aid)
        return JSONResponse({"events": await run_in_threadpool(alert_history, store, aid)})

    async def snooze(request: Request, scope: Any) -> Response:
        aid = request.path_params["alert_id"]
        until = parse_until(await _json_body(request))
        alert = await run_in_threadpool(snooze_alert, store, scope.project, aid, until)
        return JSONResponse(alert) if alert is not None else not_found(aid)

    return [
        Route("/api/alerts", guarded(collection), methods=["GET", "POST"]),
        Route("/api/alerts/{alert_id}", guarded(one), methods=["GET", "PUT", "DELETE"]),
        Route("/api/alerts/{alert_id}/events", guarded(events), methods=["GET"]),
        Route("/api/alerts/{alert_id}/snooze", guarded(snooze), methods=["POST"]),
    ]
