"""Spark backfill of the enrichment (spark_jobs): same lake as the in-process asset, launched through Pipes.

Real Spark (``spark-submit``, ``local[*]``), real Dagster, the real chserver. Each Spark launch costs
~10-30 s on the shared 2-core machine, so there are exactly two.
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import dagster as dg
import pyarrow.parquet as pq

from enrichment.lake_io import enriched_key
from eventpipe_core.lake_store import open_lake
from eventpipe_core.settings import load_settings
from orchestration.assemble import build_definitions
from spark_jobs.launch import choose_engine
from tests.chserver_support import ChServer
from tests.orchestration_support import GOOGLEBOT_UA, LONDON_IP, NOW_HOUR, Env, land_batch, pkey, raw_row, write_geoip_db

H0 = NOW_HOUR - timedelta(days=3)
HOURS = [H0 + timedelta(hours=i) for i in range(4)]  # the last one stays empty
RANGE_TAGS = {"dagster/asset_partition_range_start": pkey(HOURS[0]), "dagster/asset_partition_range_end": pkey(HOURS[-1])}
COMMIT_1 = H0 + timedelta(hours=3)
COMMIT_2 = H0 + timedelta(hours=5)  # late batch


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@contextlib.contextmanager
def make_env(home: Path, chserver: ChServer, **overrides: Any) -> Iterator[Env]:
    """Like the ``orch`` fixture (own lake, own database, ephemeral instance), several per test."""
    database = f"t_{uuid.uuid4().hex[:10]}"
    home.mkdir(parents=True)
    settings = load_settings(
        eventpipe_home=home, lake_url=(home / "lake").as_uri(),
        clickhouse_url=chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{database}",
        geoip_db_path=write_geoip_db(home / "city.mmdb"), bot_max_events_per_minute=5, **overrides,
    )
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password)
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            yield Env(settings, build_definitions(settings, include_dbt=False), open_lake(settings), client, instance)
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database}")


def land_scenario(env: Env) -> None:
    """Duplicates (one with another device), a late batch, bots, sessions crossing hours, identities, geo."""
    before = H0 - timedelta(hours=1)
    walker = [raw_row(f"walk-{i}", H0 + timedelta(minutes=25 * i), device_id="dev-walker") for i in range(8)]
    batch1 = [
        raw_row("pre", before + timedelta(minutes=50), device_id="dev-carry"),  # session enters the range from before
        raw_row("carry-1", H0 + timedelta(minutes=10), device_id="dev-carry", client_ip=LONDON_IP),
        *walker,
        raw_row("anon-1", H0 + timedelta(minutes=20), device_id="dev-login"),
        raw_row("login", H0 + timedelta(hours=1, minutes=5), device_id="dev-login", user_id="alice"),
        raw_row("anon-2", H0 + timedelta(hours=2, minutes=5), device_id="dev-login"),  # stitched by the learned pair
        raw_row("known-1", H0 + timedelta(minutes=30), device_id="dev-known"),  # bob from ClickHouse
        raw_row("known-2", H0 + timedelta(hours=1, minutes=30), device_id="dev-known", user_id="carol"),
        raw_row("known-3", H0 + timedelta(hours=2, minutes=30), device_id="dev-known"),  # still bob (earlier)
        raw_row("rewrite-1", H0 + timedelta(minutes=40), device_id="dev-rewrite", user_id="amy"),
        raw_row("rewrite-2", H0 + timedelta(hours=1, minutes=40), device_id="dev-rewrite"),  # amy beats a later zed
        raw_row("server-1", H0 + timedelta(minutes=45), device_id=None, user_id="srv-user"),
        raw_row("server-2", H0 + timedelta(hours=1, minutes=5), device_id=None, user_id="srv-user"),
        raw_row("crawler", H0 + timedelta(minutes=15), device_id="dev-crawler", user_agent=GOOGLEBOT_UA),
        *[raw_row(f"fast-{i}", H0 + timedelta(hours=1, minutes=3, seconds=i), device_id="dev-fast") for i in range(6)],
        raw_row("dup-x", H0 + timedelta(minutes=33), device_id="dev-a", received_at=H0 + timedelta(minutes=34)),
        raw_row("sent", H0 + timedelta(hours=2, minutes=1), device_id="dev-sent", session_id=424242),
        raw_row("sent-next", H0 + timedelta(hours=2, minutes=9), device_id="dev-sent"),
        *[raw_row(f"many-{i}", H0 + timedelta(minutes=i), device_id=f"dev-m{i:02d}") for i in range(24)],
    ]
    land_batch(env.lake, batch1, kafka_partition=0, seq=0, start_offset=0, committed_at=COMMIT_1)
    late = [
        raw_row("walk-3", H0 + timedelta(minutes=75), device_id="dev-walker"),  # producer retry (duplicate)
        raw_row("dup-x", H0 + timedelta(minutes=33), device_id="dev-b", received_at=H0 + timedelta(minutes=50)),
        raw_row("late-1", H0 + timedelta(minutes=12), device_id="dev-carry"),  # late event for the first hour
        raw_row("late-2", H0 + timedelta(hours=1, minutes=59), device_id="dev-late"),
    ]
    land_batch(env.lake, late, kafka_partition=1, seq=0, start_offset=0, committed_at=COMMIT_2)
    db = env.settings.clickhouse.database
    env.client.command(f"CREATE DATABASE IF NOT EXISTS {db}")  # type: ignore[attr-defined]
    from orchestration.clickhouse.schema import SchemaPlan, ensure_plan

    ensure_plan(env.client, SchemaPlan(db, None, 90))
    env.client.insert("identity_map", [["dev-known", "bob", H0 - timedelta(days=1)],  # type: ignore[attr-defined]
                                       ["dev-rewrite", "zed", H0 + timedelta(hours=3)]],
                      column_names=["device_id", "user_id", "first_seen"], database=db)


def run_range(env: Env, engine: str | None, only_enriched: bool = False) -> dg.ExecuteInProcessResult:
    """The hourly job over HOURS as one run (what BackfillPolicy.multi_run launches), optionally only enriched_events."""
    job = env.defs.resolve_job_def("hourly_events_job")
    run_config = {"ops": {"enriched_events": {"config": {"engine": engine}}}} if engine else None
    selection = [dg.AssetKey("enriched_events")] if only_enriched else None
    return job.execute_in_process(tags=RANGE_TAGS, run_config=run_config, instance=env.instance, asset_selection=selection)


def enriched_rows(env: Env, hour: datetime) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(env.lake.get(enriched_key(hour)))).sort_by("insert_id").to_pylist()


def identity_rows(env: Env) -> list[tuple]:
    db = env.settings.clickhouse.database
    return env.rows(f"SELECT device_id, user_id, first_seen FROM {db}.identity_map FINAL ORDER BY device_id, user_id")


def test_engine_choice() -> None:
    assert choose_engine("auto", 13, 12) == "spark"
    assert choose_engine("auto", 12, 12) == "in_process"
    assert choose_engine("spark", 1, 12) == "spark"
    assert choose_engine("in_process", 500, 12) == "in_process"


def test_spark_output_equals_in_process_output(tmp_path: Path, chserver: ChServer) -> None:
    with make_env(tmp_path / "inproc", chserver) as inproc, \
            make_env(tmp_path / "spark", chserver, spark_backfill_buckets=3) as spark:
        for env in (inproc, spark):
            land_scenario(env)
        assert run_range(inproc, "in_process", only_enriched=True).success
        assert run_range(spark, "spark", only_enriched=True).success
        for hour in HOURS:
            expected, actual = enriched_rows(inproc, hour), enriched_rows(spark, hour)
            assert len(actual) == len(expected), hour
            for want, got in zip(expected, actual, strict=True):
                assert got == want
            assert spark.lake.get(enriched_key(hour)) == inproc.lake.get(enriched_key(hour)), f"bytes differ at {hour}"
        assert identity_rows(spark) == identity_rows(inproc)

        # the scenario exercised what it claims to (so equality above is not vacuous)
        rows = {r["insert_id"]: r for h in HOURS for r in enriched_rows(spark, h)}
        assert [len(enriched_rows(spark, h)) for h in HOURS] == [35, 13, 7, 0]
        assert rows["dup-x"]["device_id"] == "dev-a" and rows["dup-x"]["ingested_at"].timestamp() * 1000 == ms(COMMIT_1)
        assert rows["late-1"]["ingested_at"].timestamp() * 1000 == ms(COMMIT_2)
        assert {rows[f"walk-{i}"]["session_id"] for i in range(8)} == {ms(H0)}
        assert rows["carry-1"]["session_id"] == ms(H0 - timedelta(minutes=10))
        assert rows["anon-2"]["resolved_user_id"] == "alice" and rows["anon-1"]["resolved_user_id"] is None
        assert rows["known-3"]["resolved_user_id"] == "bob" and rows["rewrite-2"]["resolved_user_id"] == "amy"
        assert rows["sent-next"]["session_id"] == 424242
        assert (rows["crawler"]["bot_reason"], rows["fast-0"]["bot_reason"]) == ("ua:spider", "rate:6/min")
        assert rows["carry-1"]["city"] == "London"


def test_backfill_over_threshold_runs_on_spark_with_a_materialization_per_hour(tmp_path: Path, chserver: ChServer) -> None:
    with make_env(tmp_path / "env", chserver, spark_backfill_min_hours=2) as env:
        land_scenario(env)
        result = run_range(env, None)  # no run config: 4 hours > SPARK_BACKFILL_MIN_HOURS=2 -> Spark
        assert result.success
        mats = {m.partition: m for m in result.asset_materializations_for_node("enriched_events")}
        assert sorted(mats) == [pkey(h) for h in HOURS]
        assert [mats[pkey(h)].metadata["rows"].value for h in HOURS] == [35, 13, 7, 0]
        assert {mats[pkey(h)].metadata["engine"].value for h in HOURS} == {"spark"}
        assert mats[pkey(HOURS[0])].metadata["lake_key"].value == enriched_key(HOURS[0])
        assert mats[pkey(HOURS[0])].metadata["duplicates"].value == 1
        stored = env.instance.fetch_materializations(dg.AssetKey("enriched_events"), limit=10).records
        assert sorted(r.asset_materialization.partition for r in stored) == [pkey(h) for h in HOURS]
        # downstream hours loaded from the Spark-written files
        assert [env.hour_count(h) for h in HOURS] == [35, 13, 7, 0]
        # the job's log lines reached the Dagster run (Pipes log channel)
        messages = [r.user_message for r in env.instance.all_logs(result.run_id)]
        assert any(m.startswith("backfill 4 hours") for m in messages), messages
        assert any(m.startswith(f"enriched {pkey(HOURS[1])}") for m in messages)
        assert ("dev-login", "alice") in [r[:2] for r in identity_rows(env)]
