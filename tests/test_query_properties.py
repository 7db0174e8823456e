"""Property tests: compile + engine on the real chserver against the pure-Python reference (tests/query_reference.py).

Hypothesis builds small event sets with the hard cases: actors with several devices' events already merged
under one actor_id, duplicated insert_ids received later, exact ties in time (ordered by insert_id), steps at
exactly the window limit and 1 ms past it, bots, and local days in three time zones. Each example is a fresh
project, so examples never see each other's events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import clickhouse_connect
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from query_service import params as P
from query_service.compile import funnel as F
from query_service.compile import retention as R
from query_service.compile import segmentation as S
from query_service.engine import Engine
from tests import query_reference as ref
from tests.chserver_support import ChServer
from tests.query_support import insert_append, load_events

BASE = int(datetime(2025, 3, 29, 12, tzinfo=UTC).timestamp() * 1000)  # spans Europe's spring DST change
STEP_MS = 20 * 60_000  # 20 minutes: a 3600 s window ends exactly on a grid point
WINDOW_S = 3600
TZS = ("UTC", "Europe/Berlin", "America/New_York")
START, END = date(2025, 3, 29), date(2025, 3, 31)


@pytest.fixture(scope="module")
def ch(chserver: ChServer) -> Iterator[tuple[Any, Engine]]:
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password="",
                                          autogenerate_session_id=False)
    admin.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password="",
                                           database="analytics", autogenerate_session_id=False)
    load_events(client, [{"time": BASE - 86_400_000 * 400, "insert_id": "seed", "event_type": "x", "actor_id": "s"}],
                "seed")  # creates the schema
    yield client, Engine(chserver.host, chserver.port, "reader", "reader", "analytics")


@st.composite
def event_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 28))
    actors = draw(st.integers(1, 4))
    events = []
    for i in range(n):
        # clusters every 4 hours (crossing local midnights of all three zones), 6 slots of 20 minutes each
        slot = 12 * draw(st.integers(0, 17)) + draw(st.integers(0, 5))
        jitter = draw(st.sampled_from([0, 0, 0, 1, -1]))
        events.append({
            "time": BASE - 12 * 3_600_000 + slot * STEP_MS + jitter,
            "insert_id": f"e{i:03d}{draw(st.sampled_from(['', 'z']))}",
            "event_type": draw(st.sampled_from(["a", "b", "c", "x"])),
            "actor_id": f"u{draw(st.integers(0, actors - 1))}",
            "device_id": f"d{draw(st.integers(0, 5))}",
            "is_bot": draw(st.sampled_from([0] * 9 + [1])),
        })
    for p in range(draw(st.integers(0, 3))):  # funnel-shaped paths with steps at the window's edges
        t0 = BASE - 12 * 3_600_000 + STEP_MS * (12 * draw(st.integers(0, 17)) + draw(st.integers(0, 5)))
        actor = f"u{draw(st.integers(0, actors - 1))}"
        shapes = [["a", "b"], ["a", "b", "c"], ["a", "x", "b"], ["a", "c", "b"], ["b", "a"], ["a", "a", "b"], ["a", "b", "x"]]
        for k, etype in enumerate(draw(st.sampled_from(shapes))):
            offset = 0 if k == 0 else draw(st.sampled_from([0, 1, 1_800_000, WINDOW_S * 1000, WINDOW_S * 1000 + 1]))
            events.append({"time": t0 + offset, "insert_id": f"p{p}{k}", "event_type": etype, "actor_id": actor,
                           "device_id": "dp", "is_bot": 0})
    for e in list(events):  # duplicates: the same event received again later (must be counted once)
        if draw(st.booleans()) and draw(st.booleans()):
            events.append({**e, "received_at": e["time"] + 3_600_000})
    return events


def _load(client: Any, events: list[dict[str, Any]]) -> str:
    project = f"p{uuid.uuid4().hex[:10]}"
    if events:
        insert_append(client, events, project)
    return project


COMMON = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@COMMON
@given(events=event_sets(), tz=st.sampled_from(TZS), mode=st.sampled_from(P.FUNNEL_MODES),
       steps=st.sampled_from([["a", "b", "c"], ["a", "b"], ["a", "a", "b"], ["b", "a", "c"]]))
def test_funnel_matches_reference(ch: tuple[Any, Engine], events: list[dict[str, Any]], tz: str, mode: str,
                                  steps: list[str]) -> None:
    client, engine = ch
    project = _load(client, events)
    q = P.FunnelQuery(scope=P.Scope(project, tz), steps=tuple(P.EventSpec(s) for s in steps),
                      range=P.DateRange(START, END), mode=mode, window_s=WINDOW_S)
    data = F.shape(q, engine.run(F.compile_funnel(q)).rows)[0]
    overall, per_day, trans = ref.funnel(events, steps, mode, WINDOW_S, START, END, tz)
    assert data["cumulativeRaw"] == overall
    assert data["dayFunnels"]["series"] == [per_day[d] for d in ref.days(START, END)]
    assert data["medianTransTimes"] == [round(x) for x in ref.median_trans(trans, len(steps))]
    # invariant: step 1 == segmentation uniques of the step-1 event over the same range
    sq = P.SegmentationQuery(scope=P.Scope(project, tz), events=(P.EventSpec(steps[0]),), range=P.DateRange(START, END))
    seg = S.shape(sq, engine.run(S.compile_segmentation(sq)).rows)
    assert seg["seriesCollapsed"][0][0]["value"] == overall[0]


@COMMON
@given(events=event_sets(), tz=st.sampled_from(TZS), metric=st.sampled_from(["uniques", "totals"]),
       etype=st.sampled_from(["a", "_active"]))
def test_segmentation_matches_reference(ch: tuple[Any, Engine], events: list[dict[str, Any]], tz: str, metric: str,
                                        etype: str) -> None:
    client, engine = ch
    project = _load(client, events)
    q = P.SegmentationQuery(scope=P.Scope(project, tz), events=(P.EventSpec(etype),), range=P.DateRange(START, END),
                            metric=metric)
    data = S.shape(q, engine.run(S.compile_segmentation(q)).rows)
    per_day, total = ref.segmentation(events, etype, START, END, tz, metric)
    assert data["xValues"] == [d.isoformat() for d in ref.days(START, END)]
    assert data["series"] == [[per_day[d] for d in ref.days(START, END)]]
    assert data["seriesCollapsed"][0][0]["value"] == total


@COMMON
@given(events=event_sets(), tz=st.sampled_from(TZS), mode=st.sampled_from(P.RETENTION_MODES),
       se=st.sampled_from(["_new", "a"]), re=st.sampled_from(["_all", "b"]))
def test_retention_matches_reference(ch: tuple[Any, Engine], events: list[dict[str, Any]], tz: str, mode: str, se: str,
                                     re: str) -> None:
    client, engine = ch
    project = _load(client, events)
    today = END + timedelta(days=1)
    brackets = ((1, 1), (2, 3)) if mode == "bracket" else ()
    q = P.RetentionQuery(scope=P.Scope(project, tz), start_event=P.EventSpec(se), return_event=P.EventSpec(re),
                         range=P.DateRange(START, END), mode=mode, brackets=brackets, today=today)
    data = R.shape(q, engine.run(R.compile_retention(q)).rows)["series"][0]
    expected = ref.retention(events, se, re, mode, START, END, tz, today, list(brackets))
    for d in ref.days(START, END):
        cells = data["values"][d.isoformat()]
        size, counts = expected[d]
        assert cells[0]["count"] == size == cells[0]["outof"]  # invariant: index 0 is the cohort
        assert [c["count"] for c in cells] == counts[: len(cells)]
        assert len(cells) >= 1
