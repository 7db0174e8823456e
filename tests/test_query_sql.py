"""POST /api/sql over a real chserver: read-only and project-scoped (escapes refused 400/403), ClickHouse's JSON
shape, the SQL limits, and FUNNEL()/RETENTION() equal to /api/2/funnels and /api/2/retention on generated data."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import clickhouse_connect
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp
from starlette.testclient import TestClient

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.projects_settings import set_timezone
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from query_service import params as P
from query_service import sql_rewrite as R
from query_service.app import create_app
from query_service.compile import funnel as F
from query_service.compile import retention as RC
from query_service.engine import Engine
from query_service.sql_api import SqlLimits, execute_sql, prepare
from tests import query_reference as ref
from tests import test_query_properties as qp
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, insert_append, load_events

DB = "t_sqlapi"  # a throw-away database readers may read (t_*)
TZ = "Europe/Berlin"
START, END = date(2025, 3, 29), date(2025, 3, 31)  # spans Europe's spring DST change
BASE = int(datetime(2025, 3, 29, 0, tzinfo=UTC).timestamp() * 1000)
WINDOW_S = 3600
STEP_MS = 20 * 60_000


def generated_events(seed: int = 14) -> list[dict[str, Any]]:
    """Seeded events with the hard cases of tests/test_query_properties.py: ties, duplicates received later,
    bots, steps exactly at the window's limit and 1 ms past it, local midnights of the DST change."""
    rnd = random.Random(seed)
    events: list[dict[str, Any]] = []
    for i in range(700):
        events.append({
            "time": BASE - 6 * 3_600_000 + STEP_MS * rnd.randrange(0, 4 * 24 * 3 + 18) + rnd.choice([0, 0, 0, 1, -1]),
            "insert_id": f"e{i:04d}{rnd.choice(['', 'z'])}", "event_type": rnd.choice("aabbcx"),
            "actor_id": f"u{rnd.randrange(40)}", "is_bot": int(rnd.random() < 0.08),
        })
    shapes = [["a", "b"], ["a", "b", "c"], ["a", "x", "b", "c"], ["a", "c", "b"], ["b", "a", "c"], ["a", "a", "b"]]
    for p in range(60):
        t0 = BASE + STEP_MS * rnd.randrange(0, 3 * 72)
        actor = f"u{rnd.randrange(40)}"
        for k, etype in enumerate(rnd.choice(shapes)):
            offset = 0 if k == 0 else rnd.choice([0, 1, 1_800_000, WINDOW_S * 1000, WINDOW_S * 1000 + 1])
            events.append({"time": t0 + offset, "insert_id": f"p{p:02d}{k}", "event_type": etype, "actor_id": actor})
    for e in list(events):
        if rnd.random() < 0.12:  # the same event received again an hour later: counted once
            events.append({**e, "received_at": e["time"] + 3_600_000})
    return events


def recent_events() -> list[dict[str, Any]]:
    """The issue's example: sign_up → purchase within 7 days, in the last 30 days."""
    now = int(time.time() * 1000) // 3_600_000 * 3_600_000 - 3 * 86_400_000
    day = 86_400_000
    return [
        {"time": now, "insert_id": "r1", "event_type": "sign_up", "actor_id": "n1"},
        {"time": now + day, "insert_id": "r2", "event_type": "purchase", "actor_id": "n1"},
        {"time": now, "insert_id": "r3", "event_type": "sign_up", "actor_id": "n2"},
        {"time": now + 1000, "insert_id": "r4", "event_type": "purchase", "actor_id": "n3"},
        {"time": now - 10 * day, "insert_id": "r5", "event_type": "sign_up", "actor_id": "n4"},
        {"time": now - 10 * day + 8 * day, "insert_id": "r6", "event_type": "purchase", "actor_id": "n4"},  # > 7 days
    ]


@pytest.fixture(scope="module")
def api(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("qsql")
    url = f"http://default:{chserver.password}@{chserver.host}:{chserver.port}/{DB}"
    common = {"eventpipe_home": home, "clickhouse_url": url, "clickhouse_service_password": chserver.service_password,
              "clickhouse_ttl_days": TTL_DAYS, "lake_url": f"file://{chserver.data_dir.parent / 'lake'}"}
    settings = load_settings(**common)
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                          password=chserver.password, autogenerate_session_id=False)
    admin.command(f"DROP DATABASE IF EXISTS {DB}")
    admin.command(f"CREATE DATABASE {DB}")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                           password=chserver.password, database=DB, autogenerate_session_id=False)
    load_events(client, [{"time": BASE - 86_400_000 * 40, "insert_id": "seed", "event_type": "x", "actor_id": "s"}],
                "seed", database=DB)  # creates the schema
    shop = generated_events() + recent_events()
    other = [{"time": BASE + i * 3_600_000, "insert_id": f"o{i}", "event_type": "a", "actor_id": f"secret{i}"}
             for i in range(30)]
    insert_append(client, shop, "shop")
    insert_append(client, other, "other")
    client.command("CREATE TABLE fct_sessions (project String, actor_id String, session_id Int64, duration_s Float64)"
                   " ENGINE = MergeTree ORDER BY (project, actor_id)")
    client.command("INSERT INTO fct_sessions VALUES ('shop','u1',1,10),('shop','u2',2,20),('other','secret1',3,30)")
    client.command("CREATE TABLE secret_stuff (project String, v String) ENGINE = MergeTree ORDER BY project")
    client.command("INSERT INTO secret_stuff VALUES ('other','s3cr3t')")
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    key, secret = create_key_with_secret(store, "shop")
    set_timezone(store, "shop", TZ)
    small = create_app(load_settings(**common, sql_max_result_rows=50, sql_max_execution_time=7), store=store)
    with TestClient(create_app(settings, store=store)) as tc, TestClient(small) as tc_small:
        yield {"client": tc, "small": tc_small, "auth": (key, secret), "shop": shop, "other": other, "writer": client,
               "engine": Engine(chserver.host, chserver.port, "reader", "reader", DB),
               "limits": SqlLimits.from_settings(settings)}
    store.dispose()
    admin.command(f"DROP DATABASE IF EXISTS {DB}")


def sql(api: dict[str, Any], query: str, params: dict[str, Any] | None = None, client: str = "client") -> Any:
    return api[client].post("/api/sql", json={"query": query, "params": params or {}}, auth=api["auth"])


def rows(api: dict[str, Any], query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    r = sql(api, query, params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def ms(day: date, tz: str = TZ) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(tz)).timestamp() * 1000)


# --- shape, scoping ----------------------------------------------------------------------------------------

def test_valid_query_rows_and_clickhouse_json_shape(api: dict[str, Any]) -> None:
    r = sql(api, "SELECT actor_id, count() AS n FROM events WHERE event_type = {t:String} GROUP BY actor_id"
                 " ORDER BY actor_id", {"t": "a"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"] == [{"name": "actor_id", "type": "String"}, {"name": "n", "type": "UInt64"}]
    expected = Counter(e["actor_id"] for e in ref.clean(api["shop"]) if e["event_type"] == "a")  # deduplicated, no bots
    assert {d["actor_id"]: int(d["n"]) for d in body["data"]} == dict(expected)
    assert body["rows"] == len(expected)
    assert set(body["statistics"]) >= {"elapsed", "rows_read", "bytes_read"}
    assert body["is_cached"] is False and body["data_version"] is None
    assert abs(datetime.fromisoformat(body["computed_at"]).timestamp() - time.time()) < 120


def test_every_table_reference_is_the_callers_project(api: dict[str, Any]) -> None:
    shop_n = len(ref.clean(api["shop"]))
    assert rows(api, "SELECT DISTINCT project FROM events") == [{"project": "shop"}]
    assert int(rows(api, "SELECT count() AS n FROM events WHERE project = 'other'")[0]["n"]) == 0
    assert int(rows(api, f"SELECT count() AS n FROM {DB}.events")[0]["n"]) == shop_n  # qualified: scoped too
    q = """WITH firsts AS (SELECT actor_id, min(event_time) AS t FROM events GROUP BY actor_id)
           SELECT count() AS n FROM (SELECT f.actor_id FROM firsts AS f JOIN events AS e ON e.actor_id = f.actor_id
                                     UNION ALL SELECT actor_id FROM (SELECT actor_id FROM events))
           WHERE actor_id IN (SELECT actor_id FROM events)"""
    assert int(rows(api, q)[0]["n"]) == 2 * shop_n
    assert rows(api, "SELECT project, actor_id FROM fct_sessions ORDER BY actor_id") == [
        {"project": "shop", "actor_id": "u1"}, {"project": "shop", "actor_id": "u2"}]
    joined = rows(api, "SELECT s.actor_id AS a, count() AS n FROM fct_sessions AS s JOIN events USING (actor_id)"
                       " GROUP BY a ORDER BY a")
    assert [j["a"] for j in joined] == ["u1", "u2"]
    # a CTE named like a table of the database is the CTE (ClickHouse resolves CTEs first)
    assert rows(api, "WITH secret_stuff AS (SELECT 'x' AS v) SELECT v FROM secret_stuff") == [{"v": "x"}]
    # a scalar WITH named like the filter's column does not change the filter
    assert int(rows(api, "WITH 'other' AS project SELECT count() AS n FROM events")[0]["n"]) == shop_n
    # the reserved parameters cannot be overridden from the body
    assert int(rows(api, "SELECT count() AS n FROM events", {"_ep_project": "other"})[0]["n"]) == shop_n
    # EXPLAIN works and shows the injected filter
    plan = sql(api, "EXPLAIN SYNTAX SELECT count() FROM events")
    assert plan.status_code == 200 and "__ep_src.project" in json.dumps(plan.json()["data"])


@pytest.mark.parametrize(("query", "status"), [
    ("SELECT * FROM other_db.events", 403),  # another database (and so another project's data)
    ("SELECT * FROM secret_stuff", 403),  # a table of the database that is neither events nor a mart
    ("SELECT name FROM system.tables", 403),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", 403),
    ("SELECT * FROM url('http://127.0.0.1:1/x', 'CSV')", 403),
    ("SELECT * FROM numbers(10)", 403),
    ("SELECT file('/etc/passwd')", 403),
    ("SELECT dictGet('d', 'v', toUInt64(1))", 403),
    ("DROP TABLE events", 400),
    ("INSERT INTO events (project) VALUES ('shop')", 400),
    ("ALTER TABLE events DELETE WHERE 1", 400),
    ("SELECT 1; DROP TABLE events", 400),
    ("EXPLAIN PLAN indexes = 1 SELECT 1", 400),
    ("EXPLAIN DROP TABLE events", 400),
    ("SELECT 1 INTO OUTFILE '/tmp/x.csv'", 400),
    ("SELECT count() FROM events SETTINGS max_execution_time = 1000", 400),
    ("SELECT count() FROM events FORMAT CSV", 400),
    ("WITH events AS (SELECT * FROM t_sqlapi.events) SELECT count() FROM events", 400),  # a CTE named events
    ("WITH x AS (SELECT * FROM x) SELECT * FROM x", 403),  # a CTE's own name inside it is a table
    ("SELECT * FROM (WITH c AS (SELECT 1) SELECT * FROM c) AS a, c", 403),  # a CTE out of its scope
    ("SELECT * FROM secret_stuff AS events", 403),  # an alias trick
    ("SELECT * FROM (SELECT * FROM system.tables) AS events", 403),
    ("SELECT 1 WHERE 's3cr3t' IN secret_stuff", 400),
    ("SELECT 's3cr3t' IN (secret_stuff)", 400),  # a lone name on IN's right side is a table
    ("SELECT 1 WHERE 's3cr3t' NOT IN ((t_sqlapi.secret_stuff))", 400),
    ("SELECT globalIn('s3cr3t', secret_stuff)", 403),  # IN's function form
    ("SELECT (SELECT max(v) FROM secret_stuff)", 403),  # a scalar subquery
    ("WITH (SELECT max(v) FROM secret_stuff) AS x SELECT x", 403),
    ("SELECT * FROM events, secret_stuff", 403),
    ("SELECT * FROM events AS e LEFT ANY JOIN `secret_stuff` AS s ON 1", 403),
    ("SELECT * FROM merge('t_sqlapi', '.*')", 403),
    ("SELECT * FROM `system`.`one`", 403),
    ("SELECT * FROM {t:Identifier}", 400),
    ("SELECT {_ep_project:String}", 400),
    ("SELECT count() FROM events AS __ep_src", 400),
])
def test_escapes_are_refused(api: dict[str, Any], query: str, status: int) -> None:
    r = sql(api, query, {"t": "system.tables"})
    assert r.status_code == status, (query, r.text)
    assert r.json()["parameter"] == "query" and r.json()["error"]
    assert int(api["writer"].command("SELECT count() FROM events")) > 0  # still there


def test_bad_requests(api: dict[str, Any]) -> None:
    c = api["client"]
    assert c.post("/api/sql", json={"query": "SELECT 1"}).status_code == 401
    r = c.post("/api/sql", content=b"not json", auth=api["auth"])
    assert r.status_code == 400 and r.json()["parameter"] == "body"
    r = sql(api, "SELECT {x:String} AS x")
    assert r.status_code == 400 and r.json()["parameter"] == "params.x"
    r = sql(api, "SELECT no_such_column FROM events")
    assert r.status_code == 400 and "no_such_column" in r.json()["error"]
    r = sql(api, "SELEC 1")
    assert r.status_code == 400 and r.json()["parameter"] == "query"
    assert c.get("/api/sql", auth=api["auth"]).status_code in (404, 405)  # POST only
    assert rows(api, "SELECT '100%' AS p, {n:UInt8} + 1 AS n", {"n": 1}) == [{"p": "100%", "n": 2}]
    assert rows(api, "SELECT '100%s' AS p") == [{"p": "100%s"}]  # no placeholders: nothing formats the text


def test_limits_from_settings(api: dict[str, Any]) -> None:
    got = rows(api, "SELECT getSetting('max_execution_time') AS t, getSetting('max_result_rows') AS r,"
                    " getSetting('readonly') AS ro")
    assert (int(got[0]["t"]), int(got[0]["r"])) == (30, 100_000)  # the defaults, sent with every query
    assert int(got[0]["ro"]) > 0, got  # the read-only user: chserver locks its connection in readonly mode
    got = sql(api, "SELECT getSetting('max_execution_time') AS t", client="small").json()["data"]
    assert int(got[0]["t"]) == 7
    r = sql(api, "SELECT insert_id FROM events", client="small")  # more than 50 rows
    assert r.status_code == 400 and "SQL_MAX_RESULT_ROWS" in r.json()["error"]
    assert sql(api, "SELECT insert_id FROM events LIMIT 50", client="small").status_code == 200


# --- FUNNEL() and RETENTION() against the typed endpoints ----------------------------------------------------

def typed_funnel(api: dict[str, Any], steps: list[str], mode: str) -> list[int]:
    params = [("e", json.dumps({"event_type": s})) for s in steps] + [
        ("start", START.strftime("%Y%m%d")), ("end", END.strftime("%Y%m%d")), ("mode", mode), ("cs", str(WINDOW_S))]
    r = api["client"].get("/api/2/funnels", params=params, auth=api["auth"])
    assert r.status_code == 200, r.text
    return r.json()["data"][0]["cumulativeRaw"]


def funnel_query(steps: list[str], mode: str, window: str, tz: str = TZ) -> tuple[str, dict[str, Any]]:
    """/api/2/funnels?start=START&end=END&cs=WINDOW_S as SQL: entries in the range, steps up to the window after it."""
    entry = "event_type = '{}' AND toDate(event_time, projectTimezone()) BETWEEN toDate({{s:String}}) AND toDate({{e:String}})"
    conds = ", ".join([entry.format(steps[0])] + [f"event_type = '{s}'" for s in steps[1:]])
    mode_arg = "" if mode == "ordered" else f", '{mode}'"
    q = f"""SELECT level, count() AS users FROM (
              SELECT actor_id, FUNNEL({window}, {conds}{mode_arg}) AS level FROM events
              WHERE event_time >= fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC')
                AND event_time < fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC')
              GROUP BY actor_id)
            WHERE level > 0 GROUP BY level ORDER BY level"""
    hi = ms(END + timedelta(days=1), tz) + WINDOW_S * 1000 + 1
    return q, {"s": str(START), "e": str(END), "lo": ms(START, tz), "hi": hi}


def cumulative(data: list[dict[str, Any]], n: int) -> list[int]:
    got = {int(d["level"]): int(d["users"]) for d in data}
    return [sum(c for lv, c in got.items() if lv >= k) for k in range(1, n + 1)]


def sql_funnel(api: dict[str, Any], steps: list[str], mode: str, window: str) -> list[int]:
    return cumulative(rows(api, *funnel_query(steps, mode, window)), len(steps))


@pytest.mark.parametrize("mode", ["ordered", "unordered", "sequential"])
@pytest.mark.parametrize("steps", [["a", "b", "c"], ["a", "b"], ["a", "a", "b"], ["b", "a", "c"]])
def test_funnel_equals_typed_endpoint(api: dict[str, Any], mode: str, steps: list[str]) -> None:
    typed = typed_funnel(api, steps, mode)
    assert typed[0] > 0 and typed[-1] > 0  # the generated data reaches every step
    assert sql_funnel(api, steps, mode, str(WINDOW_S)) == typed
    assert sql_funnel(api, steps, mode, "INTERVAL 60 MINUTE") == typed
    overall, _, _ = ref.funnel(api["shop"], steps, mode, WINDOW_S, START, END, TZ)
    assert typed == overall


def retention_query(se: str, re: str, mode: str, n_max: int) -> str:
    """/api/2/retention?se=…&re=…&i=1&start=START&end=END as SQL: per cohort day, the actors back on day N."""
    start = f"event_type = '{se}' AND toDate(event_time, projectTimezone()) BETWEEN '{START}' AND '{END}'"
    ret = "1" if re == "_all" else f"event_type = '{re}'"
    cols = ", ".join(f"RETENTION({start}, {ret}, {n}, '{mode}') AS r{n}" for n in range(n_max + 1))
    sums = ", ".join(f"sum(r{n}) AS r{n}" for n in range(n_max + 1))
    return f"""SELECT toString(toDate(first, projectTimezone())) AS cohort, {sums} FROM (
              SELECT actor_id, minIf(event_time, {start}) AS first, {cols} FROM events
              WHERE event_time >= fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC')
                AND event_time < fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC')
              GROUP BY actor_id HAVING countIf({start}) > 0)
            GROUP BY cohort ORDER BY cohort"""


def sql_retention(data: list[dict[str, Any]], n_max: int) -> dict[str, list[int]]:
    return {d["cohort"]: [int(d[f"r{n}"]) for n in range(n_max + 1)] for d in data}


@pytest.mark.parametrize("mode", ["n-day", "rolling"])
def test_retention_equals_typed_endpoint(api: dict[str, Any], mode: str) -> None:
    r = api["client"].get("/api/2/retention", auth=api["auth"], params={
        "se": json.dumps({"event_type": "a"}), "re": json.dumps({"event_type": "b"}), "rm": mode, "i": "1",
        "start": START.strftime("%Y%m%d"), "end": END.strftime("%Y%m%d")})
    assert r.status_code == 200, r.text
    values = r.json()["data"]["series"][0]["values"]
    n_max = 4
    typed = {d: [c["count"] for c in cells[: n_max + 1]] for d, cells in values.items()}
    got = sql_retention(rows(api, retention_query("a", "b", mode, n_max), {"lo": ms(START), "hi": 2**62}), n_max)
    assert got == {d: c for d, c in typed.items() if c[0] > 0}
    assert any(c[1] for c in got.values()) and len(got) == 3
    today = datetime.now(ZoneInfo(TZ)).date()
    expected = ref.retention(api["shop"], "a", "b", mode, START, END, TZ, today)
    assert got == {str(d): counts[: n_max + 1] for d, (size, counts) in expected.items() if size}


# property tests: the strategy of tests/test_query_properties.py (three time zones, DST, window edges, ties,
# duplicates, bots), one fresh project per example; SQL through the cache's seam (execute_sql) vs the typed
# compilers on the same engine and range
PROPS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _fresh(api: dict[str, Any], events: list[dict[str, Any]]) -> str:
    project = f"p{uuid.uuid4().hex[:10]}"
    if events:
        insert_append(api["writer"], events, project)
    return project


def _run_sql(api: dict[str, Any], project: str, tz: str, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return execute_sql(api["engine"], api["limits"], project, tz, prepare(query, DB).normalized, params)["data"]


@PROPS
@given(events=qp.event_sets(), tz=st.sampled_from(qp.TZS), mode=st.sampled_from(P.FUNNEL_MODES),
       steps=st.sampled_from([["a", "b", "c"], ["a", "b"], ["a", "a", "b"], ["b", "a", "c"]]))
def test_funnel_sql_property(api: dict[str, Any], events: list[dict[str, Any]], tz: str, mode: str,
                             steps: list[str]) -> None:
    project = _fresh(api, events)
    q = P.FunnelQuery(scope=P.Scope(project, tz), steps=tuple(P.EventSpec(s) for s in steps),
                      range=P.DateRange(START, END), mode=mode, window_s=WINDOW_S)
    typed = F.shape(q, api["engine"].run(F.compile_funnel(q)).rows)[0]["cumulativeRaw"]
    assert cumulative(_run_sql(api, project, tz, *funnel_query(steps, mode, "INTERVAL 1 HOUR", tz)), len(steps)) == typed


@PROPS
@given(events=qp.event_sets(), tz=st.sampled_from(qp.TZS), mode=st.sampled_from(["n-day", "rolling"]),
       re=st.sampled_from(["_all", "b"]))
def test_retention_sql_property(api: dict[str, Any], events: list[dict[str, Any]], tz: str, mode: str, re: str) -> None:
    project = _fresh(api, events)
    today = END + timedelta(days=1)
    q = P.RetentionQuery(scope=P.Scope(project, tz), start_event=P.EventSpec("a"), return_event=P.EventSpec(re),
                         range=P.DateRange(START, END), mode=mode, today=today)
    typed = {d: [c["count"] for c in cells] for d, cells in
             RC.shape(q, api["engine"].run(RC.compile_retention(q)).rows)["series"][0]["values"].items()}
    n_max = 3
    bounds = {"lo": ms(START, tz), "hi": ms(today + timedelta(days=1), tz)}  # returns counted up to today
    got = sql_retention(_run_sql(api, project, tz, retention_query("a", re, mode, n_max), bounds), n_max)
    assert set(got) == {d for d, c in typed.items() if c[0] > 0}
    for d, counts in got.items():  # the typed cells stop at today; SQL read no later day, so its later Ns are 0
        assert counts[: len(typed[d])] == typed[d][: n_max + 1] and not any(counts[len(typed[d]):]), d


def test_issue_example_query(api: dict[str, Any]) -> None:
    q = ("SELECT level, count() AS users FROM (SELECT actor_id, FUNNEL(INTERVAL 7 DAY, event_type = 'sign_up',"
         " event_type = 'purchase') AS level FROM events WHERE event_time >= now() - INTERVAL 30 DAY GROUP BY actor_id)"
         " WHERE level > 0 GROUP BY level ORDER BY level")
    assert [(d["level"], int(d["users"])) for d in rows(api, q)] == [(1, 2), (2, 1)]  # n2, n4 | n1


def test_custom_function_arguments_checked(api: dict[str, Any]) -> None:
    for q in ["SELECT FUNNEL(event_type = 'a') FROM events", "SELECT FUNNEL(INTERVAL 1 YEAR, 1, 1) FROM events",
              "SELECT FUNNEL(60, 1, 1, 'sideways') FROM events", "SELECT FUNNEL(-60, 1, 1) FROM events",
              "SELECT RETENTION(1, 1) FROM events", "SELECT RETENTION(1, 1, x) FROM events",
              "SELECT RETENTION(1, 1, 2, 'bracket') FROM events"]:
        r = sql(api, q)
        assert r.status_code == 400 and r.json()["parameter"] == "query", (q, r.text)


# --- pure ---------------------------------------------------------------------------------------------------

def test_marts_list_matches_dbt() -> None:
    marts = Path(__file__).resolve().parents[1] / "dbt_project" / "models" / "marts"
    assert sorted(R.MART_TABLES) == sorted(p.stem for p in marts.glob("*.sql"))


def test_rewrite_scopes_every_reference_and_normalizes() -> None:
    q = """WITH a AS (SELECT actor_id FROM events), b AS (SELECT * FROM a JOIN fct_sessions USING (actor_id))
           SELECT * FROM b UNION ALL
           SELECT actor_id, 1, 2, 3 FROM analytics.events WHERE actor_id IN (SELECT actor_id FROM dim_users)"""
    out = R.rewrite(q, "analytics")
    assert out.tables == {"events", "fct_sessions", "dim_users"}
    tree = sqlglot.parse_one(out.sql, read="clickhouse")
    real = [t for t in tree.find_all(exp.Table) if t.name not in ("a", "b")]
    assert len(real) == 4 and all(t.alias == R.SRC_ALIAS and t.db == "analytics" for t in real)
    for t in real:
        where = t.find_ancestor(exp.Select).args["where"].this.sql("clickhouse")
        assert where.startswith(f"{R.SRC_ALIAS}.project = {{{R.PROJECT_PARAM}: String}}")
    assert R.rewrite(out.normalized, "analytics") == out  # the normalized text is a fixed point
    assert "__ep_src.event_time" not in out.sql.replace("__ep_src.event_time LIMIT", "")  # no time bound to push


def test_reads_for_a_cache() -> None:
    from query_service.sql_api import read_partitions, reads

    p = prepare("SELECT count() FROM events JOIN fct_sessions USING (actor_id)", "analytics")
    assert reads(p, "shop") == {"events": "all", "fct_sessions": "all"} and read_partitions(p, "shop") == "all"
    assert read_partitions(prepare("SELECT 1", "analytics"), "shop") == ()


def test_event_time_bounds_pushed_below_deduplication() -> None:
    bound = "__ep_src.event_time >= now() - INTERVAL '30' DAY"
    out = R.rewrite("SELECT count() FROM events AS e WHERE e.event_time >= now() - INTERVAL 30 DAY AND actor_id = 'x'",
                    "analytics").sql
    inner = out[: out.index(") AS e")]
    assert bound in inner and "actor_id" not in inner  # only the event_time conjunct goes inside
    for q in ["SELECT count() FROM events JOIN fct_sessions USING (actor_id) WHERE event_time >= now() - INTERVAL 30 DAY",
              "SELECT toDate(event_time) AS event_time FROM events WHERE event_time >= now() - INTERVAL 30 DAY",
              "SELECT count() FROM events WHERE event_time >= now() - INTERVAL 30 DAY OR actor_id = 'x'",
              "SELECT count() FROM events WHERE event_time > (SELECT max(event_time) FROM events)"]:
        assert "__ep_src.event_time >" not in R.rewrite(q, "analytics").sql, q


def test_bounded_counts_match_reference(api: dict[str, Any]) -> None:
    lo, hi = BASE + 7 * 3_600_000, BASE + 50 * 3_600_000 + 1
    q = ("SELECT count() AS n, uniqExact(actor_id) AS u FROM events WHERE event_time >= fromUnixTimestamp64Milli({lo:Int64})"
         " AND event_time < fromUnixTimestamp64Milli({hi:Int64}) AND event_type != 'x'")
    got = rows(api, q, {"lo": lo, "hi": hi})[0]
    kept = [e for e in ref.clean(api["shop"]) if lo <= e["time"] < hi and e["event_type"] != "x"]
    assert (int(got["n"]), int(got["u"])) == (len(kept), len({e["actor_id"] for e in kept}))
    assert "__ep_src.event_time" in json.dumps(sql(api, "EXPLAIN SYNTAX " + q, {"lo": lo, "hi": hi}).json()["data"])
    assert R.rewrite("select   count()  from events", "analytics").normalized == "SELECT count() FROM events"


def test_readme_examples_and_project_timezone(api: dict[str, Any]) -> None:
    assert rows(api, "SELECT projectTimezone() AS tz") == [{"tz": TZ}]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### SQL: `POST /api/sql`"):]
    examples = [line for line in section[: section.index("```", section.index("```bash") + 7)].splitlines()
                if line.startswith("curl ")]
    assert len(examples) == 4
    for line in examples:
        body = line.split(" -d ", 1)[1]
        text = body[1:-1].replace('\\"', '"') if body.startswith('"') else body[1:-1]
        r = api["client"].post("/api/sql", content=text.encode(), auth=api["auth"])
        assert r.status_code == 200, (line, r.text)


def test_openapi_describes_sql(api: dict[str, Any]) -> None:
    op = api["client"].get("/openapi.json").json()["paths"]["/api/sql"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["required"] == ["query"]
    assert {"200", "400", "403"} <= set(op["responses"])
    assert "POST /api/sql" in api["client"].get("/docs").text
