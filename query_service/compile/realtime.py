"""Realtime active users (``/api/2/realtime``), Amplitude's realtime chart.

Buckets are 5 minutes of local wall-clock time in the project's zone, labelled ``HH:MM``; ``xValues`` run from
00:00 to the bucket holding ``now``. ``series[0]`` is today (the local day of ``now``), ``series[1]`` yesterday at
the same labels: each value is the exact number of distinct actors with any event (deduplicated, bots excluded
unless asked) in that bucket. On a DST fall-back day the repeated wall-clock hour is one label holding both UTC
hours' actors; on a spring-forward day the skipped hour's labels are 0.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from query_service.compile.common import Binder, Compiled, events_source, local_midnight_ms, utc_days_between
from query_service.params_insights import RealtimeQuery


def _now_local(q: RealtimeQuery) -> Any:
    return q.now.astimezone(ZoneInfo(q.scope.timezone))


def compile_realtime(q: RealtimeQuery) -> Compiled:
    b = Binder()
    tz = q.scope.timezone
    today = _now_local(q).date()
    start_ms = local_midnight_ms(today - timedelta(days=1), tz)
    end_ms = int(q.now.astimezone(UTC).timestamp() * 1000) + 1
    z = b.bind(tz, "String")
    sql = (f"SELECT toString(toDate(event_time, {z})) AS day,"
           f" formatDateTime(toStartOfFiveMinutes(toDateTime(event_time, {z})), '%H:%i') AS hm,"
           f" toInt64(uniqExact(actor_id)) AS users FROM {events_source(b, q.scope, start_ms, end_ms)}"
           " GROUP BY day, hm ORDER BY day, hm")
    return Compiled(sql=sql, params=b.params, project=q.scope.project, reads_lake=b.reads_lake,
                    utc_days=utc_days_between(start_ms, end_ms))


def labels_until(hour: int, minute: int) -> list[str]:
    last = hour * 60 + minute - minute % 5
    return [f"{m // 60:02d}:{m % 60:02d}" for m in range(0, last + 1, 5)]


def shape_realtime(q: RealtimeQuery, rows: list[dict[str, Any]]) -> dict[str, Any]:
    now = _now_local(q)
    x_values = labels_until(now.hour, now.minute)
    index = {x: i for i, x in enumerate(x_values)}
    days = [now.date().isoformat(), (now.date() - timedelta(days=1)).isoformat()]
    series = [[0] * len(x_values), [0] * len(x_values)]
    for r in rows:
        if r["day"] in days and r["hm"] in index:
            series[days.index(r["day"])][index[r["hm"]]] = int(r["users"])
    return {"xValues": x_values, "series": series, "seriesLabels": ["Today", "Yesterday"], "days": days}
