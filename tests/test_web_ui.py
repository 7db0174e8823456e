"""The web UI against the real stack: chserver holding the demo's generated events, ``eventpipe query-api``
serving web/dist, and a real browser (Playwright driving Debian's chromium, ``web/tests/ui.spec.ts``).

The HTTP-level tests (sign-in, cookie accepted by the API, CSRF, sign-out, funnel users) run with httpx; the
browser test runs ``npx playwright test`` once and passes it the stack's address, credentials, the demo's
date range and the ground-truth funnel. Screenshots of every page land in the Playwright output dir under
this test's tmp dir (path printed). Every process started here is stopped with its process group.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import pytest

from demo.generator import DemoConfig, generate
from demo.truth import FUNNELS
from embedded.broker import free_port
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.secrets import create_key_with_secret
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, load_events
from tests.web_support import WEB, expected_funnel, pipeline_events, start_query_api

SIGNUP = FUNNELS[0]


@pytest.fixture(scope="module")
def stack(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not (WEB / "dist" / "index.html").is_file():
        pytest.fail("web/dist is not built: run `make setup`")
    home = tmp_path_factory.mktemp("webui")
    database = f"t_web_{uuid.uuid4().hex[:8]}"  # t_*: a database the session chserver lets readers read
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password,
                                          autogenerate_session_id=False)
    admin.command(f"CREATE DATABASE {database}")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password,
                                           database=database, autogenerate_session_id=False)
    config = DemoConfig(users=300, days=7, project="demo")
    data = generate(config)
    events = pipeline_events(data)
    load_events(client, events, "demo", database=database)
    db_url = f"sqlite:///{home / 'metadata.db'}"
    store = MetadataStore(db_url)
    store.ensure_schema()
    key, secret = create_key_with_secret(store, "demo")
    store.dispose()
    env = dict(os.environ) | {
        "EVENTPIPE_HOME": str(home), "CLICKHOUSE_URL": chserver.clickhouse_url.rsplit("/", 1)[0] + f"/{database}",
        "METADATA_DB_URL": db_url, "CLICKHOUSE_TTL_DAYS": str(TTL_DAYS),
        "CLICKHOUSE_SERVICE_PASSWORD": chserver.service_password, "LAKE_URL": f"file://{chserver.data_dir.parent / 'lake'}",
    }
    api = start_query_api(env, free_port(), home / "query-api.log")
    start_ms = int(datetime.combine(config.first_day, datetime.min.time(), UTC).timestamp() * 1000)
    end_ms = int(datetime.combine(config.last_day + timedelta(days=1), datetime.min.time(), UTC).timestamp() * 1000)
    try:
        yield {"url": api.url, "key": key, "secret": secret, "home": home, "config": config, "events": events,
               "funnel": expected_funnel(SIGNUP, events, start_ms, end_ms), "env": env, "client": client}
    finally:
        api.stop()
        admin.command(f"DROP DATABASE IF EXISTS {database}")


def _sign_in(stack: dict[str, Any]) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=stack["url"], timeout=60)
    r = c.post("/api/web/session", json={"api_key": stack["key"], "secret_key": stack["secret"]})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf_token"]


def test_root_serves_the_built_ui(stack: dict[str, Any]) -> None:
    r = httpx.get(stack["url"] + "/")
    assert r.status_code == 200 and '<div id="root">' in r.text and r.headers["cache-control"] == "no-cache"
    asset = next((WEB / "dist" / "assets").glob("*.js")).name
    r = httpx.get(f"{stack['url']}/assets/{asset}")
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]


def test_sign_in_cookie_csrf_and_sign_out(stack: dict[str, Any]) -> None:
    url = stack["url"]
    wrong = httpx.post(f"{url}/api/web/session", json={"api_key": stack["key"], "secret_key": "0" * 64})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    assert httpx.post(f"{url}/api/web/session", json={"api_key": stack["key"]}).status_code == 400
    creds = {"api_key": stack["key"], "secret_key": stack["secret"]}
    form = httpx.post(f"{url}/api/web/session", data=creds)  # what a cross-site <form> could send
    assert form.status_code == 415 and "set-cookie" not in form.headers
    foreign = httpx.post(f"{url}/api/web/session", json=creds, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "set-cookie" not in foreign.headers

    c, csrf = _sign_in(stack)
    cookie = c.cookies.jar._cookies  # type: ignore[attr-defined]
    raw = next(iter(cookie.values()))["/"]["ep_session"]
    assert raw.has_nonstandard_attr("HttpOnly") and raw.get_nonstandard_attr("SameSite") == "strict"
    assert c.get("/api/web/session").json()["project"] == "demo"
    day = stack["config"].last_day.strftime("%Y%m%d")
    seg = c.get("/api/2/events/segmentation", params={"e": '{"event_type":"sign_up"}', "start": day, "end": day})
    assert seg.status_code == 200 and seg.json()["data"]["series"]  # the API itself accepts the cookie
    basic = httpx.get(f"{url}/api/2/events/segmentation", params={"e": '{"event_type":"sign_up"}', "start": day, "end": day},
                      auth=(stack["key"], stack["secret"]))
    assert basic.json()["data"] == seg.json()["data"]  # same answer (computed_at differs when uncached)

    body = {"name": "n", "kind": "segmentation", "definition": {"event": "sign_up"}}
    assert c.post("/api/web/charts", json=body).status_code == 403  # cookie without the CSRF token
    assert c.post("/api/web/charts", json=body, headers={"X-CSRF-Token": "nope"}).status_code == 403
    cross = c.post("/api/web/charts", json=body, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert cross.status_code == 403
    made = c.post("/api/web/charts", json=body, headers={"X-CSRF-Token": csrf, "Origin": url})
    assert made.status_code == 201, made.text
    assert c.post("/api/web/charts", json=body | {"kind": "pie"}, headers={"X-CSRF-Token": csrf}).json() == {
        "error": "kind must be one of segmentation, funnel, retention, users, lifecycle, stickiness, realtime"}
    with_basic = httpx.post(f"{url}/api/web/charts", json=body, auth=(stack["key"], stack["secret"]))
    assert with_basic.status_code == 201  # Basic-auth clients need no CSRF token

    assert c.delete("/api/web/session").status_code == 403  # sign-out is state-changing too
    assert c.delete("/api/web/session", headers={"X-CSRF-Token": csrf}).status_code == 200
    c.cookies.set("ep_session", raw.value)  # the old cookie no longer works anywhere
    assert c.get("/api/web/session").status_code == 401
    assert c.get("/api/2/events/segmentation", params={"e": '{"event_type":"sign_up"}'}).status_code == 401
    assert c.get("/api/web/charts").status_code == 401


def test_event_types_are_the_projects_and_its_plan(stack: dict[str, Any]) -> None:
    from collections import Counter

    store = MetadataStore(stack["env"]["METADATA_DB_URL"])
    store.set_schema("demo", "checkout_started", {"type": "object"})  # planned, never seen
    store.dispose()
    c, _ = _sign_in(stack)
    vocab = c.get("/api/web/event-types").json()
    seen = Counter(e["event_type"] for e in stack["events"] if not e["is_bot"])
    got = {e["name"]: (e["count"], e["planned"]) for e in vocab["event_types"]}
    assert got == {name: (n, False) for name, n in seen.items()} | {"checkout_started": (0, True)}
    assert [e["count"] for e in vocab["event_types"]] == sorted((e["count"] for e in vocab["event_types"]), reverse=True)
    assert "country" in vocab["properties"]["user"] and vocab["properties"]["event"]
    assert httpx.get(f"{stack['url']}/api/web/event-types").status_code == 401


def test_funnel_users_agree_with_the_funnel(stack: dict[str, Any]) -> None:
    c, _ = _sign_in(stack)
    cfg = stack["config"]
    params = [("e", json.dumps({"event_type": s})) for s in SIGNUP.steps] + [
        ("cs", str(SIGNUP.window_seconds)), ("start", cfg.first_day.strftime("%Y%m%d")),
        ("end", cfg.last_day.strftime("%Y%m%d"))]
    funnel = c.get("/api/2/funnels", params=params).json()["data"][0]
    assert funnel["cumulativeRaw"] == stack["funnel"]  # the API equals the demo's ground truth
    for step, count in enumerate(funnel["cumulativeRaw"], start=1):
        r = c.get("/api/web/funnel-users", params=[*params, ("step", str(step)), ("limit", "1000")]).json()
        assert r["total"] == count and len(r["users"]) == min(count, 1000) and r["users"] == sorted(r["users"])
    for mode in ("unordered", "sequential"):  # the same paths as the bars in every order mode
        moded = [*params, ("mode", mode)]
        bars = c.get("/api/2/funnels", params=moded).json()["data"][0]["cumulativeRaw"]
        totals = [c.get("/api/web/funnel-users", params=[*moded, ("step", str(k))]).json()["total"]
                  for k in range(1, len(bars) + 1)]
        assert totals == bars and bars[0] > 0, mode
    bad = c.get("/api/web/funnel-users", params=[*params, ("step", "9")])
    assert bad.status_code == 400 and bad.json()["parameter"] == "step"


@pytest.fixture(scope="module")
def marts(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[int]]:
    """dbt's fct_funnels built on the same events: entry day -> users per step of the signup funnel."""
    from eventpipe_core.settings import load_settings
    from tests.test_dbt_marts import run_dbt

    env = stack["env"]
    settings = load_settings(eventpipe_home=stack["home"], clickhouse_url=env["CLICKHOUSE_URL"],
                             clickhouse_ttl_days=int(env["CLICKHOUSE_TTL_DAYS"]))
    result = run_dbt(settings, tmp_path_factory.mktemp("dbt"), "run", "--select", "+fct_funnels")
    assert result.returncode == 0, result.stdout[-4000:]
    rows = stack["client"].query(
        "SELECT toString(entry_date), groupArray(users) FROM (SELECT * FROM fct_funnels WHERE funnel_name = {f:String} "
        "AND project = 'demo' ORDER BY entry_date, step_index) GROUP BY entry_date ORDER BY entry_date",
        parameters={"f": SIGNUP.name}).result_rows
    return {day: [int(x) for x in users] for day, users in rows}


def test_api_funnel_equals_the_marts(stack: dict[str, Any], marts: dict[str, list[int]]) -> None:
    """Per entry day the API's dayFunnels equal fct_funnels; the range's bars equal the days added up."""
    cfg = stack["config"]
    params = [("e", json.dumps({"event_type": s})) for s in SIGNUP.steps] + [
        ("cs", str(SIGNUP.window_seconds)), ("start", cfg.first_day.strftime("%Y%m%d")),
        ("end", cfg.last_day.strftime("%Y%m%d"))]
    api = httpx.get(f"{stack['url']}/api/2/funnels", params=params, auth=(stack["key"], stack["secret"])).json()["data"][0]
    days = api["dayFunnels"]
    api_days = {d: c for d, c in zip(days["xValues"], days["series"], strict=True) if c[0]}
    assert api_days == marts and len(marts) == cfg.days
    # every actor enters on one day only here, so the range's bars are the mart's days added up
    assert marts_totals(marts) == api["cumulativeRaw"] == stack["funnel"]


def marts_totals(marts: dict[str, list[int]]) -> list[int]:
    return [sum(m[k] for m in marts.values()) for k in range(len(SIGNUP.steps))]


def test_browser(stack: dict[str, Any], marts: dict[str, list[int]], tmp_path: Path) -> None:
    """Playwright (web/tests/ui.spec.ts) in Debian's chromium against the stack."""
    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists():
        pytest.fail("chromium is not installed: apt-get install -y chromium (.ci/run does it)")
    cfg = stack["config"]
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({"funnel": stack["funnel"], "marts": marts_totals(marts), "steps": list(SIGNUP.steps),
                                    "window": SIGNUP.window_seconds}))
    out = tmp_path / "playwright"
    env = dict(os.environ) | {
        "EP_BASE_URL": stack["url"], "EP_API_KEY": stack["key"], "EP_SECRET_KEY": stack["secret"],
        "EP_START": cfg.first_day.isoformat(), "EP_END": cfg.last_day.isoformat(), "EP_EXPECTED": str(expected),
        "EP_OUTPUT_DIR": str(out), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1", "CI": "1",
    }
    proc = subprocess.run(["npx", "--no-install", "playwright", "test"], cwd=WEB, env=env, capture_output=True, text=True,
                          timeout=600, start_new_session=True)
    shots = sorted(p.name for p in out.rglob("*.png"))
    print(f"playwright output: {out}\n{proc.stdout[-6000:]}")
    assert proc.returncode == 0, f"{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
    for page in ("signin-refused", "segmentation", "funnel", "funnel-step-users", "retention", "users", "lifecycle",
                 "stickiness", "realtime", "user-activity", "charts", "dashboard", "funnel-phone", "lifecycle-phone",
                 "stickiness-phone", "realtime-phone", "people-phone", "user-activity-phone"):
        assert f"{page}.png" in shots, shots
