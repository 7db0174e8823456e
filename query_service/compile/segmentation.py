"""Event segmentation (``/api/2/events/segmentation``): per bucket and group, a metric of the chosen events.

One scan per event (``e``, ``e2``), grouped by (bucket, groups); the whole-range value (``seriesCollapsed``:
exact uniques over the range, not a sum of days) is merged from the buckets' sets of actors in the same pass
(:func:`bucketed_sql`). Every row carries uniques, totals and the value property's sum/average, and
:func:`shape` picks the metric.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from query_service.compile.common import (
    Binder,
    Compiled,
    bucket_labels,
    bucket_sql,
    event_match_sql,
    events_source,
    first_seen_sql,
    local_midnight_ms,
    prop_sql,
    segments_sql,
    utc_days_between,
)
from query_service.params import SegmentationQuery

NONE_LABEL = "(none)"


def compile_segmentation(q: SegmentationQuery) -> Compiled:
    b = Binder()
    tz = q.scope.timezone
    start_ms = local_midnight_ms(q.range.start, tz)
    end_ms = local_midnight_ms(q.range.end + timedelta(days=1), tz)
    branches = []
    uses_new = any(e.event_type == "_new" for e in q.events)
    for ei, spec in enumerate(q.events):
        groups = [prop_sql(b, g) for g in q.group_by] + ["''"] * (2 - len(q.group_by))
        value = f"toFloat64OrNull({prop_sql(b, q.value_prop)})" if q.value_prop else "toFloat64(NULL)"
        where = [event_match_sql(b, spec), segments_sql(b, q.segments)]
        if spec.event_type == "_new":
            firsts = first_seen_sql(b, q.scope)
            where.append(f"(actor_id, event_time, insert_id) IN (SELECT actor_id, first.1, first.2 FROM {firsts})")
        branches.append(bucketed_sql(ei, bucket_sql(b, q.interval, tz), groups[0], groups[1], value,
                                     events_source(b, q.scope, start_ms, end_ms), " AND ".join(where)))
    if q.metric in ("pct_dau", "formula"):  # active users per bucket (segments apply, groups do not)
        branches.append(bucketed_sql(-1, bucket_sql(b, q.interval, tz), "''", "''", "toFloat64(NULL)",
                                     events_source(b, q.scope, start_ms, end_ms), segments_sql(b, q.segments)))
    sql = " UNION ALL ".join(branches) + " ORDER BY ei, bucket, g0, g1"
    return Compiled(sql=sql, params=b.params, project=q.scope.project, reads_lake=b.reads_lake,
                    utc_days=utc_days_between(start_ms, end_ms), all_history=uses_new)


def bucketed_sql(ei: int, bucket: str, g0: str, g1: str, value: str, source: str, where: str) -> str:
    """Rows ``(ei, bucket, g0, g1, uniques, totals, vsum, vcount)`` of the events of ``source`` matching ``where``:
    one per (bucket, g0, g1) and one per (g0, g1) with ``bucket`` NULL for the whole range.

    One scan grouped by (bucket, g0, g1) keeps each bucket's exact set of actors (``uniqExactState``); the
    range's uniques merge those sets (``uniqExactMerge``: exact, as a second grouping of every row would be,
    but without hashing every row again — GROUPING SETS did: 10 M events, segmentation 0.53 -> 0.39 s)."""
    per_bucket = (f"SELECT toInt32({ei}) AS ei, {bucket} AS bucket, {g0} AS g0, {g1} AS g1,"
                  " uniqExactState(actor_id) AS actors, toFloat64(count()) AS totals,"
                  " toFloat64(sum(ifNull(v, 0))) AS vsum, toFloat64(count(v)) AS vcount"
                  f" FROM (SELECT *, {value} AS v FROM {source}) WHERE {where} GROUP BY bucket, g0, g1")
    return ("SELECT ei, r.1 AS bucket, g0, g1, r.2 AS uniques, r.3 AS totals, r.4 AS vsum, r.5 AS vcount"
            " FROM (SELECT ei, g0, g1, arrayPushBack(groupArray((CAST(bucket, 'Nullable(String)'),"
            " toFloat64(finalizeAggregation(actors)), totals, vsum, vcount)),"
            " (NULL, toFloat64(uniqExactMerge(actors)), sum(totals), sum(vsum), sum(vcount))) AS rs"
            f" FROM ({per_bucket}) GROUP BY ei, g0, g1) ARRAY JOIN rs AS r")


def _metric(q: SegmentationQuery, row: dict[str, float], dau: float | None) -> float:
    m = q.metric
    if m == "uniques":
        return row["uniques"]
    if m == "totals":
        return row["totals"]
    if m == "average":
        return row["totals"] / row["uniques"] if row["uniques"] else 0.0
    if m == "pct_dau":
        return 100.0 * row["uniques"] / dau if dau else 0.0
    if m == "sums":
        return row["vsum"]
    if m == "value_avg":
        return row["vsum"] / row["vcount"] if row["vcount"] else 0.0
    raise ValueError(m)


def shape(q: SegmentationQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Amplitude's segmentation response: ``series`` (one list per series over ``xValues``), ``seriesLabels``,
    ``seriesCollapsed`` (the whole range)."""
    x_values = bucket_labels(q.range.start, q.range.end, q.interval, q.scope.timezone)
    index = {x: i for i, x in enumerate(x_values)}
    dau: dict[str | None, float] = {}
    cells: dict[tuple[int, str, str], dict[str | None, dict[str, float]]] = {}
    for r in rows:
        if r["ei"] == -1:
            dau[r["bucket"]] = r["uniques"]
            continue
        key = (r["ei"], r["g0"], r["g1"])
        cells.setdefault(key, {})[r["bucket"]] = r
    if q.metric == "formula":
        from query_service.formula import evaluate_formula

        return evaluate_formula(q, cells, dau, x_values)
    series_keys = sorted(cells, key=lambda k: (k[0], -_metric(q, cells[k].get(None, _ZERO), dau.get(None)), k[1], k[2]))
    # keep the `limit` largest groups per event
    kept: list[tuple[int, str, str]] = []
    per_event: dict[int, int] = {}
    for k in series_keys:
        if per_event.get(k[0], 0) < q.limit:
            kept.append(k)
            per_event[k[0]] = per_event.get(k[0], 0) + 1
    if not q.group_by:  # an event without rows still gets its (zero) series
        kept = [(ei, "", "") for ei in range(len(q.events))]
    series, labels, collapsed = [], [], []
    for k in kept:
        by_bucket = cells.get(k, {})
        values = [0.0] * len(x_values)
        for bucket, r in by_bucket.items():
            if bucket is not None and bucket in index:
                values[index[bucket]] = _metric(q, r, dau.get(bucket))
        series.append([_num(v) for v in values])
        total = _metric(q, by_bucket.get(None, _ZERO), dau.get(None))
        collapsed.append([{"setId": "", "value": _num(total)}])
        if q.group_by:
            parts = [(p if p != "" else NONE_LABEL) for p in (k[1], k[2])[: len(q.group_by)]]
            labels.append([k[0], "; ".join(parts)])
        else:
            labels.append(k[0])
    return {"series": series, "seriesLabels": labels, "seriesCollapsed": collapsed, "xValues": x_values}


_ZERO = {"uniques": 0.0, "totals": 0.0, "vsum": 0.0, "vcount": 0.0}


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else round(v, 6)
