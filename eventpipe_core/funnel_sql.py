"""The one funnel engine: ClickHouse SQL functions shared by the query API, the dbt marts and ``FUNNEL()``.

Semantics (the contract of ``query_service/compile/funnel.py`` and ``dbt_project/macros/funnel.sql``):
an actor's events are ordered by (event_time, insert_id); a path starts at an event of step 1 (the entry);
a step counts only if its event comes *after* the entry in that order and at most ``window_ms`` after it
(inclusive). With a hold-constant key ``h``, only events whose key equals the entry's take part.

* ``ordered``    — from the entry, each next step is the first later event that matches it (others between
                   are allowed); a path reaches level k when steps 1..k were matched that way;
* ``sequential`` — as ordered, but the actor's very next event after the last step reached must be the
                   next step: any other event (or, with ``h``, an event with another key) ends the path;
* ``unordered``  — level = 1 + the number of distinct other steps having an event after the entry within
                   the window; the time of the k-th step is when the k-th distinct step was first reached.

Choosing the path (highest level, earliest entry on ties; per day or over the range) is left to callers:
the functions return every entry's path, callers ``ARRAY JOIN`` it with their per-event columns.

The functions (created by ``orchestration/clickhouse/schema.py`` with the schema, :data:`UDF_STATEMENTS`):

    eventpipe_funnel_ordered(t, m, h, n, window_ms)     -> Array(Array(Int64))
    eventpipe_funnel_unordered(t, m, h, n, window_ms)   -> Array(Array(Int64))
    eventpipe_funnel_sequential(t, m, h, n, window_ms)  -> Array(Array(Int64))

``t`` Array(Int64): event times (ms) of one actor sorted by (event_time, insert_id); ``m`` Array(UInt64):
per event the bitmask of the steps it matches (bit k-1 = step k; an event may match several steps);
``h`` an array of any comparable type (the hold-constant key; ``arrayMap(x -> 0, t)`` for none); ``n``
the number of steps; ``window_ms`` Int64. Result aligned with ``t``: for an event matching step 1, the
times ``[t_entry, t_step2, …]`` of the path from it (its length is the level); ``[]`` for other events.
For ``ordered``/``unordered`` ``t`` may hold only the actor's step events (``m > 0``); ``sequential``
needs all of them (mask 0 for events of no step).

Why this shape (instead of one fold per entry, O(events²) per actor: the old macro took 70 s on 10 M
events): "first event of step k at or after position p" is one ``arrayReverseFill`` per step, and a
path is a composition of those arrays, so each function is O(events × steps²) per actor and no lambda
captures a per-event array inside a per-event loop (ClickHouse would copy it once per element).
Hold-constant keys are handled by laying the events out grouped by key (stable, so in time order within
a key) with a sentinel after each group that stops every search at the group's end.

Callers build the call with :func:`funnel_paths_expr` (every entry's path, for the API and the marts, which
pick the best path per day themselves) or :func:`funnel_level_expr` (an aggregate: the level of the actor's
best path, for ``FUNNEL()`` in ``/api/sql``). The marts' macro ``dbt_project/macros/funnel.sql`` calls the
functions directly (dbt cannot import Python).
"""

from __future__ import annotations

INF = "toInt64(9223372036854775807)"
ALL_BITS = "toUInt64(18446744073709551615)"
MODES = ("ordered", "unordered", "sequential")
FUNCTION_NAMES = tuple(f"eventpipe_funnel_{m}" for m in MODES)

# Helpers. Parameter names carry a prefix: a UDF is expanded as a macro, so they must not collide with the
# lambdas' own variables.
_HELPERS: dict[str, str] = {
    # Shift left by one (the value at the next position), INF past the end.
    "eventpipe_funnel_next": "(fa) -> arrayPopFront(arrayPushBack(fa, " + INF + "))",
    # [[rows of X[1]] … ] -> one row per position: X is k rows of equal length L, the result L rows of k.
    "eventpipe_funnel_transpose": (
        "(fx) -> arraySplit((fv, fr) -> (fr - 1) % length(fx) = 0,"
        " arraySort((fv, fkey) -> fkey, arrayFlatten(fx),"
        " arrayFlatten(arrayMap((frow, fk) -> arrayMap(fi -> (fi, fk), arrayEnumerate(frow)), fx, arrayEnumerate(fx)))),"
        " arrayEnumerate(arrayFlatten(fx)))"
    ),
    # Grouped layout of X by key h (stable), a sentinel value after each group.
    "eventpipe_funnel_layout": (
        "(lx, lsent, lh) -> arrayFlatten(arrayMap((lv, llast) -> if(llast, [lv, lsent], [lv]),"
        " arraySort((lv, lk, li) -> (lk, li), lx, lh, arrayEnumerate(lx)),"
        " arrayMap((la, lb, li) -> li = length(lh) OR la != lb, arraySort(lh),"
        " arrayPopFront(arrayPushBack(arraySort(lh), lh[1])), arrayEnumerate(lh))))"
    ),
    # Back from the layout (pos = original position, 0 on sentinels) to the original order.
    "eventpipe_funnel_unlayout": (
        "(ux, upos) -> arraySort((uv, up) -> up, arrayFilter((uv, up) -> up > 0, ux, upos), arrayFilter(up -> up > 0, upos))"
    ),
    # Per position: [] unless the event matches step 1, else the row's times within the window (sorted if asked).
    "eventpipe_funnel_cut": (
        "(crows, cm, cw, csort) -> arrayMap((crow, cmm) -> if(NOT bitTest(cmm, 0), CAST([], 'Array(Int64)'),"
        " if(csort, arraySort(arrayFilter(cx -> cx <= crow[1] + cw, crow)), arrayFilter(cx -> cx <= crow[1] + cw, crow))),"
        " crows, cm)"
    ),
    # Ordered, in layout space (lt times, lm masks, lp positions; sentinel: INF, all bits, 0): row k-1 holds,
    # per position, the time of step k on the greedy path from it (INF when not reached).
    "eventpipe_funnel_ordered_rows": (
        "(ot, om, op, on) -> arrayConcat([ot], arrayMap(ok -> arrayFold((oacc, os) -> eventpipe_funnel_next("
        "arrayReverseFill((oa, oc) -> oc, arrayMap((oa, opp) -> if(opp = 0, " + INF + ", oa), oacc, op),"
        " arrayMap(ox -> bitTest(ox, os - 1), om))), arrayReverseSort(range(2, ok + 1)), ot), range(2, on + 1)))"
    ),
    # Unordered, in layout space: row k-1 = the first time of step k after each position (INF when none).
    "eventpipe_funnel_unordered_rows": (
        "(qt, qm, qp, qn) -> arrayConcat([qt], arrayMap(qk -> eventpipe_funnel_next(arrayReverseFill((qa, qc) -> qc,"
        " arrayMap((qa, qpp) -> if(qpp = 0, " + INF + ", qa), qt, qp), arrayMap(qx -> bitTest(qx, qk - 1), qm))),"
        " range(2, qn + 1)))"
    ),
    # Sequential, in the original order: row k-1 = the time of event i+k-1 when events i+1..i+k-1 are
    # steps 2..k with the entry's key (INF otherwise).
    "eventpipe_funnel_sequential_rows": (
        "(st, sm, sh, sn) -> arrayConcat([st], arrayMap(sk -> arrayFold((sacc, ss) -> eventpipe_funnel_next("
        "arrayMap((sa, smm, ssame) -> if(bitTest(smm, ss - 1) AND ssame, sa, " + INF + "), sacc, sm,"
        " arrayMap((sx, sy) -> sx = sy, sh, arrayPopBack(arrayPushFront(sh, sh[1]))))),"
        " arrayReverseSort(range(2, sk + 1)), st), range(2, sn + 1)))"
    ),
}


def _grouped(rows_fn: str, sort: str) -> str:
    lay_t = f"eventpipe_funnel_layout(gt, {INF}, gh)"
    lay_m = f"eventpipe_funnel_layout(gm, {ALL_BITS}, gh)"
    lay_p = "eventpipe_funnel_layout(arrayEnumerate(gt), 0, gh)"
    rows = f"eventpipe_funnel_transpose({rows_fn}({lay_t}, {lay_m}, {lay_p}, gn))"
    return f"(gt, gm, gh, gn, gw) -> eventpipe_funnel_unlayout(eventpipe_funnel_cut({rows}, {lay_m}, gw, {sort}), {lay_p})"


def _ungrouped_call(mode: str, times: str, masks: str, n: int | str, window_ms: int | str) -> str:
    """``ordered``/``unordered`` without a hold-constant key: every event is in one group, so no layout (its
    sorts are ~10 % of a funnel's time on 10 M events), just the sentinel after the last event, dropped from
    the result. Composed of the helper functions in SQL (no function of its own: a server set up by an
    earlier version has every helper it calls)."""
    t, m = f"arrayPushBack({times}, {INF})", f"arrayPushBack({masks}, {ALL_BITS})"
    p = f"arrayPushBack(arrayEnumerate({times}), 0)"
    rows = f"eventpipe_funnel_transpose(eventpipe_funnel_{mode}_rows({t}, {m}, {p}, {n}))"
    return f"arrayPopBack(eventpipe_funnel_cut({rows}, {m}, {window_ms}, {1 if mode == 'unordered' else 0}))"


_PUBLIC: dict[str, str] = {
    "eventpipe_funnel_ordered": _grouped("eventpipe_funnel_ordered_rows", "0"),
    "eventpipe_funnel_unordered": _grouped("eventpipe_funnel_unordered_rows", "1"),
    "eventpipe_funnel_sequential": (
        "(gt, gm, gh, gn, gw) -> eventpipe_funnel_cut(eventpipe_funnel_transpose("
        "eventpipe_funnel_sequential_rows(gt, gm, gh, gn)), gm, gw, 0)"
    ),
}

UDF_BODIES: dict[str, str] = {**_HELPERS, **_PUBLIC}
UDF_STATEMENTS: tuple[str, ...] = tuple(f"CREATE OR REPLACE FUNCTION {name} AS {body}" for name, body in UDF_BODIES.items())


def funnel_paths_expr(mode: str, times: str, masks: str, n: int | str, window_ms: int | str,
                      holds: str | None = None) -> str:
    """SQL calling the shared funnel function of ``mode`` on one actor's arrays (see the module docstring).

    ``times``/``masks``/``holds`` are SQL array expressions aligned with each other (sorted by
    (event_time, insert_id)); ``n`` and ``window_ms`` SQL literals or bound placeholders. Returns an
    Array(Array(Int64)) aligned with ``times``: the entry's path times (level = length), ``[]`` elsewhere.
    Accepts the API's names (ordered/unordered/sequential) and the marts' (this/any/exact).
    """
    mode = {"this": "ordered", "any": "unordered", "exact": "sequential"}.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"funnel mode must be one of {', '.join(MODES)}, not {mode!r}")
    if holds is None and mode != "sequential":
        return _ungrouped_call(mode, times, masks, n, window_ms)
    h = holds if holds is not None else f"arrayMap(x -> toUInt8(0), {times})"
    return f"eventpipe_funnel_{mode}({times}, {masks}, {h}, {n}, {window_ms})"


def funnel_level_expr(mode: str, time_ms: str, insert_id: str, steps: list[str] | tuple[str, ...], window_ms: int | str,
                      hold: str | None = None, entry: str | None = None) -> str:
    """An *aggregate* SQL expression: the level (0..n) of the group's best path — what ``FUNNEL()`` computes.

    Use it in a query grouped by actor (``SELECT actor_id, <expr> FROM events GROUP BY actor_id``):
    ``time_ms`` the event time in ms (Int64, e.g. ``toUnixTimestamp64Milli(event_time)``), ``insert_id`` the
    tie-breaker, ``steps`` one boolean SQL condition per step, ``hold`` an optional hold-constant key
    expression, ``entry`` an optional extra condition on the entry event (e.g. its day in a range).
    0 when the actor never enters. Built on the same functions as :func:`funnel_paths_expr`.
    """
    if not steps:
        raise ValueError("a funnel needs at least one step")
    mask = " + ".join(f"if({cond}, {1 << k}, 0)" for k, cond in enumerate(steps))
    if entry is not None:  # the entry's own bit only where the extra condition holds (later steps unaffected)
        mask = f"bitAnd({mask}, if({entry}, {ALL_BITS}, toUInt64(18446744073709551614)))"
    key = hold if hold is not None else "toUInt8(0)"
    evs = f"arraySort(x -> (x.1, x.2), groupArray((toInt64({time_ms}), {insert_id}, toUInt64({mask}), {key})))"
    # evs is spelled three times: ClickHouse computes an identical subexpression once.
    paths = funnel_paths_expr(mode, f"tupleElement({evs}, 1)", f"tupleElement({evs}, 3)", len(steps), window_ms,
                              f"tupleElement({evs}, 4)" if hold is not None else None)
    return f"arrayMax(arrayPushBack(arrayMap(p -> toUInt8(length(p)), {paths}), toUInt8(0)))"
