"""Differential test: the query API on the demo's generated product equals the demo's ground truth (demo/truth.py).

The generated events go through the real pipeline code minus Kafka: each becomes a collector envelope and a
lake row (``envelope_to_row``), every hour is enriched in order by ``enrich_hour`` (dedupe, identity stitching,
sessions, bots — identities and sessions carried hour to hour, as the Dagster asset does) and inserted into
``analytics.events`` (48 hours per insert; ``load_hour`` would swap the same rows in hour by hour). Then DAU,
the ``signup_to_purchase`` funnel per entry day and the whole retention triangle (Return On and Return On or
After) are read through the HTTP API.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import clickhouse_connect
import pyarrow as pa
import pytest
from starlette.testclient import TestClient

from demo.generator import DemoConfig, generate
from demo.truth import FUNNELS, expected_figures
from enrichment.rules import EnrichmentConfig, enrich_hour, merge_identity_map, to_parquet_bytes
from eventpipe_core.event_model import encode_envelope, envelope_to_row, make_envelope, rows_to_table
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from orchestration.clickhouse.load import load_hour
from orchestration.clickhouse.schema import SchemaPlan, ensure_plan, list_copies, list_ties
from query_service.app import create_app
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS

HOUR_MS = 3_600_000
PROJECT = "demo-truth"


def _pipeline(client: Any, sent: list[dict[str, Any]], max_per_minute: int) -> None:
    plan = ensure_plan(client, SchemaPlan("analytics", None, TTL_DAYS))
    received0 = int(datetime.now(UTC).timestamp() * 1000)
    by_hour: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for i, event in enumerate(sent):
        env = make_envelope(event, project=PROJECT, received_at_ms=received0 + i, client_ip="127.0.0.1", upload_id="u")
        by_hour[event["time"] // HOUR_MS].append(envelope_to_row(encode_envelope(env), 0, i))
    enriched = []
    carry: dict[str, tuple[int, int]] = {}
    identities: dict[str, str] = {}
    config = EnrichmentConfig(bot_max_events_per_minute=max_per_minute)
    for hour in range(min(by_hour), max(by_hour) + 1):
        start = datetime.fromtimestamp(hour * 3600, UTC)
        result = enrich_hour(rows_to_table(by_hour.get(hour, [])), hour_start=start, carry=carry,
                             identity_map=identities, config=config)
        identities = merge_identity_map(identities, result.identities)
        carry = result.session_state
        if result.table.num_rows:
            enriched.append(result.table)
    # one insert per 48 hours (what load_hour's REPLACE PARTITION would swap in, hour by hour, but faster);
    # the first hour goes through load_hour itself
    first = enriched.pop(0)
    load_hour(client, plan, first["event_hour"][0].as_py(), to_parquet_bytes(first), first.num_rows)
    for i in range(0, len(enriched), 48):
        client.insert_arrow("events", pa.concat_tables(enriched[i:i + 48]))
    list_copies(client, plan, PROJECT)  # the direct inserts bypass load_hour's listings of copies and ties
    list_ties(client, plan, PROJECT)


@pytest.fixture(scope="module")
def demo(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    config = DemoConfig(users=120, days=5, seed=7, project=PROJECT)
    dataset = generate(config)
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password,
                                          autogenerate_session_id=False)
    admin.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password,
                                           database="analytics", autogenerate_session_id=False)
    _pipeline(client, dataset.sent, config.bot_max_events_per_minute)
    expected = expected_figures(dataset.sent, bot_devices=dataset.bot_devices, max_per_minute=config.bot_max_events_per_minute,
                                today=datetime.now(UTC).date(), rejected_requests=0, rejected_events=0, dead_lettered=0)
    home = tmp_path_factory.mktemp("qdemo")
    settings = load_settings(eventpipe_home=home, clickhouse_url=chserver.clickhouse_url,
                             clickhouse_service_password=chserver.service_password, clickhouse_ttl_days=TTL_DAYS,
                             lake_url=f"file://{chserver.data_dir.parent / 'lake'}")  # the lake chserver's service user may read
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    auth = create_key_with_secret(store, PROJECT)
    with TestClient(create_app(settings, store=store)) as tc:
        yield {"get": lambda path, **p: tc.get(path, params=p, auth=auth), "config": config, "expected": expected}
    store.dispose()


def _range(config: DemoConfig) -> dict[str, str]:
    return {"start": config.first_day.strftime("%Y%m%d"), "end": config.last_day.strftime("%Y%m%d")}


def test_dau_equals_truth(demo: dict[str, Any]) -> None:
    r = demo["get"]("/api/2/events/segmentation", e=json.dumps({"event_type": "_active"}), **_range(demo["config"]))
    data = r.json()["data"]
    assert dict(zip(data["xValues"], data["series"][0], strict=True)) == demo["expected"]["dau"]
    users = demo["get"]("/api/2/users", m="active", **_range(demo["config"])).json()["data"]
    assert users["series"] == data["series"]


def test_signup_funnel_per_entry_day_equals_truth(demo: dict[str, Any]) -> None:
    funnel = next(f for f in FUNNELS if f.name == "signup_to_purchase")
    assert funnel.hold is None
    r = demo["get"]("/api/2/funnels", e=[json.dumps({"event_type": s}) for s in funnel.steps], mode="ordered",
                    cs=str(funnel.window_seconds), **_range(demo["config"]))
    data = r.json()["data"][0]
    got = {d: c for d, c in zip(data["dayFunnels"]["xValues"], data["dayFunnels"]["series"], strict=True) if c[0]}
    assert got == demo["expected"]["funnels"]["signup_to_purchase"]
    assert sum(c[0] for c in got.values()) >= data["cumulativeRaw"][0] > 0  # an actor can enter on several days


@pytest.mark.parametrize(("rm", "key"), [("n-day", "returned_on"), ("rolling", "returned_on_or_after")])
def test_retention_triangle_equals_truth(demo: dict[str, Any], rm: str, key: str) -> None:
    r = demo["get"]("/api/2/retention", se=json.dumps({"event_type": "_new"}), re=json.dumps({"event_type": "_all"}),
                    rm=rm, **_range(demo["config"]))
    values = r.json()["data"]["series"][0]["values"]
    expected = demo["expected"]["retention"]
    for day, cells in values.items():
        complete = [c["count"] for c in cells if not c["incomplete"]]
        if day not in expected:
            assert cells[0]["count"] == 0
            continue
        assert cells[0]["count"] == cells[0]["outof"] == expected[day]["cohort_users"]
        assert complete == expected[day][key][: len(complete)]
        assert len(complete) == len(expected[day][key])
    assert (datetime.now(UTC).date() - timedelta(days=1)).isoformat() in values
