"""Stickiness (``/api/2/stickiness``, ours: no Amplitude v2 twin): on how many days do users come back.

Periods are calendar weeks starting Sunday (``i=7``, the default) or calendar months (``i=30``) of the project's
zone, cut to ``[start, end]`` (only days inside the range count). For every (actor, period) where the actor
performed ``e`` (default ``_active``: any event; filters and ``s`` segments apply; deduplicated, bots excluded
unless asked) on at least one local day, d = the number of distinct local days it did so. A user active in two
periods counts once in each (the counts are user-periods).

* ``xValues`` = 1..N with N = 7 for weeks; for months N = the most in-range days of any month of the range
  (28-31 for whole months, fewer for a shorter range);
* ``series[0][k-1]`` = user-periods with d == k; ``cumulative[0][k-1]`` = user-periods with d >= k;
* ``total`` = all user-periods with d >= 1 (= ``cumulative[0][0]``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from query_service.compile.common import (
    Binder,
    Compiled,
    event_match_sql,
    events_source,
    local_midnight_ms,
    segments_sql,
    utc_days_between,
)
from query_service.params_insights import StickinessQuery


def max_days(q: StickinessQuery) -> int:
    if q.interval == "week":
        return 7
    counts: dict[tuple[int, int], int] = {}
    d = q.range.start
    while d <= q.range.end:
        counts[(d.year, d.month)] = counts.get((d.year, d.month), 0) + 1
        d += timedelta(days=1)
    return max(counts.values())


def compile_stickiness(q: StickinessQuery) -> Compiled:
    b = Binder()
    tz = q.scope.timezone
    start_ms = local_midnight_ms(q.range.start, tz)
    end_ms = local_midnight_ms(q.range.end + timedelta(days=1), tz)
    z = b.bind(tz, "String")
    unit = f"toStartOfWeek(toDate(event_time, {z}), 0)" if q.interval == "week" else f"toStartOfMonth(toDate(event_time, {z}))"
    inner = (f"SELECT actor_id, {unit} AS unit, toInt32(uniqExact(toDate(event_time, {z}))) AS d"
             f" FROM {events_source(b, q.scope, start_ms, end_ms)}"
             f" WHERE {event_match_sql(b, q.event)} AND {segments_sql(b, q.segments)} GROUP BY actor_id, unit")
    sql = f"SELECT d, toInt64(count()) AS n FROM ({inner}) GROUP BY d ORDER BY d"
    return Compiled(sql=sql, params=b.params, project=q.scope.project, reads_lake=b.reads_lake,
                    utc_days=utc_days_between(start_ms, end_ms))


def shape_stickiness(q: StickinessQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = max_days(q)
    exact = [0] * n
    for r in rows:
        if 1 <= r["d"] <= n:
            exact[r["d"] - 1] += int(r["n"])
    cumulative = [sum(exact[k:]) for k in range(n)]
    return {"xValues": list(range(1, n + 1)), "series": [exact], "cumulative": [cumulative], "total": cumulative[0]}


