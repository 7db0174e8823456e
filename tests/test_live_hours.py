"""Live hours (issue 17): the landing sensor appends open hours' increments; the close run swaps in the canonical rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from enrichment.lake_io import read_enriched_table
from eventpipe_core.lake_catalog import CommitRecord, LandedObject
from orchestration.assemble import build_definitions
from orchestration.sensors import live
from orchestration.sensors.landing import coalesce, is_open_hour, plan_ticks
from tests.orchestration_support import (  # noqa: F401 - orch_fixture provides the `orch` fixture
    NOW_HOUR,
    Env,
    land_batch,
    orch_fixture,
    pkey,
    raw_row,
)

HOUR = NOW_HOUR - timedelta(hours=2)  # kept open by LIVE_HOUR_CLOSE_SECONDS below (no wait for the wall clock)
OPEN = {"live_hour_close_seconds": 4 * 3600, "landing_window_seconds": 10**9}


def tick(orch: Env, cursor: str | None, defs: dg.Definitions | None = None) -> dg.SensorResult:
    defs = defs or orch.defs
    context = dg.build_sensor_context(instance=orch.instance, cursor=cursor, resources=defs.resources)
    result = defs.resolve_sensor_def("landing_commits_sensor")(context)
    assert isinstance(result, dg.SensorResult)
    for event in result.asset_events:  # as the daemon records them
        orch.instance.report_runless_asset_event(event)
    return result


def ids_in_hour(orch: Env, hour: datetime) -> list[tuple[str, int]]:
    db = orch.settings.clickhouse.database
    return orch.rows(f"SELECT insert_id, count() FROM {db}.events WHERE event_hour = toDateTime({int(hour.timestamp())}, "
                     "'UTC') GROUP BY insert_id ORDER BY insert_id")


def test_coalesce_and_open_hours_are_pure() -> None:
    keys = ["2026-03-02-10:00", "2026-03-02-11:00", "2026-03-02-12:00"]
    # a run that has not read the lake yet covers its hours; a started one does not (one more is queued)
    assert coalesce(keys, {"2026-03-02-11:00"}) == [keys[0], keys[2]]
    assert coalesce(keys + keys, set()) == keys
    end = datetime(2026, 3, 2, 11, tzinfo=UTC)
    close = timedelta(minutes=5)
    assert is_open_hour(keys[0], end + timedelta(minutes=4), close)
    assert not is_open_hour(keys[0], end + timedelta(minutes=5), close)
    assert is_open_hour(keys[0], end - timedelta(minutes=30), timedelta(0))


def test_plan_ticks_bounds_live_rows_per_tick() -> None:

    def record(seq: int, n: int, hour: datetime) -> CommitRecord:
        obj = LandedObject(f"k{seq}", hour.strftime("%Y-%m-%d"), hour.strftime("%H"), n, 0, 0)
        return CommitRecord("events", 0, seq, seq, seq + 1, (obj,), 0, "t")

    old = HOUR - timedelta(days=3)
    records = [record(0, 4, HOUR), record(1, 4, old), record(2, 4, HOUR), record(3, 4, HOUR)]
    live_key = pkey(HOUR)
    touched, cursor, _ = plan_ticks(records, {}, None, max_live_rows=8, is_live=lambda k: k == live_key)
    # rows of closed hours do not count; the record that would pass the bound waits for the next tick
    assert cursor == {0: 2} and [r.seq for r in touched[live_key]] == [0, 2] and [r.seq for r in touched[pkey(old)]] == [1]
    touched, cursor, _ = plan_ticks(records, {}, None, max_live_rows=1, is_live=lambda k: k == live_key)
    assert cursor == {0: 1}  # at least one record, then the bound


@pytest.mark.orch_settings(**OPEN)
def test_live_increments_then_close_run_gives_exactly_the_canonical_rows(orch: Env) -> None:
    key = pkey(HOUR)
    db = orch.settings.clickhouse.database
    a = [raw_row(f"a{i}", HOUR + timedelta(minutes=i), device_id=f"dev-{i % 3}") for i in range(6)]
    land_batch(orch.lake, a, kafka_partition=0, seq=0, start_offset=0)
    first = tick(orch, None)
    assert first.run_requests == []  # appended, not a run
    assert json.loads(first.cursor) == {"0": 0, "live": [key]}
    assert {e.partition: e.metadata["new_rows"].value for e in first.asset_events} == {key: 6}
    assert ids_in_hour(orch, HOUR) == [(f"a{i}", 1) for i in range(6)]

    # a second batch on another partition: new rows plus a redelivered one, and a user logging in on dev-1
    b = [raw_row("b0", HOUR + timedelta(minutes=20), device_id="dev-1", user_id="alice"),
         raw_row("a2", HOUR + timedelta(minutes=2), device_id="dev-2"),
         raw_row("b1", HOUR + timedelta(minutes=40), device_id="dev-0")]
    land_batch(orch.lake, b, kafka_partition=1, seq=0, start_offset=0)
    second = tick(orch, first.cursor)
    assert second.run_requests == []
    # the tick retried after a lost cursor update re-reads batch b: nothing is inserted twice
    retried = tick(orch, first.cursor)
    assert retried.run_requests == [] and retried.cursor == second.cursor
    # a restarted code server (no cached state): the state is rebuilt from the table
    live.forget_all()
    c = [raw_row("c0", HOUR + timedelta(minutes=52), device_id="dev-1"), raw_row("b1", HOUR + timedelta(minutes=40)),
         raw_row("c1", HOUR + timedelta(minutes=45), device_id="dev-0")]
    land_batch(orch.lake, c, kafka_partition=0, seq=1, start_offset=6)
    third = tick(orch, second.cursor)
    assert third.run_requests == []
    expected = sorted({r["insert_id"] for r in a + b + c})
    live_ids = ids_in_hour(orch, HOUR)
    assert live_ids == [(i, 1) for i in expected]  # exact dedup: one row per insert_id
    # sessions across increments (the carry, rebuilt from the table for c0): dev-1's b0 at :20 continues a1 (:01)
    # and a4 (:04); c0 at :52 is > 30 min after b0 -> a new session; c1 (:45) continues dev-0's b1 (:40)
    sessions = dict(orch.rows(f"SELECT insert_id, session_id FROM {db}.events WHERE insert_id IN ('a1', 'b0', 'c0', 'b1', "
                              "'c1')"))
    assert sessions["b0"] == sessions["a1"] and sessions["c0"] != sessions["a1"] and sessions["c1"] == sessions["b1"]

    # the hour closes: no more appends, one canonical run named after it
    closed = build_definitions(orch.settings.model_copy(update={"live_hour_close_seconds": 0}), include_dbt=False)
    land_batch(orch.lake, [raw_row("d0", HOUR + timedelta(minutes=55))], kafka_partition=1, seq=1, start_offset=3)
    fourth = tick(orch, third.cursor, closed)
    assert [(r.run_key, r.partition_key) for r in fourth.run_requests] == [(f"{key}|p1s1", key)]  # late data: canonical
    assert "live" not in json.loads(fourth.cursor)
    assert ids_in_hour(orch, HOUR) == live_ids  # d0 was not appended
    job = closed.resolve_job_def("hourly_events_job")
    request = fourth.run_requests[0]
    assert job.execute_in_process(partition_key=key, instance=orch.instance, tags=request.tags).success
    canonical = read_enriched_table(orch.lake, HOUR)
    assert canonical is not None
    cols = "insert_id, session_id, resolved_user_id, is_bot"
    table = orch.rows(f"SELECT {cols} FROM {db}.events WHERE event_hour = toDateTime({int(HOUR.timestamp())}, 'UTC') "
                      "ORDER BY insert_id")
    want = sorted(zip(*(canonical.column(c).to_pylist() for c in ("insert_id", "session_id", "resolved_user_id",
                                                                   "is_bot")), strict=True))
    assert table == want and len(table) == len(expected) + 1  # the canonical bytes, no doubles
    # identity learned later: the close run stitches dev-1's earlier anonymous events to alice
    assert dict((r[0], r[2]) for r in table)["a1"] == "alice"
    assert tick(orch, fourth.cursor, closed).run_requests == []


@pytest.mark.orch_settings(**OPEN)
def test_closing_without_late_data_requests_the_close_run_once(orch: Env) -> None:
    key = pkey(HOUR)
    land_batch(orch.lake, [raw_row("x0", HOUR + timedelta(minutes=1))], kafka_partition=0, seq=0, start_offset=0)
    first = tick(orch, None)
    assert first.run_requests == [] and orch.hour_count(HOUR) == 1
    closed = build_definitions(orch.settings.model_copy(update={"live_hour_close_seconds": 0}), include_dbt=False)
    second = tick(orch, first.cursor, closed)
    assert [(r.run_key, r.partition_key, r.tags["eventpipe/trigger"]) for r in second.run_requests] == [
        (f"close|{key}", key, "close")]
    assert tick(orch, second.cursor, closed).run_requests == []
    # LIVE_LOAD turned off with hours still live: they close at once (their provisional rows get replaced)
    off = build_definitions(orch.settings.model_copy(update={"live_load": False}), include_dbt=False)
    assert [r.run_key for r in tick(orch, first.cursor, off).run_requests] == [f"close|{key}"]


@pytest.mark.orch_settings(**OPEN)
def test_no_append_while_a_canonical_run_of_the_hour_is_in_flight(orch: Env) -> None:
    key = pkey(HOUR)
    land_batch(orch.lake, [raw_row("y0", HOUR + timedelta(minutes=1))], kafka_partition=0, seq=0, start_offset=0)
    first = tick(orch, None)
    assert orch.hour_count(HOUR) == 1
    job = orch.defs.resolve_job_def("hourly_events_job")
    queued = orch.instance.create_run_for_job(job, tags={"dagster/partition": key}, status=dg.DagsterRunStatus.NOT_STARTED)
    land_batch(orch.lake, [raw_row("y1", HOUR + timedelta(minutes=2))], kafka_partition=0, seq=1, start_offset=1)
    second = tick(orch, first.cursor)
    # the queued run has not read the lake: it will load y1 — no append, and no second run
    assert second.run_requests == [] and orch.hour_count(HOUR) == 1
    orch.instance.report_run_canceled(queued)
    # the hour loaded canonically meanwhile (UI materialization): the state is rebuilt from the table first
    assert orch.run_hour(HOUR).success and orch.hour_count(HOUR) == 2
    land_batch(orch.lake, [raw_row("y2", HOUR + timedelta(minutes=3)), raw_row("y1", HOUR + timedelta(minutes=2))],
               kafka_partition=0, seq=2, start_offset=2)
    third = tick(orch, second.cursor)
    assert third.run_requests == []
    assert ids_in_hour(orch, HOUR) == [("y0", 1), ("y1", 1), ("y2", 1)]
    # a canonical load between two ticks (no tick saw it in flight): its materialization tells the state is stale
    land_batch(orch.lake, [raw_row("y3", HOUR + timedelta(minutes=4))], kafka_partition=1, seq=0, start_offset=0)
    assert orch.run_hour(HOUR).success
    land_batch(orch.lake, [raw_row("y4", HOUR + timedelta(minutes=5))], kafka_partition=0, seq=3, start_offset=4)
    tick(orch, third.cursor)
    assert ids_in_hour(orch, HOUR) == [(f"y{i}", 1) for i in range(5)]


@pytest.mark.orch_settings(**OPEN)
def test_a_started_run_justifies_one_more_queued_run_and_no_append(orch: Env) -> None:
    key = pkey(HOUR)
    job = orch.defs.resolve_job_def("hourly_events_job")
    orch.instance.create_run_for_job(job, tags={"dagster/partition": key}, status=dg.DagsterRunStatus.STARTED)
    land_batch(orch.lake, [raw_row("z0", HOUR + timedelta(minutes=1))], kafka_partition=0, seq=0, start_offset=0)
    first = tick(orch, None)
    # the started run may have read the lake before z0 landed: one more run, and nothing appended meanwhile
    assert [r.run_key for r in first.run_requests] == [f"{key}|p0s0"] and "live" not in json.loads(first.cursor)
    orch.instance.create_run_for_job(job, tags={"dagster/partition": key}, status=dg.DagsterRunStatus.NOT_STARTED)
    land_batch(orch.lake, [raw_row("z1", HOUR + timedelta(minutes=2))], kafka_partition=0, seq=1, start_offset=1)
    second = tick(orch, first.cursor)
    assert second.run_requests == [] and "live" not in json.loads(second.cursor)  # the waiting run will see z1


@pytest.mark.orch_settings(**OPEN)
def test_live_copy_of_an_id_in_another_hour_is_listed_for_the_readers(orch: Env) -> None:
    """A live append lists cross-hour copies in event_copies (as a canonical load does): readers count them once."""
    db = orch.settings.clickhouse.database
    earlier = HOUR - timedelta(hours=1)
    land_batch(orch.lake, [raw_row("x0", earlier + timedelta(minutes=5), device_id="dev-x"),
                           raw_row("y0", earlier + timedelta(minutes=6))], kafka_partition=0, seq=0, start_offset=0)
    first = tick(orch, None)
    assert first.run_requests == [] and orch.rows(f"SELECT insert_id FROM {db}.event_copies WHERE project = 'demo'") == []
    # the client re-sends x0 with another event time: a row in another (open) hour
    land_batch(orch.lake, [raw_row("x0", HOUR + timedelta(minutes=7), device_id="dev-x")],
               kafka_partition=0, seq=1, start_offset=2)
    second = tick(orch, first.cursor)
    assert second.run_requests == []
    assert orch.rows(f"SELECT insert_id, count() FROM {db}.events GROUP BY insert_id ORDER BY insert_id") == [
        ("x0", 2), ("y0", 1)]
    assert orch.rows(f"SELECT DISTINCT insert_id FROM {db}.event_copies WHERE project = 'demo'") == [("x0",)]
