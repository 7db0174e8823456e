"""Property tests of lifecycle, stickiness and sessions: compile + engine on the real chserver against the
pure-Python reference, and invariants against segmentation (new + current + resurrected = the period's uniques;
stickiness' total = the sum of weekly uniques). Each example is a fresh project."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import clickhouse_connect
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from query_service import params as P
from query_service.compile import lifecycle as LC
from query_service.compile import segmentation as S
from query_service.compile import sessions as SS
from query_service.compile import stickiness as ST
from query_service.params_insights import DEFAULT_SESSION_BINS_MS, LifecycleQuery, SessionsQuery, StickinessQuery
from tests import query_reference as ref
from tests.chserver_support import ChServer
from tests.query_support import insert_append, load_events

BASE = int(datetime(2025, 10, 20, tzinfo=UTC).timestamp() * 1000)  # 3 weeks across Europe's autumn DST change
H = 3_600_000
TZS = ("UTC", "Europe/Berlin", "America/New_York")
START, END = date(2025, 10, 22), date(2025, 11, 6)


@pytest.fixture(scope="module")
def ch(chserver: ChServer) -> Iterator[tuple[Any, Any]]:
    from query_service.engine import Engine

    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                          password=chserver.password, autogenerate_session_id=False)
    admin.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                           password=chserver.password, database="analytics", autogenerate_session_id=False)
    load_events(client, [{"time": BASE - 86_400_000 * 400, "insert_id": "seed", "event_type": "x", "actor_id": "s"}],
                "seed")  # creates the schema
    yield client, Engine(chserver.host, chserver.port, "reader", "reader", "analytics")


@st.composite
def event_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    events = []
    for i in range(draw(st.integers(0, 40))):
        hour = draw(st.integers(0, 21 * 24 - 1))  # 21 days from BASE, before and after the range too
        sid = draw(st.sampled_from([-1, 1, 2, 3]))
        events.append({
            "time": BASE + hour * H + draw(st.sampled_from([0, 1, 59 * 60_000])),
            "insert_id": f"e{i:03d}", "event_type": draw(st.sampled_from(["a", "b"])),
            # sessions of up to 30 hours: some reach past the 1-day window around the range
            "actor_id": f"u{draw(st.integers(0, 4))}", "session_id": -1 if sid < 0 else 1_000 * sid + hour // 30,
            "is_bot": draw(st.sampled_from([0] * 9 + [1])),
        })
    for e in list(events):
        if draw(st.booleans()) and draw(st.booleans()):
            events.append({**e, "received_at": e["time"] + H})
    return events


def _load(client: Any, events: list[dict[str, Any]]) -> str:
    project = f"p{uuid.uuid4().hex[:10]}"
    if events:
        insert_append(client, events, project)
    return project


COMMON = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@COMMON
@given(events=event_sets(), tz=st.sampled_from(TZS), interval=st.sampled_from(["day", "week", "month"]),
       etype=st.sampled_from(["a", "_active"]))
def test_lifecycle_matches_reference(ch: tuple[Any, Any], events: list[dict[str, Any]], tz: str, interval: str,
                                     etype: str) -> None:
    client, engine = ch
    project = _load(client, events)
    q = LifecycleQuery(scope=P.Scope(project, tz), event=P.EventSpec(etype), range=P.DateRange(START, END), interval=interval)
    data = LC.shape_lifecycle(q, engine.run(LC.compile_lifecycle(q)).rows)
    x, series = ref.lifecycle(events, etype, START, END, interval, tz)
    assert data == {"xValues": x, "series": series}
    if interval == "day":  # invariant: the active ones of a day are the day's uniques
        sq = P.SegmentationQuery(scope=P.Scope(project, tz), events=(P.EventSpec(etype),), range=P.DateRange(START, END))
        seg = S.shape(sq, engine.run(S.compile_segmentation(sq)).rows)["series"][0]
        s = data["series"]
        assert [s["new"][k] + s["current"][k] + s["resurrected"][k] for k in range(len(x))] == seg


@COMMON
@given(events=event_sets(), tz=st.sampled_from(TZS), interval=st.sampled_from(["week", "month"]))
def test_stickiness_matches_reference(ch: tuple[Any, Any], events: list[dict[str, Any]], tz: str, interval: str) -> None:
    client, engine = ch
    project = _load(client, events)
    q = StickinessQuery(scope=P.Scope(project, tz), event=P.EventSpec("a"), range=P.DateRange(START, END), interval=interval)
    data = ST.shape_stickiness(q, engine.run(ST.compile_stickiness(q)).rows)
    assert data["series"] == [ref.stickiness(events, "a", START, END, interval, tz)]
    sq = P.SegmentationQuery(scope=P.Scope(project, tz), events=(P.EventSpec("a"),), range=P.DateRange(START, END),
                             interval=interval)
    seg = S.shape(sq, engine.run(S.compile_segmentation(sq)).rows)["series"][0]
    assert data["total"] == sum(seg)  # invariant: user-periods = the periods' uniques, summed


@COMMON
@given(events=event_sets(), tz=st.sampled_from(TZS))
def test_sessions_match_reference(ch: tuple[Any, Any], events: list[dict[str, Any]], tz: str) -> None:
    client, engine = ch
    project = _load(client, events)
    q = SessionsQuery(scope=P.Scope(project, tz), range=P.DateRange(START, END))
    length = SS.shape_length(q, engine.run(SS.compile_length(q)).rows)
    assert length["series"] == [ref.session_length_bins(events, START, END, tz, list(DEFAULT_SESSION_BINS_MS))]
    per = SS.shape_peruser(q, engine.run(SS.compile_peruser(q)).rows)
    want, collapsed = ref.sessions_per_user(events, START, END, tz)
    assert per["series"][0] == pytest.approx(want, abs=1e-6)
    assert per["seriesCollapsed"][0][0] == pytest.approx(collapsed, abs=1e-6)
