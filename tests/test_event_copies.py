"""``event_copies``: readers deduplicate only the listed insert_ids, so every load must list its copies.

An insert_id loaded in two hours is listed by ``load_hour`` and counted once by segmentation, funnels,
retention and ``/api/sql``; the listing happens before the swap (crash-safe); re-loading an hour neither
lists ids spuriously nor loses listings; a deployment predating the table gets it filled on ensure.
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
from orchestration.clickhouse.load import load_hour, load_hours, record_copies, swap_hour
from orchestration.clickhouse.schema import SchemaPlan, backfill_copies, ensure_plan
from query_service.app import create_app
from query_service.compile.common import Binder, events_source
from query_service.params import Scope
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, enriched_rows, load_events

H = 3_600_000
DAY = 86_400_000
DAY0 = 1772323200000  # 2026-03-01T00:00Z
PROJECT = "t-copies"
DB = "t_copies"
DUP2 = DAY0 + DAY + 5 * H  # the later copy of dup: the next day (it would count a return and a conversion)


def _events() -> list[dict[str, Any]]:
    """Three actors on two days; ``dup`` (a0's purchase) sent again in a later hour with another time.

    ``botdup``: a bot-flagged copy received first, a human one later (two hours): after deduplication it is
    the bot's, so it is excluded everywhere."""
    ev: list[dict[str, Any]] = []
    for a in range(3):
        ev += [{"time": DAY0 + 2 * H + a, "insert_id": f"s{a}", "actor_id": f"a{a}", "event_type": "signup"},
               {"time": DAY0 + DAY + 2 * H + a, "insert_id": f"r{a}", "actor_id": f"a{a}", "event_type": "open"}]
    ev.append({"time": DAY0 + 3 * H, "insert_id": "dup", "actor_id": "a0", "event_type": "buy",
               "received_at": DAY0 + 3 * H + 10})
    ev.append({"time": DUP2, "insert_id": "dup", "actor_id": "a0", "event_type": "buy",
               "received_at": DUP2 + 10})  # received later: the first copy wins
    ev.append({"time": DAY0 + 4 * H, "insert_id": "moved", "actor_id": "a2", "event_type": "move"})
    ev.append({"time": DAY0 + 9 * H, "insert_id": "moved", "actor_id": "a2x", "event_type": "move",
               "received_at": DAY0 + 9 * H})  # resent under another actor (identity resolved later)
    ev.append({"time": DAY0 + 6 * H, "insert_id": "botdup", "actor_id": "a1", "event_type": "buy", "is_bot": 1,
               "received_at": DAY0 + 6 * H})
    ev.append({"time": DAY0 + 7 * H, "insert_id": "botdup", "actor_id": "a1", "event_type": "buy",
               "received_at": DAY0 + 7 * H})
    return ev


def _client(chserver: ChServer, database: str | None = None) -> Any:
    return clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                         password=chserver.password, database=database or "",
                                         autogenerate_session_id=False)


@pytest.fixture(scope="module")
def world(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    _client(chserver).command(f"CREATE DATABASE IF NOT EXISTS {DB}")
    client = _client(chserver, DB)
    load_events(client, _events(), PROJECT, database=DB)
    home = tmp_path_factory.mktemp("qcopies")
    settings = load_settings(eventpipe_home=home, clickhouse_url=chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{DB}",
                             clickhouse_service_password=chserver.service_password, clickhouse_ttl_days=TTL_DAYS)
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    auth = create_key_with_secret(store, PROJECT)
    with TestClient(create_app(settings, store=store)) as tc:
        yield {"client": client, "tc": tc, "auth": auth, "plan": SchemaPlan(DB, None, TTL_DAYS)}
    store.dispose()
    _client(chserver).command(f"DROP DATABASE IF EXISTS {DB}")


def listed(client: Any, project: str = PROJECT) -> set[str]:
    rows = client.query("SELECT insert_id FROM event_copies FINAL WHERE project = {p:String}",
                        parameters={"p": project}).result_rows
    return {r[0] for r in rows}


def source_rows(client: Any, project: str = PROJECT, include_bots: bool = True) -> list[tuple[str, int]]:
    """(insert_id, event_time ms) of the typed endpoints' source over everything."""
    b = Binder()
    src = events_source(b, Scope(project=project, timezone="UTC", include_bots=include_bots), DAY0 - DAY, DAY0 + 9 * DAY)
    rows = client.query(f"SELECT insert_id, toUnixTimestamp64Milli(event_time) FROM {src} ORDER BY 1, 2",
                        parameters=b.params).result_rows
    return [(r[0], int(r[1])) for r in rows]


def get(world: dict[str, Any], path: str, params: list[tuple[str, str]]) -> Any:
    r = world["tc"].get(path, params=[("start", "20260301"), ("end", "20260303"), *params], auth=world["auth"])
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_loaded_copies_are_listed_and_counted_once(world: dict[str, Any]) -> None:
    c = world["client"]
    assert listed(c) == {"dup", "botdup", "moved"}  # only the ids with rows in two hours
    actors = c.query("SELECT actor_id FROM event_copies FINAL WHERE insert_id = 'moved'").result_rows
    assert sorted(a for (a,) in actors) == ["a2", "a2x"]  # every copy's actor: both are routed to the dedup
    assert [r for r in source_rows(c) if r[0] == "moved"] == [("moved", DAY0 + 4 * H)]
    assert c.command("SELECT count() FROM events WHERE insert_id = 'dup'") == 2  # both rows are there
    rows = source_rows(c)
    assert [r for r in rows if r[0] == "dup"] == [("dup", DAY0 + 3 * H)]  # the first received copy
    assert [r for r in rows if r[0] == "botdup"] == [("botdup", DAY0 + 6 * H)]  # the bot copy, received first
    assert "botdup" not in {r[0] for r in source_rows(c, include_bots=False)}  # bots dropped after dedup
    assert len(rows) == 9


def test_segmentation_funnel_retention_count_once(world: dict[str, Any]) -> None:
    seg = get(world, "/api/2/events/segmentation", [("e", json.dumps({"event_type": "buy"})), ("m", "totals")])
    assert seg["series"][0] == [1, 0, 0]  # dup once, on its first copy's day; botdup is a bot's
    funnel = get(world, "/api/2/funnels", [("e", json.dumps({"event_type": "open"})),
                                           ("e", json.dumps({"event_type": "buy"})), ("cs", str(86400)),
                                           ("mode", "ordered")])
    assert funnel[0]["cumulativeRaw"] == [3, 0]  # the later copy (after a0's open) is not a purchase
    ret = get(world, "/api/2/retention", [("se", json.dumps({"event_type": "signup"})),
                                          ("re", json.dumps({"event_type": "buy"})), ("rm", "n-day")])
    cells = ret["series"][0]["values"]["2026-03-01"]
    assert cells[0]["count"] == 3 and cells[1]["count"] == 0  # no return on day 1: that copy is not the event


def test_sql_agrees(world: dict[str, Any]) -> None:
    r = world["tc"].post("/api/sql", json={"query": "SELECT insert_id, count() AS n FROM events"
                                           " WHERE event_type = 'buy' GROUP BY insert_id"}, auth=world["auth"])
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [{"insert_id": "dup", "n": "1"}] or r.json()["data"] == [{"insert_id": "dup", "n": 1}]


def test_listing_happens_before_the_swap(world: dict[str, Any]) -> None:
    """The pieces of load_hour in order, stopped after the listing (a crash before the swap)."""
    c, plan = world["client"], world["plan"]
    hour = DAY0 + 8 * H
    table = enriched_rows([{"time": hour + 1, "insert_id": "r2", "actor_id": "a2", "event_type": "open",
                            "received_at": DAY0 + 3 * DAY},  # a resend, received after the original
                           {"time": hour + 2, "insert_id": "fresh", "actor_id": "a2", "event_type": "open"}], PROJECT)
    start = datetime.fromtimestamp(hour / 1000, UTC)
    insert_table, ddl, local_table = plan.staging_statements("crashtest")
    try:
        for sql in ddl:
            c.command(sql)
        c.raw_insert(insert_table, list(table.column_names), insert_block=to_parquet_bytes(table), fmt="Parquet")
        record_copies(c, plan, [insert_table], [start])
        assert "r2" in listed(c) and "fresh" not in listed(c)  # listed while the copy is not yet readable
        swap_hour(c, plan, str(hour // 1000), local_table)
    finally:
        c.command(f"DROP TABLE IF EXISTS {local_table}")
    assert c.command("SELECT count() FROM events WHERE insert_id = 'r2'") == 2
    assert [r for r in source_rows(c) if r[0] == "r2"] == [("r2", DAY0 + DAY + 2 * H + 2)]
    load_hour(c, plan, start, b"", 0)  # drop the hour again: the later tests see the fixture's data
    assert [r for r in source_rows(c) if r[0] == "r2"] == [("r2", DAY0 + DAY + 2 * H + 2)]


def test_reloading_an_hour_is_idempotent(world: dict[str, Any]) -> None:
    c, plan = world["client"], world["plan"]
    before = listed(c)
    by_hour: dict[int, list[dict[str, Any]]] = {}
    for e in _events():
        by_hour.setdefault(e["time"] // H, []).append(e)
    for h, evs in sorted(by_hour.items()):  # every hour again, twice: nothing new, nothing lost
        for _ in range(2):
            t = enriched_rows(evs, PROJECT)
            load_hour(c, plan, datetime.fromtimestamp(h * 3600, UTC), to_parquet_bytes(t), t.num_rows)
    assert listed(c) == before
    # the later copy of dup re-loaded without it: still listed (harmless), and dup's only row is counted
    h5 = DUP2 // H
    t = enriched_rows([e for e in by_hour[h5] if e["insert_id"] != "dup"] or [], PROJECT)
    load_hour(c, plan, datetime.fromtimestamp(h5 * 3600, UTC), to_parquet_bytes(t), t.num_rows)
    assert "dup" in listed(c)
    assert [r for r in source_rows(c) if r[0] == "dup"] == [("dup", DAY0 + 3 * H)]
    t = enriched_rows(by_hour[h5], PROJECT)
    load_hour(c, plan, datetime.fromtimestamp(h5 * 3600, UTC), to_parquet_bytes(t), t.num_rows)
    assert listed(c) == before


def test_a_range_load_lists_copies_between_its_hours_and_with_others(world: dict[str, Any]) -> None:
    """load_hours (a range run) lists once for all its hours: copies among them and with hours outside."""
    c, plan, project = world["client"], world["plan"], "t-copies-range"
    base = DAY0 + 5 * DAY

    def hour(h: int, ids: list[str]) -> tuple[datetime, bytes, int]:
        t = enriched_rows([{"time": base + h * H + n, "insert_id": i, "actor_id": "ra", "event_type": "x"}
                           for n, i in enumerate(ids)], project)
        return datetime.fromtimestamp((base + h * H) // 1000, UTC), to_parquet_bytes(t), t.num_rows

    load_hour(c, plan, *hour(0, ["old", "solo0"]))
    assert listed(c, project) == set()
    counts = load_hours(c, plan, [hour(1, ["twin", "old", "solo1"]), hour(2, ["twin"]), hour(3, [])])
    assert counts == [3, 1, 0]
    assert listed(c, project) == {"twin", "old"}
    # the same range again (idempotent), and hour 1 re-loaded alone with its old copy gone: still listed, harmless
    assert load_hours(c, plan, [hour(1, ["twin", "old", "solo1"]), hour(2, ["twin"])]) == [3, 1]
    assert listed(c, project) == {"twin", "old"}
    b = Binder()
    src = events_source(b, Scope(project=project, timezone="UTC", include_bots=True), base - DAY, base + DAY)
    rows = c.query(f"SELECT insert_id, count() FROM {src} GROUP BY 1 ORDER BY 1", parameters=b.params).result_rows
    assert rows == [("old", 1), ("solo0", 1), ("solo1", 1), ("twin", 1)]
    load_hours(c, plan, [(hour(h, [])[0], b"", 0) for h in range(4)])  # leave the fixture's data as it was


def test_backfill_of_a_deployment_predating_the_list(chserver: ChServer) -> None:
    db = "t_copies_pre"
    _client(chserver).command(f"CREATE DATABASE IF NOT EXISTS {db}")
    c = _client(chserver, db)
    try:
        plan = ensure_plan(c, SchemaPlan(db, None, TTL_DAYS))
        rows = enriched_rows([{"time": DAY0 + H, "insert_id": "x", "actor_id": "a", "event_type": "v"},
                              {"time": DAY0 + 2 * H, "insert_id": "x", "actor_id": "a", "event_type": "v"},
                              {"time": DAY0 + 2 * H, "insert_id": "y", "actor_id": "a", "event_type": "v"}], "old")
        c.insert_arrow("events", rows)  # written by an older release: nothing listed
        c.command("DROP TABLE event_copies")
        ensure_plan(c, plan)  # the upgrade: the table is created, then filled from events
        assert listed(c, "old") == {"x"}
        assert [r[0] for r in source_rows(c, "old")] == ["x", "y"]
        c.insert_arrow("events", enriched_rows([{"time": DAY0 + 3 * H, "insert_id": "y", "actor_id": "a",
                                                 "event_type": "v"}], "old"))
        assert backfill_copies(c, plan) is False  # once: later ensures do not rescan events
        assert listed(c, "old") == {"x"}
    finally:
        _client(chserver).command(f"DROP DATABASE IF EXISTS {db}")
