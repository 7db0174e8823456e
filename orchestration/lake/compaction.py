"""``raw_events_compaction``: one object per (Kafka partition, hour) for closed hours, then a vacuum.

The rewrite itself (and why readers never see a row twice or miss one) is :mod:`enrichment.compaction`.
Not partitioned: each run compacts whatever closed hours have more than one object per partition
(late batches included) and deletes replaced objects past the retention period.
"""

import time

import dagster as dg

from enrichment.compaction import compact_lake, vacuum
from eventpipe_core.lake_catalog import COMPACTIONS_PREFIX
from eventpipe_core.settings import Settings
from orchestration.resources import LakeResource

RAW_EVENTS_COMPACTION = dg.AssetKey("raw_events_compaction")
COMPACTION_JOB = "raw_events_compaction_job"


def build_compaction(settings: Settings) -> tuple[dg.AssetsDefinition, dg.ScheduleDefinition]:
    closed_after_ms = int(settings.lake_compaction_closed_after_s * 1000)
    retain_s = settings.lake_compaction_retain_s

    @dg.asset(
        key=RAW_EVENTS_COMPACTION,
        group_name="lake",
        kinds={"parquet"},
        description="Rewrites each closed hour's landed objects into one object per (Kafka partition, hour) behind "
        "a compaction record readers apply; deletes replaced objects after the retention period.",
        metadata={"lake_prefix": COMPACTIONS_PREFIX},
    )
    def raw_events_compaction(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        store = lake.open()
        now_ms = int(time.time() * 1000)
        result = compact_lake(store, closed_before_ms=now_ms - closed_after_ms, writer_id=f"dagster-{context.run_id[:8]}",
                              on_group=lambda g, r: context.log.debug(
                                  f"{g.event_date} {g.event_hour} p{g.kafka_partition}: {len(g.objects)} objects -> "
                                  f"{'1' if r is not None else 'lost to another compactor'}"))
        vac = vacuum(store, retain_s=retain_s)  # retention counted from now, after this run's compactions
        context.log.info(f"compacted {result.groups} (partition, hour) groups, {result.objects_replaced} objects, "
                         f"{result.rows} rows, {result.bytes_before} -> {result.bytes_after} bytes; vacuum {vac}")
        return dg.MaterializeResult(metadata={
            "groups": result.groups, "objects_replaced": result.objects_replaced, "rows": result.rows,
            "bytes_before": result.bytes_before, "bytes_after": result.bytes_after, "lost_races": result.lost,
            "replaced_deleted": vac.replaced_deleted, "orphans_deleted": vac.orphans_deleted,
        })

    job = dg.define_asset_job(COMPACTION_JOB, selection=[RAW_EVENTS_COMPACTION])
    schedule = dg.ScheduleDefinition(name="raw_events_compaction_schedule", job=job, cron_schedule=settings.lake_compaction_cron,
                                     execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING)
    return raw_events_compaction, schedule
