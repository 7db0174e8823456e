"""The landing sensor, the daily catch-up schedule and the job they target.

The sensor's cursor is ``{kafka_partition: last commit seq seen}`` over the landing commit log
(eventpipe_core.lake_catalog). Each tick reads only records after the cursor, requests one run per
event-hour partition those batches touched — however old the hour (late data) — and reports the
landed rows as ``raw_events`` materializations of those hours. Consecutive touched hours share one
run (a partition range of at most ``BACKFILL_MAX_PARTITIONS_PER_RUN`` hours, as backfills do): a
day of history landed at once is one run, not 24 process launches. The run key names the commit
records, so a tick retried after a lost cursor update does not launch the same run twice.
"""


import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from eventpipe_core.lake_catalog import CommitRecord, committed_objects, iter_commit_records
from eventpipe_core.settings import Settings
from orchestration.clickhouse.assets import CLICKHOUSE_EVENTS
from orchestration.lake.assets import ENRICHED_EVENTS, RAW_EVENTS
from orchestration.lake.io import hours_between
from orchestration.partitions import HOURLY_FMT, hourly_partitions
from orchestration.resources import LakeResource

HOURLY_JOB = "hourly_events_job"
MAX_RECORDS_PER_TICK = 5000


def hourly_events_job(settings: Settings) -> UnresolvedAssetJobDefinition:
    """enriched_events -> (blocking GX check) -> clickhouse_events for one hour (or a range in backfills).

    In-process executor: the steps run one after the other anyway, and a process per step (the
    multiprocess default) costs seconds of imports each — most of a small run's time."""
    return dg.define_asset_job(
        HOURLY_JOB,
        selection=dg.AssetSelection.assets(ENRICHED_EVENTS, CLICKHOUSE_EVENTS),
        description="Enrich one event hour and swap it into ClickHouse.",
        executor_def=dg.in_process_executor,
    )


def parse_cursor(cursor: str | None) -> dict[int, int]:
    return {int(k): int(v) for k, v in json.loads(cursor).items()} if cursor else {}


def dump_cursor(cursor: dict[int, int]) -> str:
    return json.dumps({str(k): v for k, v in sorted(cursor.items())}, sort_keys=True)


def plan_ticks(
    records: Iterable[CommitRecord], cursor: dict[int, int], valid_key: dg.PartitionsDefinition | None = None,
    limit: int = MAX_RECORDS_PER_TICK,
) -> tuple[dict[str, list[CommitRecord]], dict[int, int], list[str]]:
    """(records per touched hour partition, new cursor, hour keys outside the partitions) — pure."""
    touched: dict[str, list[CommitRecord]] = {}
    skipped: list[str] = []
    new_cursor = dict(cursor)
    for n, record in enumerate(records):
        if n >= limit:
            break
        new_cursor[record.kafka_partition] = max(record.seq, new_cursor.get(record.kafka_partition, -1))
        for key in sorted(record.rows_per_hour):
            if valid_key is not None and not valid_key.has_partition_key(key):
                skipped.append(key)
                continue
            touched.setdefault(key, []).append(record)
    return touched, new_cursor, sorted(set(skipped))


def hour_ranges(keys: Iterable[str], max_hours: int) -> list[list[str]]:
    """Sorted hour keys grouped into runs of consecutive hours, each at most ``max_hours`` long — pure."""
    groups: list[list[str]] = []
    previous: datetime | None = None
    for key in sorted(set(keys)):
        hour = datetime.strptime(key, HOURLY_FMT)
        if groups and previous is not None and hour - previous == timedelta(hours=1) and len(groups[-1]) < max_hours:
            groups[-1].append(key)
        else:
            groups.append([key])
        previous = hour
    return groups


def build_landing_sensor(settings: Settings, job: UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    partitions = hourly_partitions(settings)

    @dg.sensor(
        name="landing_commits_sensor",
        job=job,
        minimum_interval_seconds=settings.landing_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests runs for the event hours newly committed landed batches touched (late hours too), "
        "one run per range of consecutive hours.",
    )
    def landing_commits_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        cursor = parse_cursor(context.cursor)
        store = lake.open()
        touched, new_cursor, skipped = plan_ticks(iter_commit_records(store, after=cursor), cursor, partitions)
        if skipped:
            context.log.warning(f"landed rows for hours outside the partitions (clock skew?) not scheduled: {skipped[:20]}")
        run_requests, events = [], []
        for group in hour_ranges(touched, settings.backfill_max_partitions_per_run):
            recs = list({(r.kafka_partition, r.seq): r for key in group for r in touched[key]}.values())
            ids = "+".join(f"p{r.kafka_partition}s{r.seq}" for r in sorted(recs, key=lambda r: (r.kafka_partition, r.seq)))
            tags = {"eventpipe/trigger": "landing", "eventpipe/batches": str(len(recs))}
            if len(group) == 1:
                run_requests.append(dg.RunRequest(run_key=f"{group[0]}|{ids}", partition_key=group[0], tags=tags))
            else:  # one run for the range: the hourly assets walk its hours in order
                tags |= {ASSET_PARTITION_RANGE_START_TAG: group[0], ASSET_PARTITION_RANGE_END_TAG: group[-1]}
                run_requests.append(dg.RunRequest(run_key=f"{group[0]}..{group[-1]}|{ids}", tags=tags))
        for key, recs in sorted(touched.items()):
            ids = "+".join(f"p{r.kafka_partition}s{r.seq}" for r in recs)
            rows = sum(r.rows_per_hour.get(key, 0) for r in recs)
            events.append(dg.AssetMaterialization(
                asset_key=RAW_EVENTS, partition=key,
                metadata={"new_rows": rows, "batches": len(recs), "commit_records": ids[:1000]},
            ))
        if not run_requests and new_cursor == cursor:
            return dg.SensorResult(skip_reason="no new landed batches", cursor=dump_cursor(new_cursor))
        return dg.SensorResult(run_requests=run_requests, asset_events=events, cursor=dump_cursor(new_cursor))

    return landing_commits_sensor


def build_catchup_schedule(settings: Settings, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """Daily safety net: re-request yesterday's hours whose landed data is newer than their ClickHouse load."""

    @dg.schedule(
        name="daily_catchup_schedule",
        cron_schedule=settings.catchup_cron,
        execution_timezone="UTC",
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Re-runs any hour of the previous day whose ClickHouse load is missing or older than its latest batch.",
    )
    def daily_catchup_schedule(context: dg.ScheduleEvaluationContext, lake: LakeResource) -> list[dg.RunRequest]:
        day = (context.scheduled_execution_time or datetime.now(UTC)).astimezone(UTC).date() - timedelta(days=1)
        return catchup_requests(context.instance, lake, day.isoformat())

    return daily_catchup_schedule


def catchup_requests(instance: dg.DagsterInstance, lake: LakeResource, day: str) -> list[dg.RunRequest]:
    """Hours of ``day`` to (re)run: never loaded (quiet hours too — the daily marts need all 24 hours
    present), or whose latest landed batch was reported after their last ClickHouse load."""
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    landed = {o.partition_key for o in committed_objects(lake.open(), event_date=day)}
    out = []
    for hour in hours_between(start, start + timedelta(days=1)):
        key = hour.strftime(HOURLY_FMT)
        raw = _latest(instance, RAW_EVENTS, key)
        loaded = _latest(instance, CLICKHOUSE_EVENTS, key)
        if loaded is None or (key in landed and raw is not None and raw > loaded):
            out.append(dg.RunRequest(run_key=f"catchup|{key}|{raw}|{loaded}", partition_key=key,
                                     tags={"eventpipe/trigger": "catchup"}))
    return out


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> int | None:
    """Storage id of the latest materialization of one partition (monotonic across assets)."""
    result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1)
    return result.records[0].storage_id if result.records else None
