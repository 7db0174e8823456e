"""The loads bump the query cache's data versions (eventpipe_core.data_versions) in the real Redis: the hourly
``clickhouse_events`` asset run in-process by Dagster, per (project, day) of the rows it loaded, on every load."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
import redis

from eventpipe_core import data_versions as dv
from eventpipe_core.settings import load_settings
from tests.orchestration_support import (  # noqa: F401 - orch_fixture provides the `orch` fixture
    NOW_HOUR,
    Env,
    land_batch,
    orch_fixture,
    raw_row,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
PREFIX = f"test:dv:{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="module")
def rds() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis at 127.0.0.1:6379 is not running (the test machines start it; .ci/run too)")
    yield client
    for key in client.scan_iter(f"{PREFIX}*"):
        client.delete(key)
    client.close()


def version(rds: redis.Redis, table: str, project: str, field: str) -> int:
    v = rds.hget(dv.hash_key(PREFIX, table, project), field)
    return int(v) if v is not None else 0


def test_bump_is_a_noop_without_redis() -> None:
    assert dv.bump(load_settings(redis_url=None), dv.EVENTS, [date(2026, 1, 1)]) == 0


def test_bump_fields(rds: redis.Redis) -> None:
    settings = load_settings(redis_url=REDIS_URL, data_versions_prefix=PREFIX)
    d = date(2026, 2, 3)
    assert dv.bump(settings, "fct_x", [d, d, d + timedelta(days=1)], ["p1", "p2"]) == 4
    assert version(rds, "fct_x", "p1", d.isoformat()) == 1 and version(rds, "fct_x", "p2", "2026-02-04") == 1
    assert version(rds, "fct_x", "p1", dv.ALL_DAYS) == 1  # one bump of the hash = one move of its all-history field
    assert dv.bump(settings, "fct_x", [d]) == 1
    assert version(rds, "fct_x", dv.ALL_PROJECTS, d.isoformat()) == 1 and version(rds, "fct_x", "p1", d.isoformat()) == 1
    pairs = dv.fields_for(PREFIX, "fct_x", "p1", [d], all_history=True)
    assert pairs == [(dv.hash_key(PREFIX, "fct_x", "p1"), [d.isoformat(), "*"]),
                     (dv.hash_key(PREFIX, "fct_x", "*"), [d.isoformat(), "*"])]


@pytest.mark.orch_settings(redis_url=REDIS_URL, data_versions_prefix=PREFIX)
def test_clickhouse_events_load_bumps_its_project_days(orch: Env, rds: redis.Redis) -> None:
    h0 = NOW_HOUR - timedelta(hours=5)
    land_batch(orch.lake, [raw_row("dv-1", h0 + timedelta(minutes=5), device_id="dev-dv")], kafka_partition=0, seq=0,
               start_offset=0)
    day = h0.date().isoformat()
    assert version(rds, dv.EVENTS, "demo", day) == 0
    assert orch.run_hour(h0).success
    assert version(rds, dv.EVENTS, "demo", day) == 1
    assert version(rds, dv.EVENTS, "other-project", day) == 0 and version(rds, dv.EVENTS, dv.ALL_PROJECTS, day) == 0
    assert orch.run_hour(h0).success  # every load moves it (a re-load may carry late events)
    assert version(rds, dv.EVENTS, "demo", day) == 2
    assert version(rds, dv.EVENTS, "demo", (h0.date() - timedelta(days=1)).isoformat()) == 0
