"""The dbt marts as daily-partitioned Dagster assets.

One translator maps the dbt source ``analytics.events`` to the hourly ``clickhouse_events`` asset
(a day depends on its 24 hours), gives every model the daily partitions, the late-aware automation
condition and the marts' freshness policy. A run passes its partition window to dbt as
``--vars {start_date, end_date, project_funnels}``: incremental models replace exactly those day
partitions; a backfill is one dbt invocation over the whole range (``BackfillPolicy.single_run``).
``project_funnels`` is the funnel registry of the metadata store (``eventpipe funnels``), read at
run time, so a funnel created now is in the next run without a redeploy. dbt's data tests become
asset checks; unit tests run in CI (`make test`), not on every partition.
"""


import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from eventpipe_core.settings import Settings
from orchestration.dbt.project import dbt_project, dbt_target_dir
from orchestration.partitions import daily_partitions, hours_of_day, marts_automation, marts_freshness

CLICKHOUSE_EVENTS = dg.AssetKey("clickhouse_events")
DBT_POOL = "dbt_clickhouse"
MART_REBUILD_BACK_DAYS = 7  # fct_funnels: a day's run rebuilds the entries of the 7 days before (conversion window)


class EventpipeDbtTranslator(DagsterDbtTranslator):
    """Source events -> clickhouse_events; models -> daily, late-aware, with a freshness SLA."""

    def __init__(self, settings: Settings):
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))
        self._eventpipe = settings

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source" and dbt_resource_props["name"] == "events":
            return CLICKHOUSE_EVENTS
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "marts"

    def get_partition_mapping(
        self, dbt_resource_props: Mapping[str, Any], dbt_parent_resource_props: Mapping[str, Any]
    ) -> dg.PartitionMapping | None:
        if dbt_parent_resource_props.get("resource_type") == "source":
            return hours_of_day()
        return None

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        return marts_automation(self._eventpipe)

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: Any) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if spec.key == CLICKHOUSE_EVENTS:
            return spec
        return spec.replace_attributes(freshness_policy=marts_freshness(self._eventpipe))


def partition_vars(context: dg.AssetExecutionContext) -> dict[str, str]:
    """The run's day window as dbt vars (end exclusive)."""
    window = context.partition_time_window
    return {"start_date": window.start.date().isoformat(), "end_date": window.end.date().isoformat()}


def registry_funnels(settings: Settings) -> list[dict[str, Any]]:
    """Every project's own funnels (metadata store) in the shape of dbt_project.yml's ``funnels``."""
    from eventpipe_core.metadata import FunnelRegistry, get_metadata_store

    store = get_metadata_store(settings)
    try:
        return [f.as_dbt() for f in FunnelRegistry(store).list()]
    finally:
        store.dispose()


def dbt_vars(context: dg.AssetExecutionContext, settings: Settings) -> dict[str, Any]:
    return {**partition_vars(context), "project_funnels": registry_funnels(settings)}


def bump_mart_versions(context: dg.AssetExecutionContext, settings: Settings) -> None:
    """The query cache's data versions (:mod:`eventpipe_core.data_versions`) of every mart this run rebuilt, for all
    projects (a mart's table name is its asset key's last part): the run's days and the ``MART_REBUILD_BACK_DAYS``
    before (a day's run also rebuilds the funnels entered up to 7 days earlier and the rolling WAU/MAU); every bump
    also moves the mart's all-days version, which readers of whole tables (``/api/sql``, ``dim_users``) depend on."""
    from datetime import timedelta

    from eventpipe_core import data_versions

    window = context.partition_time_window
    days, d = [], window.start.date() - timedelta(days=MART_REBUILD_BACK_DAYS)
    while d < window.end.date():
        days.append(d)
        d += timedelta(days=1)
    for key in context.selected_asset_keys:
        if key != CLICKHOUSE_EVENTS:
            data_versions.bump(settings, key.path[-1], days)


def build_dbt_assets(settings: Settings) -> dg.AssetsDefinition:
    project = dbt_project(dbt_target_dir(settings))

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        name="dbt_marts",
        dagster_dbt_translator=EventpipeDbtTranslator(settings),
        partitions_def=daily_partitions(settings),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=DBT_POOL,
    )
    def dbt_marts(context: AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        args = ["build", "--exclude-resource-type", "unit_test", "--vars", json.dumps(dbt_vars(context, settings))]
        yield from dbt.cli(args, context=context).stream()
        bump_mart_versions(context, settings)

    return dbt_marts
