"""dbt_project against the real chserver: dbt build (unit + data tests), Dagster partitions with late
data, the BI read-only user on every mart, dbt docs generate."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from eventpipe_core.settings import Settings
from orchestration.clickhouse.schema import EVENT_COLUMNS, ensure_schema
from orchestration.dbt.project import DBT_EXECUTABLE, DBT_PROJECT_DIR, dbt_env

MARTS = [
    "fct_sessions", "fct_active_users", "fct_events_per_minute", "fct_retention_cohorts", "fct_funnels",
    "dim_users", "fct_lifecycle", "fct_stickiness",
]


@pytest.fixture(scope="module")
def dbt_settings(settings: Settings) -> Settings:
    """The session services with a database of this module's own."""
    url = settings.clickhouse_url.rsplit("/", 1)[0] + f"/dbt_{uuid.uuid4().hex[:8]}"
    # Fixed dates in January 2026: keep them out of reach of the hot-retention TTL.
    return settings.model_copy(update={"clickhouse_url": url, "clickhouse_ttl_days": 36500})


@pytest.fixture(scope="module")
def ch(dbt_settings: Settings) -> Iterator[Any]:
    t = dbt_settings.clickhouse
    client = clickhouse_connect.get_client(host=t.host, port=t.port, username=t.user, password=t.password)
    ensure_schema(client, dbt_settings)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {t.database}")


def _ms(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def insert_events(client: Any, database: str, events: list[dict[str, Any]]) -> None:
    """Rows of analytics.events with the contract's defaults for every column not given."""
    defaults: dict[str, Any] = {}
    for name, ctype in EVENT_COLUMNS:
        if ctype.startswith("Nullable"):
            defaults[name] = None
        elif ctype.startswith(("String", "LowCardinality")):
            defaults[name] = ""
        elif ctype.startswith(("Int", "UInt")):
            defaults[name] = 0
    rows = []
    for i, e in enumerate(events):
        t = _ms(e["time"])
        row = defaults | {
            "event_time": t, "event_hour": t.replace(minute=0, second=0, microsecond=0), "event_date": t.date(),
            "insert_id": e.get("insert_id", uuid.uuid4().hex), "event_type": e["type"], "project": "demo",
            "user_id": e["actor"], "resolved_user_id": e["actor"], "actor_id": e["actor"],
            "session_id": e.get("session", int(t.timestamp() * 1000)), "event_properties": e.get("props", "{}"),
            "user_properties": e.get("user_props", "{}"), "is_bot": e.get("bot", 0), "received_at": t,
            "kafka_offset": i, "ingested_at": datetime.now(UTC),
        }
        rows.append([row[name] for name, _ in EVENT_COLUMNS])
    client.insert(f"{database}.events", rows, column_names=[n for n, _ in EVENT_COLUMNS])


def run_dbt(settings: Settings, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp)} | dbt_env(settings)
    return subprocess.run(
        [DBT_EXECUTABLE, *args, "--project-dir", str(DBT_PROJECT_DIR), "--target-path", str(tmp / "target"),
         "--log-path", str(tmp / "logs")],
        env=env, capture_output=True, text=True, timeout=600,
    )


DAY1 = [
    {"actor": "u1", "type": "sign_up", "time": "2026-01-05 10:00:00", "user_props": '{"$set":{"plan":"free"}}'},
    {"actor": "u1", "type": "activate", "time": "2026-01-05 11:00:00"},
    {"actor": "u2", "type": "sign_up", "time": "2026-01-05 12:00:00"},
    {"actor": "bot1", "type": "sign_up", "time": "2026-01-05 12:00:00", "bot": 1},
]
DAY2 = [
    {"actor": "u1", "type": "purchase", "time": "2026-01-06 09:00:00", "user_props": '{"$set":{"plan":"pro"}}'},
    {"actor": "u3", "type": "sign_up", "time": "2026-01-06 10:00:00"},
]
LATE_U5 = [
    {"actor": "u5", "type": "sign_up", "time": "2026-01-05 20:00:00"},
    {"actor": "u5", "type": "activate", "time": "2026-01-05 21:00:00"},
    {"actor": "u5", "type": "purchase", "time": "2026-01-06 08:00:00"},
]
LATE_DAY1 = [
    {"actor": "u4", "type": "sign_up", "time": "2026-01-05 15:00:00"},
    {"actor": "u2", "type": "activate", "time": "2026-01-05 13:00:00"},
]


def test_dbt_build_runs_unit_and_data_tests(ch: Any, dbt_settings: Settings, tmp_path: Path) -> None:
    insert_events(ch, dbt_settings.clickhouse.database, DAY1 + DAY2)
    result = run_dbt(dbt_settings, tmp_path, "build")
    assert result.returncode == 0, result.stdout[-4000:]
    run_results = json.loads((tmp_path / "target" / "run_results.json").read_text())
    statuses = {r["unique_id"]: r["status"] for r in run_results["results"]}
    unit_tests = [k for k in statuses if k.startswith("unit_test.")]
    data_tests = [k for k in statuses if k.startswith("test.")]
    assert len(unit_tests) >= 9 and len(data_tests) >= 20
    assert set(statuses.values()) <= {"success", "pass"}, {k: v for k, v in statuses.items() if v not in ("success", "pass")}
    # A second build over the same data changes nothing (incremental reruns never duplicate).
    before = {m: ch.command(f"SELECT count() FROM {dbt_settings.clickhouse.database}.{m}") for m in MARTS}
    again = run_dbt(dbt_settings, tmp_path, "build", "--exclude-resource-type", "unit_test",
                    "--vars", '{"start_date": "2026-01-05", "end_date": "2026-01-07"}')
    assert again.returncode == 0, again.stdout[-4000:]
    after = {m: ch.command(f"SELECT count() FROM {dbt_settings.clickhouse.database}.{m}") for m in MARTS}
    assert after == before
    assert all(before[m] > 0 for m in MARTS), before


def test_readonly_bi_user_reads_every_mart_and_cannot_write(ch: Any, dbt_settings: Settings, tmp_path: Path) -> None:
    t = dbt_settings.clickhouse
    if not ch.command(f"EXISTS TABLE {t.database}.dim_users"):
        insert_events(ch, t.database, DAY1)
        assert run_dbt(dbt_settings, tmp_path, "run").returncode == 0
    reader = clickhouse_connect.get_client(
        host=t.host, port=t.port, username=dbt_settings.clickhouse_readonly_user,
        password=dbt_settings.clickhouse_readonly_password, database=t.database,
    )
    for mart in MARTS:
        assert reader.query(f"SELECT count() FROM {mart}").result_rows[0][0] >= 0
    with pytest.raises(Exception, match="readonly|READONLY|Not enough privileges"):
        reader.command(f"INSERT INTO {t.database}.dim_users (actor_id) VALUES ('x')")


def test_dbt_docs_generate(ch: Any, dbt_settings: Settings, tmp_path: Path) -> None:
    result = run_dbt(dbt_settings, tmp_path, "docs", "generate")
    assert result.returncode == 0, result.stdout[-4000:]
    catalog = json.loads((tmp_path / "target" / "catalog.json").read_text())
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    documented = {n["name"]: n["description"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert all(documented[m] for m in MARTS), "every mart has a description"
    assert catalog["nodes"], "catalog lists the built relations"


def test_dagster_daily_partitions_with_late_data(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Materialize two days through Dagster, add late events to day 1, re-materialize day 1 only."""
    import dagster as dg
    from dagster_dbt import DbtCliResource

    from orchestration.dbt.assets import build_dbt_assets
    from orchestration.dbt.project import DBT_EXECUTABLE

    db = f"dbt_dg_{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(update={
        "clickhouse_url": settings.clickhouse_url.rsplit("/", 1)[0] + f"/{db}", "eventpipe_home": tmp_path,
        "clickhouse_ttl_days": 36500,
    })
    for key, value in dbt_env(s).items():
        monkeypatch.setenv(key, value)
    t = s.clickhouse
    client = clickhouse_connect.get_client(host=t.host, port=t.port, username=t.user, password=t.password)
    ensure_schema(client, s)
    try:
        insert_events(client, db, DAY1 + DAY2)
        marts = build_dbt_assets(s)
        dbt = DbtCliResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR),
                             dbt_executable=DBT_EXECUTABLE)
        instance = dg.DagsterInstance.ephemeral()

        def run(day: str) -> None:
            result = dg.materialize([marts], partition_key=day, resources={"dbt": dbt}, instance=instance)
            assert result.success
            mats = result.get_asset_materialization_events()
            assert {m.partition for m in mats} == {day}
            assert dg.AssetKey("fct_funnels") in {m.asset_key for m in mats}

        def funnel(day: str) -> list[tuple]:
            return client.query(
                f"SELECT step_index, users FROM {db}.fct_funnels WHERE funnel_name = 'signup_to_purchase' "
                f"AND entry_date = '{day}' ORDER BY step_index").result_rows

        def active(day: str) -> tuple:
            return client.query(f"SELECT dau, wau, mau FROM {db}.fct_active_users WHERE activity_date = '{day}'").result_rows[0]

        run("2026-01-05")
        run("2026-01-06")
        # Day 1: u1 sign_up -> activate -> purchase (next day, inside the 7-day window); u2 sign_up only;
        # the bot is excluded. Day 2: u3 signs up.
        assert funnel("2026-01-05") == [(1, 2), (2, 1), (3, 1)]
        assert funnel("2026-01-06") == [(1, 1), (2, 0), (3, 0)]
        assert active("2026-01-05") == (2, 2, 2)
        assert active("2026-01-06") == (2, 3, 3)
        sessions_day2 = client.command(f"SELECT count() FROM {db}.fct_sessions WHERE session_date = '2026-01-06'")

        insert_events(client, db, LATE_DAY1)
        run("2026-01-05")
        # Late: u4 signs up on day 1, u2 activates on day 1 -> day 1 entry step counts change exactly so.
        assert funnel("2026-01-05") == [(1, 3), (2, 2), (3, 1)]
        assert active("2026-01-05") == (3, 3, 3)
        # Day 2 partitions were not re-run: their rows are untouched (no duplicates, no loss) …
        assert funnel("2026-01-06") == [(1, 1), (2, 0), (3, 0)]
        assert client.command(f"SELECT count() FROM {db}.fct_sessions WHERE session_date = '2026-01-06'") == sessions_day2
        assert client.command(f"SELECT count() FROM {db}.fct_funnels") == 6
        # … until day 2 runs again: its rolling WAU/MAU now include u4 from day 1.
        run("2026-01-06")
        assert active("2026-01-06") == (2, 4, 4)
        # A path that completes on a later day: u5 signs up and activates on day 1 (no day-1 run since),
        # purchases on day 2; the day-2 run rebuilds day 1's funnel (entries up to 7 days back).
        insert_events(client, db, LATE_U5)
        run("2026-01-06")
        assert funnel("2026-01-05") == [(1, 4), (2, 3), (3, 2)]
        assert funnel("2026-01-06") == [(1, 1), (2, 0), (3, 0)]
        assert client.command(f"SELECT count() FROM {db}.fct_funnels") == 6
        # dim_users (whole-table) applied u1's $set in event-time order.
        props = client.command(f"SELECT user_properties FROM {db}.dim_users WHERE actor_id = 'u1'")
        assert json.loads(props) == {"plan": "pro"}
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")
