"""analytics.events DDL: the column contract, TTL from settings, the ON CLUSTER layout, idempotent hour swap."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import clickhouse_connect
import pandas as pd
import pyarrow as pa
import pytest

from enrichment.rules import ENRICHED_COLUMNS, enrich_hour, to_parquet_bytes
from eventpipe_core.event_model import RAW_EVENT_SCHEMA
from eventpipe_core.settings import load_settings
from orchestration.clickhouse.load import load_hour, read_identity_map, write_identities
from orchestration.clickhouse.schema import EVENT_COLUMNS, SchemaPlan, ensure_schema
from tests.chserver_support import ChServer
from tests.orchestration_support import raw_row

CONTRACT = (
    "event_time DateTime64(3, 'UTC'), event_hour DateTime('UTC'), event_date Date, insert_id String, "
    "event_type LowCardinality(String), project LowCardinality(String), user_id Nullable(String), "
    "device_id Nullable(String), resolved_user_id Nullable(String), actor_id String, session_id Int64, "
    "event_id Nullable(Int64), event_properties String, user_properties String, groups String, group_properties String, "
    "app_version String, platform String, os_name String, os_version String, device_brand String, "
    "device_manufacturer String, device_model String, carrier String, language String, country String, region String, "
    "city String, dma String, location_lat Nullable(Float64), location_lng Nullable(Float64), ip String, ua_browser String, "
    "ua_browser_version String, ua_os String, ua_device String, is_bot UInt8, bot_reason String, price Nullable(Float64), "
    "quantity Nullable(Int64), revenue Nullable(Float64), product_id String, revenue_type String, library String, "
    "user_agent String, received_at DateTime64(3, 'UTC'), client_ip String, upload_id String, plan_violations String, "
    "kafka_partition Int32, kafka_offset Int64, ingested_at DateTime64(3, 'UTC')"
)


@pytest.fixture
def database(chserver: ChServer) -> Iterator[tuple[str, object]]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password)
    yield name, client
    client.command(f"DROP DATABASE IF EXISTS {name}")


def test_events_table_matches_the_contract_and_ttl_follows_settings(chserver: ChServer, database) -> None:  # noqa: ANN001
    name, client = database
    url = chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{name}"
    ensure_schema(client, load_settings(clickhouse_url=url, clickhouse_ttl_days=90))
    ensure_schema(client, load_settings(clickhouse_url=url, clickhouse_ttl_days=90))  # idempotent
    described = client.query(f"DESCRIBE TABLE {name}.events").result_rows
    assert ", ".join(f"{r[0]} {r[1]}" for r in described) == CONTRACT
    assert tuple(n for n, _ in EVENT_COLUMNS) == ENRICHED_COLUMNS
    ddl = client.command(f"SELECT engine_full FROM system.tables WHERE database = '{name}' AND name = 'events'")
    assert "ReplacingMergeTree(ingested_at)" in ddl and "toIntervalDay(90)" in ddl
    assert "PARTITION BY toYYYYMMDD(event_hour)" in ddl  # day partitions: the single-server default
    ensure_schema(client, load_settings(clickhouse_url=url, clickhouse_ttl_days=30))
    ddl = client.command(f"SELECT engine_full FROM system.tables WHERE database = '{name}' AND name = 'events'")
    assert "toIntervalDay(30)" in ddl
    cols = client.query(f"DESCRIBE TABLE {name}.identity_map").result_rows
    assert [(r[0], r[1]) for r in cols] == [("device_id", "String"), ("user_id", "String"),
                                             ("first_seen", "DateTime64(3, 'UTC')")]


def test_hour_swap_replaces_and_empty_hour_clears(chserver: ChServer, database) -> None:  # noqa: ANN001
    name, client = database
    settings = load_settings(clickhouse_url=chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{name}")
    plan = ensure_schema(client, settings)
    hour = datetime(2026, 3, 1, 10, tzinfo=UTC)
    other = datetime(2026, 3, 1, 11, tzinfo=UTC)
    def parquet(ids: list[str], h: datetime) -> tuple[bytes, int]:
        table = enrich_hour(pa.Table.from_pylist([raw_row(i, h) for i in ids], schema=RAW_EVENT_SCHEMA), hour_start=h).table
        return to_parquet_bytes(table), table.num_rows

    assert load_hour(client, plan, other, *parquet(["x"], other)) == 1
    assert load_hour(client, plan, hour, *parquet(["a", "b", "c"], hour)) == 3
    assert load_hour(client, plan, hour, *parquet(["a", "b"], hour)) == 2  # replaced, not appended
    assert load_hour(client, plan, hour, *parquet([], hour)) == 0  # an hour that became empty is cleared
    assert client.command(f"SELECT count() FROM {name}.events") == 1  # the other hour untouched


def test_existing_legacy_table_keeps_its_layout_and_loads(chserver: ChServer, database) -> None:  # noqa: ANN001
    """A deployment created before the actor layout: ensure_schema leaves its table alone, hour loads still swap."""
    name, client = database
    settings = load_settings(clickhouse_url=chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{name}")
    for sql in SchemaPlan(name, None, 90, layout="legacy").statements():
        client.command(sql)
    plan = ensure_schema(client, settings)
    assert plan.layout == "legacy"
    key = f"SELECT sorting_key FROM system.tables WHERE database = '{name}' AND name = 'events'"
    assert client.command(key) == "project, event_type, event_time, insert_id"
    hour = datetime(2026, 3, 1, 10, tzinfo=UTC)
    table = enrich_hour(pa.Table.from_pylist([raw_row(i, hour) for i in "abc"], schema=RAW_EVENT_SCHEMA), hour_start=hour).table
    fresh = SchemaPlan(name, None, 90)  # what the Dagster resource holds: the new layout, adapted at load time
    assert load_hour(client, fresh, hour, to_parquet_bytes(table), table.num_rows) == 3
    client.command(f"DROP TABLE {name}.events")
    assert ensure_schema(client, settings).layout == "actor"  # a new table gets the actor layout
    assert client.command(key) == "project, actor_id, event_time, insert_id"
    assert load_hour(client, fresh, hour, to_parquet_bytes(table), table.num_rows) == 3


def test_cluster_layout_ddl() -> None:
    plan = SchemaPlan(database="analytics", cluster="main", ttl_days=30)
    sql = "\n".join(plan.statements())
    assert "CREATE DATABASE IF NOT EXISTS `analytics` ON CLUSTER `main`" in sql
    assert "CREATE TABLE IF NOT EXISTS `analytics`.`events_local` ON CLUSTER `main`" in sql
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/analytics/events_local', '{replica}', ingested_at)" in sql
    assert "ENGINE = Distributed('main', 'analytics', 'events_local', cityHash64(actor_id))" in sql
    assert "ENGINE = Distributed('main', 'analytics', 'identity_map_local', cityHash64(device_id))" in sql
    assert plan.data_table == "`analytics`.events_local" and plan.events_table == "`analytics`.events"
    insert_into, ddl, local = plan.staging_statements("2026030110_ab")
    assert insert_into.endswith("_dist`") and local == "`analytics`.`events__stage_2026030110_ab`"
    assert all("ON CLUSTER `main`" in d for d in ddl) and "TTL" not in ddl[0]
    single = SchemaPlan(database="analytics", cluster=None, ttl_days=90)
    assert "ON CLUSTER" not in "\n".join(single.statements()) and "Distributed" not in "\n".join(single.statements())


def test_identity_map_earliest_user_wins_and_chunked_reads(chserver: ChServer, database) -> None:  # noqa: ANN001
    name, client = database
    plan = ensure_schema(client, load_settings(clickhouse_url=chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{name}"))
    t0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
    learned = pd.DataFrame({
        "device_id": [f"dev-{i}" for i in range(5)] + ["dev-0"],
        "user_id": [f"user-{i}" for i in range(5)] + ["late-user"],
        "first_seen": [t0] * 5 + [t0 + timedelta(hours=1)],
    })
    assert write_identities(client, plan, learned) == 6
    assert write_identities(client, plan, learned) == 6  # re-run of the same hour: harmless
    expected = {f"dev-{i}": f"user-{i}" for i in range(5)}
    assert read_identity_map(client, plan, [f"dev-{i}" for i in range(5)] + ["dev-unknown"], chunk=2) == expected
    assert read_identity_map(client, plan) == expected
    assert read_identity_map(client, plan, []) == {}
