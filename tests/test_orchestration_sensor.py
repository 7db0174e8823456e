"""The landing sensor over commit records: late hours, cursor, no duplicate requests, catch-up schedule."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import dagster as dg
import pytest

from orchestration.sensors.landing import catchup_requests, empty_hours_to_fill, plan_ticks
from tests.orchestration_support import (  # noqa: F401 - orch_fixture provides the `orch` fixture
    NOW_HOUR,
    Env,
    land_batch,
    orch_fixture,
    pkey,
    raw_row,
)


def tick(orch: Env, cursor: str | None) -> dg.SensorResult:
    sensor = orch.defs.resolve_sensor_def("landing_commits_sensor")
    context = dg.build_sensor_context(instance=orch.instance, cursor=cursor, resources=orch.defs.resources)
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def run_requested(orch: Env, request: dg.RunRequest) -> None:
    job = orch.defs.resolve_job_def("hourly_events_job")
    assert job.execute_in_process(partition_key=request.partition_key, instance=orch.instance, tags=request.tags,
                                  run_config=request.run_config).success


def day_keys(hour: datetime) -> list[str]:
    start = hour.replace(hour=0)
    return [pkey(start + timedelta(hours=h)) for h in range(24)]


@pytest.mark.orch_settings(live_load=False)  # the current hour is a canonical run too (tests/test_live_hours.py: live)
def test_late_batch_three_days_ago_is_requested_once_and_loaded_once(orch: Env) -> None:
    late_hour = NOW_HOUR - timedelta(days=3, hours=2)
    recent = NOW_HOUR  # today: never complete, so only its landed hour runs
    land_batch(orch.lake, [raw_row(f"on-time-{i}", late_hour + timedelta(minutes=i)) for i in range(3)]
               + [raw_row("recent", recent + timedelta(minutes=1))], kafka_partition=0, seq=0, start_offset=0)

    first = tick(orch, None)
    # the 3-day-old day is complete: its 23 quiet hours join the landed one in one run of the whole day
    late_day = day_keys(late_hour)
    assert sorted((r.run_key, r.partition_key or "") for r in first.run_requests) == sorted([
        (f"{pkey(recent)}|p0s0", pkey(recent)), (f"{late_day[0]}..{late_day[-1]}|p0s0", "")])
    assert json.loads(first.cursor) == {"0": 0}
    raw_events = {e.partition: e.metadata["new_rows"].value for e in first.asset_events}
    assert raw_events == {pkey(late_hour): 3, pkey(recent): 1}
    for request in first.run_requests:
        run_requested(orch, request)
    assert orch.hour_count(late_hour) == 3

    # nothing new -> no requests
    assert tick(orch, first.cursor).run_requests == []

    # a late batch three days after the fact: two new events and a redelivered one
    late = [raw_row("late-1", late_hour + timedelta(minutes=30)), raw_row("late-2", late_hour + timedelta(minutes=31)),
            raw_row("on-time-0", late_hour)]
    land_batch(orch.lake, late, kafka_partition=2, seq=0, start_offset=0)
    second = tick(orch, first.cursor)
    assert [r.partition_key for r in second.run_requests] == [pkey(late_hour)]
    assert json.loads(second.cursor) == {"0": 0, "2": 0}
    # the run key names the commit records: a retried tick cannot launch the hour twice
    assert second.run_requests[0].run_key == f"{pkey(late_hour)}|p2s0"
    run_requested(orch, second.run_requests[0])
    assert tick(orch, second.cursor).run_requests == []

    db = orch.settings.clickhouse.database
    assert orch.hour_count(late_hour) == 5
    assert orch.rows(f"SELECT insert_id, count() FROM {db}.events WHERE insert_id LIKE 'late-%' OR insert_id = 'on-time-0' "
                     "GROUP BY insert_id ORDER BY insert_id") == [("late-1", 1), ("late-2", 1), ("on-time-0", 1)]

    # every hour of the complete day is loaded (quiet ones empty): the daily catch-up has nothing to redo ...
    day = late_hour.date().isoformat()
    assert set(late_day) <= orch.instance.get_materialized_partitions(dg.AssetKey("clickhouse_events"))
    assert catchup_requests(orch.instance, orch.defs.resources["lake"], day) == []
    # ... but an hour whose newest landed batch was reported after its last load
    land_batch(orch.lake, [raw_row("later", late_hour + timedelta(minutes=40))], kafka_partition=2, seq=1, start_offset=3)
    third = tick(orch, second.cursor)
    orch.instance.report_runless_asset_event(third.asset_events[0])
    redo = {r.partition_key for r in catchup_requests(orch.instance, orch.defs.resources["lake"], day)}
    assert redo == {pkey(late_hour)}


def test_plan_ticks_skips_hours_outside_partitions_and_bounds_a_tick(orch: Env) -> None:
    future = NOW_HOUR + timedelta(days=2)
    record = land_batch(orch.lake, [raw_row("future", future), raw_row("now", NOW_HOUR)], kafka_partition=0, seq=0,
                        start_offset=0)
    partitions = orch.defs.resolve_assets_def("enriched_events").partitions_def
    touched, cursor, skipped = plan_ticks([record], {}, partitions)
    assert list(touched) == [pkey(NOW_HOUR)] and skipped == [pkey(future)] and cursor == {0: 0}
    touched, cursor, _ = plan_ticks([record, record], {0: 5}, None, limit=1)
    assert cursor == {0: 5} and len(touched[pkey(NOW_HOUR)]) == 1


def test_empty_hours_to_fill_only_complete_days_with_data_and_not_busy() -> None:
    day = [f"2026-03-02-{h:02d}:00" for h in range(24)]
    now = datetime.fromisoformat("2026-03-03T00:04:00+00:00")
    window = timedelta(minutes=5)
    # the day ended 4 minutes ago, inside the 5-minute landing window: not complete yet
    assert empty_hours_to_fill([day[3]], set(), set(), now, window) == []
    later = now + timedelta(minutes=2)
    assert empty_hours_to_fill([day[3]], set(), set(), later, window) == day
    # loaded hours and hours of queued/running runs are left alone
    assert empty_hours_to_fill([day[3]], {day[0], day[3]}, {day[5]}, later, window) == [
        k for k in day if k not in (day[0], day[3], day[5])]
    # a day with no landed data is never filled
    assert empty_hours_to_fill([], set(), set(), later, window) == []


def test_quiet_past_day_is_one_run_of_24_hours_and_then_settles(orch: Env) -> None:
    day = (NOW_HOUR - timedelta(days=2)).replace(hour=0)
    quiet = day - timedelta(days=1)  # no events at all: nothing requested for it
    busy_hours = [day + timedelta(hours=h) for h in (1, 7, 19)]
    land_batch(orch.lake, [raw_row(f"q-{h:%H}", h + timedelta(minutes=5)) for h in busy_hours],
               kafka_partition=0, seq=0, start_offset=0)
    first = tick(orch, None)
    keys = day_keys(day)
    assert [(r.partition_key, r.run_key, r.tags["eventpipe/trigger"]) for r in first.run_requests] == [
        (None, f"{keys[0]}..{keys[-1]}|p0s0", "landing")]
    # 3 hours with data: enriched in-process, not sent to Spark because 21 quiet hours made the range long
    assert first.run_requests[0].run_config == {"ops": {"enriched_events": {"config": {"engine": "in_process"}}}}
    for event in first.asset_events:  # as the daemon records them
        orch.instance.report_runless_asset_event(event)
    run_requested(orch, first.run_requests[0])
    loaded = orch.instance.get_materialized_partitions(dg.AssetKey("clickhouse_events"))
    assert set(keys) <= loaded and not set(day_keys(quiet)) & loaded
    assert [orch.hour_count(h) for h in busy_hours] == [1, 1, 1]
    # settled: nothing new landed, every hour of the day is loaded
    assert tick(orch, first.cursor).run_requests == []

    # an hour loaded by hand on a complete day whose other hours never were: the sensor fills the rest alone
    other = day + timedelta(days=1)
    orch.instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey("raw_events"), partition=pkey(other)))
    refill = tick(orch, first.cursor)
    other_keys = day_keys(other)
    if other + timedelta(days=1, seconds=orch.settings.landing_window_seconds) <= datetime.now(other.tzinfo):
        assert [(r.run_key, r.tags["eventpipe/trigger"]) for r in refill.run_requests] == [
            (f"fill|{other_keys[0]}..{other_keys[-1]}", "fill")]
