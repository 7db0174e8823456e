"""Sessions (``/api/2/sessions/length``, ``/api/2/sessions/peruser``), Amplitude's session charts.

The session rule: a session is one ``(actor_id, session_id)`` of ``analytics.events`` as loaded, over the
deduplicated, non-bot event source; ``session_id < 0`` (the SDKs' -1, or absent, which the pipeline loads as -1)
means the event belongs to no session and is ignored. A session's start is its first event, its length the time
from its first to its last event (ms), capped at 1 day (Amplitude's bound). A session belongs to the local day
(project time zone) of its start: it counts in a range when it starts inside it. Sessions are read from the
events of [the range's first local midnight - 24 h, its end + 24 h): a session's start and length are those of
its events in that window (exact for sessions shorter than a day, the length Amplitude caps them at; an older
session still going on is seen from the window's start). Segment filters (``s``) choose the events a session is made of.

* length: sessions per length bin over the whole range; bin k is ``[edge_k, edge_k+1)`` in ms, the last bin
  also holds lengths equal to its upper edge (the 1-day cap); lengths outside custom bins are not counted.
* peruser: per local day, sessions started that day / actors who started one that day (0 when none);
  ``seriesCollapsed`` is the same ratio over the whole range.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from query_service.compile.common import (
    Binder,
    Compiled,
    bucket_labels,
    events_source,
    local_midnight_ms,
    segments_sql,
    utc_days_between,
)
from query_service.params_insights import SESSION_CAP_MS, SessionsQuery

DAY_MS = 86_400_000


def _sessions_sql(b: Binder, q: SessionsQuery) -> tuple[str, int, int]:
    tz = q.scope.timezone
    start_ms = local_midnight_ms(q.range.start, tz)
    end_ms = local_midnight_ms(q.range.end + timedelta(days=1), tz)
    # A day before: to see that a session starting in the range has no earlier events. A day after: its length.
    src = events_source(b, q.scope, start_ms - DAY_MS, end_ms + DAY_MS)
    sql = (
        "SELECT actor_id, session_id, min(event_time) AS s0,"
        f" least(toUnixTimestamp64Milli(max(event_time)) - toUnixTimestamp64Milli(min(event_time)), {SESSION_CAP_MS})"
        " AS len_ms"
        f" FROM {src} WHERE session_id >= 0 AND {segments_sql(b, q.segments)}"
        " GROUP BY actor_id, session_id"
        f" HAVING s0 >= fromUnixTimestamp64Milli({b.bind(start_ms, 'Int64')}, 'UTC')"
        f" AND s0 < fromUnixTimestamp64Milli({b.bind(end_ms, 'Int64')}, 'UTC')"
    )
    return sql, start_ms, end_ms


def compile_length(q: SessionsQuery) -> Compiled:
    b = Binder()
    inner, start_ms, end_ms = _sessions_sql(b, q)
    edges = list(q.bins_ms)
    lo, hi = b.bind(edges[0], "Int64"), b.bind(edges[-1], "Int64")
    uppers = b.bind(edges[1:], "Array(Int64)")
    sql = (f"SELECT toInt32(if(len_ms = {hi}, length({uppers}), arrayFirstIndex(x -> len_ms < x, {uppers}))) AS bin,"
           f" toInt64(count()) AS n FROM ({inner}) WHERE len_ms >= {lo} AND len_ms <= {hi} GROUP BY bin ORDER BY bin")
    return Compiled(sql=sql, params=b.params, project=q.scope.project, reads_lake=b.reads_lake,
                    utc_days=utc_days_between(start_ms - DAY_MS, end_ms + DAY_MS))


def bin_label(lo_ms: int, hi_ms: int) -> str:
    """Amplitude's ``[bucketStartInSeconds]s-[bucketEndInSeconds]s`` (fractions kept when bins are sub-second)."""
    def s(ms: int) -> str:
        return f"{ms // 1000}" if ms % 1000 == 0 else f"{ms / 1000:g}"
    return f"{s(lo_ms)}s-{s(hi_ms)}s"


def shape_length(q: SessionsQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    edges = q.bins_ms
    counts = [0] * (len(edges) - 1)
    for r in rows:
        if 1 <= r["bin"] <= len(counts):
            counts[r["bin"] - 1] += int(r["n"])
    labels = [bin_label(edges[k], edges[k + 1]) for k in range(len(counts))]
    return {"series": [counts], "xValues": labels}


def compile_peruser(q: SessionsQuery) -> Compiled:
    b = Binder()
    inner, start_ms, end_ms = _sessions_sql(b, q)
    z = b.bind(q.scope.timezone, "String")
    sql = (f"SELECT toString(toDate(s0, {z})) AS day, toInt64(count()) AS sessions, toInt64(uniqExact(actor_id)) AS users"
           f" FROM ({inner}) GROUP BY GROUPING SETS ((day), ()) ORDER BY day")
    return Compiled(sql=sql, params=b.params, project=q.scope.project, reads_lake=b.reads_lake,
                    utc_days=utc_days_between(start_ms - DAY_MS, end_ms + DAY_MS), settings={"group_by_use_nulls": 1})


def _ratio(sessions: int, users: int) -> float:
    v = sessions / users if users else 0.0
    return int(v) if float(v).is_integer() else round(v, 6)


def shape_peruser(q: SessionsQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Amplitude's shape: ``series`` (one list over ``xValues``, the local days), ``seriesLabels``, ``seriesMeta``,
    ``seriesCollapsed`` (the whole range)."""
    x_values = bucket_labels(q.range.start, q.range.end, "day", q.scope.timezone)
    by_day = {r["day"]: r for r in rows}
    series = [_ratio(by_day[d]["sessions"], by_day[d]["users"]) if d in by_day else 0 for d in x_values]
    total = by_day.get(None)
    collapsed = _ratio(total["sessions"], total["users"]) if total else 0
    return {"series": [series], "seriesLabels": [0], "seriesMeta": [{"segmentIndex": 0}],
            "seriesCollapsed": [[collapsed]], "xValues": x_values}
