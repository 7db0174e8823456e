"""``clickhouse_events``: the enriched hour swapped into ``analytics.events`` (idempotent, atomic per hour)."""


import io

import dagster as dg
import pyarrow.parquet as pq

from enrichment.lake_io import hours_between, read_enriched
from eventpipe_core.settings import Settings
from orchestration.clickhouse.load import load_hour
from orchestration.lake.assets import ENRICHED_EVENTS
from orchestration.partitions import (
    accepted_beta_apis,
    backfill_policy,
    events_automation,
    events_freshness,
    hourly_partitions,
    same_hour,
)
from orchestration.resources import ClickHouseResource, LakeResource

CLICKHOUSE_EVENTS = dg.AssetKey("clickhouse_events")


def build_clickhouse_events(settings: Settings) -> dg.AssetsDefinition:
    with accepted_beta_apis():
        return _build(settings)


def _build(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=CLICKHOUSE_EVENTS,
        deps=[dg.AssetDep(ENRICHED_EVENTS, partition_mapping=same_hour())],
        partitions_def=hourly_partitions(settings),
        backfill_policy=backfill_policy(settings),
        automation_condition=events_automation(settings),
        freshness_policy=events_freshness(settings),
        group_name="clickhouse",
        kinds={"clickhouse"},
        description="analytics.events for the hour: staged, then ALTER TABLE … REPLACE PARTITION (readers never see a "
        "partial or doubled hour). Hot retention: TTL of CLICKHOUSE_TTL_DAYS.",
        metadata={"table": f"{settings.clickhouse.database}.events", "ttl_days": settings.clickhouse_ttl_days},
    )
    def clickhouse_events(
        context: dg.AssetExecutionContext, lake: LakeResource, clickhouse: ClickHouseResource
    ) -> dg.MaterializeResult:
        store = lake.open()
        client = clickhouse.ready_client()
        window = context.partition_time_window
        loaded = 0
        for hour in hours_between(window.start, window.end):
            data = read_enriched(store, hour)
            if data is None:
                raise dg.Failure(f"enriched_events has no output for {hour:%Y-%m-%d %H:00}; materialize it first")
            rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
            count = load_hour(client, clickhouse.plan, hour, data, rows)
            if count != rows:
                raise dg.Failure(f"{hour:%Y-%m-%d %H:00}: loaded {rows} rows but the hour holds {count}")
            loaded += rows
            context.log.info(f"loaded {hour:%Y-%m-%d %H:00}: {rows} rows")
        return dg.MaterializeResult(metadata={"rows": dg.MetadataValue.int(loaded), "table": clickhouse.plan.events_table})

    return clickhouse_events
