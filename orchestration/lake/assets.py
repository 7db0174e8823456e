"""``raw_events`` (landed batches, reported by the landing sensor) and ``enriched_events``."""


from datetime import timedelta

import dagster as dg

from enrichment.lake_io import (
    carry_into,
    hours_between,
    load_commit_records,
    read_raw_hour,
    write_enriched,
)
from enrichment.rules import enrich_hour, session_state_from_enriched, to_parquet_bytes
from eventpipe_core.lake_catalog import ENRICHED_PREFIX, RAW_PREFIX
from eventpipe_core.settings import Settings
from orchestration.clickhouse.load import read_identity_map, write_identities
from orchestration.partitions import accepted_beta_apis, backfill_policy, hourly_partitions, same_hour
from orchestration.resources import ClickHouseResource, EnrichmentResource, LakeResource
from spark_jobs.launch import EnrichedEventsConfig, choose_engine, run_spark_enrichment

RAW_EVENTS = dg.AssetKey("raw_events")
ENRICHED_EVENTS = dg.AssetKey("enriched_events")
ONE_HOUR = timedelta(hours=1)
ENRICHMENT_CODE_VERSION = "1"  # bump when rules.py changes output: hours become "code version changed"


def raw_events_spec(settings: Settings) -> dg.AssetSpec:
    """External asset: landed batches are written by ingest_consumer; the sensor records them per hour."""
    return dg.AssetSpec(
        RAW_EVENTS,
        partitions_def=hourly_partitions(settings),
        group_name="lake",
        kinds={"parquet", "kafka"},
        description="Committed landed batches of the hour (raw/events/…), observed from the landing commit records.",
        metadata={"lake_prefix": RAW_PREFIX},
    )


def build_enriched_events(settings: Settings) -> dg.AssetsDefinition:
    with accepted_beta_apis():
        return _build(settings)


def _build(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=ENRICHED_EVENTS,
        deps=[dg.AssetDep(RAW_EVENTS, partition_mapping=same_hour())],
        partitions_def=hourly_partitions(settings),
        backfill_policy=backfill_policy(settings),
        group_name="lake",
        kinds={"parquet", "python"},
        code_version=ENRICHMENT_CODE_VERSION,
        description="One deterministic Parquet file per event hour under enriched/events/: deduplicated, geo-IP, "
        "user agent, bot flag, stitched identity, sessions.",
        metadata={"lake_prefix": ENRICHED_PREFIX},
    )
    def enriched_events(
        context: dg.AssetExecutionContext, config: EnrichedEventsConfig, lake: LakeResource, clickhouse: ClickHouseResource,
        enrichment: EnrichmentResource, pipes_subprocess_client: dg.PipesSubprocessClient,
    ) -> dg.MaterializeResult:
        store = lake.open()
        client = clickhouse.ready_client()
        plan = clickhouse.plan
        window = context.partition_time_window
        hours = hours_between(window.start, window.end)
        records = load_commit_records(store)
        carry = carry_into(store, hours[0], records, enrichment.config)
        if choose_engine(config.engine, len(hours), settings.spark_backfill_min_hours) == "spark":
            # the same rules on Spark (spark_jobs), for long ranges; identities come back and are written here
            return run_spark_enrichment(
                context, pipes_subprocess_client, settings=settings, lake_url=lake.lake_url,
                aws_endpoint_url=lake.aws_endpoint_url, aws_region=lake.aws_region, client=client, plan=plan, hours=hours,
                carry=carry, session_timeout_minutes=enrichment.session_timeout_minutes,
                bot_max_events_per_minute=enrichment.bot_max_events_per_minute, geoip_db_path=enrichment.geoip_db_path)
        rules = enrichment.config
        geo = enrichment.open_geoip()
        totals: dict[str, int] = {}
        keys = []
        for hour in hours:
            raw = read_raw_hour(store, hour, records)
            devices = [d for d in raw.column("device_id").to_pylist() if d]
            result = enrich_hour(raw, hour_start=hour, carry=carry, identity_map=read_identity_map(client, plan, devices),
                                 geo_lookup=geo, config=rules)
            keys.append(write_enriched(store, hour, to_parquet_bytes(result.table)))
            write_identities(client, plan, result.identities)
            carry = session_state_from_enriched(result.table, hour + ONE_HOUR, rules.session_timeout)
            for k, v in result.stats.items():
                totals[k] = totals.get(k, 0) + v
            context.log.info(f"enriched {hour:%Y-%m-%d %H:00}: {result.stats}")
        if geo is not None:
            geo.close()
        return dg.MaterializeResult(
            metadata={**{k: dg.MetadataValue.int(v) for k, v in sorted(totals.items())},
                      "hours": len(hours), "lake_keys": dg.MetadataValue.json(keys)}
        )

    return enriched_events

