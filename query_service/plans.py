"""Planners of the typed endpoints for the cache (:mod:`query_service.cache`): request -> :class:`Plan`.

Each parses and compiles exactly as its handler in ``app.py`` does (pure, no I/O), so the cache knows the SQL
(its key), the partitions read (the data versions) and the cost (the limits) before anything runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from query_service import params as P
from query_service.cache import Plan, Planner, RequestPlanner
from query_service.limits import query_cost, sql_cost

log = logging.getLogger(__name__)


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


def _sessions(compile_name: str) -> Planner:
    def plan(params: Mapping[str, Any], scope: P.Scope) -> Plan:
        from query_service import params_insights as PI
        from query_service.compile import sessions as S

        q = PI.parse_sessions(params, scope)
        return Plan((getattr(S, compile_name)(q),), query_cost(q), q.range, "day", query=q)

    return plan


def _user_lookup(paged: bool) -> Planner:
    def plan(params: Mapping[str, Any], scope: P.Scope) -> Plan:
        """The search query (what resolves the user) and the request; the user's rows are all history (every load
        of the project moves the key), so a look-up is cached until the project's next load."""
        from query_service import params_insights as PI
        from query_service.compile import user_lookup as U

        q = PI.parse_user_lookup(params, scope, paged=paged)
        return Plan((U.compile_search(q),), query_cost(q), query=q)

    return plan


def realtime(params: Mapping[str, Any], scope: P.Scope) -> Plan:
    """Keyed on the current minute: within a minute the cached answer is served (its last 5-minute bucket may lack
    the events of the last seconds); data loaded since moves today's version as for every other endpoint."""
    from query_service import params_insights as PI
    from query_service.compile import realtime as RT

    now = datetime.now(UTC).replace(second=0, microsecond=0)
    q = PI.parse_realtime(params, scope, now)
    today = now.astimezone(ZoneInfo(scope.timezone)).date()
    return Plan((RT.compile_realtime(q),), query_cost(q), P.DateRange(today, today), "day", query=q)


def lifecycle(params: Mapping[str, Any], scope: P.Scope) -> Plan:
    from query_service import params_insights as PI
    from query_service.compile import lifecycle as LC

    q = PI.parse_lifecycle(params, scope)
    return Plan((LC.compile_lifecycle(q),), query_cost(q), q.range, q.interval, query=q)


def stickiness(params: Mapping[str, Any], scope: P.Scope) -> Plan:
    from query_service import params_insights as PI
    from query_service.compile import stickiness as ST

    q = PI.parse_stickiness(params, scope)
    return Plan((ST.compile_stickiness(q),), query_cost(q), q.range, q.interval, query=q)


PLANNERS: dict[str, Planner] = {
    "segmentation": segmentation, "funnels": funnels, "retention": retention, "users": users,
    "sessions_length": _sessions("compile_length"), "sessions_peruser": _sessions("compile_peruser"),
    "usersearch": _user_lookup(False), "useractivity": _user_lookup(True), "realtime": realtime,
    "lifecycle": lifecycle, "stickiness": stickiness,
}


# Functions that read the clock or chance: such an answer depends on more than the data versions.
_CLOCK = re.compile(r"\b(now|now64|nowInBlock|today|yesterday|current_?timestamp|current_?date|rand\w*|generateUUID\w*|"
                    r"uptime|timeSlot)\s*\(", re.IGNORECASE)


def sql_planner(engine: Any, settings: Any) -> RequestPlanner:
    """``POST /api/sql`` (query_service/sql_api.py): key = the canonical query text + its params; reads = every
    table it names, whole (its days are not derived from the SQL: any expression may bound ``event_time``); a query
    reading the clock (``now()``, ``today()``, …) is keyed on the current UTC minute too, so it is cached for that
    minute only. Cost = rows to read from ``EXPLAIN ESTIMATE``, asked only on a miss."""
    from query_service.sql_api import parse_body, prepare
    from query_service.sql_rewrite import PROJECT_PARAM, TZ_PARAM, SqlRefused

    async def plan(request: Request, scope: P.Scope) -> Plan | None:
        try:
            query, params = parse_body(await request.body())
            prepared = prepare(query, engine.database)
        except (P.ParamError, SqlRefused):
            return None  # the handler answers it (400/403), uncached
        if prepared.explain:
            return None
        extra = [prepared.normalized, orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()]
        if _CLOCK.search(prepared.normalized):
            extra.append(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M"))
        bind = ({**{k: params.get(k) for k in prepared.params}, PROJECT_PARAM: scope.project, TZ_PARAM: scope.timezone}
                if prepared.placeholders else None)

        async def cost() -> int:
            def estimate() -> int:
                try:
                    result = engine.client(False).query(f"EXPLAIN ESTIMATE {prepared.sql}", parameters=bind)
                    i = list(result.column_names).index("rows")
                    return sum(int(r[i]) for r in result.result_rows)
                except Exception as exc:  # noqa: BLE001 - no estimate: the handler reports a bad query itself
                    log.info("EXPLAIN ESTIMATE failed (cost 1): %s", exc)
                    return 0

            return sql_cost(await run_in_threadpool(estimate), settings.query_cost_sql_rows_per_unit)

        tables = tuple((t, (), True) for t in sorted(prepared.tables))
        return Plan((), 0, tables=tables, extra=tuple(extra), cost_fn=cost)

    return plan
