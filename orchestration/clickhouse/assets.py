"""``clickhouse_events``: the enriched hour swapped into ``analytics.events`` (idempotent, atomic per hour)."""


import io
from collections.abc import Iterator
from datetime import date, datetime

import dagster as dg
import pyarrow.parquet as pq

from enrichment.lake_io import hours_between, read_enriched
from eventpipe_core import data_versions
from eventpipe_core.settings import Settings
from orchestration.clickhouse.load import load_hours
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


def bump_loaded_days(settings: Settings, touched: dict[date, set[str]]) -> None:
    """Bump the data versions (query cache, :mod:`eventpipe_core.data_versions`) of the loaded days, per project
    present in the new rows. A re-enriched hour keeps every project it had (events are only ever added), so the
    projects of the new file cover those of the replaced one; a day whose hours came out empty bumps every project."""
    for day, projects in touched.items():
        data_versions.bump(settings, data_versions.EVENTS, [day], projects or None)


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
        touched: dict[date, set[str]] = {}
        read: list[tuple[datetime, int, set[str]]] = []  # (hour, rows, projects) in order

        def enriched_hours() -> Iterator[tuple[datetime, bytes, int]]:
            """Each hour's enriched file, read only when load_hours stages it (a range's bytes are never all held)."""
            for hour in hours_between(window.start, window.end):
                data = read_enriched(store, hour)
                if data is None:
                    raise dg.Failure(f"enriched_events has no output for {hour:%Y-%m-%d %H:00}; materialize it first")
                parquet = pq.ParquetFile(io.BytesIO(data))
                rows = parquet.metadata.num_rows
                projects = set(parquet.read(columns=["project"]).column("project").unique().to_pylist()) if rows else set()
                read.append((hour, rows, projects))
                yield hour, data, rows

        # staged hour by hour, copies listed once for the range, then swapped hour by hour (load_hours)
        counts = load_hours(client, clickhouse.plan, enriched_hours())
        for (hour, rows, projects), count in zip(read, counts, strict=True):
            if count != rows:
                raise dg.Failure(f"{hour:%Y-%m-%d %H:00}: loaded {rows} rows but the hour holds {count}")
            loaded += rows
            touched.setdefault(hour.date(), set()).update(projects)
            context.log.info(f"loaded {hour:%Y-%m-%d %H:00}: {rows} rows")
        # the query cache's data versions of the (project, day)s rewritten (an emptied hour: every project's)
        bump_loaded_days(settings, touched)
        return dg.MaterializeResult(metadata={"rows": dg.MetadataValue.int(loaded), "table": clickhouse.plan.events_table})

    return clickhouse_events
