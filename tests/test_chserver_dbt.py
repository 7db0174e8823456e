"""dbt-clickhouse builds a small project against chserver twice, with correct results both times."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import clickhouse_connect
import pytest

from tests.chserver_support import ChServer

PROJECT = Path(__file__).parent / "fixtures" / "dbt_chserver"


def dbt(project: Path, server: ChServer, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("dbt")
    env = dict(os.environ)
    env.update(
        CHSERVER_HOST=server.host,
        CHSERVER_PORT=str(server.port),
        CHSERVER_DATABASE=database,
        CHSERVER_PASSWORD=server.password,
        DBT_PROFILES_DIR=str(project),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    cmd = [
        str(exe), *args,
        "--project-dir", str(project),
        "--target-path", str(project / "target"),
        "--log-path", str(project / "logs"),
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def events(day: dt.date, n: int, start_id: int, users: int) -> list[list[object]]:
    base = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    types = ["view", "click", "PURCHASE"]
    return [
        [start_id + i, types[i % 3], f"u{i % users}", base + dt.timedelta(minutes=i), 1.5 if i % 3 == 2 else 0.0]
        for i in range(n)
    ]


@pytest.mark.timeout(600)
def test_dbt_build_twice(chserver: ChServer, tmp_path: Path) -> None:
    project = tmp_path / "dbt_chserver"
    shutil.copytree(PROJECT, project)
    database = f"dbt_{uuid.uuid4().hex[:8]}"
    ch = clickhouse_connect.get_client(host=chserver.host, port=chserver.port, password=chserver.password)
    ch.command(f"CREATE DATABASE {database}")
    ch.command(
        f"CREATE TABLE {database}.raw_events (event_id UInt64, event_type String, user_id String, "
        "event_time DateTime64(3, 'UTC'), revenue Float64) ENGINE = MergeTree ORDER BY event_id"
    )
    cols = ["event_id", "event_type", "user_id", "event_time", "revenue"]
    d1, d2, d3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)
    ch.insert(f"{database}.raw_events", events(d1, 30, 0, 5) + events(d2, 12, 1000, 4), column_names=cols)

    first = dbt(project, chserver, database, "build")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    counts = ch.query(f"SELECT event_date, events, users, revenue FROM {database}.daily_counts ORDER BY event_date").result_rows
    assert counts == [(d1, 30, 5, 15.0), (d2, 12, 4, 6.0)]
    assert ch.query(f"SELECT count() FROM {database}.stg_events WHERE event_type = 'purchase'").result_rows == [(14,)]

    # More events for the newest day and a new day: the incremental model replaces d2 and adds d3.
    ch.insert(f"{database}.raw_events", events(d2, 6, 2000, 6) + events(d3, 9, 3000, 3), column_names=cols)
    second = dbt(project, chserver, database, "build")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-2000:]
    assert "PASS=" in second.stdout and "ERROR=0" in second.stdout
    counts = ch.query(f"SELECT event_date, events, users, revenue FROM {database}.daily_counts ORDER BY event_date").result_rows
    assert counts == [(d1, 30, 5, 15.0), (d2, 18, 6, 9.0), (d3, 9, 3, 4.5)]
    # The data tests really ran against the server (and would fail on bad data).
    ch.command(f"INSERT INTO {database}.raw_events VALUES (1, 'other', 'ux', now64(3), 0)")
    third = dbt(project, chserver, database, "build", "--select", "stg_events")
    assert third.returncode != 0
    assert "accepted_values" in third.stdout and "unique_stg_events_event_id" in third.stdout
    ch.command(f"DROP DATABASE {database}")
    ch.close()
