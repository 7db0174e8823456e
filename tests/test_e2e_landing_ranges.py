"""The landing sensor asks for one run per range of consecutive hours (what keeps `eventpipe demo` fast),
and such a run loads every hour of its range."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from orchestration.sensors.landing import hour_ranges
from tests.orchestration_support import (  # noqa: F401 - orch_fixture provides the `orch` fixture
    NOW_HOUR,
    Env,
    land_batch,
    orch_fixture,
    pkey,
    raw_row,
)

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def test_hour_ranges_split_gaps_and_cap_length() -> None:
    keys = ["2026-01-01-00:00", "2026-01-01-01:00", "2026-01-01-02:00", "2026-01-01-05:00", "2025-12-31-23:00"]
    assert hour_ranges(keys, 24) == [
        ["2025-12-31-23:00", "2026-01-01-00:00", "2026-01-01-01:00", "2026-01-01-02:00"], ["2026-01-01-05:00"]]
    assert hour_ranges(keys, 2) == [
        ["2025-12-31-23:00", "2026-01-01-00:00"], ["2026-01-01-01:00", "2026-01-01-02:00"], ["2026-01-01-05:00"]]
    assert hour_ranges([], 24) == []


@pytest.mark.orch_settings(landing_window_seconds=10**9)  # no day is complete: only the landed hours run
def test_consecutive_hours_are_one_run_that_loads_each_hour(orch: Env) -> None:
    start = NOW_HOUR - timedelta(days=2)
    hours = [start + timedelta(hours=h) for h in range(3)]
    lone = start + timedelta(hours=10)
    rows = [raw_row(f"r-{h}-{i}", hour + timedelta(minutes=i)) for h, hour in enumerate(hours) for i in range(h + 1)]
    land_batch(orch.lake, rows + [raw_row("lone", lone)], kafka_partition=0, seq=0, start_offset=0)
    land_batch(orch.lake, [raw_row("r-0-9", hours[0] + timedelta(minutes=9))], kafka_partition=1, seq=0, start_offset=0)

    sensor = orch.defs.resolve_sensor_def("landing_commits_sensor")
    result = sensor(dg.build_sensor_context(instance=orch.instance, cursor=None, resources=orch.defs.resources))
    assert isinstance(result, dg.SensorResult)
    ranged = [r for r in result.run_requests if r.partition_key is None]
    single = [r for r in result.run_requests if r.partition_key is not None]
    assert [r.partition_key for r in single] == [pkey(lone)] and single[0].run_key == f"{pkey(lone)}|p0s0"
    assert len(ranged) == 1
    request = ranged[0]
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == (pkey(hours[0]), pkey(hours[-1]))
    assert request.run_key == f"{pkey(hours[0])}..{pkey(hours[-1])}|p0s0+p1s0"
    # raw_events is still reported per hour (the UI shows which hours got data)
    assert {e.partition: e.metadata["new_rows"].value for e in result.asset_events} == {
        pkey(hours[0]): 2, pkey(hours[1]): 2, pkey(hours[2]): 3, pkey(lone): 1}

    job = orch.defs.resolve_job_def("hourly_events_job")
    assert job.execute_in_process(instance=orch.instance, tags=request.tags, run_config=request.run_config).success
    assert [orch.hour_count(h) for h in hours] == [2, 2, 3]
    assert orch.hour_count(lone) == 0  # not part of the range
    materialized = orch.instance.get_materialized_partitions(dg.AssetKey("clickhouse_events"))
    assert {pkey(h) for h in hours} <= materialized and pkey(lone) not in materialized
