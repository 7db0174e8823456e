"""A plain-Python reference of the query API's semantics: the oracle of the property tests.

Written from the rules in the docstrings of ``query_service/compile/{segmentation,funnel,retention}.py``
(nothing imported from the service). Events are dicts: ``time`` (ms), ``insert_id``, ``event_type``,
``actor_id``, optional ``received_at`` (ms, default ``time``) and ``is_bot``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from statistics import median
from typing import Any
from zoneinfo import ZoneInfo


def clean(events: list[dict[str, Any]], include_bots: bool = False) -> list[dict[str, Any]]:
    """One event per insert_id (first received, then earliest time), bots dropped, in (time, insert_id) order."""
    first: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: (e.get("received_at", e["time"]), e["time"])):
        first.setdefault(e["insert_id"], e)
    kept = [e for e in first.values() if include_bots or not e.get("is_bot")]
    return sorted(kept, key=lambda e: (e["time"], e["insert_id"]))


def local_day(ms: int, tz: str) -> date:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).date()


def days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def segmentation(events: list[dict[str, Any]], event_type: str, start: date, end: date, tz: str,
                 metric: str = "uniques") -> tuple[dict[date, int], int]:
    """Per local day and over the range: exact uniques (or totals) of ``event_type`` (``_active`` = any)."""
    per_day: dict[date, set[str] | int] = {}
    actors: set[str] = set()
    total = 0
    for e in clean(events):
        d = local_day(e["time"], tz)
        if not start <= d <= end or (event_type != "_active" and e["event_type"] != event_type):
            continue
        if metric == "uniques":
            per_day.setdefault(d, set()).add(e["actor_id"])  # type: ignore[union-attr]
        else:
            per_day[d] = per_day.get(d, 0) + 1  # type: ignore[operator]
        actors.add(e["actor_id"])
        total += 1
    out = {d: (len(v) if isinstance(v, set) else v) for d, v in per_day.items()}
    return {d: out.get(d, 0) for d in days(start, end)}, (len(actors) if metric == "uniques" else total)


def _path(evs: list[dict[str, Any]], i0: int, steps: list[str], mode: str, window_ms: int) -> list[int]:
    t0 = evs[i0]["time"]
    times = [t0]
    if mode == "unordered":
        reached = []
        for step in steps[1:]:
            ts = [e["time"] for e in evs[i0 + 1:] if e["event_type"] == step and e["time"] <= t0 + window_ms]
            if ts:
                reached.append(min(ts))
        return sorted(times + reached)
    for e in evs[i0 + 1:]:
        if len(times) == len(steps):
            break
        if e["event_type"] == steps[len(times)] and e["time"] <= t0 + window_ms:
            times.append(e["time"])
        elif mode == "sequential":
            break
    return times


def funnel(events: list[dict[str, Any]], steps: list[str], mode: str, window_s: int, start: date, end: date,
           tz: str) -> tuple[list[int], dict[date, list[int]], list[list[int]]]:
    """(counts per step over the range, counts per entry day, transition times of each actor's best path)."""
    by_actor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in clean(events):
        by_actor[e["actor_id"]].append(e)
    n = len(steps)
    overall = [0] * n
    per_day: dict[date, list[int]] = {d: [0] * n for d in days(start, end)}
    trans: list[list[int]] = []
    for evs in by_actor.values():
        best_day: dict[date, list[int]] = {}
        best: list[int] | None = None
        for i0, e in enumerate(evs):
            d = local_day(e["time"], tz)
            if e["event_type"] != steps[0] or not start <= d <= end:
                continue
            times = _path(evs, i0, steps, mode, window_s * 1000)
            if d not in best_day or len(times) > len(best_day[d]):
                best_day[d] = times
            if best is None or len(times) > len(best):
                best = times
        for d, times in best_day.items():
            for k in range(len(times)):
                per_day[d][k] += 1
        if best is not None:
            for k in range(len(best)):
                overall[k] += 1
            trans.append([best[k + 1] - best[k] for k in range(len(best) - 1)])
    return overall, per_day, trans


def median_trans(trans: list[list[int]], n: int) -> list[float]:
    """Median transition time into each step (0 for step 1; 0 when nobody reached it)."""
    return [0.0] + [float(median(ts)) if (ts := [t[k] for t in trans if len(t) > k]) else 0.0 for k in range(n - 1)]


def retention(events: list[dict[str, Any]], se: str, re: str, mode: str, start: date, end: date, tz: str, today: date,
              brackets: list[tuple[int, int]] | None = None) -> dict[date, tuple[int, list[int]]]:
    """cohort day -> (size, counts per index up to today); index 0 = size. Daily intervals only."""
    evs = clean(events)
    first_ever: dict[str, dict[str, Any]] = {}
    for e in evs:
        first_ever.setdefault(e["actor_id"], e)
    cohort: dict[str, date] = {}
    for e in evs:
        d = local_day(e["time"], tz)
        if not start <= d <= end or e["actor_id"] in cohort:
            continue
        if se == "_new" and first_ever[e["actor_id"]] is not e:
            continue
        if se not in ("_new", "_active") and e["event_type"] != se:
            continue
        cohort[e["actor_id"]] = d
    returned: dict[str, set[int]] = defaultdict(set)
    for e in evs:
        a = e["actor_id"]
        if a in cohort and (re in ("_all", "_active") or e["event_type"] == re):
            n = (local_day(e["time"], tz) - cohort[a]).days
            if n >= 1 and local_day(e["time"], tz) <= max(today, end):
                returned[a].add(n)
    out: dict[date, tuple[int, list[int]]] = {}
    for d in days(start, end):
        members = [a for a, c in cohort.items() if c == d]
        if mode == "bracket":
            assert brackets is not None
            counts = [len(members)] + [sum(1 for a in members if any(lo <= x <= hi for x in returned[a]))
                                       for lo, hi in brackets]
        else:
            k = (today - start).days + 1
            counts = [len(members)] + [
                sum(1 for a in members if (j in returned[a] if mode == "n-day" else any(x >= j for x in returned[a])))
                for j in range(1, max(k, 1))]
        out[d] = (len(members), counts)
    return out
