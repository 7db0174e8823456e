"""Lifecycle (``/api/2/lifecycle``, ours: no Amplitude v2 twin): who is new, current, resurrected or dormant.

Intervals are whole calendar periods of the project's zone — days (``i=1``), weeks starting Sunday (``i=7``) or
months (``i=30``) — one per period overlapping ``[start, end]`` (the range widens to whole periods; ``xValues`` are
the periods' first days). An actor is *active* in a period when it performed ``e`` there (default ``_active``: any
event; filters and ``s`` segments apply), over deduplicated, non-bot events of all history. For each period P
with previous period P-1:

* new: active in P, and P is the first period the actor was ever active in;
* current: active in P and in P-1;
* resurrected: active in P, not in P-1, but in some period before P-1;
* dormant: active in P-1 but not in P.

new + current + resurrected = actors active in P; all four are counts (non-negative).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from query_service.compile.common import (
    Binder,
    Compiled,
    bucket_labels,
    event_match_sql,
    events_source,
    local_midnight_ms,
    segments_sql,
    utc_days_between,
)
from query_service.params_insights import LifecycleQuery


def shift(d: date, interval: str, n: int) -> date:
    """The period start ``n`` periods after (or before) the period start ``d``."""
    if interval == "day":
        return d + timedelta(days=n)
    if interval == "week":
        return d + timedelta(days=7 * n)
    m = d.year * 12 + d.month - 1 + n
    return date(m // 12, m % 12 + 1, 1)


def period_sql(b: Binder, interval: str, tz: str) -> str:
    z = b.bind(tz, "String")
    if interval == "day":
        return f"toDate(event_time, {z})"
    if interval == "week":
        return f"toStartOfWeek(toDate(event_time, {z}), 0)"
    return f"toStartOfMonth(toDate(event_time, {z}))"


def periods(q: LifecycleQuery) -> list[date]:
    return [date.fromisoformat(x) for x in bucket_labels(q.range.start, q.range.end, q.interval, q.scope.timezone)]


def compile_lifecycle(q: LifecycleQuery) -> Compiled:
    b = Binder()
    tz = q.scope.timezone
    ps = periods(q)
    prevs = [shift(p, q.interval, -1) for p in ps]
    end_ms = local_midnight_ms(shift(ps[-1], q.interval, 1), tz)
    src = events_source(b, q.scope, None, end_ms)
    per = period_sql(b, q.interval, tz)
    lo = b.bind(prevs[0], "Date")
    actors = (f"SELECT actor_id, min(p) AS first, groupUniqArrayIf(p, p >= {lo}) AS ps FROM"
              f" (SELECT actor_id, {per} AS p FROM {src}"
              f" WHERE {event_match_sql(b, q.event)} AND {segments_sql(b, q.segments)}) GROUP BY actor_id")
    sql = (
        "SELECT toString(k) AS period,"
        " toInt64(countIf(has(ps, k) AND first = k)) AS new,"
        " toInt64(countIf(has(ps, k) AND has(ps, prev))) AS current,"
        " toInt64(countIf(has(ps, k) AND NOT has(ps, prev) AND first < prev)) AS resurrected,"
        " toInt64(countIf(NOT has(ps, k) AND has(ps, prev))) AS dormant"
        f" FROM ({actors}) ARRAY JOIN {b.bind(ps, 'Array(Date)')} AS k, {b.bind(prevs, 'Array(Date)')} AS prev"
        " GROUP BY k ORDER BY k"
    )
    return Compiled(sql=sql, params=b.params, project=q.scope.project, reads_lake=b.reads_lake,
                    utc_days=utc_days_between(local_midnight_ms(prevs[0], tz), end_ms), all_history=True)


def shape_lifecycle(q: LifecycleQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    x_values = [p.isoformat() for p in periods(q)]
    by = {r["period"]: r for r in rows}
    series = {k: [int(by[x][k]) if x in by else 0 for x in x_values] for k in ("new", "current", "resurrected", "dormant")}
    return {"xValues": x_values, "series": series}
