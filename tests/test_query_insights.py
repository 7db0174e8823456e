"""Sessions, user look-ups, realtime, lifecycle and stickiness over a real chserver, against the pure-Python
reference (tests/query_reference.py), in UTC and across Europe/Berlin's spring DST change."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import clickhouse_connect
import pytest
from starlette.testclient import TestClient

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.projects_settings import set_timezone
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from query_service.app import create_app
from query_service.compile import realtime as RT
from query_service.compile import sessions as S
from query_service.engine import Engine
from query_service.params import DateRange, Scope
from query_service.params_insights import DEFAULT_SESSION_BINS_MS, RealtimeQuery, SessionsQuery
from tests import query_reference as ref
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, insert_append, load_events

MIN = 60_000
H = 3_600_000
DAY = 86_400_000
FIRST = date(2026, 3, 22)  # 14 days spanning Europe/Berlin's spring change (2026-03-29)
NDAYS = 14
PROJECT = "t-insights"


def _ms(d: date, tz: str = "UTC") -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz)).astimezone(UTC).timestamp() * 1000)


def generate(seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    events: list[dict[str, Any]] = []
    n = 0
    for a in range(25):
        actor = f"a{a}"
        uid = f"u{a}" if a < 20 else None
        device = "dshared" if a in (5, 6) else f"d{a}"
        for day in sorted(rnd.sample(range(NDAYS), rnd.randint(1, 9))):
            for _ in range(rnd.randint(1, 3)):
                t0 = _ms(FIRST) + day * DAY + rnd.randint(0, DAY - 1)
                if rnd.random() < 0.1:
                    t0 = _ms(FIRST) + day * DAY + DAY - rnd.randint(1, 10) * MIN  # crosses midnight
                sid = t0 if rnd.random() > 0.1 else -1
                t = t0
                for _ in range(rnd.randint(1, 5)):
                    n += 1
                    e = {"time": t, "insert_id": f"e{n}", "actor_id": actor, "user_id": uid, "device_id": device,
                         "session_id": sid, "event_type": rnd.choice(["open", "view", "view", "buy"]),
                         "country": rnd.choice(["DE", "FR"])}
                    events.append(e)
                    if rnd.random() < 0.05:  # a duplicate received later: counts once
                        events.append({**e, "received_at": t + H})
                    t += rnd.randint(0, 20 * MIN)
    for i in range(20):  # a bot: excluded unless include_bots=1
        events.append({"time": _ms(FIRST) + i * H, "insert_id": f"bot{i}", "actor_id": "bot", "session_id": 5,
                       "event_type": "view", "is_bot": 1})
    return events


EVENTS = generate()


@pytest.fixture(scope="module")
def api(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("qins")
    settings = load_settings(eventpipe_home=home, clickhouse_url=chserver.clickhouse_url,
                             clickhouse_service_password=chserver.service_password, clickhouse_ttl_days=TTL_DAYS,
                             lake_url=f"file://{chserver.data_dir.parent / 'lake'}")
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                          password=chserver.password, autogenerate_session_id=False)
    admin.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                           password=chserver.password, database="analytics", autogenerate_session_id=False)
    load_events(client, EVENTS, PROJECT)
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    auth = create_key_with_secret(store, PROJECT)
    with TestClient(create_app(settings, store=store)) as tc:
        yield {"client": tc, "auth": auth, "settings": settings, "store": store, "ch": client,
               "engine": Engine(chserver.host, chserver.port, "reader", "reader", "analytics")}
    store.dispose()


def get(api: dict[str, Any], path: str, tc: TestClient | None = None, **params: Any) -> Any:
    params = {k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in params.items()}
    r = (tc or api["client"]).get(path, params=params, auth=api["auth"])
    assert r.status_code == 200, r.text
    return r.json()


RANGE = {"start": "20260323", "end": "20260403"}
START, END = date(2026, 3, 23), date(2026, 4, 3)


@pytest.fixture(params=["UTC", "Europe/Berlin"])
def tz_client(api: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[tuple[str, TestClient]]:
    """The API in the project's zone (a fresh app: keys cache their project's zone)."""
    set_timezone(api["store"], PROJECT, request.param)
    try:
        yield request.param, TestClient(create_app(api["settings"], store=api["store"]))
    finally:
        set_timezone(api["store"], PROJECT, "UTC")


def test_sessions_length_and_peruser(api: dict[str, Any], tz_client: tuple[str, TestClient]) -> None:
    tz, tc = tz_client
    data = get(api, "/api/2/sessions/length", tc, **RANGE)["data"]
    edges = list(DEFAULT_SESSION_BINS_MS)
    assert data["xValues"][0] == "0s-3s" and data["xValues"][-1] == "3600s-86400s"
    assert data["series"] == [ref.session_length_bins(EVENTS, START, END, tz, edges)]
    assert sum(data["series"][0]) > 50
    custom = get(api, "/api/2/sessions/length", tc, **RANGE, timeHistogramConfigBinTimeUnit="minutes",
                 timeHistogramConfigBinMin="0", timeHistogramConfigBinMax="60", timeHistogramConfigBinSize="15")["data"]
    assert custom["xValues"] == ["0s-900s", "900s-1800s", "1800s-2700s", "2700s-3600s"]
    assert custom["series"] == [ref.session_length_bins(EVENTS, START, END, tz, [0, 900_000, 1_800_000, 2_700_000, 3_600_000])]
    per = get(api, "/api/2/sessions/peruser", tc, **RANGE)["data"]
    want, collapsed = ref.sessions_per_user(EVENTS, START, END, tz)
    assert per["xValues"] == [d.isoformat() for d in ref.days(START, END)]
    assert per["series"][0] == pytest.approx(want, abs=1e-6)
    assert per["seriesCollapsed"][0][0] == pytest.approx(collapsed, abs=1e-6)


def test_lifecycle(api: dict[str, Any], tz_client: tuple[str, TestClient]) -> None:
    tz, tc = tz_client
    for i, interval in (("1", "day"), ("7", "week"), ("30", "month")):
        for ev in ("_active", "buy"):
            data = get(api, "/api/2/lifecycle", tc, e={"event_type": ev}, i=i, **RANGE)["data"]
            x, series = ref.lifecycle(EVENTS, ev, START, END, interval, tz)
            assert data == {"xValues": x, "series": series}, (interval, ev)
    daily = get(api, "/api/2/lifecycle", tc, **RANGE)["data"]["series"]  # e defaults to _active
    assert sum(daily["new"]) > 0 and sum(daily["dormant"]) > 0 and sum(daily["resurrected"]) > 0


def test_stickiness(api: dict[str, Any], tz_client: tuple[str, TestClient]) -> None:
    tz, tc = tz_client
    for i, interval in (("7", "week"), ("30", "month")):
        data = get(api, "/api/2/stickiness", tc, e={"event_type": "view"}, i=i, **RANGE)["data"]
        exact = ref.stickiness(EVENTS, "view", START, END, interval, tz)
        assert data["series"] == [exact]
        assert data["xValues"] == list(range(1, len(exact) + 1))
        assert data["cumulative"] == [[sum(exact[k:]) for k in range(len(exact))]]
        assert data["total"] == sum(exact) > 0
    assert len(get(api, "/api/2/stickiness", tc, i="30", start="20260201", end="20260228")["data"]["xValues"]) == 28
    assert get(api, "/api/2/stickiness", tc, **RANGE)["data"]["xValues"] == list(range(1, 8))  # i defaults to 7


def test_segments_choose_the_events(api: dict[str, Any]) -> None:
    """``s`` filters the events every metric is made of (here: only DE events)."""
    de = [e for e in EVENTS if e.get("country") == "DE"]
    seg = [{"prop": "country", "op": "is", "values": ["DE"]}]
    length = get(api, "/api/2/sessions/length", s=seg, **RANGE)["data"]["series"]
    assert length == [ref.session_length_bins(de, START, END, "UTC", list(DEFAULT_SESSION_BINS_MS))]
    assert length != [ref.session_length_bins(EVENTS, START, END, "UTC", list(DEFAULT_SESSION_BINS_MS))]
    sticky = get(api, "/api/2/stickiness", s=seg, **RANGE)["data"]["series"]
    assert sticky == [ref.stickiness(de, "_active", START, END, "week", "UTC")]
    life = get(api, "/api/2/lifecycle", s=seg, i="7", **RANGE)["data"]
    assert life == dict(zip(("xValues", "series"), ref.lifecycle(de, "_active", START, END, "week", "UTC"), strict=True))


def test_include_bots(api: dict[str, Any]) -> None:
    without = get(api, "/api/2/sessions/peruser", start="20260322", end="20260322")["data"]["seriesCollapsed"]
    with_bots = get(api, "/api/2/sessions/peruser", start="20260322", end="20260322", include_bots="1")["data"]
    day_sessions = [s for s in ref._sessions(EVENTS, FIRST, FIRST, "UTC")]
    users = len({a for a, _, _ in day_sessions})
    assert without[0][0] == pytest.approx(len(day_sessions) / users, abs=1e-6)
    assert with_bots["seriesCollapsed"][0][0] == pytest.approx((len(day_sessions) + 1) / (users + 1), abs=1e-6)


def test_usersearch(api: dict[str, Any]) -> None:
    for user in ("a3", "u1", "u", "dshared", "d7", "nobody"):
        body = get(api, "/api/2/usersearch", user=user)
        kind, actors = ref.user_search(EVENTS, user)
        assert body["type"] == kind and [m["amplitude_id"] for m in body["matches"]] == actors, user
    assert get(api, "/api/2/usersearch", user="dshared")["type"] == "match_user_or_device_id"
    assert len(get(api, "/api/2/usersearch", user="dshared")["matches"]) == 2
    assert get(api, "/api/2/usersearch", user="bot")["type"] == "nomatch"
    assert get(api, "/api/2/usersearch", user="bot", include_bots="1")["type"] == "match_amplitude_id"


def test_useractivity(api: dict[str, Any]) -> None:
    mine = [e for e in ref.clean(EVENTS) if e["actor_id"] == "a4"]
    body = get(api, "/api/2/useractivity", user="u4", limit="7", offset="3")
    assert [e["insert_id"] for e in body["events"]] == ref.user_activity(EVENTS, "a4", 3, 7)
    assert body["userData"]["amplitude_id"] == "a4" and body["userData"]["user_id"] == "u4"
    assert body["userData"]["num_events"] == len(mine)
    assert body["userData"]["num_sessions"] == len({e["session_id"] for e in mine if e["session_id"] >= 0})
    assert body["userData"]["first_used"] == ref.local_day(mine[0]["time"], "UTC").isoformat()
    assert body["userData"]["device_ids"] == ["d4"]
    first = body["events"][0]
    assert set(first) >= {"event_type", "event_time", "event_properties", "user_properties", "session_id"}
    full = get(api, "/api/2/useractivity", user="a4")["events"]
    assert [e["insert_id"] for e in full] == ref.user_activity(EVENTS, "a4", 0, 1000)
    r = api["client"].get("/api/2/useractivity", params={"user": "nobody"}, auth=api["auth"])
    assert r.status_code == 404 and r.json()["parameter"] == "user"


def test_realtime_api(api: dict[str, Any]) -> None:
    """Events of the last hour and of yesterday at the same time, in a project of its own."""
    project = "t-insights-rt"
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    events = [{"time": now_ms - k * 4 * MIN - w * DAY, "insert_id": f"rt{k}-{w}", "actor_id": f"r{k % 5}",
               "event_type": "ping"} for k in range(15) for w in (0, 1)]
    insert_append(api["ch"], events, project)
    auth = create_key_with_secret(api["store"], project)
    before = datetime.now(UTC)
    r = api["client"].get("/api/2/realtime", auth=auth)
    after = datetime.now(UTC)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["seriesLabels"] == ["Today", "Yesterday"]
    wanted = [ref.realtime(events, t, "UTC") for t in (before, after)]
    assert (data["xValues"], data["series"]) in [(x, s) for x, s in wanted]
    assert sum(data["series"][0]) > 0


def test_realtime_dst_fall_back(api: dict[str, Any]) -> None:
    """Europe/Berlin 2026-10-25: 02:00-02:59 happens twice; each label holds both UTC hours' actors."""
    tz = "Europe/Berlin"
    project = "t-insights-rt-dst"
    start = _ms(date(2026, 10, 24), tz)
    events = [{"time": start + i * 5 * MIN, "insert_id": f"x{i}", "actor_id": f"p{i % 13}", "event_type": "ping"}
              for i in range(12 * 30)]
    insert_append(api["ch"], events, project)
    now = datetime(2026, 10, 25, 3, 32, tzinfo=ZoneInfo(tz))
    q = RealtimeQuery(scope=Scope(project, tz), now=now)
    data = RT.shape_realtime(q, api["engine"].run(RT.compile_realtime(q)).rows)
    assert (data["xValues"], data["series"]) == ref.realtime(events, now, tz)
    assert data["xValues"][-1] == "03:30" and len(data["xValues"]) == 43
    assert data["series"][0][data["xValues"].index("02:10")] == 2  # two UTC moments, two different actors


def test_sessions_peruser_dst_day(api: dict[str, Any]) -> None:
    """One actor, a one-event session every UTC hour: sessions per user on Berlin's local days are their hours."""
    tz = "Europe/Berlin"
    project = "t-insights-dst"
    first = _ms(date(2026, 3, 27))
    insert_append(api["ch"], [{"time": first + i * H, "insert_id": f"h{i}", "actor_id": "a", "session_id": first + i * H,
                               "event_type": "tick"} for i in range(5 * 24)], project)
    q = SessionsQuery(scope=Scope(project, tz), range=DateRange(date(2026, 3, 28), date(2026, 3, 30)))
    data = S.shape_peruser(q, api["engine"].run(S.compile_peruser(q)).rows)
    assert data["xValues"] == ["2026-03-28", "2026-03-29", "2026-03-30"] and data["series"] == [[24, 23, 24]]


@pytest.mark.parametrize(("path", "params", "name"), [
    ("/api/2/sessions/length", {"start": "2026"}, "start"),
    ("/api/2/sessions/length", {**RANGE, "timeHistogramConfigBinTimeUnit": "days"}, "timeHistogramConfigBinTimeUnit"),
    ("/api/2/sessions/length", {**RANGE, "timeHistogramConfigBinTimeUnit": "seconds"}, "timeHistogramConfigBinMin"),
    ("/api/2/sessions/length", {**RANGE, "timeHistogramConfigBinTimeUnit": "seconds", "timeHistogramConfigBinMin": "5",
                                "timeHistogramConfigBinMax": "1"}, "timeHistogramConfigBinMax"),
    ("/api/2/sessions/peruser", {"start": "20260301"}, "end"),
    ("/api/2/usersearch", {}, "user"),
    ("/api/2/useractivity", {"user": "a1", "limit": "0"}, "limit"),
    ("/api/2/useractivity", {"user": "a1", "offset": "-1"}, "offset"),
    ("/api/2/realtime", {"i": "60"}, "i"),
    ("/api/2/lifecycle", {**RANGE, "i": "2"}, "i"),
    ("/api/2/lifecycle", {**RANGE, "e": "{"}, "e"),
    ("/api/2/lifecycle", {**RANGE, "e": json.dumps({"event_type": "_new"})}, "e"),
    ("/api/2/stickiness", {**RANGE, "i": "1"}, "i"),
    ("/api/2/stickiness", {**RANGE, "s": "[1]"}, "s[0]"),
    ("/api/2/stickiness", {**RANGE, "include_bots": "maybe"}, "include_bots"),
])
def test_bad_parameters_are_400(api: dict[str, Any], path: str, params: dict[str, str], name: str) -> None:
    r = api["client"].get(path, params=params, auth=api["auth"])
    assert r.status_code == 400, r.text
    assert r.json()["parameter"] == name


def test_auth_and_injection(api: dict[str, Any]) -> None:
    for path in ("/api/2/sessions/length", "/api/2/usersearch", "/api/2/realtime", "/api/2/lifecycle", "/api/2/stickiness"):
        assert api["client"].get(path, params={**RANGE, "user": "a1"}).status_code == 401
    nasty = "a1' OR 1=1 --"
    assert get(api, "/api/2/usersearch", user=nasty) == {"matches": [], "type": "nomatch"}
    other = create_key_with_secret(api["store"], "t-insights-other")  # a key of another project sees nothing here
    r = api["client"].get("/api/2/usersearch", params={"user": "a1"}, auth=other)
    assert r.json() == {"matches": [], "type": "nomatch"}
    data = get(api, "/api/2/lifecycle", s=[{"prop": nasty, "op": "is", "values": [nasty]}], **RANGE)["data"]
    assert all(v == 0 for vs in data["series"].values() for v in vs)


def test_openapi_lists_the_endpoints(api: dict[str, Any]) -> None:
    paths = api["client"].get("/openapi.json").json()["paths"]
    for path in ("/api/2/sessions/length", "/api/2/sessions/peruser", "/api/2/usersearch", "/api/2/useractivity",
                 "/api/2/realtime", "/api/2/lifecycle", "/api/2/stickiness"):
        assert path in paths and paths[path]["get"]["parameters"], path
    assert any(p["name"] == "user" and p["required"] for p in paths["/api/2/useractivity"]["get"]["parameters"])
    assert "/api/2/lifecycle" in api["client"].get("/docs").text
