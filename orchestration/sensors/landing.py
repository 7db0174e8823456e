"""The landing sensor, the daily catch-up schedule and the job they target.

The sensor's cursor is ``{kafka_partition: last commit seq seen}`` over the landing commit log
(eventpipe_core.lake_catalog). Each tick reads only records after the cursor, requests one run per
event-hour partition those batches touched — however old the hour (late data) — and reports the
landed rows as ``raw_events`` materializations of those hours. Consecutive touched hours share one
run (a partition range of at most ``BACKFILL_MAX_PARTITIONS_PER_RUN`` hours, as backfills do): a
day of history landed at once is one run, not 24 process launches. The run key names the commit
records, so a tick retried after a lost cursor update does not launch the same run twice.

Complete days (issue 12): a day's marts need all 24 of its hours loaded, but an hour where nothing
landed has no commit record to trigger it. So every tick also looks at each *complete* day (ended
more than ``LANDING_WINDOW_SECONDS`` ago) that has landed data — the days this tick touched, however
old, and the days with ``raw_events`` within ``LATE_DATA_LOOKBACK_DAYS`` — and requests its hours
that were never loaded and are not in a queued/running run: they load as empty hours. They join
the touched hours' ranges, so a past day whose events arrive at once is one run of 24 hours. A day
with no landed data at all is never filled (no rows, and it blocks no other day). Fill-only ranges
have the run key ``fill|first..last``: a failing fill is not relaunched every tick.

Coalescing (issue 17): no run is requested for an hour that has a run which has not read the lake yet
(queued, not started, starting: it will see the new commits); a started run justifies one more queued run.
The instance runs at most one run per ``dagster/partition`` at a time (orchestration.cli.dagster_yaml), so
that queued run swaps its hour in after the started one.

Live hours (issue 17, ``LIVE_LOAD``): an *open* hour (its end + ``LIVE_HOUR_CLOSE_SECONDS`` not passed)
with no canonical run in flight gets no run: the tick appends the new commit records' rows of it
(orchestration.sensors.live, provisional enrichment, exact dedup), at most ``LIVE_MAX_ROWS_PER_TICK`` rows a
tick. The cursor keeps the hours appended so far under ``"live"``; when one closes, the tick requests its
canonical run (``close|<hour>``), which REPLACE-PARTITIONs it with the full enrichment output.
"""


import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from enrichment.lake_io import hours_between, partition_key_to_hour
from eventpipe_core.lake_catalog import CommitRecord, committed_objects, iter_commit_records
from eventpipe_core.settings import Settings
from orchestration.clickhouse.assets import CLICKHOUSE_EVENTS, bump_loaded_days
from orchestration.lake.assets import ENRICHED_EVENTS, RAW_EVENTS
from orchestration.partitions import HOURLY_FMT, hourly_partitions
from orchestration.resources import ClickHouseResource, EnrichmentResource, LakeResource
from orchestration.sensors import live

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


LIVE_CURSOR_KEY = "live"  # hours appended live and not closed yet (their close run is still to request)


def parse_cursor(cursor: str | None) -> dict[int, int]:
    return {int(k): int(v) for k, v in json.loads(cursor).items() if k != LIVE_CURSOR_KEY} if cursor else {}


def parse_live_hours(cursor: str | None) -> set[str]:
    return set(json.loads(cursor).get(LIVE_CURSOR_KEY, [])) if cursor else set()


def dump_cursor(cursor: dict[int, int], live: Iterable[str] = ()) -> str:
    body: dict = {str(k): v for k, v in sorted(cursor.items())}
    if live:
        body[LIVE_CURSOR_KEY] = sorted(set(live))
    return json.dumps(body, sort_keys=True)


def plan_ticks(
    records: Iterable[CommitRecord], cursor: dict[int, int], valid_key: dg.PartitionsDefinition | None = None,
    limit: int = MAX_RECORDS_PER_TICK, max_live_rows: int | None = None, is_live: Callable[[str], bool] | None = None,
) -> tuple[dict[str, list[CommitRecord]], dict[int, int], list[str]]:
    """(records per touched hour partition, new cursor, hour keys outside the partitions) — pure.

    ``max_live_rows``: stop before the record that would take the rows of live hours (``is_live``) past it
    (one record at least), so a tick's appends stay well inside the sensor timeout; the rest is next tick's."""
    touched: dict[str, list[CommitRecord]] = {}
    skipped: list[str] = []
    new_cursor = dict(cursor)
    live_rows = 0
    for n, record in enumerate(records):
        if n >= limit:
            break
        if max_live_rows is not None and is_live is not None:
            rows = sum(v for k, v in record.rows_per_hour.items() if is_live(k))
            if n and rows and live_rows + rows > max_live_rows:
                break
            live_rows += rows
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


IN_FLIGHT = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED)


def day_of_key(key: str) -> str:
    return key[:10]


def hours_of_day_keys(day: str) -> list[str]:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return [h.strftime(HOURLY_FMT) for h in hours_between(start, start + timedelta(days=1))]


def empty_hours_to_fill(
    data_hours: Iterable[str], loaded: set[str], busy: set[str], now: datetime, window: timedelta,
    valid_key: dg.PartitionsDefinition | None = None,
) -> list[str]:
    """Hours of complete days with landed data that were never loaded nor are being loaded — pure.

    ``data_hours``: hour keys with landed rows (this tick's and earlier ones); ``loaded``: hours of
    clickhouse_events already materialized; ``busy``: hours of queued/running runs and of this tick."""
    out: list[str] = []
    for day in sorted({day_of_key(k) for k in data_hours}):
        end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        if end + window > now:
            continue  # not complete yet: its quiet hours may still get events
        out += [k for k in hours_of_day_keys(day) if k not in loaded and k not in busy
                and (valid_key is None or valid_key.has_partition_key(k))]
    return out


NOT_YET_READING = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING)


def hours_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """Hour keys of queued or running runs (the hourly job's, UI backfills' too), single partition or range."""
    waiting, started = hours_by_run_state(instance)
    return waiting | started


def hours_by_run_state(instance: dg.DagsterInstance) -> tuple[set[str], set[str]]:
    """(hours of runs that have not read the lake yet — queued, not started, starting; hours of started runs)."""
    waiting, started = set(), set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_FLIGHT)), limit=1000):
        (started if run.status == dg.DagsterRunStatus.STARTED else waiting).update(run_hours(run.tags))
    return waiting, started


def coalesce(keys: Iterable[str], waiting: set[str]) -> list[str]:
    """Hours still needing a run — pure. An hour with a run that has not read the lake yet needs none: that
    run will see the new commits. A started run may have read too early: one more (queued) run is requested,
    and the next commits coalesce into that one."""
    return sorted({k for k in keys if k not in waiting})


def is_open_hour(key: str, now: datetime, close_after: timedelta) -> bool:
    """Live hour: its end + ``LIVE_HOUR_CLOSE_SECONDS`` has not passed yet — pure."""
    return datetime.strptime(key, HOURLY_FMT).replace(tzinfo=UTC) + timedelta(hours=1) + close_after > now


def run_hours(tags: Mapping[str, str]) -> set[str]:
    """Hour keys a run's tags name (one partition or a range); none for a daily (dbt) run."""
    out: set[str] = set()
    keys = [tags.get("dagster/partition"), tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)]
    try:
        single, start, end = (datetime.strptime(k, HOURLY_FMT).replace(tzinfo=UTC) if k else None for k in keys)
    except ValueError:
        return out  # a daily (dbt) run
    if single is not None:
        out.add(single.strftime(HOURLY_FMT))
    if start is not None and end is not None:
        out |= {h.strftime(HOURLY_FMT) for h in hours_between(start, end + timedelta(hours=1))}
    return out


def recent_data_hours(instance: dg.DagsterInstance, now: datetime, lookback_days: int) -> set[str]:
    """Hours with landed data (raw_events reported) within the look-back."""
    oldest = (now - timedelta(days=lookback_days + 1)).strftime(HOURLY_FMT)
    return {k for k in instance.get_materialized_partitions(RAW_EVENTS) if k >= oldest}


def range_run_config(hours_with_data: int, spark_min_hours: int) -> dict:
    """Empty hours cost nothing in-process: a range goes to Spark (engine auto) only when more than
    ``SPARK_BACKFILL_MIN_HOURS`` of its hours have landed data, not because quiet hours made it long."""
    if hours_with_data > spark_min_hours:
        return {}
    return {"ops": {ENRICHED_EVENTS.path[-1]: {"config": {"engine": "in_process"}}}}


def build_landing_sensor(settings: Settings, job: UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    partitions = hourly_partitions(settings)
    close_after = timedelta(seconds=settings.live_hour_close_seconds)

    @dg.sensor(
        name="landing_commits_sensor",
        job=job,
        minimum_interval_seconds=settings.landing_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Appends the new rows of open (live) hours to analytics.events; requests runs for the other event "
        "hours newly committed landed batches touched (late hours too, one run per range of consecutive hours) and "
        "the canonical run of each live hour once it closes.",
    )
    def landing_commits_sensor(context: dg.SensorEvaluationContext, lake: LakeResource, clickhouse: ClickHouseResource,
                               enrichment: EnrichmentResource) -> dg.SensorResult:
        cursor = parse_cursor(context.cursor)
        live_hours = parse_live_hours(context.cursor)  # with LIVE_LOAD turned off they all close now
        store = lake.open()
        now = datetime.now(UTC)

        def is_live(key: str) -> bool:
            return settings.live_load and is_open_hour(key, now, close_after)

        touched, new_cursor, skipped = plan_ticks(iter_commit_records(store, after=cursor), cursor, partitions,
                                                  max_live_rows=settings.live_max_rows_per_tick, is_live=is_live)
        if skipped:
            context.log.warning(f"landed rows for hours outside the partitions (clock skew?) not scheduled: {skipped[:20]}")
        waiting, started = hours_by_run_state(context.instance)
        busy = waiting | started
        for key in busy & live.cached_hours():
            live.forget(key)  # rebuilt from the table (the canonical rows) before the next append
        # open hours without a canonical run in flight: append their increments (never while one is in flight)
        appends = {k: recs for k, recs in touched.items() if is_live(k) and k not in busy}
        appended: dict[str, tuple[datetime, set[str]]] = {}
        if appends:
            client = clickhouse.ready_client()
            geo = _geoip(enrichment)
            for key, recs in sorted(appends.items()):
                hour = partition_key_to_hour(key)
                result = live.append_increment(store, client, clickhouse.plan, key, hour, recs, enrichment.config,
                                               geo, _latest(context.instance, CLICKHOUSE_EVENTS, key))
                appended[key] = (hour, result.projects)
                context.log.info(f"live {key}: appended {result.rows} rows ({result.duplicates} already in the hour)")
            bump_loaded_days(settings, live.days_of({k: v for k, v in appended.items() if v[1]}))
        live_hours |= set(appends)
        closing = sorted(k for k in live_hours if not is_live(k))
        live_hours -= set(closing)
        for key in closing:
            live.forget(key)
        canonical = {k: recs for k, recs in touched.items() if k not in appends}
        data_hours = set(touched) | recent_data_hours(context.instance, now, settings.late_data_lookback_days)
        fill = empty_hours_to_fill(
            data_hours, context.instance.get_materialized_partitions(CLICKHOUSE_EVENTS),
            busy | set(touched) | live_hours | set(closing), now, timedelta(seconds=settings.landing_window_seconds),
            partitions)
        run_requests, events = [], []
        # closed live hours: the canonical load replaces their provisional rows (not needed if a run is waiting)
        for key in closing:
            if key not in waiting and key not in canonical:
                run_requests.append(dg.RunRequest(run_key=f"close|{key}", partition_key=key,
                                                  tags={"eventpipe/trigger": "close"}))
        for group in hour_ranges(coalesce([*canonical, *fill], waiting), settings.backfill_max_partitions_per_run):
            recs = list({(r.kafka_partition, r.seq): r for key in group for r in canonical.get(key, [])}.values())
            ids = "+".join(f"p{r.kafka_partition}s{r.seq}" for r in sorted(recs, key=lambda r: (r.kafka_partition, r.seq)))
            tags = {"eventpipe/trigger": "landing" if recs else "fill", "eventpipe/batches": str(len(recs))}
            key = "|".join([*([] if recs else ["fill"]), group[0] if len(group) == 1 else f"{group[0]}..{group[-1]}",
                            *([ids] if recs else [])])
            if len(group) == 1:
                run_requests.append(dg.RunRequest(run_key=key, partition_key=group[0], tags=tags))
            else:  # one run for the range: the hourly assets walk its hours in order
                tags |= {ASSET_PARTITION_RANGE_START_TAG: group[0], ASSET_PARTITION_RANGE_END_TAG: group[-1]}
                run_requests.append(dg.RunRequest(run_key=key, tags=tags, run_config=range_run_config(
                    sum(1 for k in group if k in canonical), settings.spark_backfill_min_hours)))
        if fill:
            context.log.info(f"complete days: loading {len(fill)} hours with nothing landed as empty "
                             f"({sorted({day_of_key(k) for k in fill})})")
        for key, recs in sorted(touched.items()):
            ids = "+".join(f"p{r.kafka_partition}s{r.seq}" for r in recs)
            rows = sum(r.rows_per_hour.get(key, 0) for r in recs)
            events.append(dg.AssetMaterialization(
                asset_key=RAW_EVENTS, partition=key,
                metadata={"new_rows": rows, "batches": len(recs), "commit_records": ids[:1000],
                          **({"live": True} if key in appends else {})},
            ))
        next_cursor = dump_cursor(new_cursor, live_hours)
        if not run_requests and not events and next_cursor == context.cursor:
            return dg.SensorResult(skip_reason="no new landed batches, no complete day to fill", cursor=next_cursor)
        return dg.SensorResult(run_requests=run_requests, asset_events=events, cursor=next_cursor)

    return landing_commits_sensor


_GEO: dict[str | None, object] = {}


def _geoip(enrichment: EnrichmentResource):  # noqa: ANN202 - GeoIpDatabase | None
    """The geo-IP reader, opened once per code-server process (every tick with live appends uses it)."""
    if enrichment.geoip_db_path not in _GEO:
        _GEO[enrichment.geoip_db_path] = enrichment.open_geoip()
    return _GEO[enrichment.geoip_db_path]


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
