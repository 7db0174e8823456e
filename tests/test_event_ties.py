"""``event_ties``: funnels read insert_ids only for the listed actors, so every writer must list its ties.

Two events of one actor at the same millisecond are ordered by insert_id (DESIGN §7). Funnels skip reading
insert_id for actors not in ``event_ties`` (``events_source(tie_ids_only=True)``), so a tie split across two
parts of an hour (a live append beside the canonical load) is ordered by insert_id only if the append listed
it. Both orientations are checked (appended row first or second in insert_id order), so whichever part the
server happens to read first, an unlisted tie would turn one of the two actors' answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import clickhouse_connect
import pytest
from starlette.testclient import TestClient

from enrichment.rules import to_parquet_bytes
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from orchestration.clickhouse.load import append_hour, load_hour, load_hours
from orchestration.clickhouse.schema import SchemaPlan, backfill_ties, ensure_plan
from query_service.app import create_app
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, enriched_rows

H = 3_600_000
DAY0 = 1772323200000  # 2026-03-01T00:00Z
T = DAY0 + 5 * H + 1234  # the tied millisecond
PROJECT = "t-ties"


def _client(chserver: ChServer, database: str = "") -> Any:
    return clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                         password=chserver.password, database=database,
                                         autogenerate_session_id=False)


def _hour(events: list[dict[str, Any]]) -> tuple[datetime, bytes, int]:
    table = enriched_rows(events, PROJECT)
    return datetime.fromtimestamp(T // H * 3600, UTC), to_parquet_bytes(table), table.num_rows


def tied(c: Any) -> set[str]:
    return {r[0] for r in c.query("SELECT actor_id FROM event_ties WHERE project = {p:String}",
                                  parameters={"p": PROJECT}).result_rows}


@pytest.fixture()
def world(chserver: ChServer, tmp_path: Any) -> Iterator[dict[str, Any]]:
    db = f"t_ties_{tmp_path.name[-12:].replace('-', '_')}"
    _client(chserver).command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client = _client(chserver, db)
    plan = ensure_plan(client, SchemaPlan(db, None, TTL_DAYS))
    settings = load_settings(eventpipe_home=tmp_path, clickhouse_url=chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{db}",
                             clickhouse_service_password=chserver.service_password, clickhouse_ttl_days=TTL_DAYS)
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    auth = create_key_with_secret(store, PROJECT)
    try:
        with TestClient(create_app(settings, store=store)) as tc:
            yield {"client": client, "plan": plan, "tc": tc, "auth": auth}
    finally:
        store.dispose()
        _client(chserver).command(f"DROP DATABASE IF EXISTS {db}")


def funnel(w: dict[str, Any]) -> dict[str, list[int]]:
    """A → B bars per actor (each actor has its own country: the totals alone would hide two swapped ties)."""
    r = w["tc"].get("/api/2/funnels", auth=w["auth"], params=[
        ("e", json.dumps({"event_type": "A"})), ("e", json.dumps({"event_type": "B"})),
        ("start", "20260301"), ("end", "20260301"), ("mode", "ordered"), ("g", "country")])
    assert r.status_code == 200, r.text
    return {g["groupValue"]: g["cumulativeRaw"] for g in r.json()["data"]}


def ev(t: int, insert_id: str, actor: str, event_type: str) -> dict[str, Any]:
    return {"time": t, "insert_id": insert_id, "actor_id": actor, "event_type": event_type, "country": actor}


def test_a_live_append_lists_its_ties_and_funnels_order_them_by_insert_id(world: dict[str, Any]) -> None:
    """x: entry A loaded ("b"), its B appended ("a" < "b": B comes first, no conversion).
    y: B loaded ("b"), entry A appended ("a": A comes first, a conversion). Expected bars: 2 entered, 1 converted."""
    c, plan = world["client"], world["plan"]
    loaded = [ev(T, "b", "x", "A"), ev(T, "b2", "y", "B"), ev(T - 5, "z", "calm", "A"), ev(T + 5, "w", "calm", "B")]
    load_hour(c, plan, *_hour(loaded))
    assert tied(c) == set()  # no two events of one actor share a time yet
    appended = [ev(T, "a", "x", "B"), ev(T, "a2", "y", "A")]
    append_hour(c, plan, *_hour(appended))
    assert tied(c) == {"x", "y"}  # "calm" has no ties: its insert_ids are never read
    assert c.command("SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'events'"
                     " AND active") >= 2  # the tie really spans two parts
    assert funnel(world) == {"x": [1, 0], "y": [1, 1], "calm": [1, 1]}  # x's B precedes its A


def test_a_load_lists_ties_within_its_hours_and_a_reload_keeps_them(world: dict[str, Any]) -> None:
    c, plan = world["client"], world["plan"]
    hour = [ev(T, "b", "x", "A"), ev(T, "a", "x", "B"), ev(T + 1, "c", "y", "A")]
    load_hours(c, plan, [_hour(hour)])
    assert tied(c) == {"x"}
    load_hours(c, plan, [_hour(hour)])  # the same rows again: identical rows are no ties, nothing new
    assert tied(c) == {"x"}
    assert funnel(world) == {"x": [1, 0], "y": [1, 0]}


def test_a_table_predating_event_ties_gets_it_filled_once(world: dict[str, Any]) -> None:
    c, plan = world["client"], world["plan"]
    # written by an older release: nothing listed
    c.insert_arrow("events", enriched_rows([ev(T, "b", "x", "A"), ev(T, "a", "x", "B")], PROJECT))
    c.command("DROP TABLE event_ties")
    ensure_plan(c, plan)  # the upgrade: created, then filled from events
    assert tied(c) == {"x"}
    c.insert_arrow("events", enriched_rows([ev(T, "d", "y", "A"), ev(T, "e", "y", "A")], PROJECT))
    assert backfill_ties(c, plan) is False  # once: later ensures do not rescan events
    assert tied(c) == {"x"}
