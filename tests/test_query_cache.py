"""The query service's Redis result cache (real Redis at 127.0.0.1:6379, real chserver): hits, invalidation by the
data versions the loads bump, refresh modes, single-flight, incomplete/provisional intervals.

Every test module run uses its own key prefixes and its own project names (other engineers' tests share the Redis
and the chserver); its keys are deleted afterwards.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any

import clickhouse_connect
import pytest
from starlette.testclient import TestClient

from eventpipe_core import data_versions as dv
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from orchestration.clickhouse.assets import bump_loaded_days
from query_service.app import create_app
from query_service.cache import interval_flags
from query_service.engine import Engine, QueryResult
from query_service.params import DateRange
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, load_events
from tests.redis_support import REDIS_URL, scratch_prefix

DAY_A = int(datetime(2025, 3, 10, tzinfo=UTC).timestamp() * 1000)
DAY_B = DAY_A + 86_400_000
H = 3_600_000


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    yield from scratch_prefix("qcache")


class CountingEngine(Engine):
    """The real engine, counting the queries it runs; ``delay_s`` holds each one open (to make requests overlap)."""

    runs = 0
    delay_s = 0.0

    def run(self, compiled: Any) -> QueryResult:
        type(self).runs += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        return super().run(compiled)


def day_events(project: str, start_ms: int, n: int, tag: str) -> list[dict[str, Any]]:
    return [{"time": start_ms + (i % 20) * H + i, "insert_id": f"{tag}{i}", "actor_id": f"{project}-u{i % 7}",
             "event_type": "view"} for i in range(n)]


@pytest.fixture(scope="module")
def api(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory, redis_prefix: str) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("qcache")
    settings = load_settings(eventpipe_home=home, clickhouse_url=chserver.clickhouse_url,
                             clickhouse_service_password=chserver.service_password, clickhouse_ttl_days=TTL_DAYS,
                             lake_url=f"file://{chserver.data_dir.parent / 'lake'}", redis_url=REDIS_URL,
                             query_redis_prefix=f"{redis_prefix}q:", data_versions_prefix=f"{redis_prefix}dv:")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                           password=chserver.password, autogenerate_session_id=False)
    client.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                           password=chserver.password, database="analytics", autogenerate_session_id=False)
    project = f"qc{uuid.uuid4().hex[:8]}"
    events = day_events(project, DAY_A, 30, "a") + day_events(project, DAY_B, 40, "b")
    load_events(client, events, project)
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    key, secret = create_key_with_secret(store, project)
    engine = CountingEngine.from_settings(settings)  # the real engine (a classmethod: builds the subclass)
    app = create_app(settings, engine=engine, store=store)
    with TestClient(app) as tc:
        yield {"client": tc, "auth": (key, secret), "settings": settings, "project": project, "ch": client,
               "events": events}
    store.dispose()


def seg(api: dict[str, Any], start: str, end: str, **params: Any) -> Any:
    base = {"e": json.dumps({"event_type": "view"}), "start": start, "end": end, "m": "totals"}
    base.update(params)
    return api["client"].get("/api/2/events/segmentation", params=base, auth=api["auth"])


def totals(events: list[dict[str, Any]], day_ms: int) -> int:
    """Reference: the events of one UTC day (distinct insert_ids)."""
    return len({e["insert_id"] for e in events if day_ms <= e["time"] < day_ms + 86_400_000})


def test_second_identical_query_is_a_hit(api: dict[str, Any]) -> None:
    first = seg(api, "20250310", "20250311", limit="11")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["is_cached"] is False and body["data_version"]
    assert body["data"]["series"] == [[totals(api["events"], DAY_A), totals(api["events"], DAY_B)]]
    runs = CountingEngine.runs
    second = seg(api, "20250310", "20250311", limit="11")
    assert second.json()["is_cached"] is True
    assert second.json()["data"] == body["data"] and second.json()["computed_at"] == body["computed_at"]
    assert CountingEngine.runs == runs  # served without ClickHouse
    # an equivalent request spelled differently (JSON whitespace) is the same normalized query: a hit too
    spaced = seg(api, "20250310", "20250311", limit="11", e='{ "event_type" :  "view" }')
    assert spaced.json()["is_cached"] is True


def test_late_event_recomputes_exactly_its_day(api: dict[str, Any]) -> None:
    over_a, over_b = ("20250310", "20250310"), ("20250311", "20250311")
    assert seg(api, *over_a).json()["is_cached"] is False
    b_before = seg(api, *over_b).json()
    assert seg(api, *over_a).json()["is_cached"] is True and seg(api, *over_b).json()["is_cached"] is True
    # a late event for day A: its hour re-loaded through the loader the clickhouse_events asset uses, then the
    # asset's own version bump of the loaded (project, day)
    late = {"time": DAY_A + 5 * H + 999, "insert_id": "late-1", "actor_id": f"{api['project']}-late", "event_type": "view"}
    api["events"].append(late)
    hour = [e for e in api["events"] if DAY_A + 5 * H <= e["time"] < DAY_A + 6 * H]
    load_events(api["ch"], hour, api["project"])
    bump_loaded_days(api["settings"], {date(2025, 3, 10): {api["project"]}})
    a_after = seg(api, *over_a).json()
    assert a_after["is_cached"] is False  # no refresh asked: the version of day A moved
    assert a_after["data"]["series"] == [[totals(api["events"], DAY_A)]]
    b_after = seg(api, *over_b).json()
    assert b_after["is_cached"] is True and b_after["data"] == b_before["data"]  # day B untouched: still a hit
    # a two-day answer covers day A: recomputed as well
    both = seg(api, "20250310", "20250311", limit="11").json()
    assert both["is_cached"] is False
    assert both["data"]["series"] == [[totals(api["events"], DAY_A), totals(api["events"], DAY_B)]]


def test_versions_are_per_project_and_table(api: dict[str, Any]) -> None:
    import redis

    over_b = ("20250311", "20250311")
    seg(api, *over_b)
    client = redis.Redis.from_url(REDIS_URL)
    prefix = api["settings"].data_versions_prefix
    dv.bump_with(client, prefix, dv.EVENTS, [date(2025, 3, 11)], ["someone-else"])  # another project's load
    dv.bump_with(client, prefix, "fct_daily_active", [date(2025, 3, 11)])  # a mart the query does not read
    assert seg(api, *over_b).json()["is_cached"] is True
    dv.bump_with(client, prefix, dv.EVENTS, [date(2025, 3, 11)])  # a load that does not know its projects
    assert seg(api, *over_b).json()["is_cached"] is False
    client.close()


def test_refresh_modes(api: dict[str, Any]) -> None:
    q = {"limit": "13"}
    miss = seg(api, "20250310", "20250311", refresh="cache_only", **q)
    assert miss.status_code == 404 and miss.json()["parameter"] == "refresh"
    first = seg(api, "20250310", "20250311", **q).json()
    assert seg(api, "20250310", "20250311", refresh="cache_only", **q).json()["is_cached"] is True
    forced = seg(api, "20250310", "20250311", refresh="force", **q).json()
    assert forced["is_cached"] is False and forced["computed_at"] > first["computed_at"]
    assert forced["data"] == first["data"]
    assert seg(api, "20250310", "20250311", refresh="sometimes", **q).json()["parameter"] == "refresh"
    # async with nothing cached: 202 at once, computed in the background, then there for cache_only
    q = {"limit": "14"}
    r = seg(api, "20250310", "20250311", refresh="async", **q)
    assert r.status_code == 202 and r.json()["computing"] is True
    deadline = time.monotonic() + 30
    while (got := seg(api, "20250310", "20250311", refresh="cache_only", **q)).status_code == 404:
        assert time.monotonic() < deadline, "the background computation never landed"
        time.sleep(0.1)
    assert got.json()["data"] == first["data"]
    # async after a load moved a version: the previous answer at once (is_stale), the new one computed behind it
    bump_loaded_days(api["settings"], {date(2025, 3, 11): {api["project"]}})
    stale = seg(api, "20250310", "20250311", refresh="async", **q).json()
    assert stale["is_stale"] is True and stale["data"] == first["data"]
    deadline = time.monotonic() + 30
    while (got := seg(api, "20250310", "20250311", refresh="cache_only", **q)).status_code == 404:
        assert time.monotonic() < deadline, "the background computation never landed"
        time.sleep(0.1)
    assert got.json()["is_cached"] is True and "is_stale" not in got.json()


def test_concurrent_identical_requests_share_one_computation(api: dict[str, Any]) -> None:
    CountingEngine.delay_s = 0.5
    try:
        runs = CountingEngine.runs
        barrier = threading.Barrier(6)

        def one(_: int) -> Any:
            barrier.wait()
            return seg(api, "20250310", "20250311", limit="17")

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(one, range(6)))
    finally:
        CountingEngine.delay_s = 0.0
    assert all(a.status_code == 200 for a in answers)
    assert len({json.dumps(a.json()["data"]) for a in answers}) == 1
    assert CountingEngine.runs == runs + 1


def test_incomplete_and_provisional_intervals() -> None:
    today = date(2026, 3, 20)
    inc, prov = interval_flags(DateRange(date(2026, 3, 1), date(2026, 3, 21)), "day", "UTC", 14, today=today)
    assert inc == ["2026-03-20", "2026-03-21"]
    assert prov == [f"2026-03-{d:02d}" for d in range(6, 20)]
    inc, prov = interval_flags(DateRange(date(2026, 1, 1), date(2026, 3, 20)), "month", "UTC", 14, today=today)
    assert inc == ["2026-03-01"] and prov == []
    inc, prov = interval_flags(DateRange(date(2026, 1, 1), date(2026, 3, 10)), "week", "UTC", 14, today=today)
    assert inc == [] and prov == ["2026-03-01", "2026-03-08"]  # weeks (from Sunday) ending on or after Mar 6
    assert interval_flags(DateRange(date(2025, 1, 1), date(2025, 1, 31)), "day", "UTC", 14, today=today) == ([], [])


def test_response_flags_today_as_incomplete(api: dict[str, Any]) -> None:
    today = datetime.now(UTC).date()
    r = seg(api, today.strftime("%Y%m%d"), today.strftime("%Y%m%d"))
    assert r.status_code == 200 and r.json()["incomplete"] == [today.isoformat()]
    assert seg(api, "20250310", "20250311").json()["incomplete"] == []


def sql(api: dict[str, Any], query: str, **params: Any) -> Any:
    return api["client"].post("/api/sql", json={"query": query, "params": params}, auth=api["auth"])


def test_sql_is_cached_and_invalidated_by_its_tables(api: dict[str, Any]) -> None:
    import redis

    q = "SELECT count() AS n FROM events WHERE toDate(event_time) = {d:Date}"
    first = sql(api, q, d="2025-03-11")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["is_cached"] is False and body["data_version"] and int(body["data"][0]["n"]) == totals(api["events"], DAY_B)
    again = sql(api, "select count() as n from events where toDate(event_time) = {d:Date}", d="2025-03-11").json()
    assert again["is_cached"] is True and again["data"] == body["data"]  # canonical text: same key
    assert sql(api, q, d="2025-03-10").json()["is_cached"] is False  # other params, other answer
    client = redis.Redis.from_url(REDIS_URL)
    prefix = api["settings"].data_versions_prefix
    dv.bump_with(client, prefix, "fct_funnels", [date(2025, 3, 11)])  # a mart the query does not read
    assert sql(api, q, d="2025-03-11").json()["is_cached"] is True
    bump_loaded_days(api["settings"], {date(2025, 3, 12): {api["project"]}})  # any load of events: SQL reads it whole
    assert sql(api, q, d="2025-03-11").json()["is_cached"] is False
    client.close()
    # refused SQL is answered as uncached (never cached, never a 5xx)
    bad = sql(api, "DROP TABLE events")
    assert bad.status_code == 400 and bad.json()["parameter"] == "query"


def test_sql_cost_comes_from_explain_estimate(api: dict[str, Any], redis_prefix: str) -> None:
    """One row to read = one cost unit, 50 per hour: the first SQL query (estimate: at least the project's 70 rows, one
    granule) is charged the cap, the next distinct one is refused naming hourly_cost; a cached answer costs nothing."""
    settings = api["settings"].model_copy(update={"query_cost_sql_rows_per_unit": 1, "query_limit_hourly_cost": 50,
                                                  "query_redis_prefix": f"{redis_prefix}sqlcost:"})
    app = create_app(settings, store=api["client"].app.state.store)
    with TestClient(app) as tc:
        def post(d: str) -> Any:
            return tc.post("/api/sql", auth=api["auth"], json={
                "query": "SELECT count() AS n FROM events WHERE toDate(event_time) = {d:Date}", "params": {"d": d}})

        assert post("2025-03-10").status_code == 200
        refused = post("2025-03-09")
        assert refused.status_code == 429 and refused.json()["limit"] == "hourly_cost", refused.text
        assert int(refused.headers["Retry-After"]) >= 1 and refused.json()["cost"] >= 50
        assert post("2025-03-10").json()["is_cached"] is True  # a hit is free


@pytest.mark.parametrize("path,params", [
    ("/api/2/funnels", {"e": [json.dumps({"event_type": "view"})] * 2, "start": "20250310", "end": "20250311"}),
    ("/api/2/retention", {"se": json.dumps({"event_type": "view"}), "re": json.dumps({"event_type": "view"}),
                          "start": "20250310", "end": "20250311"}),
    ("/api/2/users", {"start": "20250310", "end": "20250311"}),
    ("/api/2/sessions/length", {"start": "20250310", "end": "20250311"}),
    ("/api/2/sessions/peruser", {"start": "20250310", "end": "20250311"}),
    ("/api/2/lifecycle", {"start": "20250310", "end": "20250311"}),
    ("/api/2/stickiness", {"start": "20250310", "end": "20250316"}),
    ("/api/2/usersearch", {"user": "u3"}),
    ("/api/2/useractivity", {"user": "u3"}),
])
def test_every_typed_endpoint_is_cached(api: dict[str, Any], path: str, params: dict[str, Any]) -> None:
    if "user" in params:
        params = {"user": f"{api['project']}-{params['user']}"}
    first = api["client"].get(path, params=params, auth=api["auth"])
    assert first.status_code == 200, first.text
    assert first.json()["is_cached"] is False
    runs = CountingEngine.runs
    second = api["client"].get(path, params=params, auth=api["auth"])
    assert second.json()["is_cached"] is True and CountingEngine.runs == runs
    strip = ("is_cached", "incomplete", "provisional")
    assert {k: v for k, v in second.json().items() if k not in strip} == {
        k: v for k, v in first.json().items() if k not in strip}
