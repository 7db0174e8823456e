"""DDL of ``analytics.events``, ``identity_map``, ``event_copies`` and ``event_ties`` — the one place it is written.

Single server (default): ``events`` is a ReplacingMergeTree partitioned by ``toYYYYMMDD(event_hour)`` (day,
the default: loads still replace hours, ``orchestration.clickhouse.load``) — or, with
``CLICKHOUSE_PARTITION=hour`` at creation, by ``event_hour``.
With ``CLICKHOUSE_CLUSTER`` set (the scale-out path): every statement runs ``ON CLUSTER``, data
lives in ``events_local`` (ReplicatedReplacingMergeTree on each shard) and ``events`` is a
Distributed table over it, sharded by ``actor_id`` so one actor's events stay on one shard
(funnels/retention run shard-locally). The dbt models read ``events`` in both layouts.

``event_copies (project, actor_id, insert_id)`` lists every insert_id with more than one row in ``events``,
with the actor_id of each of its rows (copies exist only across hours: each enriched hour is deduplicated
and replaced whole). Readers deduplicate only the events of the listed actors and pass every other row
through (``query_service.compile.common.events_source``): routing by actor_id, the sort key's first column
after the project, costs no read of the wide insert_id column. Loads list an hour's copies before swapping
it in (``orchestration.clickhouse.load``). On a cluster the data is in ``event_copies_local``, sharded by
actor like ``events``.

``event_ties (project, actor_id)`` lists every actor with two events of equal ``event_time`` (distinct
insert_ids): only their insert_ids order anything (funnels order ties by (event_time, insert_id)), so funnel
readers skip the insert_id column — 40 % of a funnel's time on 10 M events — for every other actor. Ties
share an hour, so a load lists its staged hours' ties (with the rows the table already holds in them)
before and after the swap, as for copies; :func:`backfill_ties` lists what a table predating it holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from eventpipe_core.funnel_sql import UDF_BODIES
from eventpipe_core.settings import Settings

log = logging.getLogger(__name__)

# Contract with dbt_project (column order and types).
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_time", "DateTime64(3, 'UTC')"),
    ("event_hour", "DateTime('UTC')"),
    ("event_date", "Date"),
    ("insert_id", "String"),
    ("event_type", "LowCardinality(String)"),
    ("project", "LowCardinality(String)"),
    ("user_id", "Nullable(String)"),
    ("device_id", "Nullable(String)"),
    ("resolved_user_id", "Nullable(String)"),
    ("actor_id", "String"),
    ("session_id", "Int64"),
    ("event_id", "Nullable(Int64)"),
    ("event_properties", "String"),
    ("user_properties", "String"),
    ("groups", "String"),
    ("group_properties", "String"),
    ("app_version", "String"),
    ("platform", "String"),
    ("os_name", "String"),
    ("os_version", "String"),
    ("device_brand", "String"),
    ("device_manufacturer", "String"),
    ("device_model", "String"),
    ("carrier", "String"),
    ("language", "String"),
    ("country", "String"),
    ("region", "String"),
    ("city", "String"),
    ("dma", "String"),
    ("location_lat", "Nullable(Float64)"),
    ("location_lng", "Nullable(Float64)"),
    ("ip", "String"),
    ("ua_browser", "String"),
    ("ua_browser_version", "String"),
    ("ua_os", "String"),
    ("ua_device", "String"),
    ("is_bot", "UInt8"),
    ("bot_reason", "String"),
    ("price", "Nullable(Float64)"),
    ("quantity", "Nullable(Int64)"),
    ("revenue", "Nullable(Float64)"),
    ("product_id", "String"),
    ("revenue_type", "String"),
    ("library", "String"),
    ("user_agent", "String"),
    ("received_at", "DateTime64(3, 'UTC')"),
    ("client_ip", "String"),
    ("upload_id", "String"),
    ("plan_violations", "String"),
    ("kafka_partition", "Int32"),
    ("kafka_offset", "Int64"),
    ("ingested_at", "DateTime64(3, 'UTC')"),
)
EVENT_COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in EVENT_COLUMNS)

# Layout "actor" (new tables): rows sorted by actor, then time — an actor's events are contiguous, so its
# per-actor columns (ids, device, geo, user agent) compress to runs and funnels/retention read them in order;
# segmentation's event_type filter is served by a set skipping index instead of the key. insert_id stays in
# the key: the ReplacingMergeTree collapses only exact copies, as before.
ORDER_BY = "(project, actor_id, event_time, insert_id)"
INDEXES = ("INDEX event_type_set event_type TYPE set(256) GRANULARITY 1",)
# Codecs (values only: types are the contract above). Times and counters are monotone within an actor: Delta.
DELTA_COLUMNS = frozenset({"event_time", "received_at", "ingested_at", "session_id", "kafka_offset"})
DEFAULT_CODEC = "ZSTD(9)"  # 62 -> 57 B/event vs ZSTD(3) on the demo at ~3k events/hour; decoding speed is the same
# Layout "legacy": tables created before the actor layout keep theirs (CREATE TABLE IF NOT EXISTS never alters
# them); their staging tables must match it for REPLACE PARTITION (same key, indexes), see adapt_to_existing.
LEGACY_ORDER_BY = "(project, event_type, event_time, insert_id)"
STAGING_PREFIX = "events__stage_"
LOCK_PREFIX = "events__lock_"
# Partitioning (CLICKHOUSE_PARTITION, fixed when the table is created; day on one server, hour on a cluster).
# "hour": a load swaps one partition. "day": ~30 partitions a month instead of ~720 — measured with
# bench/partitions.py, the typed queries run about twice as fast and the table is ~8 % smaller — but a load
# rewrites its whole day (orchestration.clickhouse.load).
PARTITION_KEYS = {"hour": "event_hour", "day": "toYYYYMMDD(event_hour)"}


@dataclass(frozen=True)
class SchemaPlan:
    """Names and DDL for one deployment shape (single server or cluster)."""

    database: str
    cluster: str | None
    ttl_days: int
    layout: str = "actor"  # "legacy" for a data table created before the actor layout (adapt_to_existing)
    partition: str = "hour"  # "day": one partition per UTC day (CLICKHOUSE_PARTITION; adapt_to_existing reads it)

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {quote(self.cluster)}" if self.cluster else ""

    @property
    def events_table(self) -> str:
        """Table readers query (Distributed on a cluster)."""
        return f"{quote(self.database)}.events"

    @property
    def copies_table(self) -> str:
        """Table readers query and loads insert into (Distributed on a cluster)."""
        return f"{quote(self.database)}.event_copies"

    @property
    def ties_table(self) -> str:
        """Table readers query and loads insert into (Distributed on a cluster)."""
        return f"{quote(self.database)}.event_ties"

    @property
    def data_table(self) -> str:
        """Table holding the parts; REPLACE PARTITION targets it."""
        return f"{quote(self.database)}.events_local" if self.cluster else self.events_table

    def engine(self, table: str, replacing_version: str | None = "ingested_at") -> str:
        args = replacing_version or ""
        if self.cluster:
            path = f"'/clickhouse/tables/{{shard}}/{self.database}/{table}', '{{replica}}'"
            return f"ReplicatedReplacingMergeTree({path}{', ' + args if args else ''})"
        return f"ReplacingMergeTree({args})"

    def columns_sql(self) -> str:
        if self.layout == "legacy":
            return ",\n".join(f"    {quote(name)} {ctype}" for name, ctype in EVENT_COLUMNS)
        cols = [f"    {quote(name)} {ctype} CODEC({'Delta, ' if name in DELTA_COLUMNS else ''}{DEFAULT_CODEC})"
                for name, ctype in EVENT_COLUMNS]
        return ",\n".join(cols + [f"    {ix}" for ix in INDEXES])

    @property
    def partition_by(self) -> str:
        return PARTITION_KEYS[self.partition]

    @property
    def order_by(self) -> str:
        return LEGACY_ORDER_BY if self.layout == "legacy" else ORDER_BY

    def events_ddl(self, table_name: str, *, ttl: bool = True) -> str:
        """MergeTree DDL for the data table or a staging table of the same structure."""
        ttl_sql = f"\nTTL event_date + INTERVAL {self.ttl_days} DAY" if ttl else ""
        return (
            f"CREATE TABLE IF NOT EXISTS {quote(self.database)}.{quote(table_name)}{self.on_cluster}\n"
            f"(\n{self.columns_sql()}\n)\nENGINE = {self.engine(table_name)}\n"
            f"PARTITION BY {self.partition_by}\nORDER BY {self.order_by}{ttl_sql}\n"
            "SETTINGS index_granularity = 8192"
        )

    def statements(self) -> list[str]:
        db = quote(self.database)
        out = [f"CREATE DATABASE IF NOT EXISTS {db}{self.on_cluster}"]
        if self.cluster:
            out.append(self.events_ddl("events_local"))
            out.append(
                f"CREATE TABLE IF NOT EXISTS {db}.events{self.on_cluster} AS {db}.events_local\n"
                f"ENGINE = Distributed({quote_str(self.cluster)}, {quote_str(self.database)}, 'events_local', "
                "cityHash64(actor_id))"
            )
        else:
            out.append(self.events_ddl("events"))
        id_table = "identity_map_local" if self.cluster else "identity_map"
        out.append(
            f"CREATE TABLE IF NOT EXISTS {db}.{id_table}{self.on_cluster}\n"
            "(\n    device_id String,\n    user_id String,\n    first_seen DateTime64(3, 'UTC')\n)\n"
            f"ENGINE = {self.engine(id_table, replacing_version=None)}\nORDER BY (device_id, user_id)"
        )
        if self.cluster:
            out.append(
                f"CREATE TABLE IF NOT EXISTS {db}.identity_map{self.on_cluster} AS {db}.identity_map_local\n"
                f"ENGINE = Distributed({quote_str(self.cluster)}, {quote_str(self.database)}, 'identity_map_local', "
                "cityHash64(device_id))"
            )
        copies = "event_copies_local" if self.cluster else "event_copies"
        out.append(
            f"CREATE TABLE IF NOT EXISTS {db}.{copies}{self.on_cluster}\n"
            "(\n    project LowCardinality(String),\n    actor_id String,\n    insert_id String\n)\n"
            f"ENGINE = {self.engine(copies, replacing_version=None)}\nORDER BY (project, actor_id, insert_id)"
        )
        if self.cluster:  # sharded like events (by actor): a shard's copies sit beside the actors' events
            out.append(
                f"CREATE TABLE IF NOT EXISTS {db}.event_copies{self.on_cluster} AS {db}.event_copies_local\n"
                f"ENGINE = Distributed({quote_str(self.cluster)}, {quote_str(self.database)}, 'event_copies_local', "
                "cityHash64(actor_id))"
            )
        ties = "event_ties_local" if self.cluster else "event_ties"
        out.append(
            f"CREATE TABLE IF NOT EXISTS {db}.{ties}{self.on_cluster}\n"
            "(\n    project LowCardinality(String),\n    actor_id String\n)\n"
            f"ENGINE = {self.engine(ties, replacing_version=None)}\nORDER BY (project, actor_id)"
        )
        if self.cluster:
            out.append(
                f"CREATE TABLE IF NOT EXISTS {db}.event_ties{self.on_cluster} AS {db}.event_ties_local\n"
                f"ENGINE = Distributed({quote_str(self.cluster)}, {quote_str(self.database)}, 'event_ties_local', "
                "cityHash64(actor_id))"
            )
        # The shared funnel functions (eventpipe_core.funnel_sql): global to the server, callable by every
        # user (readers included); OR REPLACE so an upgrade ships a changed body.
        out += [f"CREATE OR REPLACE FUNCTION {name}{self.on_cluster} AS {body}" for name, body in UDF_BODIES.items()]
        return out

    def ttl_statement(self) -> str:
        return f"ALTER TABLE {self.data_table}{self.on_cluster} MODIFY TTL event_date + INTERVAL {self.ttl_days} DAY"

    def staging_statements(self, suffix: str) -> tuple[str, list[str], str]:
        """(table readers insert into, DDL to create it, local table REPLACE PARTITION reads FROM).

        No TTL on staging tables: a backfill of an old hour must not lose rows before the swap.
        """
        local = f"{STAGING_PREFIX}{suffix}"
        ddl = [self.events_ddl(local, ttl=False)]
        if not self.cluster:
            return f"{quote(self.database)}.{quote(local)}", ddl, f"{quote(self.database)}.{quote(local)}"
        dist = f"{local}_dist"
        ddl.append(
            f"CREATE TABLE IF NOT EXISTS {quote(self.database)}.{quote(dist)}{self.on_cluster} AS "
            f"{quote(self.database)}.{quote(local)}\nENGINE = Distributed({quote_str(self.cluster)}, "
            f"{quote_str(self.database)}, {quote_str(local)}, cityHash64(actor_id))"
        )
        return f"{quote(self.database)}.{quote(dist)}", ddl, f"{quote(self.database)}.{quote(local)}"


def quote(identifier: str | None) -> str:
    """Backquote an identifier (database, table, cluster names come from configuration)."""
    assert identifier is not None
    return "`" + identifier.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_str(value: str | None) -> str:
    assert value is not None
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def schema_plan(settings: Settings) -> SchemaPlan:
    return SchemaPlan(settings.clickhouse.database, settings.clickhouse_cluster, settings.clickhouse_ttl_days,
                      partition=settings.clickhouse_partition or "hour")


def ensure_schema(client, settings: Settings) -> SchemaPlan:  # noqa: ANN001 - clickhouse_connect client
    """Create the database and tables if missing and apply the configured TTL (idempotent)."""
    return ensure_plan(client, schema_plan(settings))


def adapt_to_existing(client, plan: SchemaPlan) -> SchemaPlan:  # noqa: ANN001 - clickhouse_connect client
    """The plan whose staging DDL matches the data table as it exists (legacy sort key or the actor layout).

    Existing deployments keep their table: the new layout applies to tables created from now on (a new
    database, or after a re-load into a fresh table); REPLACE PARTITION needs staging tables of the same
    key and indexes, so loads into a legacy table stage in the legacy layout.
    """
    table = "events_local" if plan.cluster else "events"
    rows = client.query(
        "SELECT sorting_key, partition_key FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": plan.database, "t": table},
    ).result_rows
    if not rows:
        return plan
    key, part_key = (str(v).replace(" ", "") for v in rows[0])
    legacy = key == LEGACY_ORDER_BY.strip("()").replace(" ", "")
    partition = next((name for name, expr in PARTITION_KEYS.items() if expr.replace(" ", "") == part_key), None)
    if partition is None:
        raise ValueError(f"{plan.data_table} is partitioned by {part_key!r}, which no load knows how to replace")
    if partition == "day" and plan.cluster:
        raise ValueError(f"{plan.data_table} is partitioned by day, which is single-server only")
    return replace(plan, layout="legacy" if legacy else "actor", partition=partition)


def ensure_plan(client, plan: SchemaPlan) -> SchemaPlan:  # noqa: ANN001 - clickhouse_connect client
    """:func:`ensure_schema` for an explicit plan (what the Dagster resource holds); returns it adapted to
    the existing data table (:func:`adapt_to_existing`)."""
    for sql in plan.statements():
        client.command(sql)
    plan = adapt_to_existing(client, plan)
    # Apply a changed TTL only when it differs: MODIFY TTL rewrites parts on a real server.
    table = "events_local" if plan.cluster else "events"
    current = client.command(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": plan.database, "t": table},
    )
    if f"toIntervalDay({plan.ttl_days})" not in str(current):
        client.command(plan.ttl_statement())
    backfill_copies(client, plan)
    backfill_ties(client, plan)
    return plan


# The full-table listings (list_copies, list_ties) group every row: on 10 M events each needs > 800 MB of
# hashes in memory (chDB, measured 2026-12-03), ~100 GB at a billion. Spilling past 256 MB keeps them under
# 800 MB at 10 M (7-9 s) and bounded at any size: the one-time backfill of an upgrade must not OOM the server.
LISTING_SETTINGS: dict[str, int] = {"max_bytes_before_external_group_by": 256 << 20}


def _backfill_once(client, plan: SchemaPlan, table: str, columns: tuple[str, ...],  # noqa: ANN001
                   listing: Callable[[Any, SchemaPlan], None]) -> bool:
    """Run ``listing(client, plan)`` unless ``table`` holds its sentinel row, then insert it.

    The sentinel is '' in every one of ``columns`` (no project is named ''); it is written after the listing,
    so a crash half-way lists again at the next ensure (the listings' inserts are idempotent). Returns whether
    it ran."""
    where = " AND ".join(f"{column} = ''" for column in columns)
    if int(client.command(f"SELECT count() FROM {table} WHERE {where}")):
        return False
    t0 = time.monotonic()
    log.info("listing %s of the events already in %s (once, a full scan)", table, plan.events_table)
    listing(client, plan)
    log.info("%s listed in %.1f s", table, time.monotonic() - t0)
    sync = {"insert_distributed_sync": 1} if plan.cluster else None
    values = ", ".join("''" for _ in columns)
    client.command(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})", settings=sync)
    return True


def _list_full(client, plan: SchemaPlan, insert_sql: str, project: str | None) -> None:  # noqa: ANN001
    """Run a full-table listing ``insert_sql`` (its ``{where}`` narrowed to ``project`` when given) with the
    spilling :data:`LISTING_SETTINGS` and, on a cluster, synchronous distributed inserts."""
    where = "" if project is None else "WHERE project = {p:String} "
    settings = {**LISTING_SETTINGS, **({"insert_distributed_sync": 1} if plan.cluster else {})}
    client.command(insert_sql.format(where=where), parameters={"p": project} if project is not None else None,
                   settings=settings)


def backfill_copies(client, plan: SchemaPlan) -> bool:  # noqa: ANN001 - clickhouse_connect client
    """List the copies ``events`` already holds, once: a deployment predating ``event_copies`` has an empty list.
    Done when the sentinel row ``('', '', '')`` is there. Returns whether the listing ran."""
    return _backfill_once(client, plan, plan.copies_table, ("project", "actor_id", "insert_id"),
                          list_copies)


def list_copies(client, plan: SchemaPlan, project: str | None = None) -> None:  # noqa: ANN001
    """List every insert_id with more than one row in ``events`` (of ``project``, or all), with each row's actor:
    a full scan, for the one-time backfill and for writers that bypass ``load_hour`` (tests appending rows).

    ``count() > 1`` rather than "in more than one hour": it also lists copies within an hour written by a path
    other than ``load_hour`` (a listed id with one row is only deduplicated for nothing)."""
    _list_full(client, plan, f"INSERT INTO {plan.copies_table} (project, actor_id, insert_id) SELECT project,"
               f" arrayJoin(groupUniqArray(actor_id)), insert_id FROM {plan.events_table} {{where}}"
               "GROUP BY project, insert_id HAVING count() > 1", project)


def backfill_ties(client, plan: SchemaPlan) -> bool:  # noqa: ANN001 - clickhouse_connect client
    """List the ties ``events`` already holds, once (a table predating ``event_ties``); done when the sentinel
    row ``('', '')`` is there. Returns whether it ran."""
    return _backfill_once(client, plan, plan.ties_table, ("project", "actor_id"), list_ties)


def list_ties(client, plan: SchemaPlan, project: str | None = None) -> None:  # noqa: ANN001
    """List every actor with two rows of one ``event_time`` and distinct insert_ids in ``events`` (of
    ``project``, or all): a full scan, for the one-time backfill and for writers that bypass the loads."""
    _list_full(client, plan, f"INSERT INTO {plan.ties_table} (project, actor_id) SELECT DISTINCT project, actor_id"
               f" FROM (SELECT project, actor_id FROM {plan.events_table} {{where}}"
               "GROUP BY project, actor_id, event_time HAVING uniqExact(insert_id) > 1)", project)
