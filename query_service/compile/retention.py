"""Retention (``/api/2/retention``): of the actors starting in an interval, how many return N intervals later.

Rules (the marts' ``fct_retention_cohorts`` for ``se=_new``, ``re=_all``, daily; intervals are calendar
days / weeks (Sunday) / months in the project's time zone):

* an actor's cohort is the interval of its first starting event (``se``, with filters and the segment
  ``s`` true on it) in [start, end]; ``se=_new`` = the actor's first event over all history falls there;
  ``se=_active`` = any event; ``g`` groups by a property of that first starting event;
* index 0 is the cohort itself (its size); for N ≥ 1, ``rm=n-day`` ("Return On") counts actors with a
  returning event (``re``; ``_all``/``_active`` = any event) in exactly interval cohort+N, ``rm=rolling``
  ("Return On or After") in cohort+N or any later interval, ``rm=bracket`` in any interval of the bracket;
* returns are counted up to today; an interval that has not ended yet is ``incomplete: true``, later ones
  are not listed; ``combined`` sums complete cohorts only (actors of incomplete intervals never enter a
  denominator).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from query_service.compile.common import (
    Binder,
    Compiled,
    bucket_labels,
    bucket_of_date,
    event_match_sql,
    events_source,
    first_seen_sql,
    local_midnight_ms,
    prop_sql,
    segments_sql,
    utc_days_between,
)
from query_service.params import RetentionQuery

MAX_INTERVALS = 400


def _bucket_date(b: Binder, interval: str, tz: str) -> str:
    z = b.bind(tz, "String")
    if interval == "week":
        return f"toStartOfWeek(toDate(event_time, {z}), 0)"
    if interval == "month":
        return f"toStartOfMonth(toDate(event_time, {z}))"
    return f"toDate(event_time, {z})"


def index_between(c: date, d: date, interval: str) -> int:
    if interval == "day":
        return (d - c).days
    if interval == "week":
        return (d - c).days // 7
    return (d.year - c.year) * 12 + d.month - c.month


def _today(q: RetentionQuery) -> date:
    if q.today is None:
        from datetime import datetime
        from zoneinfo import ZoneInfo

        return datetime.now(ZoneInfo(q.scope.timezone)).date()
    return q.today


def intervals(q: RetentionQuery) -> int:
    if q.mode == "bracket":
        return len(q.brackets) + 1
    last = index_between(bucket_of_date(q.range.start, q.interval), bucket_of_date(_today(q), q.interval), q.interval)
    return max(1, min(MAX_INTERVALS, last + 1))


def compile_retention(q: RetentionQuery) -> Compiled:
    b = Binder()
    tz = q.scope.timezone
    start_ms = local_midnight_ms(q.range.start, tz)
    end_ms = local_midnight_ms(q.range.end + timedelta(days=1), tz)
    today_end = max(end_ms, local_midnight_ms(_today(q) + timedelta(days=1), tz))
    group = prop_sql(b, q.group_by[0]) if q.group_by else "''"
    se = q.start_event
    start_where = [event_match_sql(b, se), segments_sql(b, q.segments)]
    if se.event_type == "_new":
        fs = first_seen_sql(b, q.scope)
        start_where.append(f"(actor_id, event_time, insert_id) IN (SELECT actor_id, first.1, first.2 FROM {fs})")
    unit = {"day": "day", "week": "week", "month": "month"}[q.interval]
    idx = ("intDiv(dateDiff('day', cohort, rd), 7)" if unit == "week" else f"dateDiff('{unit}', cohort, rd)")
    k = intervals(q)
    kk = b.bind(k, "UInt32")
    # Per actor the indices j >= 1 it counts for, as a short list (no lambda over all k intervals capturing the
    # actor's returns: that copies them k times per actor and took > 4 GB on 3 M events).
    if q.mode == "n-day":
        js = f"arrayFilter(x -> x >= 1 AND x < {kk}, idxs)"
    elif q.mode == "rolling":
        js = (f"if(empty(idxs), CAST([], 'Array(Int64)'),"
              f" arrayMap(x -> toInt64(x), range(1, toUInt64(least(arrayMax(idxs), {kk} - 1)) + 1)))")
    else:
        lo = b.bind([0] + [x for x, _ in q.brackets], "Array(Int64)")
        hi = b.bind([0] + [y for _, y in q.brackets], "Array(Int64)")
        js = (f"arrayMap(x -> toInt64(x), arrayFilter(j -> arrayExists(x -> x >= {lo}[j + 1] AND x <= {hi}[j + 1], idxs),"
              f" range(1, {kk})))")
    # The group of the actor's first starting event; without `g` a constant: argMinIf over (event_time, insert_id)
    # tuples is most of the query's cost (3 M events, chDB: 1.8 s with it, 0.65 s without).
    first_g = "argMinIf(g, (event_time, insert_id), st)" if q.group_by else "''"
    # One read of the events (one dedup) for starts and returns: starts are the events before `end`.
    start_where.append(f"event_time < fromUnixTimestamp64Milli({b.bind(end_ms, 'Int64')}, 'UTC')")
    sql = f"""
WITH per_actor AS (
    SELECT actor_id, minIf(c, st) AS cohort, {first_g} AS g,
           arrayMap(rd -> {idx}, arrayFilter(rd -> rd > cohort, groupUniqArrayIf(c, rt))) AS idxs
    FROM (SELECT actor_id, event_time, insert_id, {_bucket_date(b, q.interval, tz)} AS c, {group} AS g,
                 {' AND '.join(f'({w})' for w in start_where)} AS st, {event_match_sql(b, q.return_event)} AS rt
          FROM {events_source(b, q.scope, start_ms, today_end)})
    GROUP BY actor_id
    HAVING countIf(st) > 0
)
SELECT toString(cohort) AS cohort, g, count() AS size,
       sumMap(arrayMap(x -> toInt64(x), {js}), arrayMap(x -> toUInt64(1), {js})) AS returned,
       arrayMap(j -> if(j = 0, size, returned.2[indexOf(returned.1, j)]), range(0, {kk})) AS counts
FROM per_actor GROUP BY cohort, g ORDER BY cohort, g
"""
    return Compiled(sql=sql.strip(), params=b.params, project=q.scope.project, reads_lake=b.reads_lake,
                    utc_days=utc_days_between(start_ms, today_end), all_history=se.event_type == "_new")


def shape(q: RetentionQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"series": [{"dates", "values": {date: [{"count", "outof", "incomplete"}, …]}, "combined"}], "seriesMeta"}``."""
    today = _today(q)
    today_bucket = bucket_of_date(today, q.interval)
    dates = bucket_labels(q.range.start, q.range.end, q.interval, q.scope.timezone)
    groups: dict[str, dict[str, tuple[int, list[int]]]] = {}
    for r in rows:
        groups.setdefault(r["g"], {})[r["cohort"]] = (int(r["size"]), [int(c) for c in r["counts"]])
    if not groups:
        groups[""] = {}
    series, meta = [], []
    for g in sorted(groups, key=lambda g: (-sum(s for s, _ in groups[g].values()), g)):
        values: dict[str, list[dict[str, Any]]] = {}
        combined: list[list[int]] = []
        for d in dates:
            c = date.fromisoformat(d)
            size, counts = groups[g].get(d, (0, []))
            cells = []
            for j in range(intervals(q)):
                lo, hi = (0, 0) if (q.mode != "bracket" or j == 0) else q.brackets[j - 1]
                if q.mode != "bracket":
                    lo = hi = j
                first, last = _shift(c, lo, q.interval), _shift(c, hi, q.interval)
                if first > today_bucket:
                    break
                incomplete = last >= today_bucket
                count = size if j == 0 else (counts[j] if j < len(counts) else 0)
                cells.append({"count": count, "outof": size, "incomplete": incomplete})
                if not incomplete:
                    while len(combined) <= j:
                        combined.append([0, 0])
                    combined[j][0] += count
                    combined[j][1] += size
            values[d] = cells
        series.append({"dates": dates, "values": values,
                       "combined": [{"count": c, "outof": o, "incomplete": False} for c, o in combined]})
        meta.append({"segmentIndex": len(meta), **({"groupValue": g if g else "(none)"} if q.group_by else {})})
    return {"series": series, "seriesMeta": meta}


def _shift(c: date, n: int, interval: str) -> date:
    if interval == "day":
        return c + timedelta(days=n)
    if interval == "week":
        return c + timedelta(days=7 * n)
    m = c.month - 1 + n
    return date(c.year + m // 12, m % 12 + 1, 1)
