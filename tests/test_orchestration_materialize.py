"""In-process Dagster runs against the real chserver and a temp lake.

Landed data is written exactly as the landing consumer writes it (Parquet + commit records,
eventpipe_core.lake_catalog); the hourly job runs enriched_events -> blocking GX check ->
clickhouse_events; ClickHouse is queried over HTTP like any client would.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from enrichment.lake_io import enriched_key
from tests.orchestration_support import (  # noqa: F401 - orch_fixture provides the `orch` fixture
    GOOGLEBOT_UA,
    LONDON_IP,
    NOW_HOUR,
    Env,
    land_batch,
    orch_fixture,
    pkey,
    raw_row,
)


def test_hours_enriched_loaded_and_idempotent(orch: Env) -> None:
    h0 = NOW_HOUR - timedelta(hours=6)
    h1 = h0 + timedelta(hours=1)
    batch = [
        raw_row("anon-1", h0 + timedelta(minutes=50), device_id="dev-alice", client_ip=LONDON_IP),
        raw_row("anon-2", h0 + timedelta(minutes=55), device_id="dev-alice"),
        raw_row("login", h1 + timedelta(minutes=10), device_id="dev-alice", user_id="alice"),
        raw_row("anon-3", h1 + timedelta(minutes=20), device_id="dev-alice"),
        raw_row("crawler", h0 + timedelta(minutes=5), device_id="dev-crawler", user_agent=GOOGLEBOT_UA),
        *[raw_row(f"fast-{i}", h0 + timedelta(minutes=7, seconds=i), device_id="dev-fast") for i in range(6)],
    ]
    land_batch(orch.lake, batch, kafka_partition=0, seq=0, start_offset=0)
    # the same event delivered twice (producer retry) through another Kafka partition
    land_batch(orch.lake, [raw_row("anon-1", h0 + timedelta(minutes=50), device_id="dev-alice")],
               kafka_partition=1, seq=0, start_offset=0)

    r0 = orch.run_hour(h0)
    assert r0.success
    assert {e.check_name: e.passed for e in r0.get_asset_check_evaluations()} == {
        "gx_enriched_hour": True, "tracking_plan_violations": True}
    assert orch.run_hour(h1).success
    assert orch.hour_count(h0) == 9 and orch.hour_count(h1) == 2

    db = orch.settings.clickhouse.database
    rows = {r[0]: r[1:] for r in orch.rows(
        f"SELECT insert_id, session_id, resolved_user_id, actor_id, is_bot, bot_reason, country, city, ua_browser "
        f"FROM {db}.events ORDER BY insert_id")}
    session = int((h0 + timedelta(minutes=50)).timestamp() * 1000)
    # session started at h0:50 continues across the hour boundary into h1 (gap 20 min); anon-3 too
    assert [rows[i][0] for i in ("anon-1", "anon-2", "login", "anon-3")] == [session] * 4
    # identity: h1's anonymous event after the login is stitched; h0's were enriched before the login was known
    assert rows["anon-3"][1:3] == ("alice", "alice")
    assert rows["anon-1"][1:3] == (None, "dev-alice")
    assert rows["crawler"][3:5] == (1, "ua:spider")
    assert {rows[f"fast-{i}"][3:5] for i in range(6)} == {(1, "rate:6/min")}
    assert rows["anon-2"][3] == 0
    assert rows["anon-1"][5:8] == ("United Kingdom", "London", "Chrome")
    assert orch.rows(f"SELECT device_id, user_id FROM {db}.identity_map FINAL") == [("dev-alice", "alice")]

    # re-materialize h0: the identity map now stitches its anonymous events; counts do not change
    assert orch.run_hour(h0).success
    assert orch.hour_count(h0) == 9 and orch.rows(f"SELECT count() FROM {db}.events")[0][0] == 11
    assert orch.rows(f"SELECT resolved_user_id, actor_id FROM {db}.events WHERE insert_id = 'anon-1'") == [("alice", "alice")]
    # same input again -> byte-identical enriched file, same ClickHouse hour
    first = orch.lake.get(enriched_key(h0))
    assert orch.run_hour(h0).success
    assert orch.lake.get(enriched_key(h0)) == first
    assert orch.hour_count(h0) == 9
    assert orch.rows(f"SELECT count() FROM system.tables WHERE database = '{db}' AND name LIKE 'events__stage_%'") == [(0,)]


def test_failing_gx_check_blocks_the_clickhouse_load(orch: Env) -> None:
    hour = NOW_HOUR - timedelta(hours=30)
    good = [raw_row("ok", hour + timedelta(minutes=1))]
    # a corrupt landing: an event two hours later filed under this hour
    land_batch(orch.lake, [*good, raw_row("misfiled", hour + timedelta(hours=2))], kafka_partition=0, seq=0,
               start_offset=0, force_hour=hour)
    result = orch.run_hour(hour, raise_on_error=False)
    assert not result.success  # a failed blocking check fails the run (red in the UI)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["gx_enriched_hour"].passed is False
    failed = checks["gx_enriched_hour"].metadata["failed_expectations"].value
    assert failed == {"expect_column_values_to_be_between(_event_time_ms)": 1}
    materialized = {m.asset_key.to_user_string() for m in result.asset_materializations_for_node("enriched_events")}
    assert materialized == {"enriched_events"}
    assert result.asset_materializations_for_node("clickhouse_events") == []
    assert orch.hour_count(hour) == 0
    assert orch.instance.fetch_materializations(dg.AssetKey("clickhouse_events"), limit=10).records == []


def test_backfill_range_runs_hours_in_order_in_one_run(orch: Env) -> None:
    """A multi-hour run (what BackfillPolicy.multi_run launches) equals hour-by-hour runs."""
    start = NOW_HOUR - timedelta(days=2)
    hours = [start + timedelta(hours=i) for i in range(3)]
    rows = [raw_row(f"e{i}", start + timedelta(minutes=25 * i), device_id="dev-walker") for i in range(7)]
    land_batch(orch.lake, rows, kafka_partition=0, seq=0, start_offset=0)
    job = orch.defs.resolve_job_def("hourly_events_job")
    tags = {"dagster/asset_partition_range_start": pkey(hours[0]), "dagster/asset_partition_range_end": pkey(hours[-1])}
    result = job.execute_in_process(tags=tags, instance=orch.instance)
    assert result.success
    assert [orch.hour_count(h) for h in hours] == [3, 2, 2]
    # one session spanning three hours: every event 25 minutes after the previous one
    db = orch.settings.clickhouse.database
    assert orch.rows(f"SELECT uniqExact(session_id), min(session_id) FROM {db}.events") == [(1, int(start.timestamp() * 1000))]
    ranged = [orch.lake.get(enriched_key(h)) for h in hours]
    for h in hours:  # the same hours one by one give the same files
        assert orch.run_hour(h).success
    assert [orch.lake.get(enriched_key(h)) for h in hours] == ranged
    assert [orch.hour_count(h) for h in hours] == [3, 2, 2]
