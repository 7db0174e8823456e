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


# --- sessions, user look-ups, realtime, lifecycle, stickiness (rules of query_service/compile/{sessions,
# user_lookup,realtime,lifecycle,stickiness}.py). Events may carry ``session_id`` (default -1), ``user_id``,
# ``device_id``.

SESSION_CAP_MS = 86_400_000


def _sessions(events: list[dict[str, Any]], start: date, end: date, tz: str) -> list[tuple[str, date, int]]:
    """(actor, local start day, length ms capped at 1 day) of every session starting in [start, end], sessions
    made of their events within [local midnight of start - 24 h, local midnight after end + 24 h)."""
    lo = datetime(start.year, start.month, start.day, tzinfo=ZoneInfo(tz)).timestamp() * 1000 - SESSION_CAP_MS
    after = end + timedelta(days=1)
    hi = datetime(after.year, after.month, after.day, tzinfo=ZoneInfo(tz)).timestamp() * 1000 + SESSION_CAP_MS
    spans: dict[tuple[str, int], list[int]] = {}
    for e in clean(events):
        sid = e.get("session_id", -1)
        if sid is None or sid < 0 or not lo <= e["time"] < hi:
            continue
        spans.setdefault((e["actor_id"], sid), []).append(e["time"])
    out = []
    for (actor, _sid), ts in spans.items():
        d = local_day(min(ts), tz)
        if start <= d <= end:
            out.append((actor, d, min(max(ts) - min(ts), SESSION_CAP_MS)))
    return out


def session_length_bins(events: list[dict[str, Any]], start: date, end: date, tz: str, edges: list[int]) -> list[int]:
    counts = [0] * (len(edges) - 1)
    for _a, _d, length in _sessions(events, start, end, tz):
        for k in range(len(counts)):
            if edges[k] <= length < edges[k + 1] or (k == len(counts) - 1 and length == edges[-1]):
                counts[k] += 1
                break
    return counts


def sessions_per_user(events: list[dict[str, Any]], start: date, end: date, tz: str) -> tuple[list[float], float]:
    ss = _sessions(events, start, end, tz)
    per_day = []
    for d in days(start, end):
        day = [a for a, dd, _ in ss if dd == d]
        per_day.append(len(day) / len(set(day)) if day else 0.0)
    return per_day, (len(ss) / len({a for a, _, _ in ss}) if ss else 0.0)


def user_search(events: list[dict[str, Any]], user: str) -> tuple[str, list[str]]:
    """(type, actor ids of the best tier, most recently active first)."""
    evs = clean(events)
    last: dict[str, int] = {}
    tier: dict[str, int] = {}
    for e in evs:
        a = e["actor_id"]
        uid, did = e.get("user_id", a) or "", e.get("device_id") or ""
        t = 0 if a == user else 1 if user in (uid, did) else 2 if uid.startswith(user) else None
        if t is None:
            continue
        tier[a] = min(tier.get(a, 9), t)
        last[a] = max(last.get(a, 0), e["time"])
    if not tier:
        return "nomatch", []
    best = min(tier.values())
    names = ("match_amplitude_id", "match_user_or_device_id", "match_user_prefix")
    return names[best], sorted((a for a in tier if tier[a] == best), key=lambda a: (-last[a], a))


def user_activity(events: list[dict[str, Any]], actor: str, offset: int, limit: int) -> list[str]:
    """insert_ids of the actor's events, most recent first (time, then insert_id, descending), paged."""
    evs = [e for e in clean(events) if e["actor_id"] == actor]
    evs.sort(key=lambda e: (e["time"], e["insert_id"]), reverse=True)
    return [e["insert_id"] for e in evs[offset:offset + limit]]


def realtime(events: list[dict[str, Any]], now: datetime, tz: str) -> tuple[list[str], list[list[int]]]:
    zone = ZoneInfo(tz)
    local_now = now.astimezone(zone)
    last = local_now.hour * 60 + local_now.minute - local_now.minute % 5
    labels = [f"{m // 60:02d}:{m % 60:02d}" for m in range(0, last + 1, 5)]
    today = local_now.date()
    sets: list[dict[str, set[str]]] = [defaultdict(set), defaultdict(set)]
    for e in clean(events):
        if e["time"] > now.timestamp() * 1000:
            continue
        t = datetime.fromtimestamp(e["time"] / 1000, zone)
        label = f"{t.hour:02d}:{t.minute - t.minute % 5:02d}"
        which = 0 if t.date() == today else 1 if t.date() == today - timedelta(days=1) else None
        if which is not None:
            sets[which][label].add(e["actor_id"])
    return labels, [[len(sets[w].get(x, ())) for x in labels] for w in (0, 1)]


def _period(d: date, interval: str) -> date:
    if interval == "week":
        return d - timedelta(days=(d.weekday() + 1) % 7)
    if interval == "month":
        return d.replace(day=1)
    return d


def _shift(p: date, interval: str, n: int) -> date:
    if interval == "day":
        return p + timedelta(days=n)
    if interval == "week":
        return p + timedelta(days=7 * n)
    m = p.year * 12 + p.month - 1 + n
    return date(m // 12, m % 12 + 1, 1)


def lifecycle(events: list[dict[str, Any]], event_type: str, start: date, end: date, interval: str,
              tz: str) -> tuple[list[str], dict[str, list[int]]]:
    active: dict[str, set[date]] = defaultdict(set)
    for e in clean(events):
        if event_type in ("_active", "_all") or e["event_type"] == event_type:
            active[e["actor_id"]].add(_period(local_day(e["time"], tz), interval))
    periods: list[date] = []
    for d in days(start, end):
        if _period(d, interval) not in periods:
            periods.append(_period(d, interval))
    out: dict[str, list[int]] = {k: [] for k in ("new", "current", "resurrected", "dormant")}
    for p in periods:
        prev = _shift(p, interval, -1)
        counts = dict.fromkeys(out, 0)
        for ps in active.values():
            if p in ps and min(ps) == p:
                counts["new"] += 1
            elif p in ps and prev in ps:
                counts["current"] += 1
            elif p in ps and any(x < prev for x in ps):
                counts["resurrected"] += 1
            elif p not in ps and prev in ps:
                counts["dormant"] += 1
        for k in out:
            out[k].append(counts[k])
    return [p.isoformat() for p in periods], out


def stickiness(events: list[dict[str, Any]], event_type: str, start: date, end: date, interval: str,
               tz: str) -> list[int]:
    """user-periods active on exactly k days (k = 1..N), periods cut to [start, end]."""
    active: dict[tuple[str, date], set[date]] = defaultdict(set)
    for e in clean(events):
        d = local_day(e["time"], tz)
        if start <= d <= end and (event_type in ("_active", "_all") or e["event_type"] == event_type):
            active[(e["actor_id"], _period(d, interval))].add(d)
    if interval == "week":
        n = 7
    else:
        per_month: dict[date, int] = defaultdict(int)
        for d in days(start, end):
            per_month[d.replace(day=1)] += 1
        n = max(per_month.values())
    exact = [0] * n
    for ds in active.values():
        exact[len(ds) - 1] += 1
    return exact
