"""Helpers for query-service tests: enriched events straight into chserver (the project's hour loader), an app.

Events are dicts with ``time`` (ms), ``insert_id``, ``event_type``, ``actor_id`` and optional
``event_properties``, ``user_properties``, ``country``, ``platform``, ``is_bot``, ``received_at`` (ms).
They become rows of the enriched schema and are loaded by the project's range loader ``load_hours`` (REPLACE PARTITION),
so what the API reads is laid out exactly as the pipeline lays it out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from enrichment.rules import ENRICHED_SCHEMA, to_parquet_bytes
from orchestration.clickhouse.load import load_hours
from orchestration.clickhouse.schema import SchemaPlan, ensure_plan, list_copies, list_ties

HOUR_MS = 3_600_000
TTL_DAYS = 36500  # fixed past dates in tests must survive the events TTL
HOURS_PER_LOAD = 48  # hours per range load or append: two days, under ClickHouse's 100 partitions per insert


def enriched_rows(events: list[dict[str, Any]], project: str) -> pa.Table:
    cols: dict[str, list[Any]] = {f.name: [] for f in ENRICHED_SCHEMA}
    for e in sorted(events, key=lambda e: (e["time"], e["insert_id"])):
        t = datetime.fromtimestamp(e["time"] / 1000, UTC)
        row = {
            "event_time": t, "event_hour": t.replace(minute=0, second=0, microsecond=0), "event_date": t.date(),
            "insert_id": e["insert_id"], "event_type": e["event_type"], "project": project,
            "user_id": e.get("user_id", e["actor_id"]), "device_id": e.get("device_id"), "resolved_user_id": None,
            "actor_id": e["actor_id"], "session_id": e.get("session_id", -1), "event_id": None,
            "event_properties": json.dumps(e.get("event_properties") or {}),
            "user_properties": json.dumps(e.get("user_properties") or {}),
            "is_bot": int(e.get("is_bot", 0)), "bot_reason": "ua" if e.get("is_bot") else "",
            "received_at": datetime.fromtimestamp(e.get("received_at", e["time"]) / 1000, UTC),
            "ingested_at": datetime.fromtimestamp(e.get("received_at", e["time"]) / 1000, UTC),
            "kafka_partition": 0, "kafka_offset": 0,
        }
        for f in ENRICHED_SCHEMA:
            if f.name in row:
                cols[f.name].append(row[f.name])
            elif f.name in e:
                cols[f.name].append(e[f.name])
            else:
                cols[f.name].append(None if f.nullable else ("" if pa.types.is_string(f.type) else 0))
    return pa.Table.from_pydict(cols, schema=ENRICHED_SCHEMA)


def load_events(client: Any, events: list[dict[str, Any]], project: str, database: str = "analytics") -> None:
    """Load events of one project: its own hours through ``load_hours``, :data:`HOURS_PER_LOAD` at a time (the
    pipeline's range load: two listing scans of ``events`` per batch, not four per hour — the session's shared
    table grows), hours already holding rows of *another* project appended (a load would replace those rows),
    so tests may share hours."""
    plan = ensure_plan(client, SchemaPlan(database, None, TTL_DAYS))
    by_hour: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_hour[e["time"] // HOUR_MS].append(e)
    shared = {int(h) for (h,) in client.query(
        "SELECT DISTINCT toUInt32(event_hour) FROM events WHERE toUInt32(event_hour) IN {h:Array(UInt32)}"
        " AND project != {p:String}", parameters={"h": [h * 3600 for h in by_hour], "p": project}).result_rows}
    if appended := [e for h, evs in by_hour.items() if h * 3600 in shared for e in evs]:
        insert_append(client, appended, project)

    def staged(hours: list[int]) -> Iterator[tuple[datetime, bytes, int]]:
        for hour in hours:
            table = enriched_rows(by_hour[hour], project)
            yield datetime.fromtimestamp(hour * 3600, UTC), to_parquet_bytes(table), table.num_rows

    own = sorted(h for h in by_hour if h * 3600 not in shared)
    for i in range(0, len(own), HOURS_PER_LOAD):
        load_hours(client, plan, staged(own[i:i + HOURS_PER_LOAD]))


def insert_append(client: Any, events: list[dict[str, Any]], project: str) -> None:
    """Append rows to hours shared with other projects (tests isolate by project, not by hour).

    At most :data:`HOURS_PER_LOAD` hours per insert: ClickHouse refuses blocks spanning more than 100 partitions."""
    hours = sorted({e["time"] // HOUR_MS for e in events})
    for i in range(0, len(hours), HOURS_PER_LOAD):
        chunk = set(hours[i:i + HOURS_PER_LOAD])
        client.insert_arrow("events", enriched_rows([e for e in events if e["time"] // HOUR_MS in chunk], project))
    # appended rows bypass load_hour's listings: list this project's copies (readers dedup only listed ids)
    # and ties (funnels read only listed actors' insert_ids)
    plan = SchemaPlan(client.database or "analytics", None, TTL_DAYS)
    list_copies(client, plan, project)
    list_ties(client, plan, project)
