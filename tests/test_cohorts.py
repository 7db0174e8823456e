"""Behavioral and static cohorts over a real chserver: materialized memberships equal an independent pure-Python
computation on generated events (duplicates and bots included), the Dagster asset writes the same snapshot, and a
segmentation filtered by ``userdata_cohort`` equals the same computation."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import clickhouse_connect
import pytest
from starlette.testclient import TestClient

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.cohorts import EU_COUNTRIES, CohortError, create_cohort, list_cohorts, update_cohort
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from orchestration.clickhouse.schema import SchemaPlan, ensure_plan
from orchestration.cohorts.materialize import materialize_all, read_members
from query_service.app import create_app
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, insert_append

PROJECT = "cohortshop"
FIRST = date(2025, 6, 1)
DAYS = 20
AS_OF = FIRST + timedelta(days=DAYS - 1)
COUNTRIES = ["France", "Germany", "United States", "Spain", "Brazil", ""]
DAY_MS = 86_400_000


def ms(d: date, seconds: int = 0) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000) + seconds * 1000


def generate() -> list[dict[str, Any]]:
    rng = random.Random(16)
    events: list[dict[str, Any]] = []
    for a in range(60):
        actor = f"user-{a:03d}"
        plan = rng.choice(["paid", "free"])
        country = rng.choice(COUNTRIES)
        for k in range(DAYS):
            d = FIRST + timedelta(days=k)
            for n in range(rng.randint(0, 4)):
                et = rng.choice(["view", "view", "purchase", "error"])
                if rng.random() < 0.05:
                    plan = "paid" if plan == "free" else "free"  # a user property changes over time
                if rng.random() < 0.05:
                    country = rng.choice(COUNTRIES)
                t = ms(d, rng.randint(0, 86_399))
                e = {"time": t, "insert_id": f"{actor}-{k}-{n}", "actor_id": actor, "event_type": et,
                     "event_properties": {"amount": rng.choice([5, 15, 50])} if et == "purchase" else {},
                     "user_properties": {"plan": plan} if rng.random() < 0.7 else {}, "country": country,
                     "received_at": t + 1000, "is_bot": 1 if a == 59 else 0}
                events.append(e)
                if rng.random() < 0.05:  # a retried copy landed in a later hour: counted once
                    events.append({**e, "time": t + 3_600_000, "received_at": t + 7_200_000})
    return events


EVENTS = generate()


# --- the independent reference -------------------------------------------------------------------------------------

def deduped(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first: dict[str, dict[str, Any]] = {}
    for e in sorted(events, key=lambda e: (e["received_at"], e["time"])):
        first.setdefault(e["insert_id"], e)
    return [e for e in first.values() if not e["is_bot"]]


def _prop_value(e: dict[str, Any], prop: str) -> str:
    if prop == "country":
        return e.get("country", "")
    v = (e.get("user_properties") or {}).get(prop)
    return "" if v is None else str(v)


def _cmp(value: str, op: str, values: list[str]) -> bool:
    values = [c for v in values for c in (EU_COUNTRIES if v == "@EU" else [v])]
    if op == "is":
        return value in values
    if op == "is not":
        return value not in values
    if op == "greater":
        try:
            return float(value) > float(values[0])
        except ValueError:
            return False
    raise AssertionError(op)


def reference_members(definition: dict[str, Any], as_of: date) -> set[str]:
    end = ms(as_of + timedelta(days=1))
    by_actor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in deduped(EVENTS):
        if e["time"] < end:
            by_actor[e["actor_id"]].append(e)
    out = set()
    for actor, evs in by_actor.items():
        results = []
        for c in definition["conditions"]:
            if c["type"] in ("performed", "not_performed"):
                n = sum(1 for e in evs if e["event_type"] == c["event_type"] and e["time"] >= end - c["days"] * DAY_MS
                        and all(_cmp(str(e["event_properties"].get(f["prop"], "")), f["op"], f["values"])
                                for f in c.get("filters", [])))
                if c["type"] == "not_performed":
                    results.append(n == 0)
                else:
                    results.append({">=": n >= c["count"], "<=": n <= c["count"], "=": n == c["count"]}[c["op"]])
            else:
                latest = [e for e in sorted(evs, key=lambda e: e["time"]) if _prop_value(e, c["prop"]) != ""]
                value = _prop_value(latest[-1], c["prop"]) if latest else ""
                results.append(_cmp(value, c["op"], c["values"]))
        if (all(results) if definition.get("match", "all") == "all" else any(results)):
            out.add(actor)
    return out


DEFINITIONS = {
    "big_buyers": {"conditions": [{"type": "performed", "event_type": "purchase", "op": ">=", "count": 2, "days": 7,
                                   "filters": [{"prop": "amount", "op": "greater", "values": [10]}]}]},
    "error_free": {"conditions": [{"type": "not_performed", "event_type": "error", "days": 5}]},
    "paid_users_in_EU": {"conditions": [{"type": "property", "prop": "plan", "op": "is", "values": ["paid"]},
                                        {"type": "property", "prop": "country", "op": "is", "values": ["@EU"]}]},
    "quiet_or_us": {"match": "any",
                    "conditions": [{"type": "performed", "event_type": "view", "op": "<=", "count": 1, "days": 3},
                                   {"type": "property", "prop": "country", "op": "is", "values": ["United States"]}]},
}
STATIC = ["user-001", "user-002", "user-040", "not-seen-anywhere"]


@pytest.fixture(scope="module")
def env(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("cohorts")
    settings = load_settings(eventpipe_home=home, clickhouse_url=chserver.clickhouse_url, dagster_partitions_start="2025-01-01",
                             clickhouse_service_password=chserver.service_password,
                             lake_url=f"file://{chserver.data_dir.parent / 'lake'}",
                             clickhouse_ttl_days=TTL_DAYS)  # the Dagster resource ensures the events TTL
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password,
                                          autogenerate_session_id=False)
    admin.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password,
                                           database="analytics", autogenerate_session_id=False)
    ensure_plan(client, SchemaPlan("analytics", None, TTL_DAYS))
    by_hour: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in EVENTS:
        by_hour[e["time"] // 3_600_000].append(e)
    hours = sorted(by_hour)
    for i in range(0, len(hours), 90):  # <= 100 hour partitions per insert block (chserver drops bigger ones silently)
        insert_append(client, [e for h in hours[i:i + 90] for e in by_hour[h]], PROJECT)
    assert client.query(f"SELECT count() FROM events WHERE project = '{PROJECT}'").result_rows[0][0] == len(EVENTS)
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    auth = create_key_with_secret(store, PROJECT)
    ids = {name: create_cohort(store, PROJECT, name, d).id for name, d in DEFINITIONS.items()}
    ids["static"] = create_cohort(store, PROJECT, "static", static_members=STATIC).id
    with TestClient(create_app(settings, store=store)) as tc:
        yield {"client": client, "store": store, "ids": ids, "settings": settings, "http": tc, "auth": auth}
    store.dispose()


def test_memberships_equal_the_reference(env: dict[str, Any]) -> None:
    counts = materialize_all(env["client"], "analytics", env["store"], AS_OF)
    assert set(counts) == set(env["ids"].values())
    for name, definition in DEFINITIONS.items():
        as_of, members = read_members(env["client"], "analytics", env["ids"][name])
        want = reference_members(definition, AS_OF)
        assert as_of == AS_OF and set(members) == want, name
        assert 0 < len(want) < 59, name  # each cohort splits the population: the test could fail
    assert read_members(env["client"], "analytics", env["ids"]["static"])[1] == sorted(STATIC)
    assert "user-059" not in read_members(env["client"], "analytics", env["ids"]["quiet_or_us"])[1]  # the bot


def test_earlier_snapshot_and_edit(env: dict[str, Any]) -> None:
    earlier = AS_OF - timedelta(days=6)
    materialize_all(env["client"], "analytics", env["store"], earlier, only={env["ids"]["big_buyers"]})
    _, members = read_members(env["client"], "analytics", env["ids"]["big_buyers"], earlier)
    assert set(members) == reference_members(DEFINITIONS["big_buyers"], earlier)
    # editing a definition and re-materializing the same day replaces the snapshot (leavers removed)
    edited = {"conditions": [{"type": "performed", "event_type": "purchase", "op": ">=", "count": 4, "days": 7}]}
    update_cohort(env["store"], PROJECT, env["ids"]["big_buyers"], definition=edited)
    materialize_all(env["client"], "analytics", env["store"], earlier, only={env["ids"]["big_buyers"]})
    _, members = read_members(env["client"], "analytics", env["ids"]["big_buyers"], earlier)
    assert set(members) == reference_members(edited, earlier)
    update_cohort(env["store"], PROJECT, env["ids"]["big_buyers"], definition=DEFINITIONS["big_buyers"])


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        ({"conditions": []}, "conditions"),
        ({"conditions": [{"type": "performed", "event_type": "x", "days": 0}]}, "conditions[0].days"),
        ({"conditions": [{"type": "performed", "event_type": "x", "days": 3, "op": ">"}]}, "conditions[0].op"),
        ({"conditions": [{"type": "property", "prop": "plan", "op": "is", "values": []}]}, "conditions[0].values"),
        ({"match": "some", "conditions": [{"type": "not_performed", "event_type": "x", "days": 3}]}, "match"),
        ({"conditions": [{"type": "lucky"}]}, "conditions[0].type"),
    ],
)
def test_bad_definitions_name_the_field(env: dict[str, Any], definition: dict, field: str) -> None:
    with pytest.raises(CohortError) as exc:
        create_cohort(env["store"], PROJECT, "bad", definition)
    assert exc.value.field == field
    assert "bad" not in {c.name for c in list_cohorts(env["store"], PROJECT)}


def test_segmentation_filtered_by_cohort_equals_the_reference(env: dict[str, Any]) -> None:
    materialize_all(env["client"], "analytics", env["store"], AS_OF)
    for name in ("paid_users_in_EU", "static"):
        members = reference_members(DEFINITIONS[name], AS_OF) if name != "static" else set(STATIC)
        for op in ("is", "is not"):
            r = env["http"].get("/api/2/events/segmentation", auth=env["auth"], params={
                "e": json.dumps({"event_type": "view"}), "start": FIRST.strftime("%Y%m%d"), "end": AS_OF.strftime("%Y%m%d"),
                "s": json.dumps([{"prop": "userdata_cohort", "op": op, "values": [env["ids"][name]]}])})
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            want = []
            for x in data["xValues"]:
                d = date.fromisoformat(x)
                want.append(len({e["actor_id"] for e in deduped(EVENTS) if e["event_type"] == "view"
                                 and ms(d) <= e["time"] < ms(d + timedelta(days=1))
                                 and ((e["actor_id"] in members) == (op == "is"))}))
            assert data["series"][0] == want, (name, op)
            assert sum(want) > 0


def test_dagster_asset_writes_the_same_snapshot(env: dict[str, Any]) -> None:
    import dagster as dg

    from orchestration.cohorts.assets import build_cohort_members
    from orchestration.resources import build_resources

    day = AS_OF - timedelta(days=2)
    resources = build_resources(env["settings"])
    result = dg.materialize([build_cohort_members(env["settings"])], partition_key=day.isoformat(),
                            resources={k: resources[k] for k in ("clickhouse", "metadata_store")})
    assert result.success
    for name, definition in DEFINITIONS.items():
        _, members = read_members(env["client"], "analytics", env["ids"][name], day)
        assert set(members) == reference_members(definition, day), name


def test_cohort_api_create_csv_members_export_and_errors(env: dict[str, Any]) -> None:
    http, auth = env["http"], env["auth"]
    r = http.post("/api/cohorts", params={"name": "vip_csv"}, content="user_id\nuser-003\nuser-004\n\n",
                  headers={"content-type": "text/csv"}, auth=auth)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert r.json()["kind"] == "static"
    r = http.post("/api/cohorts", json={"name": "bad", "definition": {"conditions": [{"type": "lucky"}]}}, auth=auth)
    assert r.status_code == 400 and r.json()["parameter"] == "conditions[0].type"
    r = http.post("/api/cohorts", json={"name": "paid2", "definition": DEFINITIONS["paid_users_in_EU"]}, auth=auth)
    assert r.status_code == 201
    names = {c["name"] for c in http.get("/api/cohorts", auth=auth).json()["cohorts"]}
    assert {"vip_csv", "paid2", "paid_users_in_EU", "static"} <= names and "bad" not in names
    materialize_all(env["client"], "analytics", env["store"], AS_OF, only={cid, r.json()["id"]})
    got = http.get(f"/api/cohorts/{cid}/members", auth=auth).json()
    assert got["members"] == ["user-003", "user-004"] and got["as_of"] == AS_OF.isoformat()
    got = http.get(f"/api/cohorts/{r.json()['id']}/members", params={"format": "csv"}, auth=auth)
    assert got.headers["content-type"].startswith("text/csv")
    assert set(got.text.splitlines()[1:]) == reference_members(DEFINITIONS["paid_users_in_EU"], AS_OF)
    assert http.get("/api/cohorts/nope/members", auth=auth).status_code == 404
    assert http.get(f"/api/cohorts/{cid}/members", params={"format": "xml"}, auth=auth).status_code == 400
    assert http.get("/api/cohorts").status_code == 401


def test_cli_create_materialize_and_export_members(env: dict[str, Any], chserver: ChServer, tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    run_env = os.environ | {"EVENTPIPE_HOME": str(env["settings"].eventpipe_home), "CLICKHOUSE_URL": chserver.clickhouse_url,
                            "METADATA_DB_URL": str(env["settings"].metadata_db_url)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "eventpipe_cli.main", "cohorts", *args], env=run_env,
                              capture_output=True, text=True, timeout=120)

    (tmp_path / "d.json").write_text(json.dumps(DEFINITIONS["error_free"]))
    r = cli("create", "--project", PROJECT, "--name", "cli_error_free", "--definition", str(tmp_path / "d.json"))
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip().splitlines()[-1]
    r = cli("materialize", "--day", AS_OF.isoformat())
    assert r.returncode == 0 and cid in r.stdout, r.stderr
    r = cli("members", cid, "--project", PROJECT, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["members"]) == reference_members(DEFINITIONS["error_free"], AS_OF)
    assert cli("members", cid, "--project", "someone-else").returncode == 2


def test_another_projects_cohort_id_gives_no_members(env: dict[str, Any]) -> None:
    """The segment's cohort_members subquery reads only the caller's project: a cohort of another project
    (whose members are actor ids that also exist here) filters everything out, its members 404."""
    env["store"].create_project("othershop")
    other = create_cohort(env["store"], "othershop", "others_vips", static_members=["user-001", "user-002", "user-003"])
    materialize_all(env["client"], "analytics", env["store"], AS_OF, only={other.id})
    assert read_members(env["client"], "analytics", other.id)[1] == ["user-001", "user-002", "user-003"]
    params = {"e": json.dumps({"event_type": "_active"}), "start": FIRST.strftime("%Y%m%d"), "end": AS_OF.strftime("%Y%m%d"),
              "m": "uniques"}
    everyone = env["http"].get("/api/2/events/segmentation", auth=env["auth"], params=params).json()["data"]["series"][0]
    assert sum(everyone) > 0
    for op, want in (("is", [0] * len(everyone)), ("is not", everyone)):
        r = env["http"].get("/api/2/events/segmentation", auth=env["auth"], params={
            **params, "s": json.dumps([{"prop": "userdata_cohort", "op": op, "values": [other.id]}])})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["series"][0] == want, op
    assert env["http"].get(f"/api/cohorts/{other.id}/members", auth=env["auth"]).status_code == 404
    assert env["http"].get(f"/api/cohorts/{other.id}/sizes", auth=env["auth"]).status_code == 404


def test_cohort_size_over_time(env: dict[str, Any]) -> None:
    cid = env["ids"]["big_buyers"]
    days = [AS_OF - timedelta(days=k) for k in (9, 5, 0)]
    for d in days:
        materialize_all(env["client"], "analytics", env["store"], d, only={cid})
    r = env["http"].get(f"/api/cohorts/{cid}/sizes", auth=env["auth"])
    assert r.status_code == 200, r.text
    sizes = {s["as_of"]: s["size"] for s in r.json()["sizes"]}
    for d in days:
        assert sizes[d.isoformat()] == len(reference_members(DEFINITIONS["big_buyers"], d))
    assert len({sizes[d.isoformat()] for d in days}) > 1  # the size does change over time: the test could fail
    assert list(sizes) == sorted(sizes)
    r = env["http"].get(f"/api/cohorts/{cid}/sizes", auth=env["auth"],
                        params={"start": days[1].strftime("%Y%m%d"), "end": AS_OF.strftime("%Y%m%d")})
    got = [s["as_of"] for s in r.json()["sizes"]]
    assert {d.isoformat() for d in days[1:]} <= set(got) and days[0].isoformat() not in got
    assert all(days[1].isoformat() <= g <= AS_OF.isoformat() for g in got)
    bad = env["http"].get(f"/api/cohorts/{cid}/sizes", auth=env["auth"], params={"start": "2025-06-01"})
    assert bad.status_code == 400 and bad.json()["parameter"] == "start"
