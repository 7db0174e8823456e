"""The demo's generator and ground truth without services: determinism, the invariants that make the
end-to-end figures exact, and the truth rules on hand-made events (funnel semantics of
dbt_project/macros/funnel.sql, bots, identity)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from demo.generator import DemoConfig, generate
from demo.truth import FUNNELS, actors, bot_insert_ids, expected_figures, funnel_counts, retention

DAY = date(2026, 3, 10)
T0 = int(datetime(2026, 3, 10, 10, tzinfo=UTC).timestamp() * 1000)
SIGNUP, BROWSE = FUNNELS


def ev(iid: str, etype: str, minutes: float, product: str | None = None, **kw: object) -> dict:
    e = {"insert_id": iid, "event_type": etype, "time": T0 + int(minutes * 60_000), "user_id": "u1", "device_id": "d1"}
    if product:
        e["event_properties"] = {"product": product}
    return e | kw


def test_generator_is_deterministic_and_keeps_its_invariants() -> None:
    config = DemoConfig(users=60, days=3, last_day=DAY)
    a, b = generate(config), generate(config)
    assert a.events == b.events and a.late == b.late and a.resends == b.resends
    assert generate(DemoConfig(users=60, days=3, last_day=DAY, seed=7)).events != a.events

    first = int(datetime(2026, 3, 8, tzinfo=UTC).timestamp() * 1000)
    hours = {(e["time"] - first) // 3_600_000 for e in a.events}
    assert hours == set(range(72))  # every hour of every day has data (daily marts need all 24)
    sessions: dict[tuple[str, int], list[int]] = defaultdict(list)
    ident_hour: dict[str, int] = {}
    for e in sorted(a.sent, key=lambda e: e["time"]):
        if e.get("session_id"):
            sessions[(e["device_id"], e["session_id"])].append(e["time"])
        if e.get("user_id"):
            ident_hour.setdefault(e["device_id"], e["time"] // 3_600_000)
    assert all(t[0] // 86_400_000 == t[-1] // 86_400_000 for t in sessions.values())  # never across midnight
    for e in a.sent:  # anonymous events of identifying devices share the identification hour
        if not e.get("user_id") and e["device_id"] in ident_hour:
            assert e["time"] // 3_600_000 == ident_hour[e["device_id"]]
    late_hours = {e["time"] // 3_600_000 for e in a.late}
    assert len(late_hours) == 1 and all(e["insert_id"] in {x["insert_id"] for x in a.events} or e["event_type"] == "search"
                                        for e in a.late)
    assert {e["insert_id"] for e in a.resends} <= {e["insert_id"] for e in a.events}


def test_funnel_this_order_window_hold_and_best_path() -> None:
    events = [
        ev("a", "sign_up", 0), ev("b", "purchase", 1), ev("c", "activate", 2), ev("d", "page_view", 3),
        ev("e", "purchase", 7 * 24 * 60),  # exactly at the window's end: still counts
    ]
    assert funnel_counts(SIGNUP, {"u1": events}) == {"2026-03-10": [1, 1, 1]}
    late = [*events[:4], ev("e", "purchase", 7 * 24 * 60 + 0.001)]
    assert funnel_counts(SIGNUP, {"u1": late}) == {"2026-03-10": [1, 1, 0]}

    browse = [ev("1", "view_item", 0, "p1"), ev("2", "view_item", 1, "p2"), ev("3", "add_to_cart", 2, "p2"),
              ev("4", "purchase", 3, "p1"), ev("5", "purchase", 4, "p2")]
    # p1 reaches step 1 only (no p1 add_to_cart); p2's path is more complete and wins for the day
    assert funnel_counts(BROWSE, {"u1": browse}) == {"2026-03-10": [1, 1, 1]}
    other_day = [ev("6", "view_item", 24 * 60 + 5, "p3")]
    assert funnel_counts(BROWSE, {"u1": browse + other_day}) == {"2026-03-10": [1, 1, 1], "2026-03-11": [1, 0, 0]}


def test_bots_identity_and_retention_rules() -> None:
    fast = [ev(f"f{i}", "page_view", 60 + i / 200, device_id="d9", user_id=None) for i in range(101)]
    slow = [ev("s1", "page_view", 200, device_id="d9", user_id=None)]  # two hours later: not flagged
    crawler = [ev("c1", "page_view", 5, device_id="bot", user_id=None)]
    flagged = bot_insert_ids(fast + slow + crawler, frozenset({"bot"}), max_per_minute=100)
    assert flagged == {e["insert_id"] for e in fast} | {"c1"}
    assert bot_insert_ids(fast[:100], frozenset(), max_per_minute=100) == set()

    anon_before = ev("x1", "page_view", 1, user_id=None)  # same hour as the identification: stitched
    ident = ev("x2", "sign_up", 5)
    anon_earlier_hour = ev("x0", "page_view", -61, user_id=None)  # an earlier hour: stays the device
    assert actors([anon_earlier_hour, anon_before, ident]) == {"x0": "d1", "x1": "u1", "x2": "u1"}

    active = {"a": {"2026-03-08", "2026-03-09"}, "b": {"2026-03-08", "2026-03-10"}, "c": {"2026-03-09"}}
    assert retention(active, today=date(2026, 3, 10)) == {
        "2026-03-08": {"cohort_users": 2, "returned_on": [2, 1], "returned_on_or_after": [2, 1]},
        "2026-03-09": {"cohort_users": 1, "returned_on": [1], "returned_on_or_after": [1]},
    }


def test_expected_figures_count_duplicates_once() -> None:
    sent = [ev("a", "sign_up", 0), ev("b", "activate", 1), ev("a", "sign_up", 0)]
    figures = expected_figures(sent, bot_devices=frozenset(), max_per_minute=100, today=DAY + timedelta(days=1),
                               rejected_requests=1, rejected_events=2, dead_lettered=3)
    assert figures["events"]["accepted"] == 3 and figures["events"]["in_clickhouse"] == 2
    assert figures["dau"] == {"2026-03-10": 1}
    assert figures["funnels"]["signup_to_purchase"] == {"2026-03-10": [1, 1, 0]}
