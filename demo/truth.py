"""Ground truth: the figures the pipeline must report, computed from the sent events in plain Python.

Nothing here imports the pipeline: the rules are re-implemented from their documentation —
dedupe by ``insert_id``; bots by user agent (the generator knows its crawlers) and by more than
``BOT_MAX_EVENTS_PER_MINUTE`` events of one device in one minute (flagging that device's events of
that hour); identity = ``user_id`` as sent, else the first user seen on the device in the same or
an earlier hour, else the device; funnels as ``dbt_project/macros/funnel.sql`` documents them
(earliest most complete path per actor and entry day, "this order", inclusive window, a held
property compared as raw JSON); retention by first-seen UTC day over complete days only.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Funnel:
    name: str
    steps: tuple[str, ...]
    window_seconds: int
    hold: str | None = None


# As declared in dbt_project.yml (vars.funnels); restated here on purpose, so a change there shows up.
FUNNELS = (
    Funnel("signup_to_purchase", ("sign_up", "activate", "purchase"), 7 * 86_400),
    Funnel("browse_to_purchase_same_product", ("view_item", "add_to_cart", "purchase"), 86_400, hold="product"),
)
RETENTION_MAX_DAY = 30


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date().isoformat()


def insert_ids_digest(insert_ids: list[str]) -> str:
    """sha256 over the sorted insert_ids, one per line: equal digests = the same set of events."""
    return hashlib.sha256("\n".join(sorted(insert_ids)).encode()).hexdigest()


def dedupe(sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for e in sent:
        seen.setdefault(e["insert_id"], e)
    return list(seen.values())


def bot_insert_ids(events: list[dict[str, Any]], bot_devices: frozenset[str], max_per_minute: int) -> set[str]:
    """Events flagged as bots: crawler devices, plus devices over the per-minute rate within an hour."""
    per_minute: dict[tuple[str, int], int] = defaultdict(int)
    for e in events:
        if e.get("device_id"):
            per_minute[(e["device_id"], e["time"] // 60_000)] += 1
    fast_hours = {(d, m * 60_000 // HOUR_MS) for (d, m), n in per_minute.items() if n > max_per_minute}
    return {
        e["insert_id"] for e in events
        if e.get("device_id") in bot_devices or (e.get("device_id"), e["time"] // HOUR_MS) in fast_hours
    }


def actors(events: list[dict[str, Any]]) -> dict[str, str]:
    """insert_id -> actor: user_id as sent, else the device's first user if seen in this or an earlier hour."""
    first_user: dict[str, tuple[int, str]] = {}
    for e in sorted(events, key=lambda e: (e["time"], e.get("user_id") or "")):
        if e.get("user_id") and e.get("device_id"):
            first_user.setdefault(e["device_id"], (e["time"] // HOUR_MS, e["user_id"]))
    out = {}
    for e in events:
        if e.get("user_id"):
            out[e["insert_id"]] = e["user_id"]
            continue
        known = first_user.get(e["device_id"])
        out[e["insert_id"]] = known[1] if known and known[0] <= e["time"] // HOUR_MS else e["device_id"]
    return out


def funnel_paths(funnel: Funnel, events: list[tuple[int, str, str, str]]) -> dict[str, tuple[int, int, list[int]]]:
    """One actor's (time, insert_id, event_type, held value) events -> entry day -> (level, entry ms, step times)."""
    evs = sorted(events)
    best: dict[str, tuple[int, int, list[int]]] = {}
    window = funnel.window_seconds * 1000
    for i0, (t0, _, etype, held) in enumerate(evs):
        if etype != funnel.steps[0]:
            continue
        times = [t0]
        for t, _, et, h in evs[i0 + 1:]:
            if len(times) >= len(funnel.steps):
                break
            if t <= t0 + window and h == held and et == funnel.steps[len(times)]:
                times.append(t)
        day = day_of(t0)
        current = best.get(day)
        if current is None or (len(times), -t0) > (current[0], -current[1]):
            best[day] = (len(times), t0, times)
    return best


def funnel_counts(funnel: Funnel, by_actor: dict[str, list[dict[str, Any]]]) -> dict[str, list[int]]:
    """entry day -> actors reaching step 1..n."""
    out: dict[str, list[int]] = {}
    for evs in by_actor.values():
        rows = []
        for e in evs:
            held = ""
            if funnel.hold:
                value = (e.get("event_properties") or {}).get(funnel.hold)
                held = "" if value is None else json.dumps(value, separators=(",", ":"))
            rows.append((e["time"], e["insert_id"], e["event_type"], held))
        for day, (level, _t0, _times) in funnel_paths(funnel, rows).items():
            counts = out.setdefault(day, [0] * len(funnel.steps))
            for k in range(level):
                counts[k] += 1
    return dict(sorted(out.items()))


def retention(active_days: dict[str, set[str]], today: date) -> dict[str, dict[str, Any]]:
    """cohort day -> cohort size, returned_on[n] and returned_on_or_after[n] for complete days n."""
    cohorts: dict[str, list[list[int]]] = defaultdict(list)
    for days in active_days.values():
        ds = sorted(date.fromisoformat(d) for d in days if date.fromisoformat(d) < today)
        if ds:
            cohorts[ds[0].isoformat()].append([(d - ds[0]).days for d in ds])
    out = {}
    for cohort, members in sorted(cohorts.items()):
        c = date.fromisoformat(cohort)
        ns = [n for n in range(RETENTION_MAX_DAY + 1) if c.toordinal() + n < today.toordinal()]
        out[cohort] = {
            "cohort_users": len(members),
            "returned_on": [sum(1 for m in members if n in m) for n in ns],
            "returned_on_or_after": [sum(1 for m in members if max(m) >= n) for n in ns],
        }
    return out


def sessions(human: list[dict[str, Any]], actor: dict[str, str]) -> dict[str, dict[str, Any]]:
    """session day -> sessions, events in them, bounces, total duration (s) — sessions keyed (actor, session_id)."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for e in human:
        if e.get("session_id", -1) > 0:
            groups[(actor[e["insert_id"]], e["session_id"])].append(e["time"])
    out: dict[str, dict[str, Any]] = {}
    for times in groups.values():
        d = out.setdefault(day_of(min(times)), {"sessions": 0, "events": 0, "bounces": 0, "duration_ms": 0})
        d["sessions"] += 1
        d["events"] += len(times)
        d["bounces"] += len(times) == 1
        d["duration_ms"] += max(times) - min(times)
    return dict(sorted(out.items()))


def expected_figures(sent: list[dict[str, Any]], *, bot_devices: frozenset[str], max_per_minute: int, today: date,
                     rejected_requests: int, rejected_events: int, dead_lettered: int) -> dict[str, Any]:
    """The report the pipeline must produce for these sent events (same shape as demo.report.figures)."""
    events = dedupe(sent)
    bots = bot_insert_ids(events, bot_devices, max_per_minute)
    actor = actors(events)
    human = [e for e in events if e["insert_id"] not in bots]
    by_actor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    active: dict[str, set[str]] = defaultdict(set)
    dau: dict[str, set[str]] = defaultdict(set)
    for e in human:
        a = actor[e["insert_id"]]
        by_actor[a].append(e)
        active[a].add(day_of(e["time"]))
        dau[day_of(e["time"])].add(a)
    return {
        "events": {
            "accepted": len(sent),
            "in_clickhouse": len(events),
            "duplicates_dropped": len(sent) - len(events),
            "bot_events": len(bots),
            "rejected_requests": rejected_requests,
            "rejected_events": rejected_events,
            "dead_lettered": dead_lettered,
            "insert_ids_sha256": insert_ids_digest([e["insert_id"] for e in events]),
        },
        "dau": {d: len(a) for d, a in sorted(dau.items())},
        "funnels": {f.name: funnel_counts(f, by_actor) for f in FUNNELS},
        "retention": retention(active, today),
        "sessions": sessions(human, actor),
    }
