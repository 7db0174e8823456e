"""``forecast=1`` on /api/2/events/segmentation over a real chserver: the band trains on the 120 days before
``start`` (a second query) and flags the planted spike, and only it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import clickhouse_connect
import pytest
from starlette.testclient import TestClient

from eventpipe_core.forecast import prophet_available
from eventpipe_core.metadata import MetadataStore
from eventpipe_core.metadata.secrets import create_key_with_secret
from eventpipe_core.settings import load_settings
from orchestration.clickhouse.schema import SchemaPlan, ensure_plan
from query_service.app import create_app
from tests.chserver_support import ChServer
from tests.query_support import TTL_DAYS, insert_append

FIRST = date(2025, 9, 1)
DAYS = 150
SPIKE = date(2026, 1, 20)
WEEKLY = [30, 32, 33, 31, 28, 18, 15]  # events per weekday (Mon..Sun)


def day_count(d: date) -> int:
    return WEEKLY[d.weekday()] * (3 if d == SPIKE else 1)


@pytest.fixture(scope="module")
def api(chserver: ChServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("fcapi")
    settings = load_settings(eventpipe_home=home, clickhouse_url=chserver.clickhouse_url,
                             clickhouse_service_password=chserver.service_password, clickhouse_ttl_days=TTL_DAYS,
                             lake_url=f"file://{chserver.data_dir.parent / 'lake'}")
    admin = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password,
                                          autogenerate_session_id=False)
    admin.command("CREATE DATABASE IF NOT EXISTS analytics")
    client = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, username="default", password=chserver.password,
                                           database="analytics", autogenerate_session_id=False)
    ensure_plan(client, SchemaPlan("analytics", None, TTL_DAYS))
    events = []
    for k in range(DAYS):
        d = FIRST + timedelta(days=k)
        noon = int(datetime(d.year, d.month, d.day, 12, tzinfo=UTC).timestamp() * 1000)
        for i in range(day_count(d)):
            events.append({"time": noon + i * 1000, "insert_id": f"fc-{k}-{i}", "actor_id": f"u{i}", "event_type": "error"})
    for chunk in range(0, len(events), 2000):  # <= 100 hour partitions per insert block
        insert_append(client, events[chunk:chunk + 2000], "fcshop")
    assert client.query("SELECT count() FROM events WHERE project = 'fcshop'").result_rows[0][0] == len(events)
    store = MetadataStore(settings.metadata_db_url or "")
    store.ensure_schema()
    auth = create_key_with_secret(store, "fcshop")
    with TestClient(create_app(settings, store=store)) as tc:
        yield {"client": tc, "auth": auth}
    store.dispose()


def seg(api: dict[str, Any], **params: Any) -> Any:
    base = {"e": json.dumps({"event_type": "error"}), "m": "totals", "start": "20260105", "end": "20260128", "forecast": "1"}
    base.update(params)
    return api["client"].get("/api/2/events/segmentation", params=base, auth=api["auth"])


MODELS = ["robust", pytest.param("prophet", marks=pytest.mark.skipif(not prophet_available(), reason="prophet missing"))]


@pytest.mark.parametrize("model", MODELS)
def test_forecast_flags_the_planted_spike_only(api: dict[str, Any], model: str) -> None:
    r = seg(api, forecast_model=model)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["forecastModel"] == [model]
    values, band = data["series"][0], data["forecast"][0]
    assert len(band) == len(values) == len(data["xValues"]) == 24
    assert values == [day_count(date.fromisoformat(x)) for x in data["xValues"]]
    flagged = [x for x, b in zip(data["xValues"], band, strict=True) if b["anomaly"]]
    assert flagged == [SPIKE.isoformat()]
    for x, v, b in zip(data["xValues"], values, band, strict=True):
        assert b["lower"] <= b["expected"] <= b["upper"]
        if x != SPIKE.isoformat():
            assert b["lower"] <= v <= b["upper"]


def test_forecast_short_history_and_bad_parameters(api: dict[str, Any]) -> None:
    # a chart starting 3 days after the first event: too little history, no band, nothing flagged
    data = seg(api, start="20250904", end="20250910").json()["data"]
    assert data["forecastModel"] == ["none"] and not any(b["anomaly"] for b in data["forecast"][0])
    r = seg(api, i="7")
    assert r.status_code == 400 and r.json()["parameter"] == "forecast"
    r = seg(api, forecast_model="arima")
    assert r.status_code == 400 and r.json()["parameter"] == "forecast_model"
    assert "forecast" not in seg(api, forecast="0").json()["data"]
