"""In-process Dagster runs against the real chserver and a temp lake.

Landed data is written exactly as the landing consumer writes it (Parquet + commit records,
eventpipe_core.lake_catalog); the hourly job runs enriched_events -> blocking GX check ->
clickhouse_events; ClickHouse is queried over HTTP like any client would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import dagster as dg
import pytest

from eventpipe_core.lake_catalog import hour_key
from eventpipe_core.lake_store import LakeStore, open_lake
from eventpipe_core.settings import Settings, load_settings
from orchestration.assemble import build_definitions
from orchestration.lake.io import enriched_key, hour_parts
from tests.chserver_support import ChServer
from tests.orchestration_support import GOOGLEBOT_UA, LONDON_IP, land_batch, raw_row, write_geoip_db

NOW_HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Env:
    settings: Settings
    defs: dg.Definitions
    lake: LakeStore
    client: object
    instance: dg.DagsterInstance

    def run_hour(self, hour: datetime, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def("hourly_events_job")
        return job.execute_in_process(partition_key=pkey(hour), instance=self.instance, raise_on_error=raise_on_error)

    def rows(self, sql: str) -> list[tuple]:
        return self.client.query(sql).result_rows  # type: ignore[attr-defined]

    def hour_count(self, hour: datetime) -> int:
        db = self.settings.clickhouse.database
        return self.rows(f"SELECT count() FROM {db}.events WHERE event_hour = toDateTime({int(hour.timestamp())}, 'UTC')")[0][0]


def pkey(hour: datetime) -> str:
    return hour_key(*hour_parts(hour))


@pytest.fixture
def env(tmp_path: Path, chserver: ChServer) -> Iterator[Env]:
    database = f"t_{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        eventpipe_home=tmp_path, lake_url=(tmp_path / "lake").as_uri(),
        clickhouse_url=chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{database}",
        geoip_db_path=write_geoip_db(tmp_path / "city.mmdb"), bot_max_events_per_minute=5,
    )
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password="")
    with dg.DagsterInstance.ephemeral() as instance:
        yield Env(settings, build_definitions(settings, include_dbt=False), open_lake(settings), client, instance)
    client.command(f"DROP DATABASE IF EXISTS {database}")


def test_hours_enriched_loaded_and_idempotent(env: Env) -> None:
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
    land_batch(env.lake, batch, kafka_partition=0, seq=0, start_offset=0)
    # the same event delivered twice (producer retry) through another Kafka partition
    land_batch(env.lake, [raw_row("anon-1", h0 + timedelta(minutes=50), device_id="dev-alice")],
               kafka_partition=1, seq=0, start_offset=0)

    r0 = env.run_hour(h0)
    assert r0.success
    assert {e.check_name: e.passed for e in r0.get_asset_check_evaluations()} == {
        "gx_enriched_hour": True, "tracking_plan_violations": True}
    assert env.run_hour(h1).success
    assert env.hour_count(h0) == 9 and env.hour_count(h1) == 2

    db = env.settings.clickhouse.database
    rows = {r[0]: r[1:] for r in env.rows(
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
    assert env.rows(f"SELECT device_id, user_id FROM {db}.identity_map FINAL") == [("dev-alice", "alice")]

    # re-materialize h0: the identity map now stitches its anonymous events; counts do not change
    assert env.run_hour(h0).success
    assert env.hour_count(h0) == 9 and env.rows(f"SELECT count() FROM {db}.events")[0][0] == 11
    assert env.rows(f"SELECT resolved_user_id, actor_id FROM {db}.events WHERE insert_id = 'anon-1'") == [("alice", "alice")]
    # same input again -> byte-identical enriched file, same ClickHouse hour
    first = env.lake.get(enriched_key(h0))
    assert env.run_hour(h0).success
    assert env.lake.get(enriched_key(h0)) == first
    assert env.hour_count(h0) == 9
    assert env.rows(f"SELECT count() FROM system.tables WHERE database = '{db}' AND name LIKE 'events__stage_%'") == [(0,)]


def test_failing_gx_check_blocks_the_clickhouse_load(env: Env) -> None:
    hour = NOW_HOUR - timedelta(hours=30)
    good = [raw_row("ok", hour + timedelta(minutes=1))]
    # a corrupt landing: an event two hours later filed under this hour
    land_batch(env.lake, [*good, raw_row("misfiled", hour + timedelta(hours=2))], kafka_partition=0, seq=0,
               start_offset=0, force_hour=hour)
    result = env.run_hour(hour, raise_on_error=False)
    assert not result.success  # a failed blocking check fails the run (red in the UI)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["gx_enriched_hour"].passed is False
    failed = checks["gx_enriched_hour"].metadata["failed_expectations"].value
    assert failed == {"expect_column_values_to_be_between(_event_time_ms)": 1}
    materialized = {m.asset_key.to_user_string() for m in result.asset_materializations_for_node("enriched_events")}
    assert materialized == {"enriched_events"}
    assert result.asset_materializations_for_node("clickhouse_events") == []
    assert env.hour_count(hour) == 0
    assert env.instance.fetch_materializations(dg.AssetKey("clickhouse_events"), limit=10).records == []
