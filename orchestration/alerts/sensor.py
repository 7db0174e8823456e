"""``alerts_sensor``: evaluates alert rules after the loads that can change their series.

When an alert is evaluated (rules of the transitions in :mod:`eventpipe_core.alerting`):

* after a load — a new ``clickhouse_events`` materialization (the sensor's cursor keeps the last storage id it
  saw) of an hour inside the alert's window. Daily alerts wait until the loaded hour's day is complete in the
  project's time zone (a load of today's hours cannot change a complete day); a load of a past hour (late
  data) re-evaluates, so a fired alert whose value was revised resolves or re-fires with a ``revised``
  transition in its history;
* when a new interval completed since the alert's last evaluation (hourly alerts each hour, daily alerts each
  day), even without a load, so a quiet interval still resolves;
* on the first tick after it was created or edited.

Only complete intervals count unless the alert's series says ``complete_only: false``. Each evaluation records
transitions once and delivers every undelivered one (signed webhook, retries with backoff); a receiver that was
down gets them on a later tick. One failing alert (its chart no longer parses, ClickHouse refused) is logged and
retried next tick without blocking the others. The series are computed by the query service's SQL
(:mod:`query_service.alert_series`) as the read-only ClickHouse user.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg

from eventpipe_core.settings import Settings
from orchestration.clickhouse.assets import CLICKHOUSE_EVENTS
from orchestration.partitions import HOURLY_FMT
from orchestration.resources import MetadataStoreResource

MAX_RECORDS_PER_TICK = 10_000
TICK_BUDGET_S = 40.0  # Dagster times a sensor tick out at 60 s: alerts left over stay due for the next tick
DELIVERY = {"attempts": 3, "backoff_s": 0.2}  # per tick; undelivered transitions are retried on later ticks


def interval_floor(now: datetime, interval: timedelta, tz: str) -> datetime:
    """Start of the interval containing ``now`` (hours in UTC; days at local midnight of the project's zone)."""
    if interval <= timedelta(hours=1):
        return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    local = now.astimezone(ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def due(alert: dict[str, Any], loaded: list[datetime], last_boundary: str | None, now: datetime, tz: str,
        window_days: int) -> bool:
    """Whether a load or a newly completed interval can change this alert's evaluation (see the module doc)."""
    interval = timedelta(hours=1) if alert["interval"] == "hour" else timedelta(days=1)
    boundary = interval_floor(now, interval, tz)
    if last_boundary is None or boundary.isoformat() != last_boundary:
        return True
    oldest = now - timedelta(days=window_days + 1)
    for hour in loaded:
        if hour < oldest:
            continue
        if interval == timedelta(hours=1):
            return True
        if interval_floor(hour, interval, tz) + interval <= now or not alert["series"].get("complete_only", True):
            return True  # the hour's day is complete (or the running interval is evaluated too)
    return False


def _loaded_since(instance: dg.DagsterInstance, after: int | None) -> tuple[list[datetime], int | None]:
    flt = dg.AssetRecordsFilter(asset_key=CLICKHOUSE_EVENTS, after_storage_id=after)
    result = instance.fetch_materializations(flt, limit=MAX_RECORDS_PER_TICK, ascending=True)
    hours, last = [], after
    for record in result.records:
        last = max(last or 0, record.storage_id)
        if record.partition_key:
            hours.append(datetime.strptime(record.partition_key, HOURLY_FMT).replace(tzinfo=UTC))
    return hours, last


def evaluate_alerts(settings: Settings, store: Any, instance: dg.DagsterInstance, cursor: dict[str, Any],
                    now: datetime, engine: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """One tick: (new cursor, summary). The cursor is ``{"storage_id", "boundaries": {alert id: iso}}``."""
    from eventpipe_core.metadata.alerts import deliver_pending, list_alerts, run_alert
    from eventpipe_core.metadata.projects_settings import get_timezone
    from query_service import alert_series
    from query_service import params as P

    loaded, storage_id = _loaded_since(instance, cursor.get("storage_id"))
    boundaries: dict[str, str] = dict(cursor.get("boundaries", {}))
    summary: dict[str, Any] = {"evaluated": [], "transitions": [], "errors": {}, "redelivered": []}
    alerts = list_alerts(store)
    if alerts and engine is None:
        from query_service.engine import Engine

        engine = Engine.from_settings(settings)
    zones: dict[str, str] = {}
    started = time.monotonic()
    for alert in alerts:
        if time.monotonic() - started > TICK_BUDGET_S:
            summary["deferred"] = summary.get("deferred", 0) + 1
            continue
        tz = zones.setdefault(alert["project"], get_timezone(store, alert["project"]))
        spec = alert["series"]
        try:
            window = alert_series.lookback_days(spec, alert["condition"])
            stamp = alert_series.HOUR if alert["interval"] == "hour" else alert_series.DAY
            key = f"{alert['id']}|{alert['condition']}|{alert['threshold']}|{json.dumps(spec, sort_keys=True)}"
            if not due(alert, loaded, boundaries.get(key), now, tz, window):
                if deliver_pending(store, alert["id"], **DELIVERY):  # a receiver that was down gets its transitions now
                    summary["redelivered"].append(alert["id"])
                continue
            scope = P.Scope(project=alert["project"], timezone=tz, hot_from=engine.hot_from(), lake_path=engine.lake_path)
            series = alert_series.compute_series(lambda c: engine.run(c).rows, spec, scope, now, alert["condition"])
            clock = now if spec.get("complete_only", True) else now + stamp
            events = run_alert(store, alert["id"], series, clock, **DELIVERY)
        except Exception as exc:  # noqa: BLE001 - one broken alert must not stop the others; retried next tick
            summary["errors"][alert["id"]] = f"{type(exc).__name__}: {exc}"[:500]
            continue
        boundaries[key] = interval_floor(now, stamp, tz).isoformat()
        summary["evaluated"].append(alert["id"])
        summary["transitions"] += [f"{alert['id']}:{e['type']}@{e['interval_start']}" for e in events]
    live = {a["id"] for a in alerts}
    boundaries = {k: v for k, v in boundaries.items() if k.split("|", 1)[0] in live}  # deleted alerts are forgotten
    return {"storage_id": storage_id, "boundaries": boundaries}, summary


def build_alert_sensor(settings: Settings, clock: Callable[[], datetime] | None = None) -> dg.SensorDefinition:
    """The sensor; ``clock`` (default: the wall clock, UTC) is the evaluation time."""
    now_fn = clock or (lambda: datetime.now(UTC))

    @dg.sensor(name="alerts_sensor", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Evaluates alert rules on their charts' series after ClickHouse loads (hourly alerts "
               "hourly, daily ones daily; late loads re-evaluate) and delivers each transition once to its webhook.")
    def alerts_sensor(context: dg.SensorEvaluationContext, metadata_store: MetadataStoreResource) -> dg.SensorResult:
        from eventpipe_core.metadata import MetadataStore

        store = MetadataStore(metadata_store.engine())
        store.ensure_schema()
        try:
            cursor, summary = evaluate_alerts(settings, store, context.instance,
                                              json.loads(context.cursor) if context.cursor else {}, now_fn())
        finally:
            store.dispose()
        for aid, err in summary["errors"].items():
            context.log.warning("alert %s not evaluated: %s", aid, err)
        text = (f"evaluated {len(summary['evaluated'])} alert(s), {len(summary['transitions'])} transition(s)"
                + (f": {', '.join(summary['transitions'])}" if summary["transitions"] else "")
                + (f"; delivered pending transitions of {len(summary['redelivered'])}" if summary["redelivered"] else "")
                + (f"; {len(summary['errors'])} failed" if summary["errors"] else "")
                + (f"; {summary['deferred']} deferred to the next tick" if summary.get("deferred") else ""))
        return dg.SensorResult(skip_reason=dg.SkipReason(text), cursor=json.dumps(cursor, sort_keys=True))

    return alerts_sensor
