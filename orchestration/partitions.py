"""Partitions and partition mappings shared by every asset (event hour for events, day for marts)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from datetime import timedelta

import dagster as dg

from eventpipe_core.settings import Settings

HOURLY_FMT = "%Y-%m-%d-%H:%M"  # == eventpipe_core.lake_catalog.hour_key


def hourly_partitions(settings: Settings) -> dg.HourlyPartitionsDefinition:
    """Event hours (UTC). ``end_offset=1``: the current, still filling hour is a partition too,
    so events landing now are enriched and loaded within minutes, not after the hour closes."""
    return dg.HourlyPartitionsDefinition(
        start_date=f"{settings.dagster_partitions_start}-00:00", timezone="UTC", fmt=HOURLY_FMT, end_offset=1
    )


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """Event days (UTC) for the dbt marts; a day is complete once its last hour is."""
    return dg.DailyPartitionsDefinition(start_date=settings.dagster_partitions_start, timezone="UTC")


def same_hour() -> dg.TimeWindowPartitionMapping:
    """enriched_events[h] -> clickhouse_events[h] (explicit identity mapping)."""
    return dg.TimeWindowPartitionMapping(start_offset=0, end_offset=0)


def hours_of_day() -> dg.TimeWindowPartitionMapping:
    """clickhouse_events[day 00:00 .. 23:00] -> mart[day]: a daily mart depends on its 24 hours."""
    return dg.TimeWindowPartitionMapping(start_offset=0, end_offset=0)


def late_aware_eager(lookback: timedelta, checks_run_with_deps: bool = False) -> dg.AutomationCondition:
    """Like ``AutomationCondition.eager()`` but for every partition within ``lookback``, not only the
    latest one: an hour days in the past whose upstream changed (late data) is re-materialized too.
    Waits for blocking checks of upstream partitions (a failed GX check stops the load).

    ``checks_run_with_deps``: a dependency requested on the same tick counts as checked even when
    its checks are not requested themselves — for dbt models, whose tests ``dbt build`` runs right
    after each model, skipping what is downstream of a failed test. Without it, automation would
    request a dbt graph one tested layer per tick (one run each) instead of in one run."""
    blocking = dg.AutomationCondition.all_deps_blocking_checks_passed()
    if checks_run_with_deps:
        blocking = dg.AutomationCondition.all_deps_match(
            dg.AutomationCondition.will_be_requested()
            | dg.AutomationCondition.all_checks_match(dg.AutomationCondition.check_passed(), blocking_only=True)
        ).with_label("all_deps_blocking_checks_passed_or_built_in_this_run")
    return (
        dg.AutomationCondition.in_latest_time_window(lookback)
        & dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & blocking
    ).with_label("eager_including_late_partitions")


def refresh_when_stale() -> dg.AutomationCondition:
    """Re-materialize the latest partition once when the freshness policy turns FAIL."""
    return (
        dg.AutomationCondition.in_latest_time_window()
        & dg.AutomationCondition.freshness_failed().newly_true()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("refresh_when_stale")


def events_automation(settings: Settings) -> dg.AutomationCondition:
    return late_aware_eager(timedelta(days=settings.late_data_lookback_days)) | refresh_when_stale()


def marts_automation(settings: Settings) -> dg.AutomationCondition:
    """For the daily dbt marts (orchestration/dbt): same rule over daily partitions, the whole dbt graph
    of a day in one run."""
    return late_aware_eager(timedelta(days=settings.late_data_lookback_days + 1), checks_run_with_deps=True) \
        | refresh_when_stale()


def events_freshness(settings: Settings) -> dg.FreshnessPolicy:
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=settings.events_freshness_fail_minutes),
        warn_window=timedelta(minutes=settings.events_freshness_warn_minutes),
    )


def marts_freshness(settings: Settings) -> dg.FreshnessPolicy:
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=settings.marts_freshness_fail_hours),
        warn_window=timedelta(hours=settings.marts_freshness_warn_hours),
    )


def backfill_policy(settings: Settings) -> dg.BackfillPolicy:
    """Backfills run ``backfill_max_partitions_per_run`` hours per run (one process walks them in
    order, carrying session state), instead of one run per hour."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=settings.backfill_max_partitions_per_run)


@contextlib.contextmanager
def accepted_beta_apis() -> Iterator[None]:
    """Two Dagster 1.13 APIs we use deliberately carry stability warnings: ``@asset(backfill_policy=…)``
    (beta) and partitioned asset checks (preview; needed so a failed check blocks only its own hour).
    Their notices are silenced where we opt in, not globally, so the code location loads without noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
        warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")
        yield
