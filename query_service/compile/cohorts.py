"""Cohort membership and the ``userdata_cohort`` segment: pure SQL builders (rules in
:mod:`eventpipe_core.metadata.cohorts`).

* :func:`compile_membership` — the actor ids of a behavioral cohort as of a day, one scan of the project's
  events (the query service's deduplicated, bot-free source) grouped by actor, every condition an aggregate.
* :func:`cohort_filter_sql` — ``s=[{"prop":"userdata_cohort","op":"is","values":["<id>"]}]`` (Amplitude's
  form): the actor is a member of one of the cohorts in its latest materialized snapshot of ``cohort_members``.
  ``is not`` negates.
* :func:`compile_sizes` — members per ``as_of`` day (cohort size over time).
* :data:`COHORT_MEMBERS_DDL` — ``cohort_members (project, cohort_id, actor_id, as_of)``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from eventpipe_core.metadata.cohorts import expand_values
from query_service.compile.common import (
    PROJECT_PARAM,
    Binder,
    Compiled,
    events_source,
    filter_sql,
    local_midnight_ms,
    prop_sql,
)
from query_service.params import Prop, PropFilter, Scope

COHORT_PROP = "userdata_cohort"
MEMBERS_TABLE = "cohort_members"
COHORT_MEMBERS_DDL = (
    "CREATE TABLE IF NOT EXISTS {db}.cohort_members (project LowCardinality(String), cohort_id String, actor_id String,"
    " as_of Date) ENGINE = ReplacingMergeTree ORDER BY (project, cohort_id, as_of, actor_id) PARTITION BY toYYYYMM(as_of)"
)
DAY_MS = 86_400_000


def _prop(key: str) -> Prop:
    return Prop("event", key.removeprefix("ep:")) if key.startswith("ep:") else Prop("user", key)


def _to_filter(f: dict[str, Any], kind: str) -> PropFilter:
    prop = Prop(kind, f["prop"]) if kind == "event" else _prop(f["prop"])
    return PropFilter(prop, f["op"], tuple(expand_values(f["values"])))


def compile_membership(project: str, definition: dict[str, Any], as_of: date) -> Compiled:
    """SELECT actor_id … of the cohort's members at the end of ``as_of`` (UTC)."""
    b = Binder()
    end_ms = local_midnight_ms(as_of + timedelta(days=1), "UTC")
    aggs, conds = [], []
    for i, c in enumerate(definition["conditions"]):
        if c["type"] in ("performed", "not_performed"):
            match = [f"event_type = {b.bind(c['event_type'], 'String')}",
                     f"event_time >= fromUnixTimestamp64Milli({b.bind(end_ms - c['days'] * DAY_MS, 'Int64')}, 'UTC')"]
            match += [filter_sql(b, _to_filter(f, "event")) for f in c["filters"]]
            aggs.append(f"countIf({' AND '.join(f'({m})' for m in match)}) AS c{i}")
            if c["type"] == "not_performed":
                conds.append(f"c{i} = 0")
            else:
                op = {">=": ">=", "<=": "<=", "=": "="}[c["op"]]
                conds.append(f"c{i} {op} {b.bind(c['count'], 'UInt64')}")
        else:
            f = _to_filter(c, "user")
            value = prop_sql(b, f.prop)
            aggs.append(f"argMaxIf({value}, event_time, {value} != '') AS v{i}")
            conds.append(_latest_value_cond(b, f"v{i}", f.op, f.values))
    joiner = " AND " if definition["match"] == "all" else " OR "
    src = events_source(b, Scope(project=project, timezone="UTC"), None, end_ms)
    sql = (f"SELECT actor_id FROM (SELECT actor_id, {', '.join(aggs)} FROM {src} GROUP BY actor_id)"
           f" WHERE {joiner.join(f'({c})' for c in conds)} ORDER BY actor_id")
    return Compiled(sql=sql, params=b.params, project=project, utc_days=(), all_history=True)


def _latest_value_cond(b: Binder, column: str, op: str, values: tuple[str, ...]) -> str:
    """A property condition on the actor's latest value (same ops and meaning as the segment filters)."""
    if op in ("is", "is not"):
        expr = f"has({b.bind(list(values), 'Array(String)')}, {column})"
        return expr if op == "is" else f"NOT {expr}"
    if op in ("contains", "does not contain"):
        expr = f"arrayExists(x -> positionCaseInsensitiveUTF8({column}, x) > 0, {b.bind(list(values), 'Array(String)')})"
        return expr if op == "contains" else f"NOT {expr}"
    cmp = {"less": "<", "less or equal": "<=", "greater": ">", "greater or equal": ">="}[op]
    return f"ifNull(toFloat64OrNull({column}) {cmp} {b.bind(float(values[0]), 'Float64')}, 0)"


def cohort_filter_sql(b: Binder, f: PropFilter) -> str:
    """The ``userdata_cohort`` segment (ops ``is`` / ``is not``), read only from the query's own project's rows
    of ``cohort_members`` (``{query_project}``, bound by the query's event source): another project's cohort id
    has no members here."""
    if f.op not in ("is", "is not"):
        raise ValueError("userdata_cohort supports the ops is and is not")
    ids = b.bind(list(f.values), "Array(String)")
    b.params.setdefault(PROJECT_PARAM, None)  # filled by events_source (every query has one), whichever comes first
    own = f"project = {{{PROJECT_PARAM}:String}} AND has({ids}, cohort_id)"
    members = (f"SELECT actor_id FROM {MEMBERS_TABLE} WHERE {own} AND (cohort_id, as_of) IN"
               f" (SELECT cohort_id, max(as_of) FROM {MEMBERS_TABLE} WHERE {own} GROUP BY cohort_id)")
    expr = f"actor_id IN ({members})"
    return expr if f.op == "is" else f"NOT ({expr})"


def compile_sizes(project: str, cohort_id: str, start: date | None = None, end: date | None = None) -> tuple[str, dict[str, Any]]:
    """SQL + parameters: ``(as_of, size)`` per materialized day of one cohort of ``project``, oldest first."""
    where = ["project = {sz_p:String}", "cohort_id = {sz_c:String}"]
    params: dict[str, Any] = {"sz_p": project, "sz_c": cohort_id}
    if start is not None:
        where.append("as_of >= {sz_s:Date}")
        params["sz_s"] = start
    if end is not None:
        where.append("as_of <= {sz_e:Date}")
        params["sz_e"] = end
    return (f"SELECT as_of, uniqExact(actor_id) AS size FROM {MEMBERS_TABLE} WHERE {' AND '.join(where)}"
            " GROUP BY as_of ORDER BY as_of"), params
