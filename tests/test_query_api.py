"""Query API over a real chserver: auth (api_key:secret_key, project isolation), segmentation, bad input → 400."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from starlette.testclient import TestClient

from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.projects_settings import set_timezone
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from query_service.app import create_app
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, load_events

DAY0 = 1767225600000  # 2026-01-01T00:00Z
H = 3_600_000


@pytest.fixture(scope="module")
def api(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("qapi")
    settings = load_settings(eventpipe_home=home, clickhouse_url=chserver.clickhouse_url,
                             clickhouse_service_password=chserver.service_password, clickhouse_ttl_days=TTL_DAYS,
                             lake_url=f"file://{chserver.data_dir.parent / 'lake'}")  # the lake chserver's service user may read
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password,
                                           autogenerate_session_id=False)
    client.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password,
                                           database="analytics", autogenerate_session_id=False)
    events = []
    for i in range(48):  # two days, one event per hour per actor a0..a2; a3 only on day 2
        for a in range(3):
            events.append({"time": DAY0 + 30 * 86_400_000 + i * H + a, "insert_id": f"q{i}-{a}", "actor_id": f"a{a}",
                           "event_type": "view" if i % 2 else "buy", "country": ["DE", "FR", "US"][a],
                           "event_properties": {"price": a + 1, "tags": ["x", "y"] if a == 0 else []}})
        if i >= 24:
            events.append({"time": DAY0 + 30 * 86_400_000 + i * H + 9, "insert_id": f"q{i}-3", "actor_id": "a3",
                           "event_type": "view", "country": "DE"})
    events.append({"time": DAY0 + 30 * 86_400_000 + 5 * H, "insert_id": "bot1", "actor_id": "crawler",
                   "event_type": "view", "is_bot": 1})
    load_events(client, events, "shop")
    load_events(client, [{"time": DAY0 + 30 * 86_400_000 + 5 * H + 77, "insert_id": "other", "actor_id": "zz",
                          "event_type": "view"}], "other")
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    key, secret = create_key_with_secret(store, "shop")
    okey, osecret = create_key_with_secret(store, "other")
    app = create_app(settings, store=store)
    with TestClient(app) as tc:
        yield {"client": tc, "auth": (key, secret), "other": (okey, osecret), "settings": settings, "store": store,
               "home": home, "chserver": chserver}
    store.dispose()


def seg(api: dict[str, Any], auth: tuple[str, str] | None = None, **params: Any) -> Any:
    base = {"e": json.dumps({"event_type": "view"}), "start": "20260131", "end": "20260201"}
    base.update({k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in params.items()})
    return api["client"].get("/api/2/events/segmentation", params=base, auth=auth or api["auth"])


def test_auth_required_and_checked(api: dict[str, Any]) -> None:
    r = api["client"].get("/api/2/events/segmentation", params={"e": "{}", "start": "20260131", "end": "20260201"})
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    assert seg(api, auth=(api["auth"][0], "wrong")).status_code == 401
    assert seg(api, auth=(api["other"][0], api["auth"][1])).status_code == 401  # a secret only opens its own key
    assert api["store"].revoke_key(api["other"][0])
    # a key sees only its project: "other" has one event in these days, "shop" none of it
    data = seg(api).json()["data"]
    assert data["seriesCollapsed"][0][0]["value"] == 4


def test_segmentation_uniques_totals_groups(api: dict[str, Any]) -> None:
    data = seg(api).json()["data"]
    assert data["xValues"] == ["2026-01-31", "2026-02-01"]
    assert data["series"] == [[3, 4]] and data["seriesLabels"] == [0]
    data = seg(api, m="totals").json()["data"]
    assert data["series"] == [[36, 60]]
    data = seg(api, m="totals", include_bots="1").json()["data"]
    assert data["series"] == [[37, 60]]
    data = seg(api, g="country").json()["data"]
    assert dict(zip([lab[1] for lab in data["seriesLabels"]], data["series"], strict=True)) == {
        "DE": [1, 2], "FR": [1, 1], "US": [1, 1]}
    assert data["seriesLabels"][0] == [0, "DE"]  # the largest group first
    data = seg(api, e={"event_type": "view", "filters": [
        {"subprop_type": "event", "subprop_key": "price", "subprop_op": "greater", "subprop_value": [1]}]}).json()["data"]
    assert data["series"] == [[2, 2]]
    data = seg(api, e={"event_type": "view", "filters": [
        {"subprop_type": "event", "subprop_key": "tags", "subprop_op": "set is", "subprop_value": ["y"]}]}).json()["data"]
    assert data["series"] == [[1, 1]]
    data = seg(api, m="sums", e={"event_type": "buy", "group_by": [{"type": "event", "value": "price"}]}).json()["data"]
    assert data["series"] == [[72, 72]]
    data = seg(api, e={"event_type": "_active"}, i="7").json()["data"]
    assert data["xValues"] == ["2026-01-25", "2026-02-01"] and data["series"] == [[3, 4]]
    data = seg(api, e={"event_type": "_new"}).json()["data"]
    assert data["series"] == [[3, 1]]
    data = seg(api, m="formula", formula="UNIQUES(A)/UNIQUES(B)", e2={"event_type": "_active"}).json()["data"]
    assert data["series"] == [[1.0, 1.0]]
    data = seg(api, m="pct_dau", e={"event_type": "buy"}).json()["data"]
    assert data["series"] == [[100, 75]]


def test_segmentation_time_zone(api: dict[str, Any]) -> None:
    """Days are the project's local days: in Tokyo (UTC+9) the first nine UTC hours of Feb 1 belong to Feb 1 too,
    and the first UTC day splits across two local days."""
    set_timezone(api["store"], "shop", "Asia/Tokyo")
    try:
        api["client"].app.state  # noqa: B018
        tc = TestClient(create_app(api["settings"], store=api["store"]))
        r = tc.get("/api/2/events/segmentation", auth=api["auth"], params={
            "e": json.dumps({"event_type": "_active"}), "m": "totals", "start": "20260131", "end": "20260202"})
        series = r.json()["data"]["series"][0]
        # UTC Jan 31 00:00-14:59 -> Tokyo Jan 31 09:00-23:59: 15 hours x 3 events (+ bot excluded)
        assert series[0] == 15 * 3 and sum(series) == 24 * 3 + 24 * 4
    finally:
        set_timezone(api["store"], "shop", "UTC")


@pytest.mark.parametrize(("params", "name"), [
    ({"e": "not json"}, "e"),
    ({"e": json.dumps({"filters": []})}, "e"),
    ({"start": "2026-01-31"}, "start"),
    ({"end": "20260199"}, "end"),
    ({"start": "20260205"}, "end"),
    ({"m": "median"}, "m"),
    ({"m": "histogram", "e": json.dumps({"event_type": "buy", "group_by": [{"type": "event", "value": "price"}]})}, "m"),
    ({"i": "2"}, "i"),
    ({"limit": "x"}, "limit"),
    ({"s": "[1]"}, "s[0]"),
    ({"s": json.dumps([{"prop": "country", "op": "like", "values": ["x"]}])}, "s[0]"),
    ({"e": json.dumps({"event_type": "v", "filters": [{"subprop_type": "event", "subprop_key": "p",
                                                        "subprop_op": "less", "subprop_value": ["abc"]}]})}, "e.filters[0]"),
    ({"m": "formula", "formula": "__import__('os')"}, "formula"),
    ({"include_bots": "yes"}, "include_bots"),
])
def test_bad_parameters_are_400_naming_them(api: dict[str, Any], params: dict[str, str], name: str) -> None:
    r = seg(api, **params)
    assert r.status_code == 400, r.text
    assert r.json()["parameter"] == name


def test_injection_attempts_are_values(api: dict[str, Any]) -> None:
    nasty = "x') OR 1=1 --"
    data = seg(api, g=nasty, s=[{"prop": nasty, "op": "is not", "values": [nasty]}]).json()["data"]
    assert data["seriesLabels"] == [[0, "(none)"]] and data["series"] == [[3, 4]]


def test_keys_create_json_cli(api: dict[str, Any]) -> None:
    env = {"EVENTPIPE_HOME": str(api["home"]), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "eventpipe_cli.main", "keys", "create", "--project", "cli", "--json"],
                         env=env, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["project"] == "cli" and len(doc["api_key"]) == 32 and len(doc["secret_key"]) == 64
    from eventpipe_core.metadata.secrets import api_secrets, project_for_credentials

    assert project_for_credentials(api["store"], doc["api_key"], doc["secret_key"]) == "cli"
    with api["store"].engine.connect() as conn:  # stored hashed, never as given
        stored = [tuple(r) for r in conn.execute(api_secrets.select())]
    assert all(doc["secret_key"] not in map(str, row) for row in stored)
