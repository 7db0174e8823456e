"""Assembles the Dagster ``Definitions`` from one module per system, resources from settings.

    lake/        raw_events (landed batches, external) -> enriched_events (hourly Parquet); raw_events_compaction
    quality/     blocking great-expectations checks on enriched_events
    clickhouse/  clickhouse_events (hourly REPLACE PARTITION into analytics.events)
    sensors/     landing sensor (new + late hours), daily catch-up schedule, hourly job
    alerts/      alerts_sensor (alert rules on saved charts' series after loads; webhooks)
    dbt/         daily marts (@dbt_assets) — optional module, see :func:`dbt_definitions`

``orchestration.definitions.defs`` (the code location) is ``build_definitions()`` with the process
settings; tests call :func:`build_definitions` with their own settings and ``include_dbt=False``.

Every asset job runs in-process (``executor=in_process_executor``): the runs that asset backfills from
the UI, automation and the funnel backfills launch (Dagster's implicit asset job) would otherwise use
the multiprocess executor — a process and ~25 s of imports per step here (DESIGN §10) — while their
steps run one after another anyway. Backfill policies cut hourly ranges into runs of
``BACKFILL_MAX_PARTITIONS_PER_RUN`` hours and the marts into one dbt run per range.
"""

from __future__ import annotations

import importlib
import logging

import dagster as dg

from eventpipe_core.settings import Settings, get_settings
from orchestration.alerts.sensor import build_alert_sensor
from orchestration.clickhouse.assets import build_clickhouse_events
from orchestration.cohorts.assets import build_cohort_members, build_cohort_sensor, cohort_job
from orchestration.lake.assets import build_enriched_events, raw_events_spec
from orchestration.lake.compaction import build_compaction
from orchestration.quality.checks import build_enriched_checks
from orchestration.resources import build_resources
from orchestration.sensors.landing import build_catchup_schedule, build_landing_sensor, hourly_events_job

log = logging.getLogger(__name__)

DBT_MODULE = "orchestration.dbt"


def dbt_definitions(settings: Settings) -> dg.Definitions | None:
    """HOOK for the dbt marts: ``orchestration/dbt/__init__.py`` exposes
    ``dbt_definitions(settings: Settings) -> dagster.Definitions`` (its ``@dbt_assets``, checks, and a
    ``dbt`` resource if it wants its own). Skipped cleanly while the module does not exist."""
    try:
        module = importlib.import_module(DBT_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name and DBT_MODULE.startswith(exc.name):
            return None
        raise
    factory = getattr(module, "dbt_definitions", None)
    if factory is None:
        log.warning("%s has no dbt_definitions(settings); dbt marts not loaded", DBT_MODULE)
        return None
    return factory(settings)


def build_definitions(settings: Settings | None = None, include_dbt: bool = True) -> dg.Definitions:
    settings = settings or get_settings()
    job = hourly_events_job(settings)
    extra = dbt_definitions(settings) if include_dbt else None
    resources = build_resources(settings)
    compaction, compaction_schedule = build_compaction(settings)
    cohorts_job = cohort_job()  # issue 16: cohort membership (orchestration/cohorts/)
    if extra is not None and extra.resources:
        resources = {k: v for k, v in resources.items() if k not in extra.resources}
    core = dg.Definitions(
        assets=[raw_events_spec(settings), build_enriched_events(settings), build_clickhouse_events(settings), compaction,
                build_cohort_members(settings)],
        asset_checks=build_enriched_checks(settings),
        jobs=[job, cohorts_job],
        sensors=[
            build_landing_sensor(settings, job),
            build_cohort_sensor(settings, cohorts_job),
            build_alert_sensor(settings),  # issue 16: alerts (orchestration/alerts/)
            dg.AutomationConditionSensorDefinition(
                "automation_condition_sensor", target=dg.AssetSelection.all(),
                default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
                description="Evaluates automation conditions: downstream hours/days whose upstream changed "
                "(late ones included), stale partitions after a freshness breach.",
            ),
        ],
        schedules=[build_catchup_schedule(settings, job), compaction_schedule],
        resources=resources,
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(core, extra) if extra is not None else core

