"""``cohort_members[day]`` and the on-demand refresh sensor.

The daily partition snapshots every cohort as of the end of that day (UTC). The sensor
``cohort_definitions_sensor`` requests today's partition when a cohort's ``updated_at`` is newer than the
last one it saw (cursor), i.e. when a cohort is created or edited.
"""


from datetime import UTC, datetime
from typing import Any

import dagster as dg

from eventpipe_core.settings import Settings
from orchestration.clickhouse.assets import CLICKHOUSE_EVENTS
from orchestration.partitions import daily_partitions
from orchestration.resources import ClickHouseResource, MetadataStoreResource

COHORT_MEMBERS = dg.AssetKey("cohort_members")


def build_cohort_members(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        key=COHORT_MEMBERS,
        deps=[dg.AssetDep(CLICKHOUSE_EVENTS, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=0, end_offset=0))],
        partitions_def=daily_partitions(settings),
        group_name="cohorts",
        kinds={"clickhouse"},
        description="Every cohort's members as of the end of the day (UTC) into cohort_members "
        "(project, cohort_id, actor_id, as_of); behavioral ones computed in ClickHouse, static ones from their list.",
    )
    def cohort_members(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource,
                       metadata_store: MetadataStoreResource) -> dg.MaterializeResult:
        from eventpipe_core.metadata import MetadataStore
        from orchestration.cohorts.materialize import materialize_all

        store = MetadataStore(metadata_store.engine())
        store.ensure_schema()
        day = context.partition_time_window.start.date()
        client = clickhouse.ready_client()
        client.database = clickhouse.target.database  # the membership SQL names tables unqualified, like the API's
        counts = materialize_all(client, clickhouse.target.database, store, day)
        from eventpipe_core import data_versions  # cached answers with a cohort segment read the latest snapshot

        data_versions.bump(settings, "cohort_members", [day])
        context.log.info("cohort_members %s: %s", day, counts)
        return dg.MaterializeResult(metadata={"cohorts": len(counts), "members": sum(counts.values()),
                                              "sizes": dg.MetadataValue.json(counts)})

    return cohort_members


def build_cohort_sensor(settings: Settings, job: Any) -> dg.SensorDefinition:
    @dg.sensor(name="cohort_definitions_sensor", job=job, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Materializes today's cohort_members when a cohort is created or edited.")
    def cohort_definitions_sensor(context: dg.SensorEvaluationContext, metadata_store: MetadataStoreResource):  # noqa: ANN202
        from eventpipe_core.metadata import MetadataStore
        from eventpipe_core.metadata.cohorts import list_cohorts

        store = MetadataStore(metadata_store.engine())
        store.ensure_schema()
        latest = max((c.updated_at for c in list_cohorts(store)), default=None)
        if latest is None:
            return dg.SkipReason("no cohorts")
        stamp = latest.replace(tzinfo=latest.tzinfo or UTC).isoformat()
        if context.cursor and stamp <= context.cursor:
            return dg.SkipReason("no cohort changed")
        context.update_cursor(stamp)
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=f"cohorts-{stamp}", partition_key=today)

    return cohort_definitions_sensor


def cohort_job() -> Any:
    return dg.define_asset_job("cohort_members_job", selection=dg.AssetSelection.assets(COHORT_MEMBERS))
