"""The landing sensor over commit records: late hours, cursor, no duplicate requests, catch-up schedule."""

from __future__ import annotations

import json
from datetime import timedelta

import dagster as dg

from orchestration.sensors.landing import catchup_requests, plan_ticks
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
    assert job.execute_in_process(partition_key=request.partition_key, instance=orch.instance, tags=request.tags).success


def test_late_batch_three_days_ago_is_requested_once_and_loaded_once(orch: Env) -> None:
    late_hour = NOW_HOUR - timedelta(days=3, hours=2)
    recent = NOW_HOUR - timedelta(hours=1)
    land_batch(orch.lake, [raw_row(f"on-time-{i}", late_hour + timedelta(minutes=i)) for i in range(3)]
               + [raw_row("recent", recent + timedelta(minutes=1))], kafka_partition=0, seq=0, start_offset=0)

    first = tick(orch, None)
    assert sorted(r.partition_key for r in first.run_requests) == [pkey(late_hour), pkey(recent)]
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

    # the daily catch-up requests the day's hours never loaded (quiet hours too), not the loaded one ...
    day = late_hour.date().isoformat()
    redo = {r.partition_key for r in catchup_requests(orch.instance, orch.defs.resources["lake"], day)}
    assert len(redo) == 23 and pkey(late_hour) not in redo
    # ... and an hour whose newest landed batch was reported after its last load
    land_batch(orch.lake, [raw_row("later", late_hour + timedelta(minutes=40))], kafka_partition=2, seq=1, start_offset=3)
    third = tick(orch, second.cursor)
    orch.instance.report_runless_asset_event(third.asset_events[0])
    redo = {r.partition_key for r in catchup_requests(orch.instance, orch.defs.resources["lake"], day)}
    assert pkey(late_hour) in redo and len(redo) == 24


def test_plan_ticks_skips_hours_outside_partitions_and_bounds_a_tick(orch: Env) -> None:
    future = NOW_HOUR + timedelta(days=2)
    record = land_batch(orch.lake, [raw_row("future", future), raw_row("now", NOW_HOUR)], kafka_partition=0, seq=0,
                        start_offset=0)
    partitions = orch.defs.resolve_assets_def("enriched_events").partitions_def
    touched, cursor, skipped = plan_ticks([record], {}, partitions)
    assert list(touched) == [pkey(NOW_HOUR)] and skipped == [pkey(future)] and cursor == {0: 0}
    touched, cursor, _ = plan_ticks([record, record], {0: 5}, None, limit=1)
    assert cursor == {0: 5} and len(touched[pkey(NOW_HOUR)]) == 1
