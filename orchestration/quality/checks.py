"""Blocking asset checks on ``enriched_events``: a failing hour never reaches ClickHouse."""


import dagster as dg
import pyarrow as pa

from enrichment.lake_io import hours_between, read_enriched_table
from eventpipe_core.settings import Settings
from orchestration.lake.assets import ENRICHED_EVENTS
from orchestration.partitions import accepted_beta_apis, hourly_partitions
from orchestration.quality.suites import SUITE_NAME, validate_enriched
from orchestration.resources import LakeResource


def build_enriched_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    """Partitioned like the asset: each hour has its own check status, so one bad hour blocks only
    its own load (automation's ``all_deps_blocking_checks_passed`` is evaluated per hour)."""
    with accepted_beta_apis():
        return _build(hourly_partitions(settings))


def _build(partitions: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:

    @dg.asset_check(
        asset=ENRICHED_EVENTS,
        name="gx_enriched_hour",
        blocking=True,
        partitions_def=partitions,
        description="great-expectations suite: ids present, insert_id unique, event_time inside the partition, "
        "session_id set, column types, Arrow schema == analytics.events contract.",
    )
    def gx_enriched_hour(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        store = lake.open()
        window = context.op_execution_context.partition_time_window
        tables = []
        for hour in hours_between(window.start, window.end):
            table = read_enriched_table(store, hour)
            if table is None:
                return dg.AssetCheckResult(passed=False, metadata={"missing_hour": f"{hour:%Y-%m-%d %H:00}"})
            tables.append(table)
        outcome = validate_enriched(pa.concat_tables(tables), window.start, window.end)
        return dg.AssetCheckResult(
            passed=outcome.success,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "suite": SUITE_NAME,
                "rows": outcome.rows,
                "schema_ok": outcome.schema_ok,
                "failed_expectations": dg.MetadataValue.json(outcome.failed),
                "expectations": dg.MetadataValue.json(outcome.results),
            },
        )

    @dg.asset_check(
        asset=ENRICHED_EVENTS,
        name="tracking_plan_violations",
        partitions_def=partitions,
        description="Counts tracking-plan violations recorded by the collector (warns, does not block).",
    )
    def tracking_plan_violations(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        from enrichment.rules import plan_violation_count

        store = lake.open()
        window = context.op_execution_context.partition_time_window
        total = rows = 0
        for hour in hours_between(window.start, window.end):
            table = read_enriched_table(store, hour)
            if table is not None:
                rows += table.num_rows
                total += plan_violation_count(table.column("plan_violations").to_pandas())
        return dg.AssetCheckResult(
            passed=total == 0, severity=dg.AssetCheckSeverity.WARN,
            metadata={"violations": total, "rows": rows},
        )

    return [gx_enriched_hour, tracking_plan_violations]
