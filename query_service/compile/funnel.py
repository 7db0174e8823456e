"""Funnels (``/api/2/funnels``): actors reaching each step within ``cs`` seconds of their entry event.

Rules (the dbt marts' ``macros/funnel.sql`` where they overlap; events ordered by (event_time, insert_id)):

* an actor enters at an event of step 1 (with its filters, and the segment ``s`` true on it) whose local
  day is in [start, end]; later steps may fall after ``end`` (inside the window). A step event counts if
  it is at most ``cs`` seconds after the entry (a step exactly at the limit counts);
* ``ordered`` (the marts' "this" order): from the entry, each next step is the first later event that
  matches it; other events between are allowed;
* ``sequential`` (the marts' "exact" order): as ordered, but the actor's very next event after the last
  step reached must be the next step — any other event ends the path;
* ``unordered``: level = 1 + the number of distinct other steps having an event after the entry and at
  most ``cs`` after it; the time of reaching the k-th step is when the k-th distinct step was first reached;
* the actor's path is the entry with the highest level, the earliest on ties (per day for ``dayFunnels``,
  over the range for the totals); bar k counts actors whose level ≥ k; ``n=new`` keeps actors first seen
  (over all history) in the range; ``g`` groups by a property of the entry event.

Only actors listed in ``event_ties`` have their insert_ids read (ordering ties is all they do here).

SQL shape: per actor one array of the (time, insert_id, step bitmask, segment flag, group) of its step
events (every event for ``sequential``); every entry's path comes from the shared funnel functions
(``eventpipe_core.funnel_sql``: linear per actor, the same the dbt marts and ``FUNNEL()`` call).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from eventpipe_core.funnel_sql import funnel_paths_expr
from query_service.compile.common import (
    Binder,
    Compiled,
    bucket_labels,
    event_match_sql,
    events_source,
    first_seen_sql,
    local_midnight_ms,
    prop_sql,
    segments_sql,
    utc_days_between,
)
from query_service.params import FunnelQuery


def _read_span(q: FunnelQuery) -> tuple[int, int, int]:
    """(first entry ms, end of the entry range ms, end of what is read ms: the range plus the window)."""
    start_ms = local_midnight_ms(q.range.start, q.scope.timezone)
    end_ms = local_midnight_ms(q.range.end + timedelta(days=1), q.scope.timezone)
    return start_ms, end_ms, end_ms + q.window_s * 1000 + 1


def _compiled(q: FunnelQuery, b: Binder, sql: str) -> Compiled:
    start_ms, _, read_end = _read_span(q)
    return Compiled(sql=sql.strip(), params=b.params, project=q.scope.project, reads_lake=b.reads_lake,
                    utc_days=utc_days_between(start_ms, read_end), all_history=q.new_users)


def funnel_paths_sql(q: FunnelQuery, b: Binder) -> str:
    """The funnel's per-actor stage: a ``WITH`` clause whose CTE ``best`` holds one row per actor that entered,
    ``(actor_id, b)`` with ``b = (level, t0, times, g)`` — the best path over the range (its level = the last
    step reached) — and ``day_best`` the same per entry ``day``. Public so that every consumer of funnel paths
    (the bars, the users of a step) counts the very same paths; append one ``SELECT … FROM best|day_best``."""
    tz = q.scope.timezone
    n = len(q.steps)
    start_ms, end_ms, read_end = _read_span(q)
    mask = " + ".join(f"if({event_match_sql(b, s)}, {1 << k}, 0)" for k, s in enumerate(q.steps))
    group = prop_sql(b, q.group_by[0]) if q.group_by else "''"
    where = []
    narrow = None  # only step events matter (not for sequential): dedup just the insert_ids of step types
    if q.mode != "sequential":
        where.append("m > 0")
        narrow = f"event_type IN {b.bind(sorted({s.event_type for s in q.steps}), 'Array(String)')}"
    if q.new_users:
        fs = first_seen_sql(b, q.scope)
        lo, hi = b.bind(start_ms, "Int64"), b.bind(end_ms, "Int64")
        where.append(f"actor_id IN (SELECT actor_id FROM {fs} WHERE first.1 >= fromUnixTimestamp64Milli({lo}, 'UTC')"
                     f" AND first.1 < fromUnixTimestamp64Milli({hi}, 'UTC'))")
    s0, s1 = b.bind(start_ms, "Int64"), b.bind(end_ms, "Int64")
    window = b.bind(q.window_s * 1000, "Int64")
    zone = b.bind(tz, "String")
    steps_n = b.bind(n, "UInt8")
    keep = f"length(p) > 0 AND e.4 = 1 AND e.1 >= {s0} AND e.1 < {s1}"
    day = f"toString(toDate(fromUnixTimestamp64Milli(e.1, 'UTC'), {zone}))"
    return f"""
WITH per_actor AS (
    SELECT actor_id, days, days[indexOf(days.2, arrayMax(days.2))] AS top
    FROM (SELECT actor_id,
        arrayMap((e, p) -> ({day}, length(p), e.1, p, e.5), arrayFilter((e, k) -> k, evs, kept),
                 arrayFilter((p, k) -> k, fp, kept)) AS ents,
        arrayMap(c -> c[indexOf(c.2, arrayMax(c.2))],
                 arraySplit((x, prev) -> x.1 != prev, ents, arrayPopBack(arrayPushFront(ents.1, '')))) AS days
    FROM (SELECT actor_id, evs, fp, arrayMap((e, p) -> {keep}, evs, fp) AS kept
    FROM (SELECT actor_id, evs, {funnel_paths_expr(q.mode, "evs.1", "evs.3", steps_n, window)} AS fp
    FROM (SELECT actor_id, arraySort(x -> (x.1, x.2), groupArray((t, insert_id, m, sg, g))) AS evs
    FROM (
        SELECT actor_id, toUnixTimestamp64Milli(event_time) AS t, insert_id, toUInt32({mask}) AS m,
               toUInt8({segments_sql(b, q.segments)}) AS sg, {group} AS g
        FROM {events_source(b, q.scope, start_ms, read_end, narrow=narrow, tie_ids_only=True)}
    )
    {'WHERE ' + ' AND '.join(where) if where else ''}
    GROUP BY actor_id))))
    WHERE notEmpty(days)
),
day_best AS (
    SELECT actor_id, d.1 AS day, (d.2, d.3, d.4, d.5) AS b FROM per_actor ARRAY JOIN days AS d
),
best AS (
    SELECT actor_id, (top.2, top.3, top.4, top.5) AS b FROM per_actor
)
"""


def compile_funnel(q: FunnelQuery) -> Compiled:
    b = Binder()
    paths = funnel_paths_sql(q, b).rstrip()
    steps_n = b.bind(len(q.steps), "UInt8")
    sql = f"""{paths},
out_rows AS (  -- one pass for both outputs (a UNION ALL would evaluate the CTEs above twice)
    SELECT r.1 AS kind, r.2 AS day, r.3 AS b FROM per_actor
    ARRAY JOIN arrayPushBack(arrayMap(x -> ('day', x.1, (x.2, x.3, x.4, x.5)), days),
                             ('all', '', (top.2, top.3, top.4, top.5))) AS r
)
SELECT kind, day, b.4 AS g,
       sumForEach(arrayMap(k -> toUInt64(b.1 >= k), range(1, {steps_n} + 1))) AS counts,
       quantileExactInclusiveForEach(0.5)(if(kind = 'all', arrayMap(k -> toFloat64(b.3[k + 1] - b.3[k]), range(1, b.1)),
                                             CAST([], 'Array(Float64)'))) AS med,
       avgForEach(if(kind = 'all', arrayMap(k -> toFloat64(b.3[k + 1] - b.3[k]), range(1, b.1)),
                     CAST([], 'Array(Float64)'))) AS avg
FROM out_rows GROUP BY kind, day, g
"""
    return _compiled(q, b, sql)


def compile_funnel_actors(q: FunnelQuery, step: int, limit: int) -> Compiled:
    """The actors (ascending, at most ``limit``) whose best path reaches ``step`` (1-based): the users behind
    bar ``step`` of :func:`compile_funnel`, each row also carrying ``total``, the bar's count."""
    b = Binder()
    paths = funnel_paths_sql(q, b)
    sql = (f"{paths}SELECT actor_id, count() OVER () AS total FROM best WHERE b.1 >= {b.bind(step, 'UInt8')}"
           f" ORDER BY actor_id LIMIT {int(limit)}")
    return _compiled(q, b, sql)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 6) if b else 0.0


def shape(q: FunnelQuery, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One Amplitude funnel object per group (a single one without ``g``), largest groups first."""
    n = len(q.steps)
    days = bucket_labels(q.range.start, q.range.end, "day", q.scope.timezone)
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        grp = groups.setdefault(r["g"], {"all": None, "days": {}})
        counts = [int(c) for c in r["counts"]] + [0] * (n - len(r["counts"]))
        if r["kind"] == "all":
            grp["all"] = (counts, list(r["med"]), list(r["avg"]))
        else:
            grp["days"][r["day"]] = counts
    if not groups:
        groups[""] = {"all": None, "days": {}}
    ordered = sorted(groups.items(), key=lambda kv: (-(kv[1]["all"][0][0] if kv[1]["all"] else 0), kv[0]))[: q.limit]
    out = []
    for g, grp in ordered:
        counts, med, avg = grp["all"] or ([0] * n, [], [])
        trans_med = [0] + [int(round(med[k])) if k < len(med) and med[k] == med[k] else 0 for k in range(n - 1)]
        trans_avg = [0] + [int(round(avg[k])) if k < len(avg) and avg[k] == avg[k] else 0 for k in range(n - 1)]
        obj: dict[str, Any] = {
            "events": [s.event_type for s in q.steps],
            "cumulativeRaw": counts,
            "cumulative": [_ratio(c, counts[0]) for c in counts],
            "stepByStep": [1.0 if k == 0 else _ratio(counts[k], counts[k - 1]) for k in range(n)],
            "medianTransTimes": trans_med,
            "avgTransTimes": trans_avg,
            "dayFunnels": {"xValues": days, "formattedXValues": days,
                           "series": [grp["days"].get(d, [0] * n) for d in days]},
        }
        if q.group_by:
            obj["groupValue"] = g if g != "" else "(none)"
        out.append(obj)
    return out
