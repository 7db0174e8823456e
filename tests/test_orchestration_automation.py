"""Declarative automation: late upstream changes re-materialize old hours once; a failed blocking check holds the load."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from tests.orchestration_support import (  # noqa: F401 - orch_fixture provides the `orch` fixture
    NOW_HOUR,
    Env,
    land_batch,
    orch_fixture,
    pkey,
    raw_row,
)

CLICKHOUSE = dg.AssetKey("clickhouse_events")
ENRICHED = dg.AssetKey("enriched_events")


def test_late_upstream_changes_rematerialize_old_hours_once(orch: Env) -> None:
    late = NOW_HOUR - timedelta(days=3, hours=5)
    bad = NOW_HOUR - timedelta(days=2)
    too_old = NOW_HOUR - timedelta(days=orch.settings.late_data_lookback_days + 2)
    land_batch(orch.lake, [raw_row("late", late), raw_row("old", too_old)], kafka_partition=0, seq=0, start_offset=0)
    land_batch(orch.lake, [raw_row("misfiled", bad + timedelta(hours=3))], kafka_partition=1, seq=0, start_offset=0,
               force_hour=bad)
    first = dg.evaluate_automation_conditions(defs=orch.defs, instance=orch.instance)
    assert first.total_requested == 0  # nothing changed yet: no mass request of history

    # enriched_events (with its checks) re-materialized for three hours, e.g. by hand from the UI
    job = orch.defs.resolve_job_def("hourly_events_job")
    for hour in (late, bad, too_old):
        job.execute_in_process(partition_key=pkey(hour), instance=orch.instance, asset_selection=[ENRICHED],
                               raise_on_error=False)
    second = dg.evaluate_automation_conditions(defs=orch.defs, instance=orch.instance, cursor=first.cursor)
    # the 3-day-old hour is loaded; the hour whose GX check failed is held; beyond the lookback is left alone
    assert second.get_requested_partitions(CLICKHOUSE) == {pkey(late)}

    third = dg.evaluate_automation_conditions(defs=orch.defs, instance=orch.instance, cursor=second.cursor)
    assert third.total_requested == 0  # handled: no duplicate request
