"""The demo's report: figures read back from ClickHouse over HTTP (marts + events), printed with rich.

:func:`figures` returns the same shape as :func:`demo.truth.expected_figures` for the keys both
have, so the two can be compared key by key; :func:`render` prints them.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from demo.truth import insert_ids_digest
from eventpipe_core.settings import Settings

COMPARED = ("events", "dau", "funnels", "retention", "sessions")


def ch_client(settings: Settings, readonly: bool = False) -> Any:
    import clickhouse_connect

    t = settings.clickhouse
    user, password = (settings.clickhouse_readonly_user, settings.clickhouse_readonly_password) if readonly \
        else (t.user, t.password)
    return clickhouse_connect.get_client(host=t.host, port=t.port, username=user, password=password, secure=t.secure,
                                         autogenerate_session_id=False)


def figures(settings: Settings, project: str, *, accepted: int, rejected: tuple[int, int], dead_lettered: int,
            client: Any = None) -> dict[str, Any]:
    """Everything the report shows, from analytics.events and the dbt marts (read-only user)."""
    c = client or ch_client(settings, readonly=True)
    db = settings.clickhouse.database
    p = {"p": project}

    def rows(sql: str) -> list[tuple]:
        return c.query(sql.replace("{db}", db), parameters=p).result_rows

    total, unique, bots = rows("SELECT count(), uniqExact(insert_id), countIf(is_bot = 1) FROM {db}.events "
                               "WHERE project = {p:String}")[0]
    ids = [r[0] for r in rows("SELECT insert_id FROM {db}.events WHERE project = {p:String}")]
    out: dict[str, Any] = {
        "events": {
            "accepted": accepted,
            "in_clickhouse": int(total),
            "duplicates_dropped": accepted - int(total),
            "bot_events": int(bots),
            "rejected_requests": rejected[0],
            "rejected_events": rejected[1],
            "dead_lettered": dead_lettered,
            "insert_ids_sha256": insert_ids_digest(ids),
        },
        "dau": {str(d): int(n) for d, n in rows(
            "SELECT toString(activity_date), dau FROM {db}.fct_active_users WHERE project = {p:String} ORDER BY 1")},
        "funnels": {},
        "retention": {},
        "sessions": {},
        "unique_insert_ids": int(unique),
    }
    for name, day, _step, users in rows("SELECT funnel_name, toString(entry_date), step_index, users FROM {db}.fct_funnels "
                                       "WHERE project = {p:String} ORDER BY 1, 2, 3"):
        out["funnels"].setdefault(name, {}).setdefault(day, []).append(int(users))
    for cohort, _n, size, on, after in rows(
            "SELECT toString(cohort_date), day_n, cohort_users, returned_on, returned_on_or_after "
            "FROM {db}.fct_retention_cohorts WHERE project = {p:String} ORDER BY 1, 2"):
        r = out["retention"].setdefault(cohort, {"cohort_users": int(size), "returned_on": [], "returned_on_or_after": []})
        r["returned_on"].append(int(on))
        r["returned_on_or_after"].append(int(after))
    for day, n, events, bounces, duration_ms in rows(
            "SELECT toString(session_date), count(), sum(events), sum(is_bounce), "
            "sum(toInt64(round(duration_seconds * 1000))) FROM {db}.fct_sessions WHERE project = {p:String} "
            "GROUP BY 1 ORDER BY 1"):
        out["sessions"][day] = {"sessions": int(n), "events": int(events), "bounces": int(bounces),
                                "duration_ms": int(duration_ms)}
    lag = rows("SELECT quantiles(0.5, 0.95)(dateDiff('millisecond', received_at, ingested_at) / 1000.0), "
               "max(ingested_at) FROM {db}.events WHERE project = {p:String} AND is_bot = 0")[0]
    out["landing_lag_s"] = {"p50": round(float(lag[0][0]), 1), "p95": round(float(lag[0][1]), 1)}
    return out


def mismatches(report: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Keys (dotted) whose values differ between the report and the ground truth."""
    out = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        elif a != b:
            out.append(f"{path}: pipeline {a!r} != expected {b!r}")

    for key in COMPARED:
        walk(report.get(key), expected.get(key), key)
    return out


def render(console: Console, report: dict[str, Any], expected: dict[str, Any] | None, timings: dict[str, float],
           funnel: str = "signup_to_purchase") -> None:
    """Print the report tables."""
    ev = report["events"]
    t = Table(title="Events", show_header=False, title_justify="left")
    t.add_row("accepted by the collector (HTTP 200)", f"{ev['accepted']:,}")
    t.add_row("in analytics.events (exactly once)", f"{ev['in_clickhouse']:,}")
    t.add_row("duplicate sends dropped (same insert_id)", f"{ev['duplicates_dropped']:,}")
    t.add_row("flagged as bots (excluded from marts)", f"{ev['bot_events']:,}")
    t.add_row("rejected by the collector (400)", f"{ev['rejected_events']:,} events in {ev['rejected_requests']} requests")
    t.add_row("dead-lettered by the consumer (events.dlq)", f"{ev['dead_lettered']:,}")
    console.print(t)

    days = sorted(report["dau"])
    sessions = report["sessions"]
    t = Table(title="Daily active users and sessions (humans)", title_justify="left")
    for col in ("day", "DAU", "sessions", "events/session", "avg duration", "bounce rate"):
        t.add_column(col, justify="right")
    for d in days:
        s = sessions.get(d, {"sessions": 0, "events": 0, "bounces": 0, "duration_ms": 0})
        n = max(s["sessions"], 1)
        t.add_row(d, str(report["dau"][d]), str(s["sessions"]), f"{s['events'] / n:.1f}",
                  f"{s['duration_ms'] / n / 1000 / 60:.1f} min", f"{s['bounces'] / n:.0%}")
    console.print(t)

    by_day = report["funnels"].get(funnel, {})
    steps = ("sign_up", "activate", "purchase") if funnel == "signup_to_purchase" else ("step 1", "step 2", "step 3")
    t = Table(title=f"Funnel {funnel} (this order, 7-day window) by entry day", title_justify="left")
    t.add_column("entry day", justify="right")
    for i, s in enumerate(steps):
        t.add_column(s if i == 0 else f"{s} (conv.)", justify="right")
    totals = [0] * len(steps)
    for d, counts in sorted(by_day.items()):
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        t.add_row(d, *_funnel_cells(counts))
    t.add_row("all", *_funnel_cells(totals), style="bold")
    console.print(t)

    ret = report["retention"]
    width = max((len(r["returned_on"]) for r in ret.values()), default=0)
    t = Table(title="Retention: share of the cohort active on day N (Return On)", title_justify="left")
    t.add_column("cohort", justify="right")
    t.add_column("users", justify="right")
    for n in range(width):
        t.add_column(f"d{n}", justify="right")
    for cohort, r in sorted(ret.items()):
        size = max(r["cohort_users"], 1)
        t.add_row(cohort, str(r["cohort_users"]), *[f"{x / size:.0%}" for x in r["returned_on"]])
    console.print(t)

    t = Table(title="Freshness", show_header=False, title_justify="left")
    lag = report.get("landing_lag_s", {})
    t.add_row("received by the collector → landed in the lake", f"p50 {lag.get('p50', 0):.1f} s · p95 {lag.get('p95', 0):.1f} s")
    for label, key in (("last accepted → all visible in analytics.events", "visible_s"),
                       ("last accepted → all daily marts rebuilt", "marts_s"),
                       ("late events accepted → visible and marts rebuilt", "late_s")):
        if key in timings:
            t.add_row(label, f"{timings[key]:.0f} s")
    console.print(t)

    if expected is not None:
        diff = mismatches(report, expected)
        if diff:
            console.print(f"[red]ground truth check: {len(diff)} figure(s) differ[/red]")
            for line in diff[:20]:
                console.print(f"  [red]{line}[/red]")
        else:
            console.print("[green]ground truth check: every figure above equals the generator's ground truth[/green] "
                          "(events exactly once, rejected, dead-lettered, DAU, both funnels, retention, sessions)")


def _funnel_cells(counts: list[int]) -> list[str]:
    cells = [str(counts[0])]
    for i in range(1, len(counts)):
        prev = counts[i - 1] or 1
        cells.append(f"{counts[i]} ({counts[i] / prev:.0%})")
    return cells
