"""Planners of the typed endpoints for the cache (:mod:`query_service.cache`): request -> :class:`Plan`.

Each parses and compiles exactly as its handler in ``app.py`` does (pure, no I/O), so the cache knows the SQL
(its key), the partitions read (the data versions) and the cost (the limits) before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from query_service import params as P
from query_service.cache import Plan, Planner
from query_service.limits import query_cost


def _today(tz: str) -> date:
    return datetime.now(ZoneInfo(tz)).date()


def segmentation(params: Mapping[str, Any], scope: P.Scope) -> Plan:
    from query_service.compile import segmentation as seg

    q = P.parse_segmentation(params, scope)
    compiled = [seg.compile_segmentation(q)]
    extra: tuple[str, ...] = ()
    if P.parse_bool(params, "forecast"):
        from eventpipe_core.forecast import TRAINING_WINDOW
        from query_service.forecast_api import history_query

        extra = ("forecast", str(params.get("forecast_model") or ""))
        if q.interval in TRAINING_WINDOW:  # else the handler answers 400
            compiled.append(seg.compile_segmentation(history_query(q)))
    return Plan(tuple(compiled), query_cost(q), q.range, q.interval, extra=extra, query=q)


def funnels(params: Mapping[str, Any], scope: P.Scope) -> Plan:
    from query_service.compile import funnel

    q = P.parse_funnel(params, scope)
    return Plan((funnel.compile_funnel(q),), query_cost(q), q.range, "day", query=q)


def retention(params: Mapping[str, Any], scope: P.Scope) -> Plan:
    from query_service.compile import retention as ret

    q = P.parse_retention(params, scope, today=_today(scope.timezone))
    return Plan((ret.compile_retention(q),), query_cost(q), q.range, q.interval, query=q)


def users(params: Mapping[str, Any], scope: P.Scope) -> Plan:
    from query_service.compile import segmentation as seg

    u = P.parse_users(params, scope)
    q = P.SegmentationQuery(scope=scope, events=(P.EventSpec("_new" if u.metric == "new" else "_active"),),
                            range=u.range, metric="uniques", interval=u.interval, segments=u.segments,
                            group_by=u.group_by, limit=1000)  # as app.py's users handler
    return Plan((seg.compile_segmentation(q),), query_cost(u), u.range, u.interval, query=u)


PLANNERS: dict[str, Planner] = {"segmentation": segmentation, "funnels": funnels, "retention": retention,
                                "users": users}
