"""Alerts end to end: rules created through ``/api/alerts`` on a chart's series (segmentation formula, funnel
conversion, retention day N), evaluated by the real Dagster ``alerts_sensor`` (ephemeral instance, its cursor,
``clickhouse_events`` materializations as the loads) over events in the test chserver, delivered to a real local
webhook receiver. "error rate > 5 %" fires once when crossed, not again for the same interval, resolves when it
drops, and a late batch that changes a past interval updates the alert's history; snoozed transitions are
recorded, not delivered; the CLI manages the same rules."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import clickhouse_connect
import dagster as dg
import pytest
from starlette.testclient import TestClient

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from orchestration.alerts.sensor import build_alert_sensor
from orchestration.clickhouse.assets import CLICKHOUSE_EVENTS
from orchestration.clickhouse.schema import SchemaPlan, ensure_plan
from orchestration.partitions import HOURLY_FMT
from orchestration.resources import MetadataStoreResource
from query_service import alert_series
from query_service import params as P
from query_service.app import create_app
from query_service.engine import Engine
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, insert_append
from tests.test_alerting import Receiver, receiver  # noqa: F401 - the webhook receiver fixture

PROJECT = "alertshop"
H = timedelta(hours=1)
T0 = datetime(2025, 9, 10, tzinfo=UTC)
ERROR_RATE = {"kind": "segmentation", "params": {
    "e": json.dumps({"event_type": "error"}), "e2": json.dumps({"event_type": "_all"}), "m": "formula",
    "formula": "TOTALS(A)/TOTALS(B)", "i": "-3600000"}, "series": 0}


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def hour_events(hour: datetime, errors: int, total: int, tag: str) -> list[dict[str, Any]]:
    """``total`` events in the hour, ``errors`` of them errors (``view`` otherwise)."""
    out = []
    for k in range(total):
        t = ms(hour) + k * 30_000
        out.append({"time": t, "insert_id": f"{tag}-{hour:%d%H}-{k}", "actor_id": f"u{k % 17}",
                    "event_type": "error" if k < errors else "view", "received_at": t + 1000})
    return out


class World:
    def __init__(self, settings: Any, client: Any, store: MetadataStore, http: TestClient, auth: tuple[str, str],
                 instance: dg.DagsterInstance) -> None:
        self.settings, self.client, self.store, self.http, self.auth = settings, client, store, http, auth
        self.instance = instance
        self.now = T0
        self.sensor = build_alert_sensor(settings, clock=lambda: self.now)
        self.cursor: str | None = None
        self.resources = {"metadata_store": MetadataStoreResource(url=str(settings.metadata_db_url))}

    def load(self, events: list[dict[str, Any]], project: str = PROJECT) -> None:
        """Rows into analytics.events + the load's materialization, as clickhouse_events records it."""
        insert_append(self.client, events, project)
        for hour in sorted({datetime.fromtimestamp(e["time"] // 3_600_000 * 3600, UTC) for e in events}):
            self.instance.report_runless_asset_event(dg.AssetMaterialization(CLICKHOUSE_EVENTS,
                                                                             partition=hour.strftime(HOURLY_FMT)))

    def tick(self) -> str:
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=self.resources)
        result = self.sensor(context)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        assert result.skip_reason is not None
        return result.skip_reason.skip_message or ""


@pytest.fixture(scope="module")
def world(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("alerts")
    settings = load_settings(eventpipe_home=home, clickhouse_url=chserver.clickhouse_url, dagster_partitions_start="2025-01-01",
                             clickhouse_service_password=chserver.service_password,
                             lake_url=f"file://{chserver.data_dir.parent / 'lake'}", clickhouse_ttl_days=TTL_DAYS)
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                          password=chserver.password, autogenerate_session_id=False)
    admin.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default",
                                           password=chserver.password, database="analytics", autogenerate_session_id=False)
    ensure_plan(client, SchemaPlan("analytics", None, TTL_DAYS))
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    auth = create_key_with_secret(store, PROJECT)
    with TestClient(create_app(settings, store=store)) as http, dg.DagsterInstance.ephemeral() as instance:
        yield World(settings, client, store, http, auth, instance)
    store.dispose()


def verify(received: list[tuple[dict, dict]], secret: str) -> None:
    for headers, body in received:
        want = "sha256=" + hmac.new(secret.encode(), body["_raw"].encode(), hashlib.sha256).hexdigest()
        assert headers["X-Eventpipe-Signature"] == want and headers["X-Eventpipe-Event-Id"] == body["id"]


def test_error_rate_alert_through_the_sensor(world: World, receiver: tuple[Receiver, str]) -> None:  # noqa: F811
    rec, url = receiver
    http, auth = world.http, world.auth
    # hours 0-2 fine (1-3 %), hour 3 at 8 %, hour 4 running at 20 %
    world.load([e for h, err in enumerate([1, 2, 3, 8, 20]) for e in hour_events(T0 + h * H, err, 100, "a")])
    r = http.post("/api/alerts", auth=auth, json={"name": "error rate > 5 %", "condition": "above", "threshold": 0.05,
                                                  "webhook_url": url, "series": ERROR_RATE})
    assert r.status_code == 201, r.text
    alert, secret = r.json(), r.json()["secret"]
    assert alert["interval"] == "hour" and alert["status"] == "resolved" and "secret" not in http.get(
        "/api/alerts", auth=auth).json()["alerts"][0]

    world.now = T0 + 4 * H + timedelta(minutes=30)
    assert "1 transition" in world.tick()
    assert [b["type"] for _, b in rec.received] == ["firing"]
    assert rec.received[0][1]["interval_start"] == (T0 + 3 * H).isoformat() and rec.received[0][1]["value"] == 0.08
    assert http.get(f"/api/alerts/{alert['id']}", auth=auth).json()["status"] == "firing"
    # no load, same hour: not even evaluated; a load of the running hour: evaluated, nothing new
    assert world.tick().startswith("evaluated 0 alert")
    world.now += timedelta(minutes=15)
    world.load(hour_events(T0 + 4 * H, 0, 10, "a2"))
    assert world.tick().startswith("evaluated 1 alert(s), 0 transition")
    # hour 4 completes, still above: still firing, nothing delivered
    world.now = T0 + 5 * H + timedelta(minutes=1)
    assert world.tick().startswith("evaluated 1 alert(s), 0 transition")
    # hour 5 drops to 2 %: resolved, once
    world.load(hour_events(T0 + 5 * H, 2, 100, "a"))
    world.now = T0 + 6 * H + timedelta(minutes=2)
    assert "resolved" in world.tick()
    assert world.tick().startswith("evaluated 0 alert")
    assert [b["type"] for _, b in rec.received] == ["firing", "resolved"]
    # a late batch of 100 successful events for hour 3 (8 % -> 4 %): the history records the revision
    world.load(hour_events(T0 + 3 * H, 0, 100, "late"))
    assert "revised" in world.tick()
    assert [b["type"] for _, b in rec.received] == ["firing", "resolved", "revised"]
    revised = rec.received[-1][1]
    assert (revised["interval_start"], revised["old_value"], revised["value"], revised["breached"]) == (
        (T0 + 3 * H).isoformat(), 0.08, 0.04, False)
    world.load(hour_events(T0 + 3 * H, 0, 100, "late"))  # the same batch redelivered (same insert ids): no change
    assert world.tick().startswith("evaluated 1 alert(s), 0 transition")
    verify(rec.received, secret)
    got = http.get(f"/api/alerts/{alert['id']}", auth=auth).json()
    assert [(e["type"], e["interval_start"], e["delivered"]) for e in got["history"]] == [
        ("firing", (T0 + 3 * H).isoformat(), True), ("resolved", (T0 + 5 * H).isoformat(), True),
        ("revised", (T0 + 3 * H).isoformat(), True)]
    assert http.get(f"/api/alerts/{alert['id']}/events", auth=auth).json()["events"] == got["history"]

    # snoozed: the next crossing is recorded, not delivered; the API says snoozed
    r = http.post(f"/api/alerts/{alert['id']}/snooze", auth=auth, json={"minutes": 90})
    assert r.status_code == 200 and r.json()["status"] == "snoozed" and r.json()["snoozed_until"]
    world.load(hour_events(T0 + 6 * H, 30, 100, "a"))
    world.now = T0 + 7 * H
    assert "firing" in world.tick()
    assert len(rec.received) == 3
    history = http.get(f"/api/alerts/{alert['id']}/events", auth=auth).json()["events"]
    assert history[-1]["type"] == "firing" and history[-1]["snoozed"] is True
    assert http.get(f"/api/alerts/{alert['id']}", auth=auth).json()["firing"] is True
    r = http.post(f"/api/alerts/{alert['id']}/snooze", auth=auth, json={"until": None})
    assert r.json()["status"] == "firing"
    assert http.delete(f"/api/alerts/{alert['id']}", auth=auth).json() == {"deleted": alert["id"]}
    assert http.get(f"/api/alerts/{alert['id']}", auth=auth).status_code == 404


def test_daily_alert_waits_for_complete_days_and_a_receiver_down_gets_it_later(world: World,
                                                                               receiver: tuple[Receiver, str]) -> None:  # noqa: F811
    rec, url = receiver
    day0 = datetime(2025, 10, 1, tzinfo=UTC)
    spec = {"kind": "segmentation", "params": {"e": json.dumps({"event_type": "purchase"}), "m": "totals", "i": "1"}}
    r = world.http.post("/api/alerts", auth=world.auth, json={"name": "purchases < 5 a day", "condition": "below",
                                                              "threshold": 5, "webhook_url": url, "series": spec})
    assert r.status_code == 201, r.text
    aid = r.json()["id"]
    buy = [{"time": ms(day0 + timedelta(days=d, hours=k)), "insert_id": f"buy-{d}-{k}", "actor_id": f"b{k}",
            "event_type": "purchase"} for d, n in enumerate([9, 8, 3]) for k in range(n)]
    world.load(buy[:17])
    world.now = day0 + timedelta(days=2, hours=1)  # days 0 and 1 complete (9, 8), day 2 running with 0 so far
    world.tick()
    assert [b for _, b in rec.received if b["alert_id"] == aid] == []
    # a load of today's hours cannot change a complete day: not evaluated; the day boundary will
    world.load(buy[17:])
    assert "evaluated 0 alert" in world.tick()
    rec.fail_next = 99  # the receiver is down when day 2 (3 purchases) completes
    world.now = day0 + timedelta(days=3, minutes=5)
    assert "firing" in world.tick()
    assert [e["delivered"] for e in world.http.get(f"/api/alerts/{aid}/events", auth=world.auth).json()["events"]] == [False]
    rec.fail_next = 0
    world.now += timedelta(hours=1)
    world.load([{"time": ms(day0 + timedelta(days=3, hours=1)), "insert_id": "buy-3-0", "actor_id": "b0",
                 "event_type": "purchase"}])
    assert "evaluated 0 alert" in world.tick()  # not re-evaluated (today's hour), but the pending one is delivered
    mine = [b for _, b in rec.received if b["alert_id"] == aid]
    assert [(b["type"], b["interval_start"], b["value"]) for b in mine] == [("firing", (day0 + timedelta(days=2)).isoformat(), 3)]
    world.http.delete(f"/api/alerts/{aid}", auth=world.auth)


def test_alerts_api_bad_input_scope_and_charts(world: World) -> None:
    http, auth = world.http, world.auth
    base = {"name": "x", "condition": "above", "threshold": 1, "webhook_url": "http://127.0.0.1:9/h", "series": ERROR_RATE}
    for change, param in [
        ({"condition": "sideways"}, "condition"), ({"threshold": "high"}, "threshold"),
        ({"webhook_url": "ftp://x"}, "webhook_url"),
        ({"name": ""}, "name"), ({"series": None, "chart_id": None}, "series"), ({"series": {"kind": "pie"}}, "series.kind"),
        ({"series": {**ERROR_RATE, "params": {**ERROR_RATE["params"], "i": "7"}}}, "series.params.i"),
        ({"series": {**ERROR_RATE, "params": {**ERROR_RATE["params"], "formula": "A/"}}}, "formula"),
        ({"series": {"kind": "retention", "params": {"se": json.dumps({"event_type": "a"}),
                                                     "re": json.dumps({"event_type": "_active"})}}}, "series.day"),
        ({"chart_id": 999999, "series": None}, "chart_id"), ({"condition": "change", "threshold": 0}, "threshold"),
    ]:
        r = http.post("/api/alerts", auth=auth, json={**base, **change})
        assert r.status_code == 400 and r.json()["parameter"] == param, (change, r.text)
    assert http.post("/api/alerts", auth=auth, content=b"[1]").json()["parameter"] == "body"
    assert http.get("/api/alerts").status_code == 401
    # a saved chart of the web UI (its page state) -> the API parameters the UI would send
    chart = http.post("/api/web/charts", auth=auth, json={"name": "purchases", "kind": "segmentation", "definition": {
        "event": "purchase", "event2": "", "filters": [], "metric": "totals", "groupBy": None, "interval": "1",
        "start": "2025-10-01", "end": "2025-10-07", "chart": "line"}}).json()
    r = http.post("/api/alerts", auth=auth, json={"name": "from chart", "condition": "anomaly",
                                                  "webhook_url": base["webhook_url"], "chart_id": chart["id"]})
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["series"]["chart_id"] == chart["id"] and a["interval"] == "day" and a["series"]["params"]["m"] == "totals"
    assert json.loads(a["series"]["params"]["e"])["event_type"] == "purchase" and "start" not in a["series"]["params"]
    # funnel and retention charts (the UI's state) -> daily conversion / retention day N alerts
    funnel = http.post("/api/web/charts", auth=auth, json={"name": "signup funnel", "kind": "funnel", "definition": {
        "steps": ["signup", "purchase"], "window": "86400", "mode": "ordered",
        "groupBy": {"type": "user", "value": "country"}, "start": "2025-10-01", "end": "2025-10-07"}}).json()
    r = http.post("/api/alerts", auth=auth, json={"name": "conversion < 20 %", "condition": "below", "threshold": 0.2,
                                                  "webhook_url": base["webhook_url"], "chart_id": funnel["id"]})
    assert r.status_code == 201, r.text
    assert r.json()["series"]["params"] == {"e": [json.dumps({"event_type": "signup"}), json.dumps({"event_type": "purchase"})],
                                            "mode": "ordered", "cs": "86400", "g": "country"}
    ret = http.post("/api/web/charts", auth=auth, json={"name": "d1", "kind": "retention", "definition": {
        "start_event": "signup", "return_event": "_active", "mode": "n-day", "interval": "1", "start": "2025-10-01",
        "end": "2025-10-07"}}).json()
    no_day = http.post("/api/alerts", auth=auth, json={"name": "d1", "condition": "below", "threshold": 0.3,
                                                       "webhook_url": base["webhook_url"], "chart_id": ret["id"]})
    assert no_day.status_code == 400 and no_day.json()["parameter"] == "series.day"
    r = http.post("/api/alerts", auth=auth, json={"name": "d1", "condition": "below", "threshold": 0.3, "series": {"day": 1},
                                                  "webhook_url": base["webhook_url"], "chart_id": ret["id"]})
    assert r.status_code == 201 and r.json()["series"]["day"] == 1 and r.json()["interval"] == "day", r.text
    users = http.post("/api/web/charts", auth=auth, json={"name": "u", "kind": "users", "definition": {}}).json()
    r = http.post("/api/alerts", auth=auth, json={**base, "series": None, "chart_id": users["id"]})
    assert r.status_code == 400 and r.json()["parameter"] == "series.kind"
    r = http.put(f"/api/alerts/{a['id']}", auth=auth, json={"condition": "below", "threshold": 2, "name": "renamed"})
    assert r.status_code == 200 and (r.json()["condition"], r.json()["threshold"], r.json()["name"]) == ("below", 2, "renamed")
    assert http.put(f"/api/alerts/{a['id']}", auth=auth, json={"threshold": None, "condition": "above"}).status_code == 400
    assert http.post(f"/api/alerts/{a['id']}/snooze", auth=auth, json={"until": "soon"}).json()["parameter"] == "until"
    # another project's key sees none of it
    other = create_key_with_secret(world.store, "alertshop-other")
    assert http.get("/api/alerts", auth=other).json() == {"alerts": []}
    for method in ("GET", "DELETE"):
        assert http.request(method, f"/api/alerts/{a['id']}", auth=other).status_code == 404
    assert http.post(f"/api/alerts/{a['id']}/snooze", auth=other, json={"minutes": 5}).status_code == 404
    assert http.delete(f"/api/alerts/{a['id']}", auth=auth).status_code == 200
    for left in http.get("/api/alerts", auth=auth).json()["alerts"]:
        assert http.delete(f"/api/alerts/{left['id']}", auth=auth).status_code == 200


# --- funnel conversion and retention day N equal a pure-Python reference ------------------------------------------

FUNNEL_DAY0 = date(2025, 11, 3)


def funnel_events() -> tuple[list[dict[str, Any]], dict[date, float], dict[date, float]]:
    """Per day, users sign up, some purchase 2 h later, some come back the next day; the reference conversion
    (purchasers / sign-ups of the day) and day-1 retention (returners / sign-ups)."""
    rng = random.Random(7)
    events, conv, ret = [], {}, {}
    for d in range(6):
        day = datetime(FUNNEL_DAY0.year, FUNNEL_DAY0.month, FUNNEL_DAY0.day, tzinfo=UTC) + timedelta(days=d)
        n, bought, back = rng.randint(8, 15), 0, 0
        for u in range(n):
            actor, t = f"f{d}-{u}", day + timedelta(hours=rng.randint(0, 20), minutes=u)
            events.append({"time": ms(t), "insert_id": f"{actor}-s", "actor_id": actor, "event_type": "signup"})
            if rng.random() < 0.4:
                bought += 1
                events.append({"time": ms(t + 2 * H), "insert_id": f"{actor}-p", "actor_id": actor, "event_type": "purchase"})
            if rng.random() < 0.5:
                back += 1
                events.append({"time": ms(day + timedelta(days=1, hours=12)), "insert_id": f"{actor}-r", "actor_id": actor,
                               "event_type": "view"})
        conv[day.date()], ret[day.date()] = bought / n, back / n
    return events, conv, ret


def test_funnel_conversion_and_retention_day_n_series(world: World) -> None:
    events, conv, ret = funnel_events()
    insert_append(world.client, events, "alertfunnels")
    engine = Engine.from_settings(world.settings)
    scope = P.Scope(project="alertfunnels", timezone="UTC", hot_from=engine.hot_from(), lake_path=engine.lake_path)
    now = datetime(2025, 11, 9, 6, tzinfo=UTC)  # day 5 started 30 h ago; day 6 has begun

    def run(c: Any) -> list[dict[str, Any]]:
        return engine.run(c).rows

    funnel = alert_series.normalize_spec({"kind": "funnel", "params": {
        "e": [json.dumps({"event_type": "signup"}), json.dumps({"event_type": "purchase"})], "cs": "86400"}})
    got = dict(alert_series.compute_series(run, funnel, scope, now))
    # a day counts once its conversion window (1 day) has passed: days 0-4 (day 4 ends + 1 day = day 6 00:00 <= now)
    want = {datetime(d.year, d.month, d.day, tzinfo=UTC): v for d, v in conv.items() if d <= date(2025, 11, 7)}
    assert got == pytest.approx(want) and len(want) == 5
    retention = alert_series.normalize_spec({"kind": "retention", "day": 1, "params": {
        "se": json.dumps({"event_type": "signup"}), "re": json.dumps({"event_type": "_active"}), "i": "1"}})
    got = dict(alert_series.compute_series(run, retention, scope, now))
    # day 1 of cohort d is complete once day d+1 ended: cohorts 0-4 (cohort 5's day 1 is today)
    want = {datetime(d.year, d.month, d.day, tzinfo=UTC): v for d, v in ret.items() if d <= date(2025, 11, 7)}
    assert got == pytest.approx(want) and len(set(want.values())) > 1


def test_cli_create_list_show_snooze_delete(world: World, chserver: ChServer) -> None:
    import os
    import subprocess
    import sys

    env = os.environ | {"EVENTPIPE_HOME": str(world.settings.eventpipe_home), "CLICKHOUSE_URL": chserver.clickhouse_url,
                        "METADATA_DB_URL": str(world.settings.metadata_db_url)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "eventpipe_cli.main", "alerts", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    r = cli("create", "--project", PROJECT, "--name", "cli error rate", "--condition", "above", "--threshold", "0.05",
            "--webhook", "http://127.0.0.1:9/hook", "--series", json.dumps(ERROR_RATE))
    assert r.returncode == 0, r.stderr
    aid = r.stdout.strip().splitlines()[-1]
    assert "webhook secret" in r.stdout
    listed = cli("list", "--project", PROJECT, "--json")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [aid]
    shown = json.loads(cli("show", aid, "--project", PROJECT).stdout)
    assert (shown["condition"], shown["threshold"], shown["interval"], shown["history"]) == ("above", 0.05, "hour", [])
    assert world.http.get(f"/api/alerts/{aid}", auth=world.auth).json()["name"] == "cli error rate"  # the same store
    r = cli("snooze", aid, "--project", PROJECT, "--minutes", "30")
    assert r.returncode == 0 and "snoozed" in r.stdout, r.stderr
    assert cli("snooze", aid, "--project", PROJECT, "--off").returncode == 0
    assert "snoozed" not in cli("list", "--project", PROJECT).stdout
    bad = cli("create", "--project", PROJECT, "--name", "x", "--condition", "above", "--threshold", "1",
              "--webhook", "http://127.0.0.1:9/hook", "--series", '{"kind": "pie"}')
    assert bad.returncode == 2 and "series.kind" in bad.stderr
    assert cli("show", aid, "--project", "someone-else").returncode == 2
    assert cli("delete", aid, "--project", PROJECT).returncode == 0
    assert cli("show", aid, "--project", PROJECT).returncode == 2


def test_anomaly_alert_on_a_daily_series(world: World, receiver: tuple[Receiver, str]) -> None:  # noqa: F811
    """Weekly-seasonal daily visits over 160 days, a planted spike: the anomaly alert stays quiet on normal days,
    fires on the spike day once it is complete, and resolves the next day."""
    from eventpipe_core.metadata.alerts import create_alert

    rec, url = receiver
    project = "alertanomaly"
    world.store.create_project(project)
    rng = random.Random(3)
    first = datetime(2025, 1, 6, tzinfo=UTC)
    spike = first + timedelta(days=160)
    events = []
    for d in range(163):
        day = first + timedelta(days=d)
        n = (60 if day == spike else 20 + (6 if day.weekday() >= 5 else 0)) + rng.randint(-2, 2)
        events += [{"time": ms(day + timedelta(hours=12, seconds=k)), "insert_id": f"v{d}-{k}", "actor_id": f"a{k}",
                    "event_type": "visit"} for k in range(n)]
    world.load(events, project)
    spec = alert_series.normalize_spec({"kind": "segmentation", "params": {
        "e": json.dumps({"event_type": "visit"}), "m": "totals", "i": "1"}})
    aid, _ = create_alert(world.store, project, "visits anomaly", series=spec, condition="anomaly", threshold=0,
                          interval=timedelta(days=1), webhook_url=url)
    mine = lambda: [(b["type"], b["interval_start"]) for _, b in rec.received if b["alert_id"] == aid]  # noqa: E731
    world.now = spike + timedelta(hours=6)  # the spike day is running: the day before is the latest complete one
    world.tick()
    assert mine() == []
    world.now = spike + timedelta(days=1, hours=1)
    assert "firing" in world.tick()
    world.now = spike + timedelta(days=2, hours=1)
    assert "resolved" in world.tick()
    assert mine() == [("firing", spike.isoformat()), ("resolved", (spike + timedelta(days=1)).isoformat())]
    from eventpipe_core.metadata.alerts import delete_alert

    assert delete_alert(world.store, project, aid)


def test_chart_definitions_become_the_uis_api_parameters() -> None:
    """The same translation as web/src/pages/Segmentation.tsx segParams (filters, group-by, e2)."""
    definition = {"event": "purchase", "event2": "view", "metric": "uniques", "interval": "-3600000",
                  "filters": [{"prop": {"type": "event", "value": "plan"}, "op": "is", "values": "pro, team"},
                              {"prop": None, "op": "is", "values": ""}],
                  "groupBy": {"type": "user", "value": "country"}, "start": "2025-10-01", "end": "2025-10-02"}
    params = alert_series.params_from_chart("segmentation", definition)
    e = {"event_type": "purchase", "filters": [{"subprop_type": "event", "subprop_key": "plan", "subprop_op": "is",
                                                "subprop_value": ["pro", "team"]}],
         "group_by": [{"type": "user", "value": "country"}]}
    assert {k: (json.loads(v) if k in ("e", "e2") else v) for k, v in params.items()} == {
        "e": e, "e2": {**e, "event_type": "view"}, "m": "uniques", "i": "-3600000"}
    spec = alert_series.normalize_spec({"kind": "segmentation", "params": params, "series": 3})
    assert alert_series.interval(spec) == alert_series.HOUR and spec["series"] == 3
    funnel = alert_series.normalize_spec({"kind": "funnel", "params": alert_series.params_from_chart("funnel", {
        "steps": ["a", "b"], "mode": "ordered", "groupBy": {"type": "event", "value": "plan"}})})
    assert funnel["params"]["g"] == "ep:plan" and funnel["params"]["cs"] == str(7 * 86400)
    # no cs: Amplitude's 30-day default, and the window reads that much further back
    bare = alert_series.normalize_spec({"kind": "funnel", "params": {"e": [json.dumps({"event_type": "a"})]}})
    assert bare["params"]["cs"] == str(30 * 86400) and alert_series.lookback_days(bare, "below") == 60


def test_due_hourly_daily_and_late_loads() -> None:
    from orchestration.alerts.sensor import due, interval_floor

    now = datetime(2025, 9, 10, 14, 20, tzinfo=UTC)
    hourly = {"interval": "hour", "series": {}}
    daily = {"interval": "day", "series": {}}
    hour_b = interval_floor(now, H, "UTC").isoformat()
    day_b = interval_floor(now, timedelta(days=1), "UTC").isoformat()
    assert due(hourly, [], None, now, "UTC", 3)  # never evaluated
    assert not due(hourly, [], hour_b, now, "UTC", 3)  # evaluated this hour, nothing loaded
    assert due(hourly, [], (now - H).replace(minute=0).isoformat(), now, "UTC", 3)  # a new hour completed
    assert due(hourly, [now.replace(minute=0)], hour_b, now, "UTC", 3)  # a load of the running hour
    assert not due(hourly, [now - timedelta(days=10)], hour_b, now, "UTC", 3)  # outside the window
    assert not due(daily, [now.replace(minute=0)], day_b, now, "UTC", 30)  # today's hour: the day is not complete
    assert due(daily, [now - timedelta(days=2)], day_b, now, "UTC", 30)  # a late hour of a complete day
    assert due({**daily, "series": {"complete_only": False}}, [now.replace(minute=0)], day_b, now, "UTC", 30)
    # days end at the project's local midnight
    assert interval_floor(now, timedelta(days=1), "America/New_York") == datetime(2025, 9, 10, 4, tzinfo=UTC)


def test_complete_only_false_evaluates_the_running_hour(world: World, receiver: tuple[Receiver, str]) -> None:  # noqa: F811
    rec, url = receiver
    t0 = datetime(2025, 12, 1, tzinfo=UTC)
    world.load(hour_events(t0, 1, 100, "c") + hour_events(t0 + H, 30, 100, "c"))  # hour 1 is running at 30 %
    aids = {}
    for complete_only in (True, False):
        r = world.http.post("/api/alerts", auth=world.auth, json={
            "name": f"running {complete_only}", "condition": "above", "threshold": 0.05, "webhook_url": url,
            "series": {**ERROR_RATE, "complete_only": complete_only}})
        assert r.status_code == 201, r.text
        aids[complete_only] = r.json()["id"]
    world.now = t0 + H + timedelta(minutes=20)
    world.tick()
    fired = [(b["alert_id"], b["interval_start"]) for _, b in rec.received]
    assert fired == [(aids[False], (t0 + H).isoformat())]  # only the alert that watches the running hour
    bad = world.http.post("/api/alerts", auth=world.auth, json={
        "name": "x", "condition": "above", "threshold": 1, "webhook_url": url, "series": {**ERROR_RATE, "complete_only": "no"}})
    assert bad.status_code == 400 and bad.json()["parameter"] == "series.complete_only"
    for aid in aids.values():
        world.http.delete(f"/api/alerts/{aid}", auth=world.auth)
